"""`make_cosmos(options, env_family)`: validate a spec's [policy] options and build a CosmosPolicy.

Example spec (TOML):

    [policy]
    name = "cosmos"
    config = "2b"                                        # or "tiny" (random weights, CPU tests)
    checkpoint = "nvidia/Cosmos-Policy-LIBERO-Predict2-2B"   # repo id, directory, or "random"
    embeddings = "libero_t5_embeddings.safetensors"      # from `robofleet convert-embeddings`
    pad_to = 8                                           # every call on 8 rows (batch-invariant on the CPU only)
    compile = "auto"                                     # the fast path on GPU; "none" = eager diffusers
    dit_precision = "bf16"                               # "fp8": FP8 matmuls in the DiT blocks (Hopper/Ada)

"random" weights (no checkpoint) are for tests and speed benchmarks only: the policy then uses
unit dataset bounds and pseudo-random instruction embeddings, and logs a warning saying so.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from robofleet.platform.config_fields import boolean, check_keys, choice, from_table, integer, mapping, setting, table_keys, text
from robofleet.platform.errors import CheckpointError, SpecError
from robofleet.policies.cosmos.config import COMPILE_MODES, COMPILE_SCOPES, LATENT_CHANNELS, NETWORK_CONFIGS, VAE_SPATIAL_FACTOR
from robofleet.policies.cosmos.layout import LAYOUTS, LatentLayout

if TYPE_CHECKING:
    from robofleet.policies.cosmos.policy import CosmosPolicy

log = logging.getLogger(__name__)

RANDOM = "random"
RELEASED_CHECKPOINTS = {
    "libero": "nvidia/Cosmos-Policy-LIBERO-Predict2-2B",
    "robocasa": "nvidia/Cosmos-Policy-RoboCasa-Predict2-2B",
    "aloha": "nvidia/Cosmos-Policy-ALOHA-Predict2-2B",
}
DEFAULT_VAE = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"  # diffusers-format Wan2.1 VAE under vae/
# `jpeg_roundtrip` default per env family, as NVIDIA's evaluation scripts run each checkpoint:
# run_libero_eval.py and run_robocasa_eval.py pass --use_jpeg_compression True, the ALOHA
# server (aloha/deploy.py) --use_jpeg_compression False.
JPEG_ROUNDTRIP_DEFAULTS = {"libero": True, "robocasa": True, "aloha": False}
DTYPES = ("auto", "float32", "bfloat16")
VAE_ENCODES = ("needed", "full")
COMPILE_CHOICES = ("auto", *COMPILE_SCOPES)  # auto: "full" on CUDA, "none" on the CPU
COMPILE_MODE_CHOICES = ("auto", *COMPILE_MODES)  # auto: "reduce-overhead" (CUDA graphs) for "full", else "default"
VAE_COMPILE_CHOICES = ("auto", "none", "default", "max-autotune-no-cudagraphs")  # resumed chunks repeat one graph: no CUDA graphs
SWITCH_CHOICES = ("auto", "on", "off")
DIT_PRECISIONS = ("bf16", "fp8")  # bf16: the DiT's matmuls in `dtype`; fp8: see fp8.py
ADALN_MODULATIONS = ("per_frame", "per_token")  # per_token: diffusers' own computation; see frame_modulation.py
FP8_MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9) and Hopper (9.0) or newer
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_IMAGE_MULTIPLE = VAE_SPATIAL_FACTOR * 2  # VAE cells x DiT patch


# The texts of cosmos's option errors: "expected str, got 5", "'int8' is not one of ('auto', ...)".
_EXPECTED = "expected {type}, got {value!r}"
_NOT_ONE_OF = "{value!r} is not one of {choices}"


def _text(default: str | None, **options: Any) -> Any:
    return setting(default, text, type_message=_EXPECTED, **options)


def _flag(default: bool | None) -> Any:
    return setting(default, boolean, type_message=_EXPECTED)


def _count(default: int | None, **options: Any) -> Any:
    return setting(default, integer, type_message=_EXPECTED, **options)


def _one_of(default: str, allowed: Any) -> Any:
    return setting(default, choice, allowed=allowed, message=_NOT_ONE_OF, type_message=_EXPECTED)


@dataclass(frozen=True)
class CosmosOptions:
    """The [policy] options of `cosmos`; None means "the default for this config and env family"."""

    config: str = _one_of("2b", sorted(NETWORK_CONFIGS))  # network: "2b" (the released one) or "tiny" (random-weight CPU tests)
    checkpoint: str | None = _text(None)  # HF repo id | directory | "random"; default: released repo (2b), random (tiny)
    vae: str | None = _text(None)  # diffusers Wan2.1 VAE repo id | directory | "random"; default: DEFAULT_VAE with a checkpoint
    embeddings: str | None = _text(None)  # T5 embeddings file; default: the one in the checkpoint
    trust_pickle: bool = _flag(False)  # allow unpickling a released *_t5_embeddings.pkl (runs code from the file)
    device: str = _text("auto", pattern=_DEVICE,  # "auto" (cuda if available) | "cpu" | "cuda" | "cuda:N"
                        message="{value!r}: use auto, cpu, cuda or cuda:N")
    dtype: str = _one_of("auto", DTYPES)  # "auto" (bfloat16 on cuda, float32 on cpu) | "float32" | "bfloat16"
    action_steps: int | None = _count(None, minimum=1)  # network evaluations for the action; default 5 (ALOHA 10)
    future_steps: int = _count(1, minimum=1)  # evaluations of a world-model pass
    value_steps: int = _count(1, minimum=1)  # evaluations of a value pass
    autoregressive_future: bool = _flag(False)  # predict s' in a second pass conditioned on the sampled action
    autoregressive_value: bool = _flag(False)  # predict V in a further pass conditioned on [s, a, s']
    image_size: int | None = _count(  # model input side in pixels, multiple of 16; default 224 (tiny: 32)
        None, minimum=_IMAGE_MULTIPLE, multiple_of=_IMAGE_MULTIPLE,
        message=f"must be a positive multiple of {_IMAGE_MULTIPLE}, got {{value}}")
    jpeg_roundtrip: bool | None = _flag(None)  # JPEG q95 round trip of camera images; default: JPEG_ROUNDTRIP_DEFAULTS (ALOHA off)
    center_crop: bool = _flag(True)  # 90%-area centre crop (checkpoints trained with image augmentation)
    return_future_images: bool = _flag(False)  # decode predicted future camera images (costs a VAE decode)
    return_latents: bool = _flag(False)  # attach predict()'s latent sample (~450 KB at 224 px) for value()
    pad_to: int = _count(0, minimum=0, message="must be >= 0 (0 = off), got {value}")  # every call on exactly this many rows (batch-invariant on the CPU; CUDA: replicas use batch_invariant()); 0 = off
    cameras: Mapping[str, str] = setting({}, mapping, type_message=_EXPECTED)  # camera role -> Observation.images key overrides
    profile: bool = _flag(False)  # synchronise the GPU between phases to time them separately
    init_seed: int = _count(0)  # seed of the random weights (checkpoint = "random")
    vae_encode: str = _one_of("needed", VAE_ENCODES)  # "needed": only the latent frames the DiT reads (exact, ~4x less VAE work) | "full"
    compile: str = _one_of("auto", COMPILE_CHOICES)  # torch.compile of the DiT: "auto" (full on CUDA) | "none" (eager) | "blocks" | "full"
    compile_mode: str = _one_of("auto", COMPILE_MODE_CHOICES)  # "auto" | default | reduce-overhead (CUDA graphs, full only) | max-autotune...
    dit_precision: str = _one_of("bf16", DIT_PRECISIONS)  # "bf16" (matmuls in `dtype`) | "fp8" (e4m3 rowwise in the DiT blocks, fp8.py)
    adaln_modulation: str = _one_of("per_frame", ADALN_MODULATIONS)  # adaLN-LoRA once per latent frame (same values) | "per_token" (diffusers')
    vae_compile: str = _one_of("auto", VAE_COMPILE_CHOICES)  # torch.compile of the VAE encode: "auto" (default on CUDA) | "none" | a mode without CUDA graphs
    vae_channels_last: str = _one_of("auto", SWITCH_CHOICES)  # VAE encode in channels-last-3d layout: "auto" (on CUDA) | "on" | "off"
    gelu_epilogue: str = _one_of("auto", SWITCH_CHOICES)  # feed-forward GELU inside the GEMM: "auto" (on CUDA) | "on" | "off" (gelu_epilogue.py)


def parse_options(options: Mapping[str, Any], env_family: str) -> CosmosOptions:
    """Validate `options` (TOML-parsed) for `env_family`; SpecError names the offending key."""
    if env_family not in LAYOUTS:
        raise SpecError("env_family", f"cosmos supports {sorted(LAYOUTS)}, not {env_family!r}")
    values = {key: value for key, value in options.items() if key != "name"}  # "name" selects the policy in the spec
    check_keys(sorted(values), sorted(table_keys(CosmosOptions)), "", "unknown cosmos option; allowed: {allowed}")
    parsed = from_table(CosmosOptions, values)
    if parsed.compile == "blocks" and parsed.compile_mode in ("reduce-overhead", "max-autotune"):
        raise SpecError("compile_mode", f"{parsed.compile_mode!r} captures CUDA graphs, which needs compile = \"full\" "
                        "(per-block graphs overwrite each other's outputs); use \"default\" with \"blocks\"")
    if not all(isinstance(image_key, str) for image_key in parsed.cameras.values()):
        raise SpecError("cameras", f"values must be Observation.images keys (strings), got {dict(parsed.cameras)}")
    layout = LAYOUTS[env_family]
    bad_roles = sorted(set(parsed.cameras) - set(layout.camera_keys))
    if bad_roles:
        raise SpecError("cameras", f"unknown camera roles {bad_roles}; {env_family} has {sorted(layout.camera_keys)}")
    return parsed


def _check_fits(layout: LatentLayout, image_size: int, action_dim: int, proprio_dim: int) -> None:
    side = image_size // VAE_SPATIAL_FACTOR
    room = LATENT_CHANNELS * side * side
    for what, length in (("action chunk", layout.chunk_size * action_dim), ("proprio", proprio_dim)):
        if length > room:
            raise SpecError("image_size", f"{image_size} px gives latent frames of {room} values; the {what} needs {length}")


def make_cosmos(options: Mapping[str, Any], env_family: str) -> CosmosPolicy:
    """The policy registry's factory for "cosmos" (see module docstring). Compiled parts compile on
    first use: whoever serves the policy calls its `warm_up` with the batch sizes it will run."""
    from robofleet.policies.cosmos.network import CosmosNetwork
    from robofleet.policies.cosmos.policy import CosmosPolicy

    opts = parse_options(options, env_family)
    layout = LAYOUTS[env_family]
    config = NETWORK_CONFIGS[opts.config]
    image_size = opts.image_size or config.default_image_size
    device, dtype = _device_and_dtype(opts)
    parts = _load_parts(opts, env_family, layout, config, image_size)
    network = CosmosNetwork.build(config, device, dtype, transformer_weights=parts.weights,
                                  vae_directory=None if parts.vae == RANDOM else parts.vae_directory(),
                                  seed=opts.init_seed)
    compiled = _speed_up(network, opts, config, image_size)
    settings = _inference_settings(opts, layout, image_size, env_family)
    log.info("cosmos %s on %s (%s, DiT matmuls %s), checkpoint %s, compiled %s, %s", config.name, device, dtype,
             opts.dit_precision, parts.checkpoint, compiled, settings)
    return CosmosPolicy(network, layout, parts.stats, parts.embeddings, settings, {**layout.camera_keys, **opts.cameras})


def _device_and_dtype(opts: CosmosOptions) -> tuple[Any, Any]:
    """The torch device and dtype the options ask for, checked against this machine."""
    import torch  # noqa: PLC0415 - heavy imports only when a policy is built

    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError("device", f"{opts.device!r} requested but CUDA is not available")
    device = torch.device(opts.device if opts.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if opts.dit_precision == "fp8" and device.type == "cuda" and torch.cuda.get_device_capability(device) < FP8_MIN_CAPABILITY:
        raise SpecError("dit_precision", f"'fp8' needs FP8 tensor cores (Hopper or Ada, compute capability >= 8.9); "
                        f"{torch.cuda.get_device_name(device)} has {torch.cuda.get_device_capability(device)}: use 'bf16'")
    dtype_name = opts.dtype if opts.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    return device, getattr(torch, dtype_name)


@dataclass
class _Parts:
    """What a policy is built from besides the network's architecture."""

    checkpoint: str  # repo id | directory | "random"
    vae: str  # repo id | directory | "random"
    stats: Any  # DatasetStats
    embeddings: Any  # EmbeddingTable | PseudoEmbeddings
    weights: Mapping[str, Any] | None  # the DiT's diffusers state dict; None = random

    def vae_directory(self) -> Any:
        from robofleet.policies.cosmos.checkpoint import locate_vae

        return locate_vae(self.vae)


