"""Validate a `cosmos` [policy] table on the driver, before Ray starts, without loading any weights.

Two stages (policies/registry.py calls both through `validate_cosmos(context, check_files)`; the
context, policies/contract.PolicyContext, is what the platform tells a policy about the run):

- always (spec validation, no file system, no torch): the options themselves (factory.parse_options)
  and rendered cameras.
- `check_files=True` (the runner, just before it starts Ray): policy replicas for env families whose
  workers have no torch; the checkpoint directory (or the HF
  cache entry of a repo id) holds one weights file, a statistics JSON with the keys inference needs,
  and T5 embeddings; a pickle is refused without `trust_pickle`; our safetensors embeddings are read
  by their header only and must hold every instruction of the spec's tasks; the weights' keys and
  shapes must match the network (safetensors: header only; `.pt`: memory-mapped, weights_only, no
  tensor data read). A repo id that is not in the local HF cache is left to the replicas to fetch
  (unless HF_HUB_OFFLINE is set: then it is an error now).

    validate_cosmos(context, check_files=True)   # raises SpecError / CheckpointError naming the fix
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robofleet.platform.errors import CheckpointError, SpecError
from robofleet.policies.cosmos.config import NETWORK_CONFIGS
from robofleet.policies.contract import PolicyContext
from robofleet.policies.cosmos.factory import DEFAULT_VAE, RANDOM, RELEASED_CHECKPOINTS, CosmosOptions, parse_options

log = logging.getLogger(__name__)

_EMBEDDINGS_FORMAT = "robofleet-t5-embeddings/1"  # embeddings.FORMAT (that module imports torch)


def validate_cosmos(context: PolicyContext, check_files: bool) -> None:
    """The registry's validator of `cosmos` (see the module docstring)."""
    opts = _options(context)
    if not context.render_cameras:
        raise SpecError("env.render_cameras", "policy 'cosmos' reads camera images: set env.render_cameras = true")
    if not check_files:
        return
    # On the driver only: a spec without replicas is still a valid spec (an env worker in the family's
    # own environment explains the same thing, platform/env_worker.py), but the driver can say it before Ray.
    if not context.workers_have_torch and context.replicas < 1:
        raise SpecError("serving.replicas", f"env workers of family {context.family!r} run without torch: serve "
                                            "cosmos from policy replicas ([serving] replicas = 1 or more)")
    check_cosmos_files(context, opts)


def _options(context: PolicyContext) -> CosmosOptions:
    from robofleet.policies.by_family import COSMOS_LAYOUT

    try:
        return parse_options(context.options, COSMOS_LAYOUT.get(context.family, context.family))
    except SpecError as exc:  # factory keys are bare option names: say where they live in the spec
        key = "env.family" if exc.key == "env_family" else f"policy.{exc.key}"
        raise SpecError(key, exc.message) from exc


@dataclass(frozen=True)
class _Located:
    weights: Path
    stats: Path
    embeddings: Path | None
    directory: Path


def check_cosmos_files(context: PolicyContext, opts: CosmosOptions) -> None:
    """The file checks of `check_files=True`; CheckpointError names the file and the fix."""
    from robofleet.policies.by_family import COSMOS_LAYOUT
    from robofleet.policies.cosmos.layout import LAYOUTS

    layout = LAYOUTS[COSMOS_LAYOUT.get(context.family, context.family)]
    config = NETWORK_CONFIGS[opts.config]
    checkpoint = opts.checkpoint or (RELEASED_CHECKPOINTS[layout.family] if config.name == "2b" else RANDOM)
    vae = opts.vae or (RANDOM if checkpoint == RANDOM else DEFAULT_VAE)
    embeddings = Path(opts.embeddings).expanduser() if opts.embeddings else None
    if embeddings is not None and not embeddings.is_file():
        raise CheckpointError(f"policy.embeddings: {embeddings} does not exist; convert the released pickle with "
                              "`robofleet convert-embeddings IN.pkl OUT.safetensors` and point `embeddings` at it")
    if checkpoint != RANDOM:
        located = _locate(checkpoint, "policy.checkpoint")
        if located is not None:
            _check_stats(located.stats, layout.action_dim)
            embeddings = embeddings or located.embeddings
            if embeddings is None:
                raise CheckpointError(f"policy.checkpoint: no *t5_embeddings file in {located.directory}; "
                                      "set the `embeddings` option")
            _check_weights(located.weights, config)
    if vae != RANDOM:
        _check_vae(vae)
    if embeddings is not None:
        _check_embeddings(embeddings, opts.trust_pickle, (config.text_tokens, config.transformer.text_embed_dim),
                          context.instructions())


