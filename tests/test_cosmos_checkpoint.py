"""Loading Cosmos Policy checkpoints, statistics and T5 embeddings in the released formats.

The tests write a tiny checkpoint the way NVIDIA's files look (a `.pt` state dict with `net.`
keys, produced by inverting our key table on a tiny diffusers model, plus training counters, RoPE
tables and a TransformerEngine `_extra_state`), a `*_dataset_statistics.json` and embeddings, into
a temporary Hugging Face cache laid out like the real one (models--owner--name/{blobs, refs/main,
snapshots/<sha>}). The policy then loads "nvidia/Cosmos-Policy-Tiny" through the same
`snapshot_download` call a user's `nvidia/...` repo id takes, with HF_HUB_OFFLINE=1. The only thing
not exercised is the download itself (no network here).

huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE into `huggingface_hub.constants` when it is
first imported, which happens before these tests run; besides setting the environment variables we
therefore patch those constants, which is what a fresh process would have read from them.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch

from robofleet.envs.contract import Observation
from robofleet.platform.errors import CheckpointError
from robofleet.policies.cosmos.checkpoint import locate_checkpoint, read_weights, to_diffusers_state_dict
from robofleet.policies.cosmos.config import TINY
from robofleet.policies.cosmos.embeddings import convert_t5_pickle, load_embeddings, save_embeddings
from robofleet.policies.cosmos.factory import make_cosmos
from robofleet.policies.cosmos.keymap import diffusers_to_nvidia
from robofleet.policies.cosmos.network import CosmosNetwork, transformer_shapes
from robofleet.policies.cosmos.stats import DatasetStats

REPO = "nvidia/Cosmos-Policy-Tiny"
VAE_REPO = "Wan-AI/Tiny-VAE"
INSTRUCTION = "put both the alphabet soup and the tomato sauce in the basket"
STATS = {
    "actions_min": [-0.9, -0.8, -0.7, -0.3, -0.3, -0.3, -1.0],
    "actions_max": [0.9, 0.8, 0.9, 0.3, 0.3, 0.3, 1.0],
    "actions_mean": [0.0] * 7, "actions_std": [0.1] * 7, "actions_median": [0.0] * 7,
    "proprio_min": [0.0, -0.04, -0.3, -0.3, 0.8, -1.0, -1.0, -1.0, -1.0],
    "proprio_max": [0.04, 0.0, 0.3, 0.3, 1.3, 1.0, 1.0, 1.0, 1.0],
    "proprio_mean": [0.0] * 9, "proprio_std": [0.1] * 9, "proprio_median": [0.0] * 9,
}


def _t5_like(seed: int) -> torch.Tensor:
    return torch.randn(1, 512, 1024, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


def _nvidia_state_dict(network: CosmosNetwork) -> dict[str, object]:
    """The tiny DiT's weights under NVIDIA's names, plus the non-weight entries real files carry."""
    names = diffusers_to_nvidia(TINY.transformer.num_layers)
    raw: dict[str, object] = {names[k]: v.to(torch.bfloat16) for k, v in network.transformer.state_dict().items()}
    raw["net.accum_iteration"] = torch.tensor(40000)
    raw["net.pos_embedder.seq"] = torch.arange(128.0)
    raw["net.blocks.0.self_attn._extra_state"] = io.BytesIO(b"transformer-engine state")
    return raw


def _write_snapshot(hub_cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Lay files out as huggingface_hub's cache does: content-addressed blobs, symlinked from a snapshot."""
    repo_dir = hub_cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    for name, content in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


