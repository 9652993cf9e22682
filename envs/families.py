"""Which Python environment each env family's workers run in, as Ray runtime_envs.

LIBERO needs robosuite 1.4 and RoboCasa robosuite 1.5 (REFERENCE.md §1): they cannot share one
Python environment. The driver, LIBERO's workers and policy replicas use the driver's environment
(.venv: robosuite 1.4, torch); the `robosuite` and `robocasa` families' env workers start in the
robosuite-1.5 environment, a virtual environment that `bash setup.sh` builds at `.venv-rs15`
(robosuite 1.5.2, mujoco 3.3.1, numpy 2.2.5, ray == the driver's, robofleet itself without deps;
no torch: a policy that needs torch is served from replicas, `[serving] replicas = N`).

How: `EnvWorker.options(runtime_env={"py_executable": "<venv>/bin/python"})`. Measured against
Ray's `pip`/`uv` runtime envs in BENCHMARKS-robosuite.md: the prebuilt venv starts a worker in
seconds from the first episode on, needs nothing at run time, and holds only what the env worker
imports; a pip runtime env clones the driver's whole venv (torch included) on first use.

On a multi-node cluster every node needs the venv at the same path: build it there with setup.sh
or point ROBOFLEET_RS15_VENV (read on the driver) at where it lives.

    runtime_env = worker_runtime_env("robosuite")   # {"py_executable": ".../.venv-rs15/bin/python"}
    EnvWorker.options(num_cpus=1, runtime_env=runtime_env).remote(...)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robofleet.platform.errors import RobofleetError

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout (editable install) or site-packages


def _venv_base() -> Path:
    """Where a relative venv path starts: the checkout as setup.sh builds it, or (robofleet installed
    from a wheel, so no checkout around this file) the current directory."""
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()


class PythonEnvError(RobofleetError):
    """An env family's Python environment is missing or unusable."""


@dataclass(frozen=True)
class PythonEnv:
    """A Python environment env workers can start in.

    name: what reports and errors call it.
    venv_var: environment variable (on the driver) that overrides the venv's location.
    default_venv: the venv's location relative to the repo root; None = the driver's own Python.
    """

    name: str
    venv_var: str | None = None
    default_venv: str | None = None

    def venv(self) -> Path | None:
        """The venv directory, or None for the driver's environment."""
        if self.default_venv is None:
            return None
        configured = Path(os.environ.get(self.venv_var or "", "") or self.default_venv).expanduser()
        return configured if configured.is_absolute() else _venv_base() / configured  # as setup.sh: from the repo root

    def python(self) -> Path | None:
        """Its Python executable, or None for the driver's environment."""
        venv = self.venv()
        return None if venv is None else venv / "bin" / "python"


DRIVER = PythonEnv("driver")
ROBOSUITE15 = PythonEnv("robosuite15", venv_var="ROBOFLEET_RS15_VENV", default_venv=".venv-rs15")

FAMILY_PYTHON: dict[str, PythonEnv] = {
    "libero": DRIVER,  # robosuite 1.4 (libero 0.1.1), shared with the driver
    "robosuite": ROBOSUITE15,
    "robocasa": ROBOSUITE15,  # RoboCasa pins robosuite 1.5, mujoco 3.3.1, numpy 2.2.5
}


def python_env(family: str) -> PythonEnv:
    """The Python environment of `family`'s env workers."""
    try:
        return FAMILY_PYTHON[family]
    except KeyError:
        raise PythonEnvError(f"no Python environment declared for env family {family!r}; "
                             f"known: {', '.join(FAMILY_PYTHON)}") from None


def worker_runtime_env(family: str) -> dict[str, Any] | None:
    """The Ray runtime_env of `family`'s env workers; None = the driver's (the job's) environment.

    Raises PythonEnvError, naming the fix, when the family's venv has not been built.
    """
    env = python_env(family)
    python = env.python()
    if python is None:
        return None
    if not os.access(python, os.X_OK):
        how = f"`bash setup.sh` builds it at {_venv_base() / env.default_venv}"
        if env.venv_var:
            how += f"; or set {env.venv_var} to an existing one"
        raise PythonEnvError(f"env family {family!r} runs in the {env.name} Python environment, but {python} "
                             f"does not exist: {how}")
    return {"py_executable": str(python)}
