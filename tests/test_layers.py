"""The layers of docs/ARCHITECTURE.md hold: import-linter's contracts in .importlinter, on the real tree.

robofleet's subpackages map to top-level folders (pyproject's package-dir) and `platform/` has no
__init__.py (tests/test_layout.py says why), so grimp cannot walk the installed package. The test
builds a throw-away mirror of the tree (a `robofleet/` folder of symlinks to our files, with
__init__.py files the mirror alone has) and runs `lint-imports` on it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("platform", "envs", "policies", "planners", "jobs")


def _mirror(root: Path) -> Path:
    package = root / "robofleet"
    for sub in SUBPACKAGES:
        for source in (REPO / sub).rglob("*.py"):
            target = package / sub / source.relative_to(REPO / sub)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    for folder in [package, *[p for p in package.rglob("*") if p.is_dir()]]:
        if not (folder / "__init__.py").exists():
            (folder / "__init__.py").touch()
    return root


def _lint(tmp_path: Path, config: Path) -> subprocess.CompletedProcess:
    lint = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
    if lint is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[test]' (import-linter)")
    env = {**os.environ, "PYTHONPATH": str(_mirror(tmp_path / "tree"))}
    return subprocess.run([lint, "--no-cache", str(config)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_layer_contracts_hold(tmp_path):
    result = _lint(tmp_path, REPO / ".importlinter")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken" in result.stdout


def test_the_contracts_catch_a_leak(tmp_path):
    """The check can fail: an env adapter importing the planners breaks the layers contract."""
    tree = _mirror(tmp_path / "tree")
    leak = tree / "robofleet" / "envs" / "leak.py"
    leak.write_text("from robofleet.planners import direct\n")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    lint = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
    result = subprocess.run([lint, "--no-cache", str(REPO / ".importlinter")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "robofleet.envs.leak -> robofleet.planners.direct" in result.stdout
