"""Panda forward kinematics for the scripted expert: where the robot's base is, and what it can reach.

The observation gives joint angles and the eef position but not the robot's mount, which differs
between LIBERO scenes (x = -0.60, -0.66, -0.75 m). Forward kinematics of the 7 joints gives the eef
relative to the base, so base = eef - FK(q) (robosuite mounts the Panda unrotated). Hand-written
because it is eight 4x4 products and no dependency of ours does Panda kinematics.
"""
from __future__ import annotations

import numpy as np

# Franka Panda modified Denavit-Hartenberg parameters (Craig's convention), metres / radians.
_A = (0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088)
_D = (0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0)
_ALPHA = (0.0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2)
FLANGE_TO_EEF = 0.107 + 0.097  # link 7 origin -> flange -> robosuite's grip site, along link 7's z
SHOULDER_HEIGHT = 0.333  # joint 2 above the base
WRIST_OFFSET = 0.088  # link 6 sits this far from link 7's axis, toward the base, hand pointing down
# Distance (m) from the shoulder (joint 2) to the wrist (joint 6) above which the controller
# struggles: the elbow is straight (a singularity, joint 4 at its limit) at about 0.72 m. Tuned on
# libero_spatial: bowls on the far side of the table need the nearer rim.
MAX_REACH = 0.695


def eef_in_base(joint_pos: np.ndarray) -> np.ndarray:
    """(3,) eef (grip site) position in the base frame, metres, from the 7 joint angles (rad)."""
    transform = np.eye(4)
    for a, d, alpha, theta in zip(_A, _D, _ALPHA, np.asarray(joint_pos, dtype=np.float64)[:7]):
        ca, sa, ct, st = np.cos(alpha), np.sin(alpha), np.cos(theta), np.sin(theta)
        transform = transform @ np.array(
            [
                [ct, -st, 0.0, a],
                [st * ca, ct * ca, -sa, -sa * d],
                [st * sa, ct * sa, ca, ca * d],
                [0.0, 0.0, 0.0, 1.0],
            ]
        )
    return transform[:3, 3] + transform[:3, 2] * FLANGE_TO_EEF


def eef_velocity(joint_pos: np.ndarray, joint_vel: np.ndarray) -> np.ndarray:
    """(3,) eef linear velocity in m/s (world = base axes) from joint angles (rad) and velocities
    (rad/s), by a forward difference of the kinematics over 10 ms."""
    q = np.asarray(joint_pos, dtype=np.float64)[:7]
    dt = 0.01
    return (eef_in_base(q + np.asarray(joint_vel, dtype=np.float64)[:7] * dt) - eef_in_base(q)) / dt


def base_position(joint_pos: np.ndarray, eef_pos: np.ndarray) -> np.ndarray:
    """(3,) world position of the robot's base, metres (eef minus forward kinematics)."""
    return np.asarray(eef_pos, dtype=np.float64) - eef_in_base(joint_pos)


def reach(base: np.ndarray, eef_target: np.ndarray) -> float:
    """Shoulder-to-wrist distance (m) when the eef is at `eef_target` with the hand pointing down
    (link 7 straight above the eef, link 6 offset toward the base); compare with MAX_REACH."""
    wrist = np.asarray(eef_target, dtype=np.float64) + np.array([0.0, 0.0, FLANGE_TO_EEF])
    rel = wrist - (np.asarray(base, dtype=np.float64) + np.array([0.0, 0.0, SHOULDER_HEIGHT]))
    return float(np.hypot(np.linalg.norm(rel[:2]) - WRIST_OFFSET, rel[2]))
