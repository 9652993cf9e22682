"""Spec validation: bad input fails fast, naming the key and what is allowed."""
from __future__ import annotations

import pytest

from robofleet.envs import robocasa_tasks, robosuite_tasks
from robofleet.platform.config_fields import table_keys
from robofleet.platform.errors import SpecError
from robofleet.platform.spec import (
    DEFAULT_FIXED_BATCH, ENV_KEYS, ENV_TABLES, SERVING_KEYS, EnvSpec, ServingSpec, ServingTable, dump_spec_toml,
    load_spec, spec_from_dict,
)
from tests.conftest import small_spec


def with_env(**changes):
    spec = small_spec()
    spec["env"] = {**spec["env"], **changes}
    return spec


def test_valid_spec_round_trips_through_its_frozen_toml(tmp_path):
    spec = spec_from_dict(small_spec())
    path = tmp_path / "spec.toml"
    path.write_text(dump_spec_toml(spec))
    assert load_spec(path) == spec


def test_tasks_all_expands_to_every_task_of_the_suite():
    spec = spec_from_dict(with_env(suite="libero_90", tasks="all"))
    assert spec.env.tasks == tuple(range(90))


@pytest.mark.parametrize(
    "spec, key, words",
    [
        (with_env(suite="libero_100k"), "env.suite", "libero_spatial"),
        (with_env(tasks=[10]), "env.tasks", "0..9"),
        (with_env(trials=0), "env.trials", ">= 1"),
        (with_env(trials=-3), "env.trials", ">= 1"),
        (with_env(trials=51), "env.trials", "<= 50"),
        (with_env(colour="red"), "env.colour", "allowed keys"),
        (with_env(family="robocasa9"), "env.family", "libero"),
        (with_env(reset="medium"), "env.reset", "hard, soft"),
        ({**small_spec(), "sed": 1}, "sed", "allowed keys"),
        ({**small_spec(), "policy": {"name": "gpt"}}, "policy.name", "scripted"),
        ({**small_spec(), "planner": {"name": "mcts"}}, "planner.name", "direct"),
        ({**small_spec(), "run": {"workers": 0}}, "run.workers", ">= 1"),
    ],
)
def test_bad_spec_names_the_key_and_the_allowed_values(spec, key, words):
    with pytest.raises(SpecError) as err:
        spec_from_dict(spec)
    assert err.value.key == key
    assert words in str(err.value)


def test_missing_required_key_is_named():
    spec = small_spec()
    del spec["env"]["trials"]
    with pytest.raises(SpecError, match="env.trials: missing"):
        spec_from_dict(spec)


def test_malformed_toml_is_a_spec_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("seed = \n[env")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(path)


def test_spec_hash_ignores_worker_count():
    a = spec_from_dict(small_spec())
    b = spec_from_dict({**small_spec(), "run": {"workers": 4}})
    assert a.identity_hash() == b.identity_hash()


# -- [env]: each family's table (spec.ENV_TABLES) ----------------------------------------------------
def error_of(env: dict) -> str:
    with pytest.raises(SpecError) as err:
        spec_from_dict({**small_spec(), "env": env})
    return str(err.value)


def test_every_family_reads_the_same_env_keys_and_the_unknown_key_text_lists_them_in_order():
    for table in ENV_TABLES.values():
        assert sorted(("family", *table_keys(table))) == sorted(ENV_KEYS)
        assert set(table_keys(table)) <= {f.name for f in EnvSpec.__dataclass_fields__.values()}
    assert error_of(with_env(colour="red")["env"]) == (
        "env.colour: unknown key; allowed keys here: family, suite, tasks, trials, image_size, render_cameras, "
        "render_steps, reset, max_steps, cameras")


def test_default_cameras_are_ones_every_task_renders():
    """Defaults are not checked when the table leaves a key out: they must be valid for every task."""
    for task in robosuite_tasks.ROBOSUITE_SUITES[robosuite_tasks.DEFAULT_SUITE].tasks:
        assert set(robosuite_tasks.DEFAULT_CAMERAS) <= set(task.cameras), task.name
    assert spec_from_dict(small_spec(env={"family": "robocasa", "tasks": [0], "trials": 1})).env.cameras == \
        robocasa_tasks.CAMERAS


