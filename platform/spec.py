"""Run specs: TOML -> frozen, validated dataclasses. Validation happens once, here, at the edge.

A spec (see examples/*.toml):

    seed = 0                      # sweep seed: every random draw derives from it (platform/seeds.py)
    name = "object-scripted"      # optional label for reports
    protocol = "reference"        # "reference" (default for libero and robocasa): NVlabs/cosmos-policy's
                                  # published evaluation; "robofleet": scenes and noise seeded per episode
                                  # (platform/protocol.py says exactly what each changes)

    [env]
    family = "libero"
    suite = "libero_object"
    tasks = "all"                 # or a list of task ids, e.g. [0, 3]
    trials = 5                    # per task; trial i uses the suite's fixed init state i
    image_size = 256              # camera pixels (square)
    render_cameras = true         # false: no images (privileged policies only; ~10x faster on CPU)
    render_steps = "observed"     # render cameras only on steps a decision reads | "every" step (as
                                  # LIBERO's eval loop does; same physics, only slower)
    reset = "hard"                # "hard" (bit-identical episodes) | "soft" (faster, not identical)
    max_steps = 280               # optional; default: the suite's protocol limit

    # family = "robosuite": robosuite 1.5 tasks in their own Python environment (envs/families.py)
    #   suite = "single_arm" (default), tasks = "all" or names ["Lift", "Stack"] (or ids),
    #   trials: any number (trial i's initial state is drawn from its episode seed),
    #   cameras = ["agentview", "robot0_eye_in_hand"] (default; any of the task's cameras)
    # family = "robocasa": RoboCasa's protocol (envs/robocasa_tasks.py)
    #   suite = "atomic" (default), tasks = "all" or names ["PnPCounterToCab"], trials (scene of
    #   trial t: (t // 10) % 5), image_size = 224 (default), cameras = the protocol's three (default)

    [policy]
    name = "scripted"             # zero | random | scripted | cosmos | an entry-point policy
    open_loop_steps = 16          # optional: actions executed per chunk (default: the whole chunk)
    # ... any other key is an option of the policy, validated by its factory

    [planner]
    name = "direct"

    [serving]                     # optional: policy replicas shared by all env workers
    replicas = 2                  # 0 (default): each env worker holds its own policy
    max_batch = 8                 # a batch is cut at max_batch requests ...
    max_wait_ms = 5.0             # ... or this long after its oldest request, whichever comes first
    deterministic = true          # default: results bitwise independent of batch-mates, batch size, replica
    fixed_batch = 1               # rows per call where only a fixed shape is invariant (CPU; <= max_batch)
    gpus_per_replica = 1          # default: 1 when the cluster has GPUs, else 0 (CPU replicas)
    cpus_per_replica = 1

    [run]
    workers = 2                   # env workers (Ray actors), one simulator each
    cpus_per_worker = 1
    max_attempts = 2              # an episode whose worker died is retried on a new worker
"""
from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import tomli_w

from robofleet.envs import robocasa_tasks, robosuite_tasks
from robofleet.envs.libero_suites import LIBERO_SUITES, TRIALS_PER_INIT_FILE
from robofleet.platform.config_fields import (
    boolean, check_keys, choice, earlier, from_linked_table, from_table, integer, number, require, required_setting,
    setting, table_keys, text,
)
from robofleet.platform.errors import SpecError
from robofleet.platform.protocol import PROTOCOLS, default_protocol, protocols_of_family

ENV_FAMILIES = ("libero", "robosuite", "robocasa")
RESET_MODES = ("hard", "soft")
RENDER_STEPS = ("observed", "every")
DEFAULT_FIXED_BATCH = 1  # [serving] fixed_batch: rows per call where only a fixed shape is invariant (CPU): one
# row wastes no padding; Cosmos on CUDA needs no fixed shape (BENCHMARKS.md "Deterministic serving")
MAX_TRIALS_SEEDED = 10_000  # robosuite / robocasa: initial states come from seeds, not from a file
MAX_STEPS_SEEDED = 10_000  # their horizon is ours (ignore_done), not robosuite's 1000


