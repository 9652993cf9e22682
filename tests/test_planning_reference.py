"""Best-of-N planning as NVIDIA's reference does it (REFERENCE.md §3), with the tiny Cosmos Policy on CPU.

Each test is one behaviour of NVlabs/cosmos-policy's planning code (experiments/robot/cosmos_utils.py,
models/policy_video2world_model.py, modules/cosmos_sampler.py) or of the batched stage that computes
the same thing faster.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from robofleet.envs.contract import Observation
from robofleet.planners.best_of_n import BestOfN, Scored, choose
from robofleet.planners.contract import PlanningError
from robofleet.planners.model_scorer import ModelScorer, aggregate
from robofleet.planners.options import BestOfNOptions, ModelScorerOptions
from robofleet.planners.registry import make_planner, validate_planner_options
from robofleet.planners.retry import retry_once
from robofleet.platform.errors import SpecError
from robofleet.policies.contract import Prediction
from robofleet.policies.cosmos.factory import make_cosmos
from robofleet.policies.cosmos.layout import ACTION, PROPRIO, VALUE, Mode
from robofleet.policies.cosmos.policy import CosmosPolicy
from robofleet.policies.cosmos.sampler import reference_evaluations, sample, sample_rows, sigma_schedule

CAMERAS = ("agentview", "robot0_eye_in_hand")


class FakeLiberoEnv:
    family = "libero"


def observation(seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    images = {key: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for key in CAMERAS}
    return Observation(images=images, proprio=rng.uniform(-0.5, 0.5, 9).astype(np.float32), instruction="pick up the bowl")


@pytest.fixture(scope="module")
def policy() -> CosmosPolicy:
    return make_cosmos({"config": "tiny", "device": "cpu"}, "libero")


@contextmanager
def dit_inputs(policy: CosmosPolicy) -> Iterator[list[torch.Tensor]]:
    """The hidden_states (B, 16 + 2, T, h, w) of every DiT call while the block runs."""
    seen: list[torch.Tensor] = []
    handle = policy.network.transformer.register_forward_pre_hook(
        lambda _module, _args, kwargs: seen.append(kwargs["hidden_states"].detach().clone()), with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


@contextmanager
def vae_encodes(policy: CosmosPolicy) -> Iterator[list[int]]:
    calls: list[int] = []
    network = policy.network
    originals = network.encode, network.encode_leading
    network.encode = lambda *a, **k: (calls.append(1), originals[0](*a, **k))[1]
    network.encode_leading = lambda *a, **k: (calls.append(1), originals[1](*a, **k))[1]
    try:
        yield calls
    finally:
        network.encode, network.encode_leading = originals


# -- 1. conditioning on the generated latent ---------------------------------------------------------------
def test_the_world_model_and_value_passes_condition_on_the_generated_latent_without_encoding(policy):
    sampling = policy.with_settings(return_latents=True)
    obs = observation(0)
    [proposal] = sampling.predict([obs], [7])
    world_frames = policy.layout.conditioning[Mode.WORLD_MODEL]
    with vae_encodes(policy) as encodes, dit_inputs(policy) as seen:
        [future] = policy.imagine([obs], [proposal], [8], num_steps=1)
        policy.value([obs], [proposal.actions], [future], [9], num_steps=1)
    assert encodes == [], "no VAE encode: the samples condition as they are"
    world_in, value_in = seen[0][0, :16], seen[1][0, :16]
    given = torch.from_numpy(proposal.latents)
    for frame in world_frames:  # the raw sampled action frame, not the chunk's average tiled again
        assert torch.equal(world_in[:, frame], given[:, frame]), frame
    value_frame = policy.layout.index(VALUE)
    assert torch.equal(value_in[:, :value_frame], torch.from_numpy(future.latents)[:, :value_frame])
    [reencoded] = policy.imagine([obs], [proposal.actions], [8], num_steps=1)
    assert not np.allclose(reencoded.latents, future.latents), "re-encoding + re-injecting is another input"


def test_under_the_reference_protocol_proposals_without_latents_are_refused(policy):
    scorer = ModelScorer(policy, policy, ModelScorerOptions(future_steps=(1,), value_steps=(1,)), protocol="reference")
    [plain] = policy.predict([observation(0)], [3])
    with pytest.raises(PlanningError, match="return_latents = true"):
        scorer.score(observation(0), [plain], [3])


# -- 2. what a step count means ------------------------------------------------------------------------
def test_reference_num_steps_2_is_one_evaluation_at_sigma_80_like_1():
    assert [reference_evaluations(n) for n in (1, 2, 3, 5)] == [1, 1, 3, 5]
    assert sigma_schedule(reference_evaluations(2)).tolist() == [80.0]


def test_a_2_step_value_member_is_one_evaluation_under_reference_and_two_under_robofleet(policy):
    obs = observation(1)
    options = ModelScorerOptions(future_steps=(1,), value_steps=(1, 2))
    proposals = policy.with_settings(return_latents=True).predict([obs], [40])
    reference = ModelScorer(policy, policy, options, protocol="reference").score(obs, proposals, [40])
    [future] = policy.imagine([obs], proposals, [40], num_steps=1)  # future member 0: seed 40 + 0
    one = policy.value([obs], [proposals[0].actions], [future], [41], num_steps=1)  # value member 1: seed 40 + 1
    two = policy.value([obs], [proposals[0].actions], [future], [41], num_steps=2)
    assert reference.extras["values"][0][0][1] == pytest.approx(one[0], abs=1e-6)  # batch-mates: float32 order
    assert abs(one[0] - two[0]) > 1e-4
    assert reference.extras["network_evaluations"] == 1 + 1 + 1
    robofleet = ModelScorer(policy, policy, options, protocol="robofleet").score(obs, proposals, [40])
    assert robofleet.extras["network_evaluations"] == 1 + 1 + 2


def test_reference_seeds_proposal_i_with_seed_plus_i_and_members_with_that_plus_j(policy):
    calls: list[tuple[str, list[int], Any]] = []

    class Recording:
        per_request_steps = True

        def imagine(self, observations, actions, seeds, num_steps=None):
            calls.append(("imagine", list(seeds), num_steps))
            return policy.imagine(observations, actions, seeds, num_steps=num_steps)

        def value(self, observations, actions, futures, seeds, num_steps=None):
            calls.append(("value", list(seeds), num_steps))
            return policy.value(observations, actions, futures, seeds, num_steps=num_steps)

        def reset(self):
            pass

    acting = policy.with_settings(return_latents=True)
    scorer = ModelScorer(acting, Recording(), ModelScorerOptions(future_steps=(1, 3), value_steps=(1, 2, 3)),
                         protocol="reference")
    planner = BestOfN(acting, scorer, n=2, protocol="reference")
    assert planner.proposal_seeds(195) == [195, 196]
    planner.decide(observation(2), 195)
    (_, future_seeds, future_steps), (_, value_seeds, value_steps) = calls
    assert future_seeds == [195, 196, 196, 197] and future_steps == [1, 3, 1, 3]  # (i, f): 195 + i + f
    assert value_seeds == [195, 196, 197] * 2 + [196, 197, 198] * 2  # (i, f, v): 195 + i + v, every future
    assert value_steps == [1, 1, 3] * 4  # reference: 2 steps = 1 evaluation


# -- 3./4. aggregation -----------------------------------------------------------------------------------
def test_lcb_is_mean_minus_sample_std_clamped_to_0_1():
    values = np.array([0.2, 0.4, 0.9])
    assert aggregate(values, "lcb") == pytest.approx(values.mean() - values.std(ddof=1))
    assert aggregate(np.array([0.0, 0.05, 0.3]), "lcb") == 0.0  # the bound is below 0
    assert aggregate(np.array([0.7]), "lcb") == pytest.approx(0.7), "one value: no spread"


def test_when_every_lcb_is_below_0_the_scores_tie_at_0_and_proposal_0_is_kept():
    class Spread:
        """Every proposal's values spread so widely that mean - std < 0; the later ones less so."""

        def imagine(self, observations, actions, seeds, num_steps=None):
            return [Prediction(actions=a) for a in actions]

        def value(self, observations, actions, futures, seeds, num_steps=None):
            return [[0.0, 0.3][num_steps - 1] + 0.01 * float(np.mean(a)) for a in actions]

        def reset(self):
            pass

    world = Spread()
    scorer = ModelScorer(world, world, ModelScorerOptions(aggregation="lcb", future_steps=(1,), value_steps=(1, 2)))
    proposals = [Prediction(actions=np.full((2, 7), v, np.float32)) for v in (0.0, 1.0, 2.0)]
    scored = scorer.score(observation(), proposals, [1, 2, 3])
    assert scored.scores == [0.0, 0.0, 0.0] and choose(scored.scores) == 0


