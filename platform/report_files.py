"""Write the report files of a run directory, a sweep directory, or a combination of run directories.

A run directory gets (next to spec.toml and episodes.csv):
    summary.json   the summary document (docs/summary_json.md)
    report.md      tables for people          report.html  the same with the plot embedded
    tasks.csv      one row per task           suites.csv   one row per suite
    success.png    success rate per task with 95% Wilson whiskers (axis: the task names)
    steps.png      env steps of every episode per task, coloured by outcome

A sweep directory (sweep.toml, sweep.json, one run directory per grid point) gets summary.json
(kind "sweep"), report.md, report.html, points.csv, configs.csv, tasks.csv and success.png.

Every file is written with atomic_files.write_atomic (a temporary name, fsynced, renamed), so a killed
process never leaves half a report.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from robofleet.platform.atomic_files import write_atomic  # also imported from here (sweeps)
from robofleet.platform.errors import RobofleetError
from robofleet.platform.fingerprint import fingerprint
from robofleet.platform.plots import Bar, steps_strip_chart, success_bar_chart
from robofleet.platform.report import (
    SERVING_SETTINGS, WORKER_PACKAGES, distinct_packages, episode_table, episodes_frame, outcome, render_markdown,
    run_warnings, summarize,
)
from robofleet.platform.report_html import render_run_html, render_sweep_html
from robofleet.platform.report_sweep import LoadedRun, combine_runs, render_sweep_markdown
from robofleet.platform.results import read_rows
from robofleet.platform.spec import RunSpec, load_spec


class ReportError(RobofleetError):
    """A directory cannot be reported on (not a run or sweep directory, or unreadable)."""


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "spec.toml").is_file()


def is_sweep_dir(path: Path) -> bool:
    return (Path(path) / "sweep.toml").is_file()


def load_summary(directory: Path) -> dict[str, Any] | None:
    """directory/summary.json, or None when absent."""
    path = Path(directory) / "summary.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read it ({exc}); delete it and run `robofleet report` again") from exc


def run_info(spec: RunSpec) -> dict[str, Any]:
    """The "run" table of summary.json (docs/summary_json.md)."""
    return {
        "name": spec.name, "spec_hash": spec.identity_hash(), "seed": spec.seed, "protocol": spec.protocol,
        "family": spec.env.family,
        "policy": spec.policy.name, "planner": spec.planner.name, "suite": spec.env.suite,
        "reset_mode": spec.env.reset, "episodes_planned": len(spec.env.tasks) * spec.env.trials,
        "serving": {key: getattr(spec.serving, key) for key in SERVING_SETTINGS},
    }


def _same_software(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.get("id") == b.get("id") and a.get("git_sha") == b.get("git_sha")


@dataclass(frozen=True)
class Invocation:
    """What one `run()` that ran `ran` episodes knows beyond episodes.csv (runner.run builds it).

    wall_s: the whole invocation; episodes_wall_s: from the first episode scheduled to the last one
    recorded (throughput figures use it). serving: each replica's stats. worker_packages: versions
    seen inside the env workers. fingerprint: the driver's software and hardware. command,
    started_at, ended_at: how and when (summary.json `invocations`, `command`, `started_at`, `ended_at`).
    """

    ran: int
    wall_s: float
    episodes_wall_s: float | None
    worker_packages: Sequence[Mapping[str, Any]]
    serving: Sequence[Mapping[str, Any]]
    fingerprint: Mapping[str, Any]
    command: str | None = None      # the command line that started it (None: not known, e.g. a library call)
    started_at: str | None = None   # ISO-8601 UTC, when run() started
    ended_at: str | None = None     # ISO-8601 UTC, when its last episode was recorded

    def record(self) -> dict[str, Any]:
        """Its entry in summary.json `invocations`."""
        return {"command": self.command, "started_at": self.started_at, "ended_at": self.ended_at,
                "episodes": self.ran, "wall_s": self.wall_s}


def run_figures(spec: RunSpec, rows: Sequence[Mapping[str, str]], invocation: Invocation | None) -> dict[str, Any]:
    """The "figures" table: totals over episodes.csv, and the figures of the invocation that just ran."""
    frame = episodes_frame(rows)
    env_steps = int(frame["steps"].sum()) if not frame.empty else 0
    busy_s = float(frame["wall_s"].sum()) if not frame.empty else 0.0
    figures: dict[str, Any] = {
        "episodes_recorded": len(frame),
        "env_steps": env_steps,
        "episode_seconds_total": busy_s,
        "env_steps_per_episode_second": env_steps / busy_s if busy_s else 0.0,
        "workers": spec.run.workers,
    }
    if invocation is not None and invocation.ran and invocation.wall_s:
        recent = episodes_frame(list(rows)[-invocation.ran:])  # rows are in the order episodes finished
        busy = invocation.episodes_wall_s or invocation.wall_s
        figures["this_invocation"] = {
            "episodes": invocation.ran,
            "wall_s": invocation.wall_s,
            "startup_s": invocation.wall_s - busy,
            "episodes_per_hour": 3600 * invocation.ran / busy,
            "env_steps_per_s": float(recent["steps"].sum()) / busy,
            "chunks_per_s": float(recent["queries"].sum()) / busy,
        }
    if invocation is not None and invocation.serving:
        figures["replicas"] = list(invocation.serving)
    return figures


def build_run_summary(run_dir: Path, invocation: Invocation | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """The summary of a run directory, and its episode frame.

    invocation: what the `run()` that just ran knows (None for `robofleet report`: the recorded
        fingerprint, worker packages and last invocation's figures are then kept).
    """
    run_dir = Path(run_dir)
    spec = load_spec(run_dir / "spec.toml")
    rows = read_rows(run_dir)
    frame = episodes_frame(rows)
    previous = load_summary(run_dir)  # as the last invocation left it: run() writes only through here
    figures = run_figures(spec, rows, invocation)
    ran = invocation is not None and invocation.ran > 0
    source = "run"
    if ran:
        fp, workers = dict(invocation.fingerprint), list(invocation.worker_packages)
    elif previous:
        fp, workers = previous["fingerprint"], previous.get("worker_packages", [])
        for key in ("this_invocation", "replicas"):  # figures of the last invocation that ran episodes
            if key in previous.get("figures", {}):
                figures[key] = previous["figures"][key]
        source = previous.get("fingerprint_source", "run")
    else:
        fp, workers = dict(invocation.fingerprint) if invocation else fingerprint(), []
        source = "run" if invocation else "report"
    seen = list((previous or {}).get("fingerprints_seen") or [])
    if not seen and previous and previous.get("fingerprint") and previous.get("overall", {}).get("episodes"):
        seen = [previous["fingerprint"]]
    if (ran or not seen) and len(frame) and not any(_same_software(fp, s) for s in seen):
        seen.append(fp)
    summary = summarize(frame, run_info(spec), figures, fp, workers)
    summary["fingerprint_source"] = source
    summary["fingerprints_seen"] = seen
    summary.update(when_and_how(frame, previous, invocation))
    summary["warnings"] = run_warnings(summary)
    if source == "report":
        summary["warnings"].append("the fingerprint was taken when this report was written, not when the "
                                   "episodes ran (no summary.json was recorded with them)")
    return summary, frame


def when_and_how(frame: pd.DataFrame, previous: Mapping[str, Any] | None,
                 invocation: Invocation | None) -> dict[str, Any]:
    """summary.json's `invocations` (every run() that recorded episodes here, oldest first; kept from
    the previous summary), `command` (the last one's), `started_at` / `ended_at` (the first one's
    start, the last one's end; from the episodes' own times when no invocation was recorded)."""
    invocations = list((previous or {}).get("invocations") or [])
    if invocation is not None and invocation.ran:
        invocations.append(invocation.record())
    starts = [t for t in frame.get("started_at", pd.Series(dtype=str)) if t] if len(frame) else []
    ends = [t for t in frame.get("ended_at", pd.Series(dtype=str)) if t] if len(frame) else []
    started = [i["started_at"] for i in invocations if i.get("started_at")] + starts
    ended = [i["ended_at"] for i in invocations if i.get("ended_at")] + ends
    commands = [i["command"] for i in invocations if i.get("command")]
    return {"started_at": min(started) if started else None, "ended_at": max(ended) if ended else None,
            "command": commands[-1] if commands else None, "invocations": invocations}


def task_label(task: Mapping[str, Any], with_suite: bool = False, width: int = 48) -> str:
    """A task's axis label: "3: pick up the ketchup and place it in the basket" (cut to `width`)."""
    name = str(task.get("task") or "").replace("_", " ").strip()
    label = f"{task['task_id']}: {name}" if name else str(task["task_id"])
    if with_suite:
        label = f"{task['suite']} {label}"
    return label if len(label) <= width else label[: width - 3] + "..."


