"""Start or join a Ray cluster: embedded (in-process local cluster) by default, `--address` to join."""
from __future__ import annotations

import logging
import os

import ray

log = logging.getLogger(__name__)

# Every actor inherits these: headless rendering, and the LIBERO config so nothing prompts.
WORKER_ENV_VARS = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "LIBERO_CONFIG_PATH", "MUJOCO_EGL_DEVICE_ID", "MALLOC_ARENA_MAX")


def worker_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in WORKER_ENV_VARS if k in os.environ}
    env.setdefault("MUJOCO_GL", "egl")
    # Ray workers are multi-threaded, so glibc gives them up to 8 x cores malloc arenas; every LIBERO
    # simulator rebuild (a new task) then left ~100-200 MB of fragmented arenas behind (an env worker
    # grew 950 -> 1930 MB over 10 tasks; with 2 arenas it stays at ~1.2 GB: benchmarks/load_test.py,
    # RELIABILITY.md). Export MALLOC_ARENA_MAX to choose otherwise.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to Ray; returns True when this call started a local cluster (the caller shuts it down).

    address None: an in-process local cluster with no dashboard HTTP server and no Jobs API
        (tests/test_security.py). Ray's own gRPC services (GCS, raylet, agents, workers) still listen
        on the host's interfaces, behind Ray's token authentication: see RELIABILITY.md, "Security".
    address "auto" or "HOST:PORT": join an existing cluster (`ray start --head`; start it with
        `--dashboard-host 127.0.0.1`, Ray's default, unless others must reach its Jobs API).
    """
    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": worker_env()}
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env,
                 logging_level=logging.WARNING, log_to_driver=True)
        return True
    ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
    return False
