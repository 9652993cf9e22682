"""A researcher's first day (issue 23): what a new user met, each as the behaviour it should have.

Real CLI subprocesses or `main()` calls, real Ray where a cluster is involved, 1-3 short episodes.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import psutil
import pytest
import tomli_w

from robofleet.jobs.cli import main
from robofleet.platform.errors import SpecError
from robofleet.platform.spec import ServingSpec, spec_from_dict
from tests.conftest import small_spec
from tests.test_reports import make_run_dir, outcomes, spec_with

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robofleet.jobs.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)


def spec_file(tmp_path: Path, name: str = "spec.toml", **env) -> Path:
    doc = small_spec()
    doc["env"] = {**doc["env"], **env}
    path = tmp_path / name
    path.write_text(tomli_w.dumps(doc))
    return path


# -- 1 / 5 / 7: overrides are checked like spec keys, before anything is written --------------------
@pytest.mark.parametrize("flags, named", [(["--workers", "0"], "--workers"), (["--workers", "-2"], "--workers"),
                                          (["--videos", "-1"], "--videos"),
                                          (["--max-error-rate", "1.5"], "--max-error-rate")])
def test_a_bad_override_is_refused_before_anything_is_written(tmp_path, capsys, flags, named):
    out = tmp_path / "run"
    assert main(["run", str(spec_file(tmp_path)), "--out", str(out), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"robofleet: error: {named}: ") and len(err.strip().splitlines()) == 1, err
    assert not out.exists(), "nothing was written"


def test_the_python_api_refuses_zero_workers_before_the_run_directory_is_claimed(tmp_path):
    from robofleet.platform.runner import run

    with pytest.raises(SpecError, match="workers"):
        run(spec_from_dict(small_spec()), tmp_path / "run", workers=0)
    assert not (tmp_path / "run").exists()


def test_more_workers_than_fit_record_the_number_started(ray_cluster, tmp_path, caplog):
    from robofleet.platform.runner import run

    spec = spec_from_dict(small_spec(env={**small_spec()["env"], "trials": 3, "max_steps": 4}))
    out = tmp_path / "run"
    summary = run(spec, out, workers=1000, progress=False)
    started = int(ray_cluster.cluster_resources()["CPU"])  # 2: one CPU per worker
    assert "only 2 of 3 env workers fit" in caplog.text
    assert summary["figures"]["workers"] == started
    assert tomllib.loads((out / "spec.toml").read_text())["run"]["workers"] == started
    assert main(["report", str(out)]) == 0, "the run directory stays valid"


# -- 2: a dead --address fails at once --------------------------------------------------------------
def test_run_against_a_dead_address_fails_within_seconds_with_one_line(tmp_path):
    from robofleet.jobs.local_head import free_port

    for address in ("127.0.0.1:1", f"127.0.0.1:{free_port()}"):
        started = time.monotonic()
        out = cli("run", str(spec_file(tmp_path)), "--out", str(tmp_path / "run"), "--address", address,
                  "--no-progress", timeout=60)
        assert time.monotonic() - started < 30
        assert out.returncode == 2, out.stderr
        assert f"--address {address}: no Ray cluster answers there" in out.stderr
        assert "Traceback" not in out.stderr


# -- 4: submit's default interpreter, and a failed job's log ----------------------------------------
def test_the_job_runs_the_python_that_submitted_it():
    from robofleet.jobs import client

    assert client.build_entrypoint("/r").startswith(f"{sys.executable} -m robofleet.jobs.cli run ")


@pytest.mark.slow
def test_submit_works_without_python_on_the_cluster_path_and_a_failed_job_shows_its_log(tmp_path):
    from robofleet.jobs.local_head import LocalHead

    doc = small_spec(policy={"name": "zero"})
    doc["env"] = {**doc["env"], "trials": 1, "max_steps": 4}
    spec = tmp_path / "spec.toml"
    spec.write_text(tomli_w.dumps(doc))
    # The cluster's PATH has no robofleet venv: a job running `python` from PATH would not import robofleet.
    with LocalHead.start(num_cpus=2, extra_env={"PATH": "/usr/bin:/bin"}) as head:
        ok = cli("submit", str(spec), "--address", head.dashboard_url, "--out", str(tmp_path / "ok"), "--wait",
                 timeout=400)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert (tmp_path / "ok" / "episodes.csv").exists()
        bad = cli("submit", str(spec), "--address", head.dashboard_url, "--out", str(tmp_path / "bad"), "--wait",
                  "--python", str(tmp_path / "no-such-python"), timeout=400)
        assert bad.returncode == 1 and "FAILED" in bad.stdout
        assert "last lines of the job's log" in bad.stderr and "no-such-python" in bad.stderr


# -- 6: Ctrl-C and convert-embeddings -----------------------------------------------------------------
def test_ctrl_c_says_how_to_resume_without_a_traceback(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "robofleet.jobs.cli", "run",
                             str(spec_file(tmp_path, trials=3, max_steps=400)), "--out", str(out), "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "episodes.csv").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "still running its episodes"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def test_convert_embeddings_reports_a_missing_or_bad_file_in_one_line(tmp_path, capsys):
    assert main(["convert-embeddings", str(tmp_path / "missing.pkl"), str(tmp_path / "out.safetensors")]) == 2
    assert "missing.pkl: no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.pkl"
    junk.write_text("not a pickle at all")
    assert main(["convert-embeddings", str(junk), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "junk.pkl is not a T5 embeddings pickle" in err and len(err.strip().splitlines()) == 1


# -- 7: compare -----------------------------------------------------------------------------------------
def test_comparing_a_run_with_itself_warns(tmp_path, capsys):
    a = make_run_dir(tmp_path / "a", outcomes([0], 2, lambda t, i: i), spec_with([0], 2))
    b = make_run_dir(tmp_path / "b", outcomes([0], 2, lambda t, i: i), spec_with([0], 2))
    assert main(["compare", str(a), str(a)]) == 0
    assert "same run directory" in capsys.readouterr().out
    assert main(["compare", str(a), str(b)]) == 0
    assert "ran the same spec" in capsys.readouterr().out


def test_a_comparison_without_pairs_exits_non_zero(tmp_path, capsys):
    a = make_run_dir(tmp_path / "a", outcomes([0], 2, lambda t, i: 1), spec_with([0], 2, seed=1))
    b = make_run_dir(tmp_path / "b", outcomes([0], 2, lambda t, i: 1), spec_with([0], 2, seed=2))
    assert main(["compare", str(a), str(b)]) == 1
    assert "no episode of A pairs with one of B" in capsys.readouterr().err


def test_image_size_is_not_a_difference_when_a_side_renders_no_cameras(tmp_path):
    from robofleet.platform.compare import compare_runs

    blind = spec_with([0], 2)  # render_cameras = false, image_size 64
    seeing = spec_with([0], 2, name="zero")
    seeing["env"] = {**seeing["env"], "render_cameras": True, "image_size": 128}
    cmp = compare_runs(make_run_dir(tmp_path / "a", outcomes([0], 2, lambda t, i: 1), blind),
                       make_run_dir(tmp_path / "b", outcomes([0], 2, lambda t, i: 0), seeing))
    differences = [w for w in cmp["warnings"] if "env settings differ" in w]
    assert differences and "render_cameras" in differences[0] and "image_size" not in differences[0]


# -- 7: plan, tasks, --version, --help, README ------------------------------------------------------------
def test_plan_refuses_an_out_that_is_a_file_or_a_foreign_directory(tmp_path, capsys):
    spec = spec_file(tmp_path)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    foreign = tmp_path / "etc"
    foreign.mkdir()
    (foreign / "passwd").write_text("root:x:0:0")
    for out, says in ((a_file, "is a file"), (foreign, "holds other files")):
        assert main(["plan", str(spec), "--out", str(out)]) == 2
        assert says in capsys.readouterr().err
    assert main(["plan", str(spec), "--out", str(tmp_path / "new")]) == 0
    assert not (tmp_path / "new").exists(), "plan writes nothing"


@pytest.mark.parametrize("suite, first", [("single_arm", "Lift"), ("atomic", "PnPCounterToCab")])
def test_tasks_lists_robosuite_and_robocasa_suites(suite, first, capsys):
    assert main(["tasks", suite]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:2] == ["0", first]


def test_tasks_of_a_libero_suite_prints_only_the_tasks(capsys):
    assert main(["tasks", "libero_object"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and all(re.match(r"\s*\d+  \w", line) for line in lines), lines[:2]


def test_version_and_help_describe_every_argument():
    version = cli("--version", timeout=60)
    assert version.returncode == 0 and re.fullmatch(r"robofleet \S+\n", version.stdout)
    run_help = cli("run", "--help", timeout=60).stdout
    assert "usage: robofleet run (spec | --spec-env VAR)" in run_help
    for command in ("run", "plan", "compare", "submit", "logs", "stop", "tasks", "convert-embeddings", "report"):
        text = cli(command, "--help", timeout=60).stdout
        block = text.split("positional arguments:")[1].split("options:")[0]
        assert all(len(line.split(None, 1)) == 2 for line in block.strip().splitlines()
                   if not line.startswith("      ")), (command, block)


def test_the_readme_serving_snippet_shows_the_defaults():
    readme = (REPO / "README.md").read_text()
    snippet = readme.split("[serving]", 1)[1].split("[run]", 1)[0]
    values = tomllib.loads("\n".join(line for line in snippet.splitlines()[1:]))
    defaults = ServingSpec()
    assert (values["max_batch"], values["max_wait_ms"], values["deterministic"]) == (
        defaults.max_batch, defaults.max_wait_ms, defaults.deterministic)


# -- exit status (issue 20) ------------------------------------------------------------------------------
BROKEN_POLICY = '''
class Broken:
    chunk_size = 4

    def predict(self, observations, seeds):
        raise RuntimeError("policy bug on purpose")

    def reset(self):
        pass


def make(options, env_family):
    return Broken()
'''


def test_errored_episodes_exit_non_zero_unless_tolerated(tmp_path):
    plugins = tmp_path / "plugins"
    (plugins / "broken_policy-0.1.dist-info").mkdir(parents=True)
    (plugins / "broken_policy.py").write_text(textwrap.dedent(BROKEN_POLICY))
    (plugins / "broken_policy-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-policy\n"
                                                                      "Version: 0.1\n")
    (plugins / "broken_policy-0.1.dist-info" / "entry_points.txt").write_text(
        "[robofleet.policies]\nbroken = broken_policy:make\n")
    doc = small_spec(policy={"name": "broken"})
    doc["env"] = {**doc["env"], "trials": 1, "max_steps": 4}
    spec = tmp_path / "spec.toml"
    spec.write_text(tomli_w.dumps(doc))
    env = {"PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "run"
    failed = cli("run", str(spec), "--out", str(out), "--no-progress", env=env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"1 of 1 episodes errored (100.0%); tracebacks: the error column of {out / 'episodes.csv'}" in failed.stderr
    tolerated = cli("run", str(spec), "--out", str(out), "--no-progress", "--max-error-rate", "1", env=env)
    assert tolerated.returncode == 0, tolerated.stderr
    assert "warning: 1 of 1 episodes errored" in tolerated.stderr


# -- noise and hygiene ------------------------------------------------------------------------------------
def test_a_small_run_prints_the_progress_bar_and_what_matters(tmp_path):
    out = cli("run", str(spec_file(tmp_path)), "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    for noise in ("private macro file", "Token authentication", "OpenGL_accelerate", "task orders"):
        assert noise not in text, text
    assert "0 errors" in out.stdout and "2/2" in out.stderr


PROBE = '''
import json, psutil, ray
from robofleet.platform.cluster import connect
assert connect(num_cpus=1)
ray.get(ray.remote(lambda: 1).remote())  # a worker process is up too
me = psutil.Process()
procs = {p.pid: " ".join(p.cmdline()) for p in [me, *me.children(recursive=True)]}
sockets = [(c.laddr.ip, c.laddr.port, procs[c.pid][:60]) for c in psutil.net_connections("tcp")
           if c.status == psutil.CONN_LISTEN and c.pid in procs]
print(json.dumps({"sockets": sockets, "dashboard": [c for pid, c in procs.items() if pid != me.pid and "dashboard/dashboard.py" in c]}))
ray.shutdown()
'''


def test_the_embedded_cluster_listens_on_loopback_only_with_no_dashboard_process():
    import json

    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["sockets"], "GCS, raylet and workers listen"
    assert all(ip in LOOPBACK for ip, _, _ in found["sockets"]), found["sockets"]
    assert not {52365, 44217, 44227} & {port for _, port, _ in found["sockets"]}, "no fixed ports"
    assert not found["dashboard"], found["dashboard"]
    assert "Token authentication" not in out.stderr
