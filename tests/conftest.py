"""Shared fixtures: a real local Ray cluster (started once), small LIBERO specs."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real in-process Ray cluster with 2 CPUs, shared by the tests that need one."""
    import ray

    from robofleet.platform.cluster import connect

    started = connect(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


def small_spec(**overrides):
    """A valid spec dict for a short LIBERO run; keyword overrides replace whole tables."""
    spec = {
        "seed": 7,
        "env": {"family": "libero", "suite": "libero_object", "tasks": [0], "trials": 2,
                "image_size": 64, "render_cameras": False, "max_steps": 12},
        "policy": {"name": "random", "chunk_size": 4},
        "planner": {"name": "direct"},
        "run": {"workers": 1},
    }
    spec.update(overrides)
    return spec


def served(ray, spec, **options):
    """`robofleet serve`'s server for `spec` on a free loopback port (a generator for module fixtures):
    yields the running server, then stops it and its replicas (actors, or the in-process one)."""
    from robofleet.platform.serve import ServeOptions, start_server

    running = start_server(spec, ServeOptions(port=0, **options))
    yield running
    running.stop()
    running.server.replicas.close()
