"""A private local Ray head (`ray start --head`) that can be stopped without touching anyone else's Ray.

`ray stop` stops every Ray process of the machine, other people's clusters included. A LocalHead
gets its own temp dir, free ports (GCS, dashboard, dashboard agent, Ray Client) and its own process
session; `stop()` ends exactly the processes of that session plus those that left it but still
carry its temp dir (Ray Jobs start each job's driver in a new session).

    with LocalHead.start(num_cpus=2) as head:       # dashboard and Jobs API on 127.0.0.1 only
        client = JobSubmissionClient(head.dashboard_url)
        ...

Several nodes on one machine (`ray start --address` per node, each with its own temp dir and
session): give each node its own loopback address, since Ray rewrites 127.0.0.1 to the host's
interface address when a driver or node joins, and other 127.0.0.0/8 addresses are left alone.

    head = LocalHead.start(num_cpus=1, node_ip="127.0.0.2", token=secrets.token_hex(32))
    node = head.add_node(num_cpus=2, node_ip="127.0.0.3")   # node.kill(): the node dies at once
    subprocess.run([...], env={**os.environ, **head.client_env()})   # clients need the token

Used by the tests; handy on a laptop to try `robofleet submit` (`python -m robofleet.jobs.local_head`).
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Callable

from robofleet.platform.errors import RobofleetError

log = logging.getLogger(__name__)


class LocalHeadError(RobofleetError):
    """The local Ray head did not start."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ray_executable() -> str:
    """The `ray` script of this Python's environment (so the cluster imports the same robofleet)."""
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"


def processes_marked_by(marker: str) -> list[int]:
    """PIDs (not ours) whose command line, working directory or environment contains `marker`."""
    pids = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except (OSError, ValueError):  # gone, or not ours to read
            continue
        if marker in cmdline or marker in cwd or marker in environ:
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent can reap it


def _session_and_marked(session: int | None, marker: str | None) -> set[int]:
    """Live PIDs (not ours) of process group `session` or marked by `marker`."""
    pids = set(processes_marked_by(marker)) if marker else set()
    if session is not None:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == session:
                        pids.add(int(entry.name))
                except OSError:
                    continue
    pids.discard(os.getpid())
    return {p for p in pids if _alive(p)}