@pytest.mark.parametrize("env, message", [
    # the first bad key in the family's order of checks is the one named
    ({"family": "libero", "suite": "libero_object", "tasks": [10], "trials": 0}, "env.tasks: task id 10 out of range"),
    ({"family": "libero", "suite": "libero_object", "trials": 0}, "env.tasks: missing (required)"),
    ({"family": "libero", "suite": "libero_90", "tasks": [10], "cameras": []},
     "env.cameras: LIBERO renders agentview and robot0_eye_in_hand (fixed)"),
    ({"family": "libero", "suite": "libero_object", "tasks": [0], "trials": 1, "render_steps": "x", "reset": "x"},
     "env.render_steps: unknown value 'x'"),
    ({"family": "robocasa", "tasks": ["Nope"], "trials": 1, "reset": "soft"}, "env.reset: robocasa builds a fresh"),
    ({"family": "robosuite", "tasks": ["Lift"], "trials": 1, "cameras": ["x"], "max_steps": 0},
     "env.max_steps: must be >= 1, got 0"),
    ({"family": "robosuite", "suite": "nope", "tasks": ["Lift"]}, "env.suite: unknown value 'nope'; allowed: single_arm"),
    ({"family": "robosuite", "tasks": ["Lift", 0], "trials": 1}, "env.tasks: duplicate tasks in ['Lift', 0]"),
])
def test_env_errors_come_in_the_familys_order_of_checks(env, message):
    assert error_of(env).startswith(message)


def test_max_steps_none_means_the_default():
    """A Python caller (a sweep) may pass None for "the default": TOML cannot."""
    for env in (with_env(max_steps=None)["env"], {"family": "robosuite", "tasks": ["Lift"], "trials": 1, "max_steps": None}):
        assert spec_from_dict({**small_spec(), "env": env, "policy": {"name": "zero"}}).env.max_steps is None


# -- [serving] (spec.ServingTable) ------------------------------------------------------------------
def serving_error(serving: dict) -> str:
    with pytest.raises(SpecError) as err:
        spec_from_dict(small_spec(serving=serving))
    return str(err.value)


def test_serving_table_declares_every_serving_spec_key_with_its_default():
    assert sorted(table_keys(ServingTable)) == sorted(SERVING_KEYS)
    assert spec_from_dict(small_spec()).serving == ServingSpec() == spec_from_dict(small_spec(serving={})).serving
    # a default is not checked: fixed_batch's must fit the smallest max_batch
    assert spec_from_dict(small_spec(serving={"max_batch": 1})).serving.fixed_batch == DEFAULT_FIXED_BATCH == 1
    assert serving_error({"mode": 1}) == (
        "serving.mode: unknown key; allowed keys here: replicas, max_batch, max_wait_ms, deterministic, fixed_batch, "
        "gpus_per_replica, cpus_per_replica")


@pytest.mark.parametrize("serving, message", [
    ({"replicas": -1, "max_batch": 0}, "serving.max_batch: must be >= 1, got 0"),  # first: it bounds fixed_batch
    ({"replicas": 1025, "max_wait_ms": -1}, "serving.replicas: must be <= 1024, got 1025"),
    ({"max_wait_ms": "5", "deterministic": 1}, "serving.max_wait_ms: must be a number >= 0.0, got '5'"),
    ({"deterministic": 1, "fixed_batch": 0}, "serving.deterministic: must be true or false, got 1"),
    ({"max_batch": 4, "fixed_batch": 5, "gpus_per_replica": -1}, "serving.fixed_batch: must be <= 4, got 5"),
    ({"gpus_per_replica": -1, "cpus_per_replica": -1}, "serving.gpus_per_replica: must be a number >= 0.0, got -1"),
    ({"cpus_per_replica": True}, "serving.cpus_per_replica: must be a number >= 0.0, got True"),
])
def test_serving_errors_come_in_the_order_of_checks(serving, message):
    assert serving_error(serving) == message


def test_serving_numbers_are_stored_as_floats_and_gpus_none_means_the_cluster_decides():
    table = {"max_wait_ms": 2, "gpus_per_replica": None, "cpus_per_replica": 3}
    serving = spec_from_dict(small_spec(serving=table)).serving
    assert (serving.max_wait_ms, serving.gpus_per_replica, serving.cpus_per_replica) == (2.0, None, 3.0)
    assert type(serving.max_wait_ms) is float and type(serving.cpus_per_replica) is float
    assert spec_from_dict(small_spec(serving={"gpus_per_replica": 1})).serving.gpus_per_replica == 1.0
