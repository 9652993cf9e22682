"""The run directory: the frozen spec, one CSV row per finished episode (durable at once), reports.

Layout of a run directory:
    spec.toml        the validated spec this directory belongs to (a different spec is refused)
    episodes.csv     one row per finished episode, appended and fsynced as each one finishes
    summary.json     per task / suite / overall success, run figures, software fingerprint
    report.md        the same for people
    videos/          mp4 rollouts (`--videos K` / `--videos failures:K`; platform/rollout_video.VideoPolicy)
"""
from __future__ import annotations

import csv
import io
import json
import os
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from robofleet.platform.atomic_files import write_atomic
from robofleet.platform.errors import RobofleetError
from robofleet.platform.spec import RunSpec, dump_spec_toml, load_spec

EPISODE_COLUMNS = (
    "episode_id", "family", "suite", "task_id", "task", "trial", "sweep_seed", "seed",
    "policy", "planner", "success", "steps", "queries", "final_state", "error", "attempts",
    "wall_s", "reset_s", "policy_s", "queue_s", "model_s", "env_s", "reset_mode", "protocol", "worker", "video", "plan_stats",
    # Added later, so at the end: rows appended to an older episodes.csv keep its columns in place.
    "started_at", "ended_at",  # ISO-8601 UTC wall-clock times of the episode's start (before reset) and end
    "remote_s",  # seconds of round trips to a remote policy server (policy = "remote")
)


class RunDirError(RobofleetError):
    """The output directory cannot be used (unwritable, or holds another spec's results)."""


def check_writable(directory: str | Path, what: str = "--out") -> None:
    """RunDirError unless `directory` can be created and written (the one write probe: RunStore claims
    its directory with it, and the CLI checks --out with it before Ray starts)."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"{what} {path}: cannot write there ({exc.strerror}); choose another directory") from exc


def read_rows(run_dir: str | Path) -> list[dict[str, str]]:
    """The rows of run_dir/episodes.csv (empty when it does not exist): the one reader of episodes.csv."""
    path = Path(run_dir) / "episodes.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class RunStore:
    """Owns one run directory. Rows are appended, flushed and fsynced one at a time, so a killed
    driver loses at most the episodes that were still running."""

    def __init__(self, root: str | Path, spec: RunSpec):
        self.root = Path(root)
        self.episodes_path = self.root / "episodes.csv"
        self._claim(spec)

    def _claim(self, spec: RunSpec) -> None:
        check_writable(self.root)
        spec_path = self.root / "spec.toml"
        if spec_path.exists():
            previous = load_spec(spec_path)
            if "protocol" not in tomllib.loads(spec_path.read_text()):  # written before protocols: robofleet's
                previous = replace(previous, protocol="robofleet")
            if previous.identity_hash() != spec.identity_hash():
                raise RunDirError(
                    f"--out {self.root} holds results of a different spec (spec hash {previous.identity_hash()} "
                    f"!= {spec.identity_hash()}); use a new --out directory to keep both"
                )
        self._repair_tail()
        self._check_recorded_protocol(spec)
        write_atomic(spec_path, dump_spec_toml(spec))  # a driver killed mid-write leaves the old one
        self._upgrade_header()

    def _check_recorded_protocol(self, spec: RunSpec) -> None:
        """Rows recorded before protocols existed ran robofleet's own (scenes and noise per episode): a
        reference-protocol spec must not resume into them."""
        rows = read_rows(self.root)
        if rows and "protocol" not in rows[0]:  # an episodes.csv from before the column existed
            recorded = {"robofleet"}
        else:
            recorded = {row["protocol"] for row in rows if row.get("protocol")}
        if recorded and recorded != {spec.protocol}:
            raise RunDirError(
                f"--out {self.root} holds episodes of protocol {', '.join(sorted(recorded))} and the spec asks for "
                f"{spec.protocol!r}: use a new --out directory, or set protocol = \"{sorted(recorded)[0]}\" to resume")

    def _upgrade_header(self) -> None:
        """An episodes.csv written by an older robofleet (fewer columns) is rewritten with today's header
        (missing cells empty), so appended rows line up with it."""
        if not self.episodes_path.exists():
            return
        with self.episodes_path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if tuple(header) == EPISODE_COLUMNS:
            return
        unknown = set(header) - set(EPISODE_COLUMNS)
        if unknown:
            raise RunDirError(f"{self.episodes_path} has columns this robofleet does not know ({sorted(unknown)}): "
                              "written by a newer version? Use a new --out directory")
        rows = read_rows(self.root)
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=EPISODE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in EPISODE_COLUMNS})
        write_atomic(self.episodes_path, text.getvalue())

    def _repair_tail(self) -> None:
        """Drop what a driver killed inside `append` can leave: an empty file (killed before the header
        reached the disk) or a last line without its newline (a torn row; that episode runs again)."""
        if not self.episodes_path.exists():
            return
        data = self.episodes_path.read_bytes()
        if data.endswith(b"\n"):
            return
        keep = data[: data.rfind(b"\n") + 1]
        if keep:
            with self.episodes_path.open("r+b") as f:
                f.truncate(len(keep))
                os.fsync(f.fileno())
        else:
            self.episodes_path.unlink()

    def finished_ids(self) -> set[str]:
        """episode_ids already recorded (successes, failures and errors alike)."""
        return {row["episode_id"] for row in read_rows(self.root)}

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one episode row durably (flush + fsync) before returning."""
        unknown = set(row) - set(EPISODE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown episode columns {sorted(unknown)}")
        new_file = not self.episodes_path.exists() or self.episodes_path.stat().st_size == 0
        with self.episodes_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=EPISODE_COLUMNS)
            if new_file:
                writer.writeheader()
            writer.writerow({k: _cell(row.get(k)) for k in EPISODE_COLUMNS})
            f.flush()
            os.fsync(f.fileno())


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return f"{value:.4f}"
    return value

