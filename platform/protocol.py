"""Evaluation protocols: what `protocol = "reference"` and `protocol = "robofleet"` change, in one place.

"reference" follows NVlabs/cosmos-policy's published evaluation scripts
(`experiments/robot/libero/run_libero_eval.py`, `libero_utils.py`, `robocasa/run_robocasa_eval.py`):

| aspect | reference | robofleet |
|---|---|---|
| LIBERO scene seeding | numpy's global state seeded 0 before `reset()` and before every step (`env.seed(0)` once per task env plus `--deterministic True`'s per-step reseed): every trial sees seed 0's fixture layout | the episode seed: fixture layout drawn per episode |
| RoboCasa scene seed | `seed * trial * 256` (run_robocasa_eval.py, deterministic mode) | the episode seed |
| query noise seed | the run seed for every query of every episode (`cfg.seed`; the paper ran 195, 196, 197) | SeedSequence(episode seed, query index) |
| chunk execution, `open_loop_steps` k < chunk | LIBERO: the LAST k actions (`deque(maxlen=k).extend(chunk)`); RoboCasa: the first k | the first k |

The reference's query seed is `cfg.seed + query_idx` where `query_idx` is the best-of-N proposal
index: with one proposal (direct) every query uses `cfg.seed`.
The robosuite-1.5 family has no reference evaluation: only "robofleet" applies there. ALOHA is only
served (`robofleet serve`, no simulator): under "reference" a served best-of-N seeds proposal i with
the request's seed + i and counts steps as aloha/deploy.py does.
Imports nothing of robofleet (the spec validator and the env workers both use it).
"""
from __future__ import annotations

from typing import Sequence, TypeVar

PROTOCOLS = ("reference", "robofleet")
LIBERO_SCENE_SEED = 0  # libero_utils.get_libero_env: env.seed(0); run_libero_eval: set_seed_everywhere(0)
_FAMILY_PROTOCOLS = {"libero": PROTOCOLS, "robocasa": PROTOCOLS, "robosuite": ("robofleet",), "aloha": PROTOCOLS}

T = TypeVar("T")


def protocols_of_family(family: str) -> tuple[str, ...]:
    """The protocols an env family supports (the first is its default)."""
    return _FAMILY_PROTOCOLS.get(family, ("robofleet",))


def default_protocol(family: str) -> str:
    return protocols_of_family(family)[0]


def scene_seed(protocol: str, family: str, sweep_seed: int, trial: int, episode_seed: int) -> int:
    """The seed the simulator's reset draws its scene from (fixture layout, RoboCasa's kitchen)."""
    if protocol == "reference":
        if family == "libero":
            return LIBERO_SCENE_SEED
        if family == "robocasa":
            return int(sweep_seed) * int(trial) * 256
    return int(episode_seed)


def reseeds_every_step(protocol: str, family: str) -> bool:
    """LIBERO under the reference: numpy's global RNG is reseeded with 0 before every env step."""
    return protocol == "reference" and family == "libero"


def executed_actions(protocol: str, family: str, chunk: Sequence[T], open_loop_steps: int | None) -> Sequence[T]:
    """The actions of a predicted chunk that are executed before the next query."""
    n = len(chunk) if open_loop_steps is None else min(open_loop_steps, len(chunk))
    if protocol == "reference" and family == "libero":
        return chunk[len(chunk) - n:]
    return chunk[:n]
