"""Planners by name: options validated on the driver, planners built inside each EnvWorker."""
from __future__ import annotations

from typing import Any, Mapping

from robofleet.envs.contract import Env
from robofleet.planners.contract import Planner
from robofleet.planners.direct import Direct
from robofleet.platform.config_fields import check_keys
from robofleet.platform.errors import SpecError
from robofleet.policies.contract import Policy

PLANNERS = ("direct", "best_of_n")


def validate_planner_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check a planner's options (the `[planner]` table minus `name`); SpecError names the bad key.

    Returns the normalized options with every default filled in (what the spec stores and hashes).
    """
    if name == "direct":
        check_keys(options, (), "planner.", "unknown key; planner 'direct' takes no options")
        return {}
    if name == "best_of_n":
        from robofleet.planners.options import validate

        return validate(options)
    raise SpecError("planner.name", f"unknown value {name!r}; allowed: {', '.join(PLANNERS)}")


def make_planner(name: str, options: Mapping[str, Any], policy: Policy, env: Env, protocol: str = "robofleet",
                 stage_batching: bool = True) -> Planner:
    """Wrap `policy` in the named planner. `env` is the worker's simulator (for simulator-oracle scoring).

    protocol: the run's evaluation protocol (platform/protocol.py): proposal and ensemble seeds and
        what a step count means follow it (planners/model_scorer.py).
    stage_batching: the model scorer runs each ensemble stage as one call where the world model
        allows it (False: one call per member; benchmarks compare the two).
    Policies named in the options (planning_policy, reference_policy) are built here, in the worker.
    """
    if name == "direct":
        return Direct(policy)
    if name == "best_of_n":
        return _make_best_of_n(options, policy, env, protocol, stage_batching)
    raise KeyError(name)


def _make_best_of_n(options: Mapping[str, Any], policy: Policy, env: Env, protocol: str = "robofleet",
                    stage_batching: bool = True) -> Planner:
    from robofleet.planners.best_of_n import BestOfN
    from robofleet.planners.options import BestOfNOptions

    opts = BestOfNOptions.from_dict(options)
    if opts.scorer == "model":
        from robofleet.planners.model_scorer import ModelScorer, accepts_value_masking

        table = opts.model.planning_policy
        ensemble = opts.model.ranking == "ensemble"
        if ensemble and callable(getattr(policy, "with_settings", None)):
            # Cosmos hands each proposal's latent sample on (in-process, or through replicas, whose
            # client forwards the change): the world model conditions on it (the reference's
            # skip_vae_encoding path).
            policy = policy.with_settings(return_latents=True)
        world = _build_policy("planning_policy", table, env) if table else policy
        for method in ("imagine", "value") if ensemble else ():
            if not callable(getattr(world, method, None)):
                raise SpecError("planner.planning_policy" if table else "planner.scorer",
                                f"scorer 'model' needs a policy with imagine() and value() (a world model such as "
                                f"cosmos); {type(world).__name__} has no {method}(); set planner.planning_policy "
                                "or use scorer 'oracle'")
        if opts.model.mask_current_state_action and not accepts_value_masking(world):
            raise SpecError("planner.mask_current_state_action",
                            f"needs a world model whose value() can mask the current state and action "
                            f"(cosmos in the env worker); {type(world).__name__}'s cannot (policy replicas "
                            "do not pass it on yet): set it to false or drop [serving] replicas")
        scorer = ModelScorer(policy, world, opts.model, opts.search_depth, protocol=protocol,
                             stage_batching=stage_batching)
    else:
        from robofleet.planners.oracle import OracleScorer

        table = opts.oracle.reference_policy
        reference = _build_policy("reference_policy", table, env) if table else policy
        scorer = OracleScorer(env, policy, reference, opts.oracle)
    return BestOfN(policy, scorer, opts.n, opts.keep_base, protocol=protocol)


def _build_policy(key: str, table: Mapping[str, Any], env: Env) -> Policy:
    """A second, in-worker policy from a `{ name = ..., <options> }` table; its SpecErrors name planner.<key>.<option>."""
    from robofleet.policies.registry import make_policy

    options = {k: v for k, v in table.items() if k != "name"}
    try:
        return make_policy(table["name"], options, env_family(env))
    except SpecError as exc:
        raise SpecError(f"planner.{key}.{exc.key.removeprefix('policy.')}", exc.message) from exc


def env_family(env: Env) -> str:
    """The env family name of a simulator (policies are built per family)."""
    family = getattr(env, "family", None)
    if isinstance(family, str):
        return family
    raise SpecError("env.family", f"cannot tell the env family of {type(env).__name__} to build a planning policy")
