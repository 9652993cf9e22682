"""The `robosuite` env family: robosuite 1.5 tasks in their own Python environment, beside LIBERO.

Real robosuite 1.5.2 in `.venv-rs15` (built by setup.sh), real Ray workers started there, real
physics; small sizes (no cameras unless the behaviour is about cameras, few steps).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from robofleet.envs.families import PythonEnvError, python_env, worker_runtime_env
from robofleet.platform.errors import SpecError
from robofleet.platform.spec import spec_from_dict
from tests.conftest import small_spec

ROOT = Path(__file__).resolve().parent.parent
RS15 = python_env("robosuite")


def lift_env(**changes):
    env = {"family": "robosuite", "tasks": ["Lift"], "trials": 1, "image_size": 32, "render_cameras": False,
           "max_steps": 5}
    env.update(changes)
    return env


def in_rs15(code: str, timeout: int = 300) -> dict:
    """Run `code` with the robosuite-1.5 environment's Python; it prints one JSON line last."""
    python = RS15.python()
    if python is None or not python.exists():
        pytest.fail(f"{python} is missing: run `bash setup.sh` (it builds the robosuite-1.5 environment)")
    proc = subprocess.run([str(python), "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- spec -------------------------------------------------------------------------------------------
def test_tasks_are_named_and_an_unknown_name_lists_the_allowed_ones():
    spec = spec_from_dict(small_spec(env=lift_env(tasks=["Door", "Lift"])))
    assert spec.env.suite == "single_arm" and spec.env.tasks == (4, 0)
    assert spec.env.cameras == ("agentview", "robot0_eye_in_hand")
    with pytest.raises(SpecError, match="env.tasks: unknown task 'Lyft'.*allowed: Lift, Stack, PickPlaceCan"):
        spec_from_dict(small_spec(env=lift_env(tasks=["Lyft"])))


def test_cameras_are_checked_against_the_tasks():
    with pytest.raises(SpecError, match="env.cameras: unknown camera 'sideview' for task PickPlaceCan"):
        spec_from_dict(small_spec(env=lift_env(tasks=["PickPlaceCan"], cameras=["sideview"])))


def test_a_libero_spec_keeps_its_hash_now_that_env_has_cameras():
    spec = spec_from_dict(small_spec(protocol="robofleet"))  # what specs meant before `protocol` existed
    assert "cameras" not in spec.to_dict()["env"]
    assert spec.identity_hash() == "63e073ae66d2d38a"  # the hash of this spec before either key existed
    assert spec_from_dict(small_spec()).identity_hash() != spec.identity_hash()  # the reference protocol


def test_a_missing_environment_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBOFLEET_RS15_VENV", str(tmp_path / "nowhere"))
    with pytest.raises(PythonEnvError, match="bash setup.sh"):
        worker_runtime_env("robosuite")
    assert worker_runtime_env("libero") is None


# -- the adapter, in the robosuite-1.5 environment -------------------------------------------------
@pytest.fixture(scope="module")
def adapter_facts():
    """One robosuite-1.5 process: reset trials in two orders on two envs; render one observation."""
    return in_rs15("""
        import json, sys
        import numpy as np
        from robofleet.envs.robosuite15 import RobosuiteEnv
        from robofleet.platform.seeds import episode_seed

        seed = lambda trial: episode_seed(0, f"robosuite/single_arm/task00/trial{trial:03d}")
        a = RobosuiteEnv("single_arm", render_cameras=False, wait_steps=2)
        a.reset(0, 0, seed(0)); a0 = a.get_state()
        a.reset(0, 1, seed(1)); a1 = a.get_state()
        b = RobosuiteEnv("single_arm", render_cameras=False, wait_steps=2)
        b.reset(0, 1, seed(1)); b1 = b.get_state()
        cam = RobosuiteEnv("single_arm", image_size=32, cameras=["agentview", "robot0_eye_in_hand"], wait_steps=0)
        obs = cam.reset(0, 0, seed(0))
        raw = cam._env._get_observations()
        print(json.dumps({
            "same_trial_same_state": bool(np.array_equal(a1, b1)),
            "other_trial_other_state": not np.array_equal(a0, a1),
            "images": {k: [list(v.shape), str(v.dtype)] for k, v in obs.images.items()},
            "upright": all(np.array_equal(obs.images[c], np.flipud(raw[c + "_image"])) for c in obs.images),
            "proprio": obs.proprio.tolist(),
            "proprio_parts": np.concatenate([raw["robot0_gripper_qpos"], raw["robot0_eef_pos"],
                                             raw["robot0_eef_quat"]]).astype(np.float32).tolist(),
            "cube_pos": "cube_pos" in obs.privileged, "task": obs.privileged["task"],
            "instruction": obs.instruction, "torch": "torch" in sys.modules,
        }))
    """)


def test_a_trial_starts_from_the_same_state_whatever_the_worker_ran_before(adapter_facts):
    assert adapter_facts["same_trial_same_state"]
    assert adapter_facts["other_trial_other_state"]


def test_observations_follow_the_contract(adapter_facts):
    assert adapter_facts["images"] == {"agentview": [[32, 32, 3], "uint8"], "robot0_eye_in_hand": [[32, 32, 3], "uint8"]}
    assert adapter_facts["upright"], "images are robosuite's flipped with np.flipud, as LIBERO's"
    assert adapter_facts["proprio"] == adapter_facts["proprio_parts"] and len(adapter_facts["proprio"]) == 9
    assert adapter_facts["cube_pos"] and adapter_facts["task"] == "Lift"
    assert adapter_facts["instruction"] == "lift the red cube"
    assert not adapter_facts["torch"]


def test_every_task_builds_steps_and_restores_its_state_exactly():
    facts = in_rs15("""
        import json
        import numpy as np
        from robofleet.envs.robosuite15 import RobosuiteEnv
        from robofleet.envs.robosuite_tasks import SINGLE_ARM

        env = RobosuiteEnv("single_arm", render_cameras=False, wait_steps=1)
        out = {}
        for task_id, task in enumerate(SINGLE_ARM.tasks):
            env.reset(task_id, 0, 5)
            state = env.get_state()
            step = env.step(np.zeros(7))
            restored = env.set_state(state)
            out[task.name] = {"success": step.success, "max_steps": env.max_steps, "proprio": len(restored.proprio),
                              "restored": bool(np.array_equal(env.get_state(), state)),
                              "task": restored.privileged["task"]}
        print(json.dumps(out))
    """)
    assert list(facts) == ["Lift", "Stack", "PickPlaceCan", "NutAssemblySquare", "Door", "ToolHang"]
    for name, f in facts.items():
        assert f == {"success": False, "max_steps": 700 if name == "ToolHang" else 400, "proprio": 9,
                     "restored": True, "task": name}, name


def test_a_policy_needing_torch_there_says_to_serve_it_from_replicas():
    facts = in_rs15("""
        import json
        from robofleet.platform.env_worker import PolicyEnvironmentError, _make_local_policy
        from robofleet.platform.spec import spec_from_dict
        spec = spec_from_dict({"seed": 0, "env": {"family": "robosuite", "tasks": ["Lift"], "trials": 1},
                               "policy": {"name": "cosmos", "config": "tiny"}})
        try:
            _make_local_policy(spec)
            print(json.dumps({"error": None}))
        except PolicyEnvironmentError as exc:
            print(json.dumps({"error": str(exc)}))
    """)
    assert "'torch'" in facts["error"] and "[serving] replicas" in facts["error"]


# -- workers of both families at once, on one cluster -----------------------------------------------
def test_libero_and_robosuite_workers_run_side_by_side_in_their_own_pythons(ray_cluster):
    from robofleet.platform.env_worker import EnvWorker
    from robofleet.platform.episodes import expand_episodes

    specs = {"libero": spec_from_dict(small_spec(policy={"name": "zero"}, env={**small_spec()["env"], "max_steps": 3})),
             "robosuite": spec_from_dict(small_spec(policy={"name": "zero"}, env=lift_env(max_steps=3)))}
    workers = {family: EnvWorker.options(num_cpus=1, **({"runtime_env": worker_runtime_env(family)}
                                                        if worker_runtime_env(family) else {})).remote(spec, 0)
               for family, spec in specs.items()}
    try:
        facts = dict(zip(workers, ray_cluster.get([w.setup.remote() for w in workers.values()])))
        rows = dict(zip(workers, ray_cluster.get([w.run.remote(expand_episodes(specs[f])[0]) for f, w in workers.items()])))
        inside = ray_cluster.get(workers["robosuite"].__ray_call__.remote(
            lambda self: {"torch": "torch" in sys.modules, "python": sys.executable}))
    finally:
        for w in workers.values():
            ray_cluster.kill(w)
    assert facts["libero"]["packages"]["robosuite"] == "1.4.0" and facts["libero"]["packages"]["libero"] == "0.1.1"
    rs15 = facts["robosuite"]["packages"]
    assert (rs15["robosuite"], rs15["mujoco"], rs15["numpy"], rs15["torch"], rs15["libero"]) == ("1.5.2", "3.3.1", "2.2.5", None, None)
    assert rs15["ray"] == facts["libero"]["packages"]["ray"]
    assert inside == {"torch": False, "python": str(RS15.python())}
    assert [(rows[f]["error"], rows[f]["steps"]) for f in ("libero", "robosuite")] == [("", 3), ("", 3)]
    assert rows["robosuite"]["task"] == "Lift"


# -- whole runs ---------------------------------------------------------------------------------------
def test_the_scripted_lift_expert_lifts_the_cube(ray_cluster, tmp_path):
    from robofleet.platform.runner import run

    spec = spec_from_dict(small_spec(env=lift_env(trials=2, max_steps=80), policy={"name": "scripted"}))
    summary = run(spec, tmp_path, progress=False)
    assert summary["overall"]["episodes"] == 2 and summary["overall"]["errors"] == 0
    assert summary["overall"]["successes"] == 2
    assert summary["tasks"][0]["task"] == "Lift"
    assert [w["robosuite"] for w in summary["worker_packages"]] == ["1.5.2"]
    assert summary["fingerprint"]["packages"]["robosuite"] == "1.4.0"  # the driver's own


COSMOS_CAMERAS = {"wrist": "robot0_eye_in_hand", "left": "agentview", "right": "frontview"}
COSMOS_OPTIONS = {"config": "tiny", "device": "cpu", "cameras": COSMOS_CAMERAS}


def test_cosmos_on_robosuite_uses_robocasas_layout_and_answers_in_classes_workers_can_load(tmp_path):
    import pickle

    import numpy as np

    from robofleet.envs.contract import Observation
    from robofleet.policies.prediction import CosmosPrediction
    from robofleet.policies.registry import make_policy

    policy = make_policy("cosmos", COSMOS_OPTIONS, "robosuite")
    assert policy.layout.family == "robocasa" and policy.layout.num_frames == 11
    obs = Observation(images={k: np.full((32, 32, 3), 90, np.uint8) for k in COSMOS_CAMERAS.values()},
                      proprio=np.zeros(9, np.float32), instruction="lift the red cube")
    [future] = policy.imagine([obs], [np.zeros((32, 7), np.float32)], [3])
    assert type(future) is CosmosPrediction and future.latents is not None
    [value] = policy.value([obs], [future.actions], [future], [3])  # its latents are used
    assert 0.0 <= value <= 1.0
    (tmp_path / "future.pkl").write_bytes(pickle.dumps(future))
    loaded = in_rs15(f"""
        import json, pickle, sys
        future = pickle.loads(open({str(tmp_path / "future.pkl")!r}, "rb").read())
        print(json.dumps({{"class": type(future).__module__ + "." + type(future).__qualname__,
                          "latents": list(future.latents.shape), "actions": list(future.actions.shape),
                          "torch": "torch" in sys.modules}}))
    """)
    assert loaded == {"class": "robofleet.policies.prediction.CosmosPrediction", "latents": list(future.latents.shape),
                      "actions": [32, 7], "torch": False}  # a robosuite-1.5 worker loads it without torch


def test_cosmos_robocasa_layout_runs_an_episode_on_three_robosuite_cameras(ray_cluster, tmp_path):
    from robofleet.platform.runner import run

    options = COSMOS_OPTIONS
    env = lift_env(render_cameras=True, cameras=["agentview", "frontview", "robot0_eye_in_hand"], max_steps=2)
    spec = spec_from_dict(small_spec(env=env, policy={"name": "cosmos", "open_loop_steps": 2, **options},
                                     serving={"replicas": 1, "gpus_per_replica": 0, "cpus_per_replica": 1}))
    summary = run(spec, tmp_path, progress=False)
    with (tmp_path / "episodes.csv").open() as f:
        import csv

        [row] = list(csv.DictReader(f))
    assert row["error"] == "", row["error"]
    assert (row["steps"], row["queries"]) == ("2", "1")
    assert summary["worker_packages"][0]["robosuite"] == "1.5.2"


def test_one_sweep_runs_libero_and_robosuite_points_each_in_its_environment(ray_cluster, tmp_path):
    from robofleet.jobs.sweep import sweep_from_dict
    from robofleet.jobs.sweep_runner import run_sweep
    from robofleet.platform.spec import parse_spec_toml

    data = parse_spec_toml((ROOT / "examples" / "sweep_libero_and_robosuite.toml").read_text(), "sweep")
    for env in data["grid"][0]["env"]:  # the example, shrunk: 1 trial of 5 steps per point
        env.update(trials=1, max_steps=5)
    sweep = sweep_from_dict(data)
    assert [p.spec.env.family for p in sweep.points] == ["libero", "robosuite"]
    run_sweep(sweep, tmp_path, progress=False)
    packages = {}
    for point in sweep.points:
        summary = json.loads((tmp_path / point.name / "summary.json").read_text())
        assert summary["overall"]["errors"] == 0, point.name
        [packages[point.spec.env.family]] = summary["worker_packages"]
    assert packages["libero"]["robosuite"] == "1.4.0" and packages["libero"]["mujoco"] == "3.3.2"
    assert packages["robosuite"]["robosuite"] == "1.5.2" and packages["robosuite"]["mujoco"] == "3.3.1"
    # ... and the sweep's own report says so per point, in summary.json and report.md
    report = json.loads((tmp_path / "summary.json").read_text())
    assert [(p["family"], [w["robosuite"] for w in p["worker_packages"]]) for p in report["points"]] == [
        ("libero", ["1.4.0"]), ("robosuite", ["1.5.2"])]
    md = (tmp_path / "report.md").read_text()
    for point, (family, robosuite, mujoco) in zip(sweep.points, [("libero", "1.4.0", "3.3.2"),
                                                                 ("robosuite", "1.5.2", "3.3.1")]):
        [row] = [line for line in md.splitlines() if line.startswith(f"| {point.name} | {family} | ")]
        assert row.split(" | ")[3:5] == [robosuite, mujoco], row  # run, family, python, robosuite, mujoco


def test_skipping_unobserved_renders_keeps_the_episode_bit_identical():
    """robosuite 1.5 through envs/camera_gate.py: the same actions with every step rendered and with
    every 3rd step rendered give the same state and the same images on the rendered steps."""
    facts = in_rs15("""
        import json
        import numpy as np
        from robofleet.envs.robosuite15 import RobosuiteEnv

        env = RobosuiteEnv("single_arm", image_size=32, cameras=["agentview", "robot0_eye_in_hand"], wait_steps=3)
        actions = np.random.default_rng(1).uniform(-0.5, 0.5, size=(9, 7))
        runs = []
        for every in (True, False):
            env.reset(0, 0, 11)
            seen, empty = [], True
            for i, a in enumerate(actions):
                render = every or i % 3 == 2
                step = env.step(a, render=render)
                if i % 3 == 2:
                    seen.append(np.concatenate([step.obs.images[c].ravel() for c in sorted(step.obs.images)]))
                elif not every:
                    empty = empty and step.obs.images == {}
            runs.append((env.get_state(), seen, empty, env._gate.skipped if env._gate else 0))
        (s1, i1, _, k1), (s2, i2, e2, k2) = runs
        print(json.dumps({"same_state": bool(np.array_equal(s1, s2)), "same_images": all(np.array_equal(a, b) for a, b in zip(i1, i2)),
                          "images_nonblank": all(a.any() for a in i1), "unrendered_empty": e2, "skipped": k2 - k1}))
    """)
    assert facts["same_state"] and facts["same_images"] and facts["images_nonblank"]
    assert facts["unrendered_empty"] and facts["skipped"] == 2 * (6 + 2)  # 2 cameras x (6 unobserved + 2 wait steps)