@dataclass(frozen=True)
class EnvSpec:
    """[env], validated: built from its family's table (ENV_TABLES below), which declares each key's check."""

    family: str
    suite: str
    tasks: tuple[int, ...]
    trials: int
    image_size: int = 256
    render_cameras: bool = True
    reset: str = "hard"
    max_steps: int | None = None
    cameras: tuple[str, ...] = ()  # robosuite / robocasa: cameras rendered (LIBERO's are fixed: empty)
    render_steps: str = "observed"  # "observed": cameras rendered only on steps a decision reads | "every"


@dataclass(frozen=True)
class PolicySpec:
    name: str
    open_loop_steps: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannerSpec:
    name: str = "direct"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServingSpec:
    """[serving], validated: built from ServingTable below, which declares each key's check (and default)."""

    replicas: int = 0
    max_batch: int = 8
    max_wait_ms: float = 5.0
    deterministic: bool = True  # replicas serve the policy's batch_invariant(fixed_batch) form (policies/contract.py)
    fixed_batch: int = DEFAULT_FIXED_BATCH  # rows per call where only a fixed shape is invariant (CPU; <= max_batch)
    gpus_per_replica: float | None = None  # None: 1 if the cluster has GPUs, else 0
    cpus_per_replica: float = 1.0


MAX_WORKERS = 1024  # env workers of one run


@dataclass(frozen=True)
class RunOptions:
    workers: int = setting(2, integer, minimum=1, maximum=MAX_WORKERS)  # env workers (Ray actors), one simulator each
    cpus_per_worker: float = setting(1.0, number, above=0)
    max_attempts: int = setting(2, integer, minimum=1, maximum=10)  # an episode whose worker died is retried


@dataclass(frozen=True)
class RunSpec:
    seed: int
    env: EnvSpec
    policy: PolicySpec
    planner: PlannerSpec
    run: RunOptions
    serving: ServingSpec = field(default_factory=ServingSpec)
    name: str = ""
    protocol: str = "reference"  # platform/protocol.py: scene seeding, query seeds, chunk execution

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["env"]["tasks"] = list(self.env.tasks)
        if self.env.cameras:
            data["env"]["cameras"] = list(self.env.cameras)
        else:  # absent, so LIBERO specs keep the hash they had before the key existed (their runs resume)
            del data["env"]["cameras"]
        return data

    def identity_hash(self) -> str:
        """Hash of everything that defines the episodes and their results (not worker counts)."""
        data = self.to_dict()
        data.pop("run")
        data.pop("name")
        data["env"].pop("render_steps")  # which steps' images are rendered changes no episode (camera_gate.py)
        if data["protocol"] == "robofleet":  # what every run before the key existed ran: their hashes stay
            del data["protocol"]
        serving = data.pop("serving")
        if serving["replicas"] and serving["deterministic"]:  # then batching and placement cannot change results
            # the network's row count is what shapes the numerics; padding every batch to max_batch (before
            # fixed_batch existed) is fixed_batch = max_batch, and keeps the hash it had then
            rows = serving["fixed_batch"]
            data["serving"] = ({"deterministic": True, "max_batch": rows} if rows == serving["max_batch"]
                               else {"deterministic": True, "fixed_batch": rows})
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def check_workers(workers: Any, key: str) -> int:
    """A number of env workers given outside the spec (--workers, run(workers=...)): an integer in
    1..MAX_WORKERS, as [run] workers; the error is named `key`."""
    return integer(workers, key, 1, MAX_WORKERS, message=f"{{value!r}} env workers: give an integer in 1..{MAX_WORKERS}")


def with_workers(spec: RunSpec, workers: Any, key: str = "workers") -> RunSpec:
    """`spec` with [run] workers replaced by `workers`, checked by check_workers."""
    return replace(spec, run=replace(spec.run, workers=check_workers(workers, key)))


