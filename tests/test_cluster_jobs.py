"""Ray Jobs and `--address` on a real multi-node cluster on this machine: `ray start --head` on 127.0.0.2 and a
worker node joined with `ray start --address` on 127.0.0.3, each with its own temp dir, ports and process
session, and the cluster's own auth token (RAY_AUTH_MODE=token). Loopback addresses other than 127.0.0.1,
since Ray rewrites 127.0.0.1 to the host's interface address when a driver or node joins: all traffic stays
on 127.0.0.0/8.

What is proved: `robofleet submit`'s driver runs on the head, env workers on both nodes, in the working dir
shipped to each node; a job stopped with `robofleet stop` resumes, each episode recorded once; a cluster too
small for the spec, and a node that lacks a piece (a node with its own view of the filesystem: a mount
namespace hiding the LIBERO assets and the robosuite-1.5 venv), fail before any episode with the numbers or
the node, the missing piece and the fix.
"""
from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import tomli_w

from robofleet.jobs.local_head import LocalHead, processes_marked_by

REPO = Path(__file__).resolve().parent.parent
TRIALS = 16  # episodes of the stopped-then-resumed job: enough that the stop lands mid-run
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """Head (1 CPU) on 127.0.0.2 + a worker node (1 CPU) on 127.0.0.3, stopped with everything they started."""
    head = LocalHead.start(num_cpus=1, node_ip="127.0.0.2", token=secrets.token_hex(32))
    try:
        head.add_node(num_cpus=1, node_ip="127.0.0.3")
    except BaseException:
        head.stop()
        raise
    yield head
    head.stop()
    assert not processes_marked_by(str(head.temp_dir)), "every process of the cluster is gone"


def cli(cluster: LocalHead, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, **cluster.client_env(), "MUJOCO_GL": "egl"}
    return subprocess.run([sys.executable, "-m", "robofleet.jobs.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def cluster_state(cluster: LocalHead) -> dict:
    """Nodes, EnvWorker actors (alive and dead) and jobs, from Ray's state API (in a process with the token)."""
    code = f"""
import json
from ray.util.state import list_actors, list_jobs, list_nodes
a = {cluster.dashboard_url!r}
ip = {{n.node_id: n.node_ip for n in list_nodes(address=a, detail=True)}}
print(json.dumps({{
    "nodes": sorted(ip.values()),
    "env_workers": [{{"node": ip.get(x.node_id), "job": x.job_id}}
                    for x in list_actors(address=a, filters=[("class_name", "=", "EnvWorker")], detail=True, limit=1000)],
    "jobs": {{j.submission_id: {{"status": str(j.status), "driver": j.driver_info.node_ip_address if j.driver_info else None,
                                 "job": j.job_id}} for j in list_jobs(address=a) if j.submission_id}},
}}))
"""
    env = {**os.environ, **cluster.client_env()}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_spec(path: Path, **tables) -> Path:
    doc = {"seed": 3, "name": "cluster-jobs",
           "env": {"family": "libero", "suite": "libero_goal", "tasks": [0], "trials": TRIALS, "render_cameras": False,
                   "max_steps": 20, "reset": "soft"},
           "policy": {"name": "zero", "chunk_size": 8},
           "run": {"workers": 2}}
    doc.update(tables)
    path.write_text(tomli_w.dumps(doc))
    return path


def rows(out: Path) -> list[dict]:
    """The complete rows of a run directory (a line still being written is left out)."""
    path = out / "episodes.csv"
    text = path.read_text() if path.exists() else ""
    return list(csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1])))


def processes_by_node(cluster: LocalHead, out: Path) -> dict[str, dict[str, set[str]]]:
    """The live EnvWorker processes' working directories and the job drivers' (the process running
    `robofleet.jobs.cli run ... --out OUT`) by the node whose temp dir they carry."""
    found: dict[str, dict[str, set[str]]] = {"env_workers": {}, "drivers": {}}
    for pid in processes_marked_by(str(cluster.temp_dir)):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        tmpdir = next((e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"RAY_TMPDIR=")), "")
        node = next((n.node_ip for n in cluster.nodes if tmpdir == str(n.temp_dir)), cluster.node_ip)
        if cmdline[0].startswith(b"ray::EnvWorker"):
            found["env_workers"].setdefault(node, set()).add(cwd)
        elif b"robofleet.jobs.cli" in cmdline and str(out).encode() in cmdline:
            found["drivers"].setdefault(node, set()).add(cwd)
    return found


