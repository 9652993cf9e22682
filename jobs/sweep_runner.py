"""Run a sweep: each grid point with runner.run into OUT/<point name>/, then the sweep report.

    run_sweep(load_sweep("examples/sweep_object_baselines.toml"), "runs/object-baselines")

The output directory:
    sweep.toml          the sweep document (a different sweep into the same directory is refused)
    sweep.json          manifest: the points, the sweep hash, points whose driver failed
    <point>/            one ordinary run directory per grid point (spec.toml, episodes.csv, reports)
    summary.json, report.md, report.html, points.csv, configs.csv, tasks.csv, success.png

Resume is the runner's: every episode row is durable as it finishes; re-running the same sweep
skips recorded episodes (and complete points) and continues. A sweep of the same name may grow
(more seeds, another policy): existing points resume, new ones run, and the report shows the
points of the current file. One Ray cluster serves all points.
A point whose driver raises a RobofleetError (bad checkpoint, no room on the cluster, ...) is
recorded in sweep.json and the sweep goes on; SweepError is raised at the end, after the report.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from robofleet.jobs.sweep import SweepSpec, sweep_from_dict
from robofleet.platform.errors import RobofleetError, SpecError
from robofleet.jobs.sweep_report import write_sweep_report
from robofleet.platform.atomic_files import write_atomic
from robofleet.platform.report_files import write_run_report
from robofleet.platform.results import read_rows
from robofleet.platform.results import RunDirError
from robofleet.platform.spec import load_spec, parse_spec_toml

log = logging.getLogger(__name__)


class SweepError(RobofleetError):
    """Some grid points could not be run (each one's error is in sweep.json and the report).

    summary: the sweep's summary (as run_sweep returns it), written before this was raised.
    """

    def __init__(self, message: str, summary: dict[str, Any] | None = None):
        super().__init__(message)
        self.summary = summary


def check_out_dir(sweep: SweepSpec, out: Path) -> None:
    """Refuse, before anything runs, an output directory that holds another sweep or other specs."""
    out = Path(out)
    previous = out / "sweep.toml"
    if previous.exists():
        try:
            old = sweep_from_dict(parse_spec_toml(previous.read_text(), str(previous)))
        except RobofleetError as exc:
            raise RunDirError(f"--out {out} holds a sweep.toml that no longer validates ({exc}); "
                              "use a new --out directory") from exc
        if old.name != sweep.name:
            raise RunDirError(f"--out {out} holds sweep {old.name!r}, not {sweep.name!r}; use a new --out directory")
    conflicts = []
    for point in sweep.points:
        spec_path = out / point.name / "spec.toml"
        if spec_path.exists():
            recorded = load_spec(spec_path).identity_hash()
            if recorded != point.spec.identity_hash():
                conflicts.append(f"{point.name} (recorded spec hash {recorded} != {point.spec.identity_hash()})")
    if conflicts:
        raise RunDirError(f"--out {out} holds results of different specs for: {'; '.join(conflicts)}; "
                          "use a new --out directory to keep both")


def recorded_episodes(run_dir: Path) -> int:
    return len(read_rows(run_dir))


def _write_manifest(sweep: SweepSpec, out: Path, failed: dict[str, str]) -> None:
    write_atomic(out / "sweep.toml", sweep.to_toml())
    manifest = {"name": sweep.name, "sweep_hash": sweep.identity_hash(),
                "points": [{"name": p.name, "config": p.config, "spec_hash": p.spec.identity_hash(),
                            "episodes": p.episodes, "overrides": dict(p.overrides)} for p in sweep.points],
                "failed_points": failed, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_atomic(out / "sweep.json", json.dumps(manifest, indent=2, default=str))


def run_sweep(sweep: SweepSpec, out: str | Path, workers: int | None = None, address: str | None = None,
              videos: int = 0, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every grid point of `sweep` into out/<point>/; returns the sweep summary.

    workers / address / videos / progress: as runner.run, for every point.
    """
    from robofleet.platform.cluster import connect
    from robofleet.platform.preflight import validate_before_ray
    from robofleet.platform.runner import run

    out = Path(out)
    if videos:
        blind = [p.name for p in sweep.points if not p.spec.env.render_cameras]
        if blind:
            raise SpecError("--videos", f"needs cameras, but env.render_cameras = false in runs {', '.join(blind)}")
    for point in sweep.points:  # every point's files, before the first point starts Ray (run() does not again)
        validate_before_ray(point.spec)
    check_out_dir(sweep, out)
    out.mkdir(parents=True, exist_ok=True)
    failed: dict[str, str] = {}
    _write_manifest(sweep, out, failed)
    todo = [p for p in sweep.points if recorded_episodes(out / p.name) < p.episodes]
    log.info("sweep %s: %d runs, %d with episodes to run", sweep.name, len(sweep.points), len(todo))
    started_cluster = connect(address) if todo else False  # one cluster for all points
    try:
        for point in todo:
            point_dir = out / point.name
            try:
                run(point.spec, point_dir, workers=workers, address=address, videos=videos, progress=progress,
                    validated=True)
            except RobofleetError as exc:
                log.error("sweep %s: run %s failed: %s", sweep.name, point.name, exc)
                failed[point.name] = f"{type(exc).__name__}: {exc}"
                _write_manifest(sweep, out, failed)
                if (point_dir / "spec.toml").exists():
                    write_run_report(point_dir)  # run() writes its report when it finishes; this one did not
    finally:
        if started_cluster:
            import ray

            ray.shutdown()
    summary = write_sweep_report(out, refresh_points=False)
    if failed:
        raise SweepError(f"{len(failed)} of {len(sweep.points)} runs failed: "
                         + "; ".join(f"{name}: {err.splitlines()[0]}" for name, err in failed.items())
                         + f" (report: {out / 'report.md'})", summary)
    return summary
