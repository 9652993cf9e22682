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

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

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


@dataclass(frozen=True)
class ModelScorerOptions:
    """Scoring with a world model and a value function (REFERENCE.md §3)."""

    ranking: str = "ensemble"  # "ensemble" (world-model x value passes) | "policy_value" (V of the proposal's own pass)
    aggregation: str = "average"  # how the futures x values ensemble becomes one score
    future_steps: tuple[int, ...] = (1, 3, 5)  # one imagined future per entry (denoising steps of that pass)
    value_steps: tuple[int, ...] = (1, 2, 3, 4, 5)  # one value per future per entry (denoising steps)
    success_threshold: float = SUCCESS_THRESHOLD  # success_vote: values above it vote for success
    mask_current_state_action: bool = False  # value passes generate s and a instead of seeing them (V(s'))
    planning_policy: Mapping[str, Any] = field(default_factory=dict)  # {name, ...options}; {} = the acting policy

    def to_flat(self) -> dict[str, Any]:
        """The TOML-able form (tuples as lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class OracleScorerOptions:
    """Scoring in the simulator itself (planners/oracle.py)."""

    execute_steps: int = 0  # leading actions of each proposal's chunk simulated; 0 = the whole chunk
    extend_steps: int = 0  # closed-loop steps of the acting policy appended to each proposal
    lookahead: int = 0  # steps the reference policy plays after the proposal, looking for success
    reference_policy: Mapping[str, Any] = field(default_factory=dict)  # {name, ...options}; {} = the acting policy
    prune: bool = False  # stop a proposal once it cannot beat the best so far: same choice, fewer steps


@dataclass(frozen=True)
class BestOfNOptions:
    n: int = 4  # proposals per query
    scorer: str = "model"  # "model" | "oracle"
    search_depth: int = 1  # model scorer: chunks imagined ahead; the oracle takes 1 only
    keep_base: bool = False  # proposal 0 = direct's chunk (seed = the query seed), kept unless strictly beaten
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
def _int(options: Mapping[str, Any], key: str, default: int, minimum: int, maximum: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise SpecError(f"planner.{key}", f"must be an integer in [{minimum}, {maximum}], got {value!r}")
    return value


def _bool(options: Mapping[str, Any], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise SpecError(f"planner.{key}", f"must be true or false, got {value!r}")
    return value


def _steps_list(options: Mapping[str, Any], key: str, default: tuple[int, ...]) -> tuple[int, ...]:
    value = options.get(key, list(default))
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_DENOISING_STEPS for v in value)
    if not ok:
        raise SpecError(f"planner.{key}", f"must be a non-empty list of denoising step counts in "
                        f"[1, {MAX_DENOISING_STEPS}], one ensemble member each (e.g. {list(default)}), got {value!r}")
    return tuple(value)


def _policy_table(options: Mapping[str, Any], key: str) -> dict[str, Any]:
    from robofleet.policies.registry import available_policies

    value = options.get(key, {})
    if not isinstance(value, Mapping):
        raise SpecError(f"planner.{key}", f"must be a table {{ name = \"<policy>\", <its options> }}, got {value!r}")
    if not value:
        return {}
    name = value.get("name")
    allowed = available_policies()
    if name not in allowed:
        raise SpecError(f"planner.{key}.name", f"unknown policy {name!r}; allowed: {', '.join(allowed)}")
    return dict(value)


def _parse(options: Mapping[str, Any]) -> BestOfNOptions:
    scorer = options.get("scorer", "model")
    if scorer not in SCORERS:
        raise SpecError("planner.scorer", f"unknown value {scorer!r}; allowed: {', '.join(SCORERS)}")
    own, other = (MODEL_KEYS, ORACLE_KEYS) if scorer == "model" else (ORACLE_KEYS, MODEL_KEYS)
    for key in options:
        if key in other:
            raise SpecError(f"planner.{key}", f"applies to scorer {'oracle' if scorer == 'model' else 'model'!r} only; "
                            f"scorer {scorer!r} takes: {', '.join(COMMON_KEYS + own)}")
        if key not in COMMON_KEYS + own:
            raise SpecError(f"planner.{key}", f"unknown key; planner 'best_of_n' with scorer {scorer!r} takes: "
                            f"{', '.join(COMMON_KEYS + own)}")
    keep_base = _bool(options, "keep_base", False)
    n = _int(options, "n", 4, 1, MAX_PROPOSALS)
    depth = _int(options, "search_depth", 1, 1, 16)
    model = oracle = None
    if scorer == "model":
        ranking = options.get("ranking", "ensemble")
        if ranking not in RANKINGS:
            raise SpecError("planner.ranking", f"unknown value {ranking!r}; allowed: {', '.join(RANKINGS)}")
        if ranking == "policy_value":
            defaults = ModelScorerOptions().to_flat()
            for key in ENSEMBLE_KEYS:  # a normalized spec holds the defaults: only other values are refused
                if key in options and options[key] != defaults[key]:
                    raise SpecError(f"planner.{key}", "applies to ranking 'ensemble' only: ranking 'policy_value' "
                                    "scores each proposal by the value of its own policy pass, with no other pass")
            if depth != 1:
                raise SpecError("planner.search_depth", f"must be 1 with ranking 'policy_value', got {depth}: "
                                "looking ahead needs world-model passes (ranking 'ensemble')")
        aggregation = options.get("aggregation", "average")
        if aggregation not in AGGREGATIONS:
            raise SpecError("planner.aggregation", f"unknown value {aggregation!r}; allowed: {', '.join(AGGREGATIONS)}")
        threshold = options.get("success_threshold", SUCCESS_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
            raise SpecError("planner.success_threshold", f"must be a number in (0, 1) (the reference's: "
                            f"{SUCCESS_THRESHOLD}), got {threshold!r}")
        model = ModelScorerOptions(
            ranking=ranking,
            aggregation=aggregation,
            future_steps=_steps_list(options, "future_steps", (1, 3, 5)),
            value_steps=_steps_list(options, "value_steps", (1, 2, 3, 4, 5)),
            success_threshold=float(threshold),
            mask_current_state_action=_bool(options, "mask_current_state_action", False),
            planning_policy=_policy_table(options, "planning_policy"),
        )
    else:
        if depth != 1:
            raise SpecError("planner.search_depth", f"must be 1 with scorer 'oracle', got {depth}: the simulator "
                            "plays the future out itself (use planner.extend_steps / planner.lookahead); "
                            "search depth > 1 is for scorer 'model'")
        oracle = OracleScorerOptions(
            execute_steps=_int(options, "execute_steps", 0, 0, MAX_STEPS),
            extend_steps=_int(options, "extend_steps", 0, 0, MAX_STEPS),
            lookahead=_int(options, "lookahead", 0, 0, MAX_STEPS),
            reference_policy=_policy_table(options, "reference_policy"),
            prune=_bool(options, "prune", False),
        )
    return BestOfNOptions(n=n, scorer=scorer, search_depth=depth, keep_base=keep_base, model=model, oracle=oracle)