def test_success_vote_counts_values_above_0_05_by_default():
    assert ModelScorerOptions().success_threshold == 0.05
    assert validate_planner_options("best_of_n", {})["success_threshold"] == 0.05
    assert aggregate(np.array([0.04, 0.06, 0.3, 0.01]), "success_vote") == 0.5


# -- 5. the options the reference has -------------------------------------------------------------------
def test_value_masking_makes_v_independent_of_the_current_state_and_action_frames(policy):
    obs = observation(3)
    [proposal] = policy.with_settings(return_latents=True).predict([obs], [5])
    [future] = policy.imagine([obs], [proposal], [6], num_steps=1)
    scrambled_latents = future.latents.copy()
    for slot in (PROPRIO, ACTION):
        scrambled_latents[:, policy.layout.index(slot)] = 0.5
    scrambled_latents[:, list(policy.layout.image_slots(future=False))] *= -1.0
    scrambled = type(future)(actions=future.actions, latents=scrambled_latents)
    masked = [policy.value([obs], [future.actions], [f], [7], num_steps=2, mask_current_state_action=True)[0]
              for f in (future, scrambled)]
    seen = [policy.value([obs], [future.actions], [f], [7], num_steps=2)[0] for f in (future, scrambled)]
    assert masked[0] == masked[1], "masked: s and a are generated, not read"
    assert seen[0] != seen[1]
    with dit_inputs(policy) as inputs:
        policy.value([obs], [future.actions], [future], [7], num_steps=1, mask_current_state_action=True)
    condition = inputs[0][0, 16, :, 0, 0].tolist()  # the condition-mask channel per latent frame
    assert condition == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]  # blank and s' given; s, a, V generated


