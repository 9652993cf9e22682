"""report.html of a run or a sweep: the Markdown report's tables, plots embedded as PNG, the rollout
videos embedded as <video> players, the per-episode table.

One self-contained file for the tables and plots (plots are base64 data URIs); videos are relative
links into the run directory (players and links), so the page plays them when opened beside it.
"""
from __future__ import annotations

import base64
import html
from typing import Any, Mapping, Sequence

from robofleet.platform.report import (
    WORKER_PACKAGES, ci_text, distinct_packages, figure_text, fingerprint_fields, pct, serving_line, shown_episodes,
    steps_text, when_line, worker_package_cells,
)
from robofleet.platform.report_sweep import config_name, value_text, worker_package_rows

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1b1f24;max-width:1400px}
h1{font-size:22px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px} th,td{border:1px solid #d0d7de;padding:4px 8px}
th{background:#f6f8fa;text-align:left} td.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;margin:6px 0;border-radius:4px}
.meta{color:#57606a} img{max-width:100%;border:1px solid #d0d7de} code{background:#f6f8fa;padding:0 3px}
td.success{color:#1a7f37;font-weight:600} td.failure{color:#cf222e;font-weight:600} td.error{color:#9a6700;font-weight:600}
.videos{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0;font-size:12px} video{max-width:360px;border:1px solid #d0d7de}
details summary{cursor:pointer;margin:6px 0}
"""


class Raw(str):
    """Text that is already HTML (not escaped again)."""


def esc(value: Any) -> str:
    """A table cell or text as escaped HTML (Raw passes through)."""
    if isinstance(value, Raw):
        return value
    return html.escape("" if value is None else str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = (),
          classes: Mapping[int, Mapping[str, str]] | None = None, css_class: str = "") -> str:
    """An HTML table; columns whose index is in `numeric` are right-aligned; classes: column index ->
    {cell text: CSS class} (e.g. an outcome column coloured by its value)."""
    classes = classes or {}

    def cell(i: int, c: Any) -> str:
        css = " ".join(filter(None, ["n" if i in numeric else "", classes.get(i, {}).get(str(c), "")]))
        return f'<td class="{css}">{esc(c)}</td>' if css else f"<td>{esc(c)}</td>"

    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    attr = f' class="{esc(css_class)}"' if css_class else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


OUTCOME_CLASSES = {"success": "success", "failure": "failure", "error": "error"}


def video_player(src: str, caption: str) -> str:
    """An embedded player of one rollout video (relative `src`), with a caption and a download link."""
    return (f'<figure><video controls preload="metadata" src="{esc(src)}"></video>'
            f'<figcaption>{esc(caption)} (<a href="{esc(src)}">mp4</a>)</figcaption></figure>')


def episodes_html(episodes: Sequence[Mapping[str, Any]]) -> list[str]:
    """The "Videos" section (a player per episode with a video) and the per-episode table."""
    sections = []
    with_video = [e for e in episodes if e.get("video")]
    if with_video:
        players = [video_player(e["video"], f"{e['suite']} task {e['task_id']}: {e['task']}, trial {e['trial']}, "
                                            f"{e['outcome']}, {e['steps']} steps") for e in with_video]
        sections += ["<h2>Videos</h2>", f'<div class="videos">{"".join(players)}</div>']
    if episodes:
        listed, note = shown_episodes(episodes)
        rows = [[e["suite"], f"{e['task_id']}: {e['task']}", e["trial"], e["outcome"], e["steps"], e["attempts"],
                 e["started_at"] or "-", e["ended_at"] or "-", e["error"],
                 Raw(f'<a href="{esc(e["video"])}">mp4</a>') if e["video"] else ""] for e in listed]
        not_ok = sum(e["outcome"] != "success" for e in episodes)
        body = table(["suite", "task", "trial", "outcome", "steps", "attempts", "started (UTC)", "ended (UTC)",
                      "error (first line)", "video"], rows, numeric=(2, 4, 5), classes={3: OUTCOME_CLASSES},
                     css_class="episodes")
        sections += [f"<h2>Episodes ({not_ok} of {len(episodes)} did not succeed)</h2>",
                     f"<p>{esc(note)}</p>" if note else "", body]
    return sections


def png_img(png: bytes, alt: str) -> str:
    """An <img> with the PNG embedded as a data URI."""
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def video_links(videos: Sequence[str], prefix: str = "") -> Raw:
    """Links to a task's videos, labelled by trial order."""
    return Raw(" ".join(f'<a href="{esc(prefix + v)}">{i}</a>' for i, v in enumerate(videos)))


def page(title: str, sections: Sequence[str]) -> str:
    """A complete HTML document."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n")


def warnings_html(warnings: Sequence[str]) -> str:
    return "".join(f'<div class="warn"><b>Warning:</b> {esc(w)}</div>' for w in warnings)


def fingerprint_table(fingerprints: Mapping[str, Mapping[str, Any]], spec_hashes: Mapping[str, str] | None = None) -> str:
    """Fingerprint fields (rows) by labelled fingerprint (columns); differing rows are marked."""
    labels = list(fingerprints)
    fields = {label: fingerprint_fields(fp) for label, fp in fingerprints.items()}
    rows = [["fingerprint id", *[fingerprints[lab].get("id") for lab in labels]]]
    names = list(next(iter(fields.values()))) if fields else []
    for name in names:
        values = [fields[lab][name] for lab in labels]
        marker = " (differs)" if len({repr(v) for v in values}) > 1 else ""
        rows.append([name + marker, *[v if v is not None else "none" for v in values]])
    if spec_hashes:
        rows.append(["spec hash", *[spec_hashes.get(lab, "") for lab in labels]])
    return table(["", *labels], rows)


def render_run_html(summary: Mapping[str, Any], plot_png: bytes | None, episodes: Sequence[Mapping[str, Any]] = (),
                    steps_png: bytes | None = None) -> str:
    """report.html of one run directory (from its summary.json document; episodes: report.episode_table;
    steps_png: the episode-length plot)."""
    run, overall = summary["run"], summary["overall"]
    title = f"robofleet report: {run.get('name') or run.get('spec_hash')}"
    sections = [f"<h1>{esc(title)}</h1>",
                f'<p class="meta">protocol <code>{esc(run.get("protocol", "robofleet"))}</code>, policy '
                f'<code>{esc(run.get("policy"))}</code>, planner <code>{esc(run.get("planner"))}</code>, '
                f'seed {esc(run.get("seed"))}, reset <code>{esc(run.get("reset_mode"))}</code>, '
                f'spec hash <code>{esc(run.get("spec_hash"))}</code></p>']
    if serving_line(run):
        sections.append(f'<p class="meta">{esc(serving_line(run))}</p>')
    if when_line(summary):
        sections.append(f'<p class="meta">{esc(when_line(summary))}</p>')
    if summary.get("command"):
        sections.append(f'<p class="meta">command: <code>{esc(summary["command"])}</code></p>')
    sections.append(warnings_html(summary.get("warnings", [])))
    if overall.get("episodes"):
        sections.append(f"<p><b>Overall: {pct(overall['success_rate'])}% success</b> ({overall['successes']}/"
                        f"{overall['episodes']}, 95% CI {ci_text(overall['ci95'])}%, {overall['errors']} errors, "
                        f"{overall.get('retried', 0)} retried)</p>")
        if plot_png:
            sections.append(png_img(plot_png, "success rate per task with 95% Wilson intervals"))
        rows = [[t["suite"], f"{t['task_id']}: {t['task']}", t["episodes"], t["successes"], pct(t["success_rate"]),
                 ci_text(t["ci95"]), t["errors"], t.get("retried", 0), f"{t['mean_steps']:.0f}",
                 steps_text(t.get("steps_distribution")), video_links(t.get("videos", []))]
                for t in summary["tasks"]]
        sections += ["<h2>Tasks</h2>",
                     table(["suite", "task", "episodes", "successes", "success %", "95% CI", "errors", "retried",
                            "mean steps", "steps min / median / max", "videos"], rows, numeric=(2, 3, 4, 6, 7, 8, 9))]
        if steps_png:
            sections += ["<h2>Episode lengths</h2>", png_img(steps_png, "env steps per episode by task and outcome")]
        rows = [[suite, s["episodes"], s["successes"], pct(s["success_rate"]), ci_text(s["ci95"]), s["errors"]]
                for suite, s in summary["suites"].items()]
        sections += ["<h2>Suites</h2>", table(["suite", "episodes", "successes", "success %", "95% CI", "errors"],
                                              rows, numeric=(1, 2, 3, 5))]
    else:
        sections.append("<p>No episodes recorded yet.</p>")
    if summary.get("error_summary"):
        rows = [[k["count"], k["error"], ", ".join(k["episodes"][:3])] for k in summary["error_summary"]]
        sections += ["<h2>Errors</h2>", table(["episodes", "error (first line; tracebacks: episodes.csv)", "e.g."],
                                              rows, numeric=(0,))]
    sections += episodes_html(episodes)
    if summary.get("invocations"):
        rows = [[i.get("started_at"), i.get("ended_at"), i.get("episodes"), figure_text(i.get("wall_s")),
                 Raw(f"<code>{esc(i['command'])}</code>") if i.get("command") else "-"]
                for i in summary["invocations"]]
        sections += ["<h2>Invocations</h2>", table(["started (UTC)", "ended (UTC)", "episodes", "wall s", "command"],
                                                   rows, numeric=(2, 3))]
    figures = [[k, figure_text(v)] for k, v in summary.get("figures", {}).items()]
    sections += ["<h2>Run figures</h2>", table(["figure", "value"], figures)]
    sections += ["<h2>Software and hardware</h2>",
                 fingerprint_table({"this run": summary["fingerprint"]}, {"this run": run.get("spec_hash", "")})]
    workers = distinct_packages(summary.get("worker_packages", []))
    if workers:
        sections += ["<h3>Env workers (their own Python environments)</h3>",
                     table(["suite", *WORKER_PACKAGES], [[run.get("suite"), *worker_package_cells(w)] for w in workers])]
    return page(title, sections)


def render_sweep_html(summary: Mapping[str, Any], plot_png: bytes | None) -> str:
    """report.html of a sweep (or any combination of runs) from its summary.json document."""
    sweep = summary["sweep"]
    title = f"robofleet sweep report: {sweep['name']}"
    sections = [f"<h1>{esc(title)}</h1>"]
    if sweep.get("description"):
        sections.append(f'<p class="description">{esc(sweep["description"])}</p>')
    sections += [f'<p class="meta">{esc(sweep_line(summary))}</p>', warnings_html(summary.get("warnings", []))]
    if plot_png:
        sections.append(png_img(plot_png, "overall success rate per run with 95% Wilson intervals"))
    keys = summary.get("differing_parameters") or []
    if keys:
        rows = [[config_name(c), ", ".join(c["points"]), *[value_text(c.get("parameters", {}).get(k)) for k in keys]]
                for c in summary["configs"]]
        sections += ["<h2>What differs between configurations</h2>",
                     table(["configuration", "runs", *keys], rows)]
    rows = [[config_name(c), c["n_seeds"], ", ".join(str(s) for s in c["seeds"]), pct(c["success_rate_mean"]),
             pct(c["success_rate_std"]), c["pooled"]["successes"], c["pooled"]["episodes"],
             pct(c["pooled"]["success_rate"]), ci_text(c["pooled"]["ci95"])] for c in summary["configs"]]
    sections += ["<h2>Configurations across seeds</h2>",
                 table(["configuration", "seeds", "seed values", "mean success %", "std (pp)", "successes", "episodes",
                        "pooled %", "pooled 95% CI"], rows, numeric=(1, 3, 4, 5, 6, 7))]
    rows = [[Raw(f'<a href="{esc(p["dir"])}/report.html">{esc(p["name"])}</a>'), p["seed"], p["policy"], p["planner"],
             p["suite"], f"{p['overall']['episodes']}/{p['episodes_planned']}",
             pct(p["overall"].get("success_rate")), ci_text(p["overall"].get("ci95", [0, 1])), p["overall"].get("errors", 0),
             p["status"], p.get("fingerprint_id")] for p in summary["points"]]
    sections += ["<h2>Runs</h2>",
                 table(["run", "seed", "policy", "planner", "suite", "episodes", "success %", "95% CI", "errors", "status",
                        "fingerprint"], rows, numeric=(1, 6, 8))]
    configs = [c["config"] for c in summary["configs"]]
    task_rows = []
    for key, task in task_index(summary).items():
        cells = []
        for config in configs:
            entry = task["configs"].get(config)
            cells.append(task_cell(entry) if entry else "")
        videos = [Raw(f"{esc(p)}: " + video_links(v, prefix=d + "/")) for p, d, v in task["videos"] if v]
        task_rows.append([key[0], f"{key[1]}: {task['task']}", *cells, Raw("<br>".join(videos))])
    sections += ["<h2>Tasks (success %: mean ± std over seeds, or rate [95% CI] for one seed)</h2>",
                 table(["suite", "task", *[config_name(c) for c in summary["configs"]], "videos"], task_rows)]
    rows = [[*label, *worker_package_cells(packages)] for label, packages in worker_package_rows(summary)]
    sections += ["<h2>Env worker packages (each env family's own Python environment)</h2>",
                 table(["run", "family", *WORKER_PACKAGES], rows)]
    fps = summary.get("fingerprints", {})
    if fps:
        users = {fid: [p["name"] for p in summary["points"] if p.get("fingerprint_id") == fid] for fid in fps}
        labelled = {f"{fid} ({len(users[fid])} runs)": fp for fid, fp in fps.items()}
        sections += ["<h2>Software and hardware</h2>", fingerprint_table(labelled)]
    if summary.get("failed_points"):
        rows = [[name, err] for name, err in summary["failed_points"].items()]
        sections += ["<h2>Failed runs</h2>", table(["run", "error"], rows)]
    return page(title, sections)


def sweep_line(summary: Mapping[str, Any]) -> str:
    """"6 runs (4 complete, 1 partial, 1 not started), 52 of 60 episodes recorded"."""
    counts = summary["sweep"]["status_counts"]
    parts = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    duplicates = summary["sweep"].get("duplicate_episodes")
    return (f"{len(summary['points'])} runs ({parts}), {summary['sweep']['episodes_recorded']} of "
            f"{summary['sweep']['episodes_planned']} episodes recorded"
            + (f" ({duplicates} repeated in another run of their configuration: counted once)" if duplicates else ""))


def task_index(summary: Mapping[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """(suite, task_id) -> {"task", "configs": {config: config-task entry}, "videos": [(point, dir, videos)]}."""
    index: dict[tuple[str, int], dict[str, Any]] = {}
    for c in summary["configs"]:
        for t in c["tasks"]:
            entry = index.setdefault((t["suite"], t["task_id"]), {"task": t["task"], "configs": {}, "videos": []})
            entry["configs"][c["config"]] = t
    dirs = {p["name"]: p["dir"] for p in summary["points"]}
    for t in summary["tasks"]:
        key = (t["suite"], t["task_id"])
        if key in index and t.get("videos"):
            index[key]["videos"].append((t["point"], dirs.get(t["point"], t["point"]), t["videos"]))
    return dict(sorted(index.items()))


def task_cell(entry: Mapping[str, Any]) -> str:
    """A config x task cell: "mean ± std (n seeds)" over seeds, or "rate [low-high]" for one seed."""
    if entry["n_seeds"] >= 2:
        return f"{pct(entry['success_rate_mean'])} ± {pct(entry['success_rate_std'])} ({entry['n_seeds']} seeds)"
    pooled = entry["pooled"]
    return f"{pct(pooled['success_rate'])} [{ci_text(pooled['ci95'])}] n={pooled['episodes']}"
