"""best_of_n planning: proposals, model and oracle scorers, exact simulator restores, no lost proposals.

Real components throughout: LIBERO physics, the scripted expert, the tiny Cosmos Policy on CPU
policy replicas, a real Ray cluster. Small fake policies appear only where a test needs to control
failures or count calls.
"""
from __future__ import annotations

import csv
import inspect
import json
import threading
import time
from typing import Any, Sequence

import numpy as np
import pytest

from robofleet.envs.contract import Observation
from robofleet.planners.best_of_n import BestOfN, Scored, choose
from robofleet.planners.contract import PlanningError
from robofleet.planners.model_scorer import ModelScorer, aggregate
from robofleet.planners.options import BestOfNOptions, ModelScorerOptions
from robofleet.planners.registry import make_planner, validate_planner_options
from robofleet.platform.errors import SpecError
from robofleet.platform.seeds import proposal_seed
from robofleet.platform.spec import dump_spec_toml, load_spec, spec_from_dict
from robofleet.policies.contract import Prediction
from robofleet.policies.registry import make_policy
from tests.conftest import small_spec

CAMERAS = ("agentview", "robot0_eye_in_hand")


def _cosmos_takes_num_steps() -> bool:
    from robofleet.policies.cosmos.policy import CosmosPolicy

    return all("num_steps" in inspect.signature(getattr(CosmosPolicy, m)).parameters for m in ("imagine", "value"))


needs_cosmos_num_steps = pytest.mark.xfail(
    not _cosmos_takes_num_steps(), strict=True,
    reason="CosmosPolicy.imagine/value must accept num_steps=<int | None> (denoising steps of that call)")


