"""Summaries and reports of a run directory: per task, per suite and overall success with 95% Wilson
intervals, run figures, the software fingerprint, videos and the warnings a reader must see.

summary.json shape (stable; tools may parse it; full reference: docs/summary_json.md):
    {
      "schema_version": 2, "kind": "run",
      "run": {"name", "spec_hash", "seed", "protocol", "policy", "planner", "suite", "reset_mode", "episodes_planned"},
      "overall": Stats, "suites": {suite: Stats}, "tasks": [{"suite", "task_id", "task", **Stats, "videos"}],
      "complete": bool,             # every planned episode is recorded
      "figures": {...},             # run figures (report_files.run_figures)
      "fingerprint": {"packages": {...}, "git_sha", "hardware": {...}, "id"},
      "worker_packages": [{...}],   # versions seen inside the env workers
      "warnings": [str]             # what makes the numbers less comparable (also in report.md)
    }
    Stats = {"episodes", "successes", "failures", "errors", "success_rate", "ci95": [low, high], "mean_steps"}

Errors (an exception in the episode) count as episodes that did not succeed; `failures` are the
episodes that ran to the step limit without success, so episodes = successes + failures + errors.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
from scipy.stats import binomtest

SCHEMA_VERSION = 2
# Fingerprint fields compared between runs of one table (packages, then the rest).
FINGERPRINT_PACKAGES = ("python", "torch", "mujoco", "robosuite", "libero", "ray", "diffusers", "numpy", "transformers")
FINGERPRINT_FIELDS = (*FINGERPRINT_PACKAGES, "assets", "git_sha", "cpu_model", "gpus")
# Package versions shown per env worker environment (families run in their own Pythons: envs/families.py).
WORKER_PACKAGES = ("python", "robosuite", "mujoco", "numpy", "libero", "robocasa", "torch", "ray")


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a success rate; (0, 1) when n == 0."""
    if n == 0:
        return (0.0, 1.0)
    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


def success_stats(frame: pd.DataFrame) -> dict[str, Any]:
    """Stats of a set of episode rows (see the module docstring)."""
    n = len(frame)
    if n == 0:
        return {"episodes": 0, "successes": 0, "failures": 0, "errors": 0, "success_rate": 0.0,
                "ci95": [0.0, 1.0], "mean_steps": 0.0}
    k = int(frame["success"].sum())
    errors = int((frame["error"] != "").sum())
    low, high = wilson_interval(k, n)
    return {
        "episodes": n,
        "successes": k,
        "failures": n - k - int(((frame["error"] != "") & (frame["success"] == 0)).sum()),
        "errors": errors,
        "success_rate": k / n,
        "ci95": [low, high],
        "mean_steps": float(frame["steps"].mean()),
    }


_stats = success_stats  # the name runner-era code used


def episodes_frame(rows: Sequence[Mapping[str, str]]) -> pd.DataFrame:
    """Episode rows (as read from episodes.csv) as a typed DataFrame."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    for col in ("task_id", "trial", "success", "steps", "queries", "attempts"):
        frame[col] = pd.to_numeric(frame[col]).astype(int)
    for col in ("wall_s", "reset_s", "policy_s", "queue_s", "model_s", "env_s"):
        frame[col] = pd.to_numeric(frame[col])
    for col in ("error", "video"):
        if col in frame:
            frame[col] = frame[col].fillna("").astype(str)
    return frame.sort_values(["suite", "task_id", "trial"]).reset_index(drop=True)


def task_videos(group: pd.DataFrame) -> list[str]:
    """Video paths (relative to the run directory) of a task's episodes, by trial."""
    if "video" not in group:
        return []
    return [v for v in group.sort_values("trial")["video"] if v]


