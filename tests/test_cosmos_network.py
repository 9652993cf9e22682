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