def _load_parts(opts: CosmosOptions, env_family: str, layout: LatentLayout, config: Any, image_size: int) -> _Parts:
    """Dataset statistics, instruction embeddings and DiT weights: from the checkpoint, or random."""
    from robofleet.policies.cosmos.checkpoint import locate_checkpoint, read_weights, to_diffusers_state_dict
    from robofleet.policies.cosmos.embeddings import PseudoEmbeddings, load_embeddings
    from robofleet.policies.cosmos.network import transformer_shapes
    from robofleet.policies.cosmos.stats import DatasetStats

    checkpoint = opts.checkpoint or (RELEASED_CHECKPOINTS[env_family] if config.name == "2b" else RANDOM)
    vae = opts.vae or (RANDOM if checkpoint == RANDOM else DEFAULT_VAE)
    weights = None
    if checkpoint == RANDOM:
        log.warning("cosmos: RANDOM WEIGHTS (%s config) - for tests and speed benchmarks only", config.name)
        stats = DatasetStats.unit(layout.action_dim, layout.proprio_dim)
        _check_fits(layout, image_size, stats.action_dim, stats.proprio_dim)
        embeddings = (
            load_embeddings(opts.embeddings, trust_pickle=opts.trust_pickle)
            if opts.embeddings
            else PseudoEmbeddings(config.text_tokens, config.transformer.text_embed_dim)
        )
    else:
        files = locate_checkpoint(checkpoint)
        stats = DatasetStats.load(files.stats)
        if stats.action_dim != layout.action_dim:
            raise CheckpointError(f"{files.stats} has {stats.action_dim}-dim actions; {env_family} uses {layout.action_dim}")
        _check_fits(layout, image_size, stats.action_dim, stats.proprio_dim)
        source = opts.embeddings or files.embeddings
        if source is None:
            raise CheckpointError(f"no *t5_embeddings file in {files.directory}; set the `embeddings` option")
        embeddings = load_embeddings(source, trust_pickle=opts.trust_pickle)
        raw = read_weights(files.weights)
        weights = to_diffusers_state_dict(raw, transformer_shapes(config), config.transformer.num_layers, str(files.weights))
    expected = (config.text_tokens, config.transformer.text_embed_dim)
    if tuple(embeddings.shape) != expected:
        raise CheckpointError(f"embeddings in {embeddings.source} are {tuple(embeddings.shape)}, the network needs {expected}")
    return _Parts(checkpoint, vae, stats, embeddings, weights)