def image_observation(seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    images = {k: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for k in CAMERAS}
    return Observation(images=images, proprio=rng.normal(scale=0.1, size=9).astype(np.float32),
                       instruction="pick up the cream cheese and place it in the basket")


def planner_options(**options: Any) -> dict[str, Any]:
    return validate_planner_options("best_of_n", options)


# -- options ---------------------------------------------------------------------------------------------
def test_defaults_are_filled_in_and_survive_the_spec_round_trip(tmp_path):
    assert planner_options(scorer="oracle") == {
        "n": 4, "scorer": "oracle", "search_depth": 1, "keep_base": False,
        "execute_steps": 0, "extend_steps": 0, "lookahead": 0, "reference_policy": {}, "prune": False}
    model = planner_options()
    assert model["scorer"] == "model" and model["aggregation"] == "average"
    assert model["future_steps"] == [1, 3, 5] and model["value_steps"] == [1, 2, 3, 4, 5]
    assert model["success_threshold"] == 0.05 and model["ranking"] == "ensemble"
    assert model["mask_current_state_action"] is False
    spec = spec_from_dict(small_spec(planner={"name": "best_of_n", "n": 3, "scorer": "oracle", "lookahead": 5,
                                              "reference_policy": {"name": "scripted", "speed": 0.8}}))
    path = tmp_path / "spec.toml"
    path.write_text(dump_spec_toml(spec))
    assert load_spec(path) == spec
    assert spec.planner.options["reference_policy"] == {"name": "scripted", "speed": 0.8}


@pytest.mark.parametrize(("options", "key", "words"), [
    ({"n": 0}, "planner.n", "[1, 1024]"),
    ({"n": 2.5}, "planner.n", "integer"),
    ({"scorer": "critic"}, "planner.scorer", "allowed: model, oracle"),
    ({"search_depth": 0}, "planner.search_depth", "[1, 16]"),
    ({"scorer": "oracle", "search_depth": 2}, "planner.search_depth", "must be 1 with scorer 'oracle'"),
    ({"keep_base": "yes"}, "planner.keep_base", "true or false"),
    ({"aggregation": "median"}, "planner.aggregation", "average, lcb, success_vote, majority_mean"),
    ({"future_steps": []}, "planner.future_steps", "non-empty list"),
    ({"value_steps": [1, 0]}, "planner.value_steps", "[1, 100]"),
    ({"success_threshold": 1.5}, "planner.success_threshold", "(0, 1)"),
    ({"success_threshold": 0}, "planner.success_threshold", "the reference's: 0.05"),
    ({"future_steps": [1, 101]}, "planner.future_steps", "[1, 100]"),
    ({"value_steps": [2.5]}, "planner.value_steps", "step counts"),
    ({"ranking": "value"}, "planner.ranking", "allowed: ensemble, policy_value"),
    ({"ranking": "policy_value", "value_steps": [1]}, "planner.value_steps", "ranking 'ensemble' only"),
    ({"ranking": "policy_value", "search_depth": 2}, "planner.search_depth", "ranking 'policy_value'"),
    ({"mask_current_state_action": 1}, "planner.mask_current_state_action", "true or false"),
    ({"planning_policy": {"name": "nope"}}, "planner.planning_policy.name", "allowed:"),
    ({"planning_policy": "cosmos"}, "planner.planning_policy", "table"),
    ({"scorer": "oracle", "aggregation": "lcb"}, "planner.aggregation", "scorer 'model' only"),
    ({"lookahead": 10}, "planner.lookahead", "scorer 'oracle' only"),
    ({"scorer": "oracle", "lookahead": -1}, "planner.lookahead", "[0, 10000]"),
    ({"scorer": "oracle", "horizon": 3}, "planner.horizon", "unknown key"),
])
def test_bad_options_name_the_key_and_what_is_allowed(options, key, words):
    with pytest.raises(SpecError) as caught:
        validate_planner_options("best_of_n", options)
    assert caught.value.key == key
    assert words in str(caught.value)


def test_a_bad_planner_table_fails_the_spec():
    with pytest.raises(SpecError, match="planner.n"):
        spec_from_dict(small_spec(planner={"name": "best_of_n", "n": -1}))
    with pytest.raises(SpecError, match="planner.name.*direct, best_of_n"):
        spec_from_dict(small_spec(planner={"name": "beam"}))


def test_a_bad_option_of_a_planner_built_policy_names_its_planner_key():
    options = planner_options(scorer="oracle", reference_policy={"name": "scripted", "sped": 1.0})
    with pytest.raises(SpecError) as caught:
        make_planner("best_of_n", options, make_policy("zero", {}, "libero"), FakeLiberoEnv())
    assert caught.value.key == "planner.reference_policy.sped"


def test_the_model_scorer_refuses_a_policy_without_a_world_model():
    with pytest.raises(SpecError, match="imagine"):
        make_planner("best_of_n", planner_options(), make_policy("zero", {}, "libero"), FakeLiberoEnv())


class FakeLiberoEnv:
    family = "libero"


# -- the noisy policy --------------------------------------------------------------------------------
def test_noisy_proposals_differ_by_seed_and_repeat_for_the_same_seed():
    policy = make_policy("noisy", {"base": "zero", "scale": 0.3, "base_options": {"chunk_size": 5}}, "libero")
    obs = image_observation()
    a, a_again, b = policy.predict([obs] * 3, [11, 11, 12])
    assert a.actions.shape == (5, 7) and a.actions.dtype == np.float32
    assert np.array_equal(a.actions, a_again.actions)
    assert not np.allclose(a.actions[:, :6], b.actions[:, :6])
    assert np.all(a.actions[:, 6] == -1.0), "the gripper dimension gets no noise"
    assert np.all(np.abs(a.actions) <= 1.0)
    assert 0.15 < a.actions[:, :6].std() < 0.45


def test_noisy_scale_zero_is_the_base_policy_and_options_are_checked():
    policy = make_policy("noisy", {"base": "random", "scale": 0.0, "base_options": {"chunk_size": 3}}, "libero")
    base = make_policy("random", {"chunk_size": 3}, "libero")
    obs = image_observation()
    assert np.array_equal(policy.predict([obs], [5])[0].actions, base.predict([obs], [5])[0].actions)
    with pytest.raises(SpecError, match="policy.scale"):
        make_policy("noisy", {"scale": -1}, "libero")
    with pytest.raises(SpecError, match="policy.base_options.chunk_size"):
        make_policy("noisy", {"base": "zero", "base_options": {"chunk_size": 0}}, "libero")
    with pytest.raises(SpecError, match="policy.chunk_size.*base_options"):
        make_policy("noisy", {"chunk_size": 3}, "libero")


# -- choosing ---------------------------------------------------------------------------------------------
class CountingPolicy:
    """Chunks whose every entry is a function of the seed; counts predict calls; can fail on demand."""

    chunk_size = 2

    def __init__(self, failures: int = 0):
        self.calls: list[int] = []
        self.failures = failures

    def predict(self, observations: Sequence[Observation], seeds: Sequence[int]) -> list[Prediction]:
        self.calls.append(len(observations))
        if self.failures:
            self.failures -= 1
            raise ConnectionError("replica went away")
        return [Prediction(actions=np.full((2, 7), (s % 1000) / 1000, dtype=np.float32)) for s in seeds]

    def reset(self) -> None:
        pass


class TableScorer:
    name = "table"

    def __init__(self, scores: list[float]):
        self.scores = scores

    def score(self, obs, proposals, seeds) -> Scored:
        return Scored(list(self.scores), {"seen": len(proposals)})

    def reset(self) -> None:
        pass


def test_proposals_come_from_one_call_with_proposal_seeds_and_the_best_is_chosen():
    policy = CountingPolicy()
    decision = BestOfN(policy, TableScorer([0.1, 0.7, 0.3]), n=3).decide(image_observation(), 99)
    assert policy.calls == [3]
    assert decision.stats["n"] == 3 and decision.stats["scores"] == [0.1, 0.7, 0.3]
    assert decision.stats["chosen"] == 1 and decision.stats["seen"] == 3 and decision.stats["latency_s"] >= 0
    assert np.all(decision.prediction.actions == np.float32((proposal_seed(99, 1) % 1000) / 1000))


def test_ties_go_to_the_lowest_index_and_keep_base_makes_proposal_0_direct_s_chunk():
    assert choose([0.5, 0.9, 0.9]) == 1 and choose([0.9, 0.9]) == 0
    with pytest.raises(PlanningError):
        choose([0.1, float("nan")])
    planner = BestOfN(CountingPolicy(), TableScorer([0.4, 0.4, 0.2]), n=3, keep_base=True)
    assert planner.proposal_seeds(99) == [99, proposal_seed(99, 1), proposal_seed(99, 2)]
    decision = planner.decide(image_observation(), 99)
    assert decision.stats["chosen"] == 0
    assert np.all(decision.prediction.actions == np.float32(99 / 1000)), "proposal 0 is what `direct` executes"


def test_a_failed_proposal_call_is_retried_once_then_the_step_fails_with_its_cause():
    planner = BestOfN(CountingPolicy(failures=1), TableScorer([0.0, 1.0]), n=2)
    decision = planner.decide(image_observation(), 5)
    assert decision.stats["proposal_retries"] == 1 and len(decision.stats["scores"]) == 2
    planner = BestOfN(CountingPolicy(failures=2), TableScorer([0.0, 1.0]), n=2)
    with pytest.raises(PlanningError, match="2 proposals failed twice.*ConnectionError") as caught:
        planner.decide(image_observation(), 5)
    assert isinstance(caught.value.__cause__, ConnectionError)


def test_a_policy_error_in_the_proposal_call_is_not_retried():
    class Buggy(CountingPolicy):
        def predict(self, observations, seeds):
            self.calls.append(len(observations))
            raise IndexError("chunk index out of range")

    policy = Buggy()
    with pytest.raises(PlanningError, match="2 proposals failed \\(not retried.*IndexError"):
        BestOfN(policy, TableScorer([0.0, 1.0]), n=2).decide(image_observation(), 5)
    assert policy.calls == [2]


def test_a_scorer_that_drops_a_score_is_an_error():
    with pytest.raises(PlanningError, match="3 scores for 4 proposals"):
        BestOfN(CountingPolicy(), TableScorer([0.1, 0.2, 0.3]), n=4).decide(image_observation(), 1)


# -- the model scorer -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("how", "expected"), [
    ("average", 0.4),
    ("lcb", 0.4 - np.std([0.0, 0.04, 0.6, 0.6, 0.76], ddof=1)),  # the sample std, as the reference
    ("success_vote", 0.6),  # 3 of 5 values above 0.05
    ("majority_mean", np.mean([0.6, 0.6, 0.76])),  # 3 of 5 above 0.05: the mean of those
])
def test_aggregations(how, expected):
    assert aggregate(np.array([[0.0, 0.04, 0.6, 0.6, 0.76]]), how) == pytest.approx(expected)


