"""Finding and reading Cosmos Policy checkpoints: an HF repo id (through huggingface_hub) or a directory.

A released checkpoint repo (nvidia/Cosmos-Policy-{LIBERO,RoboCasa,ALOHA}-Predict2-2B) holds one
`*.pt` state dict of NVIDIA's DiT (keys `net.*`), `*_dataset_statistics.json` and
`*_t5_embeddings.pkl`. We also accept the weights as `*.safetensors` (same NVIDIA key names) and
the embeddings in our safetensors format (`*_t5_embeddings.safetensors`, see embeddings.py).
Repo ids go through `huggingface_hub.snapshot_download`, which honours HF_HOME / HF_HUB_CACHE,
HF_HUB_OFFLINE and reuses the local cache. The Wan2.1 VAE is not part of these repos; it is read
from a diffusers-format folder (`vae/` of e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers, the VAE diffusers'
converter pairs with Cosmos 2.0 networks).
"""
from __future__ import annotations

import io
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from huggingface_hub import snapshot_download
from safetensors import SafetensorError
from safetensors.torch import load_file

from robofleet.platform.errors import CheckpointError
from robofleet.policies.cosmos.keymap import is_dropped, nvidia_to_diffusers

log = logging.getLogger(__name__)

REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
CHECKPOINT_PATTERNS = ["*.pt", "*.safetensors", "*.json", "*.pkl"]
VAE_SUBFOLDER = "vae"
_EMBEDDINGS_TAG = "t5_embeddings"
_LISTED = 20  # keys shown in an error message


@dataclass(frozen=True)
class CheckpointFiles:
    """The files of one checkpoint. embeddings: our safetensors file if present, else the pickle, else None."""

    directory: Path
    weights: Path
    stats: Path
    embeddings: Path | None


def resolve_directory(location: str, allow_patterns: Sequence[str]) -> Path:
    """A local directory as-is, or a Hugging Face repo id fetched into (or found in) the HF cache."""
    path = Path(location).expanduser()
    if path.is_dir():
        return path
    if not REPO_ID.fullmatch(location):
        raise CheckpointError(f"{location!r} is neither a directory nor a Hugging Face repo id (owner/name)")
    try:
        return Path(snapshot_download(repo_id=location, allow_patterns=list(allow_patterns)))
    except (OSError, ValueError) as err:  # hub HTTP errors and cache misses are OSErrors
        raise CheckpointError(
            f"cannot get {location!r} from the Hugging Face hub or its local cache "
            f"(HF_HOME / HF_HUB_CACHE; HF_HUB_OFFLINE=1 means cache only): {err}"
        ) from err


def _one(directory: Path, candidates: list[Path], what: str) -> Path:
    if len(candidates) != 1:
        found = [p.name for p in candidates] or "none"
        raise CheckpointError(f"expected exactly one {what} in {directory}, found {found}")
    return candidates[0]


def locate_checkpoint(location: str) -> CheckpointFiles:
    """The weights, statistics and embeddings files of a checkpoint repo id or directory."""
    directory = resolve_directory(location, CHECKPOINT_PATTERNS)
    files = sorted(p for p in directory.iterdir() if p.is_file())
    weights = [p for p in files if p.suffix in (".pt", ".safetensors") and _EMBEDDINGS_TAG not in p.name]
    stats = [p for p in files if p.name.endswith("dataset_statistics.json")]
    embeddings = [p for p in files if _EMBEDDINGS_TAG in p.name and p.suffix in (".safetensors", ".pkl")]
    preferred = [p for p in embeddings if p.suffix == ".safetensors"] or embeddings
    if len(preferred) > 1:
        raise CheckpointError(f"several T5 embedding files in {directory}: {[p.name for p in preferred]}")
    return CheckpointFiles(
        directory=directory,
        weights=_one(directory, weights, "weights file (*.pt or *.safetensors)"),
        stats=_one(directory, stats, "*dataset_statistics.json"),
        embeddings=preferred[0] if preferred else None,
    )


