"""Sweep specs: a grid of run specs (suites/tasks x policies/checkpoints x planners x seeds) in one TOML.

A sweep file is a run spec (platform/spec.py: the *base*) plus a `[sweep]` table and optional
`[[grid]]` blocks. Each grid point is the base with some keys overridden; it is one ordinary run
(its own run directory OUT/<point name>/, so resume, spec checks and reports are inherited).

    seed = 0                                  # base run spec: every grid point starts from it
    [env]
    family = "libero"
    suite = "libero_object"
    tasks = [0, 1]
    trials = 5
    render_cameras = false
    [policy]
    name = "scripted"
    [run]
    workers = 2

    [sweep]
    name = "object-baselines"                 # required; default output directory runs/<name>
    seeds = [0, 1, 2]                         # optional: every grid point runs with each seed

    [[grid]]                                  # a block: the product of its axes
    policy = [{name = "scripted"}, {name = "random", chunk_size = 4}]
    env.suite = ["libero_object", "libero_spatial"]

    [[grid]]                                  # blocks are concatenated (not multiplied)
    policy = [{name = "zero"}]

Rules:
- An axis is a key of the run spec and a *list of values* for it: `seed = [0, 1]`,
  `env.suite = [...]`, `env.max_steps = [100, 200]`, `policy.checkpoint = ["/ckpt/a", "/ckpt/b"]`.
  A key whose value is itself a list is swept with a list of lists: `env.tasks = [[0], [1, 2]]`.
- A table value replaces the whole table (`policy = [{name = "random", chunk_size = 4}]` keeps
  nothing of the base [policy]); to change one key of a table, sweep the dotted key instead.
- `[sweep] seeds` crosses every grid point with each seed (a block must then not sweep `seed`).
  Runs are ordered seed-major, then block by block, then by the product of the block's axes in
  file order: an interrupted sweep has all configurations at the first seed first.
- No `[[grid]]`: the sweep is the base (times the seeds).
- Point names come from the swept values (`libero_spatial-random-seed1`); the same name for two
  different points gets a `-2`, `-3` suffix; two identical points are an error.
- Every grid point is validated (spec_from_dict) before anything runs; an error names the block,
  the key and the point: `grid[1].env.suite: unknown value 'libero_objects'; ... (grid point ...)`.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from robofleet.platform.config_fields import check_keys, from_table, int_list, setting
from robofleet.platform.config_fields import text as string  # not `text`: load_any's argument
from robofleet.platform.errors import SpecError
from robofleet.platform.spec import (
    RUN_SPEC_KEYS, RunSpec, drop_none, parse_spec_toml, read_spec_text, read_spec_toml, spec_from_dict,
)

SWEEP_KEYS = ("name", "seeds", "description")  # the order the unknown-key message lists them in
# Leaves whose string values are self-explanatory as labels ("libero_object", "scripted").
_BARE_LABEL_LEAVES = ("suite", "name", "policy", "planner")
_BARE_TABLE_KEYS = ("family", "suite", "name", "policy", "planner", "protocol")  # their values say what they are


@dataclass(frozen=True)
class GridPoint:
    """One run of a sweep.

    name: the point's label and its run directory under the sweep's output directory.
    config: the name without the seed label (points that differ only by seed share it).
    overrides: dotted key -> value applied to the base (what makes this point).
    block: index of its [[grid]] block (-1: no blocks).
    """

    name: str
    config: str
    spec: RunSpec
    overrides: Mapping[str, Any]
    block: int

    @property
    def episodes(self) -> int:
        return len(self.spec.env.tasks) * self.spec.env.trials


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: its name, the source document, and its grid points in run order."""

    name: str
    points: tuple[GridPoint, ...]
    document: Mapping[str, Any] = field(repr=False)
    description: str = ""

    @property
    def episodes(self) -> int:
        return sum(p.episodes for p in self.points)

    def identity_hash(self) -> str:
        """Hash of the points' spec hashes and names (what the sweep runs, and where)."""
        blob = json.dumps([[p.name, p.spec.identity_hash()] for p in self.points]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_toml(self) -> str:
        """The sweep document as TOML (kept in the output directory as sweep.toml)."""
        return tomli_w.dumps(drop_none(self.document))


def is_sweep_document(data: Mapping[str, Any]) -> bool:
    """True when a parsed TOML document is a sweep (has a [sweep] table or [[grid]] blocks)."""
    return "sweep" in data or "grid" in data


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file (every grid point is validated here)."""
    return sweep_from_dict(read_spec_toml(path))


@dataclass(frozen=True)
class AnySpec:
    """A validated run spec or sweep, with its TOML text (what `submit` ships to the cluster).

    name: the run's or sweep's name (default output directory runs/<name>).
    """

    text: str
    kind: str  # "run" | "sweep"
    name: str
    run: RunSpec | None = None
    sweep: SweepSpec | None = None


def load_any(path: str | Path | None = None, text: str | None = None, where: str = "spec") -> AnySpec:
    """Read (from `path`, or the given `text`) and validate a run spec or a sweep file."""
    if text is None:
        if path is None:
            raise SpecError("spec", "no spec file given")
        text, where = read_spec_text(path), str(Path(path))  # SpecErrors that name the file
    data = parse_spec_toml(text, where)
    if is_sweep_document(data):
        sweep = sweep_from_dict(data)
        return AnySpec(text=text, kind="sweep", name=sweep.name, sweep=sweep)
    spec = spec_from_dict(data)
    stem = Path(path).stem if path is not None else "run"
    return AnySpec(text=text, kind="run", name=spec.name or stem, run=spec)


# -- expansion ------------------------------------------------------------------------------------
def _flatten_axes(table: Mapping[str, Any], where: str, prefix: str = "") -> list[tuple[str, list[Any]]]:
    """A [[grid]] block as (dotted key, values) pairs; TOML dotted keys arrive as nested tables."""
    axes: list[tuple[str, list[Any]]] = []
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            axes.extend(_flatten_axes(value, where, f"{path}."))
        elif isinstance(value, list):
            if not value:
                raise SpecError(f"{where}.{path}", "an axis needs at least one value")
            axes.append((path, value))
        else:
            raise SpecError(f"{where}.{path}", f"an axis is a list of values, got {value!r}; "
                                               f"for a single value write [{_toml_repr(value)}]")
    return axes


def _toml_repr(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def _apply(base: Mapping[str, Any], overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A deep copy of `base` with each dotted key of `overrides` set (tables are replaced whole)."""
    doc = copy.deepcopy(dict(base))
    for path, value in overrides.items():
        parts = path.split(".")
        if parts[0] not in RUN_SPEC_KEYS:
            raise SpecError(f"{where}.{path}", f"unknown run spec key {parts[0]!r}; allowed: {', '.join(RUN_SPEC_KEYS)}")
        node = doc
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"{where}.{path}", f"{'.'.join(parts[: i + 1])} is not a table in the base spec")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return doc


