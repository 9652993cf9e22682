"""Paired comparison of two runs: episodes matched by identity (same init state and seed), per-task
and overall success deltas, and an exact McNemar test on the discordant pairs.

    robofleet compare runs/object-scripted runs/object-cosmos [--json cmp.json]

Two runs of different policies or planners on the same spec pair up episode by episode: trial i
of a task starts from the suite's init state i in both, with the same episode seed. Pairing removes
the init-state variance that unpaired intervals carry, so a real difference shows with fewer
episodes. Only the discordant pairs (one run succeeded, the other did not) carry information; under
"no difference" each is equally likely to favour either run: p = binomtest(b_only, discordant, 0.5).

Errors (an exception in the episode) count as not successful, as in the reports. Per-task p-values
are not corrected for multiple comparisons.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from scipy.stats import binomtest

from robofleet.platform.errors import RobofleetError
from robofleet.platform.report import episodes_frame, fingerprint_differences, pct
from robofleet.platform.report_files import is_run_dir, is_sweep_dir, load_summary
from robofleet.platform.results import read_rows
from robofleet.platform.spec import load_spec

# An episode's identity across runs: (env family, suite, task, trial, sweep seed).
PAIR_KEYS = ("family", "suite", "task_id", "trial", "sweep_seed")
# Env settings that must agree for pairs to be like for like (the policy and planner may differ).
ENV_SETTINGS = ("image_size", "render_cameras", "reset", "max_steps")


class CompareError(RobofleetError):
    """The two directories cannot be compared (not run directories, or duplicate episodes)."""


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none).

    a_only: pairs where only run A succeeded; b_only: only run B succeeded.
    """
    n = a_only + b_only
    if n == 0:
        return 1.0
    return float(binomtest(b_only, n, 0.5, alternative="two-sided").pvalue)


def paired_stats(pairs: pd.DataFrame) -> dict[str, Any]:
    """Counts, rates, delta (B - A) and the McNemar p-value of paired rows (success_a, success_b)."""
    n = len(pairs)
    a = int(pairs["success_a"].sum()) if n else 0
    b = int(pairs["success_b"].sum()) if n else 0
    a_only = int(((pairs["success_a"] == 1) & (pairs["success_b"] == 0)).sum()) if n else 0
    b_only = int(((pairs["success_a"] == 0) & (pairs["success_b"] == 1)).sum()) if n else 0
    return {
        "paired": n, "successes_a": a, "successes_b": b,
        "success_rate_a": a / n if n else None, "success_rate_b": b / n if n else None,
        "delta": (b - a) / n if n else None, "a_only": a_only, "b_only": b_only,
        "both": int(((pairs["success_a"] == 1) & (pairs["success_b"] == 1)).sum()) if n else 0,
        "neither": n - a - b_only if n else 0,
        "mcnemar_p": mcnemar_exact(a_only, b_only),
    }