def summarize(frame: pd.DataFrame, run: Mapping[str, Any], figures: Mapping[str, Any],
              fingerprint: Mapping[str, Any], worker_packages: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The summary.json document (shape in the module docstring)."""
    tasks = []
    suites: dict[str, Any] = {}
    if not frame.empty:
        for (suite, task_id), group in frame.groupby(["suite", "task_id"], sort=True):
            tasks.append({"suite": suite, "task_id": int(task_id), "task": group["task"].iloc[0],
                          **success_stats(group), "videos": task_videos(group)})
        suites = {suite: success_stats(group) for suite, group in frame.groupby("suite", sort=True)}
    overall = success_stats(frame) if not frame.empty else {"episodes": 0}
    planned = run.get("episodes_planned")
    summary = {
        "schema_version": SCHEMA_VERSION,
        "kind": "run",
        "run": dict(run),
        "overall": overall,
        "suites": suites,
        "tasks": tasks,
        "complete": planned is not None and overall["episodes"] >= planned,
        "figures": dict(figures),
        "fingerprint": dict(fingerprint),
        "worker_packages": list(worker_packages),
    }
    summary["warnings"] = run_warnings(summary)
    return summary


def run_warnings(summary: Mapping[str, Any]) -> list[str]:
    """What a reader of one run's table must know before trusting or comparing its numbers."""
    warnings = []
    overall, run = summary["overall"], summary["run"]
    planned = run.get("episodes_planned")
    if planned is not None and overall.get("episodes", 0) < planned:
        warnings.append(f"incomplete: {overall.get('episodes', 0)} of {planned} planned episodes are recorded "
                        "(re-run the same command to resume)")
    if overall.get("errors"):
        warnings.append(f"{overall['errors']} episode(s) raised an error (counted as not successful; "
                        "see the error column of episodes.csv)")
    if run.get("protocol", "robofleet") != "reference" and run.get("family", "libero") != "robosuite":
        warnings.append("protocol robofleet: scenes and noise seeded per episode, not the reference evaluation's "
                        "(not comparable with published numbers; platform/protocol.py)")
    assets = (summary.get("fingerprint") or {}).get("assets") or {}
    if assets.get("status") == "modified":
        shown = ", ".join(assets.get("first_modified", [])[:5])
        warnings.append(f"assets: {assets.get('summary')}: the LIBERO scenes are not the benchmark's ({shown}; "
                        "`python -m robofleet.envs.libero_assets check` lists them)")
    if run.get("reset_mode") == "soft":
        warnings.append("soft resets: episodes are not bit-identical to hard-reset runs")
    worker_versions = {tuple(sorted((w or {}).items())) for w in summary.get("worker_packages", [])}
    if len(worker_versions) > 1:
        warnings.append("env workers ran different package versions (see summary.json worker_packages)")
    seen = summary.get("fingerprints_seen") or []
    if len(seen) > 1:
        diff = fingerprint_differences({f"#{i}": fp for i, fp in enumerate(seen)})
        warnings.append("episodes of this run were recorded under different software/hardware "
                        f"({', '.join(diff) or 'fingerprint id'} differ; see summary.json fingerprints_seen)")
    return warnings


def fingerprint_fields(fp: Mapping[str, Any]) -> dict[str, Any]:
    """The compared fields of a fingerprint: package versions, git sha, CPU model, GPU models."""
    packages = fp.get("packages") or {}
    hardware = fp.get("hardware") or {}
    out: dict[str, Any] = {name: packages.get(name) for name in FINGERPRINT_PACKAGES}
    out["assets"] = (fp.get("assets") or {}).get("summary")
    out["git_sha"] = fp.get("git_sha")
    out["cpu_model"] = hardware.get("cpu_model")
    gpus = hardware.get("gpus")
    out["gpus"] = ", ".join(gpus) if gpus else None
    return out


def fingerprint_differences(fingerprints: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """field -> {label: value} for each fingerprint field on which the labelled runs disagree."""
    fields = {label: fingerprint_fields(fp) for label, fp in fingerprints.items() if fp}
    diff: dict[str, dict[str, Any]] = {}
    for name in FINGERPRINT_FIELDS:
        values = {label: f[name] for label, f in fields.items()}
        if len({repr(v) for v in values.values()}) > 1:
            diff[name] = values
    return diff


def mean_std(values: Iterable[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1) over seeds; std is None for fewer than 2 values."""
    vals = [float(v) for v in values]
    if not vals:
        return (None, None)
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return (mean, None)
    return (mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)))


# -- Markdown ---------------------------------------------------------------------------------------
def pct(x: float | None) -> str:
    """A rate in [0, 1] as a percentage with one decimal ("-" when unknown)."""
    return "-" if x is None else f"{100 * x:.1f}"


def ci_text(ci: Sequence[float]) -> str:
    return f"{pct(ci[0])}-{pct(ci[1])}"


def figure_text(value: Any) -> str:
    """A run figure as text: floats to 3 significant digits, tables as "key value, ..."."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {figure_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(figure_text(v) for v in value)
    return str(value)


def fingerprint_lines(fp: Mapping[str, Any], spec_hash: str | None = None) -> list[str]:
    """Markdown bullet lines of one fingerprint."""
    lines = [f"- fingerprint id: `{fp.get('id')}`", f"- git sha: `{fp.get('git_sha')}`"]
    if spec_hash:
        lines.append(f"- spec hash: `{spec_hash}`")
    lines += [f"- {k}: {v}" for k, v in (fp.get("packages") or {}).items()]
    if fp.get("assets"):
        assets = fp["assets"]
        lines.append(f"- assets: {assets.get('summary')} (LIBERO tree {assets.get('source')}, checked against "
                     f"{assets.get('upstream')}@{str(assets.get('manifest'))[:12]})")
    hw = fp.get("hardware") or {}
    lines += [f"- hardware: {hw.get('cpu_model')} x{hw.get('cpus')}, {hw.get('memory_gb')} GB"
              + (f", GPUs: {', '.join(hw['gpus'])}" if hw.get("gpus") else ", no GPU")]
    return lines


def distinct_packages(workers: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The distinct package-version sets among env workers' reports, in first-seen order."""
    seen: dict[tuple, Mapping[str, Any]] = {}
    for w in workers:
        seen.setdefault(tuple(sorted((w or {}).items())), w or {})
    return list(seen.values())


def worker_package_cells(packages: Mapping[str, Any]) -> list[str]:
    """WORKER_PACKAGES' versions of one env worker environment ("none": not installed there)."""
    return [str(packages.get(name) or "none") for name in WORKER_PACKAGES]


def worker_packages_markdown(labelled: Sequence[tuple[Sequence[str], Mapping[str, Any]]],
                             headers: Sequence[str]) -> list[str]:
    """A Markdown table of env worker environments: the row's label cells, then WORKER_PACKAGES."""
    cols = [*headers, *WORKER_PACKAGES]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join([*label, *worker_package_cells(packages)]) + " |" for label, packages in labelled]
    return lines


def video_links(videos: Sequence[str], prefix: str = "") -> str:
    """Markdown links to a task's videos ("[0](videos/...mp4) [1](...)")."""
    return " ".join(f"[{i}]({prefix}{v})" for i, v in enumerate(videos))


def render_markdown(summary: Mapping[str, Any]) -> str:
    """report.md: warnings, the per-task and per-suite tables with intervals, run figures, fingerprint."""
    run, overall, fig, fp = summary["run"], summary["overall"], summary["figures"], summary["fingerprint"]
    lines = [
        f"# robofleet report: {run.get('name') or run.get('spec_hash')}",
        "",
        f"protocol `{run.get('protocol', 'robofleet')}`, policy `{run.get('policy')}`, planner "
        f"`{run.get('planner')}`, seed {run.get('seed')}, reset `{run.get('reset_mode')}`, "
        f"spec hash `{run.get('spec_hash')}`",
        "",
    ]
    for warning in summary.get("warnings", []):
        lines.append(f"> **Warning:** {warning}")
    if summary.get("warnings"):
        lines.append("")
    if overall.get("episodes"):
        with_videos = any(t.get("videos") for t in summary["tasks"])
        lines += [
            f"**Overall: {pct(overall['success_rate'])}% success** "
            f"({overall['successes']}/{overall['episodes']}, 95% CI {ci_text(overall['ci95'])}%, "
            f"{overall['errors']} errors)",
            "",
            "| suite | task | episodes | successes | success % | 95% CI | errors | mean steps |"
            + (" videos |" if with_videos else ""),
            "|---|---|---:|---:|---:|---|---:|---:|" + ("---|" if with_videos else ""),
        ]
        for t in summary["tasks"]:
            lines.append(
                f"| {t['suite']} | {t['task_id']}: {t['task']} | {t['episodes']} | {t['successes']} | "
                f"{pct(t['success_rate'])} | {ci_text(t['ci95'])} | {t['errors']} | {t['mean_steps']:.0f} |"
                + (f" {video_links(t.get('videos', []))} |" if with_videos else "")
            )
        if len(summary["suites"]) > 1:
            lines += ["", "| suite | episodes | successes | success % | 95% CI | errors |", "|---|---:|---:|---:|---|---:|"]
            for suite, s in summary["suites"].items():
                lines.append(f"| {suite} | {s['episodes']} | {s['successes']} | {pct(s['success_rate'])} | "
                             f"{ci_text(s['ci95'])} | {s['errors']} |")
    else:
        lines.append("No episodes recorded yet.")
    lines += ["", "## Run figures", ""]
    lines += [f"- {k}: {figure_text(v)}" for k, v in fig.items()]
    lines += ["", "## Software and hardware", ""]
    lines += fingerprint_lines(fp, run.get("spec_hash"))
    workers = distinct_packages(summary.get("worker_packages", []))
    lines += ["", "Env workers (each env family runs in its own Python environment; all versions: summary.json "
                  "worker_packages):", ""]
    lines += worker_packages_markdown([((str(run.get("suite")),), w) for w in workers], ["suite"]) if workers \
        else ["not recorded (re-run the spec to record them)"]
    return "\n".join(lines) + "\n"