def test_majority_mean_is_zero_without_a_majority_of_hopeful_values():
    assert aggregate(np.array([0.0, 0.01, 0.9, 0.02]), "majority_mean") == pytest.approx(0.0)
    assert aggregate(np.array([0.0, 0.01, 0.9, 0.8]), "majority_mean") == pytest.approx(0.85)


class ToyWorldModel:
    """A world model whose futures move the proprio by the chunk's mean and whose value is the first
    proprio entry (clipped to [0, 1]), plus a little seed noise; records every call."""

    chunk_size = 2

    def __init__(self):
        self.calls: list[tuple[str, int, int | None]] = []

    def predict(self, observations, seeds):
        self.calls.append(("predict", len(observations), None))
        return [Prediction(actions=np.full((2, 7), 0.1, dtype=np.float32)) for _ in seeds]

    def imagine(self, observations, actions, seeds, num_steps=None):
        self.calls.append(("imagine", len(observations), num_steps))
        return [Prediction(actions=a, future_proprio=o.proprio + float(np.mean(a)),
                           future_images=dict(o.images), value=None) for o, a in zip(observations, actions)]

    def value(self, observations, actions, futures, seeds, num_steps=None):
        self.calls.append(("value", len(observations), num_steps))
        return [float(np.clip(f.future_proprio[0], 0, 1)) + (s % 7) * 1e-4 for f, s in zip(futures, seeds)]

    def reset(self):
        pass