@pytest.fixture(scope="module")
def stopped_and_resumed(cluster, tmp_path_factory):
    """A run submitted as a job, stopped with `robofleet stop` after a few episodes, then submitted again."""
    tmp = tmp_path_factory.mktemp("jobs")
    spec, out = write_spec(tmp / "spec.toml"), tmp / "out"
    first = cli(cluster, "submit", str(spec), "--address", cluster.dashboard_url, "--out", str(out),
                "--job-id", "first")
    assert first.returncode == 0, first.stdout + first.stderr
    seen: dict[str, dict[str, set[str]]] = {"env_workers": {}, "drivers": {}}
    deadline = time.monotonic() + 240
    while len(rows(out)) < 2:  # a few episodes recorded: stop it mid-run
        assert time.monotonic() < deadline, cli(cluster, "logs", "first", "--address", cluster.dashboard_url).stdout
        for kind, by_node in processes_by_node(cluster, out).items():
            for node, cwds in by_node.items():
                seen[kind].setdefault(node, set()).update(cwds)
        time.sleep(0.2)
    stopped = cli(cluster, "stop", "first", "--address", cluster.dashboard_url, "--wait")
    assert stopped.returncode == 0, stopped.stderr
    at_stop = rows(out)
    second = cli(cluster, "submit", str(spec), "--address", cluster.dashboard_url, "--out", str(out),
                 "--job-id", "second", "--wait")
    assert second.returncode == 0, second.stdout + second.stderr
    return {"stopped": stopped.stdout, "at_stop": at_stop, "final": rows(out), "seen": seen,
            "second_log": cli(cluster, "logs", "second", "--address", cluster.dashboard_url).stdout,
            "state": cluster_state(cluster)}


def test_the_cluster_has_two_nodes_on_loopback_addresses(stopped_and_resumed):
    assert stopped_and_resumed["state"]["nodes"] == ["127.0.0.2", "127.0.0.3"]


def test_the_jobs_driver_runs_on_the_head(stopped_and_resumed):
    jobs = stopped_and_resumed["state"]["jobs"]
    assert jobs["first"]["status"].endswith("STOPPED") and jobs["second"]["status"].endswith("SUCCEEDED")
    assert jobs["second"]["driver"] == "127.0.0.2"  # Ray's record (a stopped job's may lack its driver)
    drivers = stopped_and_resumed["seen"]["drivers"]
    assert list(drivers) == ["127.0.0.2"], drivers  # the first job's driver process, seen while it ran


def test_env_workers_run_on_both_nodes(stopped_and_resumed):
    state = stopped_and_resumed["state"]
    second = state["jobs"]["second"]["job"]
    # 2 one-CPU workers on a 1-CPU head and a 1-CPU node: one on each
    assert sorted(w["node"] for w in state["env_workers"] if w["job"] == second) == ["127.0.0.2", "127.0.0.3"]


def test_the_working_dir_is_shipped_to_every_node(stopped_and_resumed, cluster):
    dirs = stopped_and_resumed["seen"]["env_workers"]
    assert set(dirs) == {"127.0.0.2", "127.0.0.3"}, dirs
    node = cluster.nodes[0]
    for cwd in dirs["127.0.0.3"]:
        # the node's own copy, unpacked by Ray from the uploaded package: the checkout without .venv, .git, runs/
        assert cwd.startswith(str(node.temp_dir)) and "/runtime_resources/working_dir_files/_ray_pkg_" in cwd, cwd
        shipped = Path(cwd)
        assert (shipped / "pyproject.toml").read_bytes() == (REPO / "pyproject.toml").read_bytes()
        assert (shipped / "platform" / "runner.py").exists() and not (shipped / ".venv").exists()
        assert not (shipped / ".git").exists()


def test_a_stopped_job_resumes_each_episode_recorded_once(stopped_and_resumed):
    at_stop, final = stopped_and_resumed["at_stop"], stopped_and_resumed["final"]
    assert "job first: STOPPED" in stopped_and_resumed["stopped"]
    assert 2 <= len(at_stop) < TRIALS, "the stop landed mid-run"
    assert len(final) == TRIALS and len({r["episode_id"] for r in final}) == TRIALS
    assert final[: len(at_stop)] == at_stop, "the rows recorded before the stop are kept as they were"
    assert all(r["error"] == "" for r in final)
    assert f"{TRIALS} episodes, {len(at_stop)} already recorded, {TRIALS - len(at_stop)} to run" in \
        stopped_and_resumed["second_log"]