def _file_bytes(write) -> bytes:
    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def source_network() -> CosmosNetwork:
    return CosmosNetwork.build(TINY, torch.device("cpu"), torch.float32, seed=123)


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source_network: CosmosNetwork) -> Path:
    """A temporary offline HF cache holding the tiny checkpoint repo and a tiny diffusers VAE repo."""
    hub_cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    embeddings_file = tmp_path / "emb.safetensors"
    save_embeddings({INSTRUCTION: _t5_like(0)}, embeddings_file)
    _write_snapshot(hub_cache, REPO, {
        "Cosmos-Policy-Tiny.pt": _file_bytes(lambda f: torch.save(_nvidia_state_dict(source_network), f)),
        "libero_dataset_statistics.json": json.dumps(STATS).encode(),
        "libero_t5_embeddings.safetensors": embeddings_file.read_bytes(),
    })
    vae_dir = tmp_path / "vae_export"
    source_network.vae.save_pretrained(vae_dir)
    _write_snapshot(hub_cache, VAE_REPO, {f"vae/{p.name}": p.read_bytes() for p in vae_dir.iterdir()})
    return hub_cache


def _observation(instruction: str = INSTRUCTION) -> Observation:
    rng = np.random.default_rng(0)
    images = {key: rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for key in ("agentview", "robot0_eye_in_hand")}
    return Observation(images=images, proprio=np.array(STATS["proprio_max"], np.float32) * 0.5, instruction=instruction)


def test_repo_id_loads_nvidia_weights_stats_and_embeddings_from_the_hf_cache(hub, source_network):
    policy = make_cosmos({"config": "tiny", "checkpoint": REPO, "vae": VAE_REPO}, "libero")

    loaded = policy.network.transformer.state_dict()
    for name, value in source_network.transformer.state_dict().items():
        assert torch.equal(loaded[name], value.to(torch.bfloat16).float()), name  # the file stored bf16
    for name, value in source_network.vae.state_dict().items():
        assert torch.equal(policy.network.vae.state_dict()[name], value), name
    assert policy.stats.actions_max.tolist() == STATS["actions_max"]
    assert str(hub) in policy.stats.source

    prediction = policy.predict([_observation()], [195])[0]
    assert prediction.actions.shape == (16, 7) and np.all(np.isfinite(prediction.actions))


def test_instruction_without_embedding_is_an_error_naming_it(hub):
    policy = make_cosmos({"config": "tiny", "checkpoint": REPO, "vae": VAE_REPO}, "libero")
    with pytest.raises(CheckpointError, match="open the top drawer"):
        policy.predict([_observation("open the top drawer")], [0])


def test_repo_missing_from_the_offline_cache_is_a_checkpoint_error(hub):
    with pytest.raises(CheckpointError, match="nvidia/Not-Cached"):
        make_cosmos({"config": "tiny", "checkpoint": "nvidia/Not-Cached", "vae": VAE_REPO}, "libero")