def _short(value: Any) -> str:
    """A short text for a value in a point name (paths by their last component)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return Path(value).name if "/" in value else value
    if isinstance(value, (list, tuple)):
        return "-".join(_short(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _labels(path: str, values: list[Any]) -> list[str]:
    """The label of each value of one axis; table values are labelled by their `name` plus the
    keys that tell same-named tables apart."""
    leaf = path.split(".")[-1]
    if path == "seed":
        return [f"seed{_short(v)}" for v in values]
    labels = []
    for value in values:
        if isinstance(value, dict):  # "random-chunk_size=2", "libero-libero_object-tasks=0"
            same = [v for v in values if isinstance(v, dict) and v.get("name") == value.get("name")]
            keys = sorted({k for v in same for k in v if k != "name" and any(w.get(k) != v.get(k) for w in same)})
            parts = [_short(value["name"])] if "name" in value else ([] if keys else [leaf])
            parts += [_short(value.get(k, "none")) if k in _BARE_TABLE_KEYS else f"{k}={_short(value.get(k, 'none'))}"
                      for k in keys]
            labels.append("-".join(parts))
        elif isinstance(value, str) and leaf in _BARE_LABEL_LEAVES:
            labels.append(_short(value))
        elif isinstance(value, str):
            labels.append(f"{leaf}-{_short(value)}")
        else:
            labels.append(f"{leaf}{_short(value)}")
    return labels


_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")


def _safe_name(text: str) -> str:
    """A file-system-safe directory name."""
    return _UNSAFE.sub("_", text).strip("._") or "run"


def _hint(exc: SpecError, overrides: Mapping[str, Any]) -> str:
    """An extra hint for the commonest grid mistake: a list-valued key given as a flat list."""
    for path, value in overrides.items():
        if exc.key == path and path == "env.tasks" and not isinstance(value, (list, str)):
            return " (env.tasks takes a list: sweep it as a list of lists, e.g. env.tasks = [[0], [1, 2]])"
    return ""


def sweep_from_dict(data: Mapping[str, Any]) -> SweepSpec:
    """Expand and validate a parsed sweep document; SpecError names the first bad key and point."""
    name, description, seeds, blocks = _sweep_header(data)
    base = {k: v for k, v in data.items() if k in RUN_SPEC_KEYS}
    points = _grid_points(name, base, _candidates(seeds, blocks))
    return SweepSpec(name=name, points=tuple(points), document=dict(data), description=description)


_NOT_BLANK = re.compile(r".*\S.*", re.DOTALL)  # some non-whitespace (what str.strip() keeps)
SEEDS_TEXT = "must be a non-empty list of integers, got {value!r}"


def _seeds(value: Any, key: str) -> tuple[int, ...] | None:
    """[sweep] seeds: a non-empty list of distinct integers; None (a Python caller's "no seeds") passes."""
    if value is None:
        return None
    if not isinstance(value, list):  # int_list takes tuples too: a list, as TOML gives
        raise SpecError(key, SEEDS_TEXT.format(value=value))
    seeds = int_list(value, key, message=SEEDS_TEXT)
    if len(set(seeds)) != len(seeds):
        raise SpecError(key, f"duplicate seeds in {value!r}")
    return seeds


@dataclass(frozen=True)
class SweepTable:
    """[sweep], validated: fields declared in the order they are checked (the first bad key is reported);
    the unknown-key message lists SWEEP_KEYS."""

    # required (default output directory runs/<name>); a non-empty string, not only whitespace
    name: str = setting(None, string, pattern=_NOT_BLANK,
                        message="required: a non-empty string naming the sweep, got {value!r}")
    description: str = setting("", string)  # shown in the sweep's report
    seeds: tuple[int, ...] | None = setting(None, _seeds)  # every grid point runs with each seed


def _sweep_header(data: Mapping[str, Any]) -> tuple[str, str, tuple[int, ...] | None, list[dict[str, Any]]]:
    """The checked top level of a sweep document: (name, description, seeds or None, grid blocks)."""
    if not is_sweep_document(data):
        raise SpecError("sweep", "missing: a sweep file has a [sweep] table with a name (see jobs/sweep.py)")
    check_keys(data, (*RUN_SPEC_KEYS, "sweep", "grid"), "", "unknown key; allowed at the top of a sweep: {allowed}")
    table = data.get("sweep", {})
    if not isinstance(table, dict):
        raise SpecError("sweep", "must be a table ([sweep])")
    check_keys(table, SWEEP_KEYS, "sweep.", "unknown key; allowed: {allowed}")
    # name is required, and an absent one is reported as the value None ("got None"), as TOML cannot write it
    sweep = from_table(SweepTable, {"name": None, **table}, "sweep.")
    blocks = data.get("grid", [{}])
    if isinstance(blocks, dict):
        raise SpecError("grid", "write grid blocks as [[grid]] (an array of tables), not [grid]")
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks) or not blocks:
        raise SpecError("grid", "must be one or more [[grid]] tables")
    return sweep.name, sweep.description, sweep.seeds, blocks


