"""Named network configurations of Cosmos Policy (the DiT and the Wan2.1 VAE), as data.

`COSMOS_2B` is Cosmos-Predict2-2B Video2World (REFERENCE.md §2): 28 blocks, 16 heads x 128,
MLP ratio 4, AdaLN-LoRA 256, patch (1, 2, 2), RoPE scale (1, 3, 3), no learnable position
embedding, T5-11B cross-attention (1024-dim, 512 tokens), with the Wan2.1 VAE (z=16, 8x spatial,
4x temporal). `TINY` keeps every convention and shrinks every width so that CPU tests run in
seconds with random weights.

Channel layout of the DiT input. The 2B network sees 16 latent channels + 1 condition-mask channel
(diffusers `in_channels=17`) + 1 padding-mask channel that diffusers appends itself when
`concat_padding_mask=True`. diffusers resizes that padding mask with torchvision inside `forward`
(`transforms.functional.resize`, imported only if torchvision is installed), so without torchvision
the official configuration raises NameError even when the mask already has the latent size. We
therefore build the identical network as `in_channels=18, concat_padding_mask=False` and append
the (all-zero, latent-sized) padding-mask channel ourselves, in the same order diffusers uses
([latents, condition mask, padding mask]). Parameter names and shapes are unchanged
(patch_embed.proj: 18 * 1 * 2 * 2 inputs either way), so checkpoints are interchangeable;
tests/test_cosmos_network.py checks the equivalence against diffusers' own padding-mask path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LATENT_CHANNELS = 16  # Wan2.1 VAE z_dim
VAE_SPATIAL_FACTOR = 8  # pixels per latent cell, each side
VAE_TEMPORAL_FACTOR = 4  # pixel frames per latent frame (after the first one)
MASK_CHANNELS = 2  # condition mask + padding mask, appended to the latents


@dataclass(frozen=True)
class TransformerConfig:
    """diffusers `CosmosTransformer3DModel` hyper-parameters (see module docstring for channels)."""

    num_layers: int  # DiT blocks
    num_attention_heads: int  # heads per attention layer
    attention_head_dim: int  # channels per head; width = heads * head_dim
    adaln_lora_dim: int  # AdaLN-LoRA bottleneck
    mlp_ratio: float = 4.0  # feed-forward width / model width
    text_embed_dim: int = 1024  # T5-11B hidden size (cross-attention key/value input)
    max_size: tuple[int, int, int] = (128, 240, 240)  # RoPE table size (T, H, W) in latent cells
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w) latent cells per token
    rope_scale: tuple[float, float, float] = (1.0, 3.0, 3.0)  # NTK extrapolation (t, h, w)

    def diffusers_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `diffusers.CosmosTransformer3DModel(**kwargs)`."""
        return {
            "in_channels": LATENT_CHANNELS + MASK_CHANNELS,
            "out_channels": LATENT_CHANNELS,
            "num_attention_heads": self.num_attention_heads,
            "attention_head_dim": self.attention_head_dim,
            "num_layers": self.num_layers,
            "mlp_ratio": self.mlp_ratio,
            "text_embed_dim": self.text_embed_dim,
            "adaln_lora_dim": self.adaln_lora_dim,
            "max_size": self.max_size,
            "patch_size": self.patch_size,
            "rope_scale": self.rope_scale,
            "concat_padding_mask": False,  # we append the padding mask ourselves (module docstring)
            "extra_pos_embed_type": None,
        }


@dataclass(frozen=True)
class VaeConfig:
    """diffusers `AutoencoderKLWan` hyper-parameters (Wan2.1 layout: z=16, 8x spatial, 4x temporal)."""

    base_dim: int  # channels of the first encoder stage
    num_res_blocks: int  # residual blocks per stage
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)  # channel multiplier per stage
    temperal_downsample: tuple[bool, ...] = (False, True, True)  # diffusers' spelling

    def diffusers_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `diffusers.AutoencoderKLWan(**kwargs)`; latent mean/std stay Wan2.1's."""
        return {
            "base_dim": self.base_dim,
            "z_dim": LATENT_CHANNELS,
            "dim_mult": list(self.dim_mult),
            "num_res_blocks": self.num_res_blocks,
            "attn_scales": [],
            "temperal_downsample": list(self.temperal_downsample),
        }


@dataclass(frozen=True)
class NetworkConfig:
    """One named network: DiT + VAE + the size of its text and image inputs."""

    name: str
    transformer: TransformerConfig
    vae: VaeConfig
    text_tokens: int = 512  # T5 sequence length of an instruction embedding
    default_image_size: int = 224  # model input side in pixels (latent side = size / 8)
    description: str = field(default="", compare=False)


COSMOS_2B = NetworkConfig(
    name="2b",
    transformer=TransformerConfig(num_layers=28, num_attention_heads=16, attention_head_dim=128, adaln_lora_dim=256),
    vae=VaeConfig(base_dim=96, num_res_blocks=2),
    description="Cosmos-Predict2-2B Video2World DiT + Wan2.1 VAE (the released Cosmos Policy network)",
)

TINY = NetworkConfig(
    name="tiny",
    transformer=TransformerConfig(num_layers=2, num_attention_heads=2, attention_head_dim=16, adaln_lora_dim=8),
    vae=VaeConfig(base_dim=8, num_res_blocks=1),
    default_image_size=32,
    description="same conventions, tiny widths; random weights for CPU tests",
)

NETWORK_CONFIGS: dict[str, NetworkConfig] = {c.name: c for c in (TINY, COSMOS_2B)}


COMPILE_SCOPES = ("none", "blocks", "full")
"""What CosmosNetwork.accelerate compiles: nothing (eager), each transformer block (one compile
serves all identical blocks: "regional compilation"), or the whole DiT forward as one graph."""
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
"""torch.compile modes; "reduce-overhead" and "max-autotune" also capture CUDA graphs."""
