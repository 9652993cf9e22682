"""The combined report of several runs (a sweep's grid points, or any run directories): per run, per
configuration across seeds (mean and std), per task, and a warning when the runs' software differs.

Sweep summary.json shape (docs/summary_json.md has every field):
    {
      "schema_version": 2, "kind": "sweep",
      "sweep": {"name", "description", "runs", "episodes_planned", "episodes_recorded", "duplicate_episodes",
                "status_counts"},
      "points": [{"name", "dir", "config", "seed", "policy", "planner", "family", "suite", "spec_hash", "status",
                  "episodes_planned", "overall": Stats, "suites": {...}, "fingerprint_id", "git_sha",
                  "worker_packages": [{package: version}], "warnings", "duplicate_episodes", "duplicate_of"}],
      "configs": [{"config", "label", "parameters", "points", "seeds", "n_seeds",
                   "per_seed": [{"seed", "point", "points", "success_rate", "episodes"}],
                   "success_rate_mean", "success_rate_std", "pooled": Stats,
                   "tasks": [{"suite", "task_id", "task", "n_seeds", "success_rate_mean", "success_rate_std", "pooled": Stats}]}],
      "differing_parameters": [dotted key],
      "tasks": [{"point", "config", "seed", "suite", "task_id", "task", **Stats, "videos"}],
      "fingerprints": {id: fingerprint}, "fingerprint_differences": {field: {point: value}},
      "failed_points": {point: error}, "warnings": [str]
    }

Duplicates: two runs of one configuration (same spec but the name) and seed hold the same episodes
(EPISODE_IDENTITY). Their episodes are counted once, from the run given first (a point's own
`overall` still counts all of its rows), and a warning names both runs; `robofleet report RUN RUN_COPY`
therefore gives one seed, not two.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import pandas as pd

from robofleet.platform.report import (
    SCHEMA_VERSION, ci_text, distinct_packages, fingerprint_differences, fingerprint_lines, mean_std, pct,
    success_stats, video_links, worker_packages_markdown,
)
from robofleet.platform.spec import RunSpec

STATUSES = ("complete", "partial", "failed", "not started")
# What makes two rows the same episode (platform/episodes.py): the same results, whatever run holds them.
EPISODE_IDENTITY = ("family", "suite", "task_id", "trial", "sweep_seed", "protocol")


def config_key(spec: RunSpec) -> str:
    """Identity of a run's configuration: its spec hash with the seed left out (seeds of one
    configuration share it)."""
    return replace(spec, seed=0, name="").identity_hash()


@dataclass(frozen=True)
class LoadedRun:
    """One run of a combined report, as loaded from its directory.

    name: its label in the tables. dir: its directory relative to the report (for links).
    summary: its run summary (None: not started). frame: its episode rows (episodes_frame).
    """

    name: str
    dir: str
    spec: RunSpec
    config: str
    summary: Mapping[str, Any] | None
    frame: pd.DataFrame
    error: str | None = None  # the driver's error when this run failed


def _status(run: LoadedRun, planned: int) -> str:
    recorded = len(run.frame)
    if recorded >= planned:
        return "complete"
    if run.error:
        return "failed"
    return "partial" if recorded else "not started"


def _disambiguate(runs: Sequence[LoadedRun]) -> dict[str, str]:
    """run name -> configuration label; one label per configuration key, unique."""
    labels: dict[str, str] = {}
    by_key: dict[str, str] = {}
    used: dict[str, str] = {}
    for run in runs:
        key = config_key(run.spec)
        if key not in by_key:
            label = run.config
            if label in used and used[label] != key:
                label = f"{label}#{key[:6]}"
            by_key[key] = label
            used[label] = key
        labels[run.name] = by_key[key]
    return labels


def spec_parameters(spec: RunSpec) -> dict[str, Any]:
    """A spec's configuration as dotted keys in TOML spelling ("env.suite", "policy.name",
    "policy.scale": policy and planner options sit in their tables); seed, name and [run] left out."""
    data = spec.to_dict()
    for key in ("seed", "name", "run"):
        data.pop(key, None)
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(prefix if k == "options" else f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = list(value) if isinstance(value, tuple) else value

    walk("", data)
    return flat


def differing_parameters(specs: Mapping[str, RunSpec]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The dotted keys whose values differ between the labelled specs, and label -> {key: value}
    (None: the key is absent in that spec)."""
    params = {label: spec_parameters(spec) for label, spec in specs.items()}
    keys = list(dict.fromkeys(k for p in params.values() for k in p))
    differ = [k for k in keys if len({repr(p.get(k)) for p in params.values()}) > 1]
    return differ, {label: {k: p.get(k) for k in differ} for label, p in params.items()}


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    return "none" if value is None else str(value)


