"""Summaries and reports of a run directory: per task, per suite and overall success with 95% Wilson
intervals, run figures, and the software fingerprint.

summary.json shape (stable; tools may parse it):
    {
      "run": {"name", "spec_hash", "seed", "policy", "planner", "suite", "reset_mode", "episodes_planned"},
      "overall": Stats, "suites": {suite: Stats}, "tasks": [{"suite", "task_id", "task", **Stats}],
      "figures": {"wall_s", "episodes_per_hour", "env_steps", "env_steps_per_s", "workers"},
      "fingerprint": {"packages": {...}, "git_sha", "hardware": {...}, "id"},
      "worker_packages": [{...}]   # versions seen inside the env workers
    }
    Stats = {"episodes", "successes", "errors", "success_rate", "ci95": [low, high], "mean_steps"}
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd
from scipy.stats import binomtest


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a success rate; (0, 1) when n == 0."""
    if n == 0:
        return (0.0, 1.0)
    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


def _stats(frame: pd.DataFrame) -> dict[str, Any]:
    n = len(frame)
    k = int(frame["success"].sum())
    low, high = wilson_interval(k, n)
    return {
        "episodes": n,
        "successes": k,
        "errors": int((frame["error"] != "").sum()),
        "success_rate": k / n if n else 0.0,
        "ci95": [low, high],
        "mean_steps": float(frame["steps"].mean()) if n else 0.0,
    }


def episodes_frame(rows: Sequence[Mapping[str, str]]) -> pd.DataFrame:
    """Episode rows (as read from episodes.csv) as a typed DataFrame."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    for col in ("task_id", "trial", "success", "steps", "queries", "attempts"):
        frame[col] = pd.to_numeric(frame[col]).astype(int)
    for col in ("wall_s", "reset_s", "policy_s", "queue_s", "model_s", "env_s"):
        frame[col] = pd.to_numeric(frame[col])
    frame["error"] = frame["error"].fillna("").astype(str)
    return frame.sort_values(["suite", "task_id", "trial"]).reset_index(drop=True)


def summarize(frame: pd.DataFrame, run: Mapping[str, Any], figures: Mapping[str, Any],
              fingerprint: Mapping[str, Any], worker_packages: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The summary.json document (shape in the module docstring)."""
    tasks = []
    suites: dict[str, Any] = {}
    if not frame.empty:
        for (suite, task_id), group in frame.groupby(["suite", "task_id"], sort=True):
            tasks.append({"suite": suite, "task_id": int(task_id), "task": group["task"].iloc[0], **_stats(group)})
        suites = {suite: _stats(group) for suite, group in frame.groupby("suite", sort=True)}
    return {
        "run": dict(run),
        "overall": _stats(frame) if not frame.empty else {"episodes": 0},
        "suites": suites,
        "tasks": tasks,
        "figures": dict(figures),
        "fingerprint": dict(fingerprint),
        "worker_packages": list(worker_packages),
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def render_markdown(summary: Mapping[str, Any]) -> str:
    """report.md: the per-task table with intervals, the run figures and the fingerprint."""
    run, overall, fig, fp = summary["run"], summary["overall"], summary["figures"], summary["fingerprint"]
    lines = [
        f"# robofleet report: {run.get('name') or run.get('spec_hash')}",
        "",
        f"policy `{run.get('policy')}`, planner `{run.get('planner')}`, seed {run.get('seed')}, "
        f"reset `{run.get('reset_mode')}`, spec hash `{run.get('spec_hash')}`",
        "",
    ]
    if overall.get("episodes"):
        lines += [
            f"**Overall: {_pct(overall['success_rate'])}% success** "
            f"({overall['successes']}/{overall['episodes']}, 95% CI {_pct(overall['ci95'][0])}-{_pct(overall['ci95'][1])}%, "
            f"{overall['errors']} errors)",
            "",
            "| suite | task | episodes | successes | success % | 95% CI | errors | mean steps |",
            "|---|---|---:|---:|---:|---|---:|---:|",
        ]
        for t in summary["tasks"]:
            lines.append(
                f"| {t['suite']} | {t['task_id']}: {t['task']} | {t['episodes']} | {t['successes']} | "
                f"{_pct(t['success_rate'])} | {_pct(t['ci95'][0])}-{_pct(t['ci95'][1])} | {t['errors']} | {t['mean_steps']:.0f} |"
            )
    else:
        lines.append("No episodes recorded yet.")
    lines += ["", "## Run figures", ""]
    lines += [f"- {k}: {v:.3g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in fig.items()]
    lines += ["", "## Software and hardware", "", f"- fingerprint id: `{fp.get('id')}`", f"- git sha: `{fp.get('git_sha')}`"]
    lines += [f"- {k}: {v}" for k, v in fp.get("packages", {}).items()]
    hw = fp.get("hardware", {})
    lines += [f"- hardware: {hw.get('cpu_model')} x{hw.get('cpus')}, {hw.get('memory_gb')} GB"
              + (f", GPUs: {', '.join(hw['gpus'])}" if hw.get("gpus") else "")]
    worker_versions = {tuple(sorted((w or {}).items())) for w in summary.get("worker_packages", [])}
    if len(worker_versions) > 1:
        lines += ["", "**Warning: env workers ran different package versions** (see summary.json worker_packages)."]
    return "\n".join(lines) + "\n"
