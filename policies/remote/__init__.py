"""Remote policies: `[policy] name = "remote"` over the openpi WebSocket or the `POST /act` protocol."""
from robofleet.policies.remote.adapters import (
    ADAPTERS, PROTOCOLS, SERVED_ONLY_FAMILIES, AlohaHttpAct, AlohaOpenpi, Answer, LiberoHttpAct, LiberoOpenpi, adapter_for,
)
from robofleet.policies.remote.connections import RemotePolicyError
from robofleet.policies.remote.policy import RemoteOptions, RemotePolicy, make_remote, validate_remote
from robofleet.policies.remote.wire import WireError

__all__ = ["ADAPTERS", "PROTOCOLS", "SERVED_ONLY_FAMILIES", "AlohaHttpAct", "AlohaOpenpi", "Answer", "LiberoHttpAct",
           "LiberoOpenpi", "RemoteOptions", "RemotePolicy", "RemotePolicyError", "WireError", "adapter_for", "make_remote",
           "validate_remote"]
