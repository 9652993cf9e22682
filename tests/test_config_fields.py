"""Config fields (platform/config_fields.py): a field's check is declared once; errors name the key, the value
and the fix."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import pytest

from robofleet.platform.config_fields import (
    INTEGER_IN_RANGE, boolean, choice, earlier, from_linked_table, from_table, int_list, integer, mapping, number,
    required_setting, setting, table_keys,
)
from robofleet.platform.errors import SpecError


@dataclass(frozen=True)
class Example:
    count: int = setting(2, integer, minimum=1, maximum=8)
    rate: float = setting(0.5, number, above=0.0, below=1.0)
    mode: str = setting("fast", choice, allowed=("fast", "exact"))
    steps: tuple[int, ...] = setting((1, 2), int_list, minimum=1)
    verbose: bool = setting(False, boolean)
    extra: Mapping[str, Any] = setting({}, mapping)
    note: str = "not read from a table"


def error_of(table: Mapping[str, Any]) -> str:
    with pytest.raises(SpecError) as caught:
        from_table(Example, table, "example.")
    return str(caught.value)


def test_a_table_builds_the_dataclass_with_defaults_for_absent_keys():
    built = from_table(Example, {"count": 3, "rate": 0.25, "steps": [4]}, "example.")
    assert built == Example(count=3, rate=0.25, steps=(4,))
    assert built.extra == {} and built.extra is not Example().extra  # a dict default is copied
    assert isinstance(number(1, "k"), float)


def test_only_setting_fields_are_table_keys():
    assert table_keys(Example) == ("count", "rate", "mode", "steps", "verbose", "extra")
    assert error_of({"note": "x"}) == ("example.note: unknown key; allowed keys here: count, rate, mode, steps, "
                                       "verbose, extra")


@pytest.mark.parametrize("table, message", [
    ({"count": 0}, "example.count: must be >= 1, got 0"),
    ({"count": 9}, "example.count: must be <= 8, got 9"),
    ({"count": True}, "example.count: must be an integer, got True"),
    ({"rate": 1.0}, "example.rate: must be a number in (0.0, 1.0), got 1.0"),
    ({"rate": float("nan")}, "example.rate: must be a number in (0.0, 1.0), got nan"),
    ({"mode": "slow"}, "example.mode: unknown value 'slow'; allowed: fast, exact"),
    ({"steps": []}, "example.steps: must be a non-empty list of integers >= 1, got []"),
    ({"verbose": 1}, "example.verbose: must be true or false, got 1"),
    ({"extra": [1]}, "example.extra: must be a table, got [1]"),
])
def test_a_bad_value_names_its_key_the_value_and_what_is_allowed(table, message):
    assert error_of(table) == message


def test_the_first_bad_key_in_declaration_order_is_reported():
    assert error_of({"verbose": "yes", "count": 0}).startswith("example.count:")


def test_message_replaces_every_default_text_and_type_message_only_the_wrong_type_one():
    with pytest.raises(SpecError, match=r"^k: must be an integer in \[1, 4\], got 'x'$"):
        integer("x", "k", 1, 4, message=INTEGER_IN_RANGE)
    with pytest.raises(SpecError, match=r"^k: must be an integer in \[1, 4\], got 5$"):
        integer(5, "k", 1, 4, message=INTEGER_IN_RANGE)
    with pytest.raises(SpecError, match=r"^k: expected str, got 3$"):
        choice(3, "k", ("a",), type_message="expected {type}, got {value!r}")


def test_a_spec_error_keeps_its_message_for_raising_under_another_key():
    error = SpecError("policy.speed", "must be a number, got 'x'")
    assert error.message == "must be a number, got 'x'" and str(error) == f"policy.speed: {error.message}"


# -- fields that depend on one another (from_linked_table) ------------------------------------------
SHELVES = {"short": 2, "long": 5}


def shelf_slot(value: Any, key: str, shelf: str) -> int:
    return integer(value, key, 0, SHELVES[shelf] - 1)


@dataclass(frozen=True, kw_only=True)
class Linked:
    shelf: str = setting("short", choice, allowed=tuple(SHELVES))
    slot: int = required_setting(shelf_slot, shelf=earlier("shelf"))  # checked against the shelf named before it
    count: int = required_setting(integer, minimum=1)
    label: str = setting("", choice, allowed=("", "a"))


def linked_error(table: Mapping[str, Any]) -> str:
    with pytest.raises(SpecError) as caught:
        from_linked_table(Linked, table, "x.")
    return str(caught.value)


def test_a_linked_field_is_checked_against_the_value_an_earlier_field_ended_with():
    assert from_linked_table(Linked, {"shelf": "long", "slot": 4, "count": 1}) == Linked(shelf="long", slot=4, count=1)
    assert linked_error({"slot": 4, "count": 1}) == "x.slot: must be <= 1, got 4"  # the shelf's default: short


def test_a_required_field_left_out_is_reported_in_its_turn():
    assert linked_error({"shelf": "long", "count": 1}) == "x.slot: missing (required)"
    assert linked_error({"shelf": "tall", "count": 1}).startswith("x.shelf: unknown value 'tall'")  # shelf first
    assert linked_error({"slot": 0, "label": "b"}) == "x.count: missing (required)"  # count before label
    assert linked_error({"slot": 0, "count": 1, "colour": 1}).startswith("x.colour: unknown key")  # keys first


def test_without_linked_or_required_fields_it_is_from_table():
    for table in ({}, {"count": 3, "steps": [4]}, {"verbose": "yes", "count": 0}, {"note": "x"}, {"rate": 1.0}):
        try:
            expected = from_table(Example, table, "example.")
        except SpecError as exc:
            with pytest.raises(SpecError, match=f"^{re.escape(str(exc))}$"):
                from_linked_table(Example, table, "example.")
        else:
            assert from_linked_table(Example, table, "example.") == expected


def test_a_link_to_a_field_declared_later_is_a_programming_error():
    @dataclass(frozen=True)
    class Backwards:
        slot: int = setting(0, shelf_slot, shelf=earlier("shelf"))
        shelf: str = setting("short", choice, allowed=tuple(SHELVES))

    with pytest.raises(TypeError, match=r"Backwards.slot: earlier\('shelf'\) names no setting declared before it"):
        from_linked_table(Backwards, {"slot": 0})
