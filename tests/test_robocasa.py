"""The `robocasa` env family: RoboCasa's evaluation protocol, tested everywhere a kitchen is not needed.

RoboCasa and its ~10 GB of kitchens are not installable from the registries here: the protocol's
data (tasks, step limits, scenes by trial, padding) is tested as data; the adapter's episode loop,
observation mapping and action padding run against real robosuite 1.5 objects (RoboCasa's robot,
PandaOmron, with RoboCasa's controller layout, in a robosuite Lift scene standing in for the kitchen);
without robocasa a run fails before any episode with the install steps. Only the kitchen rollout is
skipped, with the reason, when robocasa is missing.
"""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from robofleet.envs import robocasa_tasks as protocol
from robofleet.envs.families import python_env
from robofleet.envs.robocasa import RoboCasaSetupError, kitchen_kwargs
from robofleet.platform.errors import SpecError
from robofleet.platform.spec import spec_from_dict
from tests.conftest import small_spec

ROOT = Path(__file__).resolve().parent.parent
RS15_PYTHON = python_env("robocasa").python()


def in_rs15(code: str, timeout: int = 300) -> dict:
    """Run `code` with the robosuite-1.5 environment's Python; it prints one JSON line last."""
    if not RS15_PYTHON.exists():
        pytest.fail(f"{RS15_PYTHON} is missing: run `bash setup.sh` (it builds the robosuite-1.5 environment)")
    proc = subprocess.run([str(RS15_PYTHON), "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def robocasa_env(**changes):
    env = {"family": "robocasa", "tasks": ["CoffeePressButton"], "trials": 1, "render_cameras": False, "max_steps": 5}
    env.update(changes)
    return env


# -- the protocol as data ---------------------------------------------------------------------------
def test_the_24_atomic_tasks_and_their_step_limits():
    limits = {t.name: t.max_steps for t in protocol.ATOMIC_TASKS}
    assert len(limits) == 24 == len(protocol.TASK_NAMES)
    assert min(limits.values()) == 300 and max(limits.values()) == 1000
    assert sum(v == 500 for v in limits.values()) == 17  # "default 500"; 7 tasks differ
    assert (limits["CoffeePressButton"], limits["OpenDoubleDoor"], limits["CloseDoubleDoor"],
            limits["PnPCounterToSink"], limits["PnPCounterToMicrowave"], limits["CoffeeServeMug"]) == (300, 1000, 700, 700, 600, 600)
    assert "NavigateKitchen" not in limits  # single-stage, but not an atomic manipulation task


def test_each_block_of_ten_trials_has_its_scene_and_the_five_scenes_cycle():
    assert [protocol.scene_for_trial(t) for t in (0, 9, 10, 19, 20, 30, 40, 49, 50, 123)] == [
        (1, 1), (1, 1), (2, 2), (2, 2), (4, 4), (6, 9), (7, 10), (7, 10), (1, 1), (4, 4)]


def test_a_policy_action_is_padded_with_a_still_base_in_arm_mode():
    padded = protocol.pad_action(np.arange(7, dtype=np.float32))
    assert padded.shape == (12,) and padded.dtype == np.float64
    assert padded.tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 0, 0, 0, -1]
    assert protocol.wait_action().tolist() == [0.0] * 12
    with pytest.raises(ValueError, match="7 values"):
        protocol.pad_action(np.zeros(12))


def test_an_episode_builds_the_protocols_kitchen_for_its_trial_and_seed():
    kwargs = kitchen_kwargs("OpenDrawer", trial=23, seed=1234)
    assert kwargs["env_name"] == "OpenDrawer" and kwargs["robots"] == "PandaMobile"
    assert kwargs["layout_and_style_ids"] == ((4, 4),) and kwargs["seed"] == 1234
    assert kwargs["obj_instance_split"] == "B" and kwargs["generative_textures"] is None
    assert kwargs["randomize_cameras"] is False and kwargs["ignore_done"] is True
    assert kwargs["camera_names"] == ["robot0_agentview_left", "robot0_agentview_right", "robot0_eye_in_hand"]
    assert kwargs["camera_widths"] == kwargs["camera_heights"] == 224


# -- spec -------------------------------------------------------------------------------------------
def test_a_robocasa_spec_takes_task_names_with_the_protocols_defaults():
    spec = spec_from_dict(small_spec(env=robocasa_env(tasks=["OpenDrawer", "CoffeePressButton"], max_steps=None)))
    assert spec.env.suite == "atomic" and spec.env.tasks == (12, 21) and spec.env.max_steps is None
    assert spec.env.image_size == 224 and spec.env.cameras == protocol.CAMERAS
    with pytest.raises(SpecError, match="env.tasks: unknown task 'OpenFridge'.*allowed: PnPCounterToCab, "):
        spec_from_dict(small_spec(env=robocasa_env(tasks=["OpenFridge"])))
    with pytest.raises(SpecError, match="env.reset: robocasa builds a fresh kitchen"):
        spec_from_dict(small_spec(env=robocasa_env(reset="soft")))


# -- the adapter against robosuite 1.5 objects -------------------------------------------------------
@pytest.fixture(scope="module")
def stand_in():
    """RoboCasaEnv driving robosuite 1.5's PandaOmron (RoboCasa's robot and controller layout) in a
    Lift scene standing in for the kitchen; what it did, as facts."""
    return in_rs15("""
        import json
        import numpy as np
        import robosuite
        from robofleet.envs.robocasa import RoboCasaEnv, pandaomron_controller_config
        from robofleet.envs.robocasa_tasks import TASK_NAMES

        received = []
        def kitchen(**kwargs):  # the kitchen's arguments, minus those only RoboCasa's kitchens take
            received.append({k: v for k, v in kwargs.items() if k != "camera_names"})
            generic = ("camera_names", "camera_widths", "camera_heights", "has_renderer", "has_offscreen_renderer",
                       "use_camera_obs", "camera_depths", "ignore_done", "use_object_obs", "seed")
            return robosuite.make("Lift", robots="PandaOmron", controller_configs=pandaomron_controller_config(),
                                  **{k: kwargs[k] for k in generic})

        env = RoboCasaEnv("atomic", image_size=32, cameras=["agentview", "robot0_eye_in_hand"], make=kitchen)
        task = TASK_NAMES.index("CoffeePressButton")
        obs = env.reset(task, trial=23, seed=99)
        sim = env._env
        start = {k: np.array(obs.privileged[k]) for k in ("robot0_base_pos", "robot0_eef_pos")}
        gap0 = float(obs.privileged["robot0_gripper_qpos"][0] - obs.privileged["robot0_gripper_qpos"][1])
        for _ in range(8):  # up and close, through the 7-dim policy action
            step = env.step(np.array([0, 0, 1, 0, 0, 0, 1], dtype=np.float32))
        p = step.obs.privileged
        raw = sim._get_observations()
        print(json.dumps({
            "action_dim": sim.action_dim,
            "split": {k: list(v) for k, v in sim.robots[0].composite_controller._action_split_indexes.items()},
            "kwargs": json.loads(json.dumps(received[0], default=list)),
            "max_steps": env.max_steps,
            "instruction": obs.instruction, "task": obs.privileged["task"],
            "scene": [obs.privileged["layout_id"], obs.privileged["style_id"]],
            "images": {k: list(v.shape) for k, v in step.obs.images.items()},
            "upright": all(np.array_equal(step.obs.images[c], np.flipud(raw[c + "_image"])) for c in step.obs.images),
            "proprio": step.obs.proprio.tolist(),
            "proprio_parts": np.concatenate([raw["robot0_gripper_qpos"], raw["robot0_eef_pos"],
                                             raw["robot0_eef_quat"]]).astype(np.float32).tolist(),
            "eef_rise": float(p["robot0_eef_pos"][2] - start["robot0_eef_pos"][2]),
            "base_moved": float(np.abs(p["robot0_base_pos"] - start["robot0_base_pos"]).max()),
            "gap_before": gap0,
            "gap_after": float(p["robot0_gripper_qpos"][0] - p["robot0_gripper_qpos"][1]),
            "success": step.success,
        }))
    """)


def test_the_robots_action_layout_is_the_one_the_padding_assumes(stand_in):
    assert stand_in["action_dim"] == protocol.ROBOT_ACTION_DIM
    assert stand_in["split"] == {"right": [0, 6], "right_gripper": [6, 7], "base": [7, 10], "torso": [10, 11]}


def test_padded_policy_actions_move_the_arm_and_gripper_and_leave_the_base(stand_in):
    assert stand_in["eef_rise"] > 0.02, "position actions reach the arm"
    assert stand_in["gap_after"] < stand_in["gap_before"] - 0.01, "the gripper value reaches the gripper"
    assert stand_in["base_moved"] < 1e-3, "the padding keeps the base still"
    assert stand_in["success"] is False


def test_an_episode_gets_its_trials_scene_seed_and_the_tasks_step_limit(stand_in):
    kwargs = stand_in["kwargs"]
    assert (kwargs["env_name"], kwargs["seed"], kwargs["layout_and_style_ids"]) == ("CoffeePressButton", 99, [[4, 4]])
    assert stand_in["scene"] == [4, 4] and stand_in["task"] == "CoffeePressButton"
    assert stand_in["max_steps"] == 300
    assert stand_in["instruction"] == "CoffeePressButton"  # a kitchen's ep_meta["lang"]; the stand-in has none


def test_observations_map_to_the_contract(stand_in):
    assert stand_in["images"] == {"agentview": [32, 32, 3], "robot0_eye_in_hand": [32, 32, 3]}
    assert stand_in["upright"]
    assert stand_in["proprio"] == stand_in["proprio_parts"] and len(stand_in["proprio"]) == 9


# -- with and without RoboCasa -------------------------------------------------------------------------
def robocasa_installed() -> tuple[bool, str]:
    facts = in_rs15("""
        import json
        from robofleet.envs.robocasa import RoboCasaSetupError, require_robocasa
        try:
            print(json.dumps({"ok": True, "why": str(require_robocasa())}))
        except RoboCasaSetupError as exc:
            print(json.dumps({"ok": False, "why": str(exc)}))
    """)
    return facts["ok"], facts["why"]


def test_without_robocasa_a_run_fails_before_any_episode_saying_how_to_install(ray_cluster, tmp_path):
    from robofleet.platform.runner import run

    installed, _ = robocasa_installed()
    if installed:
        pytest.skip("robocasa and its kitchen assets are installed in the robosuite-1.5 environment")
    spec = spec_from_dict(small_spec(env=robocasa_env(), policy={"name": "zero"}))
    with pytest.raises(RoboCasaSetupError, match="git clone https://github.com/robocasa/robocasa") as info:
        run(spec, tmp_path, progress=False)
    assert "download_kitchen_assets.py" in str(info.value)
    assert not (tmp_path / "episodes.csv").exists() or (tmp_path / "episodes.csv").read_text().count("\n") <= 1


def test_a_kitchen_episode_runs_when_robocasa_is_installed(ray_cluster, tmp_path):
    from robofleet.platform.runner import run

    installed, why = robocasa_installed()
    if not installed:  # the skip line (pytest -ra, on in pyproject.toml) carries the reason and the install steps
        assert "git clone https://github.com/robocasa/robocasa" in why and "download_kitchen_assets.py" in why, why
        pytest.skip("kitchen rollout needs robocasa + its ~10 GB of kitchen assets in .venv-rs15: "
                    + " | ".join(line.strip() for line in why.splitlines()))
    spec = spec_from_dict(small_spec(env=robocasa_env(render_cameras=True, image_size=64), policy={"name": "zero"}))
    summary = run(spec, tmp_path, progress=False)
    assert summary["overall"]["episodes"] == 1 and summary["overall"]["errors"] == 0
    assert summary["worker_packages"][0]["robocasa"] is not None
