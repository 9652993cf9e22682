"""How should robosuite-1.5 env workers get their Python environment? Measure the candidates.

For each way of giving a Ray actor robosuite 1.5 while the driver keeps robosuite 1.4 (LIBERO):
  venv : runtime_env={"py_executable": ".venv-rs15/bin/python"} (the venv setup.sh builds)
  pip  : runtime_env={"pip": {...}}  Ray clones the driver's venv, then pip-installs on top
  uv   : runtime_env={"uv": {...}}   the same with uv
it starts one actor (cold: first use of that runtime env), then a second one in a new process
(warm: cached env), and records wall times until the actor answers, what the actor sees
(robosuite / mujoco / numpy / ray versions, whether torch and libero are importable there), and
the disk the runtime env takes. The actor also builds a robosuite 1.5 Lift env (no cameras) and
steps it, so every candidate is shown to run the simulator.

    .venv/bin/python benchmarks/robosuite15_runtime_env.py --out benchmarks/results/robosuite15_runtime_env.json
    .venv/bin/python benchmarks/robosuite15_runtime_env.py --only venv

pip / uv: the packages are installed with --no-deps: robosuite 1.5.2's metadata pins mink==0.0.5
(numpy<2), which no resolver can combine with RoboCasa's numpy==2.2.5 (see
envs/robosuite15_requirements.txt); the clone already holds robosuite's other requirements.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ray

ROOT = Path(__file__).resolve().parent.parent
ON_TOP = ["robosuite==1.5.2", "mujoco==3.3.1", "numpy==2.2.5"]


@ray.remote(num_cpus=1)
class Probe:
    """What an env worker sees in its Python environment."""

    def facts(self) -> dict:
        import importlib.util

        import numpy as np

        t = time.perf_counter()
        import mujoco
        import robosuite
        from robosuite.controllers import load_composite_controller_config

        env = robosuite.make("Lift", robots="Panda", has_renderer=False, has_offscreen_renderer=False,
                             use_camera_obs=False, ignore_done=True, seed=0,
                             controller_configs=load_composite_controller_config(controller="BASIC", robot="Panda"))
        env.reset()
        for _ in range(10):
            env.step(np.zeros(env.action_dim))
        env.close()
        return {
            "python": sys.executable,
            "robosuite": robosuite.__version__,
            "mujoco": mujoco.__version__,
            "numpy": np.__version__,
            "ray": ray.__version__,
            "torch_importable": importlib.util.find_spec("torch") is not None,
            "libero_importable": importlib.util.find_spec("libero") is not None,
            "torch_imported": "torch" in sys.modules,
            "sim_s": time.perf_counter() - t,
        }


def runtime_env(kind: str) -> dict:
    if kind == "venv":
        return {"py_executable": str(ROOT / ".venv-rs15" / "bin" / "python")}
    if kind == "pip":
        return {"pip": {"packages": ON_TOP, "pip_install_options": ["--no-deps"]}}
    if kind == "uv":
        return {"uv": {"packages": ON_TOP, "uv_pip_install_options": ["--no-deps"]}}
    raise ValueError(kind)


def disk_mb(path: Path) -> float | None:
    if not path.exists():
        return None
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True)
    return float(out.stdout.split()[0]) if out.returncode == 0 else None


def measure(kind: str, resources_dir: Path) -> dict:
    result: dict = {"kind": kind, "runtime_env": runtime_env(kind)}
    for attempt in ("cold", "warm"):
        t = time.perf_counter()
        actor = Probe.options(runtime_env=runtime_env(kind)).remote()
        try:
            facts = ray.get(actor.facts.remote(), timeout=900)
        except Exception as exc:
            result[attempt] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            break
        finally:
            ray.kill(actor)
        result[attempt] = {"until_answer_s": round(time.perf_counter() - t, 2), **facts}
    result["disk_mb"] = disk_mb(resources_dir / kind) if kind != "venv" else disk_mb(ROOT / ".venv-rs15")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=["venv", "pip", "uv"], choices=["venv", "pip", "uv"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"MUJOCO_GL": os.environ["MUJOCO_GL"]}})
    report = {"ray_init_s": round(time.perf_counter() - t, 2), "driver_python": sys.executable,
              "driver_robosuite": __import__("robosuite").__version__, "results": []}
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    resources_dir = session / "runtime_resources"
    for kind in args.only:
        result = measure(kind, resources_dir)
        report["results"].append(result)
        print(json.dumps(result, indent=1, default=str), flush=True)
    ray.shutdown()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=str))
    # The pip/uv envs live under this session's runtime_resources; they are gone with the session dir.
    shutil.rmtree(resources_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