def test_the_model_scorer_runs_the_futures_x_values_ensemble_in_batched_calls():
    world = ToyWorldModel()
    options = ModelScorerOptions(aggregation="average", future_steps=(1, 3, 5), value_steps=(1, 2, 3, 4, 5))
    scorer = ModelScorer(world, world, options)
    obs = Observation(images={}, proprio=np.zeros(9, dtype=np.float32), instruction="x")
    proposals = [Prediction(actions=np.full((2, 7), v, dtype=np.float32)) for v in (0.2, 0.6, 0.4)]
    scored = scorer.score(obs, proposals, [1, 2, 3])
    assert world.calls == [("imagine", 3, 1), ("imagine", 3, 3), ("imagine", 3, 5)] + [
        ("value", 9, k) for k in (1, 2, 3, 4, 5)]
    assert np.shape(scored.extras["values"]) == (3, 3, 5)
    assert choose(scored.scores) == 1
    assert scorer.score(obs, proposals, [1, 2, 3]).scores == scored.scores, "seeded: the same scores again"


def test_search_depth_follows_each_proposal_with_the_policy_s_own_chunks_in_imagination():
    world = ToyWorldModel()
    scorer = ModelScorer(world, world, ModelScorerOptions(future_steps=(2,), value_steps=(1,)), search_depth=3)
    obs = Observation(images={"agentview": np.zeros((4, 4, 3), np.uint8)}, proprio=np.zeros(9, np.float32),
                      instruction="x")
    proposals = [Prediction(actions=np.full((2, 7), v, dtype=np.float32)) for v in (0.0, 0.3)]
    scored = scorer.score(obs, proposals, [1, 2])
    assert [c[0] for c in world.calls] == ["imagine", "predict", "imagine", "predict", "imagine", "value"]
    # proposal i: proprio 0 + v (its chunk) + 0.1 + 0.1 (two continuation chunks) -> value ~ v + 0.2
    assert scored.scores == pytest.approx([0.2, 0.5], abs=1e-3)
    assert scored.extras["search_depth"] == 3


# -- the oracle scorer in real physics ------------------------------------------------------------------
@pytest.fixture(scope="module")
def camera_env():
    from robofleet.envs.libero import LiberoEnv

    env = LiberoEnv("libero_object", image_size=64, render_cameras=True, hard_reset=True)
    yield env
    env.close()


@pytest.fixture(scope="module")
def blind_env():
    from robofleet.envs.libero import LiberoEnv

    env = LiberoEnv("libero_object", render_cameras=False, hard_reset=True)
    yield env
    env.close()


def _same_observation(a: Observation, b: Observation) -> bool:
    keys = [k for k in a.privileged if k not in ("goal", "obj_of_interest")]
    return (np.array_equal(a.proprio, b.proprio)
            and sorted(a.images) == sorted(b.images) and all(np.array_equal(a.images[k], b.images[k]) for k in a.images)
            and all(np.array_equal(a.privileged[k], b.privileged[k]) for k in keys))


