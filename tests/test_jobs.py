"""Ray Jobs against a real local cluster (`ray start --head` with its own temp dir and ports):
submit a sweep, wait for SUCCEEDED, results on disk, list, logs, stop."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from robofleet.jobs import client
from robofleet.jobs.local_head import LocalHead, processes_marked_by
from tests.conftest import small_spec


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robofleet.jobs.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def head():
    """A private Ray head (2 CPUs; dashboard and Jobs API on 127.0.0.1), stopped with all it started."""
    cluster = LocalHead.start(num_cpus=2)
    yield cluster
    cluster.stop()
    assert not processes_marked_by(str(cluster.temp_dir)), "every process of the head is gone"


def tiny_spec(tmp_path: Path, trials: int = 1, sweep: bool = True) -> Path:
    doc = small_spec(policy={"name": "zero"})
    doc["env"] = {**doc["env"], "trials": trials, "max_steps": 4}
    if sweep:
        doc["sweep"] = {"name": "jobs-test", "seeds": [3]}
    path = tmp_path / "spec.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def test_the_entrypoint_runs_the_spec_from_the_job_environment():
    entry = client.build_entrypoint("/shared/runs/x", workers=2, videos=1, python="python")
    assert entry == ("python -m robofleet.jobs.cli run --spec-env ROBOFLEET_SPEC_TOML --out /shared/runs/x "
                     "--address auto --no-progress --workers 2 --videos 1")


def test_the_working_dir_leaves_out_environments_results_and_large_files(tmp_path):
    (tmp_path / "big.bin").write_bytes(b"\0" * (11 * 2**20))
    (tmp_path / "small.py").write_text("x = 1\n")
    (tmp_path / "sims" / "env-rs15").mkdir(parents=True)
    (tmp_path / "sims" / "env-rs15" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    excludes = client.working_dir_excludes(tmp_path)
    assert {".venv", ".venv*", ".git", "runs"} <= set(excludes)
    assert "/big.bin" in excludes and "/small.py" not in excludes
    assert "/sims/env-rs15/" in excludes


def test_a_bad_spec_is_refused_before_submission(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps({**small_spec(), "sweep": {"name": "x"}, "grid": [{"env": {"suite": ["nope"]}}]}))
    out = cli("submit", str(path), "--address", "http://127.0.0.1:9")  # nothing listens there
    assert out.returncode == 2
    assert "grid[0].env.suite: unknown value 'nope'" in out.stderr


def test_an_unreachable_cluster_is_a_clear_error():
    out = cli("jobs", "--address", "http://127.0.0.1:9")
    assert out.returncode == 2
    assert "--address http://127.0.0.1:9: cannot reach the Ray Jobs API" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_submitted_sweep_succeeds_and_its_results_are_on_disk(head, tmp_path):
    out = tmp_path / "results"
    submitted = cli("submit", str(tiny_spec(tmp_path)), "--address", head.dashboard_url, "--out", str(out), "--wait",
                    timeout=400)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.split(" as job ", 1)[1].split()[0]
    assert f"job {job_id}: SUCCEEDED" in submitted.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "sweep" and summary["sweep"]["episodes_recorded"] == 1
    assert [(p["name"], p["status"]) for p in summary["points"]] == [("seed3", "complete")]
    assert (out / "seed3" / "episodes.csv").read_text().count("\n") == 2
    assert (out / "seed3" / "report.html").exists() and (out / "report.html").exists()

    listed = cli("jobs", "--address", head.dashboard_url)
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if row.startswith(job_id))
    assert "SUCCEEDED" in line and "jobs-test" in line and str(out) in line

    logs = cli("logs", job_id, "--address", head.dashboard_url)
    assert logs.returncode == 0, logs.stderr
    assert "seed3: 0/1 (0.0%), complete" in logs.stdout
    assert f"report:  {out / 'report.md'}" in logs.stdout


@pytest.mark.slow
def test_a_running_job_can_be_stopped(head, tmp_path):
    out = tmp_path / "results"
    sub = client.submit(tiny_spec(tmp_path, trials=20, sweep=False), head.dashboard_url, out=out)
    deadline = time.monotonic() + 120
    while client.status(head.dashboard_url, sub.job_id) != "RUNNING":
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.5)
    stopped = cli("stop", sub.job_id, "--address", head.dashboard_url, "--wait")
    assert stopped.returncode == 0, stopped.stderr
    assert f"job {sub.job_id}: STOPPED" in stopped.stdout
    assert client.status(head.dashboard_url, sub.job_id) == "STOPPED"
    # What was recorded stays; the job left no driver behind.
    rows = (out / "episodes.csv").read_text().count("\n") - 1 if (out / "episodes.csv").exists() else 0
    assert rows < 20
    deadline = time.monotonic() + 30
    while processes_marked_by(str(out)):  # the driver's command line and job config name `out`
        assert time.monotonic() < deadline, "the driver of the stopped job is gone"
        time.sleep(0.5)
