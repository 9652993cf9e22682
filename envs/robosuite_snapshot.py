"""Exact snapshots of a robosuite simulator (1.4 under LIBERO, 1.5): what `get_state()` leaves out.

The flat MuJoCo state (time, qpos, qvel, ...) reproduces the state vector bit for bit, but NOT the
future: robosuite keeps more state in Python and MuJoCo than that vector holds, and stepping after a
restore then drifts from stepping from the original (measured: up to 0.15 in qpos after 20 steps).
What else must come back (tests/test_planners.py: stepping after a restore equals stepping from the
original, bit for bit):

- the gripper's commanded opening `gripper.current_action` (it integrates the gripper actions);
- the observables' sampling clocks and last values (`regenerate_obs_from_state` forces a sample and
  shifts each observable's clock by one sim substep, so later observations come from another substep);
- the env's step counter, clock and done flag (`timestep`, `cur_time`, `done`: lookahead steps count
  toward robosuite's horizon of 1000 steps, after which `step` raises);
- the whole `MjData` (solver warm start, controls, applied forces, ...), copied with `mj_copyData`.
  MuJoCo < 3.5 has no `mj_copyData` in Python (LIBERO's pinned 3.3.2, robosuite 1.5's 3.3.1): there
  the full integration state (`mj_getState` with mjSTATE_INTEGRATION: everything `mj_step` reads
  from the past, warm start included) is restored, and every MjData array of the model's own sizes
  (positions, site frames, sensors: what observations read) is copied back as it was. Recomputing
  them with `mj_forward` instead is not the same: after `mj_step` they describe the state before
  the last integration, so an expert reading them would see other numbers.

Grippers are one per robot in robosuite 1.4 and a dict per arm in 1.5. The env adapters
(envs/libero.py, envs/robosuite15.py) offer `snapshot()` / `restore()` with this module.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np


def capture(renv: Any) -> dict[str, Any]:
    """Everything of robosuite env `renv` that stepping on reads beyond the flat MuJoCo state (opaque)."""
    import mujoco

    model = renv.sim.model._model
    if hasattr(mujoco, "mj_copyData"):
        data: Any = mujoco.MjData(model)
        mujoco.mj_copyData(data, model, renv.sim.data._data)
    else:  # mujoco < 3.5: the full integration state plus a copy of every array of MjData
        spec = int(mujoco.mjtState.mjSTATE_INTEGRATION)  # everything mj_step reads from the past
        state = np.empty(mujoco.mj_stateSize(model, spec), dtype=np.float64)
        mujoco.mj_getState(model, renv.sim.data._data, state, spec)
        data = (state, _data_arrays(renv.sim.data._data))
    observables = {
        name: (o._time_since_last_sample, o._sampled, o._current_delay, copy.deepcopy(o._current_observed_value))
        for name, o in renv._observables.items()
    }
    return {
        "data": data,
        "grippers": [_gripper_actions(robot) for robot in renv.robots],
        "clock": (renv.timestep, renv.cur_time, renv.done),
        "observables": observables,
        "obs_cache": copy.deepcopy(renv._obs_cache),
    }


def _data_arrays(data: Any) -> dict[str, np.ndarray]:
    """Copies of every numpy array field of an MjData (model-sized ones and the solver's arena views)."""
    arrays = {}
    for name in dir(data):
        if name.startswith("_"):
            continue
        value = getattr(data, name, None)
        if isinstance(value, np.ndarray):
            arrays[name] = value.copy()
    return arrays


def _put_data_arrays(data: Any, arrays: dict[str, np.ndarray]) -> None:
    """Write saved arrays back in place; arena views whose size changed since (constraint rows, contacts)
    are skipped: the next mj_step recomputes them before reading them."""
    for name, saved in arrays.items():
        current = getattr(data, name)
        if current.shape == saved.shape and current.flags.writeable:
            current[...] = saved


def _gripper_actions(robot: Any) -> Any:
    gripper = robot.gripper
    if isinstance(gripper, dict):  # bimanual robots: one gripper per arm
        return {arm: np.array(g.current_action, copy=True) for arm, g in gripper.items()}
    return np.array(gripper.current_action, copy=True)


def restore(renv: Any, saved: dict[str, Any]) -> None:
    """Put back what `capture` saved (call after the flat state is restored)."""
    import mujoco

    model = renv.sim.model._model
    if isinstance(saved["data"], tuple):
        state, arrays = saved["data"]
        mujoco.mj_setState(model, renv.sim.data._data, state, int(mujoco.mjtState.mjSTATE_INTEGRATION))
        _put_data_arrays(renv.sim.data._data, arrays)
    else:
        mujoco.mj_copyData(renv.sim.data._data, model, saved["data"])  # in place: views into it stay valid
    for robot, actions in zip(renv.robots, saved["grippers"]):
        if isinstance(actions, dict):
            for arm, value in actions.items():
                robot.gripper[arm].current_action = value.copy()
        else:
            robot.gripper.current_action = actions.copy()
    renv.timestep, renv.cur_time, renv.done = saved["clock"]
    for name, (since, sampled, delay, value) in saved["observables"].items():
        o = renv._observables[name]
        o._time_since_last_sample, o._sampled, o._current_delay = since, sampled, delay
        o._current_observed_value = copy.deepcopy(value)
    renv._obs_cache = copy.deepcopy(saved["obs_cache"])