def test_the_oracle_restores_the_simulator_bit_for_bit_and_later_steps_are_unchanged(camera_env):
    env = camera_env
    options = planner_options(scorer="oracle", n=2, extend_steps=2, lookahead=3, reference_policy={"name": "random"})
    planner = make_planner("best_of_n", options, make_policy("random", {"chunk_size": 2}, "libero"), env)
    after = np.random.default_rng(0).uniform(-1, 1, (3, 7))

    obs = env.reset(task_id=1, trial=0, seed=3)
    before = env.get_state()
    decision = planner.decide(obs, 123)
    assert np.array_equal(env.get_state(), before), "state after planning == state before, bit for bit"
    assert decision.stats["sim_steps"] == 2 * (2 + 2 + 3)
    actions = np.concatenate([decision.prediction.actions, after])
    assert len(decision.prediction.actions) == 4, "the chunk and its 2-step extension"
    planned = [env.step(a) for a in actions]
    planned_final = env.get_state()

    obs_again = env.reset(task_id=1, trial=0, seed=3)  # hard reset: bit-identical to the first one
    assert np.array_equal(env.get_state(), before) and _same_observation(obs, obs_again)
    plain = [env.step(a) for a in actions]
    assert np.array_equal(env.get_state(), planned_final)
    assert all(_same_observation(p.obs, q.obs) for p, q in zip(planned, plain)), \
        "stepping after the oracle's restores equals stepping from the original state"


class ExplodingPolicy:
    chunk_size = 1

    def predict(self, observations, seeds):
        raise FloatingPointError("reference diverged")

    def reset(self) -> None:
        pass


def test_a_failing_oracle_proposal_is_raised_at_once_and_the_simulator_is_still_restored(blind_env):
    from robofleet.planners.oracle import OracleScorer

    env = blind_env
    obs = env.reset(task_id=1, trial=1, seed=3)
    before = env.get_state()
    opts = BestOfNOptions.from_dict(planner_options(scorer="oracle", n=2, lookahead=3)).oracle
    planner = BestOfN(make_policy("zero", {"chunk_size": 2}, "libero"),
                      OracleScorer(env, make_policy("zero", {"chunk_size": 2}, "libero"), ExplodingPolicy(), opts), n=2)
    with pytest.raises(PlanningError, match="oracle score of proposal 0 failed \\(not retried.*reference diverged"):
        planner.decide(obs, 1)
    assert np.array_equal(env.get_state(), before)


def test_the_oracle_picks_a_proposal_that_succeeds_when_one_does(blind_env):
    """noisy(scripted) a few steps before the expert would finish: some proposals drop the ball, some succeed."""
    from robofleet.planners.simulator_state import capture, restore

    env = blind_env
    expert = make_policy("scripted", {}, "libero")
    obs = env.reset(task_id=1, trial=0, seed=5)  # cream cheese -> basket; the expert succeeds at step 89
    for _ in range(85):
        obs = env.step(expert.predict([obs], [0])[0].actions[0]).obs
    noisy = make_policy("noisy", {"scale": 0.5}, "libero")
    planner = make_planner("best_of_n", planner_options(scorer="oracle", n=4, extend_steps=6), noisy, env)
    saved = capture(env)
    mixed = 0
    for query_seed in (1000, 1001, 1002):
        decision = planner.decide(obs, query_seed)
        stats = decision.stats
        succeeded = [s is not None for s in stats["success_step"]]
        assert [score > 0 for score in stats["scores"]] == succeeded
        mixed += any(succeeded) and not all(succeeded)
        # Ground truth: play every proposal's recorded plan for real from the saved state.
        seeds = planner.proposal_seeds(query_seed)
        proposals = noisy.predict([obs] * 4, seeds)
        plans = planner.scorer.score(obs, proposals, seeds).plans
        real = []
        for plan in plans:
            restore(env, saved)
            real.append(any(env.step(a).success for a in plan))
        restore(env, saved)
        assert real == succeeded
        if any(real):
            assert real[stats["chosen"]], f"chose {stats['chosen']} of {real}"
            assert np.array_equal(decision.prediction.actions, plans[stats["chosen"]])
    assert mixed >= 1, "the scenario must have both succeeding and failing proposals"


