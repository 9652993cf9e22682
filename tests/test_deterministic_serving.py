"""Deterministic serving (issue 21): the spec's defaults and identity, and the batch-invariant form of Cosmos.

The GPU property itself (bitwise-equal results over 100 requests in random batchings on the 2B fast
path) is measured by benchmarks/deterministic_serving.py on the GPU machine (BENCHMARKS.md); the
replica plumbing on CPU is in tests/test_replicas.py.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from robofleet.platform.errors import SpecError
from robofleet.platform.spec import DEFAULT_FIXED_BATCH, spec_from_dict
from tests.conftest import small_spec


def _spec(**serving):
    return spec_from_dict(small_spec(serving=serving))


def test_serving_is_deterministic_by_default_with_fixed_batch_at_most_max_batch():
    spec = _spec(replicas=1)
    assert spec.serving.deterministic is True and spec.serving.fixed_batch == min(DEFAULT_FIXED_BATCH, 8)
    assert _spec(replicas=1, max_batch=2).serving.fixed_batch == min(DEFAULT_FIXED_BATCH, 2)
    with pytest.raises(SpecError) as err:
        _spec(replicas=1, max_batch=2, fixed_batch=3)
    assert err.value.key == "serving.fixed_batch" and "<= 2" in str(err.value)


def test_identity_follows_the_row_count_and_keeps_the_pre_fixed_batch_hash_when_it_equals_max_batch():
    padded = _spec(replicas=1, max_batch=4, fixed_batch=4, deterministic=True)
    data = padded.to_dict()
    for key in ("run", "name"):
        data.pop(key)
    data["env"].pop("render_steps")
    if data["protocol"] == "robofleet":
        del data["protocol"]
    data.pop("serving")
    data["serving"] = {"deterministic": True, "max_batch": 4}  # how every spec hashed before fixed_batch
    old = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert padded.identity_hash() == old
    assert _spec(replicas=1, max_batch=4, fixed_batch=2).identity_hash() != old
    assert _spec(replicas=1, max_wait_ms=50.0).identity_hash() == _spec(replicas=1).identity_hash()
    in_process = _spec(replicas=0)
    assert in_process.identity_hash() == _spec(replicas=0, deterministic=False).identity_hash(), \
        "without replicas an episode's batches never mix: serving does not enter the identity"


def test_make_batch_invariant_swaps_every_linear_in_place_and_keeps_the_state_dict():
    from robofleet.policies.cosmos.gelu_epilogue import EpilogueGELU
    from robofleet.policies.cosmos.invariant_matmul import InvariantEpilogueGELU, InvariantLinear, make_batch_invariant

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), EpilogueGELU(nn.Linear(16, 32)), nn.Linear(32, 4, bias=False))
    keys = list(model.state_dict())
    x = torch.randn(5, 8)
    before = model(x)
    assert make_batch_invariant(model) == 3
    assert isinstance(model[0], InvariantLinear) and isinstance(model[1], InvariantEpilogueGELU)
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(model(x), before)  # CPU: torch's own linear and exact GELU, as before


def test_cosmos_batch_invariant_form_on_the_cpu_runs_every_call_on_fixed_rows():
    from robofleet.envs.contract import Observation
    from robofleet.policies.registry import make_policy

    policy = make_policy("cosmos", {"config": "tiny", "device": "cpu"}, "libero")
    invariant = policy.batch_invariant(3)
    assert (invariant.settings.pad_to, invariant.settings.encode_rows) == (3, 0)
    rng = np.random.default_rng(3)
    observations = [Observation(images={k: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
                                        for k in ("agentview", "robot0_eye_in_hand")},
                                proprio=rng.normal(size=9).astype(np.float32), instruction="open the drawer")
                    for _ in range(4)]
    together = invariant.predict(observations, [1, 2, 3, 4])
    assert {p.stats["batch_size"] for p in together} == {3}
    for i in (0, 3):
        alone = invariant.predict([observations[i]], [i + 1])[0]
        assert np.array_equal(alone.actions, together[i].actions)


def test_a_whole_graph_compile_can_be_replaced_by_per_block_compiles_before_the_first_call():
    """The batch-invariant form on CUDA swaps a whole-graph compile for per-block ones (1/100 requests still
    differed with the whole graph on an H200, none per block): the swap itself, checked on the CPU."""
    from robofleet.policies.registry import make_policy

    policy = make_policy("cosmos", {"config": "tiny", "device": "cpu", "compile": "full", "compile_mode": "default"},
                         "libero")
    network = policy.network
    assert network.compiled == ("full", "default") and network.transformer._compiled_call_impl is not None
    network.recompile("blocks", "default")
    assert network.compiled == ("blocks", "default") and network.transformer._compiled_call_impl is None
    assert all(block._compiled_call_impl is not None for block in network.transformer.transformer_blocks)
    eager = make_policy("cosmos", {"config": "tiny", "device": "cpu"}, "libero")
    from robofleet.envs.contract import Observation

    rng = np.random.default_rng(5)
    obs = Observation(images={k: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
                              for k in ("agentview", "robot0_eye_in_hand")},
                      proprio=rng.normal(size=9).astype(np.float32), instruction="open the drawer")
    np.testing.assert_allclose(policy.predict([obs], [3])[0].actions, eager.predict([obs], [3])[0].actions, atol=1e-5)
