"""The fast inference path (issue 9) on CPU with the tiny network: it changes no result.

- VAE encode of only the latent frames the DiT reads, resumed after the cached constant prefix:
  bitwise the latents of the full encode, and bitwise the same actions, futures and values, in all
  three inference modes and for the RoboCasa layout.
- the adaLN-LoRA modulation once per latent frame instead of per token: the same values.
- torch.compile of the DiT blocks: the same actions within float32 noise, compiled once for a first
  batch size and once more for a dynamic batch size, then no recompiles for new sizes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robofleet.envs.contract import Observation
from robofleet.platform.errors import SpecError
from robofleet.policies.contract import Prediction
from robofleet.policies.cosmos.factory import make_cosmos
from robofleet.policies.cosmos.layout import Mode
from robofleet.policies.cosmos.timing import PhaseTimer

CAMERAS = ("agentview", "robot0_eye_in_hand")


def _observations(count: int, seed: int = 0, cameras: tuple[str, ...] = CAMERAS) -> list[Observation]:
    rng = np.random.default_rng(seed)
    return [
        Observation(images={key: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for key in cameras},
                    proprio=rng.uniform(-0.5, 0.5, 9).astype(np.float32), instruction="pick up the bowl")
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def full():
    return make_cosmos({"config": "tiny", "device": "cpu", "vae_encode": "full", "compile": "none"}, "libero")


@pytest.fixture(scope="module")
def needed(full):
    return full.with_settings(vae_encode="needed")


def test_needed_frames_are_the_conditioning_images_only(needed):
    assert needed._frames_to_encode(Mode.POLICY, False) == 4  # blank, proprio, wrist, primary
    assert needed._frames_to_encode(Mode.WORLD_MODEL, False) == 4  # + action, which is injected
    assert needed._frames_to_encode(Mode.VALUE, False) == 4  # future frames come from given latents
    assert needed._frames_to_encode(Mode.VALUE, True) == 8  # ... or from future images to encode
    assert needed.with_settings(return_future_images=True)._frames_to_encode(Mode.POLICY, False) == 9


def test_leading_latents_are_bitwise_those_of_the_full_encode(full, needed):
    observations = _observations(3)
    timer = PhaseTimer(full.network.device, synchronize=False)
    for mode in Mode:
        reference, _ = full._clean_latents(observations, timer, mode)
        fast, _ = needed._clean_latents(observations, timer, mode)
        frames = needed._frames_to_encode(mode, False)
        assert torch.equal(reference[:, :, :frames], fast[:, :, :frames]), mode
        if mode is Mode.POLICY:  # nothing after the current images is encoded or injected
            assert torch.count_nonzero(fast[:, :, frames:]) == 0
    # the cached prefix is reused, and stays right, for a second batch of another size
    again, _ = needed._clean_latents(observations[:2], timer, Mode.POLICY)
    reference, _ = full._clean_latents(observations[:2], timer, Mode.POLICY)
    assert torch.equal(reference[:, :, :4], again[:, :, :4])


def test_predict_imagine_and_value_are_bitwise_unchanged(full, needed):
    observations = _observations(3, seed=1)
    seeds = [11, 12, 13]
    for a, b in zip(full.predict(observations, seeds), needed.predict(observations, seeds)):
        assert np.array_equal(a.actions, b.actions) and np.array_equal(a.future_proprio, b.future_proprio)
        assert a.value == b.value
    chunks = [p.actions for p in full.predict(observations, seeds)]
    futures_a = full.imagine(observations, chunks, [4, 5, 6])
    futures_b = needed.imagine(observations, chunks, [4, 5, 6])
    for a, b in zip(futures_a, futures_b):
        assert np.array_equal(a.latents, b.latents) and a.value == b.value
    assert full.value(observations, chunks, futures_a, [7, 8, 9]) == needed.value(observations, chunks, futures_b, [7, 8, 9])
    # value() from decoded future images encodes the future frames too, and still matches
    decoded = full.with_settings(return_future_images=True).imagine(observations[:1], chunks[:1], [4])[0]
    images = Prediction(actions=chunks[0], future_proprio=decoded.future_proprio, future_images=decoded.future_images)
    assert full.value(observations[:1], chunks[:1], [images], [3]) == needed.value(observations[:1], chunks[:1], [images], [3])


def test_robocasa_layout_is_unchanged_too():
    cameras = ("robot0_eye_in_hand", "robot0_agentview_left", "robot0_agentview_right")
    full = make_cosmos({"config": "tiny", "device": "cpu", "vae_encode": "full"}, "robocasa")
    needed = full.with_settings(vae_encode="needed")
    observations = _observations(2, seed=3, cameras=cameras)
    assert needed._frames_to_encode(Mode.POLICY, False) == 5
    for a, b in zip(full.predict(observations, [1, 2]), needed.predict(observations, [1, 2])):
        assert np.array_equal(a.actions, b.actions)


def test_compiled_blocks_match_eager_and_compile_at_most_twice(full):
    import torch._dynamo as dynamo

    dynamo.reset()
    counters = dynamo.utils.counters
    graphs_before = counters["stats"]["unique_graphs"]  # counters live across tests: compare, never assume 0
    compiled = make_cosmos({"config": "tiny", "device": "cpu", "compile": "blocks"}, "libero")
    assert compiled.network.compiled == ("blocks", "default")  # compile_mode "auto" is "default" for blocks
    assert counters["stats"]["unique_graphs"] == graphs_before, "building compiles nothing: the server warms up"
    assert compiled.warm_up() > 0.0  # batch sizes 1 and 2: the static graph, then the dynamic one
    frames_after_warm_up = counters["stats"]["unique_graphs"]
    assert frames_after_warm_up > graphs_before
    observations = _observations(5, seed=2)
    for size in (3, 5, 1):  # new batch sizes after the warm-up's 1 and 2: no new graphs
        seeds = list(range(size))
        for a, b in zip(full.predict(observations[:size], seeds), compiled.predict(observations[:size], seeds)):
            np.testing.assert_allclose(a.actions, b.actions, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == frames_after_warm_up
    assert compiled.warm_up([4]) > 0.0 and full.warm_up([4]) == 0.0, "only a compiled DiT is warmed up"


def test_compiled_channels_last_vae_encode_matches_eager_without_recompiles(full):
    import torch._dynamo as dynamo

    dynamo.reset()
    fast = make_cosmos({"config": "tiny", "device": "cpu", "vae_compile": "default", "vae_channels_last": "on"}, "libero")
    network = fast.network
    assert (network.vae_compiled, network.vae_channels_last) == ("default", True)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last_3d)
               for m in network.vae.encoder.modules() if isinstance(m, torch.nn.Conv3d))
    assert fast.warm_up() > 0.0
    graphs_after_warm_up = dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs_after_warm_up >= 1, "warm_up compiles the VAE encode even with an eager DiT"
    observations = _observations(3, seed=5)
    timer = PhaseTimer(network.device, synchronize=False)
    needed = fast._frames_to_encode(Mode.POLICY, False)
    for size in (2, 1, 3):  # after the warm-up's 1 and 2, the dynamic graph serves 3 too: no new graphs
        reference, _ = full._clean_latents(observations[:size], timer, Mode.POLICY)
        latents, _ = fast._clean_latents(observations[:size], timer, Mode.POLICY)
        torch.testing.assert_close(latents[:, :, :needed], reference[:, :, :needed], rtol=1e-5, atol=1e-5)
    assert dynamo.utils.counters["stats"]["unique_graphs"] == graphs_after_warm_up
    for a, b in zip(full.predict(observations, [7, 8, 9]), fast.predict(observations, [7, 8, 9])):
        np.testing.assert_allclose(a.actions, b.actions, atol=1e-4)
    # the full encode (future images, vae_encode = "full") still runs on the converted weights
    torch.testing.assert_close(fast.with_settings(vae_encode="full")._clean_latents(observations, timer, Mode.POLICY)[0],
                               full._clean_latents(observations, timer, Mode.POLICY)[0], rtol=1e-5, atol=1e-5)


def test_per_frame_modulation_equals_diffusers_per_token_modulation(full):
    from robofleet.policies.cosmos.frame_modulation import PerFrameAdaLayerNormZero

    per_token = make_cosmos({"config": "tiny", "device": "cpu", "vae_encode": "full", "compile": "none",
                             "adaln_modulation": "per_token"}, "libero")
    blocks = full.network.transformer.transformer_blocks
    assert all(isinstance(getattr(b, n), PerFrameAdaLayerNormZero) for b in blocks for n in ("norm1", "norm2", "norm3"))
    assert not isinstance(per_token.network.transformer.transformer_blocks[0].norm1, PerFrameAdaLayerNormZero)
    ours, theirs = full.network.transformer.state_dict(), per_token.network.transformer.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    observations = _observations(3, seed=4)
    with torch.no_grad():
        inputs = full.random_dit_inputs(3)
        inputs[1][:, 2] = 0.3  # frames at different noise levels: each frame its own modulation
        torch.testing.assert_close(full.network(*inputs), per_token.network(*inputs), rtol=1e-5, atol=1e-5)
    for a, b in zip(full.predict(observations, [1, 2, 3]), per_token.predict(observations, [1, 2, 3])):
        np.testing.assert_allclose(a.actions, b.actions, atol=1e-5)
        assert a.value == pytest.approx(b.value, abs=1e-5)


def test_gelu_epilogue_keeps_the_weights_and_the_values(full):
    from robofleet.policies.cosmos.gelu_epilogue import EpilogueGELU

    fused = make_cosmos({"config": "tiny", "device": "cpu", "vae_encode": "full", "compile": "none",
                         "gelu_epilogue": "on"}, "libero")
    blocks = fused.network.transformer.transformer_blocks
    assert all(isinstance(block.ff.net[0], EpilogueGELU) for block in blocks)
    ours, theirs = fused.network.transformer.state_dict(), full.network.transformer.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with torch.no_grad():  # on the CPU the epilogue is the exact GELU: same values as diffusers
        inputs = full.random_dit_inputs(2)
        torch.testing.assert_close(fused.network(*inputs), full.network(*inputs), rtol=1e-5, atol=1e-5)
    # an FP8 projection keeps diffusers' GELU module (the epilogue needs a plain Linear)
    fp8 = make_cosmos({"config": "tiny", "device": "cpu", "compile": "none", "dit_precision": "fp8",
                       "gelu_epilogue": "on"}, "libero")
    assert not any(isinstance(b.ff.net[0], EpilogueGELU) for b in fp8.network.transformer.transformer_blocks)


def test_per_frame_modulation_refuses_tokens_that_are_not_whole_frames():
    from diffusers.models.transformers.transformer_cosmos import CosmosAdaLayerNormZero

    from robofleet.policies.cosmos.frame_modulation import PerFrameAdaLayerNormZero

    norm = PerFrameAdaLayerNormZero(CosmosAdaLayerNormZero(8, 4), tokens_per_frame=5)
    with pytest.raises(ValueError, match="whole frames"):
        norm(torch.zeros(1, 12, 8), torch.zeros(1, 12, 8))


@pytest.mark.parametrize(("options", "key"), [
    ({"adaln_modulation": "per_batch"}, "adaln_modulation"),
    ({"compile": "turbo"}, "compile"),
    ({"compile_mode": "fastest"}, "compile_mode"),
    ({"vae_encode": "some"}, "vae_encode"),
    ({"vae_compile": "reduce-overhead"}, "vae_compile"),  # resumed chunks replay one graph: no CUDA graphs
    ({"vae_channels_last": True}, "vae_channels_last"),
    ({"gelu_epilogue": "fast"}, "gelu_epilogue"),
    ({"compile": "blocks", "compile_mode": "reduce-overhead"}, "compile_mode"),  # per-block CUDA graphs clash
])
def test_bad_fast_path_options_name_their_key(options, key):
    with pytest.raises(SpecError) as err:
        make_cosmos({"config": "tiny", **options}, "libero")
    assert err.value.key == key
