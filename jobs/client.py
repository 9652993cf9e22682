"""Talk to a Ray cluster's Jobs API: submit a run or sweep, list jobs, read logs, stop one.

    robofleet submit examples/sweep_object_baselines.toml --address http://127.0.0.1:8265 --out /shared/runs/x
    robofleet jobs --address http://127.0.0.1:8265
    robofleet logs raysubmit_XXXX --address http://127.0.0.1:8265 [--follow]
    robofleet stop raysubmit_XXXX --address http://127.0.0.1:8265

A submitted job runs `PYTHON -m robofleet.jobs.cli run --spec-env ROBOFLEET_SPEC_TOML --out OUT
--address auto` on the cluster: the spec's text travels in the job's runtime env (what was validated
here is what runs there, whatever happens to the file afterwards), and the repository is the job's
working_dir (without .venv, .git, runs/, caches and files over 10 MB). PYTHON must import robofleet
on the cluster: by default it is the Python running `robofleet submit` (sys.executable; right for a
cluster on this machine, or nodes with the same venv path); `--python` names another. A job's own
`python` on PATH is whatever the raylet was started with, usually not a robofleet venv.

OUT is a path on the cluster (shared storage for several nodes); submitting the same spec with the
same --out again resumes: recorded episodes are skipped.

Security: start the head with `--dashboard-host 127.0.0.1` (Ray's default) unless you mean to
expose it; the Jobs API runs arbitrary code. Ray >= 2.52 clusters use token auth when a token
exists (~/.ray/auth_token); this client sends it.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from robofleet.platform.errors import RobofleetError

SPEC_ENV_VAR = "ROBOFLEET_SPEC_TOML"
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Never uploaded with the working dir: environments, VCS data, results, caches, packed wheels.
ALWAYS_EXCLUDE = (".venv", ".venv*", ".git", "runs", "__pycache__", ".pytest_cache", "*.egg-info", ".devpack", ".simpack",
                  ".extra", ".gl", "*.mp4")
MAX_FILE_MB = 10.0
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class JobsError(RobofleetError):
    """The Jobs API could not be reached, or refused a request."""


def default_address() -> str:
    """$RAY_API_SERVER_ADDRESS, else http://127.0.0.1:8265 (Ray's Jobs API on this machine)."""
    return os.environ.get("RAY_API_SERVER_ADDRESS", DEFAULT_ADDRESS)