def parameter_label(spec: RunSpec, differing: Mapping[str, Any]) -> str:
    """A configuration's name from what sets it apart: "noisy(scale=0.3)", "zero, suite=libero_spatial",
    "best_of_n(n=4)". differing: its values of the keys that differ between configurations."""
    parts = []
    for table, name in (("policy", spec.policy.name), ("planner", spec.planner.name)):
        keys = [k for k in differing if k.startswith(f"{table}.")]
        if keys:
            args = ", ".join(f"{k.split('.', 1)[1]}={_value_text(differing[k])}" for k in keys if k != f"{table}.name")
            parts.append(f"{name}({args})" if args else name)
    parts += [f"{k.rsplit('.', 1)[-1]}={_value_text(v)}" for k, v in differing.items()
              if not k.startswith(("policy.", "planner."))]
    return ", ".join(parts)


def _deduplicate(runs: Sequence[LoadedRun], configs_of: Mapping[str, str]) -> tuple[dict[str, pd.DataFrame],
                                                                                    dict[str, dict[str, int]]]:
    """Each run's rows minus the episodes an earlier run of its configuration already holds, and
    run -> {earlier run: episodes repeated}."""
    frames: dict[str, pd.DataFrame] = {}
    repeats: dict[str, dict[str, int]] = {}
    owner: dict[tuple[str, tuple], str] = {}  # (config, episode identity) -> the run that holds it first
    for run in runs:
        frame = run.frame
        if not len(frame):
            frames[run.name] = frame
            continue
        keys = [(configs_of[run.name], tuple(str(v) for v in row))
                for row in frame.reindex(columns=list(EPISODE_IDENTITY)).fillna("").itertuples(index=False)]
        keep = []
        for key in keys:
            first = owner.setdefault(key, run.name)
            keep.append(first == run.name)
            if first != run.name:
                repeats.setdefault(run.name, {}).setdefault(first, 0)
                repeats[run.name][first] += 1
        frames[run.name] = frame[keep].reset_index(drop=True)
    return frames, repeats


def combine_runs(name: str, runs: Sequence[LoadedRun], description: str = "") -> dict[str, Any]:
    """The combined summary document (shape in the module docstring)."""
    configs_of = _disambiguate(runs)
    unique, repeats = _deduplicate(runs, configs_of)
    points = [_point(run, configs_of[run.name], repeats.get(run.name, {})) for run in runs]
    tasks = [{"point": run.name, "config": configs_of[run.name], "seed": run.spec.seed, **t}
             for run in runs for t in (run.summary or {}).get("tasks", [])]
    warnings = [w for run in runs for w in _point_warnings(run, repeats.get(run.name, {}))]

    labels = list(dict.fromkeys(configs_of.values()))
    first_spec = {label: next(r.spec for r in runs if configs_of[r.name] == label) for label in labels}
    differ, parameters = differing_parameters(first_spec)
    configs = []
    for label in labels:
        members = [r for r in runs if configs_of[r.name] == label]
        configs.append(_config(label, members, unique, first_spec[label], parameters[label]))
        warnings += _incomplete_mean_warning(label, members, configs[-1]["n_seeds"])

    fingerprints, fp_by_point = _fingerprints(runs)
    diff = fingerprint_differences(fp_by_point)
    failed = {run.name: run.error for run in runs if run.error}
    counts = {s: sum(p["status"] == s for p in points) for s in STATUSES}
    warnings = (_software_warning(diff) + warnings + _worker_package_warnings(points)
                + _status_warnings(counts, failed))
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "sweep",
        "sweep": {"name": name, "description": description, "runs": len(points),
                  "episodes_planned": sum(p["episodes_planned"] for p in points),
                  "episodes_recorded": sum(p["overall"]["episodes"] for p in points),
                  "duplicate_episodes": sum(p["duplicate_episodes"] for p in points), "status_counts": counts},
        "points": points,
        "configs": configs,
        "differing_parameters": differ,
        "tasks": tasks,
        "fingerprints": fingerprints,
        "fingerprint_differences": diff,
        "failed_points": failed,
        "warnings": warnings,
    }


