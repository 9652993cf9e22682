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
                 worker_packages: tuple[dict, ...] = (), attempts: dict[tuple[int, int], int] | None = None,
                 steps=None) -> Path:
    """A run directory as the runner leaves it, with chosen outcomes instead of simulated ones.

    successes: (task_id, trial) -> 0/1 for every episode of the spec (except `skip`ped ones).
    fingerprint: written into summary.json as the recorded one (None: no summary.json).
    worker_packages: the versions its env workers reported (summary.json worker_packages).
    attempts: (task_id, trial) -> attempts (default 1). steps: (task_id, trial) -> env steps (default 10).
    """
    spec = spec_from_dict(spec_dict or small_spec())
    store = RunStore(path, spec)
    for e in expand_episodes(spec):
        if (e.task_id, e.trial) in skip:
            continue
        video = f"videos/{e.suite}_task{e.task_id:02d}_trial{e.trial:03d}.mp4" if videos and e.trial == 0 else ""
        store.append({**e.to_dict(), "task": f"task_{e.task_id}_words", "policy": spec.policy.name,
                      "planner": spec.planner.name, "success": successes[(e.task_id, e.trial)],
                      "steps": steps(e.task_id, e.trial) if steps else 10,
                      "queries": 3, "final_state": f"{e.seed:016x}",
                      "error": "EpisodeError: boom\nTraceback ..." if (e.task_id, e.trial) in errors else "",
                      "attempts": (attempts or {}).get((e.task_id, e.trial), 1), "wall_s": 1.0,
                      "started_at": f"2025-01-02T03:{e.task_id:02d}:{e.trial:02d}.000Z",
                      "ended_at": f"2025-01-02T04:{e.task_id:02d}:{e.trial:02d}.000Z", "reset_s": 0.1, "policy_s": 0.1, "queue_s": 0.0, "model_s": 0.0,
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
    assert len(html.images) == 2, "the success plot and the episode-length plot"
    assert all(base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC) for src in html.images)
    assert "videos/libero_object_task00_trial000.mp4" in html.links
    text = "".join(html.text)
    assert "70.0% success" in text and "fp-a" in text and "Warning:" in text

    md = (run / "report.md").read_text()
    assert "| libero_object | 0: task_0_words | 5 | 5 | 100.0 |" in md
    assert "[0](videos/libero_object_task00_trial000.mp4)" in md
    assert "- spec hash: `" in md and "- mujoco: 3.8.1" in md


def test_a_run_report_shows_the_serving_settings(tmp_path):
    served = {**spec_with([0], 2), "serving": {"replicas": 2, "max_batch": 4, "max_wait_ms": 2.5, "deterministic": False,
                                               "fixed_batch": 3}}
    run = make_run_dir(tmp_path / "served", outcomes([0], 2, lambda t, i: 1), served)
    summary = write_run_report(run)
    expected = {"replicas": 2, "max_batch": 4, "max_wait_ms": 2.5, "deterministic": False, "fixed_batch": 3}
    assert summary["run"]["serving"] == expected
    assert json.loads((run / "summary.json").read_text())["run"]["serving"] == expected
    line = "serving: replicas 2, max_batch 4, max_wait_ms 2.5, deterministic false, fixed_batch 3"
    assert line in (run / "report.md").read_text()
    assert line in "".join(parse_html(run / "report.html").text)

    alone = write_run_report(make_run_dir(tmp_path / "alone", outcomes([0], 2, lambda t, i: 1), spec_with([0], 2)))
    assert alone["run"]["serving"] == {"replicas": 0, "max_batch": 8, "max_wait_ms": 5.0, "deterministic": True,
                                       "fixed_batch": 1}  # the defaults, filled in
    assert "serving: replicas 0 (each env worker holds its own policy)" in (tmp_path / "alone" / "report.md").read_text()


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


def test_a_run_report_says_when_and_how_it_ran(tmp_path):
    run = make_run_dir(tmp_path / "run", outcomes([0], 2, lambda t, i: 1))
    first = Invocation(ran=2, wall_s=5.0, episodes_wall_s=4.0, worker_packages=[], serving=[], fingerprint=FINGERPRINT,
                       command="robofleet run spec.toml --out run", started_at="2025-01-02T03:00:00.000Z",
                       ended_at="2025-01-02T03:05:00.000Z")
    write_run_report(run, first)
    again = Invocation(ran=1, wall_s=2.0, episodes_wall_s=1.0, worker_packages=[], serving=[], fingerprint=FINGERPRINT,
                       command="robofleet run spec.toml --out run --workers 4", started_at="2025-01-03T00:00:00.000Z",
                       ended_at="2025-01-03T00:01:00.000Z")
    write_run_report(run, again)
    summary = write_run_report(run)  # `robofleet report`: no invocation, the history is kept
    assert summary["command"] == "robofleet run spec.toml --out run --workers 4"
    assert summary["started_at"] == "2025-01-02T03:00:00.000Z" and summary["ended_at"] == "2025-01-03T00:01:00.000Z"
    assert [i["command"] for i in summary["invocations"]] == [first.command, again.command]
    md = (run / "report.md").read_text()
    assert "started 2025-01-02T03:00:00.000Z, ended 2025-01-03T00:01:00.000Z (UTC)" in md
    assert "command: `robofleet run spec.toml --out run --workers 4`" in md
    assert "robofleet run spec.toml --out run --workers 4" in "".join(parse_html(run / "report.html").text)


def test_without_recorded_invocations_the_times_come_from_the_episodes(tmp_path):
    run = make_run_dir(tmp_path / "run", outcomes([0, 1], 2, lambda t, i: 1), spec_with([0, 1], 2))
    summary = write_run_report(run)
    assert summary["started_at"] == "2025-01-02T03:00:00.000Z"  # task 0 trial 0's start
    assert summary["ended_at"] == "2025-01-02T04:01:01.000Z"    # task 1 trial 1's end
    assert summary["command"] is None and summary["invocations"] == []


def test_rows_appended_under_an_older_episodes_csv_header_still_report(tmp_path):
    from robofleet.platform.results import EPISODE_COLUMNS

    assert EPISODE_COLUMNS[-3:] == ("started_at", "ended_at", "remote_s")
    run = make_run_dir(tmp_path / "run", outcomes([0], 2, lambda t, i: 1))
    lines = (run / "episodes.csv").read_text().splitlines()
    old_header = ",".join(EPISODE_COLUMNS[:-3])  # a directory recorded before the columns existed
    (run / "episodes.csv").write_text("\n".join([old_header, *lines[1:]]) + "\n")
    summary = write_run_report(run)
    assert summary["overall"]["episodes"] == 2 and summary["overall"]["successes"] == 2


def test_the_run_report_lists_every_episode_with_its_outcome_error_and_video(tmp_path):
    run = make_run_dir(tmp_path / "run", outcomes([0, 3], 3, lambda t, i: t == 0), spec_with([0, 3], 3),
                       errors=((3, 2),), videos=True)
    summary = write_run_report(run)
    assert summary["error_summary"] == [{"error": "EpisodeError: boom", "count": 1,
                                         "episodes": ["libero/libero_object/task03/trial002/seed7"]}]
    md = (run / "report.md").read_text()
    assert "## Episodes" in md and "## Errors" in md
    assert ("| libero_object | 0: task_0_words | 0 | success | 10 | 1 | 2025-01-02T03:00:00.000Z |  | "
            "[mp4](videos/libero_object_task00_trial000.mp4) |") in md
    assert "| libero_object | 3: task_3_words | 1 | failure | 10 | 1 | 2025-01-02T03:03:01.000Z |  |  |" in md
    assert "| libero_object | 3: task_3_words | 2 | error | 10 | 1 | 2025-01-02T03:03:02.000Z | EpisodeError: boom |" in md
    html = (run / "report.html").read_text()
    assert '<td class="failure">failure</td>' in html and '<td class="error">error</td>' in html
    assert "Episodes (3 of 6 did not succeed)" in html
    assert '<video controls preload="metadata" src="videos/libero_object_task03_trial000.mp4">' in html
    assert "trial 0, failure, 10 steps" in html


def test_retried_episodes_are_counted_and_warned(tmp_path):
    run = make_run_dir(tmp_path / "run", outcomes([0], 3, lambda t, i: 1), attempts={(0, 1): 2})
    summary = write_run_report(run)
    assert summary["overall"]["retried"] == 1 and summary["tasks"][0]["retried"] == 1
    assert any(w.startswith("1 episode(s) were retried after their env worker died") for w in summary["warnings"])
    assert "| libero_object | 0: task_0_words | 1 | success | 10 | 2 |" in (run / "report.md").read_text()
    assert pd.read_csv(run / "tasks.csv")["retried"].tolist() == [1]


def test_a_run_report_gives_the_episode_length_distribution_per_task(tmp_path):
    run = make_run_dir(tmp_path / "run", outcomes([0, 1], 5, lambda t, i: i % 2), spec_with([0, 1], 5),
                       steps=lambda t, i: 10 * (i + 1) + t)
    summary = write_run_report(run)
    assert summary["tasks"][0]["steps_distribution"] == {"min": 10, "p25": 20, "median": 30, "p75": 40, "max": 50}
    tasks = pd.read_csv(run / "tasks.csv")
    assert tasks[["steps_min", "steps_median", "steps_max"]].values.tolist() == [[10, 30, 50], [11, 31, 51]]
    assert "| 30 | 10 / 30 / 50 |" in (run / "report.md").read_text()
    assert (run / "steps.png").read_bytes().startswith(PNG_MAGIC)
    assert "Episode lengths" in "".join(parse_html(run / "report.html").text)


def test_the_success_plot_labels_its_bars_with_the_task_names(tmp_path):
    from robofleet.platform.report_files import run_plot_bars

    run = make_run_dir(tmp_path / "run", outcomes([0, 3], 2, lambda t, i: 1), spec_with([0, 3], 2))
    labels = [b.label for b in run_plot_bars(write_run_report(run))]
    assert labels == ["0: task 0 words", "3: task 3 words", "overall"]


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


def test_two_runs_of_the_same_spec_and_seed_are_counted_once(tmp_path):
    a = make_run_dir(tmp_path / "a-seed0", outcomes([0], 4, lambda t, i: i < 1), spec_with([0], 4, seed=0))
    copy_dir = tmp_path / "copy" / "a-seed0"
    shutil.copytree(a, copy_dir)  # the same spec and seed: bit-identical episodes
    b = make_run_dir(tmp_path / "a-seed1", outcomes([0], 4, lambda t, i: i < 3), spec_with([0], 4, seed=1))
    summary = write_combined_report([a, copy_dir, b], tmp_path / "combined")
    [config] = summary["configs"]
    assert config["n_seeds"] == 2 and config["seeds"] == [0, 1]
    assert [(p["seed"], p["episodes"], p["points"]) for p in config["per_seed"]] == [
        (0, 4, ["a-seed0", "copy/a-seed0"]), (1, 4, ["a-seed1"])]
    assert config["pooled"]["episodes"] == 8 and config["pooled"]["successes"] == 4
    assert config["tasks"][0]["pooled"]["episodes"] == 8
    copy_point = next(p for p in summary["points"] if p["name"] == "copy/a-seed0")
    assert copy_point["duplicate_episodes"] == 4 and copy_point["duplicate_of"] == ["a-seed0"]
    assert summary["sweep"]["duplicate_episodes"] == 4
    assert any(w.startswith("copy/a-seed0: 4 of its 4 episodes repeat a-seed0's") for w in summary["warnings"])
    assert "repeated in another run of their configuration: counted once" in (tmp_path / "combined" / "report.md").read_text()


def test_runs_of_other_configurations_on_the_same_episodes_are_not_duplicates(tmp_path):
    zero = make_run_dir(tmp_path / "zero", outcomes([0], 2, lambda t, i: 1), spec_with([0], 2, name="zero"))
    rand = make_run_dir(tmp_path / "random", outcomes([0], 2, lambda t, i: 0), spec_with([0], 2, name="random"))
    summary = write_combined_report([zero, rand], tmp_path / "combined")
    assert summary["sweep"]["duplicate_episodes"] == 0
    assert [c["pooled"]["episodes"] for c in summary["configs"]] == [2, 2]


def test_a_sweep_report_names_configurations_by_the_parameters_that_differ(tmp_path):
    import tomli_w

    from robofleet.jobs.sweep import sweep_from_dict

    out = tmp_path / "sweep"
    doc = {**spec_with([0], 2), "sweep": {"name": "chunks", "description": "Does a longer chunk help the random policy?"},
           "grid": [{"policy": {"chunk_size": [2, 8]}}]}
    out.mkdir()
    (out / "sweep.toml").write_text(tomli_w.dumps(doc))
    for p in sweep_from_dict(doc).points:
        make_run_dir(out / p.name, outcomes([0], 2, lambda t, i: 1), tomllib.loads(dump_spec_toml(p.spec)))
    summary = write_report(out)
    assert summary["differing_parameters"] == ["policy.chunk_size"]
    assert [(c["config"], c["label"], c["parameters"]) for c in summary["configs"]] == [
        ("chunk_size2", "random(chunk_size=2)", {"policy.chunk_size": 2}),
        ("chunk_size8", "random(chunk_size=8)", {"policy.chunk_size": 8})]
    md = (out / "report.md").read_text()
    assert "| random(chunk_size=2) [chunk_size2] | chunk_size2 | 2 |" in md
    html = parse_html(out / "report.html")
    text = "".join(html.text)
    assert "Does a longer chunk help the random policy?" in text and "What differs between configurations" in text
    assert "random(chunk_size=8) [chunk_size8]" in text
    assert pd.read_csv(out / "configs.csv")["label"].iloc[0] == "random(chunk_size=2)"


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


def test_video_policy_reads_the_cli_forms_and_refuses_the_rest():
    from robofleet.platform.errors import SpecError
    from robofleet.platform.rollout_video import VideoPolicy

    assert VideoPolicy.parse("3") == VideoPolicy(first=3) == VideoPolicy.of(3)
    assert VideoPolicy.parse("failures:2") == VideoPolicy(failures=2)
    assert VideoPolicy.parse("failures") == VideoPolicy(failures=None)  # every failure
    assert VideoPolicy.parse("1,failures:4") == VideoPolicy(first=1, failures=4)
    assert [str(VideoPolicy.parse(t)) for t in ("3", "failures:2", "failures", "1,failures:4", "0")] == [
        "3", "failures:2", "failures", "1,failures:4", "0"]
    assert not VideoPolicy.parse("0") and VideoPolicy.parse("failures:1")
    for bad in ("-1", "failures:-2", "fail", "2:3", ""):
        with pytest.raises(SpecError, match="--videos"):
            VideoPolicy.parse(bad)


def test_failure_videos_keep_only_episodes_that_did_not_succeed_up_to_k_per_task(tmp_path):
    from robofleet.platform.rollout_video import VideoPolicy
    from robofleet.platform.scheduler import _InFlight, _row, _video_path

    spec = spec_from_dict(spec_with([0, 1], 4))
    store = RunStore(tmp_path / "run", spec)
    policy = VideoPolicy.parse("1,failures:1")
    outcomes_by_trial = {0: 0, 1: 1, 2: 0, 3: 0}  # trial 0 is recorded anyway (first 1); then fail, succeed, ...
    rows = {}
    for e in expand_episodes(spec):
        path = _video_path(store, spec, e, policy)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"mp4")  # what the worker recorded
        result = {"success": outcomes_by_trial[e.trial], "steps": 5, "error": "", "video": str(path)}
        rows[(e.task_id, e.trial)] = _row(spec, store.root, _InFlight(None, 0, e, 1, path), result)
    kept = sorted(p.name for p in (store.root / "videos").glob("*.mp4"))
    assert kept == ["libero_object_task00_trial000.mp4", "libero_object_task00_trial002.mp4",
                    "libero_object_task01_trial000.mp4", "libero_object_task01_trial002.mp4"]
    assert rows[(0, 2)]["video"] == "videos/libero_object_task00_trial002.mp4"
    assert rows[(0, 1)]["video"] == "" and rows[(0, 3)]["video"] == "", "a success, and a failure over the limit"
    assert not list((store.root / "videos" / "recording").iterdir()), "no recording is left behind"
    # a worker that died mid-episode leaves an incomplete recording: it is not kept
    e = expand_episodes(spec_from_dict(spec_with([2], 4)))[1]
    path = _video_path(store, spec, e, VideoPolicy(failures=None))
    Path(path).write_bytes(b"mp4")
    row = _row(spec, store.root, _InFlight(None, 0, e, 2, path), {"success": 0, "steps": 0, "error": "worker died"})
    assert row["video"] == "" and not Path(path).exists() and row["ended_at"].endswith("Z")


