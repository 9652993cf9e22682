"""Config fields: the one way a TOML table's keys and values are checked, each field declared once.

A check takes the value and its dotted key and returns the value to store, or raises SpecError
naming the key, the value and the fix. A frozen config dataclass declares each field's check beside
its default, and `from_table` builds it from a table:

    @dataclass(frozen=True)
    class RunOptions:
        workers: int = setting(2, integer, minimum=1, maximum=1024)  # env workers
        cpus_per_worker: float = setting(1.0, number, above=0)

    from_table(RunOptions, {"workers": 0}, "run.")   # SpecError("run.workers", "must be >= 1, got 0")

Every check has default texts; `message` replaces all of them (one text for every way the value can be
wrong), `type_message` only the text of a wrong type. Texts are format strings over `value` (as given)
and, where they apply, `type`, `minimum`, `maximum`, `range` ("in [1, 8]", ">= 1"), `allowed` (the
choices joined by ", ") and `choices` (as given). Hand-written: no library keeps these exact texts.

Where fields depend on one another, `from_linked_table` builds the dataclass instead: a field declared
with `required_setting` must be in the table, and a check option given as `earlier("name")` is the value
an earlier field ended with (a task list is checked against the suite named before it):

    @dataclass(frozen=True, kw_only=True)
    class SuiteTable:
        suite: str = setting("short", choice, allowed=("short", "long"))
        tasks: tuple[int, ...] = required_setting(task_ids, suite=earlier("suite"))

    from_linked_table(SuiteTable, {"suite": "long"}, "env.")   # SpecError("env.tasks", "missing (required)")
"""
from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from robofleet.platform.errors import SpecError

T = TypeVar("T")

UNKNOWN_KEY = "unknown key; allowed keys here: {allowed}"
INTEGER_IN_RANGE = "must be an integer {range}, got {value!r}"  # one text for a wrong type and a bad bound
_CHECK = "robofleet.check"  # the dataclasses.field metadata key that holds a field's check


def _fail(key: str, template: str, value: Any, **facts: Any) -> SpecError:
    return SpecError(key, template.format(value=value, **facts))


def _range(minimum: Any = None, maximum: Any = None, above: Any = None, below: Any = None) -> str:
    """The bounds in words: "in [0, 10]", "in (0, 1]", ">= 1", "> 0", "<= 8"."""
    low = (f"[{minimum}" if minimum is not None else f"({above}" if above is not None else None)
    high = (f"{maximum}]" if maximum is not None else f"{below})" if below is not None else None)
    if low and high:
        return f"in {low}, {high}"
    if low:
        return f">= {minimum}" if minimum is not None else f"> {above}"
    if high:
        return f"<= {maximum}" if maximum is not None else f"< {below}"
    return ""


# -- keys -------------------------------------------------------------------------------------------
def check_keys(keys: Iterable[str], allowed: Sequence[str], where: str, message: str = UNKNOWN_KEY) -> None:
    """SpecError(f"{where}{key}") for the first of `keys` not in `allowed`; `message` may use {allowed}."""
    for key in keys:
        if key not in allowed:
            raise _fail(f"{where}{key}", message, key, allowed=", ".join(allowed))


def require(table: Mapping[str, Any], key: str, where: str) -> Any:
    """table[key], or SpecError(f"{where}{key}", "missing (required)")."""
    if key not in table:
        raise SpecError(f"{where}{key}", "missing (required)")
    return table[key]


# -- values -----------------------------------------------------------------------------------------
def integer(value: Any, key: str, minimum: int | None = None, maximum: int | None = None, *,
            multiple_of: int | None = None, message: str | None = None, type_message: str | None = None) -> int:
    """An int (not a bool) in [minimum, maximum], a multiple of `multiple_of` where given."""
    bounds = {"minimum": minimum, "maximum": maximum, "range": _range(minimum, maximum), "type": "int"}
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, type_message or message or "must be an integer, got {value!r}", value, **bounds)
    if minimum is not None and value < minimum:
        raise _fail(key, message or "must be >= {minimum}, got {value}", value, **bounds)
    if maximum is not None and value > maximum:
        raise _fail(key, message or "must be <= {maximum}, got {value}", value, **bounds)
    if multiple_of is not None and value % multiple_of:
        raise _fail(key, message or f"must be a multiple of {multiple_of}, got {{value}}", value, **bounds)
    return value


def number(value: Any, key: str, minimum: float | None = None, maximum: float | None = None, *,
           above: float | None = None, below: float | None = None, message: str | None = None,
           type_message: str | None = None) -> float:
    """An int or float (not a bool) within the inclusive (minimum, maximum) and exclusive (above,
    below) bounds, as a float. Default text: "must be a number {range}, got {value!r}"."""
    where = _range(minimum, maximum, above, below)
    facts = {"minimum": minimum, "maximum": maximum, "range": where, "type": "float"}
    default = f"must be a number{' ' + where if where else ''}, got {{value!r}}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(key, type_message or message or default, value, **facts)
    if ((minimum is not None and not value >= minimum) or (maximum is not None and not value <= maximum)
            or (above is not None and not value > above) or (below is not None and not value < below)):
        raise _fail(key, message or default, value, **facts)
    return float(value)


def boolean(value: Any, key: str, *, message: str | None = None, type_message: str | None = None) -> bool:
    """true or false."""
    if not isinstance(value, bool):
        raise _fail(key, type_message or message or "must be true or false, got {value!r}", value, type="bool")
    return value


