"""The diffusers network as Cosmos Policy builds it: channel layout and NVIDIA key table."""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from diffusers import CosmosTransformer3DModel
from diffusers.models.transformers import transformer_cosmos

from robofleet.policies.cosmos.config import COSMOS_2B, TINY
from robofleet.policies.cosmos.keymap import diffusers_to_nvidia, is_dropped, nvidia_to_diffusers
from robofleet.policies.cosmos.network import CosmosNetwork, transformer_shapes


def _nearest_resize_shim() -> types.SimpleNamespace:
    """Stands in for torchvision.transforms (not installed) inside diffusers, for this comparison only."""

    def resize(image: torch.Tensor, size: list[int], interpolation: object = None) -> torch.Tensor:
        return F.interpolate(image, size=size, mode="nearest")

    return types.SimpleNamespace(functional=types.SimpleNamespace(resize=resize), InterpolationMode=types.SimpleNamespace(NEAREST="nearest"))


def test_our_padding_mask_channel_equals_diffusers_concat_padding_mask(monkeypatch):
    """18 input channels with the padding mask appended by us == the official 17 + concat_padding_mask net."""
    ours = CosmosNetwork.build(TINY, torch.device("cpu"), torch.float32, seed=1)
    official_kwargs = {**TINY.transformer.diffusers_kwargs(), "in_channels": 17, "concat_padding_mask": True}
    official = CosmosTransformer3DModel(**official_kwargs).eval()
    official.load_state_dict(ours.transformer.state_dict(), strict=True)  # same names and shapes
    monkeypatch.setattr(transformer_cosmos, "transforms", _nearest_resize_shim(), raising=False)

    batch, frames, side = 2, 9, 4
    x = torch.randn(batch, 16, frames, side, side)
    condition = (torch.arange(frames) < 4).float().expand(batch, frames)
    c_noise = (1 - condition) * 0.9
    text = torch.randn(batch, 512, 1024)
    with torch.no_grad():
        expected = official(
            hidden_states=x,
            timestep=c_noise.view(batch, 1, frames, 1, 1),
            encoder_hidden_states=text,
            condition_mask=condition.view(batch, 1, frames, 1, 1).expand(batch, 1, frames, side, side),
            padding_mask=torch.zeros(1, 1, 32, 32),  # pixel-sized, as the diffusers pipeline passes it
            fps=None,
            return_dict=False,
        )[0]
    torch.testing.assert_close(ours(x, c_noise, condition, text), expected, rtol=0, atol=0)


def test_key_table_covers_the_2b_network_exactly():
    shapes = transformer_shapes(COSMOS_2B)  # meta device: no memory
    table = nvidia_to_diffusers(COSMOS_2B.transformer.num_layers)
    assert set(table.values()) == set(shapes)
    assert len(table) == len(shapes) == len(diffusers_to_nvidia(COSMOS_2B.transformer.num_layers))
    assert shapes["patch_embed.proj.weight"] == (2048, 18 * 4)
    assert table["net.blocks.3.cross_attn.output_proj.weight"] == "transformer_blocks.3.attn2.to_out.0.weight"
    assert table["net.blocks.0.adaln_modulation_mlp.2.weight"] == "transformer_blocks.0.norm3.linear_2.weight"


def test_training_state_and_rope_tables_are_dropped_but_weights_are_not():
    for key in ("net.accum_iteration", "net.accum_video_sample_counter", "net.pos_embedder.seq",
                "net.pos_embedder.dim_spatial_range", "net.blocks.0.self_attn._extra_state"):
        assert is_dropped(key), key
    assert not is_dropped("net.blocks.0.self_attn.q_proj.weight")


# The Wan2.1 latent statistics as NVIDIA's tokenizer writes them (cosmos_policy/tokenizers/wan2pt1.py).
REFERENCE_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                  0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
REFERENCE_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                 3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]


def _reference_scale() -> list[torch.Tensor]:
    """The reference's `scale = [mean, 1.0 / std]`, built from bf16 tensors as its bf16 VAE builds it."""
    mean = torch.tensor(REFERENCE_MEAN, dtype=torch.bfloat16)
    std = torch.tensor(REFERENCE_STD, dtype=torch.bfloat16)
    return [mean.view(1, 16, 1, 1, 1), (1.0 / std).view(1, 16, 1, 1, 1)]


def _bf16_network() -> CosmosNetwork:
    return CosmosNetwork.build(TINY, torch.device("cpu"), torch.bfloat16, seed=3)


def test_bf16_normalisation_equals_the_reference_encode_bit_for_bit():
    network = _bf16_network()
    assert network.vae.config.latents_mean == REFERENCE_MEAN and network.vae.config.latents_std == REFERENCE_STD
    mu = (torch.randn(2, 16, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 3).to(torch.bfloat16)
    scale = _reference_scale()
    expected = (mu - scale[0]) * scale[1]  # WanVAE_.encode, in bf16
    assert torch.equal(network.normalise_latents(mu), expected.float())


def test_bf16_denormalisation_equals_the_reference_decode_bit_for_bit():
    network = _bf16_network()
    z = torch.randn(2, 16, 3, 4, 4, generator=torch.Generator().manual_seed(1))  # float32 sampler output
    scale = _reference_scale()
    expected = z.to(torch.bfloat16) / scale[1] + scale[0]  # WanVAE.decode casts to bf16, then WanVAE_.decode
    result = network.denormalise_latents(z)
    assert result.dtype == torch.bfloat16 and torch.equal(result, expected)


def test_bf16_encode_normalises_the_posterior_mode_the_reference_way():
    network = _bf16_network()
    video = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    mode = network.vae.encode(video.to(torch.bfloat16)).latent_dist.mode()
    scale = _reference_scale()
    assert torch.equal(network.encode(video), ((mode - scale[0]) * scale[1]).float())


def test_float32_normalisation_keeps_exact_float32_constants():
    network = CosmosNetwork.build(TINY, torch.device("cpu"), torch.float32, seed=3)
    mu = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    mean = torch.tensor(REFERENCE_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(REFERENCE_STD).view(1, 16, 1, 1, 1)
    assert torch.equal(network.normalise_latents(mu), (mu - mean) / std)
    assert torch.equal(network.denormalise_latents(mu), mu * std + mean)