def test_a_cluster_without_the_gpus_for_the_replicas_fails_before_any_episode(cluster, tmp_path):
    spec = write_spec(tmp_path / "spec.toml", serving={"replicas": 2, "gpus_per_replica": 1})
    out = cli(cluster, "run", str(spec), "--address", cluster.address, "--out", str(tmp_path / "out"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert ("robofleet: error: serving.replicas: 2 replicas need 2 GPUs; the cluster has 0 (lower serving.replicas "
            "or serving.gpus_per_replica, 0 for CPU replicas, or add GPU nodes)") in out.stderr
    assert "Traceback" not in out.stderr and not rows(tmp_path / "out")
    assert not (tmp_path / "out" / "spec.toml").exists(), "unclaimed: the fixed spec may use this --out"


def test_a_cluster_without_the_cpus_for_replicas_and_workers_fails_before_any_episode(cluster, tmp_path):
    spec = write_spec(tmp_path / "spec.toml", serving={"replicas": 1, "gpus_per_replica": 0, "cpus_per_replica": 2})
    out = cli(cluster, "run", str(spec), "--address", cluster.address, "--out", str(tmp_path / "out"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert ("robofleet: error: serving.cpus_per_replica: 1 replicas x 2 CPUs leave 0 of the cluster's 2 CPUs; an env "
            "worker needs 1 (lower serving.cpus_per_replica or run.cpus_per_worker)") in out.stderr
    assert not rows(tmp_path / "out")


# -- a node that lacks a piece --------------------------------------------------------------------
def _hiding(paths: list[Path], empty: Path) -> list[str] | None:
    """A command prefix that runs the rest in a new mount namespace where `paths` are empty folders
    (bind mounts of `empty`, private to it); None where this machine permits no mount namespace."""
    base = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-Urm"]
    script = " && ".join(f'mount --bind "{empty}" "{p}"' for p in paths) + ' && exec "$@"'
    prefix = [*base, "sh", "-c", script, "sh"]
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    return prefix if probe.returncode == 0 else None


@pytest.fixture(scope="class")
def lacking_node(cluster):
    """A third node (127.0.0.4, 1 CPU) whose filesystem has no LIBERO assets and no robosuite-1.5 venv."""
    from robofleet.envs.families import ROBOSUITE15
    from robofleet.envs.libero_setup import assets_dir

    empty = Path(tempfile.mkdtemp(prefix="rfempty-"))
    hidden = [assets_dir().resolve(), ROBOSUITE15.venv().resolve()]
    prefix = _hiding(hidden, empty)
    if prefix is None:
        shutil.rmtree(empty)
        pytest.skip("a node lacking a piece needs its own view of the filesystem, a mount namespace (`unshare -m`, or "
                    "`unshare -Urm` without root), which this machine does not permit")
    node = cluster.add_node(num_cpus=1, node_ip="127.0.0.4", prefix=prefix)
    yield node
    node.stop()
    cluster.nodes.remove(node)
    shutil.rmtree(empty, ignore_errors=True)


class TestANodeThatLacksAPiece:
    def test_a_node_without_the_libero_assets_is_named_before_any_episode(self, cluster, lacking_node, tmp_path):
        spec = write_spec(tmp_path / "spec.toml")
        out = cli(cluster, "run", str(spec), "--address", cluster.address, "--out", str(tmp_path / "out"))
        assert out.returncode == 2, out.stdout + out.stderr
        error = out.stderr
        assert "robofleet: error: 1 problem(s) before any libero env worker starts:" in error
        assert "node 127.0.0.4 (" in error and "LIBERO assets missing at" in error
        assert "run `robofleet setup-libero`" in error and "(on this node)" in error
        assert "127.0.0.3" not in error, "the healthy node is not blamed"
        assert not rows(tmp_path / "out")

    def test_a_node_without_the_robosuite15_venv_is_named_instead_of_hanging(self, cluster, lacking_node, tmp_path):
        from robofleet.envs.families import ROBOSUITE15

        spec = write_spec(tmp_path / "spec.toml", env={"family": "robosuite", "tasks": ["Lift"], "trials": 1,
                                                       "render_cameras": False, "max_steps": 4})
        # without the check Ray retries starting that node's worker forever (its Python does not exist there)
        out = cli(cluster, "run", str(spec), "--address", cluster.address, "--out", str(tmp_path / "out"), timeout=200)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "1 problem(s) before any robosuite env worker starts:" in out.stderr
        assert (f"node 127.0.0.4 (" in out.stderr and f"the robosuite workers' Python {ROBOSUITE15.python()} does not "
                "exist here: build the venv on this node at the same path (`bash setup.sh`") in out.stderr
        assert not rows(tmp_path / "out")
