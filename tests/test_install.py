"""`pip install .` (not editable) gives a working robofleet, used from another directory."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_wheel_install_runs_from_another_directory(tmp_path):
    target = tmp_path / "site"
    source = tmp_path / "src"  # a copy: setuptools builds in the source tree (build/, *.egg-info)
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv*", "runs", "build", ".devpack",
                                                                ".simpack", ".extra", ".stage", ".gl", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, timeout=600, cwd=tmp_path)
    installed = target / "robofleet"
    assert (installed / "envs" / "libero_assets_manifest.tsv").is_file()  # package data travels
    assert not (installed / "platform" / "__init__.py").exists()
    work = tmp_path / "elsewhere"
    work.mkdir()
    spec = work / "spec.toml"
    spec.write_text((REPO / "examples" / "libero_object_scripted.toml").read_text())
    # the wheel's copy first; the dependencies from this environment. This venv also has robofleet
    # installed editable (its import hook maps robofleet.* to the checkout): drop that hook, so the
    # interpreter sees what a machine with only the wheel installed sees.
    env = {**os.environ, "PYTHONPATH": str(target)}
    no_editable = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in "
                   "type(f).__module__]; sys.path_hooks[:] = [h for h in sys.path_hooks if '__editable__' not in "
                   "getattr(h, '__module__', '')]; sys.path[:] = [p for p in sys.path if '__editable__' not in p];")
    probe = subprocess.run(
        [sys.executable, "-c", no_editable + "import robofleet.platform.spec as s; print(s.__file__);"
         "from robofleet.jobs.cli import main; sys.argv = ['robofleet', 'plan', 'spec.toml', '--out', 'runs/x']; main()"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.splitlines()[0].startswith(str(target))
    assert "episodes" in probe.stdout
