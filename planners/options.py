"""The `[planner]` options of best_of_n, as frozen dataclasses; validated once, on the driver.

    [planner]
    name = "best_of_n"
    n = 8                          # proposals per query, >= 1
    scorer = "model"               # "model" (world model x value ensembles) | "oracle" (the simulator)
    search_depth = 1               # model scorer: chunks imagined ahead (see planners/model_scorer.py)
    keep_base = false              # true: proposal 0 is direct's own chunk and wins unless strictly beaten

    # scorer = "model"
    ranking = "ensemble"           # ensemble: world-model x value passes | policy_value: the policy pass's own V
    aggregation = "average"        # average | lcb | success_vote | majority_mean
    future_steps = [1, 3, 5]       # one world-model prediction per entry, with that many denoising steps
    value_steps = [1, 2, 3, 4, 5]  # per future: one value prediction per entry
    success_threshold = 0.05       # success_vote: a value above it is a vote for success (the reference's)
    mask_current_state_action = false  # value passes see only s' (NVIDIA's ALOHA planning recipe: true)
    planning_policy = { name = "cosmos", config = "2b", checkpoint = "..." }   # default: the acting policy

    A step count is the reference's `num_steps` under protocol = "reference" (2 means ONE network
    evaluation, as NVIDIA's sampler: 1 and 2 are the same single x0 prediction at sigma 80) and the
    number of network evaluations under protocol = "robofleet" (2 means two). Every other count is
    the same under both: n evaluations on the EDM schedule from sigma 80 to 4.

    # scorer = "oracle"
    execute_steps = 16             # leading actions of each chunk simulated (default: the whole chunk)
    extend_steps = 0               # closed-loop steps the acting policy adds to each proposal (see oracle.py)
    lookahead = 0                  # steps the reference policy plays on from there to look for success
    reference_policy = { name = "scripted" }   # who plays the lookahead; default: the acting policy
    prune = false                  # true: stop a proposal once it cannot beat the best so far (same choice)

`validate(options)` returns the normalized dict (every default filled in) that the spec stores;
`BestOfNOptions.from_dict` rebuilds the dataclasses inside the worker.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from robofleet.platform.config_fields import (
    INTEGER_IN_RANGE, boolean, check_keys, choice, from_table, int_list, integer, mapping, number, setting,
)
from robofleet.platform.errors import SpecError

SCORERS = ("model", "oracle")
AGGREGATIONS = ("average", "lcb", "success_vote", "majority_mean")
RANKINGS = ("ensemble", "policy_value")
COMMON_KEYS = ("n", "scorer", "search_depth", "keep_base")
MODEL_KEYS = ("ranking", "aggregation", "future_steps", "value_steps", "success_threshold",
              "mask_current_state_action", "planning_policy")
ENSEMBLE_KEYS = ("aggregation", "future_steps", "value_steps", "success_threshold", "mask_current_state_action",
                 "planning_policy")  # meaningless with ranking = "policy_value"
MAX_DENOISING_STEPS = 100
SUCCESS_THRESHOLD = 0.05  # cosmos_utils.aggregate_value_predictions: success_vote and majority_mean
ORACLE_KEYS = ("execute_steps", "extend_steps", "lookahead", "reference_policy", "prune")
MAX_PROPOSALS = 1024
MAX_STEPS = 10_000  # more simulated steps than any suite's episode: a typo, not a plan


def _policy_table(value: Any, key: str) -> dict[str, Any]:
    """A `{ name = "<policy>", <its options> }` table ({} = the acting policy); the name must be a policy's."""
    from robofleet.policies.registry import available_policies

    table = mapping(value, key, message='must be a table {{ name = "<policy>", <its options> }}, got {value!r}')
    if table:
        choice(table.get("name"), f"{key}.name", available_policies(),
               message="unknown policy {value!r}; allowed: {allowed}")
    return table


def _steps(default: tuple[int, ...]) -> Any:
    """A field of denoising step counts, one ensemble member each."""
    return setting(default, int_list, minimum=1, maximum=MAX_DENOISING_STEPS,
                   message=f"must be a non-empty list of denoising step counts in [1, {MAX_DENOISING_STEPS}], one "
                           f"ensemble member each (e.g. {list(default)}), got {{value!r}}")


