"""`robofleet run` end to end on real Ray and real LIBERO: determinism, resume, durability."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from robofleet.platform.results import RunDirError
from robofleet.platform.spec import spec_from_dict
from robofleet.platform.runner import run
from tests.conftest import small_spec

IDENTITY = ("episode_id", "task_id", "trial", "seed", "success", "steps", "queries", "final_state", "error")


def rows(out: Path) -> list[dict[str, str]]:
    with (out / "episodes.csv").open() as f:
        return sorted(csv.DictReader(f), key=lambda r: r["episode_id"])


def identity(out: Path) -> list[tuple[str, ...]]:
    return [tuple(r[k] for k in IDENTITY) for r in rows(out)]


def test_results_are_identical_with_one_and_two_workers(ray_cluster, tmp_path):
    spec = spec_from_dict(small_spec(env={**small_spec()["env"], "trials": 3}))
    run(spec, tmp_path / "one", workers=1, progress=False)
    run(spec, tmp_path / "two", workers=2, progress=False)
    one, two = identity(tmp_path / "one"), identity(tmp_path / "two")
    assert len(one) == 3
    assert all(r[-2] for r in one), "every episode has a final-state hash"
    assert len({r[-2] for r in one}) == 3, "different trials end in different states"
    assert one == two
    assert {r["worker"] for r in rows(tmp_path / "two")} == {"0", "1"}


def test_a_resumed_run_does_not_repeat_episodes(ray_cluster, tmp_path):
    spec = spec_from_dict(small_spec())
    out = tmp_path / "run"
    run(spec, out, progress=False)
    first = rows(out)
    # Forget one episode, as if the driver had been killed while it ran.
    lines = (out / "episodes.csv").read_text().splitlines(keepends=True)
    (out / "episodes.csv").write_text("".join(lines[:-1]))
    summary = run(spec, out, progress=False)
    second = rows(out)
    assert len(second) == len(first) == 2
    assert len({r["episode_id"] for r in second}) == 2
    assert [tuple(r[k] for k in IDENTITY) for r in second] == [tuple(r[k] for k in IDENTITY) for r in first]
    assert summary["overall"]["episodes"] == 2
    # Nothing left to do: a third invocation starts no worker and changes no row.
    run(spec, out, progress=False)
    assert rows(out) == second


def test_a_directory_of_another_spec_is_refused(ray_cluster, tmp_path):
    run(spec_from_dict(small_spec()), tmp_path, progress=False)
    other = spec_from_dict({**small_spec(), "seed": 8})
    with pytest.raises(RunDirError, match="different spec"):
        run(other, tmp_path, progress=False)


def test_reports_and_videos_are_written(ray_cluster, tmp_path):
    env = {**small_spec()["env"], "render_cameras": True, "trials": 1, "max_steps": 4}
    summary = run(spec_from_dict(small_spec(env=env, policy={"name": "zero"})), tmp_path, videos=1, progress=False)
    assert (tmp_path / "videos" / "libero_object_task00_trial000.mp4").stat().st_size > 0
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["overall"]["episodes"] == 1 and saved["overall"]["successes"] == 0
    assert saved["fingerprint"]["packages"]["mujoco"] == _pinned("mujoco")  # the version the episodes ran on
    assert saved["tasks"][0]["task"] == "pick_up_the_alphabet_soup_and_place_it_in_the_basket"
    assert "| libero_object | 0: pick_up_the_alphabet_soup" in (tmp_path / "report.md").read_text()
    assert summary == saved


def test_cli_reports_a_bad_spec_without_a_traceback(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text('seed = 0\n[env]\nfamily = "libero"\nsuite = "libero_object"\ntasks = [12]\ntrials = 1\n'
                    '[policy]\nname = "zero"\n')
    out = subprocess.run([sys.executable, "-m", "robofleet.jobs.cli", "run", str(spec), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "env.tasks: task id 12 out of range: libero_object has tasks 0..9" in out.stderr
    assert "Traceback" not in out.stderr


def test_videos_show_predicted_future_beside_the_real_frames(ray_cluster, tmp_path):
    import imageio.v2 as imageio

    env = {**small_spec()["env"], "render_cameras": True, "image_size": 64, "trials": 1, "max_steps": 4}
    policy = {"name": "cosmos", "config": "tiny", "device": "cpu", "return_future_images": True}
    run(spec_from_dict(small_spec(env=env, policy=policy)), tmp_path, videos=1, progress=False)
    from robofleet.platform.rollout_video import END_CARD_FRAMES

    frames = imageio.mimread(tmp_path / "videos" / "libero_object_task00_trial000.mp4")
    assert len(frames) == 5 + END_CARD_FRAMES  # the settled start + 4 steps, then the outcome's card
    assert frames[0].shape[1] == 64 * 2 * 2  # 2 real cameras | 2 predicted, side by side
    assert frames[0].shape[0] >= 64 + 4  # colour bar (and the caption band)


def test_more_workers_than_the_cluster_holds_runs_on_those_that_fit(ray_cluster, tmp_path, caplog):
    """Workers are all set up before the first episode: asking for more than the CPUs hold must not
    wait forever (the 2-CPU test cluster holds 2 one-CPU workers, not 5)."""
    env = {**small_spec()["env"], "trials": 3, "max_steps": 2}
    spec = spec_from_dict(small_spec(env=env, run={"workers": 5}))
    with caplog.at_level("WARNING", logger="robofleet.platform.preflight"):
        summary = run(spec, tmp_path, progress=False)
    assert summary["overall"]["episodes"] == 3
    assert "only 2 of 3 env workers fit" in caplog.text
    assert len({row["worker"] for row in csv.DictReader((tmp_path / "episodes.csv").open())}) <= 2


def _pinned(package: str) -> str:
    """The version pyproject.toml pins `package` to (`name==X`)."""
    import re
    import tomllib
    from pathlib import Path

    deps = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    [pin] = [d for d in deps if re.match(rf"{package}\s*==", d)]
    return pin.split("==", 1)[1].strip()
