"""The report of a sweep directory (its grid points' run reports combined), and `robofleet report`'s
dispatch between run and sweep directories. Sweeps are jobs' business; the run and combined report
writers are platform/report_files.py's."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from robofleet.jobs.sweep import load_sweep
from robofleet.platform.report_files import (
    ReportError, combine_runs, is_run_dir, is_sweep_dir, load_run, write_combined_files, write_run_report,
)


def write_sweep_report(sweep_dir: Path, refresh_points: bool = True) -> dict[str, Any]:
    """Write the sweep's combined report (and, with refresh_points, every grid point's report first:
    `robofleet report`; a sweep's run() calls have just written theirs); returns its summary."""
    sweep_dir = Path(sweep_dir)
    sweep = load_sweep(sweep_dir / "sweep.toml")
    manifest = json.loads((sweep_dir / "sweep.json").read_text()) if (sweep_dir / "sweep.json").exists() else {}
    failed = manifest.get("failed_points", {})
    runs = [load_run(p.name, p.name, sweep_dir / p.name, p.spec, p.config, refresh=refresh_points,
                     error=failed.get(p.name))
            for p in sweep.points]
    summary = combine_runs(sweep.name, runs, sweep.description)
    write_combined_files(sweep_dir, summary)
    return summary


def write_report(path: Path) -> dict[str, Any]:
    """Rewrite the reports of a run directory or of a sweep directory."""
    path = Path(path)
    if is_sweep_dir(path):
        return write_sweep_report(path)
    if is_run_dir(path):
        return write_run_report(path)
    raise ReportError(f"{path}: neither a run directory (spec.toml) nor a sweep directory (sweep.toml)")
