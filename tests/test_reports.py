"""Reports of runs and sweeps: statistics against reference values, files that parse, HTML that renders."""
from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
import sys
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robofleet.platform.episodes import expand_episodes
from robofleet.platform.report import mean_std, wilson_interval
from robofleet.jobs.sweep_report import write_report
from robofleet.platform.report_files import Invocation, write_combined_report, write_run_report
from robofleet.platform.results import RunStore
from robofleet.platform.rollout_frames import compose_frame
from robofleet.platform.spec import dump_spec_toml, spec_from_dict
from tests.conftest import small_spec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FINGERPRINT = {"packages": {"python": "3.11.7", "mujoco": "3.8.1", "robosuite": "1.4.0", "libero": "0.1.1",
                            "torch": "2.13.0+cpu", "ray": "2.60.0", "numpy": "2.4.6", "diffusers": "0.42.1",
                            "transformers": "5.23.0"},
               "git_sha": "abc123", "hardware": {"cpu_model": "Test CPU", "cpus": 2, "memory_gb": 8.0}, "id": "fp-a"}


def make_run_dir(path: Path, successes: dict[tuple[int, int], int], spec_dict: dict | None = None,
                 fingerprint: dict | None = FINGERPRINT, errors: tuple[tuple[int, int], ...] = (),
                 videos: bool = False, skip: tuple[tuple[int, int], ...] = (),
                 worker_packages: tuple[dict, ...] = ()) -> Path:
    """A run directory as the runner leaves it, with chosen outcomes instead of simulated ones.

    successes: (task_id, trial) -> 0/1 for every episode of the spec (except `skip`ped ones).
    fingerprint: written into summary.json as the recorded one (None: no summary.json).
    worker_packages: the versions its env workers reported (summary.json worker_packages).
    """
    spec = spec_from_dict(spec_dict or small_spec())
    store = RunStore(path, spec)
    for e in expand_episodes(spec):
        if (e.task_id, e.trial) in skip:
            continue
        video = f"videos/{e.suite}_task{e.task_id:02d}_trial{e.trial:03d}.mp4" if videos and e.trial == 0 else ""
        store.append({**e.to_dict(), "task": f"task_{e.task_id}_words", "policy": spec.policy.name,
                      "planner": spec.planner.name, "success": successes[(e.task_id, e.trial)], "steps": 10,
                      "queries": 3, "final_state": f"{e.seed:016x}",
                      "error": "EpisodeError: boom\nTraceback ..." if (e.task_id, e.trial) in errors else "",
                      "attempts": 1, "wall_s": 1.0, "reset_s": 0.1, "policy_s": 0.1, "queue_s": 0.0, "model_s": 0.0,
                      "env_s": 0.5, "reset_mode": "hard", "worker": 0, "video": video, "plan_stats": ""})
    if fingerprint is not None:
        (path / "summary.json").write_text(json.dumps({
            "run": {}, "overall": {"episodes": 1}, "suites": {}, "tasks": [], "figures": {"workers": 1},
            "fingerprint": fingerprint, "worker_packages": list(worker_packages)}))
    return path


def outcomes(task_ids: list[int], trials: int, pattern) -> dict[tuple[int, int], int]:
    """(task_id, trial) -> int(pattern(task_id, trial))."""
    return {(t, i): int(pattern(t, i)) for t in task_ids for i in range(trials)}


def spec_with(tasks: list[int], trials: int, seed: int = 7, **policy) -> dict:
    d = small_spec()
    d["env"] = {**d["env"], "tasks": tasks, "trials": trials}
    d["seed"] = seed
    if policy:
        d["policy"] = policy
    return d


