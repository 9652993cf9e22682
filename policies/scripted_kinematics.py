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
# Distance (m) from the shoulder (joint 2) to link 7's origin beyond which a down-pointing hand
# cannot get: link 6 sits 0.088 m closer to the shoulder and the elbow straightens (a singularity)
# at about 0.72 m from it; lateral and raised targets fail earlier. Tuned on libero_spatial.
MAX_REACH = 0.77


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


def base_position(joint_pos: np.ndarray, eef_pos: np.ndarray) -> np.ndarray:
    """(3,) world position of the robot's base, metres (eef minus forward kinematics)."""
    return np.asarray(eef_pos, dtype=np.float64) - eef_in_base(joint_pos)


def reach(base: np.ndarray, eef_target: np.ndarray) -> float:
    """Distance (m) from the shoulder to link 7's origin when the eef is at `eef_target` with the
    hand pointing down; compare with MAX_REACH."""
    wrist = np.asarray(eef_target, dtype=np.float64) + np.array([0.0, 0.0, FLANGE_TO_EEF])
    shoulder = np.asarray(base, dtype=np.float64) + np.array([0.0, 0.0, SHOULDER_HEIGHT])
    return float(np.linalg.norm(wrist - shoulder))
