"""Dataset statistics that scale actions and proprio into and out of [-1, 1].

Released checkpoints ship `<family>_dataset_statistics.json` with lists under
`actions_{min,max,mean,std,median}` and `proprio_{min,max,mean,std,median}`; inference uses the
min/max pairs only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robofleet.platform.errors import CheckpointError

REQUIRED_KEYS = ("actions_min", "actions_max", "proprio_min", "proprio_max")


@dataclass(frozen=True)
class DatasetStats:
    """Per-dimension bounds. actions_*: float64 (d_act,); proprio_*: float64 (P,). Env units."""

    actions_min: np.ndarray
    actions_max: np.ndarray
    proprio_min: np.ndarray
    proprio_max: np.ndarray
    source: str

    @property
    def action_dim(self) -> int:
        return int(self.actions_min.shape[0])

    @property
    def proprio_dim(self) -> int:
        return int(self.proprio_min.shape[0])

    @classmethod
    def load(cls, path: Path) -> DatasetStats:
        """Read a `*_dataset_statistics.json`; CheckpointError names missing or inconsistent keys."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"cannot read dataset statistics {path}: {err}") from err
        missing = [key for key in REQUIRED_KEYS if key not in raw]
        if missing:
            raise CheckpointError(f"dataset statistics {path} lack {missing} (has {sorted(raw)})")
        arrays = {key: np.asarray(raw[key], dtype=np.float64) for key in REQUIRED_KEYS}
        for name in ("actions", "proprio"):
            low, high = arrays[f"{name}_min"], arrays[f"{name}_max"]
            if low.ndim != 1 or low.shape != high.shape:
                raise CheckpointError(f"{path}: {name}_min {low.shape} and {name}_max {high.shape} must be equal-length lists")
            if np.any(high < low):
                raise CheckpointError(f"{path}: {name}_max < {name}_min at dims {np.flatnonzero(high < low).tolist()}")
        return cls(**arrays, source=str(path))

    @classmethod
    def unit(cls, action_dim: int, proprio_dim: int) -> DatasetStats:
        """Bounds [-1, 1] everywhere (normalisation is the identity): random-weights mode only."""
        ones_a, ones_p = np.ones(action_dim), np.ones(proprio_dim)
        return cls(-ones_a, ones_a, -ones_p, ones_p, source="unit bounds (random-weights mode)")
