"""Start or join a Ray cluster: embedded (in-process local cluster) by default, `--address` to join."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Iterator

import ray

from robofleet.platform.errors import RobofleetError

log = logging.getLogger(__name__)

# Every actor inherits these: headless rendering, and the LIBERO config so nothing prompts.
WORKER_ENV_VARS = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "LIBERO_CONFIG_PATH", "MUJOCO_EGL_DEVICE_ID", "MALLOC_ARENA_MAX")
# How long joining --address HOST:PORT may wait for the GCS to answer before giving up.
JOIN_TIMEOUT_S = 15.0
# Ray's notice that token auth is on, printed on every ray.init: auth stays on, the line goes.
_TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class ClusterError(RobofleetError):
    """The Ray cluster named by --address cannot be reached."""


def worker_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in WORKER_ENV_VARS if k in os.environ}
    env.setdefault("MUJOCO_GL", "egl")
    # Ray workers are multi-threaded, so glibc gives them up to 8 x cores malloc arenas; every LIBERO
    # simulator rebuild (a new task) then left ~100-200 MB of fragmented arenas behind (an env worker
    # grew 950 -> 1930 MB over 10 tasks; with 2 arenas it stays at ~1.2 GB: benchmarks/load_test.py,
    # RELIABILITY.md). Export MALLOC_ARENA_MAX to choose otherwise.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


@contextlib.contextmanager
def _loopback_only_head() -> Iterator[None]:
    """While starting an embedded cluster: node address 127.0.0.1 and no dashboard process.

    Ray rewrites a node address of 127.0.0.1 to the host's interface address (so other nodes could
    join) unless ENABLE_RAY_CLUSTER is off, as on macOS/Windows; its C++ servers (GCS, raylet, core
    workers) listen on loopback only when the node address is exactly 127.0.0.1, and its agents pick
    free ports. `include_dashboard=False` still starts the dashboard process in minimal mode; an
    embedded cluster needs none of it (no Jobs API, no UI), so Node.start_api_server is skipped.
    """
    from ray._private import node, ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER, node.Node.start_api_server
    ray_constants.ENABLE_RAY_CLUSTER = False
    node.Node.start_api_server = lambda self, **kwargs: None
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER, node.Node.start_api_server = saved


def _check_reachable(address: str, timeout_s: float) -> None:
    """ClusterError unless something accepts TCP connections at HOST:PORT within `timeout_s`
    (Ray itself retries a dead GCS address for minutes, printing only its C++ reconnect lines)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address}: expected 'auto' or HOST:PORT (the GCS of `ray start --head`, "
                           "port 6379 by default)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ClusterError(f"--address {address}: no Ray cluster answers there ({reason}); start one with "
                           "`ray start --head`, or leave out --address for an embedded cluster") from None


def connect(address: str | None = None, num_cpus: int | None = None, join_timeout_s: float = JOIN_TIMEOUT_S) -> bool:
    """Connect to Ray; returns True when this call started a local cluster (the caller shuts it down).

    address None: an embedded in-process cluster on loopback only (GCS, raylet, agents, workers on
        127.0.0.1, free ports), with no dashboard process and no Jobs API (tests/test_security.py).
    address "auto" or "HOST:PORT": join an existing cluster (`ray start --head`; start it with
        `--dashboard-host 127.0.0.1`, Ray's default, unless others must reach its Jobs API);
        ClusterError within about `join_timeout_s` seconds when nothing answers there.
    """
    if ray.is_initialized():
        return False
    logging.getLogger(_TOKEN_AUTH_LOGGER).setLevel(logging.ERROR)
    runtime_env = {"env_vars": worker_env()}
    if address is None:
        with _loopback_only_head():  # "local": a new cluster, never one `ray start` left on this machine
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env,
                     logging_level=logging.WARNING, log_to_driver=True)
        return True
    if address != "auto" and not address.startswith("ray://"):
        _check_reachable(address, join_timeout_s)
    try:
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
    except ConnectionError as exc:  # "auto" with no cluster on this machine, or a GCS that went away
        raise ClusterError(f"--address {address}: {str(exc).splitlines()[0] if str(exc) else 'cannot connect'}") from None
    return False
