"""Seeds derive from the sweep seed and episode identity only."""
from __future__ import annotations

from robofleet.platform.episodes import expand_episodes
from robofleet.platform.seeds import episode_seed, proposal_seed, query_seed
from robofleet.platform.spec import spec_from_dict
from tests.conftest import small_spec


def test_episode_seed_is_a_pure_function_of_sweep_seed_and_key():
    assert episode_seed(0, "libero/libero_object/task00/trial000") == episode_seed(0, "libero/libero_object/task00/trial000")
    assert episode_seed(0, "libero/libero_object/task00/trial000") != episode_seed(1, "libero/libero_object/task00/trial000")
    assert episode_seed(0, "libero/libero_object/task00/trial000") != episode_seed(0, "libero/libero_object/task00/trial001")


def test_seed_values_are_pinned():
    """The derivation is part of the result format: changing it changes every published number."""
    assert episode_seed(0, "libero/libero_object/task00/trial000") == 1834987917


def test_query_and_proposal_seeds_differ_by_index():
    q = [query_seed(123, i) for i in range(50)]
    assert len(set(q)) == 50
    assert len({proposal_seed(q[0], i) for i in range(8)}) == 8


def test_expansion_is_independent_of_run_options():
    one = expand_episodes(spec_from_dict(small_spec()))
    many = expand_episodes(spec_from_dict({**small_spec(), "run": {"workers": 16}}))
    assert one == many
    assert [e.trial for e in one] == [0, 1]
    assert len({e.episode_id for e in one}) == len(one)
