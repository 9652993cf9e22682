"""`noisy`: a wrapper that adds seeded Gaussian noise to another policy's arm actions.

It turns one deterministic policy (the scripted expert) into a distribution of proposals: each
request's noise is drawn from the request's own seed (`platform.seeds.generator(seed)`), so best-of-N
proposal i (seed `proposal_seed(query_seed, i)`) differs from proposal j, and the same seed always
gives the same chunk, whatever the worker, replica or batch.

    noise (K, 6) ~ N(0, scale^2) per arm dimension (delta position xyz + delta rotation xyz),
    actions[:, :6] = clip(base_actions[:, :6] + noise, -1, 1)      # the gripper dimension is kept

The clip keeps actions in the controller's input range (robosuite clips there anyway). With the
default scale the scripted expert fails noticeably often on libero_object / libero_spatial (see
benchmarks/planning_oracle.py), so planning over proposals has something to choose between.

Spec example:

    [policy]
    name = "noisy"
    base = "scripted"          # any registered policy name except "noisy"
    scale = 0.3                # Gaussian std in action units on the 6 arm dims; 0 = the base policy
    base_options = { speed = 1.0 }   # the base policy's own options, validated by its factory

Python:

    policy = make_noisy({"scale": 0.3}, "libero")
    [prediction] = policy.predict([obs], [seed])   # prediction.actions: (1, 7) float32
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from robofleet.envs.contract import Observation
from robofleet.platform.config_fields import from_table, mapping, number, setting, text
from robofleet.platform.errors import SpecError
from robofleet.platform.seeds import generator
from robofleet.policies.contract import Policy, PolicyContext, Prediction


ARM_DIMS = 6  # LIBERO's delta EEF pose: position xyz + rotation xyz; the 7th (gripper) stays noiseless
DEFAULT_SCALE = 0.3  # measured: fails noticeably on libero_object and often on libero_spatial (see benchmarks/planning_oracle.py)


def _base_name(value: Any, key: str) -> str:
    """A policy name other than "noisy" (whether it is registered is checked where policies are built)."""
    name = text(value, key, nonempty=True, message="must be a policy name, got {value!r}")
    if name == "noisy":
        raise SpecError(key, "cannot be 'noisy' itself; wrap the policy that makes the actions")
    return name


@dataclass(frozen=True)
class NoisyConfig:
    """The [policy] options of `noisy`."""

    base: str = setting("scripted", _base_name)  # name of the wrapped policy (registry name)
    scale: float = setting(  # Gaussian std in action units on the ARM_DIMS arm dimensions, >= 0
        DEFAULT_SCALE, number, minimum=0.0, maximum=10.0,
        message="must be a number in [0, 10] (action units), got {value!r}")
    base_options: Mapping[str, Any] = setting(  # the wrapped policy's own options
        {}, mapping, message="must be a table of the base policy's options, got {value!r}")

    @staticmethod
    def from_options(options: Mapping[str, Any]) -> "NoisyConfig":
        """Validate `[policy]` options; SpecError names the key, the value and what is allowed."""
        return from_table(NoisyConfig, options, "policy.", unknown="unknown option for policy 'noisy'; allowed: "
                          "{allowed} (options of the wrapped policy go in `base_options`)")


class NoisyPolicy:
    """`base`'s chunks plus Gaussian noise of std `scale` on the first ARM_DIMS action dimensions.

    The base policy receives the same seeds (a stochastic base stays seed-reproducible); the noise of
    request i comes from `generator(seeds[i])`.
    """

    def __init__(self, base: Policy, scale: float):
        self.base = base
        self.scale = float(scale)
        self.chunk_size = base.chunk_size

    def predict(self, observations: Sequence[Observation], seeds: Sequence[int]) -> list[Prediction]:
        """observations[i], seeds[i] -> the base's Prediction with actions (K, d_act) float32 made noisy."""
        predictions = self.base.predict(observations, seeds)
        noisy = []
        for prediction, seed in zip(predictions, seeds):
            actions = np.array(prediction.actions, dtype=np.float32, copy=True)
            dims = min(ARM_DIMS, actions.shape[1])
            noise = generator(int(seed)).normal(0.0, self.scale, (actions.shape[0], dims))
            actions[:, :dims] = np.clip(actions[:, :dims] + noise, -1.0, 1.0)
            noisy.append(replace(prediction, actions=actions, stats={**prediction.stats, "noise_scale": self.scale}))
        return noisy

    def reset(self) -> None:
        self.base.reset()

    def batch_invariant(self, rows: int) -> NoisyPolicy:
        """The base's batch-invariant form (the noise is per request already); self if the base has none."""
        invariant = getattr(self.base, "batch_invariant", None)
        return self if invariant is None else NoisyPolicy(invariant(rows), self.scale)

    def warm_up(self, batch_sizes: Sequence[int] | None = None) -> float:
        """The base's warm-up (seconds; 0 if it has none)."""
        warm = getattr(self.base, "warm_up", None)
        return 0.0 if warm is None else warm(batch_sizes)


def make_noisy(options: Mapping[str, Any], env_family: str) -> NoisyPolicy:
    """Registry factory: validate the options, build the base policy from `base_options`, wrap it."""
    from robofleet.policies.registry import make_policy

    config = _config(options)
    try:
        base = make_policy(config.base, config.base_options, env_family)
    except SpecError as exc:
        raise _as_base_option(exc) from exc
    return NoisyPolicy(base, config.scale)


def validate_noisy(context: PolicyContext, check_files: bool) -> None:
    """`noisy`: its own options, then the wrapped policy's validator on `base_options`."""
    from robofleet.policies.registry import validate_policy

    config = _config(context.options)
    base = context.for_policy(config.base, config.base_options)
    try:
        validate_policy(base, check_files)
    except SpecError as exc:
        raise _as_base_option(exc) from exc


def _config(options: Mapping[str, Any]) -> NoisyConfig:
    """The options, checked, with a base that is a registered policy."""
    from robofleet.policies.registry import available_policies

    config = NoisyConfig.from_options(options)
    if config.base not in available_policies():
        raise SpecError("policy.base", f"unknown policy {config.base!r}; allowed: "
                                       f"{', '.join(n for n in available_policies() if n != 'noisy')}")
    return config


def _as_base_option(exc: SpecError) -> SpecError:
    """The base policy's error under the key the user wrote it at: policy.<key> -> policy.base_options.<key>
    (keys outside [policy], e.g. env.tasks, stay)."""
    if not exc.key.startswith("policy."):
        return SpecError(exc.key, exc.message)
    return SpecError(f"policy.base_options.{exc.key.removeprefix('policy.')}", exc.message)
