"""The `robofleet` command.

Examples:
    robofleet run examples/libero_object_scripted.toml --out runs/object --workers 2
    robofleet run examples/libero_object_scripted.toml --out runs/object --videos 1
    robofleet run SPEC.toml --address auto          # join a running cluster (ray start --head)
    robofleet report runs/object                    # rewrite summary.json / report.md
    robofleet setup-libero --assets ../shared/assets/libero
    robofleet tasks libero_spatial                  # list a suite's tasks
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from robofleet.platform.errors import RobofleetError

log = logging.getLogger("robofleet")


def _cmd_run(args: argparse.Namespace) -> int:
    from robofleet.platform.spec import load_spec
    from robofleet.platform.runner import run

    spec = load_spec(args.spec)
    out = Path(args.out) if args.out else Path("runs") / (spec.name or Path(args.spec).stem)
    summary = run(spec, out, workers=args.workers, address=args.address, videos=args.videos,
                  progress=not args.no_progress)
    overall = summary["overall"]
    if overall.get("episodes"):
        low, high = overall["ci95"]
        print(f"{overall['successes']}/{overall['episodes']} episodes succeeded "
              f"({100 * overall['success_rate']:.1f}%, 95% CI {100 * low:.1f}-{100 * high:.1f}%), "
              f"{overall['errors']} errors")
    print(f"results: {out / 'episodes.csv'}\nreport:  {out / 'report.md'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from robofleet.platform.results import RunStore
    from robofleet.platform.spec import load_spec
    from robofleet.platform.runner import write_reports

    run_dir = Path(args.run_dir)
    spec = load_spec(run_dir / "spec.toml")
    write_reports(spec, RunStore(run_dir, spec))
    print(run_dir / "report.md")
    return 0


def _cmd_setup_libero(args: argparse.Namespace) -> int:
    from robofleet.envs.libero_setup import install_assets, prepare_libero

    if args.assets:
        print(f"linked LIBERO assets: {install_assets(Path(args.assets))}")
    print(f"LIBERO config: {prepare_libero() / 'config.yaml'}")
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

    p = sub.add_parser("run", help="evaluate a policy as a spec describes (resumes into an existing --out)")
    p.add_argument("spec", help="run spec (TOML); see examples/")
    p.add_argument("--out", help="run directory (default: runs/<spec name>)")
    p.add_argument("--workers", type=int, help="env workers (overrides [run] workers)")
    p.add_argument("--address", help="Ray cluster to join ('auto' or HOST:PORT); default: a local in-process cluster")
    p.add_argument("--videos", type=int, default=0, metavar="K", help="write mp4s of the first K trials per task")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("report", help="rewrite summary.json and report.md of a run directory")
    p.add_argument("run_dir")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("setup-libero", help="write LIBERO's config (no prompts) and link its assets")
    p.add_argument("--assets", help="a LIBERO asset tree (scenes/, textures/, ...) to link into the libero package")
    p.set_defaults(func=_cmd_setup_libero)

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