class _Collector(HTMLParser):
    """Tags, links and images of an HTML document (and whether every <table> closes)."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.open_tables = 0
        self.links: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "table":
            self.open_tables += 1
        if tag == "a":
            self.links.append(attrs.get("href", ""))
        if tag == "img":
            self.images.append(attrs.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "table":
            self.open_tables -= 1

    def handle_data(self, data):
        self.text.append(data)


def parse_html(path: Path) -> _Collector:
    parser = _Collector()
    parser.feed(path.read_text())
    parser.close()
    return parser


# -- statistics ------------------------------------------------------------------------------------
def test_wilson_interval_matches_statsmodels_and_the_published_example():
    from statsmodels.stats.proportion import proportion_confint

    # Newcombe (1998), Stat. Med. 17:857, example 81/263: Wilson 0.2553-0.3662.
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    for k, n in [(0, 1), (0, 10), (1, 10), (5, 10), (10, 10), (37, 50), (3, 7)]:
        ref = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert wilson_interval(k, n) == pytest.approx(ref, abs=1e-12), (k, n)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mean_and_std_over_seeds_are_the_sample_statistics():
    rates = [0.2, 0.5, 0.6]
    mean, std = mean_std(rates)
    assert mean == pytest.approx(np.mean(rates)) and std == pytest.approx(np.std(rates, ddof=1))
    assert mean_std([0.4]) == (0.4, None)
    assert mean_std([]) == (None, None)


# -- one run ---------------------------------------------------------------------------------------
def test_a_run_report_writes_files_that_parse(tmp_path):
    run = make_run_dir(tmp_path / "run", outcomes([0, 3], 5, lambda t, i: t == 0 or i < 2), spec_with([0, 3], 5),
                       errors=((3, 4),), videos=True)
    summary = write_run_report(run)

    saved = json.loads((run / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    for key in ("run", "overall", "suites", "tasks", "figures", "fingerprint", "worker_packages"):  # the v1 keys
        assert key in saved
    assert saved["schema_version"] == 2 and saved["kind"] == "run" and saved["complete"] is True
    overall = saved["overall"]
    assert (overall["episodes"], overall["successes"], overall["errors"], overall["failures"]) == (10, 7, 1, 2)
    assert overall["ci95"] == pytest.approx(list(wilson_interval(7, 10)))
    assert [(t["task_id"], t["successes"], t["episodes"]) for t in saved["tasks"]] == [(0, 5, 5), (3, 2, 5)]
    assert saved["tasks"][0]["videos"] == ["videos/libero_object_task00_trial000.mp4"]
    assert saved["fingerprint"]["id"] == "fp-a", "the recorded fingerprint is kept"
    assert any("1 episode(s) raised an error" in w for w in saved["warnings"])

    tasks = pd.read_csv(run / "tasks.csv")
    assert list(tasks["task_id"]) == [0, 3]
    assert list(tasks["success_rate"]) == [1.0, 0.4]
    assert tasks["ci95_low"].iloc[1] == pytest.approx(wilson_interval(2, 5)[0])
    suites = pd.read_csv(run / "suites.csv")
    assert suites.to_dict("records")[0]["successes"] == 7

    assert (run / "success.png").read_bytes().startswith(PNG_MAGIC)
    html = parse_html(run / "report.html")
    assert html.open_tables == 0 and html.tags.count("table") >= 3
    assert len(html.images) == 1 and base64.b64decode(html.images[0].split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "videos/libero_object_task00_trial000.mp4" in html.links
    text = "".join(html.text)
    assert "70.0% success" in text and "fp-a" in text and "Warning:" in text

    md = (run / "report.md").read_text()
    assert "| libero_object | 0: task_0_words | 5 | 5 | 100.0 |" in md
    assert "[0](videos/libero_object_task00_trial000.mp4)" in md
    assert "- spec hash: `" in md and "- mujoco: 3.8.1" in md


def test_an_incomplete_run_says_so(tmp_path):
    run = make_run_dir(tmp_path / "run", outcomes([0], 2, lambda t, i: 1), skip=((0, 1),))
    summary = write_run_report(run)
    assert summary["complete"] is False
    assert summary["warnings"][0].startswith("incomplete: 1 of 2 planned episodes")


def test_a_run_without_a_recorded_fingerprint_is_flagged(tmp_path):
    run = make_run_dir(tmp_path / "run", outcomes([0], 2, lambda t, i: 1), fingerprint=None)
    summary = write_run_report(run)
    assert summary["fingerprint_source"] == "report"
    assert summary["fingerprint"]["packages"]["ray"] == "2.60.0"  # this machine's, taken now
    assert any("not when the episodes ran" in w for w in summary["warnings"])


def test_a_run_resumed_under_other_software_is_flagged(tmp_path):
    run = make_run_dir(tmp_path / "run", outcomes([0], 2, lambda t, i: 1))
    before = json.loads((run / "summary.json").read_text())
    newer = copy.deepcopy(FINGERPRINT)
    newer["packages"]["mujoco"], newer["id"] = "3.3.2", "fp-b"
    # what runner.run passes after an invocation that ran episodes on other software
    invocation = Invocation(ran=1, wall_s=1.0, episodes_wall_s=None, worker_packages=[], serving=[],
                            fingerprint=newer)
    summary = write_run_report(run, invocation)
    assert before["fingerprint"]["id"] == "fp-a"
    assert [fp["id"] for fp in summary["fingerprints_seen"]] == ["fp-a", "fp-b"]
    assert any("different software" in w and "mujoco" in w for w in summary["warnings"])


def test_the_report_command_rewrites_a_run_directory(tmp_path):
    run = make_run_dir(tmp_path / "run", outcomes([0], 2, lambda t, i: i == 0))
    out = subprocess.run([sys.executable, "-m", "robofleet.jobs.cli", "report", str(run)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert str(run / "report.html") in out.stdout
    assert json.loads((run / "summary.json").read_text())["overall"]["successes"] == 1


# -- several runs ----------------------------------------------------------------------------------
def _sweep_dir(tmp_path: Path, rates_by_seed: dict[int, list[int]], fingerprints: dict[int, dict] | None = None) -> Path:
    """A sweep directory (2 policies x seeds) whose runs hold chosen outcomes: zero succeeds on the
    first rates_by_seed[seed][task] trials of each task; random never."""
    import tomli_w

    from robofleet.jobs.sweep import sweep_from_dict

    out = tmp_path / "sweep"
    doc = {**spec_with([0, 1], 4), "sweep": {"name": "s", "seeds": list(rates_by_seed)},
           "grid": [{"policy": [{"name": "zero"}, {"name": "random"}]}]}
    sweep = sweep_from_dict(doc)
    out.mkdir()
    (out / "sweep.toml").write_text(tomli_w.dumps(doc))
    for p in sweep.points:
        wins = rates_by_seed[p.spec.seed]
        pattern = (lambda t, i, w=wins: i < w[t]) if p.spec.policy.name == "zero" else (lambda t, i: False)
        fp = (fingerprints or {}).get(p.spec.seed, FINGERPRINT)
        make_run_dir(out / p.name, outcomes([0, 1], 4, pattern), tomllib.loads(dump_spec_toml(p.spec)), fingerprint=fp,
                     videos=True)
    return out


def test_a_sweep_report_gives_mean_and_std_over_seeds(tmp_path):
    out = _sweep_dir(tmp_path, {0: [4, 0], 1: [2, 2], 2: [1, 3]})
    summary = write_report(out)
    assert summary["kind"] == "sweep" and summary["sweep"]["episodes_recorded"] == 48
    zero = next(c for c in summary["configs"] if c["config"] == "zero")
    assert zero["seeds"] == [0, 1, 2] and zero["n_seeds"] == 3
    assert zero["success_rate_mean"] == pytest.approx(0.5) and zero["success_rate_std"] == pytest.approx(0.0)
    task0 = zero["tasks"][0]
    assert task0["success_rate_mean"] == pytest.approx(np.mean([1.0, 0.5, 0.25]))
    assert task0["success_rate_std"] == pytest.approx(np.std([1.0, 0.5, 0.25], ddof=1))
    assert zero["pooled"]["successes"] == 12 and zero["pooled"]["ci95"] == pytest.approx(list(wilson_interval(12, 24)))
    assert summary["warnings"] == [] and summary["fingerprint_differences"] == {}

    configs = pd.read_csv(out / "configs.csv")
    assert set(configs["config"]) == {"zero", "random"}
    points = pd.read_csv(out / "points.csv")
    assert len(points) == 6 and set(points["status"]) == {"complete"}
    assert len(pd.read_csv(out / "tasks.csv")) == 12
    html = parse_html(out / "report.html")
    assert html.open_tables == 0 and len(html.images) == 1
    assert "zero-seed0/videos/libero_object_task00_trial000.mp4" in html.links
    assert "zero-seed0/report.html" in html.links
    md = (out / "report.md").read_text()
    assert "| zero | 0, 1, 2 | 50.0 | 0.0 | 12/24 |" in md
    assert "58.3 ± 38.2 (3 seeds)" in md  # task 0 of zero: mean 58.3%, std 38.2 pp
    for point in ("zero-seed0", "random-seed2"):
        assert json.loads((out / point / "summary.json").read_text())["schema_version"] == 2


def test_runs_of_different_software_in_one_table_are_flagged(tmp_path):
    other = copy.deepcopy(FINGERPRINT)
    other["packages"]["mujoco"], other["git_sha"], other["id"] = "3.4.0", "def456", "fp-b"
    out = _sweep_dir(tmp_path, {0: [1, 1], 1: [1, 1]}, fingerprints={1: other})
    summary = write_report(out)
    assert set(summary["fingerprint_differences"]) == {"mujoco", "git_sha"}
    assert summary["warnings"][0].startswith("runs in this report were produced by different software/hardware")
    assert "mujoco 3.4.0, 3.8.1" in summary["warnings"][0]
    assert "Warning:** runs in this report were produced by different software" in (out / "report.md").read_text()
    assert "mujoco (differs)" in "".join(parse_html(out / "report.html").text)


def test_several_run_directories_combine_into_one_report(tmp_path):
    a0 = make_run_dir(tmp_path / "a-seed0", outcomes([0], 4, lambda t, i: i < 1), spec_with([0], 4, seed=0))
    a1 = make_run_dir(tmp_path / "a-seed1", outcomes([0], 4, lambda t, i: i < 3), spec_with([0], 4, seed=1))
    before = (a0 / "summary.json").read_text()
    summary = write_combined_report([a0, a1], tmp_path / "combined")
    assert [c["config"] for c in summary["configs"]] == ["a"]
    assert summary["configs"][0]["success_rate_mean"] == pytest.approx(0.5)
    assert (a0 / "summary.json").read_text() == before, "the combined runs are only read"
    assert (tmp_path / "combined" / "report.html").exists()
    assert "[a-seed0](../a-seed0/report.md)" in (tmp_path / "combined" / "report.md").read_text()


LIBERO_WORKER = {**FINGERPRINT["packages"]}  # LIBERO's workers run in the driver's environment
RS15_WORKER = {"python": "3.11.7", "mujoco": "3.3.1", "robosuite": "1.5.2", "libero": None, "torch": None,
               "ray": "2.60.0", "numpy": "2.2.5", "diffusers": None, "transformers": None, "robocasa": None}


def _two_family_sweep_dir(tmp_path: Path, rs15_workers: tuple[dict, ...] = (RS15_WORKER,)) -> Path:
    """A sweep directory with a LIBERO point and a robosuite-1.5 point, as examples/sweep_libero_and_robosuite.toml."""
    import tomli_w

    from robofleet.jobs.sweep import sweep_from_dict

    out = tmp_path / "sweep"
    doc = {**spec_with([0], 2), "sweep": {"name": "two-families"},
           "grid": [{"env": [{**small_spec()["env"], "trials": 2},
                             {"family": "robosuite", "tasks": ["Lift"], "trials": 2, "render_cameras": False}]}]}
    sweep = sweep_from_dict(doc)
    out.mkdir()
    (out / "sweep.toml").write_text(tomli_w.dumps(doc))
    for p in sweep.points:
        workers = (LIBERO_WORKER,) if p.spec.env.family == "libero" else rs15_workers
        make_run_dir(out / p.name, outcomes([0], 2, lambda t, i: i == 0), tomllib.loads(dump_spec_toml(p.spec)),
                     worker_packages=workers)
    return out


def test_a_sweep_report_shows_each_runs_env_worker_packages(tmp_path):
    out = _two_family_sweep_dir(tmp_path)
    summary = write_report(out)
    by_family = {p["family"]: p for p in summary["points"]}
    assert by_family["libero"]["worker_packages"] == [LIBERO_WORKER]
    assert by_family["robosuite"]["worker_packages"] == [RS15_WORKER]
    assert summary["warnings"] == [], "families differ on purpose: no warning"
    saved = json.loads((out / "summary.json").read_text())
    assert [(p["family"], p["worker_packages"][0]["robosuite"]) for p in saved["points"]] == [
        ("libero", "1.4.0"), ("robosuite", "1.5.2")]
    md = (out / "report.md").read_text()
    rows = {p["family"]: f"| {p['name']} | {p['family']} | 3.11.7 | " for p in summary["points"]}
    assert rows["libero"] + "1.4.0 | 3.8.1 | 2.4.6 | 0.1.1 | none | 2.13.0+cpu | 2.60.0 |" in md
    assert rows["robosuite"] + "1.5.2 | 3.3.1 | 2.2.5 | none | none | none | 2.60.0 |" in md
    html = parse_html(out / "report.html")
    assert html.open_tables == 0 and "1.5.2" in html.text and "1.4.0" in html.text
    points = pd.read_csv(out / "points.csv").set_index("family")
    assert "robosuite 1.5.2, mujoco 3.3.1, numpy 2.2.5" in points.loc["robosuite", "worker_packages"]
    assert "robosuite 1.4.0, mujoco 3.8.1" in points.loc["libero", "worker_packages"]
    run_md = (out / by_family["robosuite"]["name"] / "report.md").read_text()
    assert "| single_arm | 3.11.7 | 1.5.2 | 3.3.1 | 2.2.5 | none | none | none | 2.60.0 |" in run_md


def test_env_workers_of_one_family_on_different_versions_are_flagged(tmp_path):
    older = {**RS15_WORKER, "robosuite": "1.5.1"}
    summary = write_report(_two_family_sweep_dir(tmp_path, rs15_workers=(RS15_WORKER, older)))
    assert ("env workers of the robosuite runs ran different package versions (robosuite; "
            "see the env worker packages table)") in summary["warnings"]
    assert not any("libero runs" in w for w in summary["warnings"])


# -- videos ----------------------------------------------------------------------------------------
def test_a_video_frame_shows_the_predicted_future_beside_the_real_cameras():
    real = {"wrist": np.full((8, 10, 3), 10, np.uint8), "agentview": np.full((8, 10, 3), 20, np.uint8)}
    predicted = {"agentview": np.full((4, 5, 3), 200, np.uint8)}  # at the model's resolution
    frame = compose_frame(real, predicted)
    assert frame.shape == (8 + 4, 40, 3) and frame.dtype == np.uint8
    body = frame[4:]
    assert (body[:, :10] == 20).all() and (body[:, 10:20] == 10).all()  # real: cameras sorted by name
    assert (body[:, 20:30] == 200).all() and (body[:, 30:] == 96).all()  # predicted; wrist missing: grey
    assert compose_frame(real, with_prediction_column=False).shape == (8, 20, 3)


# -- rendering -------------------------------------------------------------------------------------
def test_the_html_report_renders_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("skipped: chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    out = _sweep_dir(tmp_path, {0: [4, 0], 1: [2, 2]})
    write_report(out)
    shot = tmp_path / "shot.png"
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
                           (out / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (1600, 1200, 3)
    dark = (image.sum(axis=2) < 200).mean()
    assert 0.002 < dark < 0.5, "the page shows text and tables, not a blank or black screen"
    assert len(np.unique(image.reshape(-1, 3)[::97], axis=0)) > 20, "the embedded plot's colours are drawn"