def locate_vae(location: str) -> Path:
    """A diffusers-format AutoencoderKLWan folder (holding config.json) from a repo id or directory."""
    directory = resolve_directory(location, [f"{VAE_SUBFOLDER}/*"])
    for candidate in (directory, directory / VAE_SUBFOLDER):
        if (candidate / "config.json").is_file():
            return candidate
    raise CheckpointError(f"no diffusers VAE (config.json) in {directory} or its {VAE_SUBFOLDER}/ folder")


def _empty_bytes(*args: object) -> bytes:
    """Stand-in for `builtins.bytes` in a weights-only load: only the call `bytes()`.

    Pickle protocol 2 (torch.save's) writes an empty bytes object as the call `bytes()`
    (GLOBAL builtins.bytes + REDUCE), which an empty TransformerEngine `_extra_state` BytesIO
    holds; non-empty bytes go through `_codecs.encode`, which torch already allows. Any argument
    (`bytes(10**12)` would allocate a terabyte) is refused.
    """
    if args:
        raise pickle.UnpicklingError(f"refusing builtins.bytes{args!r} in a checkpoint: only bytes() is allowed")
    return b""


# What older TransformerEngine `_extra_state` entries need beyond torch's weights-only defaults:
# io.BytesIO (rebuilt from bytes and a position; it holds data, runs nothing) and the empty
# bytes() call. Nothing else: any other global still fails the load.
_EXTRA_STATE_GLOBALS = [io.BytesIO, (_empty_bytes, "builtins.bytes")]


def read_weights(path: Path) -> dict[str, Any]:
    """The raw NVIDIA-named state dict of a `.pt` (weights_only) or `.safetensors` file."""
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (OSError, SafetensorError) as err:
            raise CheckpointError(f"cannot read {path} as safetensors: {err}") from err
    try:
        with torch.serialization.safe_globals(_EXTRA_STATE_GLOBALS):
            # mmap needs torch's zip format; files in the pre-1.6 legacy format are read into memory
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as err:
        raise CheckpointError(f"cannot read {path} as a weights-only torch checkpoint: {err}") from err
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, expected a state dict")
    return raw


def _listing(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_LISTED])
    return shown + (f", ... ({len(keys) - _LISTED} more)" if len(keys) > _LISTED else "")


def to_diffusers_state_dict(
    raw: Mapping[str, Any], expected: Mapping[str, torch.Size], num_layers: int, source: str
) -> dict[str, torch.Tensor]:
    """Rename NVIDIA keys to diffusers names and check them against the model.

    raw: NVIDIA checkpoint entries ("net.blocks.0.self_attn.q_proj.weight", ...).
    expected: diffusers parameter name -> shape of the model to load into.
    Raises CheckpointError listing unknown keys, missing keys and shape mismatches.
    """
    table = nvidia_to_diffusers(num_layers)
    uncovered = sorted(set(expected) - set(table.values()))
    if uncovered:
        raise CheckpointError(f"the installed diffusers model has parameters our key table lacks: {_listing(uncovered)}")
    unknown = sorted(key for key in raw if key not in table and not is_dropped(key))
    missing = sorted(key for key in table if key not in raw)
    mismatched = [
        f"{key} {tuple(raw[key].shape)} (model {tuple(expected[name])})"
        for key, name in table.items()
        if key in raw and tuple(raw[key].shape) != tuple(expected[name])
    ]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} unknown keys: {_listing(unknown)}")
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched)}")
    if problems:
        raise CheckpointError(f"{source} does not match the {num_layers}-block network: " + "; ".join(problems))
    dropped = sum(1 for key in raw if key not in table)
    log.info("read %d weights from %s (dropped %d non-weight entries)", len(table), source, dropped)
    return {name: raw[key] for key, name in table.items()}