def _hf_cached(repo_id: str, patterns: list[str]) -> Path | None:
    """The local snapshot of a repo id, without any network access; None when it is not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=repo_id, allow_patterns=patterns, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _resolve(location: str, key: str, patterns: list[str]) -> Path | None:
    """A directory, a cached repo snapshot, or None (a repo id the replicas will download)."""
    from robofleet.policies.cosmos.checkpoint import REPO_ID

    path = Path(location).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{key}: {location} is a file; give the checkpoint's directory or a HF repo id")
    if not REPO_ID.fullmatch(location) or location.startswith((".", "/", "~")):
        raise CheckpointError(f"{key}: {location!r} is neither an existing directory nor a Hugging Face repo id "
                              "(owner/name); fix the path")
    cached = _hf_cached(location, patterns)
    if cached is None and _offline():
        raise CheckpointError(f"{key}: {location!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                              "download it first (huggingface-cli download) or point to a local directory")
    if cached is None:
        log.info("%s %s is not cached locally: the replicas will download it", key, location)
    return cached


def _locate(location: str, key: str) -> _Located | None:
    from robofleet.policies.cosmos.checkpoint import CHECKPOINT_PATTERNS

    directory = _resolve(location, key, CHECKPOINT_PATTERNS)
    if directory is None:
        return None
    files = sorted(p for p in directory.iterdir() if p.is_file())
    weights = [p for p in files if p.suffix in (".pt", ".safetensors") and "t5_embeddings" not in p.name]
    stats = [p for p in files if p.name.endswith("dataset_statistics.json")]
    embeddings = [p for p in files if "t5_embeddings" in p.name and p.suffix in (".safetensors", ".pkl")]
    preferred = [p for p in embeddings if p.suffix == ".safetensors"] or embeddings
    for found, what in ((weights, "weights file (*.pt or *.safetensors)"), (stats, "*dataset_statistics.json")):
        if len(found) != 1:
            raise CheckpointError(f"{key}: expected exactly one {what} in {directory}, found "
                                  f"{[p.name for p in found] or 'none'}")
    if len(preferred) > 1:
        raise CheckpointError(f"{key}: several T5 embedding files in {directory}: {[p.name for p in preferred]}; "
                              "keep one or name it with the `embeddings` option")
    return _Located(weights[0], stats[0], preferred[0] if preferred else None, directory)


def _check_stats(path: Path, action_dim: int) -> None:
    from robofleet.policies.cosmos.stats import DatasetStats

    stats = DatasetStats.load(path)  # CheckpointError names missing or inconsistent keys
    if stats.action_dim != action_dim:
        raise CheckpointError(f"{path} has {stats.action_dim}-dim actions; this env family's layout uses {action_dim}: "
                              "is it the checkpoint of another robot?")


class _Shape:
    """A stand-in for a tensor in key/shape checks: the shape only (read from a file header)."""

    def __init__(self, shape: Any):
        self.shape = tuple(shape)


def _check_weights(path: Path, config: Any) -> None:
    """Keys and shapes against the network, from the file's header (no tensor data is read)."""
    from robofleet.policies.cosmos.checkpoint import read_weights, to_diffusers_state_dict
    from robofleet.policies.cosmos.network import transformer_shapes

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="np") as handle:
                raw: dict[str, Any] = {k: _Shape(handle.get_slice(k).get_shape()) for k in handle.keys()}
        except (OSError, SafetensorError) as err:
            raise CheckpointError(f"cannot read {path} as safetensors: {err}; re-download it") from err
    else:
        raw = read_weights(path)  # weights_only, memory-mapped: refuses code, reads no tensor data yet
    to_diffusers_state_dict(raw, transformer_shapes(config), config.transformer.num_layers, str(path))


def _check_vae(location: str) -> None:
    from robofleet.policies.cosmos.checkpoint import VAE_SUBFOLDER

    directory = _resolve(location, "policy.vae", [f"{VAE_SUBFOLDER}/*"])
    if directory is None:
        return
    if not any((d / "config.json").is_file() for d in (directory, directory / VAE_SUBFOLDER)):
        raise CheckpointError(f"policy.vae: no diffusers VAE (config.json) in {directory} or its {VAE_SUBFOLDER}/ "
                              "folder; point `vae` at a diffusers AutoencoderKLWan folder")


def _check_embeddings(path: Path, trust_pickle: bool, shape: tuple[int, int], instructions: list[str]) -> None:
    """Pickle rule; for our safetensors format: the header's format, shape and instruction list."""
    if path.suffix == ".pkl":
        if not trust_pickle:
            raise CheckpointError(
                f"refusing to unpickle {path}: a pickle can run arbitrary code. Convert it once with "
                f"`robofleet convert-embeddings {path} OUT.safetensors` (or set trust_pickle = true).")
        return  # not unpickled here as well: the replica reads it once
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            stacked = tuple(handle.get_slice("embeddings").get_shape())
        known = json.loads(metadata.get("instructions", "null"))
    except (OSError, SafetensorError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read embeddings {path}: {err!r}; re-create it with "
                              "`robofleet convert-embeddings`") from err
    if metadata.get("format") != _EMBEDDINGS_FORMAT or not isinstance(known, list):
        raise CheckpointError(f"{path} is not a {_EMBEDDINGS_FORMAT} file (metadata format={metadata.get('format')!r}); "
                              "create it with `robofleet convert-embeddings`")
    if tuple(stacked[1:]) != shape:
        raise CheckpointError(f"embeddings in {path} are {tuple(stacked[1:])}, the network needs {shape}")
    missing = [text for text in instructions if text not in set(known)]
    if missing:
        raise CheckpointError(f"no T5 embedding for instruction {missing[0]!r} in {path} ({len(known)} instructions "
                              f"known; {len(missing)} of the spec's tasks missing). T5 does not run at inference: "
                              "add these instructions' embeddings to the file or choose other tasks.")