def kill_process_tree(session: int | None, marker: str | None, grace_s: float = 5.0) -> None:
    """SIGTERM the process group `session` and every process marked by `marker`; SIGKILL what is left
    after `grace_s` seconds. Only processes of that group or with that marker are touched."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _session_and_marked(session, marker)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                continue
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 2.0)
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)


def _ray_start(cmd: list[str], env: dict[str, str], timeout_s: float, what: str,
               cleanup: Callable[[int], None]) -> int:
    """Run `ray start ...` in a new session; its session id. On failure `cleanup(session)` runs and
    LocalHeadError says why."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        cleanup(proc.pid)
        raise LocalHeadError(f"`{what}` did not return within {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        cleanup(proc.pid)
        raise LocalHeadError(f"`{what}` failed ({proc.returncode}):\n{output[-3000:]}")
    return proc.pid


def _node_env(temp: Path, token: str | None, extra_env: dict[str, str] | None) -> dict[str, str]:
    # RAY_TMPDIR marks every descendant's environment, also those that start their own session.
    # PATH: as if started from the activated venv, so a job's `python` is this environment's.
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_TMPDIR": str(temp), "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    if token is not None:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return {**env, **(extra_env or {})}


@dataclass
class LocalNode:
    """A worker node joined to a LocalHead by `LocalHead.add_node` (`ray start --address`)."""

    node_ip: str
    temp_dir: Path  # inside the head's temp dir: the head's `stop()` ends this node too
    session: int

    def kill(self) -> None:
        """SIGKILL every process of this node at once (its raylet, agents, workers): the node dies."""
        for pid in _session_and_marked(self.session, str(self.temp_dir)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue

    def stop(self, grace_s: float = 5.0) -> None:
        """End every process of this node (SIGTERM, then SIGKILL)."""
        kill_process_tree(self.session, str(self.temp_dir), grace_s)


@dataclass
class LocalHead:
    """A running `ray start --head` started by `LocalHead.start` (stop it with `stop()` or `with`)."""

    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    session: int  # process group / session id of everything `ray start` launched
    owns_temp_dir: bool = True
    node_ip: str = "127.0.0.1"
    token: str | None = None  # this cluster's own auth token (None: Ray's default, ~/.ray/auth_token)
    nodes: list[LocalNode] = field(default_factory=list)

    @property
    def dashboard_url(self) -> str:
        """The Jobs API / dashboard address, e.g. http://127.0.0.1:8265 (for `robofleet submit --address`)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def address(self) -> str:
        """The GCS address HOST:PORT (for `robofleet run --address` and `ray start --address`)."""
        return f"{self.node_ip}:{self.gcs_port}"

    def client_env(self) -> dict[str, str]:
        """Environment variables a client process (robofleet submit, a driver) needs for this cluster."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token} if self.token is not None else {}

    @classmethod
    def start(cls, num_cpus: int = 2, temp_dir: str | Path | None = None, timeout_s: float = 120.0,
              extra_env: dict[str, str] | None = None, node_ip: str = "127.0.0.1",
              token: str | None = None) -> "LocalHead":
        """Start a head node with `num_cpus` CPUs; dashboard and Jobs API bind 127.0.0.1.

        temp_dir: Ray's root temp dir (short: Unix socket paths must stay under 107 bytes);
            default: a new /tmp/rfray-XXXX, removed by `stop()`.
        node_ip: the head's node address; another loopback address (127.0.0.2) for a cluster that
            other nodes on this machine join (Ray rewrites 127.0.0.1 to the host's address).
        token: the cluster's auth token (RAY_AUTH_MODE=token for every process of the cluster);
            None: Ray's default token file.
        """
        owns = temp_dir is None
        temp = Path(tempfile.mkdtemp(prefix="rfray-", dir="/tmp")) if temp_dir is None else Path(temp_dir)
        gcs, dash = free_port(), free_port()
        cmd = [
            _ray_executable(), "start", "--head", "--num-cpus", str(num_cpus),
            "--port", str(gcs), "--node-ip-address", node_ip,
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
            "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port", str(free_port()),
            "--temp-dir", str(temp), "--disable-usage-stats",
        ]
        head = cls(temp_dir=temp, gcs_port=gcs, dashboard_port=dash, session=-1, owns_temp_dir=owns,
                   node_ip=node_ip, token=token)

        def cleanup(session: int) -> None:
            head.session = session
            head.stop()

        head.session = _ray_start(cmd, _node_env(temp, token, extra_env), timeout_s, "ray start --head", cleanup)
        try:
            head.wait_for_jobs_api(timeout_s)
        except LocalHeadError:
            head.stop()
            raise
        log.info("local Ray head up: Jobs API %s, temp dir %s", head.dashboard_url, temp)
        return head

    def add_node(self, num_cpus: int, node_ip: str, num_gpus: int | None = None,
                 resources: dict[str, float] | None = None, prefix: list[str] | None = None,
                 extra_env: dict[str, str] | None = None, timeout_s: float = 120.0) -> LocalNode:
        """Join a worker node (`ray start --address`) with its own loopback address, temp dir and session.

        num_gpus / resources: declared, not detected (a stand-in for a GPU node on a CPU machine).
        prefix: a command that runs `ray start` (e.g. `unshare -m ...`: a node with its own view of
            the filesystem).
        """
        import json

        temp = Path(tempfile.mkdtemp(prefix="n", dir=self.temp_dir))
        cmd = [
            *(prefix or []), _ray_executable(), "start", "--address", self.address, "--node-ip-address", node_ip,
            "--num-cpus", str(num_cpus), "--dashboard-agent-listen-port", str(free_port()),
            "--temp-dir", str(temp), "--disable-usage-stats",
        ]
        if num_gpus is not None:
            cmd += ["--num-gpus", str(num_gpus)]
        if resources:
            cmd += ["--resources", json.dumps(resources)]

        def cleanup(session: int) -> None:
            kill_process_tree(session, str(temp))

        session = _ray_start(cmd, _node_env(temp, self.token, extra_env), timeout_s, "ray start --address", cleanup)
        node = LocalNode(node_ip=node_ip, temp_dir=temp, session=session)
        self.nodes.append(node)
        log.info("local Ray node %s joined %s (temp dir %s)", node_ip, self.address, temp)
        return node

    def wait_for_jobs_api(self, timeout_s: float = 120.0) -> None:
        """Block until the Jobs API answers (the dashboard starts after `ray start` returns)."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self._list_jobs()
                return
            except Exception as exc:  # noqa: BLE001 - not up yet; the last error is reported below
                last = exc
                time.sleep(1.0)
        raise LocalHeadError(f"the Jobs API at {self.dashboard_url} did not answer within {timeout_s:.0f} s: {last}")

    def _list_jobs(self) -> None:
        if self.token is None:
            from ray.job_submission import JobSubmissionClient

            from robofleet.jobs.client import use_local_auth_token

            use_local_auth_token()
            JobSubmissionClient(self.dashboard_url).list_jobs()
            return
        # With its own token: plain HTTP (Ray caches one token per process, maybe another cluster's).
        import urllib.request

        request = urllib.request.Request(f"{self.dashboard_url}/api/jobs/",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def stop(self, grace_s: float = 5.0) -> None:
        """End every process this head started (its session, its nodes, and job drivers marked by its
        temp dir)."""
        for node in self.nodes:
            node.stop(grace_s)
        kill_process_tree(self.session, str(self.temp_dir), grace_s)
        if self.owns_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "LocalHead":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main() -> int:
    """Start a private head, print its Jobs API address, stop it on Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    head = LocalHead.start(num_cpus=os.cpu_count() or 2)
    print(f"Jobs API: {head.dashboard_url}  (robofleet submit SPEC --address {head.dashboard_url}); Ctrl-C stops it")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        head.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
