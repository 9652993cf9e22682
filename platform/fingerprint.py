"""The software and hardware that produced a result: package versions (MuJoCo!), git sha, machine.

MuJoCo >= 3.4 moves LIBERO objects and >= 3.3.3 darkens renders (users' reports), so every
summary records versions and a short fingerprint id that episode rows refer to.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform as stdlib_platform  # robofleet.platform never shadows it: see tests/test_layout.py
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("mujoco", "robosuite", "libero", "torch", "ray", "numpy", "diffusers", "transformers")
# Where a checkout of robofleet has its root, if this code runs from one (robofleet_checkout decides):
# an installed copy puts it inside site-packages instead.
REPO_ROOT = Path(__file__).resolve().parent.parent


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when absent), plus Python's."""
    out: dict[str, str | None] = {"python": stdlib_platform.python_version()}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def robofleet_checkout(root: Path = REPO_ROOT) -> Path | None:
    """`root` when it is a robofleet source tree (its pyproject.toml names the project "robofleet"),
    else None: after a non-editable install `root` is a folder in site-packages, and git would answer
    for whatever repository happens to enclose it (a virtualenv inside another project's checkout)."""
    try:
        project = tomllib.loads((Path(root) / "pyproject.toml").read_text()).get("project") or {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return Path(root) if isinstance(project, dict) and project.get("name") == "robofleet" else None


def git_sha(root: Path = REPO_ROOT) -> str | None:
    """The checkout's commit, with "-dirty" when tracked files differ from it; None (the recorded
    git_sha: no sha known) when `root` is not a robofleet source tree (an installed copy), when it is
    not in git, or when git is missing."""
    if robofleet_checkout(root) is None:
        return None
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def hardware() -> dict[str, object]:
    """CPU model and count, memory, and GPU names when torch sees CUDA devices."""
    info: dict[str, object] = {
        "machine": stdlib_platform.machine(),
        "system": stdlib_platform.system(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
    }
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    if "torch" in sys.modules or _has("torch"):
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _has(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return stdlib_platform.processor() or None


def fingerprint() -> dict[str, object]:
    """Everything above plus a short id: equal ids mean the same software on the same kind of machine."""
    data = {"packages": package_versions(), "git_sha": git_sha(), "hardware": hardware()}
    ident = {"packages": data["packages"], "cpu_model": data["hardware"].get("cpu_model"),
             "gpus": data["hardware"].get("gpus")}
    data["id"] = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    return data
