"""Privileged scripted expert for LIBERO pick-and-place: reads simulator state, emits delta-EEF actions.

Task Description:
    Pick the object named by a goal predicate and put it on / in its target: approach from above
    with the fingers pre-shaped, descend, close, lift to a safe height, carry the object over the
    target (coming down a cone as it nears it), lower it and open the gripper. The hand points
    straight down throughout (a quaternion-error term holds it); its only rotation is a quarter
    turn about the vertical for bowls, which are grasped by their rim on the robot's side.
    Grasp points are chosen from per-category geometry (`scripted_shapes`), kept clear of the
    neighbouring objects and within the arm's reach (Panda kinematics, `scripted_kinematics`).
    Multi-predicate goals ("put both X and Y in the basket") are served one predicate at a time,
    in the BDDL order, skipping those that already look satisfied.

    `predict` is a pure function of the observation: no per-episode phase state. The phase
    (approach, descend, grasp, lift, transport, place, release, retreat) is re-derived every step
    from the privileged state: eef pose, joint angles and velocities, finger gap and velocity, the
    object's pose relative to its grasp points and to the target. Seeds are ignored (deterministic).

Supported goals:
    - `(On <object> <target object>)`: libero_spatial, all 10 tasks (`On akita_black_bowl_1
      plate_1`); libero_goal "put the bowl on the plate", "put the cream cheese in the bowl".
    - `(In <object> <object>_<region>)` for tabulated regions (`basket_1_contain_region`):
      libero_object, all 10 tasks; libero_10 "put both ... in the basket".
    - Conjunctions of the above.
    The object to pick must be in the observation (`<name>_pos`); categories missing from
    `scripted_shapes.SHAPES` are treated as a 10 cm tall box grasped from the top.
    Not supported (UnsupportedGoalError at predict time, naming the predicate): Open, Close,
    TurnOn, TurnOff and any other predicate; targets that are fixtures or fixture regions
    (`flat_stove_1_cook_region`, `wooden_cabinet_1_top_side`, `wine_rack_1_top_region`, ...),
    which the observation does not locate; regions of objects that are not tabulated
    (`desk_caddy_1_back_contain_region`).

Success Conditions:
    LIBERO's own: `On A B` holds when A's origin is within 3 cm of B's in x-y, not below it, and A
    touches B; `In A R` holds when A's origin lies in the box R (1 cm slack below). The expert aims
    the object's origin at the target's x-y centre and releases within 2.5 cm of it, about 1 cm
    above the resting surface (into the basket: with the palm above the rim).

Example:
    policy = make_scripted({"speed": 1.0}, "libero")
    prediction = policy.predict([obs], [0])[0]   # prediction.actions: (1, 7) float32
    prediction.stats                             # {"phase": "lift", "predicate": "in ..."}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from robofleet.envs.contract import Observation
from robofleet.platform.config_fields import from_table, number, setting
from robofleet.platform.errors import RobofleetError, SpecError
from robofleet.policies.contract import StepwiseExpert
from robofleet.policies.scripted_kinematics import MAX_REACH, base_position, eef_velocity, reach
from robofleet.policies.scripted_shapes import Shape, region_box, region_of, shape_of

ACTION_DIM = 7
SUPPORTED_PREDICATES = ("on", "in")

# Hand orientation held throughout (xyzw): gripper pointing down, fingers closing along world y.
DOWN_QUAT = (1.0, 0.0, 0.0, 0.0)
POS_SCALE = 0.05  # metres per unit of position action (OSC_POSE output_max)
ROT_SCALE = 0.5  # radians per unit of rotation action
# Position command: delta = POS_GAIN * error - VEL_DAMPING * eef velocity (m, m/s -> m). The
# controller lags (~1 cm/step at full command) and overshoots ~1 cm without the damping term.
POS_GAIN = 1.5
VEL_DAMPING = 0.1  # s
WRIST_LIMIT = 2.8973  # rad, |joint 7| of the Panda
OPEN, CLOSE = -1.0, 1.0
PLACED_XY = 0.025  # m: an object this close (x-y) to its target and low counts as placed
FULL_OPEN = 0.078  # finger gap (m) of the fully open gripper
SHAPED = 0.006  # m: the gap counts as pre-shaped within this of the wanted one


class UnsupportedGoalError(RobofleetError):
    """The goal contains a predicate the scripted expert cannot achieve."""


@dataclass(frozen=True)
class ScriptedConfig:
    """Tunables of the scripted expert (the `[policy]` table's options)."""

    # cap on |position action| in (0, 1]; 1.0 moves up to ~1.2 cm per step
    speed: float = setting(1.0, number, minimum=0.05, maximum=1.0)
    # m the carried object's bottom clears the target rim and obstacles by
    clearance: float = setting(0.05, number, minimum=0.0, maximum=0.3)
    # m above the target's base the object's bottom travels at (clears fixtures the observation does
    # not show: the cabinet top is 0.22 m above the table)
    safe_height: float = setting(0.25, number, minimum=0.0, maximum=0.4)
    # m above the grasp point where the descent starts
    approach_height: float = setting(0.08, number, minimum=0.02, maximum=0.3)

    @staticmethod
    def from_options(options: Mapping[str, Any]) -> "ScriptedConfig":
        """Validate `[policy]` options; SpecError names the key, the value and what is allowed."""
        return from_table(ScriptedConfig, options, "policy.",
                          unknown="unknown option for policy 'scripted'; allowed: {allowed}")


# -- the goal, resolved against the observation -------------------------------------------------
@dataclass(frozen=True)
class PlaceGoal:
    """One pick-and-place predicate located in the current observation (world frame, metres).

    obj: name of the object to move; shape: its geometry.
    target_xy: (2,) where the object's origin should end up in x-y.
    surface_z: z of the surface the object will rest on; rim_z: z its bottom must clear on the way;
    base_z: z of the target's base (the table or floor it stands on).
    box: for `In` region goals, (centre (3,), half extents (3,)) of the region; else None.
    target_z: z of the target object's origin (LIBERO's `On` wants the object not below it).
    """

    predicate: tuple[str, str, str]
    obj: str
    shape: Shape
    target_xy: np.ndarray
    surface_z: float
    rim_z: float
    base_z: float
    target_z: float
    box: tuple[np.ndarray, np.ndarray] | None


def _object_names(priv: Mapping[str, Any]) -> list[str]:
    return [
        k[: -len("_pos")]
        for k in priv
        if k.endswith("_pos") and not k.startswith("robot0_") and "_to_robot0_" not in k
    ]


def _rotation(priv: Mapping[str, Any], name: str) -> np.ndarray:
    quat = priv.get(f"{name}_quat")
    return np.eye(3) if quat is None else Rotation.from_quat(np.asarray(quat, dtype=np.float64)).as_matrix()


def resolve_goal(predicate: Sequence[str], priv: Mapping[str, Any]) -> PlaceGoal:
    """Locate predicate `(on|in, object, target)` in the privileged state; UnsupportedGoalError if it
    is not a pick-and-place predicate or its object/target cannot be located."""
    pred = tuple(str(p).lower() for p in predicate)
    text = "(" + " ".join(pred) + ")"
    if len(pred) != 3 or pred[0] not in SUPPORTED_PREDICATES:
        raise UnsupportedGoalError(
            f"scripted expert cannot achieve goal predicate {text}; it supports only "
            f"{' / '.join(SUPPORTED_PREDICATES)} pick-and-place predicates"
        )
    _, obj, target = pred
    if f"{obj}_pos" not in priv:
        raise UnsupportedGoalError(f"goal predicate {text}: object {obj!r} is not in the observation")
    if f"{target}_pos" in priv:
        tpos = np.asarray(priv[f"{target}_pos"], dtype=np.float64)
        tshape = shape_of(target)
        surface = tpos[2] + (tshape.surface if tshape.surface is not None else tshape.top)
        return PlaceGoal(
            pred, obj, shape_of(obj), tpos[:2].copy(), surface, tpos[2] + tshape.top, tpos[2] + tshape.bottom, tpos[2], None
        )
    owners = [n for n in _object_names(priv) if target.startswith(n + "_")]
    if not owners:
        raise UnsupportedGoalError(
            f"goal predicate {text}: target {target!r} is a fixture or fixture region the observation "
            "does not locate"
        )
    owner = max(owners, key=len)
    region = region_of(owner, target[len(owner) + 1 :])
    if region is None:
        raise UnsupportedGoalError(f"goal predicate {text}: region {target!r} of {owner!r} is not tabulated")
    tpos = np.asarray(priv[f"{owner}_pos"], dtype=np.float64)
    tshape = shape_of(owner)
    center, half = region_box(region, tpos, _rotation(priv, owner))
    surface = tpos[2] + (tshape.surface if tshape.surface is not None else region.center[2] - region.half_size[2])
    return PlaceGoal(
        pred, obj, shape_of(obj), center[:2], surface, tpos[2] + tshape.top, tpos[2] + tshape.bottom, tpos[2], (center, half)
    )


def goal_satisfied(goal: PlaceGoal, priv: Mapping[str, Any]) -> bool:
    """An approximation of LIBERO's predicate from poses alone (contacts are not observed); `On`
    is taken within PLACED_XY (LIBERO: 3 cm)."""
    pos = np.asarray(priv[f"{goal.obj}_pos"], dtype=np.float64)
    if goal.box is not None:
        center, half = goal.box
        lo, hi = center - half, center + half
        lo[2] -= 0.01
        return bool(np.all(pos > lo) and np.all(pos < hi))
    bottom = pos[2] + goal.shape.bottom
    return bool(
        np.linalg.norm(pos[:2] - goal.target_xy) < PLACED_XY and pos[2] >= goal.target_z and bottom < goal.surface_z + 0.03
    )


# -- geometry helpers ----------------------------------------------------------------------------
# The hand around the eef point with the gripper pointing down, at yaw 0 (fingers closing along
# world y), in metres: the palm starts ~3.5 cm above the eef and spans about +-3.5 cm across and
# +-10.5 cm along the closing axis; the open fingers reach ~0.5 cm below the eef and span +-1.2 cm
# across and +-4.5 cm along it. At yaw pi/2 the fingers close along world x.
PALM_ABOVE_EEF = 0.035
HAND_HALF = (0.035, 0.105)
FINGERS_BELOW_EEF = 0.005
FINGER_HALF_THICKNESS = 0.008
FINGERS_ACROSS = 0.012
YAW_X = np.pi / 2  # hand yaw (rad) at which the fingers close along world x


@dataclass(frozen=True)
class Grasp:
    """An eef position (3,) in metres and the hand yaw (rad, 0: fingers close along world y)."""

    point: np.ndarray
    yaw: float = 0.0


def _footprint(half: tuple[float, float], yaw: float) -> tuple[float, float]:
    return half if abs(np.sin(yaw)) < 0.5 else (half[1], half[0])


def _rect_gap(center: np.ndarray, half: tuple[float, float], point: np.ndarray, radius: float) -> float:
    """x-y distance (m, negative = overlap) between an axis-aligned rectangle and a disc."""
    d = np.abs(point[:2] - center[:2]) - np.asarray(half)
    outside = float(np.linalg.norm(np.maximum(d, 0.0)))
    return (outside if outside > 0.0 else float(np.max(d))) - radius


def pregrasp_width(shape: Shape) -> float:
    """Finger gap (m) to descend with."""
    return FULL_OPEN if shape.pregrasp is None else shape.pregrasp


def hand_clearance(grasp: Grasp, goal: PlaceGoal, priv: Mapping[str, Any]) -> float:
    """Smallest x-y gap (m, negative = collision) between the pre-shaped hand at `grasp` and the
    other objects tall enough to reach its palm or fingers (the object and the target excluded)."""
    gap = np.inf
    target = goal.predicate[2]
    along = pregrasp_width(goal.shape) / 2 + FINGER_HALF_THICKNESS
    hand, fingers = _footprint(HAND_HALF, grasp.yaw), _footprint((FINGERS_ACROSS, along), grasp.yaw)
    for name in _object_names(priv):
        if name == goal.obj or target.startswith(name):
            continue
        shape = shape_of(name)
        pos = np.asarray(priv[f"{name}_pos"], dtype=np.float64)
        top = pos[2] + shape.top
        if top > grasp.point[2] + PALM_ABOVE_EEF:
            gap = min(gap, _rect_gap(grasp.point, hand, pos, shape.radius))
        if top > grasp.point[2] - FINGERS_BELOW_EEF:
            gap = min(gap, _rect_gap(grasp.point, fingers, pos, shape.radius))
    return gap


def grasp_candidates(goal: PlaceGoal, obj_pos: np.ndarray) -> list[Grasp]:
    """Candidate grasps, most preferred first.

    Rim grasps straddle the wall: first at -x, the robot's side, with the hand turned so the
    fingers close along x (nearest the shoulder, and in the cabinet drawer the side walls leave
    the widest gaps); then at +y / -y (the side facing the target first); last at +x.
    Top grasps: the centre line, then points slid along x up to `shape.slide`.
    """
    shape = goal.shape
    if shape.grasp == "rim":
        z = obj_pos[2] + shape.top - 0.017
        r = shape.rim_radius - 0.004  # a little inward: the outer finger has the narrower gap
        toward = 1.0 if goal.target_xy[1] >= obj_pos[1] else -1.0
        return [
            Grasp(np.array([obj_pos[0] - r, obj_pos[1], z]), YAW_X),
            Grasp(np.array([obj_pos[0], obj_pos[1] + toward * r, z])),
            Grasp(np.array([obj_pos[0], obj_pos[1] - toward * r, z])),
            Grasp(np.array([obj_pos[0] + r, obj_pos[1], z]), YAW_X),
        ]
    z = obj_pos[2] + shape.top - min(0.025, 0.5 * shape.height)
    offsets = sorted(np.linspace(-shape.slide, shape.slide, 9), key=abs) if shape.slide > 0 else [0.0]
    return [Grasp(np.array([obj_pos[0] + dx, obj_pos[1], z])) for dx in offsets]


def choose_grasp(goal: PlaceGoal, obj_pos: np.ndarray, priv: Mapping[str, Any], cfg: ScriptedConfig) -> Grasp:
    """The most preferred candidate that is within the arm's reach and whose hand clears the
    neighbouring objects by 1 cm; else the clear one nearest the shoulder; else the clearest."""
    candidates = grasp_candidates(goal, obj_pos)
    clearances = [hand_clearance(c, goal, priv) for c in candidates]
    joints = priv.get("robot0_joint_pos")
    if joints is None:
        reaches = [0.0] * len(candidates)
    else:
        base = base_position(joints, priv["robot0_eef_pos"])
        above = np.array([0.0, 0.0, cfg.approach_height])  # the descent starts there
        reaches = [max(reach(base, c.point), reach(base, c.point + above)) for c in candidates]
    clear = [(c, r) for c, gap, r in zip(candidates, clearances, reaches) if gap >= 0.01]
    for c, r in clear:
        if r <= MAX_REACH:
            return c
    if clear:
        return min(clear, key=lambda cr: cr[1])[0]
    return candidates[int(np.argmax(clearances))]


def hand_yaw(quat_xyzw: np.ndarray) -> float:
    """Yaw (rad, in [-pi, pi]) of a down-pointing hand: the angle about world z that takes
    DOWN_QUAT to it (0: fingers close along world y; pi/2: along world x)."""
    axis = Rotation.from_quat(np.asarray(quat_xyzw, dtype=np.float64)).as_matrix()[:, 1]
    return float(np.arctan2(axis[0], -axis[1]))


def _yaw_error(target: float, current: float) -> float:
    """Signed yaw error (rad) modulo pi: the gripper is symmetric under a half turn."""
    return float((target - current + np.pi / 2) % np.pi - np.pi / 2)


def _corridor_top(goal: PlaceGoal, priv: Mapping[str, Any], start: np.ndarray, end: np.ndarray) -> float:
    """Highest top (z, m) among other objects whose footprint is near the segment start -> end (x-y)."""
    best = -np.inf
    seg = end - start
    length2 = float(seg @ seg)
    target_owner = goal.predicate[2]
    for name in _object_names(priv):
        if name == goal.obj or target_owner.startswith(name):
            continue
        pos = np.asarray(priv[f"{name}_pos"], dtype=np.float64)
        t = 0.0 if length2 < 1e-9 else float(np.clip((pos[:2] - start) @ seg / length2, 0.0, 1.0))
        dist = np.linalg.norm(pos[:2] - (start + t * seg))
        shape = shape_of(name)
        if dist < shape.radius + goal.shape.radius + 0.02:
            best = max(best, pos[2] + shape.top)
    return best


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at x <= lo, 1 at x >= hi, linear between."""
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


# -- the expert ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """A decided step.

    target: eef position (3,) in metres; yaw: hand yaw (rad) to hold; gripper: -1 open, +1 close;
    phase: name for logs; xy_gate in [0, 1] scales sideways motion (0 while rising first);
    z_speed in (0, 1] scales vertical motion (slow near objects).
    """

    target: np.ndarray
    yaw: float
    gripper: float
    phase: str
    xy_gate: float = 1.0
    z_speed: float = 1.0


def decide(goal: PlaceGoal, priv: Mapping[str, Any], cfg: ScriptedConfig) -> Command:
    """The phase and eef target for one step, from the privileged state alone."""
    eef = np.asarray(priv["robot0_eef_pos"], dtype=np.float64)
    yaw = hand_yaw(priv["robot0_eef_quat"])
    qpos = np.asarray(priv["robot0_gripper_qpos"], dtype=np.float64)
    qvel = np.asarray(priv["robot0_gripper_qvel"], dtype=np.float64)
    width = float(qpos[0] - qpos[1])
    opening, closing = qvel[0] > 0.02, qvel[0] < -0.02
    obj = np.asarray(priv[f"{goal.obj}_pos"], dtype=np.float64)

    pregrasp = pregrasp_width(goal.shape)
    # Holding: the fingers are (being) closed and the eef sits at one of the object's grasp points.
    nearest = min(grasp_candidates(goal, obj), key=lambda g: float(np.linalg.norm(eef - g.point)))
    rel0 = eef - nearest.point
    # Loose: a bowl held by its rim tilts and swings about the fingers while carried.
    in_hand = float(np.linalg.norm(rel0[:2])) < 0.03 and abs(rel0[2]) < 0.045
    # Closed below the pre-grasp gap (by more than the pre-shaping slop): grasping or holding.
    # Full-open pre-grasps leave a small margin: a 6.6 cm can holds the fingers at 6.4 cm.
    closed_gap = FULL_OPEN - 0.008 if goal.shape.pregrasp is None else pregrasp - 0.015
    if in_hand and width < closed_gap and not opening:
        hold_yaw = yaw + _yaw_error(nearest.yaw, yaw) if abs(_yaw_error(nearest.yaw, yaw)) < 0.3 else yaw
        if closing:
            return Command(eef, hold_yaw, CLOSE, "grasp")
        return _carry(goal, priv, cfg, eef, obj, hold_yaw)

    # Not holding: approach from above, descend with the fingers pre-shaped, close at the grasp point.
    grasp = choose_grasp(goal, obj, priv, cfg)
    rel = eef - grasp.point
    dxy = float(np.linalg.norm(rel[:2]))
    aligned = abs(_yaw_error(grasp.yaw, yaw)) < 0.1
    shaped = width >= FULL_OPEN - SHAPED if goal.shape.pregrasp is None else abs(width - pregrasp) < SHAPED
    shaped = shaped and not (opening or closing)
    if dxy < 0.01 and abs(rel[2]) < 0.012 and aligned and (shaped or closing):
        return Command(grasp.point, grasp.yaw, CLOSE, "grasp")
    gripper = _shape_fingers(width, float(qvel[0]), pregrasp)
    hover = cfg.approach_height * _ramp(dxy, 0.004, 0.02)  # fully down only when within 4 mm
    if not shaped or not aligned:
        hover = max(hover, 0.04)  # never lower closed or misaligned fingers onto the object
    target = grasp.point + np.array([0.0, 0.0, hover])
    gate = 1.0 - _ramp(target[2] - eef[2], 0.02, 0.05)  # rise before moving sideways
    phase = "descend" if dxy < 0.03 else "approach"
    z_speed = 0.5 if dxy < 0.03 and eef[2] - grasp.point[2] < 0.05 else 1.0
    return Command(target, grasp.yaw, gripper, phase, gate, z_speed)


def _shape_fingers(width: float, finger_speed: float, wanted: float) -> float:
    """Gripper command that brings the finger gap to `wanted` (m) and holds it there.

    The command is incremental: each non-zero step moves the fingers' set-point by about 1 cm of
    gap and 0 holds it, while the fingers lag the set-point by a few steps. So: one pulse, wait
    until the fingers stop (finger_speed, m/s, ~0), repeat while the gap is more than 6 mm off.
    """
    if wanted >= FULL_OPEN - SHAPED:
        return OPEN
    if abs(finger_speed) > 0.01:
        return 0.0
    if width > wanted + SHAPED:
        return CLOSE
    if width < wanted - SHAPED:
        return OPEN
    return 0.0


def _carry(
    goal: PlaceGoal, priv: Mapping[str, Any], cfg: ScriptedConfig, eef: np.ndarray, obj: np.ndarray, yaw: float
) -> Command:
    """Lift, transport, lower and release a held object (eef targets derived from the object's pose)."""
    bottom = obj[2] + goal.shape.bottom
    hang = eef[2] - bottom  # eef height above the object's bottom while held
    d_vec = goal.target_xy - obj[:2]
    d = float(np.linalg.norm(d_vec))
    # Release low enough to drop gently, high enough that the palm (~4 cm above the eef) clears the rim.
    release_bottom = max(goal.surface_z + 0.01, goal.rim_z - 0.02 - hang)
    obstacles = max(goal.rim_z, _corridor_top(goal, priv, obj[:2], goal.target_xy)) + cfg.clearance
    # Cruise at the safe height far from the target, then come down a 45-degree cone toward it: a
    # high carry near the target would stretch the arm to its singular, straight-elbow pose.
    cone = release_bottom + d
    transport_bottom = max(obstacles, min(goal.base_z + cfg.safe_height, cone), release_bottom)
    want_bottom = release_bottom + (transport_bottom - release_bottom) * _ramp(d, 0.012, 0.04)
    target = np.array([eef[0] + d_vec[0], eef[1] + d_vec[1], eef[2] + (want_bottom - bottom)])
    stalled = float(np.linalg.norm(_eef_velocity(priv))) < 0.01
    # (surface + 4 cm covers goal_satisfied's zone, so "placed -> open" is never answered by a re-close)
    low = bottom < max(release_bottom + 0.02, goal.surface_z + 0.04) or (bottom < goal.surface_z + 0.06 and stalled)
    if d < PLACED_XY and low:
        # Over the target and low, or stalled just above it (a tilted object touching down): let
        # go. The zone is wider than where the descent aims, so a release is not taken back.
        return Command(target, yaw, OPEN, "release")
    if d >= 0.04:
        if bottom < transport_bottom - 0.02:
            gate = _ramp(bottom, transport_bottom - 0.05, transport_bottom - 0.02)
            target[:2] = eef[:2] + gate * d_vec
            if goal.shape.grasp == "rim":
                # Drift toward the grasped wall while rising: a bowl then leaves a drawer or the
                # edge of a cabinet top over the wall it hangs from, not over the far one.
                out = eef[:2] - obj[:2]
                target[:2] += (1.0 - gate) * 0.01 * out / max(float(np.linalg.norm(out)), 1e-6)
            return Command(target, yaw, CLOSE, "lift")
        return Command(target, yaw, CLOSE, "transport")
    return Command(target, yaw, CLOSE, "place", 1.0, 0.6)


def _eef_velocity(priv: Mapping[str, Any]) -> np.ndarray:
    """(3,) eef velocity in m/s from the joint state; zeros when the observation lacks it."""
    if "robot0_joint_pos" not in priv or "robot0_joint_vel" not in priv:
        return np.zeros(3)
    return eef_velocity(priv["robot0_joint_pos"], priv["robot0_joint_vel"])


def _retreat(priv: Mapping[str, Any]) -> Command:
    """Every goal looks achieved: open the gripper and rise 5 cm (LIBERO ends the episode on success)."""
    eef = np.asarray(priv["robot0_eef_pos"], dtype=np.float64)
    return Command(eef + np.array([0.0, 0.0, 0.05]), hand_yaw(priv["robot0_eef_quat"]), OPEN, "retreat")


def _yaw_goal(yaw: float, quat: np.ndarray, joints: np.ndarray | None) -> float:
    """The hand yaw to turn to: `yaw` or `yaw + pi` (the same grasp for a symmetric gripper),
    whichever is the shorter turn, unless it would drive the wrist (joint 7, which turns the hand
    about the vertical: d joint7 ~ -d yaw) toward its limit while the other stays central."""
    current = hand_yaw(quat)
    near = current + _yaw_error(yaw, current)
    far = near - np.pi if near >= current else near + np.pi
    if joints is None:
        return near
    wrist = float(np.asarray(joints)[6])

    def cost(goal: float) -> float:
        predicted = wrist - (goal - current)
        return abs(goal - current) + 0.5 * abs(predicted) / WRIST_LIMIT + 4.0 * max(0.0, abs(predicted) - 2.3)

    return near if cost(near) <= cost(far) else far


def to_action(cmd: Command, priv: Mapping[str, Any], cfg: ScriptedConfig) -> np.ndarray:
    """(7,) float32 action in [-1, 1]: delta position toward cmd.target (damped, capped at
    cfg.speed), rotation toward DOWN_QUAT turned by cmd.yaw about z, gripper command."""
    eef = np.asarray(priv["robot0_eef_pos"], dtype=np.float64)
    delta = POS_GAIN * (cmd.target - eef) - VEL_DAMPING * _eef_velocity(priv)
    pos = delta / POS_SCALE
    pos[:2] *= cmd.xy_gate
    pos[2] *= cmd.z_speed
    peak = float(np.max(np.abs(pos)))
    if peak > cfg.speed:
        pos *= cfg.speed / peak
    quat = np.asarray(priv["robot0_eef_quat"], dtype=np.float64)
    goal = Rotation.from_euler("z", _yaw_goal(cmd.yaw, quat, priv.get("robot0_joint_pos"))) * Rotation.from_quat(DOWN_QUAT)
    rot = (goal * Rotation.from_quat(quat).inv()).as_rotvec() / ROT_SCALE
    rot = np.clip(rot, -1.0, 1.0)
    return np.concatenate([pos, rot, [cmd.gripper]]).astype(np.float32)


def plan_step(obs: Observation, cfg: ScriptedConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """One action (7,) float32 for `obs`, and JSON-able facts (phase, active predicate)."""
    priv = obs.privileged
    goals = [resolve_goal(p, priv) for p in priv.get("goal", [])]
    if not goals:
        raise UnsupportedGoalError("observation has no goal predicates (privileged['goal'] is empty)")
    pending = [g for g in goals if not goal_satisfied(g, priv)]
    cmd = decide(pending[0], priv, cfg) if pending else _retreat(priv)
    active = " ".join(pending[0].predicate) if pending else ""
    return to_action(cmd, priv, cfg), {"phase": cmd.phase, "predicate": active}


class ScriptedExpert(StepwiseExpert):
    """The privileged LIBERO pick-and-place expert behind the Policy contract (chunks of one action)."""

    def __init__(self, config: ScriptedConfig):
        self.config = config

    def plan(self, obs: Observation) -> tuple[np.ndarray, dict[str, Any]]:
        return plan_step(obs, self.config)


def make_scripted(options: Mapping[str, Any], env_family: str) -> ScriptedExpert:
    """Registry factory: validate `options` (see ScriptedConfig: speed, clearance, safe_height,
    approach_height) and build the expert; SpecError for other env families or bad options."""
    if env_family != "libero":
        raise SpecError("env.family", f"policy 'scripted' reads LIBERO state only; got family {env_family!r}")
    return ScriptedExpert(ScriptedConfig.from_options(options))
