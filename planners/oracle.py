"""The `oracle` scorer of best_of_n: the simulator itself scores each proposal, then is put back exactly.

For each proposal i (all from the same saved simulator state):

    1. play the proposal: the first `execute_steps` actions of its chunk (0 = the whole chunk);
    2. extend it (optional, `extend_steps` > 0): the acting policy keeps acting closed-loop for that
       many more steps, with seeds derived from proposal i's seed. The recorded actions join the
       proposal: if it is chosen, the whole recorded sequence is what the env worker executes, and
       since the restore is exact, executing it reproduces the simulated trajectory bit for bit.
       This lets a policy with short chunks (the scripted expert: 1 action) be planned over
       multi-step segments, so planning is not paid at every single step;
    3. look ahead (optional, `lookahead` > 0): the reference policy (default: the acting policy;
       for noisy(scripted) use the noiseless `scripted`) plays on for up to that many steps;
    4. restore the simulator (planners/simulator_state.py) and check get_state() equals the saved
       state bit for bit (PlanningError otherwise).

Score. With H = the proposal's played steps + extend_steps + lookahead, and t the number of steps
after the decision at which the task first succeeds (counting steps 1-3):

    score = (H + 1 - t) / (H + 1)   if the task succeeds within the H steps (in (0, 1])
    score = 0                       otherwise

So any success beats any failure, and an earlier success beats a later one: with a reference
lookahead long enough to finish the task, the score ranks proposals by how quickly a good policy can
finish from where they leave the robot (the dense tie-break). Proposals that all fail score 0 and
the tie goes to the lowest index (proposal 0; with keep_base, direct's own chunk).

The env worker executes the chosen plan subject to the spec's `policy.open_loop_steps`: leave that
unset (or >= the plan's length) so that what runs is what was scored; set `execute_steps` to play
only the leading actions of each chunk.

Pruning (`prune = true`): proposals are played in index order, and once one has succeeded, a later
proposal stops as soon as it can no longer score strictly higher (its success would come at or after
the step the best one reached). The choice is exactly the one without pruning (ties already go to the
lowest index) at a fraction of the simulation; a pruned proposal's score is then recorded as 0 and
its index listed in the `pruned` stat.

Cost per decision: at most N x H simulator steps (a success ends a proposal's play early). The
lookahead is not clipped to the episode's remaining step budget: a success it finds may lie beyond
the episode's step limit. Search depth must be 1 (the simulator already plays the future out).
Policies used here must not keep per-query state (predict is called for imagined branches).
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from robofleet.envs.contract import Env, Observation
from robofleet.planners.best_of_n import Scored
from robofleet.planners.options import OracleScorerOptions
from robofleet.planners.retry import retry_once
from robofleet.planners.simulator_state import capture, exact_restores, restore
from robofleet.platform.seeds import proposal_seed, query_seed
from robofleet.policies.contract import Policy, Prediction

log = logging.getLogger(__name__)

_EXTEND_STREAM, _LOOKAHEAD_STREAM = 1, 2  # sub-streams of a proposal's seed


class _Pruned(Exception):
    """A proposal reached its step limit under pruning (it cannot beat the best one any more)."""


class OracleScorer:
    """Scores proposals by playing them in `env` (see module docstring).

    env: the env worker's simulator (the one the episode runs in).
    acting: the policy that made the proposals (extends them when extend_steps > 0).
    reference: the policy that plays the lookahead.
    """

    name = "oracle"

    def __init__(self, env: Env, acting: Policy, reference: Policy, options: OracleScorerOptions):
        self.env = env
        self.acting = acting
        self.reference = reference
        self.options = options
        if not exact_restores(env):
            log.warning("%s offers only get_state/set_state: oracle restores may not reproduce later steps exactly",
                        type(env).__name__)

    def reset(self) -> None:
        if self.reference is not self.acting:
            self.reference.reset()

    def score(self, obs: Observation, proposals: Sequence[Prediction], seeds: Sequence[int]) -> Scored:
        """Scores; extras success_step, plan_steps, horizon, sim_steps, retries; per proposal the
        recorded action sequence (P, d_act) to execute if it is chosen."""
        saved = capture(self.env)
        scores, plans, success_steps, horizons, pruned = [], [], [], [], []
        sim_steps = retries = 0
        best = 0.0
        for i, (proposal, seed) in enumerate(zip(proposals, seeds)):
            limit = None
            if self.options.prune and best > 0.0:
                horizon = self._horizon(proposal)
                # the steps within which a success scores strictly more than `best`
                limit = max(int(np.ceil((horizon + 1) * (1.0 - best))) - 1, 0)

            def play(proposal: Prediction = proposal, seed: int = seed, limit: int | None = limit,
                     ) -> tuple[list[np.ndarray], int | None, int, int]:
                try:
                    return self._play(obs, proposal, seed, limit)
                finally:
                    restore(self.env, saved)

            (plan, success_at, steps, horizon), retried = retry_once(f"oracle score of proposal {i}", play)
            retries += retried
            sim_steps += steps
            horizons.append(horizon)
            success_steps.append(success_at)
            score = 0.0 if success_at is None else (horizon + 1 - success_at) / (horizon + 1)
            scores.append(score)
            best = max(best, score)
            if limit is not None and success_at is None and steps >= limit:
                pruned.append(i)
            # no cast: the executed actions must be the simulated ones, exactly
            plans.append(np.stack(plan) if plan else np.asarray(proposal.actions)[:0])
        extras = {
            "success_step": success_steps,
            "plan_steps": [len(p) for p in plans],
            "horizon": horizons,
            "sim_steps": sim_steps,
            "scorer_retries": retries,
        }
        if self.options.prune:
            extras["pruned"] = pruned
        return Scored(scores, extras, plans)

    # -- one proposal ------------------------------------------------------------------------------
    def _horizon(self, proposal: Prediction) -> int:
        opts = self.options
        played = len(proposal.actions) if not opts.execute_steps else min(opts.execute_steps, len(proposal.actions))
        return played + opts.extend_steps + opts.lookahead

    def _play(self, obs: Observation, proposal: Prediction, seed: int, limit: int | None = None,
              ) -> tuple[list[np.ndarray], int | None, int, int]:
        """Play one proposal from the current state, for at most `limit` steps (None: its horizon).
        Returns (recorded plan actions, step of the first success or None, steps simulated, horizon H)."""
        opts = self.options
        chunk = np.asarray(proposal.actions)
        first = chunk[: opts.execute_steps] if opts.execute_steps else chunk
        horizon = len(first) + opts.extend_steps + opts.lookahead
        plan: list[np.ndarray] = []
        steps = 0
        if limit is not None and limit <= 0:
            return plan, None, steps, horizon

        def run(actions: np.ndarray, record: bool) -> bool:
            nonlocal obs, steps
            for index, action in enumerate(actions):
                if limit is not None and steps >= limit:
                    raise _Pruned
                result = self.env.step(action, render=index == len(actions) - 1)  # the next query reads the last obs only
                steps += 1
                obs = result.obs
                if record:
                    plan.append(np.asarray(action))
                if result.success:
                    return True
            return False

        try:
            if run(first, record=True):
                return plan, steps, steps, horizon
            for policy, budget, stream, record in ((self.acting, opts.extend_steps, _EXTEND_STREAM, True),
                                                    (self.reference, opts.lookahead, _LOOKAHEAD_STREAM, False)):
                left, query = budget, 0
                branch = proposal_seed(seed, stream)
                while left > 0:
                    [prediction] = policy.predict([obs], [query_seed(branch, query)])
                    actions = np.asarray(prediction.actions)
                    actions = actions[: opts.execute_steps] if opts.execute_steps else actions
                    actions = actions[:left]
                    if len(actions) == 0:
                        raise ValueError(f"{type(policy).__name__} returned an empty action chunk")
                    query += 1
                    left -= len(actions)
                    if run(actions, record):
                        return plan, steps, steps, horizon
        except _Pruned:
            pass  # it can no longer beat the best proposal so far
        return plan, None, steps, horizon

