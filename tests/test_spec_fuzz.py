"""Properties: whatever a spec file holds, validation raises only SpecError naming a key, or returns a
RunSpec whose values are in range and which survives its own TOML round trip unchanged."""
from __future__ import annotations

import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robofleet.platform.errors import SpecError
from robofleet.platform.protocol import PROTOCOLS
from robofleet.platform.spec import RunSpec, dump_spec_toml, spec_from_dict
from tests.conftest import small_spec

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["all", "libero_object", "hard", "zero", "direct"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=10)
KEYS = {
    "": ["seed", "name", "protocol", "env", "policy", "planner", "serving", "run"],
    "env": ["family", "suite", "tasks", "trials", "image_size", "render_cameras", "reset", "max_steps"],
    "policy": ["name", "open_loop_steps", "chunk_size"],
    "planner": ["name", "n", "scorer"],
    "serving": ["replicas", "max_batch", "max_wait_ms", "deterministic"],
    "run": ["workers", "cpus_per_worker", "max_attempts"],
}


@st.composite
def mutated_specs(draw):
    """A valid spec with a few keys replaced, deleted or added (anywhere, any type)."""
    spec = small_spec()
    for _ in range(draw(st.integers(1, 4))):
        table = draw(st.sampled_from(list(KEYS)))
        key = draw(st.sampled_from(KEYS[table] + ["bogus"]))
        target = spec if table == "" else spec.setdefault(table, {})
        if not isinstance(target, dict):
            continue
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(values)
    return spec


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_only_spec_errors_come_out_of_the_validator(spec):
    try:
        result = spec_from_dict(spec)
    except SpecError as exc:
        assert exc.key and str(exc).startswith(f"{exc.key}:")  # the message names the key first
        return
    assert isinstance(result, RunSpec)
    assert result.protocol in PROTOCOLS and 0 <= result.seed < 2**32
    assert result.run.workers >= 1 and result.run.max_attempts >= 1 and result.env.trials >= 1
    assert result.env.tasks and len(set(result.env.tasks)) == len(result.env.tasks)
    again = spec_from_dict(tomllib.loads(dump_spec_toml(result)))  # what spec.toml keeps reproduces it
    assert again.identity_hash() == result.identity_hash() and again == result


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), values, max_size=6))
def test_arbitrary_documents_are_rejected_with_spec_errors(document):
    with pytest.raises(SpecError):  # a random document has no valid [env] / [policy]: never accepted
        spec_from_dict(document)