def text(value: Any, key: str, *, nonempty: bool = False, pattern: re.Pattern[str] | None = None,
         message: str | None = None, type_message: str | None = None) -> str:
    """A string; non-empty, and matching all of `pattern`, where asked."""
    if not isinstance(value, str):
        raise _fail(key, type_message or message or "must be a string, got {value!r}", value, type="str")
    if nonempty and not value:
        raise _fail(key, message or "must be a non-empty string, got {value!r}", value, type="str")
    if pattern is not None and not pattern.fullmatch(value):
        raise _fail(key, message or "must match {pattern}, got {value!r}", value, type="str", pattern=pattern.pattern)
    return value


def choice(value: Any, key: str, allowed: Sequence[str], *, message: str | None = None,
           type_message: str | None = None) -> str:
    """One of `allowed` (strings). Default text: "unknown value {value!r}; allowed: {allowed}"."""
    facts = {"allowed": ", ".join(allowed), "choices": allowed, "type": "str"}
    wrong = message or "unknown value {value!r}; allowed: {allowed}"
    if not isinstance(value, str):
        raise _fail(key, type_message or wrong, value, **facts)
    if value not in allowed:
        raise _fail(key, wrong, value, **facts)
    return value


def int_list(value: Any, key: str, minimum: int | None = None, maximum: int | None = None, *,
             message: str | None = None) -> tuple[int, ...]:
    """A non-empty list (or tuple) of ints in [minimum, maximum], as a tuple."""
    where = _range(minimum, maximum)
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and (minimum is None or v >= minimum)
        and (maximum is None or v <= maximum) for v in value)
    if not ok:
        default = f"must be a non-empty list of integers{' ' + where if where else ''}, got {{value!r}}"
        raise _fail(key, message or default, value, minimum=minimum, maximum=maximum, range=where, type="list")
    return tuple(value)


def mapping(value: Any, key: str, *, message: str | None = None, type_message: str | None = None) -> dict[str, Any]:
    """A table (TOML inline or not), as a dict."""
    if not isinstance(value, Mapping):
        raise _fail(key, type_message or message or "must be a table, got {value!r}", value, type="Mapping")
    return dict(value)


# -- config dataclasses -----------------------------------------------------------------------------
def setting(default: Any, check: Callable[..., Any], **options: Any) -> Any:
    """A dataclass field read from a TOML table: `from_table` stores `check(value, key, **options)`.

    default: the value when the table leaves the key out (a dict default is copied for each instance).
    """
    metadata = {_CHECK: (check, options)}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=functools.partial(dict, default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def table_keys(cls: type) -> tuple[str, ...]:
    """The keys a config dataclass reads from its table: its `setting` fields, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls) if _CHECK in f.metadata)


def from_table(cls: type[T], table: Mapping[str, Any], where: str = "", *, unknown: str = UNKNOWN_KEY) -> T:
    """`cls` built from a TOML table: unknown keys refused (the first in the table's order; `unknown` may
    use {allowed}), then each given key checked, in the fields' declaration order; absent keys take their
    defaults. Keys are named `{where}{key}`."""
    check_keys(table, table_keys(cls), where, unknown)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in table and _CHECK in f.metadata:
            check, options = f.metadata[_CHECK]
            values[f.name] = check(table[f.name], f"{where}{f.name}", **options)
    return cls(**values)


# -- config dataclasses whose fields depend on one another ------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Earlier:
    name: str


def earlier(name: str) -> Any:
    """A check option (in `setting` or `required_setting`) that `from_linked_table` replaces by the value
    field `name`, declared before this one, ended with: its checked value, or its default when the table
    leaves it out."""
    return _Earlier(name)


def required_setting(check: Callable[..., Any], **options: Any) -> Any:
    """A dataclass field the table must give: `from_linked_table` stores `check(value, key, **options)`,
    or raises SpecError(key, "missing (required)") in the field's turn. It has no default, so a dataclass
    that declares it after defaulted fields needs `kw_only=True`."""
    return dataclasses.field(metadata={_CHECK: (check, options)})


def from_linked_table(cls: type[T], table: Mapping[str, Any], where: str = "", *, unknown: str = UNKNOWN_KEY) -> T:
    """`from_table` for a config whose fields depend on one another: unknown keys refused first, then each
    field in declaration order: a `required_setting` the table leaves out is SpecError(key, "missing
    (required)"), as `require` says; a given key is checked with its `earlier(...)` options resolved; absent
    keys take their defaults. For a dataclass with neither it is `from_table`."""
    check_keys(table, table_keys(cls), where, unknown)
    values: dict[str, Any] = {}
    ended: dict[str, Any] = {}  # every field so far: checked, or its default
    for f in dataclasses.fields(cls):
        if _CHECK not in f.metadata:
            continue
        check, options = f.metadata[_CHECK]
        if f.name in table:
            resolved = {name: _ended(ended, option, cls, f.name) if isinstance(option, _Earlier) else option
                        for name, option in options.items()}
            ended[f.name] = values[f.name] = check(table[f.name], f"{where}{f.name}", **resolved)
        elif f.default is not dataclasses.MISSING:
            ended[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            ended[f.name] = f.default_factory()
        else:
            raise SpecError(f"{where}{f.name}", "missing (required)")
    return cls(**values)


def _ended(ended: Mapping[str, Any], option: _Earlier, cls: type, field: str) -> Any:
    if option.name not in ended:
        raise TypeError(f"{cls.__name__}.{field}: earlier({option.name!r}) names no setting declared before it")
    return ended[option.name]
