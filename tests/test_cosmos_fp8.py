"""FP8 DiT matmuls (policies/cosmos/fp8.py, option dit_precision = "fp8") on CPU with the tiny network.

- Fp8Linear: e4m3-sized error against the float32 layer (it does quantise), and the same numbers as a
  hand-written dequantised reference; all-zero tokens stay finite; one graph under torch.compile.
- quantize_dit: the blocks' attention and feed-forward layers, nothing else, traced as one graph.
- The tiny policy with FP8: finite actions of the right shape, deterministic, close to float32.
- Spec validation: the allowed values, and the GPU generation FP8 needs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robofleet.platform.errors import SpecError
from robofleet.policies.cosmos.factory import make_cosmos
from robofleet.policies.cosmos.fp8 import Fp8Linear
from tests.test_cosmos_fast import _observations

TINY = {"config": "tiny", "checkpoint": "random", "device": "cpu"}


def _linear(in_features: int = 512, out_features: int = 256, bias: bool = True) -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(in_features, out_features, bias=bias)


def _tokens(*shape: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=generator)
    return x * torch.rand(*shape[:-1], 1, generator=generator) * 10  # tokens of different magnitudes


def _relative_l2(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def test_fp8_linear_error_is_the_size_of_e4m3_rounding():
    linear = _linear()
    x = _tokens(3, 40, 512)
    with torch.no_grad():
        error = _relative_l2(linear(x), Fp8Linear(linear)(x))
    # e4m3 keeps 3 mantissa bits: ~2-3% RMS rounding per operand; the product carries both
    assert 0.01 < error < 0.06, error


def test_fp8_linear_is_the_dequantised_matmul():
    linear = _linear()
    layer = Fp8Linear(linear)
    x = _tokens(3, 40, 512)
    # by hand: one scale per weight row (output channel) and one per token, amax -> 448
    w = linear.weight.detach()
    w_scale = w.abs().amax(dim=1, keepdim=True) / 448
    w_q = (w / w_scale).to(torch.float8_e4m3fn)
    rows = x.reshape(-1, 512)
    x_scale = rows.abs().amax(dim=1, keepdim=True) / 448
    x_q = (rows / x_scale).to(torch.float8_e4m3fn)
    assert torch.equal(layer.weight.view(torch.uint8), w_q.view(torch.uint8))  # the same e4m3 bits
    assert torch.equal(layer.weight_scale, w_scale.t())
    reference = (x_q.float() * x_scale) @ (w_q.float() * w_scale).t() + linear.bias.detach()
    with torch.no_grad():
        out = layer(x)
    assert out.shape == (3, 40, 256) and out.dtype == torch.float32
    # the same numbers up to float32 summation order (torch._scaled_mm sums in its own order)
    torch.testing.assert_close(out.reshape(-1, 256), reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())


def test_all_zero_tokens_give_the_bias_and_no_nan():
    linear = _linear().to(torch.bfloat16)
    with torch.no_grad():
        out = Fp8Linear(linear)(torch.zeros(2, 512, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, linear.bias.detach().expand(2, -1))


def test_fp8_linear_compiles_as_one_graph_for_every_batch_size():
    import torch._dynamo as dynamo

    dynamo.reset()
    layer = Fp8Linear(_linear(bias=False))
    compiled = torch.compile(layer, fullgraph=True)
    with torch.no_grad():
        for batch in (2, 3, 5):  # static, then dynamic batch
            x = _tokens(batch, 16, 512)
            torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def reference():
    return make_cosmos(TINY, "libero")


@pytest.fixture(scope="module")
def fp8():
    return make_cosmos({**TINY, "dit_precision": "fp8"}, "libero")


def test_quantises_the_blocks_attention_and_feed_forward_only(fp8):
    transformer = fp8.network.transformer
    quantised = sorted(name for name, module in transformer.named_modules() if isinstance(module, Fp8Linear))
    per_block = ["attn1.to_k", "attn1.to_out.0", "attn1.to_q", "attn1.to_v", "attn2.to_k", "attn2.to_out.0",
                 "attn2.to_q", "attn2.to_v", "ff.net.0.proj", "ff.net.2"]
    blocks = len(transformer.transformer_blocks)
    assert quantised == sorted(f"transformer_blocks.{i}.{name}" for i in range(blocks) for name in per_block)
    kept = {name for name, module in transformer.named_modules() if isinstance(module, torch.nn.Linear)}
    assert {"patch_embed.proj", "proj_out", "transformer_blocks.0.norm1.linear_1"} <= kept  # stay in float32


def test_fp8_dit_traces_as_one_graph(fp8):
    network = fp8.network
    inputs = network.transformer_inputs(*fp8.random_dit_inputs(2))
    with torch.no_grad():
        explained = torch._dynamo.explain(network.transformer)(**inputs)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    scaled_mms = [node for node in explained.graphs[0].graph.nodes if "scaled_mm" in str(node.target)]
    assert len(scaled_mms) == 10 * len(network.transformer.transformer_blocks)


def test_fp8_policy_predicts_finite_deterministic_actions_close_to_float32(reference, fp8):
    observations = _observations(3, seed=5)
    seeds = [1, 2, 3]
    first = np.stack([p.actions for p in fp8.predict(observations, seeds)])
    again = np.stack([p.actions for p in fp8.predict(observations, seeds)])
    exact = np.stack([p.actions for p in reference.predict(observations, seeds)])
    assert first.shape == exact.shape == (3, fp8.layout.chunk_size, 7)
    assert np.isfinite(first).all()
    assert np.array_equal(first, again)
    # measured 0.4-0.7% (bfloat16 instead of FP8 gives ~0.3%): quantised, but the same actions
    assert 1e-4 < _relative_l2(exact, first) < 0.03


@pytest.mark.parametrize(("value", "message"), [
    ("fp16", "is not one of ('bf16', 'fp8')"),
    (8, "expected str"),
])
def test_bad_dit_precision_names_the_key_and_the_choices(value, message):
    with pytest.raises(SpecError) as err:
        make_cosmos({**TINY, "dit_precision": value}, "libero")
    assert err.value.key == "dit_precision"
    assert message in str(err.value)


def test_fp8_on_a_gpu_without_fp8_tensor_cores_is_a_spec_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(SpecError) as err:
        make_cosmos({**TINY, "device": "cuda", "dit_precision": "fp8"}, "libero")
    assert err.value.key == "dit_precision"
    assert "Hopper or Ada" in str(err.value) and "A100" in str(err.value)