def test_value_masking_is_a_planner_option_passed_to_the_world_model(policy):
    options = validate_planner_options("best_of_n", {"n": 2, "future_steps": [1], "value_steps": [1],
                                                     "mask_current_state_action": True})
    planner = make_planner("best_of_n", options, policy, FakeLiberoEnv(), protocol="reference")
    masked = planner.decide(observation(4), 11)
    unmasked = make_planner("best_of_n", {**options, "mask_current_state_action": False}, policy, FakeLiberoEnv(),
                            protocol="reference").decide(observation(4), 11)
    assert masked.stats["values"] != unmasked.stats["values"]

    class NoMasking:
        def imagine(self, observations, actions, seeds, num_steps=None): ...
        def value(self, observations, actions, futures, seeds, num_steps=None): ...

    with pytest.raises(SpecError, match="planner.mask_current_state_action"):
        make_planner("best_of_n", options, NoMasking(), FakeLiberoEnv())


def test_policy_value_ranking_scores_proposals_by_their_own_pass_with_no_other_pass(policy):
    options = validate_planner_options("best_of_n", {"n": 3, "ranking": "policy_value"})
    planner = make_planner("best_of_n", options, policy, FakeLiberoEnv(), protocol="reference")
    with dit_inputs(policy) as calls:
        decision = planner.decide(observation(5), 195)
    assert len(calls) == policy.settings.action_steps, "one batched action pass, nothing else"
    proposals = policy.predict([observation(5)] * 3, [195, 196, 197])
    assert decision.stats["scores"] == pytest.approx([p.value for p in proposals], abs=1e-6)
    assert decision.stats["chosen"] == choose(decision.stats["scores"])


