"""What the original LIBERO assets cost against the stand-in tree: env build, hard reset, steps/s.

Both trees are measured in one run, alternately (original, stand-in, original, ...), each in a fresh
child process that sees its own copy of the `libero` package (Python files, BDDL, init states: 15 MB)
with `assets` linked to that tree, so the shared installation is never relinked. Per task: building
the simulator (ControlEnv, two 256x256 cameras), a hard reset (`reset()` + `set_init_state`), and
env steps/s rendering both cameras every step (zero actions after the wait steps). Also the cost of
the reference protocol's per-step `np.random.seed(0)` (platform/protocol.py), timed on its own.

Example (the stand-ins of an older tree; the original is the registry tree setup.sh links):
    python benchmarks/libero_assets_cost.py --standin ../shared/assets/libero --repeats 2 \
        --out benchmarks/results/libero_assets_cost_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

TASKS = (("libero_object", 0), ("libero_spatial", 0), ("libero_10", 0))


def child(tasks: list[tuple[str, int]], steps: int, image_size: int) -> dict[str, dict[str, float]]:
    """Measure in this process (its `libero` is the copy whose assets link to one tree)."""
    import numpy as np

    from robofleet.envs.libero import LiberoEnv

    out = {}
    for suite, task in tasks:
        env = LiberoEnv(suite, image_size=image_size, render_cameras=True)
        t0 = time.perf_counter()
        env._build(task)
        t1 = time.perf_counter()
        env.reset(task, 0, 0)  # a hard reset reloads the model from XML: the asset files are read again
        t2 = time.perf_counter()
        env.reset(task, 1, 0)
        t3 = time.perf_counter()
        for _ in range(steps):
            env.step(np.zeros(7))
        t4 = time.perf_counter()
        out[f"{suite}/{task}"] = {"build_s": t1 - t0, "hard_reset_s": (t3 - t1) / 2,
                                  "steps_per_s": steps / (t4 - t3)}
        env.close()
    return out


def libero_copy(tree: Path, root: Path) -> Path:
    """A `libero` package copy under root/site whose assets link to `tree`; returns root/site."""
    import importlib.util

    spec = importlib.util.find_spec("libero")
    source = Path(list(spec.submodule_search_locations)[0])
    site = root / "site"
    shutil.copytree(source, site / "libero", ignore=shutil.ignore_patterns("assets", "__pycache__"), symlinks=True)
    (site / "libero" / "libero" / "assets").symlink_to(Path(tree).resolve(), target_is_directory=True)
    return site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standin", required=True, help="the stand-in asset tree to compare with")
    parser.add_argument("--original", help="the original tree (default: the registry packages' tree)")
    parser.add_argument("--repeats", type=int, default=2, help="child processes per tree (alternating)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child([tuple(t) for t in json.loads(args.child)], args.steps, args.image_size)))
        return
    from robofleet.envs.libero_assets import assets_summary, registry_assets_dir

    trees = {"original": Path(args.original or registry_assets_dir()), "standin": Path(args.standin)}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        sites = {name: libero_copy(tree, Path(tmp) / name) for name, tree in trees.items()}
        for _ in range(args.repeats):
            for name, site in sites.items():
                env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                       "LIBERO_CONFIG_PATH": str(site.parent / "config"), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
                done = subprocess.run([sys.executable, __file__, "--standin", args.standin, "--steps", str(args.steps),
                                       "--image-size", str(args.image_size), "--child", json.dumps(TASKS)],
                                      env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{name} child failed:\n{done.stderr[-3000:]}")
                results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    table = {}
    for key in results["original"][0]:
        row = {}
        for metric in ("build_s", "hard_reset_s", "steps_per_s"):
            med = {name: statistics.median(r[key][metric] for r in runs) for name, runs in results.items()}
            row[metric] = {**med, "original_over_standin": med["original"] / med["standin"]}
        table[key] = row
    reseed_s = min(timeit.repeat("np.random.seed(0)", setup="import numpy as np", number=1000, repeat=5)) / 1000
    from robofleet.platform.fingerprint import fingerprint

    report = {"trees": {name: {"path": str(tree), "assets": assets_summary(tree)} for name, tree in trees.items()},
              "repeats": args.repeats, "steps": args.steps, "image_size": args.image_size, "tasks": table,
              "reseed_per_step_s": reseed_s, "raw": results, "fingerprint": fingerprint()}
    for key, row in table.items():
        print(key, "  ".join(f"{m}: orig {v['original']:.3g} / standin {v['standin']:.3g} = x{v['original_over_standin']:.2f}"
                             for m, v in row.items()))
    print(f"np.random.seed(0) per step: {1e6 * reseed_s:.1f} us")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
