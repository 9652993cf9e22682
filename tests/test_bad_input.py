"""Bad input fails on the driver before Ray starts, with a message that names the problem and the fix.

Every case goes through `robofleet run` (jobs/cli.py) with Ray's start replaced by a tripwire:
an error that reached Ray (or a simulator) would trip it instead of printing the expected message.
Single-key spec errors are tabulated in tests/test_spec.py and fuzzed in tests/test_spec_fuzz.py;
checkpoint readers are unit-tested in tests/test_cosmos_checkpoint.py. Here: the same failures as a
user meets them, from the command line, before any simulation.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import tomli_w
import torch

from robofleet.jobs.cli import main
from robofleet.policies.cosmos.config import TINY
from robofleet.policies.cosmos.embeddings import save_embeddings
from tests.conftest import small_spec
from tests.test_cosmos_checkpoint import INSTRUCTION, STATS, _nvidia_state_dict, _t5_like

# The instruction of libero_10 task 0, which INSTRUCTION (tests/test_cosmos_checkpoint.py) embeds.
LIBERO_10_TASK0 = {"family": "libero", "suite": "libero_10", "tasks": [0], "trials": 1, "image_size": 64,
                   "render_cameras": True, "max_steps": 4}


@pytest.fixture()
def no_ray(monkeypatch):
    """Replace every way the CLI starts or joins Ray with a tripwire."""
    import robofleet.platform.cluster as cluster
    import robofleet.platform.runner as runner

    def tripwire(*args, **kwargs):
        raise AssertionError("Ray was started: the error was not caught on the driver")

    monkeypatch.setattr(runner, "connect", tripwire)
    monkeypatch.setattr(cluster, "connect", tripwire)


def robofleet_run(tmp_path: Path, capsys, doc: dict | str, *extra: str) -> tuple[int, str]:
    """`robofleet run SPEC --out tmp/out` in-process; (exit code, stderr)."""
    path = tmp_path / "spec.toml"
    path.write_text(doc if isinstance(doc, str) else tomli_w.dumps(doc))
    code = main(["run", str(path), "--no-progress", *(extra or ("--out", str(tmp_path / "out")))])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def with_env(**changes) -> dict:
    doc = small_spec()
    doc["env"] = {**doc["env"], **changes}
    return doc


@pytest.mark.parametrize("doc, words", [
    ("seed = 0\n[env\nfamily = ", "is not valid TOML"),
    (with_env(family="mujoco"), "env.family: unknown value 'mujoco'; allowed: libero, robosuite, robocasa"),
    (with_env(suite="libero_100"), "env.suite: unknown value 'libero_100'; allowed: libero_spatial"),
    (with_env(tasks=[10]), "env.tasks: task id 10 out of range: libero_object has tasks 0..9"),
    ({**small_spec(), "policy": {"name": "gpt"}}, "policy.name: unknown value 'gpt'; allowed: cosmos"),
    ({**small_spec(), "planner": {"name": "mcts"}}, "planner.name: unknown value 'mcts'; allowed: direct, best_of_n"),
    (with_env(trials=51), "env.trials: must be <= 50, got 51"),
    (with_env(image_size=8), "env.image_size: must be >= 32, got 8"),
    ({**small_spec(), "policy": {"name": "zero", "chunk_size": 0}}, "policy.chunk_size: must be an integer >= 1"),
    ({**small_spec(), "policy": {"name": "noisy", "base": "scriptd"}}, "policy.base: unknown policy 'scriptd'"),
    ({**small_spec(), "policy": {"name": "noisy", "base": "scripted", "base_options": {"speed": 2}}},
     "policy.base_options.speed: must be a number in [0.05, 1.0], got 2"),
    ({**small_spec(), "policy": {"name": "cosmos", "config": "tiny", "action_step": 5}},
     "policy.action_step: unknown cosmos option; allowed:"),
    ({**small_spec(), "policy": {"name": "cosmos", "config": "tiny"}},
     "env.render_cameras: policy 'cosmos' reads camera images: set env.render_cameras = true"),
])
def test_a_bad_spec_fails_before_ray_naming_the_key_and_the_allowed_values(no_ray, tmp_path, capsys, doc, words):
    code, err = robofleet_run(tmp_path, capsys, doc)
    assert code == 2 and words in err, err


def test_scripted_on_a_robosuite_task_other_than_lift_names_the_task_and_the_supported_ones(no_ray, tmp_path, capsys):
    doc = {**small_spec(), "env": {"family": "robosuite", "tasks": ["Lift", "Stack"], "trials": 1},
           "policy": {"name": "scripted"}}
    code, err = robofleet_run(tmp_path, capsys, doc)
    assert code == 2
    assert "env.tasks: policy 'scripted' has no expert for robosuite task(s) Stack; it supports Lift" in err


def test_scripted_on_a_libero_task_that_is_not_pick_and_place_names_the_goal(no_ray, tmp_path, capsys):
    doc = {**small_spec(), "env": {**small_spec()["env"], "suite": "libero_goal", "tasks": [0, 8]},
           "policy": {"name": "scripted"}}
    code, err = robofleet_run(tmp_path, capsys, doc)
    assert code == 2
    assert "env.tasks: policy 'scripted' picks and places (on / in goals); libero_goal task(s) 0 " in err
    assert "(open wooden_cabinet_1_middle_region)" in err and "8 (" not in err


def test_cosmos_on_a_torch_free_family_needs_replicas(no_ray, tmp_path, capsys):
    doc = {**small_spec(), "env": {"family": "robosuite", "tasks": ["Lift"], "trials": 1},
           "policy": {"name": "cosmos", "config": "tiny"}}
    code, err = robofleet_run(tmp_path, capsys, doc)
    assert code == 2 and "serving.replicas: env workers of family 'robosuite' run without torch" in err


def test_an_unwritable_output_directory_fails_before_ray(no_ray, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, err = robofleet_run(tmp_path, capsys, small_spec(), "--out", str(blocker / "run"))
    assert code == 2
    assert f"--out {blocker / 'run'}: cannot write there" in err and "choose another directory" in err


# -- cosmos checkpoints, statistics and embeddings ------------------------------------------------
@pytest.fixture(scope="module")
def tiny_raw() -> dict:
    from robofleet.policies.cosmos.network import CosmosNetwork

    return _nvidia_state_dict(CosmosNetwork.build(TINY, torch.device("cpu"), torch.float32, seed=1))


def checkpoint_dir(root: Path, raw: dict, stats: dict | None = None, embeddings: str = "safetensors",
                   instruction: str = INSTRUCTION) -> Path:
    """A checkpoint directory in the released layout: weights .pt, statistics JSON, T5 embeddings."""
    directory = root / "ckpt"
    directory.mkdir()
    torch.save(raw, directory / "model.pt")
    (directory / "libero_dataset_statistics.json").write_text(json.dumps(stats or STATS))
    if embeddings == "safetensors":
        save_embeddings({instruction: _t5_like(0)}, directory / "libero_t5_embeddings.safetensors")
    else:
        with open(directory / "libero_t5_embeddings.pkl", "wb") as handle:
            pickle.dump({instruction: _t5_like(0)}, handle)
    return directory


def cosmos_doc(checkpoint: Path | str, **options) -> dict:
    return {**small_spec(), "env": LIBERO_10_TASK0,
            "policy": {"name": "cosmos", "config": "tiny", "checkpoint": str(checkpoint), "vae": "random",
                       "device": "cpu", **options}}


def test_a_sound_checkpoint_passes_the_driver_checks(tiny_raw, tmp_path):
    from robofleet.platform.preflight import validate_before_ray
    from robofleet.platform.spec import spec_from_dict

    validate_before_ray(spec_from_dict(cosmos_doc(checkpoint_dir(tmp_path, tiny_raw))))


def test_a_missing_checkpoint_directory_is_named(no_ray, tmp_path, capsys):
    code, err = robofleet_run(tmp_path, capsys, cosmos_doc(tmp_path / "nowhere"))
    assert code == 2 and f"policy.checkpoint: '{tmp_path / 'nowhere'}' is neither an existing directory" in err
    assert not (tmp_path / "out" / "spec.toml").exists(), "the run directory is not claimed by a spec that cannot run"


def test_a_repo_id_missing_from_the_offline_cache_is_named(no_ray, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code, err = robofleet_run(tmp_path, capsys, cosmos_doc("nvidia/Not-Downloaded"))
    assert code == 2 and "'nvidia/Not-Downloaded' is not in the local Hugging Face cache and HF_HUB_OFFLINE" in err


def test_a_corrupt_checkpoint_is_named(no_ray, tiny_raw, tmp_path, capsys):
    directory = checkpoint_dir(tmp_path, tiny_raw)
    (directory / "model.pt").write_bytes(b"PK\x03\x04 truncated download")
    code, err = robofleet_run(tmp_path, capsys, cosmos_doc(directory))
    assert code == 2 and f"cannot read {directory / 'model.pt'} as a weights-only torch checkpoint" in err


def test_state_dict_keys_and_shapes_that_do_not_match_are_listed(no_ray, tiny_raw, tmp_path, capsys):
    raw = dict(tiny_raw)
    del raw["net.blocks.1.mlp.layer2.weight"]
    raw["net.final_layer.linear.weight"] = torch.zeros(3, 3)
    code, err = robofleet_run(tmp_path, capsys, cosmos_doc(checkpoint_dir(tmp_path, raw)))
    assert code == 2 and "does not match the 2-block network" in err
    assert "1 missing keys: net.blocks.1.mlp.layer2.weight" in err
    assert "net.final_layer.linear.weight (3, 3) (model (64, 32))" in err


def test_statistics_missing_keys_are_named(no_ray, tiny_raw, tmp_path, capsys):
    stats = {k: v for k, v in STATS.items() if k != "actions_max"}
    code, err = robofleet_run(tmp_path, capsys, cosmos_doc(checkpoint_dir(tmp_path, tiny_raw, stats=stats)))
    assert code == 2 and "lack ['actions_max']" in err


def test_an_instruction_missing_from_the_embeddings_is_named(no_ray, tiny_raw, tmp_path, capsys):
    directory = checkpoint_dir(tmp_path, tiny_raw, instruction="open the top drawer")
    code, err = robofleet_run(tmp_path, capsys, cosmos_doc(directory))
    assert code == 2 and f"no T5 embedding for instruction {INSTRUCTION!r}" in err
    assert "add these instructions' embeddings to the file" in err


def test_a_pickle_without_trust_pickle_is_refused_with_the_conversion_command(no_ray, tiny_raw, tmp_path, capsys):
    directory = checkpoint_dir(tmp_path, tiny_raw, embeddings="pickle")
    code, err = robofleet_run(tmp_path, capsys, cosmos_doc(directory))
    assert code == 2 and "refusing to unpickle" in err and "robofleet convert-embeddings" in err


def test_a_bad_point_of_a_sweep_fails_before_the_first_point_runs(no_ray, tmp_path, capsys):
    doc = {**small_spec(), "sweep": {"name": "mixed"},
           "grid": [{"policy": [{"name": "zero"}, {"name": "cosmos", "config": "tiny", "checkpoint": "/nowhere/x"}],
                     "env.render_cameras": [True]}]}
    code, err = robofleet_run(tmp_path, capsys, doc)
    assert code == 2 and "policy.checkpoint: '/nowhere/x' is neither an existing directory" in err


@pytest.mark.parametrize("workers", [0, 5000, 2.5, True])
def test_the_python_api_checks_workers_as_the_cli_and_the_spec_do(no_ray, tmp_path, workers):
    """run(workers=...) has the bounds of [run] workers and of --workers (1..1024), before Ray and before
    the run directory is claimed."""
    from robofleet.platform.errors import SpecError
    from robofleet.platform.runner import run
    from robofleet.platform.spec import spec_from_dict
    from tests.conftest import small_spec

    with pytest.raises(SpecError, match=r"^workers: .* env workers: give an integer in 1\.\.1024"):
        run(spec_from_dict(small_spec()), tmp_path / "out", workers=workers)
    assert not (tmp_path / "out").exists()