# -- validation ------------------------------------------------------------------------------------
# [env]: each family's table is a frozen dataclass whose fields are declared in the order they are checked
# (the first bad key in that order is the one reported); `_env_spec` turns it into the EnvSpec.
ENV_KEYS = ("family", "suite", "tasks", "trials", "image_size", "render_cameras", "render_steps", "reset", "max_steps",
            "cameras")  # the order the unknown-key message lists them in; every family's table has the rest


_Catalogue = Callable[[str], tuple[int, tuple[str, ...]]]  # suite -> (number of tasks, task names or ())


def _task_ids(value: Any, key: str, suite: str, catalogue: _Catalogue) -> tuple[int, ...]:
    """Task ids from "all" or a list of ids (or, where the suite has names, task names)."""
    n_tasks, names = catalogue(suite)
    if value == "all":
        return tuple(range(n_tasks))
    if not isinstance(value, list) or not value:
        raise SpecError(key, f'must be "all" or a non-empty list of task {"names or " if names else ""}ids, '
                             f"got {value!r}")
    ids = []
    for v in value:
        if names and isinstance(v, str):
            if v not in names:
                raise SpecError(key, f"unknown task {v!r} in suite {suite}; allowed: {', '.join(names)}")
            v = names.index(v)
        else:
            integer(v, key)
        if not 0 <= v < n_tasks:
            raise SpecError(key, f"task id {v} out of range: {suite} has tasks 0..{n_tasks - 1}")
        ids.append(v)
    if len(set(ids)) != len(ids):
        raise SpecError(key, f"duplicate tasks in {value!r}")
    return tuple(ids)


