"""`make_cosmos(options, env_family)`: validate a spec's [policy] options and build a CosmosPolicy.

Example spec (TOML):

    [policy]
    name = "cosmos"
    config = "2b"                                        # or "tiny" (random weights, CPU tests)
    checkpoint = "nvidia/Cosmos-Policy-LIBERO-Predict2-2B"   # repo id, directory, or "random"
    embeddings = "libero_t5_embeddings.safetensors"      # from `robofleet convert-embeddings`
    pad_to = 8                                           # batch-invariant inference
    compile = "auto"                                     # the fast path on GPU; "none" = eager diffusers
    dit_precision = "bf16"                               # "fp8": FP8 matmuls in the DiT blocks (Hopper/Ada)

"random" weights (no checkpoint) are for tests and speed benchmarks only: the policy then uses
unit dataset bounds and pseudo-random instruction embeddings, and logs a warning saying so.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

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


@dataclass(frozen=True)
class CosmosOptions:
    """The [policy] options of `cosmos`; None means "the default for this config and env family"."""

    config: str = "2b"  # network: "2b" (the released one) or "tiny" (random-weight CPU tests)
    checkpoint: str | None = None  # HF repo id | directory | "random"; default: released repo (2b), random (tiny)
    vae: str | None = None  # diffusers Wan2.1 VAE repo id | directory | "random"; default: DEFAULT_VAE with a checkpoint
    embeddings: str | None = None  # T5 embeddings file; default: the one in the checkpoint
    trust_pickle: bool = False  # allow unpickling a released *_t5_embeddings.pkl (runs code from the file)
    device: str = "auto"  # "auto" (cuda if available) | "cpu" | "cuda" | "cuda:N"
    dtype: str = "auto"  # "auto" (bfloat16 on cuda, float32 on cpu) | "float32" | "bfloat16"
    action_steps: int | None = None  # network evaluations for the action; default 5 (ALOHA 10)
    future_steps: int = 1  # evaluations of a world-model pass
    value_steps: int = 1  # evaluations of a value pass
    autoregressive_future: bool = False  # predict s' in a second pass conditioned on the sampled action
    autoregressive_value: bool = False  # predict V in a further pass conditioned on [s, a, s']
    image_size: int | None = None  # model input side in pixels, multiple of 16; default 224 (tiny: 32)
    jpeg_roundtrip: bool | None = None  # JPEG q95 round trip of camera images; default: JPEG_ROUNDTRIP_DEFAULTS (ALOHA off)
    center_crop: bool = True  # 90%-area centre crop (checkpoints trained with image augmentation)
    return_future_images: bool = False  # decode predicted future camera images (costs a VAE decode)
    return_latents: bool = False  # attach predict()'s latent sample (~450 KB at 224 px) for value()
    pad_to: int = 0  # run every batch at exactly this size (batch-invariant results); 0 = off
    cameras: Mapping[str, str] = field(default_factory=dict)  # camera role -> Observation.images key overrides
    profile: bool = False  # synchronise the GPU between phases to time them separately
    init_seed: int = 0  # seed of the random weights (checkpoint = "random")
    vae_encode: str = "needed"  # "needed": only the latent frames the DiT reads (exact, ~4x less VAE work) | "full"
    compile: str = "auto"  # torch.compile of the DiT: "auto" (full on CUDA) | "none" (eager) | "blocks" | "full"
    compile_mode: str = "auto"  # "auto" | default | reduce-overhead (CUDA graphs, full only) | max-autotune...
    dit_precision: str = "bf16"  # "bf16" (matmuls in `dtype`) | "fp8" (e4m3 rowwise in the DiT blocks, fp8.py)
    adaln_modulation: str = "per_frame"  # adaLN-LoRA once per latent frame (same values) | "per_token" (diffusers')
    vae_compile: str = "auto"  # torch.compile of the VAE encode: "auto" (default on CUDA) | "none" | a mode without CUDA graphs
    vae_channels_last: str = "auto"  # VAE encode in channels-last-3d layout: "auto" (on CUDA) | "on" | "off"
    gelu_epilogue: str = "auto"  # feed-forward GELU inside the GEMM: "auto" (on CUDA) | "on" | "off" (gelu_epilogue.py)


def _check_type(key: str, value: Any, expected: type) -> None:
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if not ok:
        raise SpecError(key, f"expected {expected.__name__}, got {value!r}")


def parse_options(options: Mapping[str, Any], env_family: str) -> CosmosOptions:
    """Validate `options` (TOML-parsed) for `env_family`; SpecError names the offending key."""
    if env_family not in LAYOUTS:
        raise SpecError("env_family", f"cosmos supports {sorted(LAYOUTS)}, not {env_family!r}")
    known = {f.name for f in fields(CosmosOptions)}
    unknown = sorted(set(options) - set(known) - {"name"})  # "name" selects the policy in the spec itself
    if unknown:
        raise SpecError(unknown[0], f"unknown cosmos option; allowed: {', '.join(sorted(known))}")
    values = {key: value for key, value in options.items() if key != "name"}
    types = {"config": str, "checkpoint": str, "vae": str, "embeddings": str, "device": str, "dtype": str,
             "vae_encode": str, "compile": str, "compile_mode": str, "dit_precision": str,
             "adaln_modulation": str, "vae_compile": str, "vae_channels_last": str,
             "gelu_epilogue": str,
             "cameras": Mapping, "trust_pickle": bool, "autoregressive_future": bool, "autoregressive_value": bool,
             "jpeg_roundtrip": bool, "center_crop": bool, "return_future_images": bool, "return_latents": bool,
             "profile": bool}
    for key, value in values.items():
        _check_type(key, value, types.get(key, int))
    parsed = CosmosOptions(**values)
    layout = LAYOUTS[env_family]
    if parsed.config not in NETWORK_CONFIGS:
        raise SpecError("config", f"{parsed.config!r} is not one of {sorted(NETWORK_CONFIGS)}")
    if not _DEVICE.fullmatch(parsed.device):
        raise SpecError("device", f"{parsed.device!r}: use auto, cpu, cuda or cuda:N")
    if parsed.dtype not in DTYPES:
        raise SpecError("dtype", f"{parsed.dtype!r} is not one of {DTYPES}")
    for key, allowed in (("vae_encode", VAE_ENCODES), ("compile", COMPILE_CHOICES), ("compile_mode", COMPILE_MODE_CHOICES),
                         ("dit_precision", DIT_PRECISIONS), ("adaln_modulation", ADALN_MODULATIONS),
                         ("vae_compile", VAE_COMPILE_CHOICES), ("vae_channels_last", SWITCH_CHOICES),
                         ("gelu_epilogue", SWITCH_CHOICES)):
        if getattr(parsed, key) not in allowed:
            raise SpecError(key, f"{getattr(parsed, key)!r} is not one of {allowed}")
    if parsed.compile == "blocks" and parsed.compile_mode in ("reduce-overhead", "max-autotune"):
        raise SpecError("compile_mode", f"{parsed.compile_mode!r} captures CUDA graphs, which needs compile = \"full\" "
                        "(per-block graphs overwrite each other's outputs); use \"default\" with \"blocks\"")
    for key in ("action_steps", "future_steps", "value_steps"):
        if getattr(parsed, key) is not None and getattr(parsed, key) < 1:
            raise SpecError(key, f"must be >= 1, got {getattr(parsed, key)}")
    if parsed.pad_to < 0:
        raise SpecError("pad_to", f"must be >= 0 (0 = off), got {parsed.pad_to}")
    if parsed.image_size is not None and (parsed.image_size < _IMAGE_MULTIPLE or parsed.image_size % _IMAGE_MULTIPLE):
        raise SpecError("image_size", f"must be a positive multiple of {_IMAGE_MULTIPLE}, got {parsed.image_size}")
    if not all(isinstance(image_key, str) for image_key in parsed.cameras.values()):
        raise SpecError("cameras", f"values must be Observation.images keys (strings), got {dict(parsed.cameras)}")
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
    """The policy registry's factory for "cosmos" (see module docstring)."""
    import torch  # noqa: PLC0415 - heavy imports only when a policy is built

    from robofleet.policies.cosmos.checkpoint import locate_checkpoint, locate_vae, read_weights, to_diffusers_state_dict
    from robofleet.policies.cosmos.embeddings import PseudoEmbeddings, load_embeddings
    from robofleet.policies.cosmos.fp8 import quantize_dit
    from robofleet.policies.cosmos.frame_modulation import modulate_per_frame
    from robofleet.policies.cosmos.gelu_epilogue import fuse_gelu_epilogues
    from robofleet.policies.cosmos.network import CosmosNetwork, transformer_shapes
    from robofleet.policies.cosmos.policy import CosmosPolicy, InferenceSettings
    from robofleet.policies.cosmos.stats import DatasetStats

    opts = parse_options(options, env_family)
    layout = LAYOUTS[env_family]
    config = NETWORK_CONFIGS[opts.config]
    image_size = opts.image_size or config.default_image_size
    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError("device", f"{opts.device!r} requested but CUDA is not available")
    device = torch.device(opts.device if opts.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if opts.dit_precision == "fp8" and device.type == "cuda" and torch.cuda.get_device_capability(device) < FP8_MIN_CAPABILITY:
        raise SpecError("dit_precision", f"'fp8' needs FP8 tensor cores (Hopper or Ada, compute capability >= 8.9); "
                        f"{torch.cuda.get_device_name(device)} has {torch.cuda.get_device_capability(device)}: use 'bf16'")
    dtype_name = opts.dtype if opts.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
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
    network = CosmosNetwork.build(
        config,
        device,
        getattr(torch, dtype_name),
        transformer_weights=weights,
        vae_directory=None if vae == RANDOM else locate_vae(vae),
        seed=opts.init_seed,
    )
    if opts.adaln_modulation == "per_frame":
        patch = config.transformer.patch_size
        side = image_size // VAE_SPATIAL_FACTOR
        modulate_per_frame(network.transformer, (side // patch[1]) * (side // patch[2]))
    if opts.dit_precision == "fp8":  # before compiling: the compiled graph is the quantised one
        report = quantize_dit(network.transformer)
        log.info("cosmos: FP8 DiT: %d Linear layers -> float8_e4m3fn rowwise, %.1f%% of the DiT's %.2fM parameters",
                 report.layers, 100 * report.share, report.total_parameters / 1e6)
    if opts.gelu_epilogue == "on" or (opts.gelu_epilogue == "auto" and device.type == "cuda"):  # after FP8: an FP8 projection keeps its GELU
        log.info("cosmos: feed-forward GELU in the GEMM epilogue in %d blocks", fuse_gelu_epilogues(network.transformer))
    scope = opts.compile if opts.compile != "auto" else ("full" if device.type == "cuda" else "none")
    mode = opts.compile_mode
    if mode == "auto":
        mode = "reduce-overhead" if scope == "full" and device.type == "cuda" else "default"
    if scope != "none":
        network.accelerate(scope, mode)
    on_gpu = device.type == "cuda"
    vae_mode = opts.vae_compile if opts.vae_compile != "auto" else ("default" if on_gpu else "none")
    network.accelerate_vae(None if vae_mode == "none" else vae_mode,
                           opts.vae_channels_last == "on" or (opts.vae_channels_last == "auto" and on_gpu))
    settings = InferenceSettings(
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
    log.info("cosmos %s on %s (%s, DiT matmuls %s), checkpoint %s, compiled %s, %s", config.name, device, dtype_name,
             opts.dit_precision, checkpoint, network.compiled, settings)
    policy = CosmosPolicy(network, layout, stats, embeddings, settings, {**layout.camera_keys, **opts.cameras})
    if scope != "none" or network.vae_compiled:
        log.info("cosmos: DiT compiled (%s, %s), VAE encode compiled (%s), warmed up in %.1f s", scope, mode,
                 network.vae_compiled, policy.warm_up())
    return policy
