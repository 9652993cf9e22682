"""Summaries and reports of a run directory: per task, per suite and overall success with 95% Wilson
intervals, run figures, the software fingerprint, videos and the warnings a reader must see.

summary.json shape (stable; tools may parse it; full reference: docs/summary_json.md):
    {
      "schema_version": 2, "kind": "run",
      "run": {"name", "spec_hash", "seed", "protocol", "policy", "planner", "suite", "reset_mode", "episodes_planned",
              "serving": {"replicas", "max_batch", "max_wait_ms", "deterministic", "fixed_batch"}},
      "overall": Stats, "suites": {suite: Stats}, "tasks": [{"suite", "task_id", "task", **Stats, "videos"}],
      "complete": bool,             # every planned episode is recorded
      "figures": {...},             # run figures (report_files.run_figures)
      "fingerprint": {"packages": {...}, "git_sha", "hardware": {...}, "id"},
      "worker_packages": [{...}],   # versions seen inside the env workers
      "warnings": [str],            # what makes the numbers less comparable (also in report.md)
      "started_at", "ended_at", "command", "invocations": [...],   # when and how (report_files.py)
      "error_summary": [{"error", "count", "episodes"}]            # errors by their first line
    }
    Stats = {"episodes", "successes", "failures", "errors", "retried", "success_rate", "ci95": [low, high],
             "mean_steps"}
    tasks[] also: "steps_distribution": {"min", "p25", "median", "p75", "max"} (env steps per episode)

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
# The [serving] settings summary.json's run.serving holds and the reports' header shows (spec.ServingSpec).
SERVING_SETTINGS = ("replicas", "max_batch", "max_wait_ms", "deterministic", "fixed_batch")


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
        return {"episodes": 0, "successes": 0, "failures": 0, "errors": 0, "retried": 0, "success_rate": 0.0,
                "ci95": [0.0, 1.0], "mean_steps": 0.0}
    k = int(frame["success"].sum())
    errors = int((frame["error"] != "").sum())
    low, high = wilson_interval(k, n)
    return {
        "episodes": n,
        "successes": k,
        "failures": n - k - int(((frame["error"] != "") & (frame["success"] == 0)).sum()),
        "errors": errors,
        "retried": int((frame["attempts"] > 1).sum()) if "attempts" in frame else 0,
        "success_rate": k / n,
        "ci95": [low, high],
        "mean_steps": float(frame["steps"].mean()),
    }


def episodes_frame(rows: Sequence[Mapping[str, str]]) -> pd.DataFrame:
    """Episode rows (as read from episodes.csv) as a typed DataFrame."""
    # None: the extra cells of a row appended under an older, shorter header (results.EPISODE_COLUMNS)
    frame = pd.DataFrame([{k: v for k, v in row.items() if k is not None} for row in rows])
    if frame.empty:
        return frame
    for col in ("task_id", "trial", "success", "steps", "queries", "attempts"):
        frame[col] = pd.to_numeric(frame[col]).astype(int)
    for col in ("wall_s", "reset_s", "policy_s", "queue_s", "model_s", "env_s"):
        frame[col] = pd.to_numeric(frame[col])
    for col in ("error", "video", "protocol", "started_at", "ended_at"):
        # columns recorded before they existed read as empty
        frame[col] = frame[col].fillna("").astype(str) if col in frame else ""
    return frame.sort_values(["suite", "task_id", "trial"]).reset_index(drop=True)


def task_videos(group: pd.DataFrame) -> list[str]:
    """Video paths (relative to the run directory) of a task's episodes, by trial."""
    if "video" not in group:
        return []
    return [v for v in group.sort_values("trial")["video"] if v]


def steps_distribution(steps: pd.Series) -> dict[str, float]:
    """Env steps per episode of a set of episodes: min, quartiles (linear interpolation), max."""
    q = steps.astype(float).quantile([0.0, 0.25, 0.5, 0.75, 1.0]).tolist()
    return dict(zip(("min", "p25", "median", "p75", "max"), q, strict=True))


def first_line(error: str) -> str:
    """The first line of an episode's error (its exception type and message, without the traceback)."""
    return error.strip().splitlines()[0] if error and error.strip() else ""


def outcome(success: int, error: str) -> str:
    """An episode's outcome: "success", "error" (raised and did not succeed) or "failure" (out of steps)."""
    return "success" if success else "error" if error else "failure"


