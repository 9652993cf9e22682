"""Parameter names of NVIDIA's Cosmos-Predict2 DiT checkpoints <-> diffusers `CosmosTransformer3DModel`.

Released Cosmos Policy `.pt` files are state dicts of NVIDIA's DiT with keys prefixed `net.`
(REFERENCE.md §2). The renames are the ones diffusers' `scripts/convert_cosmos_to_diffusers.py`
applies for Cosmos 2.0, written here as an explicit table per parameter instead of substring
replacement, so that the mapping is a bijection we can invert (tests build NVIDIA-named checkpoints
from a diffusers model) and check exhaustively. Training-state buffers (`accum_*`), the RoPE tables
(`pos_embedder.*`, recomputed by diffusers) and TransformerEngine `_extra_state` entries carry no
weights and are dropped.
"""
from __future__ import annotations

import re

NVIDIA_PREFIX = "net."

# NVIDIA name (without "net.") -> diffusers name, outside the blocks.
TOP_LEVEL: dict[str, str] = {
    "x_embedder.proj.1.weight": "patch_embed.proj.weight",
    "t_embedder.1.linear_1.weight": "time_embed.t_embedder.linear_1.weight",
    "t_embedder.1.linear_2.weight": "time_embed.t_embedder.linear_2.weight",
    "t_embedding_norm.weight": "time_embed.norm.weight",
    "final_layer.adaln_modulation.1.weight": "norm_out.linear_1.weight",
    "final_layer.adaln_modulation.2.weight": "norm_out.linear_2.weight",
    "final_layer.linear.weight": "proj_out.weight",
}

# Inside block i: NVIDIA "blocks.{i}.<key>" -> diffusers "transformer_blocks.{i}.<value>".
PER_BLOCK: dict[str, str] = {
    **{
        f"{nv_attn}.{nv}.weight": f"{df_attn}.{df}.weight"
        for nv_attn, df_attn in (("self_attn", "attn1"), ("cross_attn", "attn2"))
        for nv, df in (
            ("q_proj", "to_q"),
            ("k_proj", "to_k"),
            ("v_proj", "to_v"),
            ("output_proj", "to_out.0"),
            ("q_norm", "norm_q"),
            ("k_norm", "norm_k"),
        )
    },
    "mlp.layer1.weight": "ff.net.0.proj.weight",
    "mlp.layer2.weight": "ff.net.2.weight",
    **{
        f"adaln_modulation_{nv}.{i}.weight": f"{df}.linear_{i}.weight"
        for nv, df in (("self_attn", "norm1"), ("cross_attn", "norm2"), ("mlp", "norm3"))
        for i in (1, 2)
    },
}

_DROPPED = re.compile(r"accum_\w+|pos_embedder\.\w+|(.+\.)?_extra_state")


def nvidia_to_diffusers(num_layers: int) -> dict[str, str]:
    """Every weight of a `num_layers`-block DiT: NVIDIA checkpoint key ("net." + name) -> diffusers key."""
    table = {NVIDIA_PREFIX + nv: df for nv, df in TOP_LEVEL.items()}
    for block in range(num_layers):
        for nv, df in PER_BLOCK.items():
            table[f"{NVIDIA_PREFIX}blocks.{block}.{nv}"] = f"transformer_blocks.{block}.{df}"
    return table


def diffusers_to_nvidia(num_layers: int) -> dict[str, str]:
    """The inverse table: diffusers key -> NVIDIA checkpoint key (to write NVIDIA-format checkpoints)."""
    return {df: nv for nv, df in nvidia_to_diffusers(num_layers).items()}


def is_dropped(nvidia_key: str) -> bool:
    """True for checkpoint entries that hold no network weights (training counters, RoPE tables, TE state)."""
    return _DROPPED.fullmatch(nvidia_key.removeprefix(NVIDIA_PREFIX)) is not None