def use_local_auth_token() -> None:
    """Send this machine's Ray auth token (~/.ray/auth_token, $RAY_AUTH_TOKEN[_PATH]) with Jobs API
    requests when RAY_AUTH_MODE is unset — what `ray start` and `ray job submit` do (Ray >= 2.52
    clusters started where a token exists require it)."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token auth
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def client(address: str) -> Any:
    """A JobSubmissionClient for `address` (http://HOST:PORT of the dashboard); JobsError when unreachable."""
    from ray.job_submission import JobSubmissionClient

    use_local_auth_token()
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, AuthenticationError, ... : say where and why
        raise JobsError(f"--address {address}: cannot reach the Ray Jobs API ({exc})") from exc


def working_dir_excludes(root: Path, max_file_mb: float = MAX_FILE_MB) -> list[str]:
    """ALWAYS_EXCLUDE plus, under `root`, every virtual environment (a directory with pyvenv.cfg,
    e.g. a second venv for another simulator) and every file larger than `max_file_mb`, as
    /relative/path patterns (Ray's gitignore syntax; Ray also honours .gitignore files)."""
    root = Path(root)
    skip = {".venv", ".git", "runs", "__pycache__", ".pytest_cache", ".devpack", ".simpack", ".extra", ".gl"}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        kept = []
        for d in dirnames:
            if d in skip or d.startswith(".venv") or d.endswith(".egg-info"):
                continue
            if (here / d / "pyvenv.cfg").exists():
                found.append("/" + (here / d).relative_to(root).as_posix() + "/")
                continue
            kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            path = here / name
            try:
                if path.stat().st_size > max_file_mb * 2**20:
                    found.append("/" + path.relative_to(root).as_posix())
            except OSError:
                continue
    return [*ALWAYS_EXCLUDE, *sorted(found)]


def repo_root() -> Path | None:
    """The robofleet checkout this code runs from (None for an installed wheel)."""
    from robofleet.platform.fingerprint import REPO_ROOT

    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").exists() else None


@dataclass(frozen=True)
class Submission:
    """What `submit` sent: the job id, the command it runs, and where its results go (on the cluster)."""

    job_id: str
    entrypoint: str
    out: str
    kind: str  # "run" | "sweep"
    name: str


def build_entrypoint(out: str, workers: int | None = None, videos: int = 0, python: str | None = None) -> str:
    """The job's shell command: `robofleet run` on the spec in $ROBOFLEET_SPEC_TOML, joining the job's cluster.

    python: the cluster's interpreter (default: sys.executable, this Python, which imports robofleet).
    """
    cmd = [python or sys.executable, "-m", "robofleet.jobs.cli", "run", "--spec-env", SPEC_ENV_VAR, "--out", out,
           "--address", "auto", "--no-progress"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    if videos:
        cmd += ["--videos", str(videos)]
    return shlex.join(cmd)


def submit(spec_path: str | Path, address: str, out: str | Path | None = None, workers: int | None = None,
           videos: int = 0, python: str | None = None, working_dir: str | Path | None = None,
           job_id: str | None = None) -> Submission:
    """Validate a run or sweep spec here, then submit it as a Ray job; returns at once.

    out: the results directory on the cluster (default: ./runs/<name>, made absolute here).
    working_dir: uploaded as the job's working dir (default: this robofleet checkout, if any).
    """
    from robofleet.jobs.sweep import load_any

    spec_path = Path(spec_path)
    spec = load_any(spec_path)
    text, kind, name = spec.text, spec.kind, spec.name
    out_dir = str(Path(out if out is not None else Path("runs") / name).expanduser().absolute())
    entrypoint = build_entrypoint(out_dir, workers, videos, python)
    runtime_env: dict[str, Any] = {"env_vars": {SPEC_ENV_VAR: text}}
    root = Path(working_dir) if working_dir else repo_root()
    if root is not None:
        runtime_env["working_dir"] = str(root)
        runtime_env["excludes"] = working_dir_excludes(root)
    metadata = {"robofleet_kind": kind, "robofleet_name": name, "robofleet_spec": str(spec_path),
                "robofleet_out": out_dir}
    jobs = client(address)
    try:
        submitted = jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, metadata=metadata,
                                    submission_id=job_id)
    except Exception as exc:  # noqa: BLE001 - the API's errors are plain RuntimeErrors
        raise JobsError(f"submitting to {address} failed: {exc}") from exc
    return Submission(job_id=submitted, entrypoint=entrypoint, out=out_dir, kind=kind, name=name)


def list_jobs(address: str) -> list[dict[str, Any]]:
    """The cluster's jobs, oldest first: {"job_id", "status", "start", "end", "name", "kind", "out", "message"}."""
    jobs = client(address)
    try:
        details = jobs.list_jobs()
    except Exception as exc:  # noqa: BLE001
        raise JobsError(f"listing jobs at {address} failed: {exc}") from exc
    rows = []
    for d in sorted(details, key=lambda d: d.start_time or 0):
        meta = d.metadata or {}
        rows.append({
            "job_id": d.submission_id or d.job_id, "status": str(getattr(d.status, "value", d.status)),
            "start": _when(d.start_time), "end": _when(d.end_time), "name": meta.get("robofleet_name", ""),
            "kind": meta.get("robofleet_kind", ""), "out": meta.get("robofleet_out", ""),
            "entrypoint": d.entrypoint, "message": d.message or "",
        })
    return rows


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else ""


def status(address: str, job_id: str) -> str:
    """PENDING | RUNNING | STOPPED | SUCCEEDED | FAILED."""
    jobs = client(address)
    try:
        return str(jobs.get_job_status(job_id).value)
    except Exception as exc:  # noqa: BLE001
        raise JobsError(f"job {job_id} at {address}: {exc}") from exc


def logs(address: str, job_id: str) -> str:
    """Everything the job's driver has printed so far."""
    jobs = client(address)
    try:
        return jobs.get_job_logs(job_id)
    except Exception as exc:  # noqa: BLE001
        raise JobsError(f"job {job_id} at {address}: {exc}") from exc


def log_tail(address: str, job_id: str, lines: int = 30) -> str:
    """The last `lines` lines of the job's log (what a FAILED job said last)."""
    try:
        text = logs(address, job_id)
    except JobsError as exc:
        return f"(its log could not be read: {exc})"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def follow_logs(address: str, job_id: str) -> Iterator[str]:
    """The job's log as it grows, until the job ends."""
    import asyncio

    jobs = client(address)
    stream = jobs.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def stop(address: str, job_id: str) -> bool:
    """Ask the cluster to stop a job (SIGTERM to its driver, then SIGKILL); False if it had already ended."""
    jobs = client(address)
    try:
        return bool(jobs.stop_job(job_id))
    except Exception as exc:  # noqa: BLE001
        raise JobsError(f"stopping job {job_id} at {address}: {exc}") from exc


def wait(address: str, job_id: str, timeout_s: float | None = None, poll_s: float = 1.0) -> str:
    """Block until the job ends (or `timeout_s` passes); returns its last status."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        state = status(address, job_id)
        if state in TERMINAL or (deadline is not None and time.monotonic() > deadline):
            return state
        time.sleep(poll_s)