def run_plot_bars(summary: Mapping[str, Any]) -> list[Bar]:
    """The bars of a run's success plot: one per task (labelled with its name), then overall."""
    tasks = summary["tasks"]
    one_suite = len({t["suite"] for t in tasks}) == 1
    bars = [Bar(label=task_label(t, with_suite=not one_suite), rate=t["success_rate"], low=t["ci95"][0],
                high=t["ci95"][1], group="task", note=f"{t['successes']}/{t['episodes']}") for t in tasks]
    o = summary["overall"]
    if tasks:
        bars.append(Bar("overall", o["success_rate"], o["ci95"][0], o["ci95"][1], group="overall",
                        note=f"{o['successes']}/{o['episodes']}"))
    return bars


def _run_plot(summary: Mapping[str, Any]) -> bytes | None:
    tasks = summary["tasks"]
    if not tasks:
        return None
    suite = tasks[0]["suite"] if len({t["suite"] for t in tasks}) == 1 else "all suites"
    name = summary["run"].get("name")
    return success_bar_chart(run_plot_bars(summary), f"{name + ': ' if name else ''}success per task ({suite}), "
                                                     "95% Wilson CI")


def _steps_plot(summary: Mapping[str, Any], frame: pd.DataFrame) -> bytes | None:
    """Env steps of every episode per task, coloured by outcome (the episode-length distribution)."""
    if frame.empty:
        return None
    one_suite = len({t["suite"] for t in summary["tasks"]}) == 1
    labels = {(t["suite"], t["task_id"]): task_label(t, with_suite=not one_suite) for t in summary["tasks"]}
    points = [(labels[(r["suite"], int(r["task_id"]))], int(r["steps"]), outcome(int(r["success"]), r["error"]))
              for _, r in frame.iterrows()]
    return steps_strip_chart(points, "env steps per episode, by task (colour: outcome)")


