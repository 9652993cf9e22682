"""Make `import libero.libero` safe and offline: its config file and its asset tree.

libero 0.1.1 calls `input()` at import time when `$LIBERO_CONFIG_PATH/config.yaml` is missing
(inside a Ray worker that hangs), and downloads its meshes from a hub when
`<site-packages>/libero/libero/assets` is absent. `prepare_libero()` writes the config first and
checks the assets, with an error that says how to install them (`robofleet setup-libero --assets`).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from robofleet.platform.errors import RobofleetError

DEFAULT_CONFIG_DIR = Path.home() / ".robofleet" / "libero"
ASSET_MARKERS = ("scenes", "textures", "stable_scanned_objects")


class LiberoSetupError(RobofleetError):
    """LIBERO is not installed, or its assets are missing."""


def libero_package_dir() -> Path:
    """`<site-packages>/libero/libero` without importing it (importing may prompt)."""
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise LiberoSetupError("the `libero` package is not installed: run `bash setup.sh` (pip install libero==0.1.1)")
    return Path(list(spec.submodule_search_locations)[0]) / "libero"


def assets_dir() -> Path:
    return libero_package_dir() / "assets"


def _config_text(pkg: Path, datasets: Path) -> str:
    return "".join(
        f"{key}: {value}\n"
        for key, value in (
            ("benchmark_root", pkg),
            ("bddl_files", pkg / "bddl_files"),
            ("init_states", pkg / "init_files"),
            ("datasets", datasets),
            ("assets", pkg / "assets"),
        )
    )


def prepare_libero() -> Path:
    """Ensure a LIBERO config exists and `LIBERO_CONFIG_PATH` points at it; check the assets.

    Returns the config directory. Call before the first `import libero.libero` in a process.
    """
    config_dir = Path(os.environ.get("LIBERO_CONFIG_PATH") or DEFAULT_CONFIG_DIR)
    config_file = config_dir / "config.yaml"
    if not config_file.exists():
        config_dir.mkdir(parents=True, exist_ok=True)
        pkg = libero_package_dir()
        tmp = config_file.with_suffix(".yaml.tmp")
        tmp.write_text(_config_text(pkg, config_dir / "datasets"))
        tmp.replace(config_file)  # atomic: parallel workers may race here
    os.environ["LIBERO_CONFIG_PATH"] = str(config_dir)
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless; robosuite reads it at import
    check_assets()
    return config_dir


def check_assets() -> Path:
    """The asset tree LIBERO will use; LiberoSetupError with the fix if it is incomplete."""
    path = assets_dir()
    missing = [m for m in ASSET_MARKERS if not (path / m).is_dir()]
    if missing:
        raise LiberoSetupError(
            f"LIBERO assets missing at {path} (no {', '.join(missing)}): run "
            "`robofleet setup-libero --assets PATH/TO/libero/assets` (setup.sh does this with "
            "../shared/assets/libero)"
        )
    return path


def install_assets(source: Path) -> Path:
    """Link an asset tree (a folder with scenes/, textures/, ...) where libero looks for it."""
    source = Path(source).expanduser().resolve()
    missing = [m for m in ASSET_MARKERS if not (source / m).is_dir()]
    if missing:
        raise LiberoSetupError(f"--assets {source}: not a LIBERO asset tree (no {', '.join(missing)})")
    target = assets_dir()
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        raise LiberoSetupError(f"{target} already exists and is a real folder; remove it to link {source}")
    target.symlink_to(source, target_is_directory=True)
    return target