def test_a_video_frame_carries_a_caption_with_the_instruction_step_and_outcome():
    from robofleet.platform.rollout_frames import CAPTION_ROWS, OUTCOME_COLOURS, caption_frame

    frame = np.full((64, 128, 3), 50, np.uint8)
    running = caption_frame(frame, "put the bowl on the plate", step=7)
    assert running.shape == (64 + CAPTION_ROWS, 128, 3) and (running[:64] == 50).all()
    assert (running[64:, 6:] > 200).any(), "the caption's text is drawn"
    failed = caption_frame(frame, "put the bowl on the plate", step=7, outcome="failure")
    assert tuple(failed[64 + 5, 1]) == OUTCOME_COLOURS["failure"]
    assert (failed[64 + 16:, 60:] != running[64 + 16:, 60:]).any(), "the outcome is written after the step"
    assert not np.array_equal(caption_frame(frame, "x", step=7), caption_frame(frame, "x", step=8))


def test_a_libero_episode_records_its_times_and_a_captioned_video_with_an_end_card(tmp_path):
    import imageio.v2 as imageio

    from robofleet.envs.libero import LiberoEnv
    from robofleet.platform.episode_loop import run_episode
    from robofleet.platform.rollout_frames import CAPTION_ROWS, OUTCOME_COLOURS
    from robofleet.platform.rollout_video import END_CARD_FRAMES
    from robofleet.planners.direct import Direct
    from robofleet.policies.contract import Prediction

    class Still:
        chunk_size = 4

        def predict(self, observations, seeds):
            return [Prediction(actions=np.zeros((4, 7), np.float32)) for _ in observations]

        def reset(self):
            pass

    env = LiberoEnv("libero_object", image_size=64, render_cameras=True)
    try:
        env.max_steps = 8
        episode = expand_episodes(spec_from_dict(small_spec()))[0]
        row = run_episode(env, Direct(Still()), episode, video_path=tmp_path / "v.mp4")
    finally:
        env.close()
    assert row["error"] == "" and row["success"] == 0 and row["steps"] == 8
    assert row["started_at"] < row["ended_at"] and row["started_at"].endswith("Z")
    frames = imageio.mimread(tmp_path / "v.mp4")
    assert len(frames) == 1 + 8 + END_CARD_FRAMES  # the reset, every step, the end card
    assert frames[0].shape == (64 + CAPTION_ROWS, 128, 3)
    edge = frames[-1][64 + 4:64 + CAPTION_ROWS - 4, 1].astype(int)  # the card's outcome bar (lossy codec)
    assert np.abs(edge.mean(axis=0) - OUTCOME_COLOURS["failure"]).max() < 40


