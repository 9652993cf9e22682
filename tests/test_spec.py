"""Spec validation: bad input fails fast, naming the key and what is allowed."""
from __future__ import annotations

import pytest

from robofleet.platform.errors import SpecError
from robofleet.platform.spec import dump_spec_toml, load_spec, spec_from_dict
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