@dataclass(frozen=True)
class ModelScorerOptions:
    """Scoring with a world model and a value function (REFERENCE.md §3)."""

    # "ensemble" (world-model x value passes) | "policy_value" (V of the proposal's own pass)
    ranking: str = setting("ensemble", choice, allowed=RANKINGS)
    aggregation: str = setting("average", choice, allowed=AGGREGATIONS)  # how the futures x values ensemble becomes one score
    future_steps: tuple[int, ...] = _steps((1, 3, 5))  # one imagined future per entry (denoising steps of that pass)
    value_steps: tuple[int, ...] = _steps((1, 2, 3, 4, 5))  # one value per future per entry (denoising steps)
    success_threshold: float = setting(  # success_vote: values above it vote for success
        SUCCESS_THRESHOLD, number, above=0.0, below=1.0,
        message=f"must be a number in (0, 1) (the reference's: {SUCCESS_THRESHOLD}), got {{value!r}}")
    mask_current_state_action: bool = setting(False, boolean)  # value passes generate s and a instead of seeing them (V(s'))
    planning_policy: Mapping[str, Any] = setting({}, _policy_table)  # {name, ...options}; {} = the acting policy

    def to_flat(self) -> dict[str, Any]:
        """The TOML-able form (tuples as lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class OracleScorerOptions:
    """Scoring in the simulator itself (planners/oracle.py)."""

    # leading actions of each proposal's chunk simulated; 0 = the whole chunk
    execute_steps: int = setting(0, integer, minimum=0, maximum=MAX_STEPS, message=INTEGER_IN_RANGE)
    # closed-loop steps of the acting policy appended to each proposal
    extend_steps: int = setting(0, integer, minimum=0, maximum=MAX_STEPS, message=INTEGER_IN_RANGE)
    # steps the reference policy plays after the proposal, looking for success
    lookahead: int = setting(0, integer, minimum=0, maximum=MAX_STEPS, message=INTEGER_IN_RANGE)
    reference_policy: Mapping[str, Any] = setting({}, _policy_table)  # {name, ...options}; {} = the acting policy
    prune: bool = setting(False, boolean)  # stop a proposal once it cannot beat the best so far: same choice, fewer steps


@dataclass(frozen=True)
class BestOfNOptions:
    n: int = setting(4, integer, minimum=1, maximum=MAX_PROPOSALS, message=INTEGER_IN_RANGE)  # proposals per query
    scorer: str = setting("model", choice, allowed=SCORERS)  # "model" | "oracle"
    # model scorer: chunks imagined ahead; the oracle takes 1 only
    search_depth: int = setting(1, integer, minimum=1, maximum=16, message=INTEGER_IN_RANGE)
    keep_base: bool = setting(False, boolean)  # proposal 0 = direct's chunk (seed = the query seed), kept unless strictly beaten
    model: ModelScorerOptions | None = None  # set when scorer == "model"
    oracle: OracleScorerOptions | None = None  # set when scorer == "oracle"

    def to_dict(self) -> dict[str, Any]:
        """The flat, TOML-able form the spec stores (the scorer's keys beside the common ones)."""
        flat: dict[str, Any] = {"n": self.n, "scorer": self.scorer, "search_depth": self.search_depth,
                                "keep_base": self.keep_base}
        for part in (self.model, self.oracle):
            if part is not None:
                for key, value in asdict(part).items():
                    flat[key] = list(value) if isinstance(value, tuple) else value
        return flat

    @staticmethod
    def from_dict(options: Mapping[str, Any]) -> "BestOfNOptions":
        """Validate `[planner]` options (without `name`); SpecError names `planner.<key>`."""
        return _parse(options)


def validate(options: Mapping[str, Any]) -> dict[str, Any]:
    """Normalized best_of_n options (defaults filled in), or SpecError naming the bad key."""
    return _parse(options).to_dict()


# -- parsing ------------------------------------------------------------------------------------------
def _parse(options: Mapping[str, Any]) -> BestOfNOptions:
    scorer = choice(options.get("scorer", "model"), "planner.scorer", SCORERS)
    own = _check_scorer_keys(options, scorer)
    common = from_table(BestOfNOptions, {k: v for k, v in options.items() if k in COMMON_KEYS}, "planner.")
    scored = {k: v for k, v in options.items() if k in own}
    if scorer == "model":
        return replace(common, model=_model_options(scored, common.search_depth))
    return replace(common, oracle=_oracle_options(scored, common.search_depth))


def _check_scorer_keys(options: Mapping[str, Any], scorer: str) -> tuple[str, ...]:
    """The scorer's own keys; SpecError for a key of the other scorer or of neither."""
    own, other = (MODEL_KEYS, ORACLE_KEYS) if scorer == "model" else (ORACLE_KEYS, MODEL_KEYS)
    for key in options:
        if key in other:
            raise SpecError(f"planner.{key}", f"applies to scorer {'oracle' if scorer == 'model' else 'model'!r} only; "
                            f"scorer {scorer!r} takes: {', '.join(COMMON_KEYS + own)}")
        check_keys((key,), COMMON_KEYS + own, "planner.",
                   f"unknown key; planner 'best_of_n' with scorer {scorer!r} takes: {{allowed}}")
    return own


def _model_options(table: Mapping[str, Any], depth: int) -> ModelScorerOptions:
    ranking = choice(table.get("ranking", "ensemble"), "planner.ranking", RANKINGS)
    if ranking == "policy_value":
        defaults = ModelScorerOptions().to_flat()
        for key in ENSEMBLE_KEYS:  # a normalized spec holds the defaults: only other values are refused
            if key in table and table[key] != defaults[key]:
                raise SpecError(f"planner.{key}", "applies to ranking 'ensemble' only: ranking 'policy_value' "
                                "scores each proposal by the value of its own policy pass, with no other pass")
        if depth != 1:
            raise SpecError("planner.search_depth", f"must be 1 with ranking 'policy_value', got {depth}: "
                            "looking ahead needs world-model passes (ranking 'ensemble')")
    return from_table(ModelScorerOptions, table, "planner.")


def _oracle_options(table: Mapping[str, Any], depth: int) -> OracleScorerOptions:
    if depth != 1:
        raise SpecError("planner.search_depth", f"must be 1 with scorer 'oracle', got {depth}: the simulator "
                        "plays the future out itself (use planner.extend_steps / planner.lookahead); "
                        "search depth > 1 is for scorer 'model'")
    return from_table(OracleScorerOptions, table, "planner.")
