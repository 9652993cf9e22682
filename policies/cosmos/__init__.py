"""Cosmos Policy (NVIDIA, arXiv 2601.16163) on diffusers: policy, world model and value function.

Light re-exports only; the network (torch + diffusers) loads when a policy is built
(`robofleet.policies.cosmos.policy.CosmosPolicy`).
"""
from robofleet.policies.cosmos.config import NETWORK_CONFIGS, NetworkConfig
from robofleet.policies.cosmos.factory import CosmosOptions, make_cosmos, parse_options
from robofleet.policies.cosmos.layout import LAYOUTS, LatentLayout, Mode, Slot, SlotKind

__all__ = [
    "LAYOUTS",
    "NETWORK_CONFIGS",
    "CosmosOptions",
    "LatentLayout",
    "Mode",
    "NetworkConfig",
    "Slot",
    "SlotKind",
    "make_cosmos",
    "parse_options",
]