# -- the batched stage -------------------------------------------------------------------------------------
def test_rows_with_different_step_counts_sample_together_bit_identical_to_each_alone():
    weights = torch.linspace(-1.0, 1.0, 2 * 3 * 2 * 2, dtype=torch.float64).view(1, 2, 3, 2, 2)
    calls: list[int] = []

    def per_row(x: torch.Tensor, sigmas: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        calls.append(len(rows))
        return torch.tanh(x * weights / sigmas.view(-1, 1, 1, 1, 1)) + 0.01 * rows.view(-1, 1, 1, 1, 1)

    noise = torch.randn(6, 2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    steps = [1, 5, 3, 2, 5, 1]
    together = sample_rows(per_row, noise, steps)
    assert calls == [6, 4, 3, 2, 2], "a row leaves the batch after its last evaluation"
    for b, n in enumerate(steps):
        alone = sample(lambda x, s, b=b: per_row(x, torch.tensor([s], dtype=torch.float64), torch.tensor([b])),
                       noise[b:b + 1], n)
        assert torch.equal(together[b:b + 1], alone), (b, n)


def test_a_mixed_step_stage_equals_each_member_alone_bitwise_with_pad_to(policy):
    padded = policy.with_settings(pad_to=4, return_latents=True)
    observations = [observation(6)] * 3
    proposals = padded.predict(observations, [1, 2, 3])
    steps = [1, 3, 5]
    stage = padded.imagine(observations * 3, [p for p in proposals for _ in steps],
                           [10 + k for k in range(9)], num_steps=steps * 3)
    for k, (proposal, n) in enumerate((p, n) for p in proposals for n in steps):
        [alone] = padded.imagine([observations[0]], [proposal], [10 + k], num_steps=n)
        assert np.array_equal(stage[k].latents, alone.latents), (k, n)
        assert stage[k].stats["network_evaluations"] == n


def test_the_batched_planner_makes_the_choices_and_scores_of_the_per_member_planner(policy):
    padded = policy.with_settings(pad_to=4)
    options = validate_planner_options("best_of_n", {"n": 3, "aggregation": "average", "future_steps": [1, 3],
                                                     "value_steps": [1, 2, 3]})
    batched = make_planner("best_of_n", options, padded, FakeLiberoEnv(), protocol="reference")
    per_member = make_planner("best_of_n", options, padded, FakeLiberoEnv(), protocol="reference",
                              stage_batching=False)
    with dit_inputs(policy) as stage_calls:
        a = batched.decide(observation(7), 195)
    with dit_inputs(policy) as member_calls:
        b = per_member.decide(observation(7), 195)
    assert a.stats["values"] == b.stats["values"] and a.stats["scores"] == b.stats["scores"]
    assert a.stats["chosen"] == b.stats["chosen"]
    assert len(stage_calls) < len(member_calls)


# -- retries -------------------------------------------------------------------------------------------------
def test_infrastructure_failures_are_retried_once_and_policy_errors_are_not():
    from ray.exceptions import ActorDiedError, RayTaskError

    attempts: list[int] = []

    def flaky(error: Exception):
        def call() -> str:
            attempts.append(1)
            if len(attempts) == 1:
                raise error
            return "ok"
        return call

    for error in (ActorDiedError(), ConnectionError("reset by peer")):
        attempts.clear()
        assert retry_once("proposals", flaky(error)) == ("ok", 1)
    for error in (ValueError("bad shape"), RayTaskError("predict", "traceback", KeyError("x")).as_instanceof_cause()):
        attempts.clear()
        with pytest.raises(PlanningError, match="not retried") as caught:
            retry_once("proposals", flaky(error))
        assert attempts == [1] and caught.value.__cause__ is error


def test_scored_extras_say_what_conditioned_the_world_model(policy):
    opts = BestOfNOptions.from_dict(validate_planner_options("best_of_n", {"future_steps": [1], "value_steps": [1]}))
    acting = policy.with_settings(return_latents=True)
    proposals = acting.predict([observation(8)] * 2, [1, 2])
    scored: Scored = ModelScorer(acting, policy, opts.model).score(observation(8), proposals, [1, 2])
    assert scored.extras["conditioned_on"] == "generated_latent"
    plain = policy.predict([observation(8)] * 2, [1, 2])
    assert ModelScorer(policy, policy, opts.model).score(observation(8), plain, [1, 2]).extras["conditioned_on"] == \
        "encoded_observation"
