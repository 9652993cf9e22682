"""`robofleet compare`: episodes paired by identity, per-task and overall deltas, exact McNemar test."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from robofleet.platform.compare import CompareError, compare_runs, mcnemar_exact, render_comparison
from tests.test_reports import FINGERPRINT, make_run_dir, outcomes, spec_with


def statsmodels_mcnemar(both: int, a_only: int, b_only: int, neither: int) -> float:
    from statsmodels.stats.contingency_tables import mcnemar

    return float(mcnemar([[both, a_only], [b_only, neither]], exact=True).pvalue)


@pytest.mark.parametrize("a_only, b_only", [(0, 0), (1, 9), (9, 1), (3, 3), (0, 6), (2, 12), (17, 30)])
def test_exact_mcnemar_matches_statsmodels(a_only, b_only):
    assert mcnemar_exact(a_only, b_only) == pytest.approx(statsmodels_mcnemar(5, a_only, b_only, 5), abs=1e-12)


def test_exact_mcnemar_known_value():
    # 1 vs 9 discordant pairs: p = 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 2 * 11 / 1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)


@pytest.fixture()
def two_runs(tmp_path):
    """A and B on tasks 0 and 1, 10 trials each; B improves task 1; B misses trials 8-9 of task 0."""
    spec = spec_with([0, 1], 10)
    a = make_run_dir(tmp_path / "a", outcomes([0, 1], 10, lambda t, i: i < 5 if t == 0 else i in (0, 1)),
                     {**spec, "policy": {"name": "zero"}})
    b = make_run_dir(tmp_path / "b", outcomes([0, 1], 10, lambda t, i: i in (0, 1, 2, 3, 5) if t == 0 else i >= 1),
                     spec, skip=((0, 8), (0, 9)))
    return a, b


def test_episodes_pair_by_identity_and_deltas_are_per_task_and_overall(two_runs):
    a, b = two_runs
    cmp = compare_runs(a, b)
    assert cmp["unpaired"] == {"only_a": 2, "only_b": 0}
    task0, task1 = cmp["tasks"]
    # task 0, trials 0-7: A wins 0-4, B wins 0-3 and 5 -> only A: trial 4, only B: trial 5
    assert (task0["paired"], task0["successes_a"], task0["successes_b"], task0["a_only"], task0["b_only"]) == (8, 5, 5, 1, 1)
    assert task0["delta"] == 0.0 and task0["mcnemar_p"] == pytest.approx(1.0)
    # task 1: A wins 0-1, B wins 1-9 -> only A: 0, only B: 2-9 (8 pairs)
    assert (task1["a_only"], task1["b_only"], task1["both"], task1["neither"]) == (1, 8, 1, 0)
    assert task1["delta"] == pytest.approx((9 - 2) / 10)
    assert task1["mcnemar_p"] == pytest.approx(statsmodels_mcnemar(1, 1, 8, 0))
    overall = cmp["overall"]
    assert (overall["paired"], overall["a_only"], overall["b_only"]) == (18, 2, 9)
    assert overall["delta"] == pytest.approx((14 - 7) / 18)
    assert overall["mcnemar_p"] == pytest.approx(statsmodels_mcnemar(overall["both"], 2, 9, overall["neither"]))
    assert any("2 episodes only in A" in w for w in cmp["warnings"])


def test_the_markdown_names_both_runs_and_the_test(two_runs):
    text = render_comparison(compare_runs(*two_runs))
    assert "policy `zero`" in text and "policy `random`" in text
    assert "delta B - A +38.9 pp" in text
    assert "exact McNemar p = " in text
    assert "| libero_object | 1: task_1_words | 10 | 20.0 | 90.0 | +70.0 | 1 | 8 |" in text


def test_runs_on_other_seeds_do_not_pair(tmp_path):
    a = make_run_dir(tmp_path / "a", outcomes([0], 2, lambda t, i: 1), spec_with([0], 2, seed=1))
    b = make_run_dir(tmp_path / "b", outcomes([0], 2, lambda t, i: 1), spec_with([0], 2, seed=2))
    cmp = compare_runs(a, b)
    assert cmp["overall"]["paired"] == 0 and cmp["unpaired"] == {"only_a": 2, "only_b": 2}
    assert cmp["warnings"][0].startswith("no episode could be paired")


def test_different_env_settings_and_software_are_warned_about(tmp_path):
    other_env = spec_with([0], 2)
    other_env["env"]["max_steps"] = 30
    newer = copy.deepcopy(FINGERPRINT)
    newer["packages"]["mujoco"], newer["id"] = "3.4.0", "fp-b"
    a = make_run_dir(tmp_path / "a", outcomes([0], 2, lambda t, i: 1), spec_with([0], 2))
    b = make_run_dir(tmp_path / "b", outcomes([0], 2, lambda t, i: 0), other_env, fingerprint=newer)
    warnings = compare_runs(a, b)["warnings"]
    assert any("max_steps 12 vs 30" in w for w in warnings)
    assert any("mujoco 3.8.1 vs 3.4.0" in w for w in warnings)


def test_a_sweep_directory_is_refused_with_a_hint(tmp_path):
    (tmp_path / "sweep.toml").write_text("")
    with pytest.raises(CompareError, match="a sweep directory"):
        compare_runs(tmp_path, tmp_path)


def test_the_compare_command_prints_markdown_and_writes_json(two_runs, tmp_path):
    a, b = two_runs
    out = subprocess.run([sys.executable, "-m", "robofleet.jobs.cli", "compare", str(a), str(b),
                          "--json", str(tmp_path / "cmp.json")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("# robofleet compare")
    saved = json.loads((tmp_path / "cmp.json").read_text())
    assert saved["overall"]["b_only"] == 9 and saved["pair_keys"] == ["family", "suite", "task_id", "trial", "sweep_seed"]
