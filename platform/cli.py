"""The `robofleet` command.

Examples:
    robofleet run examples/libero_object_scripted.toml --out runs/object --workers 2
    robofleet run examples/libero_object_scripted.toml --out runs/object --videos 1
    robofleet run SPEC.toml --address auto          # join a running cluster (ray start --head)
    robofleet run examples/sweep_object_baselines.toml      # a sweep: one run per grid point, embedded
    robofleet plan examples/sweep_object_baselines.toml     # the sweep's runs and episode counts
    robofleet submit examples/sweep_object_baselines.toml --address http://127.0.0.1:8265 --out /shared/runs/b
    robofleet jobs --address http://127.0.0.1:8265          # list; also: logs JOB_ID, stop JOB_ID
    robofleet report runs/object                    # rewrite a run's or a sweep's reports
    robofleet report runs/a-seed0 runs/a-seed1 --out runs/a-seeds   # one report over several runs
    robofleet compare runs/object-scripted runs/object-random --json cmp.json
    robofleet setup-libero --assets ../shared/assets/libero
    robofleet tasks libero_spatial                  # list a suite's tasks
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from robofleet.platform.errors import RobofleetError

log = logging.getLogger("robofleet")


def default_out(name: str) -> Path:
    """runs/<name>: the output directory when --out is not given; never outside runs/."""
    from robofleet.platform.spec import run_name

    run_name(name)  # sweep names are checked here too: `..` or an absolute name is refused
    return Path("runs") / name


def _print_overall(overall: dict) -> None:
    if overall.get("episodes"):
        low, high = overall["ci95"]
        print(f"{overall['successes']}/{overall['episodes']} episodes succeeded "
              f"({100 * overall['success_rate']:.1f}%, 95% CI {100 * low:.1f}-{100 * high:.1f}%), "
              f"{overall['errors']} errors")


def _cmd_run(args: argparse.Namespace) -> int:
    from robofleet.jobs.sweep import load_any
    from robofleet.platform.errors import SpecError
    from robofleet.platform.report_files import load_summary, write_run_report
    from robofleet.platform.runner import check_writable, run, validate_before_ray

    if bool(args.spec) == bool(args.spec_env):
        raise SpecError("spec", "give a spec file or --spec-env VAR (one of them)")
    if args.spec_env:
        if args.spec_env not in os.environ:
            raise SpecError("--spec-env", f"environment variable {args.spec_env} is not set")
        spec = load_any(text=os.environ[args.spec_env], where=f"${args.spec_env}")
    else:
        spec = load_any(args.spec)
    out = Path(args.out) if args.out else default_out(spec.name)
    check_writable(out)
    if spec.sweep is not None:
        from robofleet.jobs.sweep_runner import run_sweep

        for point in spec.sweep.points:  # every point's files, before the first point starts Ray
            validate_before_ray(point.spec)

        summary = run_sweep(spec.sweep, out, workers=args.workers, address=args.address, videos=args.videos,
                            progress=not args.no_progress)
        for p in summary["points"]:
            o = p["overall"]
            rate = f"{100 * o['success_rate']:.1f}%" if o["episodes"] else "-"
            print(f"{p['name']}: {o['successes']}/{o['episodes']} ({rate}), {p['status']}")
        print(f"report:  {out / 'report.md'} ({out / 'report.html'})")
        return 0
    before = load_summary(out) if (out / "summary.json").exists() else None
    run(spec.run, out, workers=args.workers, address=args.address, videos=args.videos, progress=not args.no_progress)
    summary = write_run_report(out, before)
    _print_overall(summary["overall"])
    print(f"results: {out / 'episodes.csv'}\nreport:  {out / 'report.md'} ({out / 'report.html'})")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from robofleet.jobs.sweep import load_any
    from robofleet.jobs.sweep_runner import recorded_episodes

    spec = load_any(args.spec)
    out = Path(args.out) if args.out else default_out(spec.name)
    if spec.sweep is not None:
        rows = [(p.name, out / p.name, p.spec) for p in spec.sweep.points]
        print(f"sweep {spec.name}: {len(rows)} runs into {out}/")
    else:
        rows = [(spec.name, out, spec.run)]
        print(f"run {spec.name} into {out}/")
    width = max(len(r[0]) for r in rows)
    print(f"  {'run':<{width}}  {'seed':>5}  {'policy':<10} {'suite':<15} {'tasks x trials':>14}  "
          f"{'episodes':>8}  {'recorded':>8}")
    total = done = 0
    for run_name, run_dir, run_spec in rows:
        n = len(run_spec.env.tasks) * run_spec.env.trials
        k = min(recorded_episodes(run_dir), n)
        total += n
        done += k
        print(f"  {run_name:<{width}}  {run_spec.seed:>5}  {run_spec.policy.name:<10} {run_spec.env.suite:<15} "
              f"{len(run_spec.env.tasks):>6} x {run_spec.env.trials:<5}  {n:>8}  {k:>8}")
    print(f"total: {len(rows)} runs, {total} episodes ({done} recorded, {total - done} to run)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from robofleet.platform.report_files import write_combined_report, write_report
    from robofleet.platform.errors import SpecError

    if len(args.dirs) > 1 or args.out:
        if not args.out:
            raise SpecError("--out", "a report over several run directories needs --out DIR")
        summary = write_combined_report([Path(d) for d in args.dirs], Path(args.out), args.name)
        out = Path(args.out)
    else:
        out = Path(args.dirs[0])
        summary = write_report(out)
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(out / "report.md")
    print(out / "report.html")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import json

    from robofleet.platform.compare import compare_runs, render_comparison

    cmp = compare_runs(args.run_a, args.run_b)
    print(render_comparison(cmp), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(cmp, indent=2, default=str))
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from robofleet.jobs import client

    sub = client.submit(args.spec, args.address, out=args.out, workers=args.workers, videos=args.videos,
                        python=args.python, job_id=args.job_id)
    print(f"submitted {sub.kind} {sub.name!r} as job {sub.job_id} to {args.address}")
    print(f"  runs: {sub.entrypoint}")
    print(f"  results (on the cluster): {sub.out}")
    print(f"  follow: robofleet logs {sub.job_id} --address {args.address} --follow")
    if not args.wait:
        return 0
    state = client.wait(args.address, sub.job_id)
    print(f"job {sub.job_id}: {state}")
    return 0 if state == "SUCCEEDED" else 1


def _cmd_jobs(args: argparse.Namespace) -> int:
    from robofleet.jobs import client

    rows = client.list_jobs(args.address)
    if not rows:
        print(f"no jobs at {args.address}")
        return 0
    width = max(len(r["job_id"]) for r in rows)
    print(f"{'job':<{width}}  {'status':<9}  {'start':<19}  {'end':<19}  {'kind':<5}  name -> out")
    for r in rows:
        label = f"{r['name']} -> {r['out']}" if r["name"] else " ".join(r["entrypoint"].split())[:60]
        print(f"{r['job_id']:<{width}}  {r['status']:<9}  {r['start']:<19}  {r['end']:<19}  {r['kind']:<5}  {label}")
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from robofleet.jobs import client

    if args.follow:
        for chunk in client.follow_logs(args.address, args.job_id):
            print(chunk, end="", flush=True)
    else:
        print(client.logs(args.address, args.job_id), end="")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from robofleet.jobs import client

    if not client.stop(args.address, args.job_id):
        print(f"job {args.job_id} had already ended ({client.status(args.address, args.job_id)})")
        return 0
    print(f"stop requested for job {args.job_id}")
    if args.wait:
        print(f"job {args.job_id}: {client.wait(args.address, args.job_id)}")
    return 0


def _cmd_setup_libero(args: argparse.Namespace) -> int:
    from robofleet.envs.libero_setup import install_assets, prepare_libero

    if args.assets:
        print(f"linked LIBERO assets: {install_assets(Path(args.assets))}")
    print(f"LIBERO config: {prepare_libero() / 'config.yaml'}")
    return 0


def _cmd_convert_embeddings(args: argparse.Namespace) -> int:
    from robofleet.policies.cosmos.embeddings import convert_t5_pickle

    count = convert_t5_pickle(Path(args.pickle), Path(args.out))
    print(f"wrote {count} instruction embeddings to {args.out}")
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from robofleet.envs.libero_setup import prepare_libero
    from robofleet.envs.libero_suites import LIBERO_SUITES
    from robofleet.platform.errors import SpecError

    if args.suite not in LIBERO_SUITES:
        raise SpecError("suite", f"unknown suite {args.suite!r}; allowed: {', '.join(LIBERO_SUITES)}")
    prepare_libero()
    from libero.libero import benchmark

    suite = benchmark.get_benchmark_dict()[args.suite]()
    for i in range(suite.n_tasks):
        print(f"{i:3d}  {suite.get_task(i).language}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robofleet", description=__doc__.split("\n")[0],
                                     epilog="Run `robofleet COMMAND --help` for each command's options.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="evaluate a run or sweep spec (resumes into an existing --out)")
    p.add_argument("spec", nargs="?", help="run or sweep spec (TOML); see examples/")
    p.add_argument("--spec-env", metavar="VAR", help="read the spec's TOML from environment variable VAR (Ray jobs)")
    p.add_argument("--out", help="run or sweep directory (default: runs/<spec or sweep name>)")
    p.add_argument("--workers", type=int, help="env workers (overrides [run] workers)")
    p.add_argument("--address", help="Ray cluster to join ('auto' or HOST:PORT); default: a local in-process cluster")
    p.add_argument("--videos", type=int, default=0, metavar="K", help="write mp4s of the first K trials per task")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("plan", help="print the runs a spec or sweep expands to, with episode counts")
    p.add_argument("spec")
    p.add_argument("--out", help="where it would run (default: runs/<name>); recorded episodes are counted")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("report", help="rewrite the reports of a run or sweep directory, or combine several runs")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="a run directory or a sweep directory; several run directories with --out")
    p.add_argument("--out", help="write one combined report of the DIRs here (they are only read)")
    p.add_argument("--name", help="title of a combined report (default: the --out directory's name)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("compare", help="paired comparison of two runs (exact McNemar test)")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    p.set_defaults(func=_cmd_compare)

    from robofleet.jobs.client import default_address as _default_address

    address_help = "the cluster's Jobs API, http://HOST:PORT (default: $RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265)"
    p = sub.add_parser("submit", help="submit a run or sweep spec to a Ray cluster as a job")
    p.add_argument("spec")
    p.add_argument("--address", default=_default_address(), help=address_help)
    p.add_argument("--out", help="results directory on the cluster (default: ./runs/<name>, absolute)")
    p.add_argument("--workers", type=int, help="env workers per run (overrides [run] workers)")
    p.add_argument("--videos", type=int, default=0, metavar="K", help="write mp4s of the first K trials per task")
    p.add_argument("--python", default="python", help="the cluster's Python executable (default: python)")
    p.add_argument("--job-id", help="a submission id of your choosing (default: Ray's)")
    p.add_argument("--wait", action="store_true", help="wait for the job to end; exit 1 unless it SUCCEEDED")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("jobs", help="list the jobs of a Ray cluster")
    p.add_argument("--address", default=_default_address(), help=address_help)
    p.set_defaults(func=_cmd_jobs)

    p = sub.add_parser("logs", help="print a job's log")
    p.add_argument("job_id")
    p.add_argument("--address", default=_default_address(), help=address_help)
    p.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    p.set_defaults(func=_cmd_logs)

    p = sub.add_parser("stop", help="stop a job (its recorded episodes stay; submit again to resume)")
    p.add_argument("job_id")
    p.add_argument("--address", default=_default_address(), help=address_help)
    p.add_argument("--wait", action="store_true", help="wait until it has stopped")
    p.set_defaults(func=_cmd_stop)

    p = sub.add_parser("setup-libero", help="write LIBERO's config (no prompts) and link its assets")
    p.add_argument("--assets", help="a LIBERO asset tree (scenes/, textures/, ...) to link into the libero package")
    p.set_defaults(func=_cmd_setup_libero)

    p = sub.add_parser("convert-embeddings",
                       help="convert a released *_t5_embeddings.pkl (unpickling runs code: only files you trust) "
                            "to robofleet's safetensors format")
    p.add_argument("pickle", help="the released pickle {instruction: tensor (1, 512, 1024)}")
    p.add_argument("out", help="output .safetensors file")
    p.set_defaults(func=_cmd_convert_embeddings)

    p = sub.add_parser("tasks", help="list the tasks of a LIBERO suite")
    p.add_argument("suite")
    p.set_defaults(func=_cmd_tasks)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except RobofleetError as exc:
        print(f"robofleet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