def _candidates(seeds: tuple[int, ...] | None, blocks: list[dict[str, Any]]
                ) -> list[tuple[int, dict[str, Any], list[str]]]:
    """(block index or -1 for an empty block, overrides, labels) of every point, seed-major when seeds are given."""
    candidates: list[tuple[int, dict[str, Any], list[str]]] = []
    for seed in seeds if seeds is not None else [None]:
        for b, block in enumerate(blocks):
            where = f"grid[{b}]"
            axes = _flatten_axes(block, where) if block else []
            if seed is not None and any(path == "seed" for path, _ in axes):
                raise SpecError(f"{where}.seed", "sweep.seeds already sets the seed of every point; drop one of them")
            labelled = [list(zip(values, _labels(path, values), strict=True)) for path, values in axes]
            for combo in itertools.product(*labelled):
                overrides = {path: value for (path, _), (value, _) in zip(axes, combo, strict=True)}
                labels = [label for _, label in combo]
                if seed is not None:
                    overrides["seed"] = seed
                    labels.append(f"seed{seed}")
                candidates.append((b if block else -1, overrides, labels))
    return candidates


def _grid_points(name: str, base: dict[str, Any], candidates: list[tuple[int, dict[str, Any], list[str]]]
                 ) -> list[GridPoint]:
    """Each candidate as a named, validated GridPoint; repeated names numbered, repeated specs refused."""
    points: list[GridPoint] = []
    seen_names: dict[str, int] = {}
    seen_specs: dict[str, str] = {}
    for block, overrides, labels in candidates:
        where = f"grid[{block}]" if block >= 0 else "sweep"
        point_name = _safe_name("-".join(labels) or _safe_name(name))
        count = seen_names.get(point_name, 0) + 1
        seen_names[point_name] = count
        if count > 1:
            point_name = f"{point_name}-{count}"
        config = _safe_name("-".join(label for label in labels if not re.fullmatch(r"seed-?\d+", label))) or "base"
        spec = _point_spec(name, point_name, base, overrides, where)
        ident = spec.identity_hash()
        if ident in seen_specs:
            raise SpecError(where, f"grid point {point_name} repeats grid point {seen_specs[ident]} (same spec); "
                                   "remove the duplicate")
        seen_specs[ident] = point_name
        points.append(GridPoint(name=point_name, config=config, spec=spec, overrides=overrides, block=block))
    return points


def _point_spec(name: str, point_name: str, base: dict[str, Any], overrides: dict[str, Any], where: str) -> RunSpec:
    """The run spec of one point: the base document with the point's overrides; errors name the grid key."""
    doc = _apply(base, overrides, where)
    doc["name"] = f"{name}/{point_name}"
    try:
        return spec_from_dict(doc)
    except SpecError as exc:
        key = f"{where}.{exc.key}" if any(exc.key == p or exc.key.startswith(p + ".") for p in overrides) else exc.key
        raise SpecError(key, f"{exc.message} (grid point {point_name}){_hint(exc, overrides)}") from exc