def test_pruning_keeps_the_oracle_s_choice_and_simulates_fewer_steps(blind_env):
    """A later proposal stops once it cannot beat the best so far: the same plan is chosen, for less."""
    from robofleet.planners.simulator_state import capture, restore

    env = blind_env
    expert = make_policy("scripted", {}, "libero")
    obs = env.reset(task_id=1, trial=0, seed=5)  # the expert succeeds at step 89
    for _ in range(70):
        obs = env.step(expert.predict([obs], [0])[0].actions[0]).obs
    saved = capture(env)
    noisy = make_policy("noisy", {"scale": 0.5}, "libero")
    common = dict(scorer="oracle", n=4, keep_base=True, extend_steps=4, lookahead=40, reference_policy={"name": "scripted"})
    full = make_planner("best_of_n", planner_options(**common), noisy, env)
    pruned = make_planner("best_of_n", planner_options(**common, prune=True), noisy, env)
    saved_steps = 0
    for query_seed in (7, 8, 9):
        a, b = full.decide(obs, query_seed), pruned.decide(obs, query_seed)
        assert np.array_equal(env.get_state(), saved.state)
        assert b.stats["chosen"] == a.stats["chosen"]
        assert np.array_equal(b.prediction.actions, a.prediction.actions)
        assert b.stats["scores"][b.stats["chosen"]] == a.stats["scores"][a.stats["chosen"]]
        assert b.stats["sim_steps"] <= a.stats["sim_steps"]
        assert all(b.stats["scores"][i] == 0.0 for i in b.stats["pruned"])
        saved_steps += a.stats["sim_steps"] - b.stats["sim_steps"]
    restore(env, saved)
    assert saved_steps > 0, "the scenario must let pruning cut some proposal short"


def test_the_oracle_restores_robosuite_15_exactly():
    """robosuite 1.5 (its own Python, MuJoCo 3.3 without mj_copyData): steps after a restore equal the
    steps from the original state, bit for bit, also after other steps were simulated in between."""
    from tests.test_robosuite_family import in_rs15

    facts = in_rs15("""
        import json
        import numpy as np
        from robofleet.envs.robosuite15 import RobosuiteEnv
        from robofleet.planners.simulator_state import capture, restore
        from robofleet.platform.seeds import episode_seed

        env = RobosuiteEnv("single_arm", render_cameras=False, wait_steps=2)
        env.reset(0, 0, episode_seed(0, "robosuite/single_arm/task00/trial000"))
        rng = np.random.default_rng(0)
        for a in rng.uniform(-1, 1, (5, 7)):
            env.step(a)
        saved = capture(env)
        actions = rng.uniform(-1, 1, (20, 7))
        first = [env.step(a) for a in actions]
        end = env.get_state()
        restore(env, saved)
        restored_equal = bool(np.array_equal(env.get_state(), saved.state))
        for a in rng.uniform(-1, 1, (7, 7)):  # another branch, then back
            env.step(a)
        restore(env, saved)
        again = [env.step(a) for a in actions]
        keys = [k for k in first[0].obs.privileged if k != "task"]
        print(json.dumps({
            "kind": sorted(saved.extra) if saved.extra else None,  # the adapter's own snapshot
            "restored_equal": restored_equal,
            "same_end": bool(np.array_equal(env.get_state(), end)),
            "same_obs": all(np.array_equal(p.obs.proprio, q.obs.proprio)
                            and all(np.array_equal(p.obs.privileged[k], q.obs.privileged[k]) for k in keys)
                            for p, q in zip(first, again)),
        }))
    """)
    assert facts == {"kind": ["clock", "data", "grippers", "obs_cache", "observables"], "restored_equal": True,
                     "same_end": True, "same_obs": True}


# -- across policy replicas -----------------------------------------------------------------------------
def _replica_spec() -> dict:
    return small_spec(
        env={**small_spec()["env"], "tasks": [1], "trials": 1, "render_cameras": True, "max_steps": 2},
        # no return_latents: the planner asks the replicas for the proposals' latent samples itself
        policy={"name": "cosmos", "config": "tiny", "device": "cpu", "open_loop_steps": 2},
        planner={"name": "best_of_n", "n": 4, "scorer": "model", "aggregation": "lcb",
                 "future_steps": [1, 2], "value_steps": [1, 2]},
        serving={"replicas": 2, "max_batch": 2, "max_wait_ms": 20.0, "deterministic": True, "cpus_per_replica": 0.25},
        run={"workers": 1, "cpus_per_worker": 0.5},
    )


def _rows(out) -> list[dict[str, str]]:
    with (out / "episodes.csv").open() as f:
        return list(csv.DictReader(f))


def _plan_stats(row: dict[str, str]) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.items() if k != "latency_s"} for s in json.loads(row["plan_stats"])]


