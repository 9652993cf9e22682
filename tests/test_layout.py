"""The user's layout: one import name, and `platform/` never shadows the standard library."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_stdlib_platform_is_not_shadowed_from_repo_root():
    out = subprocess.run(
        [sys.executable, "-c", "import platform, ray; print(platform.system()); print(platform.__file__)"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    system, path = out.stdout.strip().splitlines()[-2:]
    assert system == "Linux"
    assert not Path(path).resolve().is_relative_to(REPO)


def test_subpackages_import_under_one_name():
    out = subprocess.run(
        [sys.executable, "-c", "import robofleet.platform.spec, robofleet.envs.contract, robofleet.policies.registry, "
                               "robofleet.planners.direct, robofleet.jobs; print('ok')"],
        cwd="/", capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


PROBE = """
import json, ray
ray.init(address="local", num_cpus=1, include_dashboard=False,
         runtime_env={"working_dir": %r, "excludes": [".venv*", ".git", ".stage", ".devpack", ".simpack", "runs", "*.mp4"]})

@ray.remote
def probe():
    import os, platform
    import robofleet.platform.spec
    return [platform.system(), platform.__file__, os.getcwd()]

print(json.dumps(ray.get(probe.remote())))
"""


def test_stdlib_platform_inside_a_ray_job_working_dir(tmp_path):
    """Ray puts the uploaded working dir first on sys.path in its workers: the same check there."""
    out = subprocess.run([sys.executable, "-c", PROBE % str(REPO)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    system, path, cwd = json.loads(out.stdout.strip().splitlines()[-1])
    assert system == "Linux"
    assert Path(cwd) != REPO, "the task ran in Ray's unpacked copy of the repo"
    assert not Path(path).resolve().is_relative_to(Path(cwd).resolve())
