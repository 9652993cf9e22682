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
    deterministic = true          # pad every batch to max_batch: results independent of batch-mates
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from robofleet.envs import robocasa_tasks, robosuite_tasks
from robofleet.envs.libero_suites import LIBERO_SUITES, TRIALS_PER_INIT_FILE
from robofleet.platform.errors import SpecError
from robofleet.platform.protocol import PROTOCOLS, default_protocol, protocols_of_family

ENV_FAMILIES = ("libero", "robosuite", "robocasa")
RESET_MODES = ("hard", "soft")
RENDER_STEPS = ("observed", "every")
MAX_TRIALS_SEEDED = 10_000  # robosuite / robocasa: initial states come from seeds, not from a file
MAX_STEPS_SEEDED = 10_000  # their horizon is ours (ignore_done), not robosuite's 1000


@dataclass(frozen=True)
class EnvSpec:
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
    replicas: int = 0
    max_batch: int = 8
    max_wait_ms: float = 5.0
    deterministic: bool = False
    gpus_per_replica: float | None = None  # None: 1 if the cluster has GPUs, else 0
    cpus_per_replica: float = 1.0


@dataclass(frozen=True)
class RunOptions:
    workers: int = 2
    cpus_per_worker: float = 1.0
    max_attempts: int = 2


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
        if serving["deterministic"]:  # then batching and placement cannot change results
            data["serving"] = {"deterministic": True, "max_batch": serving["max_batch"]}
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# -- validation helpers ---------------------------------------------------------------------------
def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise SpecError(f"{where}{key}", f"unknown key; allowed keys here: {', '.join(allowed)}")


