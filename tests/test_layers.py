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


def _seams() -> list[str]:
    """The seam modules named in .importlinter's "seams" contract."""
    import configparser

    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    return config["importlinter:contract:seams"]["source_modules"].split()


def _robofleet_imports(path: Path) -> set[str]:
    """Every robofleet module a file imports, at module level or inside functions."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("robofleet")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robofleet"):
            found.add(node.module)
    return found


def _seam_leaks(seams: list[str], files: dict[str, Path]) -> dict[str, set[str]]:
    return {seam: leaks for seam in seams if (leaks := _robofleet_imports(files[seam]) - set(seams))}


def test_seam_modules_import_only_other_seams():
    """The forbidden contract lists a few modules; this checks every robofleet import of every seam."""
    seams = _seams()
    files = {seam: REPO / Path(*seam.split(".")[1:]).with_suffix(".py") for seam in seams}
    assert all(f.exists() for f in files.values()), files
    assert _seam_leaks(seams, files) == {}


def test_the_seam_check_catches_a_seam_importing_a_layer(tmp_path):
    seam = tmp_path / "contract.py"
    seam.write_text("def later():\n    from robofleet.platform.report import write\n")
    assert _seam_leaks(["robofleet.envs.contract"], {"robofleet.envs.contract": seam}) == {
        "robofleet.envs.contract": {"robofleet.platform.report"}}