# -- rendering -------------------------------------------------------------------------------------
def screenshot(page: Path, shot: Path, profile: Path, height: int = 1600) -> np.ndarray:
    """`page` rendered by headless chromium at 1200 x height, as an RGB array (skips without chromium)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("skipped: chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={profile}", f"--screenshot={shot}", f"--window-size=1200,{height}",
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PIL import Image

    return np.asarray(Image.open(shot).convert("RGB"))


def test_the_run_report_renders_in_headless_chromium_with_its_episodes_and_videos(tmp_path):
    from robofleet.envs.contract import Observation
    from robofleet.platform.rollout_video import RolloutVideo

    run = make_run_dir(tmp_path / "run", outcomes([0, 3], 3, lambda t, i: t == 0 or i == 1), spec_with([0, 3], 3),
                       errors=((3, 2),), videos=True, attempts={(3, 1): 2}, steps=lambda t, i: 40 + 25 * i + 7 * t)
    for task in (0, 3):  # real captioned mp4s where the rows point
        video = RolloutVideo(run / "videos" / f"libero_object_task{task:02d}_trial000.mp4")
        for step in range(6):
            image = np.zeros((64, 64, 3), np.uint8)
            image[:, : 10 * (step + 1)] = (30, 120, 200)
            video.add(Observation(images={"agentview": image, "wrist": image[::-1]}, proprio=np.zeros(9),
                                  instruction=f"task {task}: pick up the soup and place it in the basket"))
        video.close("success" if task == 0 else "failure")
    write_run_report(run, Invocation(ran=6, wall_s=9.0, episodes_wall_s=8.0, worker_packages=[], serving=[],
                                     fingerprint=FINGERPRINT, command="robofleet run spec.toml --videos 1",
                                     started_at="2025-01-02T03:00:00.000Z", ended_at="2025-01-02T03:09:00.000Z"))
    image = screenshot(run / "report.html", tmp_path / "run.png", tmp_path / "profile", height=2400)
    assert image.shape == (2400, 1200, 3)
    dark = (image.sum(axis=2) < 200).mean()
    assert 0.002 < dark < 0.5, "the page shows text and tables, not a blank or black screen"
    red = ((image[..., 0] > 180) & (image[..., 1] < 80) & (image[..., 2] < 80)).mean()
    assert red > 0.00002, "failed episodes are drawn in red (outcome column, steps plot)"


def test_the_html_report_renders_in_headless_chromium(tmp_path):
    out = _sweep_dir(tmp_path, {0: [4, 0], 1: [2, 2]})
    write_report(out)
    image = screenshot(out / "report.html", tmp_path / "shot.png", tmp_path / "profile")
    assert image.shape == (1600, 1200, 3)
    dark = (image.sum(axis=2) < 200).mean()
    assert 0.002 < dark < 0.5, "the page shows text and tables, not a blank or black screen"
    assert len(np.unique(image.reshape(-1, 3)[::97], axis=0)) > 20, "the embedded plot's colours are drawn"