@needs_cosmos_num_steps
def test_four_proposals_across_two_cosmos_replicas_complete_and_are_deterministic(ray_cluster, tmp_path):
    from robofleet.platform.runner import run

    spec = spec_from_dict(_replica_spec())
    first = run(spec, tmp_path / "first", progress=False)
    second = run(spec, tmp_path / "second", progress=False)
    [a], [b] = _rows(tmp_path / "first"), _rows(tmp_path / "second")
    assert a["error"] == "" and b["error"] == "", a["error"] or b["error"]
    assert a["queries"] == "1" and a["steps"] == "2"
    stats = _plan_stats(a)
    assert len(stats) == 1 and all(s["n"] == 4 and len(s["scores"]) == 4 and 0 <= s["chosen"] < 4 for s in stats)
    assert all(np.shape(s["values"]) == (4, 2, 2) for s in stats)
    assert stats == _plan_stats(b), "scores, values and choices repeat exactly"
    assert a["final_state"] == b["final_state"]
    served = [r["requests"] for r in first["figures"]["replicas"]]
    # one query: 4 proposals + 2 x 4 futures + 2 x 8 values = 28 requests, spread over both replicas
    assert sum(served) == 28 and min(served) > 0, served
    assert second["overall"]["errors"] == 0


@needs_cosmos_num_steps
def test_planning_through_a_replica_conditions_on_latents_and_matches_in_process(ray_cluster):
    """Protocol reference needs each proposal's latent sample: the planner asks the replica for it through
    ReplicaClient.with_settings (no return_latents in the options), and the decision is the one the same
    batch-invariant policy makes in-process."""
    from robofleet.policies.replica import PolicyReplica, ReplicaClient

    ray = ray_cluster
    cosmos = {"config": "tiny", "device": "cpu"}
    replica = PolicyReplica.options(num_cpus=0.25).remote("cosmos", cosmos, "libero", max_batch=2,
                                                          max_wait_s=0.02, fixed_batch=2)
    try:
        ray.get(replica.ready.remote())
        options = planner_options(n=3, future_steps=[1, 3], value_steps=[1, 2])
        obs = image_observation(11)
        served = make_planner("best_of_n", options, ReplicaClient([replica], chunk_size=16), FakeLiberoEnv(),
                              protocol="reference").decide(obs, 29)
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the replica's process (Ray: one OpenMP thread per fractional-CPU actor)
        try:
            local = make_policy("cosmos", cosmos, "libero").batch_invariant(2)
            alone = make_planner("best_of_n", options, local, FakeLiberoEnv(), protocol="reference").decide(obs, 29)
        finally:
            torch.set_num_threads(threads)
        assert served.stats["scores"] == alone.stats["scores"]
        assert served.stats["chosen"] == alone.stats["chosen"]
        assert np.array_equal(served.prediction.actions, alone.prediction.actions)
    finally:
        ray.kill(replica)


@needs_cosmos_num_steps
def test_a_replica_killed_mid_plan_does_not_lose_the_step(ray_cluster):
    from robofleet.policies.replica import PolicyReplica, ReplicaClient

    ray = ray_cluster
    replicas = [PolicyReplica.options(num_cpus=0.25, max_restarts=2, max_task_retries=2).remote(
        "cosmos", {"config": "tiny", "device": "cpu"}, "libero", max_batch=2, max_wait_s=0.02, fixed_batch=2,
        replica_index=i) for i in range(2)]
    try:
        ray.get([r.ready.remote() for r in replicas])
        options = planner_options(n=4, future_steps=[1, 2], value_steps=[1, 2])
        planner = make_planner("best_of_n", options, ReplicaClient(replicas, chunk_size=16), FakeLiberoEnv())
        obs = image_observation(7)
        reference = planner.decide(obs, 31)

        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(decision=planner.decide(obs, 31)))
        thread.start()
        time.sleep(0.3)
        planning = thread.is_alive()
        ray.kill(replicas[0], no_restart=False)
        thread.join(timeout=150)
        assert planning, "the kill must land while the plan is under way"
        assert not thread.is_alive() and "decision" in result, "the decision completes"
        decision = result["decision"]
        assert len(decision.stats["scores"]) == 4
        assert decision.stats["scores"] == reference.stats["scores"]
        assert decision.stats["chosen"] == reference.stats["chosen"]
        assert np.array_equal(decision.prediction.actions, reference.prediction.actions)
    finally:
        for r in replicas:
            ray.kill(r)
