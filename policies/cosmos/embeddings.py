"""T5 instruction embeddings, looked up by exact instruction text (T5-11B never runs at inference).

Our file format is safetensors: one tensor `embeddings` (N, L, D) plus metadata `format` and
`instructions` (a JSON list of N strings, in row order). Released checkpoints ship a pickle
{instruction: bf16 tensor (1, 512, 1024)}; unpickling runs arbitrary code, so it is read only with
an explicit `trust_pickle=True`, and `convert_t5_pickle` turns it into our format once.

`PseudoEmbeddings` exist for random-weight runs only (tiny CPU tests, GPU speed benchmarks).
"""
from __future__ import annotations

import difflib
import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from robofleet.platform.errors import CheckpointError

log = logging.getLogger(__name__)

FORMAT = "robofleet-t5-embeddings/1"


class EmbeddingTable:
    """instruction -> embedding (L, D), e.g. (512, 1024) for T5-11B."""

    def __init__(self, table: Mapping[str, torch.Tensor], source: str):
        shapes = {tuple(v.shape) for v in table.values()}
        if len(shapes) > 1:
            raise CheckpointError(f"embeddings in {source} have different shapes: {sorted(shapes)}")
        self._table = dict(table)
        self.source = source
        self.shape: tuple[int, ...] = shapes.pop() if shapes else ()

    def __len__(self) -> int:
        return len(self._table)

    @property
    def instructions(self) -> list[str]:
        return list(self._table)

    def lookup(self, instructions: Sequence[str]) -> torch.Tensor:
        """(B, L, D) float embeddings of the given instructions, on the CPU.

        Raises CheckpointError naming the first instruction without an embedding.
        """
        for text in instructions:
            if text not in self._table:
                close = difflib.get_close_matches(text, self._table, n=1)
                hint = f"; closest known: {close[0]!r}" if close else ""
                raise CheckpointError(
                    f"no T5 embedding for instruction {text!r} in {self.source} ({len(self)} instructions known"
                    f"{hint}). T5 does not run at inference: add this instruction's embedding to the file."
                )
        return torch.stack([self._table[text] for text in instructions])


class PseudoEmbeddings:
    """RANDOM-WEIGHTS MODE ONLY: a fixed pseudo-random (L, D) vector per instruction (from its SHA-256).

    Keeps tiny CPU tests and speed benchmarks free of T5 files; meaningless for trained weights.
    """

    source = "pseudo-random embeddings (random-weights mode)"

    def __init__(self, tokens: int, dim: int):
        self.shape = (tokens, dim)
        self._rows: dict[str, np.ndarray] = {}  # drawing one costs ~5 ms at 512 x 1024: once per instruction

    def lookup(self, instructions: Sequence[str]) -> torch.Tensor:
        """(B, L, D) float32 standard-normal embeddings, a deterministic function of each instruction."""
        for text in instructions:
            if text not in self._rows:
                seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
                self._rows[text] = np.random.default_rng(seed).standard_normal(self.shape, dtype=np.float32)
        return torch.from_numpy(np.stack([self._rows[text] for text in instructions]))


def save_embeddings(table: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write instruction -> (L, D) (or (1, L, D)) tensors in our safetensors format."""
    instructions = list(table)
    rows = [table[text].reshape(table[text].shape[-2:]).contiguous() for text in instructions]
    metadata = {"format": FORMAT, "instructions": json.dumps(instructions)}
    save_file({"embeddings": torch.stack(rows)}, str(path), metadata=metadata)


def read_t5_pickle(path: str | Path) -> dict[str, torch.Tensor]:
    """Unpickle a released `*_t5_embeddings.pkl`. This EXECUTES the file: only for files you trust."""
    with open(path, "rb") as handle:
        raw = pickle.load(handle)  # noqa: S301 - callers opt in explicitly (trust_pickle / convert command)
    if not isinstance(raw, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in raw.items()):
        raise CheckpointError(f"{path} is not a pickle of {{instruction: tensor}}")
    return {text: value.reshape(value.shape[-2:]) for text, value in raw.items()}


def load_embeddings(path: str | Path, *, trust_pickle: bool) -> EmbeddingTable:
    """Read our safetensors embeddings, or a released pickle when trust_pickle is True."""
    path = Path(path)
    if path.suffix == ".pkl":
        if not trust_pickle:
            raise CheckpointError(
                f"refusing to unpickle {path}: a pickle can run arbitrary code. Convert it once with "
                f"`robofleet convert-embeddings {path} OUT.safetensors` (or set trust_pickle = true)."
            )
        log.warning("unpickling %s because trust_pickle is set", path)
        return EmbeddingTable(read_t5_pickle(path), str(path))
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not a {FORMAT} file (metadata format={metadata.get('format')!r})")
            stacked = handle.get_tensor("embeddings")
        instructions = json.loads(metadata["instructions"])
    except (OSError, SafetensorError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read embeddings {path}: {err!r}") from err
    if len(instructions) != stacked.shape[0]:
        raise CheckpointError(f"{path}: {len(instructions)} instructions but {stacked.shape[0]} embeddings")
    return EmbeddingTable(dict(zip(instructions, stacked)), str(path))


def convert_t5_pickle(src: str | Path, dst: str | Path) -> int:
    """Convert a released T5 embeddings pickle (trusted by the caller) to our safetensors format.

    Returns the number of instructions written. Backs `robofleet convert-embeddings IN.pkl OUT.safetensors`.
    """
    table = read_t5_pickle(src)
    save_embeddings(table, dst)
    log.info("wrote %d instruction embeddings to %s", len(table), dst)
    return len(table)