def test_unknown_and_missing_keys_are_listed(source_network):
    raw = _nvidia_state_dict(source_network)
    del raw["net.blocks.1.mlp.layer2.weight"]
    raw["net.blocks.0.bogus_proj.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        to_diffusers_state_dict(raw, transformer_shapes(TINY), TINY.transformer.num_layers, "tiny.pt")
    message = str(err.value)
    assert "1 unknown keys: net.blocks.0.bogus_proj.weight" in message
    assert "1 missing keys: net.blocks.1.mlp.layer2.weight" in message


def test_shape_mismatch_is_listed(source_network):
    raw = _nvidia_state_dict(source_network)
    raw["net.final_layer.linear.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"net.final_layer.linear.weight \(3, 3\) \(model \(64, 32\)\)"):
        to_diffusers_state_dict(raw, transformer_shapes(TINY), TINY.transformer.num_layers, "tiny.pt")


def test_weights_are_read_weights_only(tmp_path: Path):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "evil.pt"
    torch.save({"net.x": Payload()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        read_weights(path)


def _older_te_state_dict() -> dict[str, object]:
    """`net.` tensors plus `_extra_state` entries as older TransformerEngine saved them: BytesIO, often empty."""
    return {
        "net.blocks.0.self_attn.q_proj.weight": torch.arange(6.0).view(2, 3),
        "net.blocks.0.self_attn._extra_state": io.BytesIO(),  # pickled as the call bytes(): GLOBAL builtins.bytes
        "net.blocks.0.mlp._extra_state": io.BytesIO(b"fp8 scaling state"),
    }


@pytest.mark.parametrize("zip_format", [True, False])
def test_older_transformer_engine_bytesio_extra_state_loads(tmp_path: Path, zip_format: bool):
    path = tmp_path / "older_te.pt"
    torch.save(_older_te_state_dict(), path, _use_new_zipfile_serialization=zip_format)
    raw = read_weights(path)
    assert torch.equal(raw["net.blocks.0.self_attn.q_proj.weight"], torch.arange(6.0).view(2, 3))
    assert raw["net.blocks.0.self_attn._extra_state"].getvalue() == b""
    assert raw["net.blocks.0.mlp._extra_state"].getvalue() == b"fp8 scaling state"


def test_a_file_with_bytesio_and_another_global_is_still_refused(tmp_path: Path):
    import os

    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo code ran",))

    path = tmp_path / "evil.pt"
    torch.save({**_older_te_state_dict(), "net.x": RunsCode()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        read_weights(path)


def test_bytes_with_arguments_is_refused(tmp_path: Path):
    class HugeAllocation:
        def __reduce__(self):
            return (bytes, (10**12,))

    path = tmp_path / "huge.pt"
    torch.save({"net.x": HugeAllocation()}, path)
    with pytest.raises(CheckpointError, match="refusing builtins.bytes"):
        read_weights(path)


def test_the_allow_list_does_not_outlive_the_load(tmp_path: Path):
    path = tmp_path / "older_te.pt"
    torch.save(_older_te_state_dict(), path)
    read_weights(path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_missing_statistics_keys_are_named(tmp_path: Path):
    path = tmp_path / "libero_dataset_statistics.json"
    path.write_text(json.dumps({k: v for k, v in STATS.items() if k != "proprio_max"}))
    with pytest.raises(CheckpointError, match="proprio_max"):
        DatasetStats.load(path)


def _released_pickle(path: Path, table: dict[str, torch.Tensor]) -> None:
    with open(path, "wb") as handle:
        pickle.dump(table, handle)


def test_t5_pickle_is_refused_without_trust_pickle(tmp_path: Path):
    path = tmp_path / "libero_t5_embeddings.pkl"
    _released_pickle(path, {INSTRUCTION: _t5_like(1)})
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_embeddings(path, trust_pickle=False)
    assert load_embeddings(path, trust_pickle=True).lookup([INSTRUCTION]).shape == (1, 512, 1024)


def test_checkpoint_with_only_a_pickle_needs_trust_pickle(tmp_path: Path, source_network):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    torch.save(_nvidia_state_dict(source_network), directory / "model.pt")
    (directory / "libero_dataset_statistics.json").write_text(json.dumps(STATS))
    _released_pickle(directory / "libero_t5_embeddings.pkl", {INSTRUCTION: _t5_like(1)})
    assert locate_checkpoint(str(directory)).embeddings == directory / "libero_t5_embeddings.pkl"
    with pytest.raises(CheckpointError, match="trust_pickle"):
        make_cosmos({"config": "tiny", "checkpoint": str(directory), "vae": "random"}, "libero")


def test_converted_pickle_keeps_every_embedding_bit_for_bit(tmp_path: Path):
    table = {INSTRUCTION: _t5_like(1), "open the microwave": _t5_like(2)}
    source, target = tmp_path / "t5.pkl", tmp_path / "t5.safetensors"
    _released_pickle(source, table)
    assert convert_t5_pickle(source, target) == 2
    converted = load_embeddings(target, trust_pickle=False)
    for text, value in table.items():
        assert torch.equal(converted.lookup([text])[0], value[0])


def test_convert_embeddings_command_writes_safetensors(tmp_path: Path):
    from robofleet.jobs.cli import main

    source, target = tmp_path / "t5.pkl", tmp_path / "t5.safetensors"
    _released_pickle(source, {INSTRUCTION: _t5_like(3)})
    assert main(["convert-embeddings", str(source), str(target)]) == 0
    assert torch.equal(load_embeddings(target, trust_pickle=False).lookup([INSTRUCTION])[0], _t5_like(3)[0])
