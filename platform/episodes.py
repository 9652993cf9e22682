"""Episode identity and the expansion of a run spec into its episodes.

An episode is identified by (env family, suite, task, trial, sweep seed); the policy and planner
are fixed per run directory. The identity never depends on worker id, arrival order or batch
position, so the same spec yields the same episodes and seeds with 1 or 16 workers, and two runs
of different policies on the same spec pair up episode by episode (`robofleet compare`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from robofleet.platform.protocol import scene_seed
from robofleet.platform.seeds import decision_seed, episode_seed
from robofleet.platform.spec import RunSpec


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to run. `seed` is the derived episode seed (sim seed and root of policy noise)."""

    episode_id: str
    family: str
    suite: str
    task_id: int
    trial: int
    sweep_seed: int
    seed: int
    protocol: str = "reference"  # platform/protocol.py

    @property
    def scene_seed(self) -> int:
        """The seed of the simulator's scene draws at reset (platform/protocol.py)."""
        return scene_seed(self.protocol, self.family, self.sweep_seed, self.trial, self.seed)

    def decision_seed(self, query_index: int) -> int:
        """The noise seed of this episode's `query_index`-th policy query."""
        return decision_seed(self.protocol, self.sweep_seed, self.seed, query_index)

    def to_dict(self) -> dict:
        return asdict(self)


def episode_key(family: str, suite: str, task_id: int, trial: int) -> str:
    """The stable string identity of an episode within a sweep seed."""
    return f"{family}/{suite}/task{task_id:02d}/trial{trial:03d}"


def expand_episodes(spec: RunSpec) -> list[EpisodeSpec]:
    """All episodes of a run, ordered task-major then trial (the order the driver schedules)."""
    episodes = []
    for task_id in spec.env.tasks:
        for trial in range(spec.env.trials):
            key = episode_key(spec.env.family, spec.env.suite, task_id, trial)
            episodes.append(
                EpisodeSpec(
                    episode_id=f"{key}/seed{spec.seed}",
                    family=spec.env.family,
                    suite=spec.env.suite,
                    task_id=task_id,
                    trial=trial,
                    sweep_seed=spec.seed,
                    seed=episode_seed(spec.seed, key),
                    protocol=spec.protocol,
                )
            )
    return episodes
