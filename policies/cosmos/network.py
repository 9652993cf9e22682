"""The Cosmos Policy network: diffusers' CosmosTransformer3DModel (DiT) and AutoencoderKLWan (VAE).

Latents are the VAE posterior mode normalised per channel with the Wan2.1 statistics,
(z - mean) / std (sigma_data = 1), as the reference tokenizer does. In a bf16 network this is
the reference's own bf16 arithmetic (cosmos_policy/tokenizers/wan2pt1.py: `scale = [mean, 1.0 / std]`
as bf16 tensors, encode `(mu - scale[0]) * scale[1]`, decode `z / scale[1] + scale[0]`, each step
rounded to bf16), not the exact constants: bf16 rounding of 1/std is a per-channel gain of up to
~0.4% that the checkpoints were trained with. A float32 network uses exact float32 constants.
The DiT input is [latents (16), condition mask (1), padding mask (1)] (see config.py for why we
append the padding mask ourselves); the timestep is per latent frame, shape (B, 1, T, 1, 1), and
fps is None (no FPS modulation of RoPE).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, TypeVar

import torch
from diffusers import AutoencoderKLWan, CosmosTransformer3DModel

from robofleet.platform.errors import CheckpointError
from robofleet.policies.cosmos.causal_encode import PrefixCachedEncoder
from robofleet.policies.cosmos.config import COMPILE_MODES, COMPILE_SCOPES, LATENT_CHANNELS, VAE_SPATIAL_FACTOR, VAE_TEMPORAL_FACTOR, NetworkConfig

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)



class CosmosNetwork:
    """DiT + VAE on one device.

    transformer, vae: diffusers modules already on `device` in `dtype`, in eval mode.
    """

    def __init__(self, transformer: CosmosTransformer3DModel, vae: AutoencoderKLWan, device: torch.device, dtype: torch.dtype):
        self.transformer = transformer.eval()
        self.vae = vae.eval()
        self.device = device
        self.dtype = dtype
        shape = (1, LATENT_CHANNELS, 1, 1, 1)
        self._mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32, device=device).view(shape)
        self._std = torch.tensor(vae.config.latents_std, dtype=torch.float32, device=device).view(shape)
        # The reference's bf16 statistics, built the way it builds them (1.0 / t is reciprocal in bf16).
        self._mean_bf16 = torch.tensor(vae.config.latents_mean, dtype=torch.bfloat16).view(shape).to(device)
        self._inv_std_bf16 = (1.0 / torch.tensor(vae.config.latents_std, dtype=torch.bfloat16)).view(shape).to(device)
        self._encoders: dict[int, PrefixCachedEncoder] = {}
        self.compiled = ("none", "default")
        self.vae_compiled: str | None = None  # torch.compile mode of the resumed VAE encode, None = eager
        self.vae_channels_last = False

    def accelerate(self, scope: str, mode: str = "default") -> None:
        """torch.compile the DiT (in place). scope: one of COMPILE_SCOPES; mode: one of COMPILE_MODES.

        Shapes are not fixed up front: the first batch size compiles a static graph and a second
        one a graph with a dynamic batch dimension that serves every later size (torch's automatic
        dynamic shapes), so at most two compiles per scope.
        """
        if scope not in COMPILE_SCOPES:
            raise ValueError(f"compile scope {scope!r} is not one of {COMPILE_SCOPES}")
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode {mode!r} is not one of {COMPILE_MODES}")
        if self.compiled != ("none", "default"):
            raise RuntimeError(f"the DiT is already compiled ({self.compiled})")
        if scope == "blocks":
            for block in self.transformer.transformer_blocks:
                block.compile(mode=mode)
        elif scope == "full":
            self.transformer.compile(mode=mode)
        self.compiled = (scope, mode)

    def recompile(self, scope: str, mode: str = "default") -> None:
        """Drop the DiT's torch.compile (before its first call: nothing was compiled yet) and `accelerate`
        it again with `scope` and `mode`."""
        self.transformer._compiled_call_impl = None
        for block in self.transformer.transformer_blocks:
            block._compiled_call_impl = None
        self.compiled = ("none", "default")
        self.accelerate(scope, mode)

    def accelerate_vae(self, compile_mode: str | None, channels_last: bool) -> None:
        """Speed up encode_leading's resumed chunks (see causal_encode.py): compile them with
        `compile_mode` (None: eager) and/or run them in channels-last-3d layout (the encoder's Conv3d
        weights are converted in place; the values are unchanged, so decode and the full encode
        give the same results as before)."""
        if compile_mode is not None and compile_mode not in COMPILE_MODES:
            raise ValueError(f"VAE compile mode {compile_mode!r} is not one of {COMPILE_MODES}")
        if channels_last:
            for module in self.vae.encoder.modules():
                if isinstance(module, torch.nn.Conv3d):
                    module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)
        self.vae_compiled, self.vae_channels_last = compile_mode, channels_last
        self._encoders.clear()

    @classmethod
    def build(
        cls,
        config: NetworkConfig,
        device: torch.device,
        dtype: torch.dtype,
        transformer_weights: Mapping[str, torch.Tensor] | None = None,
        vae_directory: Path | None = None,
        seed: int = 0,
    ) -> CosmosNetwork:
        """Build the network; parts without weights get a deterministic random init from `seed`.

        transformer_weights: diffusers-named state dict (checkpoint.to_diffusers_state_dict).
        vae_directory: a diffusers AutoencoderKLWan folder (checkpoint.locate_vae).
        """
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            if transformer_weights is None:
                with torch.device(device):
                    transformer = CosmosTransformer3DModel(**config.transformer.diffusers_kwargs())
            else:
                with torch.device("meta"):
                    transformer = CosmosTransformer3DModel(**config.transformer.diffusers_kwargs())
                transformer.load_state_dict(transformer_weights, strict=True, assign=True)
            if vae_directory is None:
                with torch.device(device):
                    vae = AutoencoderKLWan(**config.vae.diffusers_kwargs())
            else:
                vae = AutoencoderKLWan.from_pretrained(str(vae_directory))
                _check_vae(vae, vae_directory)
        return cls(_cast(transformer, device, dtype), _cast(vae, device, dtype), device, dtype)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Pixel video (B, 3, 1 + 4 (T - 1), H, W) in [-1, 1] -> normalised latents (B, 16, T, H/8, W/8) float32."""
        posterior = self.vae.encode(video.to(self.dtype)).latent_dist
        return self.normalise_latents(posterior.mode())

    @torch.no_grad()
    def encode_leading(self, video: torch.Tensor, latent_frames: int, constant_prefix: int) -> torch.Tensor:
        """The first `latent_frames` normalised latents (B, 16, n, H/8, W/8) float32 of a pixel video.

        Equal to `encode(video)[:, :, :latent_frames]` (see causal_encode.py), at the cost of the
        latent frames after the first `constant_prefix`, which must be black in every video.
        video: (B, 3, >= 1 + 4 (latent_frames - 1), H, W) in [-1, 1].
        """
        if constant_prefix not in self._encoders:
            self._encoders[constant_prefix] = PrefixCachedEncoder(self.vae, constant_prefix, self.vae_compiled,
                                                                  self.vae_channels_last)
        moments = self._encoders[constant_prefix].encode(video.to(self.dtype), latent_frames)
        mean = moments[:, :LATENT_CHANNELS]  # the posterior mode; the other half is the log-variance
        return self.normalise_latents(mean)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, 16, T, h, w) -> pixel video (B, 3, 1 + 4 (T - 1), 8h, 8w) float32 in [-1, 1]."""
        return self.vae.decode(self.denormalise_latents(latents)).sample.float()

    def normalise_latents(self, mu: torch.Tensor) -> torch.Tensor:
        """VAE posterior mode (B, 16, T, h, w) in the network dtype -> normalised latents, float32.

        bf16 network: `(mu - mean_bf16) * inv_std_bf16` in bf16, as the reference encodes;
        otherwise (mu - mean) / std in float32.
        """
        if self.dtype == torch.bfloat16:
            return ((mu.to(torch.bfloat16) - self._mean_bf16) * self._inv_std_bf16).float()
        return (mu.float() - self._mean) / self._std

    def denormalise_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, 16, T, h, w) -> the VAE decoder's input, in the network dtype.

        bf16 network: `z_bf16 / inv_std_bf16 + mean_bf16` in bf16, as the reference decodes;
        otherwise z * std + mean in float32.
        """
        if self.dtype == torch.bfloat16:
            return latents.to(torch.bfloat16) / self._inv_std_bf16 + self._mean_bf16
        return (latents.float() * self._std + self._mean).to(self.dtype)

    @torch.no_grad()
    def __call__(self, x_in: torch.Tensor, c_noise: torch.Tensor, condition: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """One DiT evaluation.

        x_in: (B, 16, T, h, w) preconditioned latents (c_in * x, clean latents on conditioning frames).
        c_noise: (B, T) per-frame noise level sigma / (1 + sigma); 0 on conditioning frames.
        condition: (B, T) 1.0 on conditioning frames, else 0.0.
        text: (B, L, D) T5 instruction embeddings.
        Returns the raw network output (B, 16, T, h, w) float32 (x0 = c_skip x + c_out output).
        """
        output = self.transformer(**self.transformer_inputs(x_in, c_noise, condition, text))[0]
        return output.float()

    def transformer_inputs(self, x_in: torch.Tensor, c_noise: torch.Tensor, condition: torch.Tensor,
                           text: torch.Tensor) -> dict[str, object]:
        """The diffusers DiT's keyword arguments for one evaluation (arguments as in __call__)."""
        batch, _, frames, height, width = x_in.shape
        mask = condition.view(batch, 1, frames, 1, 1).expand(batch, 1, frames, height, width)
        padding = torch.zeros_like(mask)  # no padded pixels: the images fill the whole frame
        return {
            "hidden_states": torch.cat([x_in, mask, padding], dim=1).to(self.dtype),
            "timestep": c_noise.view(batch, 1, frames, 1, 1).to(self.dtype),
            "encoder_hidden_states": text.to(device=self.device, dtype=self.dtype),
            "fps": None,
            "return_dict": False,
        }


def _cast(module: ModuleT, device: torch.device, dtype: torch.dtype) -> ModuleT:
    # torch's own `to`: diffusers' override only adds a warning about modules it would keep in
    # float32, and the one it names for the DiT (learnable_pos_embed) does not exist in this config.
    return torch.nn.Module.to(module, device=device, dtype=dtype)


def transformer_shapes(config: NetworkConfig) -> dict[str, torch.Size]:
    """diffusers parameter name -> shape of the DiT of `config` (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = CosmosTransformer3DModel(**config.transformer.diffusers_kwargs())
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def _check_vae(vae: AutoencoderKLWan, directory: Path) -> None:
    config = vae.config
    expected = {"z_dim": LATENT_CHANNELS, "scale_factor_spatial": VAE_SPATIAL_FACTOR, "scale_factor_temporal": VAE_TEMPORAL_FACTOR}
    wrong = {key: config.get(key) for key, value in expected.items() if config.get(key) != value}
    if wrong:
        raise CheckpointError(f"VAE in {directory} is not a Wan2.1-layout VAE: {wrong} (expected {expected})")