def _stats_columns(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {"episodes": stats["episodes"], "successes": stats["successes"], "failures": stats.get("failures"),
            "errors": stats["errors"], "success_rate": stats["success_rate"], "ci95_low": stats["ci95"][0],
            "ci95_high": stats["ci95"][1]}


def write_run_files(run_dir: Path, summary: Mapping[str, Any], frame: pd.DataFrame | None = None) -> None:
    """summary.json, report.md, report.html, tasks.csv, suites.csv, success.png and steps.png of one run
    (frame: its episodes, for the episode table and the steps plot; None: read episodes.csv)."""
    run_dir = Path(run_dir)
    frame = episodes_frame(read_rows(run_dir)) if frame is None else frame
    png = _run_plot(summary)
    if png:
        write_atomic(run_dir / "success.png", png)
    steps_png = _steps_plot(summary, frame)
    if steps_png:
        write_atomic(run_dir / "steps.png", steps_png)
    episodes = episode_table(frame)
    tasks = pd.DataFrame([{"suite": t["suite"], "task_id": t["task_id"], "task": t["task"], **_stats_columns(t),
                           "mean_steps": t["mean_steps"], "videos": ";".join(t.get("videos", [])),
                           "retried": t.get("retried", 0),
                           **{f"steps_{k}": v for k, v in (t.get("steps_distribution") or {}).items()}}
                          for t in summary["tasks"]],
                         columns=["suite", "task_id", "task", "episodes", "successes", "failures", "errors",
                                  "success_rate", "ci95_low", "ci95_high", "mean_steps", "videos", "retried",
                                  "steps_min", "steps_p25", "steps_median", "steps_p75", "steps_max"])
    write_atomic(run_dir / "tasks.csv", tasks.to_csv(index=False))
    suites = pd.DataFrame([{"suite": suite, **_stats_columns(s)} for suite, s in summary["suites"].items()],
                          columns=["suite", "episodes", "successes", "failures", "errors", "success_rate",
                                   "ci95_low", "ci95_high"])
    write_atomic(run_dir / "suites.csv", suites.to_csv(index=False))
    write_atomic(run_dir / "report.md", render_markdown(summary, episodes))
    write_atomic(run_dir / "report.html", render_run_html(summary, png, episodes, steps_png))
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))


def write_run_report(run_dir: Path, invocation: Invocation | None = None) -> dict[str, Any]:
    """The one writer of a run directory's report files (runner.run, `robofleet report`, sweeps);
    returns its summary. invocation: see build_run_summary."""
    if not is_run_dir(run_dir):
        raise ReportError(f"{run_dir}: not a run directory (no spec.toml)")
    summary, frame = build_run_summary(run_dir, invocation)
    write_run_files(run_dir, summary, frame)
    return summary


# -- combined reports -----------------------------------------------------------------------------
def _sweep_plot(summary: Mapping[str, Any]) -> bytes | None:
    points = [p for p in summary["points"] if p["overall"]["episodes"]]
    if not points:
        return None
    bars = [Bar(label=p["name"], rate=p["overall"]["success_rate"], low=p["overall"]["ci95"][0],
                high=p["overall"]["ci95"][1], group=p["config"],
                note=f"{p['overall']['successes']}/{p['overall']['episodes']}") for p in points]
    return success_bar_chart(bars, f"{summary['sweep']['name']}: success per run (colour: configuration), 95% Wilson CI")


