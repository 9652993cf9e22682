"""protocol = "reference" evaluates what NVlabs/cosmos-policy's published LIBERO evaluation evaluates
(platform/protocol.py); "robofleet" seeds scenes and noise per episode. Real LIBERO physics."""
from __future__ import annotations

import os

import numpy as np
import pytest

from robofleet.envs.libero import LiberoEnv
from robofleet.platform.episode_loop import run_episode
from robofleet.planners.direct import Direct
from robofleet.platform.episodes import expand_episodes
from robofleet.platform.errors import SpecError
from robofleet.platform.protocol import executed_actions, scene_seed
from robofleet.platform.seeds import query_seed
from robofleet.platform.spec import spec_from_dict
from robofleet.policies.contract import Prediction
from tests.conftest import small_spec

SPATIAL_TASK = 0  # libero_spatial: its layout (cabinet, stove, plate) depends on numpy's state at reset


def _reference_env_body_pos(task_id: int, trial: int) -> np.ndarray:
    """What the reference's get_libero_env + run_episode build: a plain OffScreenRenderEnv, env.seed(0),
    reset, set_init_state (libero_utils.py, run_libero_eval.py); returns the model's body positions."""
    from robofleet.envs.libero_setup import prepare_libero

    prepare_libero()
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    suite = benchmark.get_benchmark_dict()["libero_spatial"]()
    task = suite.get_task(task_id)
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=64, camera_widths=64)
    try:
        env.seed(0)
        np.random.seed(0)  # --deterministic True: set_seed_everywhere(0) before every step, so before reset
        env.reset()
        env.set_init_state(suite.get_task_init_states(task_id)[trial])
        return np.array(env.env.sim.model.body_pos, copy=True)
    finally:
        env.close()


@pytest.fixture(scope="module")
def spatial_env():
    env = LiberoEnv("libero_spatial", image_size=64, render_cameras=False, reseed_every_step=True)
    yield env
    env.close()


def _body_pos_after_reset(env: LiberoEnv, trial: int, seed: int) -> np.ndarray:
    env.reset(SPATIAL_TASK, trial, seed)
    return np.array(env._env.env.sim.model.body_pos, copy=True)


@pytest.mark.slow
def test_reference_scenes_place_fixtures_as_a_plain_env_seeded_0(spatial_env):
    reference = _reference_env_body_pos(SPATIAL_TASK, trial=3)
    episode = next(e for e in expand_episodes(spec_from_dict(small_spec(
        env={"family": "libero", "suite": "libero_spatial", "tasks": [SPATIAL_TASK], "trials": 5}))) if e.trial == 3)
    assert episode.protocol == "reference" and episode.scene_seed == 0
    assert np.array_equal(_body_pos_after_reset(spatial_env, 3, episode.scene_seed), reference)


@pytest.mark.slow
def test_randomised_scenes_move_the_fixtures(spatial_env):
    spec = spec_from_dict(small_spec(protocol="robofleet",
                                     env={"family": "libero", "suite": "libero_spatial", "tasks": [0], "trials": 1}))
    [episode] = expand_episodes(spec)
    assert episode.scene_seed == episode.seed != 0
    moved = _body_pos_after_reset(spatial_env, 0, episode.scene_seed)
    reference = _body_pos_after_reset(spatial_env, 0, 0)
    shift = np.abs(moved - reference).max()
    assert 0 < shift < 0.05  # fixtures move, by millimetres to centimetres


def test_reference_is_the_default_for_libero_and_robofleet_for_robosuite():
    assert spec_from_dict(small_spec()).protocol == "reference"
    robosuite = small_spec(env={"family": "robosuite", "tasks": ["Lift"], "trials": 1})
    assert spec_from_dict(robosuite).protocol == "robofleet"
    with pytest.raises(SpecError, match="protocol.*does not apply to env family 'robosuite'"):
        spec_from_dict({**robosuite, "protocol": "reference"})


def test_unknown_protocol_is_refused_naming_the_allowed_values():
    with pytest.raises(SpecError, match="protocol.*allowed: reference, robofleet"):
        spec_from_dict(small_spec(protocol="paper"))


def test_protocol_is_part_of_the_run_identity():
    assert (spec_from_dict(small_spec()).identity_hash()
            != spec_from_dict(small_spec(protocol="robofleet")).identity_hash())


def test_reference_query_seeds_are_the_run_seed_robofleet_derives_them():
    [ref, *_] = expand_episodes(spec_from_dict(small_spec(seed=195)))
    assert [ref.decision_seed(i) for i in range(4)] == [195] * 4  # cfg.seed for every query (direct)
    [own, *_] = expand_episodes(spec_from_dict(small_spec(seed=195, protocol="robofleet")))
    assert [own.decision_seed(i) for i in range(3)] == [query_seed(own.seed, i) for i in range(3)]
    assert len({own.decision_seed(i) for i in range(3)}) == 3