def _camera_names(value: Any, key: str, allowed: tuple[str, ...], where: str) -> tuple[str, ...]:
    """A non-empty list of distinct cameras of `allowed` (`where`: whose cameras they are, for the message)."""
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        raise SpecError(key, f"must be a non-empty list of camera names, got {value!r}")
    unknown = [c for c in value if c not in allowed]
    if unknown:
        raise SpecError(key, f"unknown camera {unknown[0]!r} for {where}; allowed: {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise SpecError(key, f"duplicate cameras in {value!r}")
    return tuple(value)


def _robosuite_cameras(value: Any, key: str, suite: str, tasks: tuple[int, ...]) -> tuple[str, ...]:
    """Cameras every one of the chosen robosuite tasks can render."""
    chosen = [robosuite_tasks.ROBOSUITE_SUITES[suite].tasks[t] for t in tasks]
    allowed = tuple(c for c in chosen[0].cameras if all(c in task.cameras for task in chosen))
    return _camera_names(value, key, allowed, f"task{'s' if len(chosen) > 1 else ''} "
                                              f"{', '.join(task.name for task in chosen)}")


def _no_cameras(value: Any, key: str) -> tuple[str, ...]:
    """LIBERO's env.cameras: refused, whatever its value."""
    raise SpecError(key, "LIBERO renders agentview and robot0_eye_in_hand (fixed); "
                         "env.cameras is for the robosuite and robocasa families")


def _step_limit(value: Any, key: str, maximum: int) -> int | None:
    """max_steps in [1, maximum]; None (a Python caller's "the default": TOML has no null) passes."""
    return None if value is None else integer(value, key, 1, maximum)


def _hard_reset(value: Any, key: str) -> str:
    """robocasa's reset: a mode of RESET_MODES, and only "hard"."""
    if choice(value, key, RESET_MODES) != "hard":
        raise SpecError(key, "robocasa builds a fresh kitchen for every episode (the reference protocol); "
                             "only 'hard' applies")
    return value


def _libero_tasks(suite: str) -> tuple[int, tuple[str, ...]]:
    return LIBERO_SUITES[suite].n_tasks, ()


def _robosuite_tasks(suite: str) -> tuple[int, tuple[str, ...]]:
    return len(robosuite_tasks.ROBOSUITE_SUITES[suite].tasks), robosuite_tasks.ROBOSUITE_SUITES[suite].task_names


def _robocasa_tasks(suite: str) -> tuple[int, tuple[str, ...]]:
    tasks = robocasa_tasks.ROBOCASA_SUITES[suite]
    return len(tasks), tuple(t.name for t in tasks)


# The fields every family shares (each family's table declares them where they are checked).
def _image_size(default: int) -> Any:
    return setting(default, integer, minimum=32, maximum=1024)  # camera pixels (square)


def _render_cameras() -> Any:
    return setting(True, boolean)  # false: no images (privileged policies only)


def _render_steps() -> Any:
    return setting("observed", choice, allowed=RENDER_STEPS)  # "observed": only steps a decision reads | "every"


def _trials(maximum: int) -> Any:
    return required_setting(integer, minimum=1, maximum=maximum)  # per task


@dataclass(frozen=True, kw_only=True)
class LiberoEnvTable:
    """[env] of family "libero": a LIBERO suite; trial i uses the suite's fixed init state i."""

    cameras: tuple[str, ...] = setting((), _no_cameras)  # refused: LIBERO's two cameras are fixed
    suite: str = required_setting(choice, allowed=tuple(LIBERO_SUITES))
    tasks: tuple[int, ...] = required_setting(_task_ids, suite=earlier("suite"), catalogue=_libero_tasks)
    trials: int = _trials(TRIALS_PER_INIT_FILE)
    image_size: int = _image_size(256)
    render_cameras: bool = _render_cameras()
    render_steps: str = _render_steps()
    reset: str = setting("hard", choice, allowed=RESET_MODES)  # "hard" (bit-identical episodes) | "soft" (faster)
    max_steps: int | None = setting(None, _step_limit, maximum=990)  # None: the suite's protocol limit


@dataclass(frozen=True, kw_only=True)
class RobosuiteEnvTable:
    """[env] of family "robosuite": robosuite 1.5 tasks by name; trial i's initial state comes from its seed."""

    suite: str = setting(robosuite_tasks.DEFAULT_SUITE, choice, allowed=tuple(robosuite_tasks.ROBOSUITE_SUITES))
    tasks: tuple[int, ...] = required_setting(_task_ids, suite=earlier("suite"), catalogue=_robosuite_tasks)
    trials: int = _trials(MAX_TRIALS_SEEDED)
    image_size: int = _image_size(256)
    render_cameras: bool = _render_cameras()
    render_steps: str = _render_steps()
    reset: str = setting("hard", choice, allowed=RESET_MODES)
    max_steps: int | None = setting(None, _step_limit, maximum=MAX_STEPS_SEEDED)  # None: the task's limit
    cameras: tuple[str, ...] = setting(robosuite_tasks.DEFAULT_CAMERAS, _robosuite_cameras, suite=earlier("suite"),
                                       tasks=earlier("tasks"))  # any the chosen tasks can all render


@dataclass(frozen=True, kw_only=True)
class RobocasaEnvTable:
    """[env] of family "robocasa": RoboCasa's atomic tasks by name, with its protocol's scenes, cameras and limits."""

    suite: str = setting(robocasa_tasks.SUITE, choice, allowed=tuple(robocasa_tasks.ROBOCASA_SUITES))
    reset: str = setting("hard", _hard_reset)  # a fresh kitchen every episode: "hard" only
    tasks: tuple[int, ...] = required_setting(_task_ids, suite=earlier("suite"), catalogue=_robocasa_tasks)
    trials: int = _trials(MAX_TRIALS_SEEDED)  # the scene of trial t: (t // 10) % 5
    image_size: int = _image_size(robocasa_tasks.IMAGE_SIZE)
    render_cameras: bool = _render_cameras()
    render_steps: str = _render_steps()
    max_steps: int | None = setting(None, _step_limit, maximum=MAX_STEPS_SEEDED)  # None: the task's limit
    cameras: tuple[str, ...] = setting(robocasa_tasks.CAMERAS, _camera_names,
                                       allowed=robocasa_tasks.CAMERAS + robocasa_tasks.OTHER_CAMERAS, where="robocasa")


ENV_TABLES: dict[str, type] = {"libero": LiberoEnvTable, "robosuite": RobosuiteEnvTable, "robocasa": RobocasaEnvTable}


def _env_spec(table: Any) -> EnvSpec:
    if not isinstance(table, dict):
        raise SpecError("env", "must be a table ([env])")
    where = "env."
    check_keys(table, ENV_KEYS, where)
    family = choice(require(table, "family", where), "env.family", ENV_FAMILIES)
    cls = ENV_TABLES[family]
    env = from_linked_table(cls, {key: value for key, value in table.items() if key != "family"}, where)
    return EnvSpec(family=family, **{key: getattr(env, key) for key in table_keys(cls)})


def _policy_spec(table: Any, family: str) -> PolicySpec:
    from robofleet.policies.registry import available_policies

    if not isinstance(table, dict):
        raise SpecError("policy", "must be a table ([policy])")
    name = choice(require(table, "name", "policy."), "policy.name", available_policies())
    open_loop = table.get("open_loop_steps")
    options = {k: v for k, v in table.items() if k not in ("name", "open_loop_steps")}
    return PolicySpec(
        name=name,
        open_loop_steps=None if open_loop is None else integer(open_loop, "policy.open_loop_steps", 1),
        options=options,
    )


def _planner_spec(table: Any) -> PlannerSpec:
    from robofleet.planners.registry import PLANNERS, validate_planner_options

    if not isinstance(table, dict):
        raise SpecError("planner", "must be a table ([planner])")
    name = choice(table.get("name", "direct"), "planner.name", PLANNERS)
    options = {k: v for k, v in table.items() if k != "name"}
    return PlannerSpec(name=name, options=validate_planner_options(name, options))


# [serving]: checked in the order of its table below (max_batch first: it bounds fixed_batch); the
# unknown-key message lists the keys in ServingSpec's order, the order dump_spec_toml writes them in.
SERVING_KEYS = tuple(f.name for f in fields(ServingSpec))


def _gpus(value: Any, key: str) -> float | None:
    """gpus_per_replica >= 0; None (a Python caller's "1 if the cluster has GPUs, else 0") passes."""
    return None if value is None else number(value, key, 0.0)


@dataclass(frozen=True)
class ServingTable:
    """[serving]: policy replicas shared by all env workers (ServingSpec, as checked)."""

    max_batch: int = setting(8, integer, minimum=1, maximum=4096)  # a batch is cut at max_batch requests ...
    replicas: int = setting(0, integer, minimum=0, maximum=1024)  # 0: each env worker holds its own policy
    max_wait_ms: float = setting(5.0, number, minimum=0.0)  # ... or this long after its oldest request
    deterministic: bool = setting(True, boolean)  # results bitwise independent of batch-mates, size, replica
    # rows per call where only a fixed shape is invariant; the default is <= every max_batch (>= 1)
    fixed_batch: int = setting(DEFAULT_FIXED_BATCH, integer, minimum=1, maximum=earlier("max_batch"))
    gpus_per_replica: float | None = setting(None, _gpus)  # None: 1 if the cluster has GPUs, else 0
    cpus_per_replica: float = setting(1.0, number, minimum=0.0)


def _serving_spec(table: Any) -> ServingSpec:
    if not isinstance(table, dict):
        raise SpecError("serving", "must be a table ([serving])")
    check_keys(table, SERVING_KEYS, "serving.")
    serving = from_linked_table(ServingTable, table, "serving.")
    return ServingSpec(**{key: getattr(serving, key) for key in SERVING_KEYS})


def _run_options(table: Any) -> RunOptions:
    if not isinstance(table, dict):
        raise SpecError("run", "must be a table ([run])")
    return from_table(RunOptions, table, "run.")


# The top-level keys of a run document, in the order the unknown-key message lists them (a sweep's base
# and its grid keys are these too; `robofleet serve` takes them less [run]: platform/serve_spec.py).
RUN_SPEC_KEYS = ("seed", "name", "protocol", "env", "policy", "planner", "serving", "run")


def spec_from_dict(data: Mapping[str, Any]) -> RunSpec:
    """Validate a parsed TOML document into a RunSpec; SpecError names the first bad key."""
    check_keys(data, RUN_SPEC_KEYS, "")
    spec = assemble_run_spec(data, _env_spec(require(data, "env", "")))
    from robofleet.platform.policy_context import validate_spec_policy

    validate_spec_policy(spec, check_files=False)  # the policy's own rules (options, tasks it supports)
    return spec


def assemble_run_spec(data: Mapping[str, Any], env: EnvSpec) -> RunSpec:
    """The RunSpec of a run document whose top-level keys and [env] table the caller has checked (into
    `env`): its other tables checked in this order (the first bad key is the one reported). The policy's
    own rules are the caller's to check (spec_from_dict; platform/serve_spec.py for served-only families)."""
    return RunSpec(
        protocol=_protocol(data.get("protocol", default_protocol(env.family)), env.family),
        seed=integer(require(data, "seed", ""), "seed", 0, 2**32 - 1),
        env=env,
        policy=_policy_spec(require(data, "policy", ""), env.family),
        planner=_planner_spec(data.get("planner", {"name": "direct"})),
        run=_run_options(data.get("run", {})),
        serving=_serving_spec(data.get("serving", {})),
        name=run_name(data.get("name", "")),
    )


def _protocol(value: Any, family: str) -> str:
    choice(value, "protocol", PROTOCOLS)
    allowed = protocols_of_family(family)
    if value not in allowed:
        raise SpecError("protocol", f"{value!r} does not apply to env family {family!r} (it has no reference "
                                    f"evaluation to follow); allowed: {', '.join(allowed)}")
    return value


def run_name(name: Any, key: str = "name") -> str:
    """A run's name: it becomes the default output directory runs/<name>, so it must stay inside runs/
    (relative, no `..`; `/` nests, as sweeps' `<sweep>/<point>` names do)."""
    text(name, key)
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "~")) or ".." in parts or "\0" in name or (name and not all(parts)):
        raise SpecError(key, f"{name!r} would put the run outside runs/ (default output directory runs/<name>): "
                             "use a relative name without '..', empty parts or a leading '/' or '~'")
    return name