def _packages_text(workers: Sequence[Mapping[str, Any]]) -> str:
    """Env worker environments as "robosuite 1.5.2, mujoco 3.3.1, ..." (WORKER_PACKAGES), "; " between them."""
    return "; ".join(", ".join(f"{name} {w.get(name)}" for name in WORKER_PACKAGES if w.get(name))
                     for w in distinct_packages(workers))


def write_combined_files(out: Path, summary: Mapping[str, Any]) -> None:
    """summary.json, report.md, report.html, points.csv, configs.csv, tasks.csv, success.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = _sweep_plot(summary)
    if png:
        write_atomic(out / "success.png", png)
    points = pd.DataFrame([{"run": p["name"], "dir": p["dir"], "config": p["config"], "seed": p["seed"],
                            "policy": p["policy"], "planner": p["planner"], "suite": p["suite"], "status": p["status"],
                            "episodes_planned": p["episodes_planned"], **_stats_columns(p["overall"]),
                            "spec_hash": p["spec_hash"], "fingerprint_id": p["fingerprint_id"], "git_sha": p["git_sha"],
                            "family": p["family"], "worker_packages": _packages_text(p["worker_packages"]),
                            "duplicate_episodes": p.get("duplicate_episodes", 0),
                            "duplicate_of": " ".join(p.get("duplicate_of", []))}
                           for p in summary["points"]])
    write_atomic(out / "points.csv", points.to_csv(index=False))
    rows = []
    for c in summary["configs"]:
        rows.append({"config": c["config"], "label": c.get("label", c["config"]),
                     "parameters": json.dumps(c.get("parameters", {}), default=str),
                     "suite": "", "task_id": "", "task": "(all tasks)", "n_seeds": c["n_seeds"],
                     "seeds": " ".join(map(str, c["seeds"])), "success_rate_mean": c["success_rate_mean"],
                     "success_rate_std": c["success_rate_std"], **_stats_columns(c["pooled"])})
        for t in c["tasks"]:
            rows.append({"config": c["config"], "label": c.get("label", c["config"]), "parameters": "",
                         "suite": t["suite"], "task_id": t["task_id"], "task": t["task"],
                         "n_seeds": t["n_seeds"], "seeds": "", "success_rate_mean": t["success_rate_mean"],
                         "success_rate_std": t["success_rate_std"], **_stats_columns(t["pooled"])})
    write_atomic(out / "configs.csv", pd.DataFrame(rows).to_csv(index=False))
    tasks = pd.DataFrame([{"run": t["point"], "config": t["config"], "seed": t["seed"], "suite": t["suite"],
                           "task_id": t["task_id"], "task": t["task"], **_stats_columns(t),
                           "videos": ";".join(t.get("videos", []))} for t in summary["tasks"]])
    write_atomic(out / "tasks.csv", tasks.to_csv(index=False))
    write_atomic(out / "report.md", render_sweep_markdown(summary))
    write_atomic(out / "report.html", render_sweep_html(summary, png))
    write_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str))


def load_run(name: str, directory: str, path: Path, spec: RunSpec, config: str, refresh: bool,
              error: str | None = None) -> LoadedRun:
    if is_run_dir(path):
        summary = write_run_report(path) if refresh else build_run_summary(path)[0]
        frame = episodes_frame(read_rows(path))
    else:
        summary, frame = None, pd.DataFrame()
    return LoadedRun(name=name, dir=directory, spec=spec, config=config, summary=summary, frame=frame, error=error)


def _config_label(directory_name: str) -> str:
    import re

    return re.sub(r"(^|[-_])seed-?\d+(?=$|[-_])", "", directory_name).strip("-_") or directory_name


def write_combined_report(run_dirs: Sequence[Path], out: Path, name: str | None = None) -> dict[str, Any]:
    """One report over any run directories (e.g. the same policy at several seeds); the runs are
    only read. Runs whose specs differ only by the seed form one configuration."""
    out = Path(out).resolve()
    runs = []
    names: set[str] = set()
    for raw in run_dirs:
        path = Path(raw).resolve()
        if not is_run_dir(path):
            raise ReportError(f"{raw}: not a run directory (no spec.toml)")
        label = path.name if path.name not in names else f"{path.parent.name}/{path.name}"
        names.add(label)
        runs.append(load_run(label, os.path.relpath(path, out), path, load_spec(path / "spec.toml"),
                              _config_label(path.name), refresh=False))
    summary = combine_runs(name or out.name, runs)
    write_combined_files(out, summary)
    return summary