def _planned(spec: RunSpec) -> int:
    """Episodes a run's spec asks for."""
    return len(spec.env.tasks) * spec.env.trials


def _point(run: LoadedRun, config: str, repeats: Mapping[str, int]) -> dict[str, Any]:
    """A run's entry of `points`. repeats: earlier run -> episodes of this run it already holds."""
    planned = _planned(run.spec)
    summary = run.summary or {}
    fp = summary.get("fingerprint") or {}
    return {
        "name": run.name, "dir": run.dir, "config": config, "seed": run.spec.seed,
        "policy": run.spec.policy.name, "planner": run.spec.planner.name, "family": run.spec.env.family,
        "suite": run.spec.env.suite,
        "spec_hash": run.spec.identity_hash(), "status": _status(run, planned), "episodes_planned": planned,
        "overall": success_stats(run.frame), "suites": summary.get("suites", {}),
        "fingerprint_id": fp.get("id"), "git_sha": fp.get("git_sha"),
        # the env workers' own environments (a robosuite-1.5 family's differ from the driver's fingerprint)
        "worker_packages": list(summary.get("worker_packages", [])),
        "warnings": list(summary.get("warnings", [])),
        "duplicate_episodes": sum(repeats.values()),
        "duplicate_of": list(repeats),
    }


def _point_warnings(run: LoadedRun, repeats: Mapping[str, int]) -> list[str]:
    """A run's repeated episodes, then its own summary's warnings, each prefixed with the run's name."""
    warnings = [f"{run.name}: {n} of its {len(run.frame)} episodes repeat {other}'s (same configuration, "
                "seed and episodes: family, suite, task, trial, seed, protocol); counted once, from "
                f"{other}" for other, n in repeats.items()]
    return warnings + [f"{run.name}: {w}" for w in (run.summary or {}).get("warnings", [])
                       if not w.startswith("incomplete")]  # the status column says it