def error_summary(frame: pd.DataFrame, examples: int = 5) -> list[dict[str, Any]]:
    """Errors grouped by their first line, most frequent first: {"error", "count", "episodes": [id, ...]}
    (the first `examples` episode ids)."""
    if frame.empty:
        return []
    failed = frame[frame["error"] != ""]
    groups: dict[str, list[str]] = {}
    for _, row in failed.iterrows():
        groups.setdefault(first_line(row["error"]), []).append(str(row["episode_id"]))
    return [{"error": line, "count": len(ids), "episodes": ids[:examples]}
            for line, ids in sorted(groups.items(), key=lambda item: -len(item[1]))]


def episode_table(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per episode, by suite, task and trial: what the reports' episode tables show."""
    if frame.empty:
        return []
    return [{"suite": r["suite"], "task_id": int(r["task_id"]), "task": r["task"], "trial": int(r["trial"]),
             "sweep_seed": r.get("sweep_seed"), "outcome": outcome(int(r["success"]), r["error"]),
             "steps": int(r["steps"]), "attempts": int(r["attempts"]), "error": first_line(r["error"]),
             "video": r["video"], "started_at": r["started_at"], "ended_at": r["ended_at"],
             "episode_id": r["episode_id"]}
            for _, r in frame.iterrows()]


def summarize(frame: pd.DataFrame, run: Mapping[str, Any], figures: Mapping[str, Any],
              fingerprint: Mapping[str, Any], worker_packages: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The summary.json document (shape in the module docstring)."""
    tasks = []
    suites: dict[str, Any] = {}
    if not frame.empty:
        for (suite, task_id), group in frame.groupby(["suite", "task_id"], sort=True):
            tasks.append({"suite": suite, "task_id": int(task_id), "task": group["task"].iloc[0],
                          **success_stats(group), "steps_distribution": steps_distribution(group["steps"]),
                          "videos": task_videos(group)})
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
        "error_summary": error_summary(frame),
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
        kinds = summary.get("error_summary") or []
        shown = "; ".join(f"{k['count']}x {k['error']}" for k in kinds[:3]) + ("; ..." if len(kinds) > 3 else "")
        warnings.append(f"{overall['errors']} episode(s) raised an error (counted as not successful; "
                        "see the error column of episodes.csv)" + (f": {shown}" if shown else ""))
    if overall.get("retried"):
        warnings.append(f"{overall['retried']} episode(s) were retried after their env worker died (attempts > 1 "
                        "in episodes.csv; the recorded result is the last attempt's)")
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


def video_link(video: str, prefix: str = "") -> str:
    """A Markdown link to one episode's video ("" without one)."""
    return f"[mp4]({prefix}{video})" if video else ""


def video_links(videos: Sequence[str], prefix: str = "") -> str:
    """Markdown links to a task's videos ("[0](videos/...mp4) [1](...)")."""
    return " ".join(f"[{i}]({prefix}{v})" for i, v in enumerate(videos))


EPISODE_ROWS_SHOWN = 300  # larger runs list only the episodes that did not succeed (all: episodes.csv)


def steps_text(dist: Mapping[str, float] | None) -> str:
    """A task's steps distribution as "min / median / max" ("-" when unknown)."""
    if not dist:
        return "-"
    return f"{dist['min']:.0f} / {dist['median']:.0f} / {dist['max']:.0f}"


def shown_episodes(episodes: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], str]:
    """The episodes an episode table lists and a note on what it leaves out ("" when nothing)."""
    if len(episodes) <= EPISODE_ROWS_SHOWN:
        return list(episodes), ""
    failed = [e for e in episodes if e["outcome"] != "success"]
    return failed, (f"{len(episodes)} episodes: only the {len(failed)} that did not succeed are listed "
                    "(all of them: episodes.csv)")


def when_line(summary: Mapping[str, Any]) -> str:
    """"started ... UTC, ended ... UTC" of a run ("" when not recorded)."""
    started, ended = summary.get("started_at"), summary.get("ended_at")
    if not started and not ended:
        return ""
    return f"started {started or '?'}, ended {ended or '?'} (UTC)"


def serving_line(run: Mapping[str, Any]) -> str:
    """The run's [serving] settings in TOML spelling ("" in summaries written before run.serving existed):
    "serving: replicas 2, max_batch 8, max_wait_ms 5.0, deterministic true, fixed_batch 1"."""
    serving = run.get("serving")
    if not serving:
        return ""
    if not serving.get("replicas"):  # then no setting of [serving] applies
        return "serving: replicas 0 (each env worker holds its own policy)"
    return "serving: " + ", ".join(f"{key} {str(value).lower() if isinstance(value, bool) else value}"
                                   for key, value in serving.items() if key in SERVING_SETTINGS)


def render_markdown(summary: Mapping[str, Any], episodes: Sequence[Mapping[str, Any]] = ()) -> str:
    """report.md: when and how, warnings, the per-task and per-suite tables with intervals, errors,
    the per-episode table (episodes: report.episode_table), run figures, fingerprint."""
    run, overall, fig, fp = summary["run"], summary["overall"], summary["figures"], summary["fingerprint"]
    lines = [
        f"# robofleet report: {run.get('name') or run.get('spec_hash')}",
        "",
        f"protocol `{run.get('protocol', 'robofleet')}`, policy `{run.get('policy')}`, planner "
        f"`{run.get('planner')}`, seed {run.get('seed')}, reset `{run.get('reset_mode')}`, "
        f"spec hash `{run.get('spec_hash')}`",
        "",
    ]
    if serving_line(run):
        lines += [serving_line(run), ""]
    if when_line(summary):
        lines += [when_line(summary), ""]
    if summary.get("command"):
        lines += [f"command: `{summary['command']}`", ""]
    for warning in summary.get("warnings", []):
        lines.append(f"> **Warning:** {warning}")
    if summary.get("warnings"):
        lines.append("")
    if overall.get("episodes"):
        with_videos = any(t.get("videos") for t in summary["tasks"])
        lines += [
            f"**Overall: {pct(overall['success_rate'])}% success** "
            f"({overall['successes']}/{overall['episodes']}, 95% CI {ci_text(overall['ci95'])}%, "
            f"{overall['errors']} errors, {overall.get('retried', 0)} retried)",
            "",
            "| suite | task | episodes | successes | success % | 95% CI | errors | retried | mean steps | "
            "steps min / median / max |" + (" videos |" if with_videos else ""),
            "|---|---|---:|---:|---:|---|---:|---:|---:|---:|" + ("---|" if with_videos else ""),
        ]
        for t in summary["tasks"]:
            lines.append(
                f"| {t['suite']} | {t['task_id']}: {t['task']} | {t['episodes']} | {t['successes']} | "
                f"{pct(t['success_rate'])} | {ci_text(t['ci95'])} | {t['errors']} | {t.get('retried', 0)} | "
                f"{t['mean_steps']:.0f} | {steps_text(t.get('steps_distribution'))} |"
                + (f" {video_links(t.get('videos', []))} |" if with_videos else "")
            )
        if len(summary["suites"]) > 1:
            lines += ["", "| suite | episodes | successes | success % | 95% CI | errors |", "|---|---:|---:|---:|---|---:|"]
            for suite, s in summary["suites"].items():
                lines.append(f"| {suite} | {s['episodes']} | {s['successes']} | {pct(s['success_rate'])} | "
                             f"{ci_text(s['ci95'])} | {s['errors']} |")
    else:
        lines.append("No episodes recorded yet.")
    if summary.get("error_summary"):
        lines += ["", "## Errors", "", "| episodes | error (first line; tracebacks: episodes.csv) | e.g. |",
                  "|---:|---|---|"]
        lines += [f"| {k['count']} | {md_cell(k['error'])} | {', '.join(k['episodes'][:3])} |"
                  for k in summary["error_summary"]]
    if episodes:
        listed, note = shown_episodes(episodes)
        lines += ["", "## Episodes", ""] + ([note, ""] if note else [])
        lines += ["| suite | task | trial | outcome | steps | attempts | started (UTC) | error | video |",
                  "|---|---|---:|---|---:|---:|---|---|---|"]
        lines += [f"| {e['suite']} | {e['task_id']}: {e['task']} | {e['trial']} | {e['outcome']} | {e['steps']} | "
                  f"{e['attempts']} | {e['started_at'] or '-'} | {md_cell(e['error'])} | "
                  f"{video_link(e['video'])} |"
                  for e in listed]
    if summary.get("invocations"):
        lines += ["", "## Invocations", ""]
        lines += [f"- {i.get('started_at')} to {i.get('ended_at')}: {i.get('episodes')} episodes"
                  + (f", `{i['command']}`" if i.get("command") else "") for i in summary["invocations"]]
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


def md_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, one line)."""
    return str(text or "").replace("|", "\\|").replace("\n", " ")