# The one TOML reader of spec files: run specs, served specs and sweep files (jobs/sweep.py).
def read_spec_toml(path: str | Path) -> dict[str, Any]:
    """A spec file's TOML as a dict; SpecError("spec") when it cannot be read or parsed."""
    return parse_spec_toml(read_spec_text(path), str(Path(path)))


def read_spec_text(path: str | Path) -> str:
    """A spec file's text; SpecError("spec", "cannot read ...") when it cannot be read."""
    path = Path(path)
    try:
        return path.read_text()
    except OSError as exc:
        raise SpecError("spec", f"cannot read {path}: {exc.strerror}") from exc


def parse_spec_toml(text: str, where: str = "spec") -> dict[str, Any]:
    """TOML text as a dict; SpecError("spec", "{where} is not valid TOML: ...") when it does not parse.
    where: what the text is, for the message (a file's path, "$VAR")."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError("spec", f"{where} is not valid TOML: {exc}") from exc


def load_spec(path: str | Path) -> RunSpec:
    """Read and validate a TOML spec file."""
    return spec_from_dict(read_spec_toml(path))


def dump_spec_toml(spec: RunSpec) -> str:
    """The frozen spec as TOML (the run directory keeps it; `robofleet run` on it reproduces the run)."""
    d = spec.to_dict()
    policy = {"name": d["policy"]["name"], "open_loop_steps": d["policy"]["open_loop_steps"], **d["policy"]["options"]}
    planner = {"name": d["planner"]["name"], **d["planner"]["options"]}
    doc = {"seed": d["seed"], "name": d["name"], "protocol": d["protocol"], "env": d["env"], "policy": policy, "planner": planner,
           "serving": d["serving"], "run": d["run"]}
    return tomli_w.dumps(drop_none(doc))


def drop_none(value: Any) -> Any:
    """A document without its None values, for TOML (which has no null: absent keys mean "the default"):
    dict entries whose value is None are left out, in tables at any depth, also tables inside lists
    (a sweep's axis of tables, jobs/sweep.py)."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value