def _require(table: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise SpecError(f"{where}{key}", "missing (required)")
    return table[key]


def _int(value: Any, key: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(key, f"must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise SpecError(key, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SpecError(key, f"must be <= {maximum}, got {value}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(key, f"must be true or false, got {value!r}")
    return value


def _choice(value: Any, key: str, allowed: tuple[str, ...] | list[str]) -> str:
    if value not in allowed:
        raise SpecError(key, f"unknown value {value!r}; allowed: {', '.join(allowed)}")
    return value


def _tasks(value: Any, n_tasks: int, suite: str, names: tuple[str, ...] = ()) -> tuple[int, ...]:
    """Task ids from "all" or a list of ids (or, where the suite has `names`, task names)."""
    if value == "all":
        return tuple(range(n_tasks))
    if not isinstance(value, list) or not value:
        raise SpecError("env.tasks", f'must be "all" or a non-empty list of task {"names or " if names else ""}ids, '
                                     f"got {value!r}")
    ids = []
    for v in value:
        if names and isinstance(v, str):
            if v not in names:
                raise SpecError("env.tasks", f"unknown task {v!r} in suite {suite}; allowed: {', '.join(names)}")
            v = names.index(v)
        else:
            _int(v, "env.tasks")
        if not 0 <= v < n_tasks:
            raise SpecError("env.tasks", f"task id {v} out of range: {suite} has tasks 0..{n_tasks - 1}")
        ids.append(v)
    if len(set(ids)) != len(ids):
        raise SpecError("env.tasks", f"duplicate tasks in {value!r}")
    return tuple(ids)


def _cameras(value: Any, allowed: tuple[str, ...], where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        raise SpecError("env.cameras", f"must be a non-empty list of camera names, got {value!r}")
    unknown = [c for c in value if c not in allowed]
    if unknown:
        raise SpecError("env.cameras", f"unknown camera {unknown[0]!r} for {where}; allowed: {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise SpecError("env.cameras", f"duplicate cameras in {value!r}")
    return tuple(value)


ENV_KEYS = ("family", "suite", "tasks", "trials", "image_size", "render_cameras", "render_steps", "reset", "max_steps",
            "cameras")


def _env_spec(table: Any) -> EnvSpec:
    if not isinstance(table, dict):
        raise SpecError("env", "must be a table ([env])")
    where = "env."
    _check_keys(table, ENV_KEYS, where)
    family = _choice(_require(table, "family", where), "env.family", ENV_FAMILIES)
    if family == "robosuite":
        return _robosuite_env_spec(table)
    if family == "robocasa":
        return _robocasa_env_spec(table)
    if "cameras" in table:
        raise SpecError("env.cameras", "LIBERO renders agentview and robot0_eye_in_hand (fixed); "
                                       "env.cameras is for the robosuite and robocasa families")
    suite_name = _choice(_require(table, "suite", where), "env.suite", list(LIBERO_SUITES))
    suite = LIBERO_SUITES[suite_name]
    max_steps = table.get("max_steps")
    return EnvSpec(
        family=family,
        suite=suite_name,
        tasks=_tasks(_require(table, "tasks", where), suite.n_tasks, suite_name),
        trials=_int(_require(table, "trials", where), "env.trials", 1, TRIALS_PER_INIT_FILE),
        image_size=_int(table.get("image_size", 256), "env.image_size", 32, 1024),
        render_cameras=_bool(table.get("render_cameras", True), "env.render_cameras"),
        render_steps=_choice(table.get("render_steps", "observed"), "env.render_steps", RENDER_STEPS),
        reset=_choice(table.get("reset", "hard"), "env.reset", RESET_MODES),
        max_steps=None if max_steps is None else _int(max_steps, "env.max_steps", 1, 990),
    )


def _robosuite_env_spec(table: Mapping[str, Any]) -> EnvSpec:
    """family "robosuite": robosuite 1.5 tasks by name; trial i's initial state comes from its seed."""
    suite_name = _choice(table.get("suite", robosuite_tasks.DEFAULT_SUITE), "env.suite",
                         list(robosuite_tasks.ROBOSUITE_SUITES))
    suite = robosuite_tasks.ROBOSUITE_SUITES[suite_name]
    tasks = _tasks(_require(table, "tasks", "env."), len(suite.tasks), suite_name, suite.task_names)
    allowed = tuple(c for c in suite.tasks[tasks[0]].cameras if all(c in suite.tasks[t].cameras for t in tasks))
    where = f"task{'s' if len(tasks) > 1 else ''} {', '.join(suite.tasks[t].name for t in tasks)}"
    max_steps = table.get("max_steps")
    return EnvSpec(
        family="robosuite",
        suite=suite_name,
        tasks=tasks,
        trials=_int(_require(table, "trials", "env."), "env.trials", 1, MAX_TRIALS_SEEDED),
        image_size=_int(table.get("image_size", 256), "env.image_size", 32, 1024),
        render_cameras=_bool(table.get("render_cameras", True), "env.render_cameras"),
        render_steps=_choice(table.get("render_steps", "observed"), "env.render_steps", RENDER_STEPS),
        reset=_choice(table.get("reset", "hard"), "env.reset", RESET_MODES),
        max_steps=None if max_steps is None else _int(max_steps, "env.max_steps", 1, MAX_STEPS_SEEDED),
        cameras=_cameras(table.get("cameras", list(robosuite_tasks.DEFAULT_CAMERAS)), allowed, where),
    )


def _robocasa_env_spec(table: Mapping[str, Any]) -> EnvSpec:
    """family "robocasa": RoboCasa's atomic tasks by name, with its protocol's scenes, cameras and limits."""
    suite_name = _choice(table.get("suite", robocasa_tasks.SUITE), "env.suite", list(robocasa_tasks.ROBOCASA_SUITES))
    tasks = robocasa_tasks.ROBOCASA_SUITES[suite_name]
    reset = _choice(table.get("reset", "hard"), "env.reset", RESET_MODES)
    if reset != "hard":
        raise SpecError("env.reset", "robocasa builds a fresh kitchen for every episode (the reference protocol); "
                                     "only 'hard' applies")
    max_steps = table.get("max_steps")
    allowed = robocasa_tasks.CAMERAS + robocasa_tasks.OTHER_CAMERAS
    return EnvSpec(
        family="robocasa",
        suite=suite_name,
        tasks=_tasks(_require(table, "tasks", "env."), len(tasks), suite_name, tuple(t.name for t in tasks)),
        trials=_int(_require(table, "trials", "env."), "env.trials", 1, MAX_TRIALS_SEEDED),
        image_size=_int(table.get("image_size", robocasa_tasks.IMAGE_SIZE), "env.image_size", 32, 1024),
        render_cameras=_bool(table.get("render_cameras", True), "env.render_cameras"),
        render_steps=_choice(table.get("render_steps", "observed"), "env.render_steps", RENDER_STEPS),
        reset=reset,
        max_steps=None if max_steps is None else _int(max_steps, "env.max_steps", 1, MAX_STEPS_SEEDED),
        cameras=_cameras(table.get("cameras", list(robocasa_tasks.CAMERAS)), allowed, "robocasa"),
    )


def _policy_spec(table: Any, family: str) -> PolicySpec:
    from robofleet.policies.registry import available_policies

    if not isinstance(table, dict):
        raise SpecError("policy", "must be a table ([policy])")
    name = _choice(_require(table, "name", "policy."), "policy.name", available_policies())
    open_loop = table.get("open_loop_steps")
    options = {k: v for k, v in table.items() if k not in ("name", "open_loop_steps")}
    return PolicySpec(
        name=name,
        open_loop_steps=None if open_loop is None else _int(open_loop, "policy.open_loop_steps", 1),
        options=options,
    )


def _planner_spec(table: Any) -> PlannerSpec:
    from robofleet.planners.registry import PLANNERS, validate_planner_options

    if not isinstance(table, dict):
        raise SpecError("planner", "must be a table ([planner])")
    name = _choice(table.get("name", "direct"), "planner.name", PLANNERS)
    options = {k: v for k, v in table.items() if k != "name"}
    return PlannerSpec(name=name, options=validate_planner_options(name, options))


def _number(value: Any, key: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise SpecError(key, f"must be a number >= {minimum}, got {value!r}")
    return float(value)


def _serving_spec(table: Any) -> ServingSpec:
    if not isinstance(table, dict):
        raise SpecError("serving", "must be a table ([serving])")
    _check_keys(table, ("replicas", "max_batch", "max_wait_ms", "deterministic", "gpus_per_replica",
                        "cpus_per_replica"), "serving.")
    gpus = table.get("gpus_per_replica")
    return ServingSpec(
        replicas=_int(table.get("replicas", 0), "serving.replicas", 0, 1024),
        max_batch=_int(table.get("max_batch", 8), "serving.max_batch", 1, 4096),
        max_wait_ms=_number(table.get("max_wait_ms", 5.0), "serving.max_wait_ms", 0.0),
        deterministic=_bool(table.get("deterministic", False), "serving.deterministic"),
        gpus_per_replica=None if gpus is None else _number(gpus, "serving.gpus_per_replica", 0.0),
        cpus_per_replica=_number(table.get("cpus_per_replica", 1.0), "serving.cpus_per_replica", 0.0),
    )


def _run_options(table: Any) -> RunOptions:
    if not isinstance(table, dict):
        raise SpecError("run", "must be a table ([run])")
    _check_keys(table, ("workers", "cpus_per_worker", "max_attempts"), "run.")
    cpus = table.get("cpus_per_worker", 1.0)
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus <= 0:
        raise SpecError("run.cpus_per_worker", f"must be a number > 0, got {cpus!r}")
    return RunOptions(
        workers=_int(table.get("workers", 2), "run.workers", 1, 1024),
        cpus_per_worker=float(cpus),
        max_attempts=_int(table.get("max_attempts", 2), "run.max_attempts", 1, 10),
    )


def spec_from_dict(data: Mapping[str, Any]) -> RunSpec:
    """Validate a parsed TOML document into a RunSpec; SpecError names the first bad key."""
    _check_keys(data, ("seed", "name", "protocol", "env", "policy", "planner", "serving", "run"), "")
    env = _env_spec(_require(data, "env", ""))
    spec = RunSpec(
        protocol=_protocol(data.get("protocol", default_protocol(env.family)), env.family),
        seed=_int(_require(data, "seed", ""), "seed", 0, 2**32 - 1),
        env=env,
        policy=_policy_spec(_require(data, "policy", ""), env.family),
        planner=_planner_spec(data.get("planner", {"name": "direct"})),
        run=_run_options(data.get("run", {})),
        serving=_serving_spec(data.get("serving", {})),
        name=run_name(data.get("name", "")),
    )
    from robofleet.platform.policy_context import validate_spec_policy

    validate_spec_policy(spec, check_files=False)  # the policy's own rules (options, tasks it supports)
    return spec


def _protocol(value: Any, family: str) -> str:
    _choice(value, "protocol", PROTOCOLS)
    allowed = protocols_of_family(family)
    if value not in allowed:
        raise SpecError("protocol", f"{value!r} does not apply to env family {family!r} (it has no reference "
                                    f"evaluation to follow); allowed: {', '.join(allowed)}")
    return value


def run_name(name: Any, key: str = "name") -> str:
    """A run's name: it becomes the default output directory runs/<name>, so it must stay inside runs/
    (relative, no `..`; `/` nests, as sweeps' `<sweep>/<point>` names do)."""
    if not isinstance(name, str):
        raise SpecError(key, f"must be a string, got {name!r}")
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "~")) or ".." in parts or "\0" in name or (name and not all(parts)):
        raise SpecError(key, f"{name!r} would put the run outside runs/ (default output directory runs/<name>): "
                             "use a relative name without '..', empty parts or a leading '/' or '~'")
    return name


def load_spec(path: str | Path) -> RunSpec:
    """Read and validate a TOML spec file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError("spec", f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError("spec", f"{path} is not valid TOML: {exc}") from exc
    return spec_from_dict(data)


def dump_spec_toml(spec: RunSpec) -> str:
    """The frozen spec as TOML (the run directory keeps it; `robofleet run` on it reproduces the run)."""
    d = spec.to_dict()
    policy = {"name": d["policy"]["name"], "open_loop_steps": d["policy"]["open_loop_steps"], **d["policy"]["options"]}
    planner = {"name": d["planner"]["name"], **d["planner"]["options"]}
    doc = {"seed": d["seed"], "name": d["name"], "protocol": d["protocol"], "env": d["env"], "policy": policy, "planner": planner,
           "serving": d["serving"], "run": d["run"]}
    return tomli_w.dumps(_drop_none(doc))


def _drop_none(value: Any) -> Any:
    """TOML has no null: absent keys mean "the default"."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value