def test_robocasa_reference_scene_seed_is_seed_times_trial_times_256():
    assert scene_seed("reference", "robocasa", sweep_seed=195, trial=3, episode_seed=12345) == 195 * 3 * 256
    assert scene_seed("robofleet", "robocasa", sweep_seed=195, trial=3, episode_seed=12345) == 12345


def test_reference_executes_the_last_k_actions_on_libero_the_first_elsewhere():
    chunk = list(range(16))
    assert list(executed_actions("reference", "libero", chunk, 4)) == [12, 13, 14, 15]  # deque(maxlen=4)
    assert list(executed_actions("reference", "robocasa", chunk, 4)) == [0, 1, 2, 3]
    assert list(executed_actions("robofleet", "libero", chunk, 4)) == [0, 1, 2, 3]
    assert list(executed_actions("reference", "libero", chunk, None)) == chunk


class _Recorder:
    """A policy that records the seeds it is asked with and returns a distinct action per index."""

    def __init__(self):
        self.seeds: list[int] = []

    def predict(self, observations, seeds):
        self.seeds += list(seeds)
        chunk = np.zeros((4, 7), dtype=np.float32)
        chunk[:, 0] = np.arange(4) * 0.1
        chunk[:, 6] = -1
        return [Prediction(actions=chunk) for _ in observations]

    def reset(self):
        pass


class _ActionLog:
    """Wraps a LiberoEnv and records the actions it is stepped with."""

    def __init__(self, env, max_steps):
        self.env, self.actions, self.max_steps = env, [], max_steps

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, action, render=True):
        self.actions.append(float(action[0]))
        return self.env.step(action, render)


def test_reference_rollout_uses_the_run_seed_and_the_last_actions(spatial_env):
    spec = spec_from_dict(small_spec(seed=195, policy={"name": "random", "chunk_size": 4, "open_loop_steps": 2},
                                     env={"family": "libero", "suite": "libero_spatial", "tasks": [0], "trials": 1,
                                          "render_cameras": False, "max_steps": 6}))
    [episode] = expand_episodes(spec)
    policy, env = _Recorder(), _ActionLog(spatial_env, max_steps=6)
    row = run_episode(env, Direct(policy), episode, open_loop_steps=2)
    assert row["error"] == "" and row["steps"] == 6
    assert policy.seeds == [195, 195, 195]
    assert env.actions == pytest.approx([0.2, 0.3] * 3)


def _old_run_dir(root, spec):
    """A run directory as robofleet wrote it before protocols: no `protocol` in spec.toml, an
    episodes.csv without the protocol and later columns."""
    import csv

    from robofleet.platform.results import EPISODE_COLUMNS
    from robofleet.platform.spec import dump_spec_toml

    root.mkdir()
    (root / "spec.toml").write_text("\n".join(l for l in dump_spec_toml(spec).splitlines()
                                              if not l.startswith("protocol")) + "\n")
    old = [c for c in EPISODE_COLUMNS if c not in ("protocol", "started_at", "ended_at", "remote_s")]
    with (root / "episodes.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old)
        writer.writeheader()
        writer.writerow({c: {"episode_id": "libero/libero_object/task00/trial000/seed7", "success": 1}.get(c, "")
                         for c in old})


def test_a_run_directory_from_before_protocols_resumes_only_under_its_own_protocol(tmp_path):
    from robofleet.platform.results import RunDirError, RunStore, read_rows

    own = spec_from_dict(small_spec(protocol="robofleet"))
    _old_run_dir(tmp_path / "run", own)
    with pytest.raises(RunDirError, match="different spec"):  # the old spec.toml means protocol robofleet
        RunStore(tmp_path / "run", spec_from_dict(small_spec()))
    store = RunStore(tmp_path / "run", own)  # resumes, and the header is upgraded so new rows line up
    store.append({"episode_id": "libero/libero_object/task00/trial001/seed7", "success": 0, "protocol": "robofleet"})
    rows = read_rows(store.root)
    assert [r["episode_id"][-14:] for r in rows] == ["trial000/seed7", "trial001/seed7"]
    assert rows[0]["protocol"] == "" and rows[1]["protocol"] == "robofleet" and rows[1]["success"] == "0"


def test_compare_refuses_runs_of_different_protocols(tmp_path):
    from robofleet.platform.compare import CompareError, compare_runs
    from robofleet.platform.results import RunStore

    for name, protocol in (("ref", "reference"), ("own", "robofleet")):
        spec = spec_from_dict(small_spec(protocol=protocol))
        [episode, *_] = expand_episodes(spec)
        row = {**episode.to_dict(), "task": "t", "success": 1, "steps": 3, "queries": 1, "error": "", "attempts": 1,
               **{k: 0.1 for k in ("wall_s", "reset_s", "policy_s", "queue_s", "model_s", "env_s", "remote_s")}}
        RunStore(tmp_path / name, spec).append(row)
    with pytest.raises(CompareError, match="protocol 'reference'.*protocol 'robofleet'.*do not pair"):
        compare_runs(tmp_path / "ref", tmp_path / "own")