def _config(label: str, members: Sequence[LoadedRun], unique: Mapping[str, pd.DataFrame], spec: RunSpec,
            parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration's entry of `configs`: its runs, per-seed rates and their mean, pooled and per-task
    stats, over each run's deduplicated rows (`unique`)."""
    started = [r for r in members if len(r.frame)]
    frame = pd.concat([unique[r.name] for r in started], ignore_index=True) if started else pd.DataFrame()
    per_seed = _per_seed(started, unique)
    mean, std = mean_std(p["success_rate"] for p in per_seed)
    return {
        "config": label, "label": parameter_label(spec, parameters) or label,
        "parameters": parameters,
        "points": [r.name for r in members], "seeds": sorted({r.spec.seed for r in started}),
        "n_seeds": len(per_seed), "per_seed": per_seed, "success_rate_mean": mean, "success_rate_std": std,
        "pooled": success_stats(frame), "tasks": _config_tasks(frame) if started else [],
    }


def _per_seed(started: Sequence[LoadedRun], unique: Mapping[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """One entry per seed; the runs of one seed count as one, their duplicate episodes once."""
    per_seed = []
    for seed in dict.fromkeys(r.spec.seed for r in started):
        of_seed = [r for r in started if r.spec.seed == seed]
        rows = pd.concat([unique[r.name] for r in of_seed], ignore_index=True)
        per_seed.append({"seed": seed, "point": of_seed[0].name, "points": [r.name for r in of_seed],
                         "success_rate": success_stats(rows)["success_rate"], "episodes": len(rows)})
    return per_seed


def _config_tasks(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per task of a configuration's rows: the mean and std of its per-seed rates, and pooled stats."""
    rows = []
    for (suite, task_id), group in frame.groupby(["suite", "task_id"], sort=True):
        rates = [success_stats(g)["success_rate"] for _, g in group.groupby("sweep_seed", sort=True)]
        mean, std = mean_std(rates)
        rows.append({"suite": suite, "task_id": int(task_id), "task": group["task"].iloc[0], "n_seeds": len(rates),
                     "success_rate_mean": mean, "success_rate_std": std, "pooled": success_stats(group)})
    return rows


def _incomplete_mean_warning(label: str, members: Sequence[LoadedRun], n_seeds: int) -> list[str]:
    """A warning when a mean over several seeds includes runs that did not finish."""
    incomplete = [r.name for r in members if len(r.frame) and len(r.frame) < _planned(r.spec)]
    if incomplete and n_seeds > 1:
        return [f"{label}: the mean over seeds includes incomplete runs ({', '.join(incomplete)})"]
    return []


def _fingerprints(runs: Sequence[LoadedRun]) -> tuple[dict[str, Mapping[str, Any]], dict[str, Mapping[str, Any]]]:
    """Distinct fingerprints by id, and run -> fingerprint, of the runs that recorded episodes."""
    fingerprints: dict[str, Mapping[str, Any]] = {}
    by_point: dict[str, Mapping[str, Any]] = {}
    for run in runs:
        fp = (run.summary or {}).get("fingerprint") or {}
        if fp and len(run.frame):
            fingerprints.setdefault(str(fp.get("id")), fp)
            by_point[run.name] = fp
    return fingerprints, by_point


def _software_warning(diff: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The warning (first of all) when the runs' fingerprints differ: field and its values."""
    if not diff:
        return []
    return ["runs in this report were produced by different software/hardware: "
            + "; ".join(f"{field} " + ", ".join(sorted({str(v) for v in values.values()}))
                        for field, values in diff.items())]


def _status_warnings(counts: Mapping[str, int], failed: Mapping[str, str | None]) -> list[str]:
    """How many runs are partial or not started, and each failed run's first error line."""
    warnings = []
    if counts["not started"] or counts["partial"]:
        warnings.append(f"{counts['partial']} runs partial and {counts['not started']} not started "
                        "(re-run the same command to resume)")
    for run_name, error in failed.items():
        warnings.append(f"{run_name} failed: {error.splitlines()[0] if error else ''}")
    return warnings


def _worker_package_warnings(points: Sequence[Mapping[str, Any]]) -> list[str]:
    """A warning per env family whose runs' env workers ran different package versions (families
    differ on purpose: LIBERO's workers have robosuite 1.4, the robosuite family's 1.5)."""
    warnings = []
    for family in dict.fromkeys(p["family"] for p in points):
        sets = distinct_packages([w for p in points if p["family"] == family for w in p["worker_packages"]])
        if len(sets) > 1:
            differ = [k for k in dict.fromkeys(k for w in sets for k in w) if len({str(w.get(k)) for w in sets}) > 1]
            warnings.append(f"env workers of the {family} runs ran different package versions "
                            f"({', '.join(differ)}; see the env worker packages table)")
    return warnings


def worker_package_rows(summary: Mapping[str, Any]) -> list[tuple[list[str], Mapping[str, Any]]]:
    """([run, family], packages) per distinct env worker environment of each run; runs with none recorded
    get an empty packages mapping."""
    rows = []
    for p in summary["points"]:
        for packages in distinct_packages(p.get("worker_packages", [])) or [{}]:
            rows.append(([p["name"], p.get("family", "")], packages))
    return rows


def config_name(config: Mapping[str, Any]) -> str:
    """A configuration as the reports name it: its parameter label ("noisy(scale=0.3)"), with the
    points' configuration name when that says something else."""
    label = config.get("label") or config["config"]
    return label if label == config["config"] else f"{label} [{config['config']}]"


def value_text(value: Any) -> str:
    """A parameter value in a table ("none": absent in that configuration's spec)."""
    return _value_text(value)


def render_sweep_markdown(summary: Mapping[str, Any]) -> str:
    """report.md of a sweep: warnings, configurations across seeds, runs, tasks, fingerprints."""
    from robofleet.platform.report_html import sweep_line, task_cell, task_index

    sweep = summary["sweep"]
    lines = [f"# robofleet sweep report: {sweep['name']}", ""]
    if sweep.get("description"):
        lines += [sweep["description"], ""]
    lines += [sweep_line(summary), ""]
    if summary["warnings"]:
        lines += [f"> **Warning:** {w}" for w in summary["warnings"]] + [""]
    if summary.get("differing_parameters"):
        keys = summary["differing_parameters"]
        lines += ["## What differs between configurations", "",
                  "| configuration | runs | " + " | ".join(f"`{k}`" for k in keys) + " |",
                  "|---|---|" + "---|" * len(keys)]
        lines += [f"| {config_name(c)} | {', '.join(c['points'])} | "
                  + " | ".join(value_text(c.get("parameters", {}).get(k)) for k in keys) + " |"
                  for c in summary["configs"]]
        lines.append("")
    lines += ["## Configurations across seeds", "",
              "| configuration | seeds | mean success % | std (pp) | pooled | pooled % | pooled 95% CI |",
              "|---|---|---:|---:|---:|---:|---|"]
    for c in summary["configs"]:
        pooled = c["pooled"]
        lines.append(f"| {config_name(c)} | {', '.join(map(str, c['seeds'])) or '-'} | {pct(c['success_rate_mean'])} | "
                     f"{pct(c['success_rate_std'])} | {pooled['successes']}/{pooled['episodes']} | "
                     f"{pct(pooled['success_rate'])} | {ci_text(pooled['ci95'])} |")
    lines += ["", "## Runs", "",
              "| run | seed | policy | planner | suite | episodes | success % | 95% CI | errors | status | fingerprint |",
              "|---|---:|---|---|---|---:|---:|---|---:|---|---|"]
    for p in summary["points"]:
        o = p["overall"]
        lines.append(f"| [{p['name']}]({p['dir']}/report.md) | {p['seed']} | {p['policy']} | {p['planner']} | {p['suite']} | "
                     f"{o['episodes']}/{p['episodes_planned']} | {pct(o['success_rate']) if o['episodes'] else '-'} | "
                     f"{ci_text(o['ci95']) if o['episodes'] else '-'} | {o['errors']} | {p['status']} | "
                     f"`{p.get('fingerprint_id') or '-'}` |")
    configs = [c["config"] for c in summary["configs"]]
    index = task_index(summary)
    if index:
        names = [config_name(c) for c in summary["configs"]]
        lines += ["", "## Tasks", "", "success %: mean ± std over seeds, or rate [95% CI] with one seed", "",
                  "| suite | task | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(configs)]
        for (suite, task_id), task in index.items():
            cells = [task_cell(task["configs"][c]) if c in task["configs"] else "" for c in configs]
            lines.append(f"| {suite} | {task_id}: {task['task']} | " + " | ".join(cells) + " |")
        videos = [(key, v) for key, t in index.items() for v in t["videos"]]
        if videos:
            lines += ["", "## Videos", ""]
            for (suite, task_id), (point, directory, paths) in videos:
                lines.append(f"- {suite} task {task_id}, {point}: {video_links(paths, prefix=directory + '/')}")
    lines += ["", "## Env worker packages", "",
              "Each env family's workers run in its own Python environment (the driver's fingerprint is below); "
              "`none`: not installed there, or not recorded.", ""]
    lines += worker_packages_markdown(worker_package_rows(summary), ["run", "family"])
    fps = summary.get("fingerprints", {})
    lines += ["", "## Software and hardware", ""]
    if len(fps) == 1:
        lines += fingerprint_lines(next(iter(fps.values())))
    elif fps:
        for fid, fp in fps.items():
            users = [p["name"] for p in summary["points"] if p.get("fingerprint_id") == fid]
            lines += [f"### `{fid}` ({', '.join(users)})", ""] + fingerprint_lines(fp) + [""]
    else:
        lines.append("No run has recorded a fingerprint yet.")
    return "\n".join(lines) + "\n"