def _load(run_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        hint = " (a sweep directory: compare two of its runs, e.g. DIR/<run name>)" if is_sweep_dir(run_dir) else ""
        raise CompareError(f"{run_dir}: not a run directory (no spec.toml){hint}")
    frame = episodes_frame(read_rows(run_dir))
    spec = load_spec(run_dir / "spec.toml")
    summary = load_summary(run_dir) or {}
    info = {"dir": str(run_dir), "name": spec.name, "protocol": _recorded_protocol(frame, spec.protocol),
            "policy": spec.policy.name, "planner": spec.planner.name,
            "seed": spec.seed, "suite": spec.env.suite, "spec_hash": spec.identity_hash(),
            "episodes": len(frame), "errors": int((frame["error"] != "").sum()) if len(frame) else 0,
            "fingerprint_id": (summary.get("fingerprint") or {}).get("id"),
            "env": {k: getattr(spec.env, k) for k in ENV_SETTINGS}}
    if len(frame):
        dup = frame.duplicated(list(PAIR_KEYS))
        if dup.any():
            raise CompareError(f"{run_dir}: {int(dup.sum())} episodes share an identity {PAIR_KEYS}; not one run")
        frame = frame.assign(family=frame.get("family", "libero"), sweep_seed=pd.to_numeric(frame["sweep_seed"]))
    return frame, {"info": info, "fingerprint": summary.get("fingerprint") or {}}


def _recorded_protocol(frame: pd.DataFrame, declared: str) -> str:
    """The protocol the rows ran under: rows recorded before protocols existed ran robofleet's own
    (scenes and noise seeded per episode), whatever their spec.toml now reads as."""
    if len(frame) and ("protocol" not in frame or (frame["protocol"] == "").all()):
        return "robofleet"
    return declared


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict[str, Any]:
    """The comparison document (what --json writes):

    {"a": RunInfo, "b": RunInfo, "pair_keys": [...], "overall": PairedStats, "tasks": [{"suite", "task_id",
     "task", **PairedStats}], "unpaired": {"only_a", "only_b"}, "warnings": [str]}
    PairedStats = {"paired", "successes_a", "successes_b", "success_rate_a", "success_rate_b", "delta",
                   "a_only", "b_only", "both", "neither", "mcnemar_p"}  (delta = B - A, a rate difference)
    """
    fa, meta_a = _load(Path(run_a))
    fb, meta_b = _load(Path(run_b))
    pa, pb = meta_a["info"]["protocol"], meta_b["info"]["protocol"]
    if pa != pb:
        raise CompareError(f"{run_a} ran protocol {pa!r} and {run_b} protocol {pb!r}: their episodes start from "
                           "different scenes and noise, so they do not pair; re-run one of them with "
                           f"`protocol = \"{pa}\"` (platform/protocol.py)")
    keys = list(PAIR_KEYS)
    cols = [*keys, "task", "success"]
    left = fa[cols] if len(fa) else pd.DataFrame(columns=cols)
    right = fb[cols] if len(fb) else pd.DataFrame(columns=cols)
    merged = left.merge(right, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    pairs = merged[merged["_merge"] == "both"].copy()
    for col in ("success_a", "success_b"):
        pairs[col] = pairs[col].astype(int)
    pairs["task"] = pairs["task_a"].fillna(pairs["task_b"])
    tasks = []
    for (suite, task_id), group in pairs.groupby(["suite", "task_id"], sort=True):
        tasks.append({"suite": suite, "task_id": int(task_id), "task": group["task"].iloc[0], **paired_stats(group)})
    only_a = int((merged["_merge"] == "left_only").sum())
    only_b = int((merged["_merge"] == "right_only").sum())
    warnings = _warnings(meta_a, meta_b, len(pairs), only_a, only_b)
    if Path(run_a).resolve() == Path(run_b).resolve():
        warnings.insert(0, "A and B are the same run directory: every pair agrees by construction")
    elif meta_a["info"]["spec_hash"] == meta_b["info"]["spec_hash"]:
        warnings.insert(0, f"A and B ran the same spec (spec hash {meta_a['info']['spec_hash']}: same policy, "
                           "planner, seed and env): differences are run-to-run nondeterminism, not a change")
    return {"a": meta_a["info"], "b": meta_b["info"], "pair_keys": keys, "overall": paired_stats(pairs),
            "tasks": tasks, "unpaired": {"only_a": only_a, "only_b": only_b}, "warnings": warnings}


def _warnings(meta_a: Mapping[str, Any], meta_b: Mapping[str, Any], paired: int, only_a: int, only_b: int) -> list[str]:
    a, b = meta_a["info"], meta_b["info"]
    warnings = []
    if not paired:
        warnings.append("no episode could be paired: the runs share no (suite, task, trial, seed)")
    if only_a or only_b:
        warnings.append(f"{only_a} episodes only in A and {only_b} only in B were left out (incomplete runs, "
                        "or different tasks/trials/seeds)")
    cameras_both = a["env"]["render_cameras"] and b["env"]["render_cameras"]
    # Without rendered cameras image_size shapes nothing a policy sees.
    env_diff = [f"{k} {a['env'][k]!r} vs {b['env'][k]!r}" for k in ENV_SETTINGS
                if a["env"][k] != b["env"][k] and (k != "image_size" or cameras_both)]
    if env_diff:
        warnings.append("the runs' env settings differ (pairs are not like for like): " + ", ".join(env_diff))
    diff = fingerprint_differences({"A": meta_a["fingerprint"], "B": meta_b["fingerprint"]})
    if diff:
        warnings.append("the runs were produced by different software/hardware: "
                        + "; ".join(f"{k} {v.get('A')} vs {v.get('B')}" for k, v in diff.items()))
    if a["errors"] or b["errors"]:
        warnings.append(f"episodes with errors (counted as not successful): A {a['errors']}, B {b['errors']}")
    return warnings


def _p(p: float) -> str:
    return "1" if p >= 0.9995 else f"{p:.3g}"


def _delta(d: float | None) -> str:
    return "-" if d is None else f"{100 * d:+.1f}"


def render_comparison(cmp: Mapping[str, Any]) -> str:
    """The comparison as Markdown (what `robofleet compare` prints)."""
    a, b, o = cmp["a"], cmp["b"], cmp["overall"]
    lines = [f"# robofleet compare: A = {a['name'] or a['dir']} vs B = {b['name'] or b['dir']}", "",
             f"- A: `{a['dir']}` (policy `{a['policy']}`, planner `{a['planner']}`, seed {a['seed']}, {a['episodes']} episodes)",
             f"- B: `{b['dir']}` (policy `{b['policy']}`, planner `{b['planner']}`, seed {b['seed']}, {b['episodes']} episodes)",
             f"- paired by {', '.join(cmp['pair_keys'])}; unpaired: {cmp['unpaired']['only_a']} only in A, "
             f"{cmp['unpaired']['only_b']} only in B", ""]
    lines += [f"> **Warning:** {w}" for w in cmp["warnings"]]
    if cmp["warnings"]:
        lines.append("")
    if o["paired"]:
        lines += [f"**Overall ({o['paired']} paired episodes): A {pct(o['success_rate_a'])}% ({o['successes_a']}), "
                  f"B {pct(o['success_rate_b'])}% ({o['successes_b']}), delta B - A {_delta(o['delta'])} pp; "
                  f"discordant pairs: {o['a_only']} only A succeeded, {o['b_only']} only B; "
                  f"exact McNemar p = {_p(o['mcnemar_p'])}**", ""]
        lines += ["| suite | task | paired | A % | B % | delta (pp) | only A | only B | McNemar p |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for t in cmp["tasks"]:
            lines.append(f"| {t['suite']} | {t['task_id']}: {t['task']} | {t['paired']} | {pct(t['success_rate_a'])} | "
                         f"{pct(t['success_rate_b'])} | {_delta(t['delta'])} | {t['a_only']} | {t['b_only']} | "
                         f"{_p(t['mcnemar_p'])} |")
        lines += ["", "Per-task p-values are not corrected for multiple comparisons."]
    return "\n".join(lines) + "\n"
