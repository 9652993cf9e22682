"""Sweep specs (expansion, validation up front) and sweeps run embedded: resume after SIGKILL."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from robofleet.jobs.local_head import kill_process_tree
from robofleet.jobs.sweep import load_sweep, sweep_from_dict
from robofleet.jobs.sweep_runner import SweepError, check_out_dir, run_sweep
from robofleet.platform.errors import SpecError
from robofleet.platform.results import RunDirError
from tests.conftest import small_spec

IDENTITY = ("episode_id", "success", "steps", "final_state", "error")


def sweep_doc(**sweep_and_grid):
    """small_spec() as the base, plus a [sweep] table and [[grid]] blocks."""
    doc = small_spec()
    doc["sweep"] = {"name": "t", **sweep_and_grid.pop("sweep", {})}
    if "grid" in sweep_and_grid:
        doc["grid"] = sweep_and_grid.pop("grid")
    assert not sweep_and_grid
    return doc


def toml_text(doc) -> str:
    import tomli_w

    return tomli_w.dumps(doc)


# -- expansion --------------------------------------------------------------------------------------
def test_a_block_is_the_product_of_its_axes_and_seeds_are_outermost():
    sweep = sweep_from_dict(sweep_doc(sweep={"seeds": [0, 1]}, grid=[
        {"policy": [{"name": "zero"}, {"name": "random", "chunk_size": 4}],
         "env": {"suite": ["libero_object", "libero_spatial"]}}]))
    assert [p.name for p in sweep.points] == [
        "zero-libero_object-seed0", "zero-libero_spatial-seed0", "random-libero_object-seed0", "random-libero_spatial-seed0",
        "zero-libero_object-seed1", "zero-libero_spatial-seed1", "random-libero_object-seed1", "random-libero_spatial-seed1",
    ]
    first = sweep.points[0]
    assert (first.spec.seed, first.spec.policy.name, first.spec.env.suite) == (0, "zero", "libero_object")
    assert sweep.points[-1].spec.seed == 1 and sweep.points[-1].config == "random-libero_spatial"
    assert sweep.points[2].spec.policy.options == {"chunk_size": 4}
    assert sweep.episodes == 8 * 2
    assert first.spec.name == "t/zero-libero_object-seed0"


def test_blocks_are_concatenated_and_no_grid_means_the_base():
    sweep = sweep_from_dict(sweep_doc(grid=[{"policy": [{"name": "zero"}]}, {"env": {"trials": [1, 3]}}]))
    assert [p.name for p in sweep.points] == ["zero", "trials1", "trials3"]
    assert [p.spec.env.trials for p in sweep.points] == [2, 1, 3]
    assert [p.block for p in sweep.points] == [0, 1, 1]
    base_only = sweep_from_dict(sweep_doc(sweep={"seeds": [5, 6]}))
    assert [(p.name, p.spec.seed) for p in base_only.points] == [("seed5", 5), ("seed6", 6)]


def test_a_table_value_replaces_the_whole_table_and_a_dotted_key_changes_one_key():
    replaced = sweep_from_dict(sweep_doc(grid=[{"policy": [{"name": "zero"}]}]))
    assert replaced.points[0].spec.policy.options == {}  # the base's chunk_size is gone
    dotted = sweep_from_dict(sweep_doc(grid=[{"policy": {"chunk_size": [2, 3]}}]))
    assert [p.spec.policy.name for p in dotted.points] == ["random", "random"]
    assert [p.spec.policy.options["chunk_size"] for p in dotted.points] == [2, 3]
    assert [p.name for p in dotted.points] == ["chunk_size2", "chunk_size3"]


def test_list_valued_keys_are_swept_as_lists_of_lists():
    sweep = sweep_from_dict(sweep_doc(grid=[{"env": {"tasks": [[0], [1, 2]]}}]))
    assert [p.spec.env.tasks for p in sweep.points] == [(0,), (1, 2)]
    assert [p.name for p in sweep.points] == ["tasks0", "tasks1-2"]


def test_same_named_tables_are_told_apart_by_the_keys_that_differ():
    sweep = sweep_from_dict(sweep_doc(grid=[{"policy": [{"name": "random", "chunk_size": 2},
                                                         {"name": "random", "chunk_size": 5}]}]))
    assert [p.name for p in sweep.points] == ["random-chunk_size=2", "random-chunk_size=5"]


def test_tables_without_a_name_are_labelled_by_the_values_that_differ():
    sweep = sweep_from_dict(sweep_doc(grid=[{"env": [
        {"family": "libero", "suite": "libero_object", "tasks": [0], "trials": 1},
        {"family": "libero", "suite": "libero_spatial", "tasks": [0], "trials": 2}]}]))
    assert [p.name for p in sweep.points] == ["libero_object-trials=1", "libero_spatial-trials=2"]


def test_sweep_files_parse_with_toml_dotted_keys(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(toml_text(small_spec()) + '\n[sweep]\nname = "dotted"\nseeds = [1]\n\n[[grid]]\n'
                    'env.suite = ["libero_goal"]\npolicy = [{name = "zero"}]\n')
    sweep = load_sweep(path)
    assert [(p.name, p.spec.env.suite, p.spec.policy.name, p.spec.seed) for p in sweep.points] == [
        ("libero_goal-zero-seed1", "libero_goal", "zero", 1)]


# -- validation up front -----------------------------------------------------------------------------
@pytest.mark.parametrize("doc, key, text", [
    (sweep_doc(grid=[{"env": {"suite": ["libero_object", "libero_objects"]}}]), "grid[0].env.suite",
     "unknown value 'libero_objects'"),
    (sweep_doc(grid=[{"seed": 3}]), "grid[0].seed", "an axis is a list of values"),
    (sweep_doc(grid=[{"env": {"tasks": [0, 1]}}]), "grid[0].env.tasks", "list of lists"),
    (sweep_doc(grid=[{}, {"planner": {"name": ["no_such_planner"]}}]), "grid[1].planner.name",
     "unknown value 'no_such_planner'"),
    (sweep_doc(grid=[{"polcy": [{"name": "zero"}]}]), "grid[0].polcy", "unknown run spec key"),
    (sweep_doc(grid=[{"seed": {"x": [1]}}]), "grid[0].seed.x", "seed is not a table"),
    (sweep_doc(sweep={"seeds": [0]}, grid=[{"seed": [1]}]), "grid[0].seed", "sweep.seeds already sets"),
    (sweep_doc(sweep={"seeds": [0, 0]}), "sweep.seeds", "duplicate"),
    (sweep_doc(sweep={"nme": "x"}), "sweep.nme", "unknown key"),
    (sweep_doc(grid=[{"env": {"trials": [1, 1]}}]), "grid[0]", "repeats grid point"),
    ({**sweep_doc(), "env": {**small_spec()["env"], "trials": 0}}, "env.trials", "must be >= 1"),
])
def test_every_grid_point_is_validated_and_errors_name_the_key(doc, key, text):
    with pytest.raises(SpecError) as info:
        sweep_from_dict(doc)
    assert info.value.key == key
    assert text in str(info.value)


def test_a_sweep_needs_a_name():
    doc = sweep_doc()
    doc["sweep"] = {}
    with pytest.raises(SpecError, match="sweep.name: required"):
        sweep_from_dict(doc)


@pytest.mark.parametrize("table, message", [
    ({}, "sweep.name: required: a non-empty string naming the sweep, got None"),
    ({"name": " \t"}, "sweep.name: required: a non-empty string naming the sweep, got ' \\t'"),
    ({"name": 3, "seeds": "x"}, "sweep.name: required: a non-empty string naming the sweep, got 3"),
    ({"name": "t", "seeds": [0, True], "description": 1}, "sweep.description: must be a string, got 1"),
    ({"name": "t", "seeds": (0, 1)}, "sweep.seeds: must be a non-empty list of integers, got (0, 1)"),
    ({"name": "t", "seeds": []}, "sweep.seeds: must be a non-empty list of integers, got []"),
    ({"name": "t", "seeds": [0, True]}, "sweep.seeds: must be a non-empty list of integers, got [0, True]"),
    ({"seeds": [1], "name": "t", "nme": "x"}, "sweep.nme: unknown key; allowed: name, seeds, description"),
])
def test_the_sweep_table_is_checked_name_description_seeds(table, message):
    doc = sweep_doc()
    doc["sweep"] = table
    with pytest.raises(SpecError) as info:
        sweep_from_dict(doc)
    assert str(info.value) == message


def test_the_sweep_table_declares_every_sweep_key_and_its_defaults():
    from robofleet.jobs.sweep import SWEEP_KEYS, SweepTable
    from robofleet.platform.config_fields import table_keys

    assert sorted(table_keys(SweepTable)) == sorted(SWEEP_KEYS)
    sweep = sweep_from_dict(sweep_doc())
    assert (sweep.name, sweep.description, [p.name for p in sweep.points]) == ("t", "", ["t"])
    seeded = sweep_from_dict(sweep_doc(sweep={"description": "d", "seeds": [2, 1], "name": " t "}))
    assert (seeded.name, seeded.description, [p.spec.seed for p in seeded.points]) == (" t ", "d", [2, 1])


def test_a_sweep_file_is_read_once(tmp_path, monkeypatch):
    from robofleet.jobs.sweep import load_any

    path = tmp_path / "s.toml"
    path.write_text(toml_text(sweep_doc()))
    reads = []
    read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self) or read_text(self, *a, **k))
    spec = load_any(path)
    monkeypatch.undo()
    assert [r for r in reads if r == path] == [path]
    assert (spec.kind, spec.name, spec.text) == ("sweep", "t", path.read_text())


def test_plan_prints_every_run_and_the_total(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(toml_text(sweep_doc(sweep={"seeds": [0, 1]}, grid=[{"policy": [{"name": "zero"}, {"name": "random"}]}])))
    out = subprocess.run([sys.executable, "-m", "robofleet.jobs.cli", "plan", str(path), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "sweep t: 4 runs" in out.stdout
    assert f"{tmp_path / 'o'}" in out.stdout
    for name in ("zero-seed0", "random-seed0", "zero-seed1", "random-seed1"):
        assert name in out.stdout
    assert "total: 4 runs, 8 episodes (0 recorded, 8 to run)" in out.stdout


def test_plan_reports_a_bad_grid_point_without_a_traceback(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(toml_text(sweep_doc(grid=[{"env": {"suite": ["nope"]}}])))
    out = subprocess.run([sys.executable, "-m", "robofleet.jobs.cli", "plan", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "grid[0].env.suite: unknown value 'nope'" in out.stderr and "Traceback" not in out.stderr


def test_an_output_directory_of_other_specs_is_refused_before_anything_runs(tmp_path):
    from robofleet.platform.results import RunStore

    sweep = sweep_from_dict(sweep_doc(sweep={"seeds": [0, 1]}))
    other = sweep_from_dict(sweep_doc(sweep={"seeds": [0, 1]}, grid=[{"env": {"max_steps": [13]}}]))
    RunStore(tmp_path / "seed1", other.points[1].spec)  # a directory named like a point, of another spec
    with pytest.raises(RunDirError, match="seed1"):
        check_out_dir(sweep, tmp_path)
    assert not (tmp_path / "seed0").exists()


# -- running ----------------------------------------------------------------------------------------
def test_a_failing_run_is_recorded_and_the_sweep_reports_it(ray_cluster, tmp_path):
    # 64 CPUs per worker cannot fit the 2-CPU test cluster: the runner refuses before starting workers.
    sweep = sweep_from_dict(sweep_doc(grid=[{"run": {"cpus_per_worker": [64]}}]))
    with pytest.raises(SweepError, match="1 of 1 runs failed"):
        run_sweep(sweep, tmp_path, progress=False)
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    assert "cpus_per_worker64" in manifest["failed_points"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["points"][0]["status"] == "failed"
    assert "cpus_per_worker64 failed" in (tmp_path / "report.md").read_text()


def test_each_point_is_validated_once_and_all_before_the_first_starts(ray_cluster, tmp_path, monkeypatch):
    import robofleet.platform.preflight as preflight
    import robofleet.platform.runner as runner

    checked: list[str] = []
    real = preflight.validate_before_ray

    def counting(spec):
        checked.append(spec.name)
        return real(spec)

    monkeypatch.setattr(preflight, "validate_before_ray", counting)  # what run_sweep calls
    monkeypatch.setattr(runner, "validate_before_ray", counting)  # what run() would call again
    started: list[int] = []
    monkeypatch.setattr(runner, "check_resources", lambda spec, n: started.append(len(checked)) or preflight.check_resources(spec, n))
    # two seeds, both points too big to fit: each fails at the cluster check, after every point's files were checked
    sweep = sweep_from_dict(sweep_doc(sweep={"seeds": [0, 1]}, grid=[{"run": {"cpus_per_worker": [64]}}]))
    with pytest.raises(SweepError, match="2 of 2 runs failed"):
        run_sweep(sweep, tmp_path, progress=False)
    assert len(checked) == 2, checked  # once per point
    assert started == [2, 2], "both points were checked before the first reached the cluster"


def test_a_sweep_with_a_failed_run_exits_1_naming_it_whatever_the_error_rate(ray_cluster, tmp_path, capsys):
    from robofleet.jobs.cli import main

    path, out = tmp_path / "s.toml", tmp_path / "o"
    path.write_text(toml_text(sweep_doc(grid=[{"run": {"cpus_per_worker": [64]}}])))  # cannot fit: it fails
    status = main(["run", str(path), "--out", str(out), "--no-progress", "--max-error-rate", "1"])
    printed = capsys.readouterr()
    assert status == 1, printed.err  # 2 is for specs and options refused before anything ran
    assert "cpus_per_worker64: 0/0 (-), failed" in printed.out and str(out / "report.md") in printed.out
    assert "robofleet: error: 1 of 1 runs failed: cpus_per_worker64: " in printed.err  # run_sweep's SweepError
    assert "run.cpus_per_worker: an env worker needs 64 CPUs" in printed.err  # the key at fault, not serving's
    assert (f"1 of 1 runs did not complete: cpus_per_worker64 (failed: its error is in failed_points of "
            f"{out / 'sweep.json'} and in {out / 'report.md'}); exit status 1") in printed.err
    assert "cpus_per_worker64" in json.loads((out / "sweep.json").read_text())["failed_points"]


@pytest.mark.parametrize("status", ["partial", "not started", "failed"])
def test_a_sweep_whose_run_is_not_complete_exits_1_without_episode_errors(tmp_path, monkeypatch, capsys, status):
    """Whatever left a run short without an exception (run_sweep returned), the exit status says so."""
    from robofleet.jobs import cli, sweep_runner

    path, out = tmp_path / "s.toml", tmp_path / "o"
    path.write_text(toml_text(sweep_doc(sweep={"seeds": [0, 1]})))
    recorded = {"partial": 1, "not started": 0, "failed": 0}[status]
    summary = {"points": [{"name": "seed0", "status": "complete", "episodes_planned": 2,
                           "overall": {"successes": 1, "episodes": 2, "success_rate": 0.5, "errors": 0}},
                          {"name": "seed1", "status": status, "episodes_planned": 2,
                           "overall": {"successes": 0, "episodes": recorded, "success_rate": 0.0, "errors": 0}}],
               "failed_points": {}}
    monkeypatch.setattr(sweep_runner, "run_sweep", lambda *args, **kwargs: summary)
    assert cli.main(["run", str(path), "--out", str(out), "--no-progress", "--max-error-rate", "1"]) == 1
    err = capsys.readouterr().err
    assert (f"1 of 2 runs did not complete: seed1 ({status}: {recorded} of 2 episodes recorded in "
            f"{out / 'seed1' / 'episodes.csv'}); exit status 1") in err
    summary["points"][1].update(status="complete", overall={**summary["points"][0]["overall"]})
    assert cli.main(["run", str(path), "--out", str(out), "--no-progress"]) == 0  # all complete, no errors
    summary["failed_points"] = {"seed1": "RobofleetError: its report could not be written"}  # complete, yet failed
    assert cli.main(["run", str(path), "--out", str(out), "--no-progress"]) == 1
    assert "seed1 (failed: its error is in failed_points of" in capsys.readouterr().err


def _rows(run_dir: Path) -> list[tuple[str, ...]]:
    with (run_dir / "episodes.csv").open() as f:
        return sorted(tuple(r[k] for k in IDENTITY) for r in csv.DictReader(f))


def _recorded(out: Path) -> int:
    total = 0
    for path in out.glob("*/episodes.csv"):
        with path.open() as f:
            total += max(sum(1 for _ in f) - 1, 0)
    return total


def _cli_run(spec: Path, out: Path, ray_tmp: str, log) -> subprocess.Popen:
    """`robofleet run` in its own session; RAY_TMPDIR marks every Ray process its driver starts."""
    return subprocess.Popen([sys.executable, "-m", "robofleet.jobs.cli", "run", str(spec), "--out", str(out),
                             "--no-progress"], env={**os.environ, "RAY_TMPDIR": ray_tmp}, start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT)


def _stop_all(proc: subprocess.Popen, ray_tmp: str) -> None:
    kill_process_tree(proc.pid, ray_tmp, grace_s=1.0)
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_rows_of_an_uninterrupted_one(ray_cluster, tmp_path):
    env = {**small_spec()["env"], "trials": 2}
    spec = tmp_path / "sweep.toml"
    spec.write_text(toml_text({**sweep_doc(sweep={"seeds": [3, 4]}), "env": env}))
    sweep = load_sweep(spec)

    out, log_path = tmp_path / "killed", tmp_path / "driver.log"
    ray_tmp = tempfile.mkdtemp(prefix="rfk-", dir="/tmp")
    with log_path.open("w") as log, ThreadPoolExecutor(1) as pool:
        proc = _cli_run(spec, out, ray_tmp, log)
        # The uninterrupted reference runs on the test's cluster while that driver boots its own
        # (independent clusters and directories; results depend only on the episode identities).
        reference = pool.submit(run_sweep, sweep, tmp_path / "reference", progress=False)
        try:
            deadline = time.monotonic() + 300
            while _recorded(out) == 0:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "no episode was recorded in 300 s"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray cluster it started, at once
            proc.wait(timeout=30)
            at_kill = _recorded(out)
        finally:
            _stop_all(proc, ray_tmp)
        reference.result(timeout=400)
    assert 1 <= at_kill < 4, "the sweep was interrupted part-way"

    ray_tmp = tempfile.mkdtemp(prefix="rfk-", dir="/tmp")
    with log_path.open("w") as log:
        again = _cli_run(spec, out, ray_tmp, log)
        try:
            assert again.wait(timeout=400) == 0, log_path.read_text()[-3000:]
        finally:
            _stop_all(again, ray_tmp)
    for point in sweep.points:
        assert _rows(out / point.name) == _rows(tmp_path / "reference" / point.name), point.name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sweep"]["episodes_recorded"] == 4
    assert [p["status"] for p in summary["points"]] == ["complete", "complete"]