def _speed_up(network: Any, opts: CosmosOptions, config: Any, image_size: int) -> tuple[str, str]:
    """The fast path's rewrites of the built network, in their order (per-frame adaLN, FP8, GELU epilogue,
    then torch.compile of the DiT and the VAE encode). Returns the DiT's (compile scope, mode)."""
    from robofleet.policies.cosmos.fp8 import quantize_dit
    from robofleet.policies.cosmos.frame_modulation import modulate_per_frame
    from robofleet.policies.cosmos.gelu_epilogue import fuse_gelu_epilogues

    on_gpu = network.device.type == "cuda"
    if opts.adaln_modulation == "per_frame":
        patch = config.transformer.patch_size
        side = image_size // VAE_SPATIAL_FACTOR
        modulate_per_frame(network.transformer, (side // patch[1]) * (side // patch[2]))
    if opts.dit_precision == "fp8":  # before compiling: the compiled graph is the quantised one
        report = quantize_dit(network.transformer)
        log.info("cosmos: FP8 DiT: %d Linear layers -> float8_e4m3fn rowwise, %.1f%% of the DiT's %.2fM parameters",
                 report.layers, 100 * report.share, report.total_parameters / 1e6)
    if opts.gelu_epilogue == "on" or (opts.gelu_epilogue == "auto" and on_gpu):  # after FP8: an FP8 projection keeps its GELU
        log.info("cosmos: feed-forward GELU in the GEMM epilogue in %d blocks", fuse_gelu_epilogues(network.transformer))
    scope = opts.compile if opts.compile != "auto" else ("full" if on_gpu else "none")
    mode = opts.compile_mode
    if mode == "auto":
        mode = "reduce-overhead" if scope == "full" and on_gpu else "default"
    if scope != "none":
        network.accelerate(scope, mode)
    vae_mode = opts.vae_compile if opts.vae_compile != "auto" else ("default" if on_gpu else "none")
    network.accelerate_vae(None if vae_mode == "none" else vae_mode,
                           opts.vae_channels_last == "on" or (opts.vae_channels_last == "auto" and on_gpu))
    return scope, mode


def _inference_settings(opts: CosmosOptions, layout: LatentLayout, image_size: int, env_family: str) -> Any:
    """The options' InferenceSettings, family defaults filled in."""
    from robofleet.policies.cosmos.policy import InferenceSettings

    return InferenceSettings(
        action_steps=opts.action_steps or layout.default_action_steps,
        future_steps=opts.future_steps,
        value_steps=opts.value_steps,
        autoregressive_future=opts.autoregressive_future,
        autoregressive_value=opts.autoregressive_value,
        image_size=image_size,
        jpeg_roundtrip=JPEG_ROUNDTRIP_DEFAULTS[env_family] if opts.jpeg_roundtrip is None else opts.jpeg_roundtrip,
        center_crop=opts.center_crop,
        return_future_images=opts.return_future_images,
        return_latents=opts.return_latents,
        pad_to=opts.pad_to,
        vae_encode=opts.vae_encode,
        profile=opts.profile,
    )
