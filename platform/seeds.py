"""The one place where random seeds are derived (CleanRL-style: explicit, visible, reproducible).

Every draw in a sweep descends from the sweep seed and the episode's identity through
`numpy.random.SeedSequence`, never from worker ids, arrival order or batch positions, so
per-episode results are identical with 1 or 16 workers:

    sweep seed + episode key  -> episode seed          (sim seed, policy noise root)
    episode seed + query index -> query seed           (one policy call: diffusion noise, action noise;
                                                        protocol "reference": the sweep seed itself)
    query seed + proposal index -> proposal seed       (best-of-N proposal i)
"""
from __future__ import annotations

import hashlib

import numpy as np

_MASK_32 = 0xFFFFFFFF


def _key_words(key: str) -> list[int]:
    """A stable (process- and platform-independent) encoding of a string as 32-bit words."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def _derive(root: int, words: list[int]) -> int:
    seq = np.random.SeedSequence(entropy=int(root) & _MASK_32, spawn_key=tuple(words))
    return int(seq.generate_state(1, dtype=np.uint32)[0])


def episode_seed(sweep_seed: int, episode_key: str) -> int:
    """Seed of one episode, from the sweep seed and the episode's identity key (see EpisodeSpec.key)."""
    return _derive(sweep_seed, _key_words(episode_key))


def query_seed(episode_seed_value: int, query_index: int) -> int:
    """Seed of the `query_index`-th policy query (0-based chunk count) within an episode."""
    return _derive(episode_seed_value, [1, int(query_index)])


def decision_seed(protocol: str, sweep_seed: int, episode_seed_value: int, query_index: int) -> int:
    """The noise seed of an episode's `query_index`-th decision under `protocol` (platform/protocol.py):
    the run seed itself for every query under "reference" (NVIDIA's `cfg.seed`), else `query_seed`."""
    if protocol == "reference":
        return int(sweep_seed)
    return query_seed(episode_seed_value, query_index)


def proposal_seed(query_seed_value: int, proposal_index: int) -> int:
    """Seed of best-of-N proposal `proposal_index` (0-based) for one query."""
    return _derive(query_seed_value, [2, int(proposal_index)])


def generator(seed: int) -> np.random.Generator:
    """A numpy Generator for a derived seed (PCG64; identical on every platform)."""
    return np.random.Generator(np.random.PCG64(seed))
