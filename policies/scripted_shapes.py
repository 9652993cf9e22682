"""Object geometry the scripted LIBERO expert needs: where to grasp, where things rest, how tall they are.

The expert is a pure function of the observation, and the observation carries object poses but not
their meshes, so the few numbers it needs per object category are tabulated here. They were measured
once from the collision geoms of the LIBERO 0.1.1 assets (world-axis-aligned bounds relative to the
body origin, in the objects' spawn orientation, which is fixed in the suites; metres).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Shape:
    """The geometry of one object category, relative to its body origin (`<name>_pos`), in metres.

    bottom: z of the lowest point (negative: the origin is above the base).
    top: z of the highest point.
    radius: horizontal half extent used for clearance (the larger of x and y).
    grasp: "top" (fingers straddle the whole object from above) or "rim" (fingers straddle the
        wall of a wide open container such as a bowl).
    rim_radius: for "rim" grasps, the horizontal distance of the wall from the origin.
    slide: how far (m) along world x a "top" grasp may move off the origin (long boxes) to keep
        the hand clear of neighbouring objects.
    pregrasp: finger gap (m) to pre-shape before descending; None = fully open (0.078). Rim grasps
        only need to straddle a thin wall: a narrow gap keeps the fingers off drawer walls and
        neighbours.
    surface: for objects used as targets, z of the surface things rest on (plate top, basket floor).
    """

    bottom: float
    top: float
    radius: float
    grasp: str = "top"
    rim_radius: float = 0.0
    slide: float = 0.0
    pregrasp: float | None = None
    surface: float | None = None

    @property
    def height(self) -> float:
        return self.top - self.bottom


@dataclass(frozen=True)
class Region:
    """A named region attached to an object (e.g. `basket_1_contain_region`): an axis-aligned box.

    center: (3,) offset of the box centre from the object's origin, in the object's frame, metres.
    half_size: (3,) half extents in metres (LIBERO's `in_box` test also accepts 1 cm below the box).
    """

    center: tuple[float, float, float]
    half_size: tuple[float, float, float]


# Category -> shape. Unknown categories fall back to DEFAULT_SHAPE (a 10 cm tall, top-grasped object).
SHAPES: dict[str, Shape] = {
    # libero_object groceries (upright; fingers close along world y)
    "alphabet_soup": Shape(-0.038, 0.038, 0.035, slide=0.008),
    "tomato_sauce": Shape(-0.038, 0.038, 0.034, slide=0.008),
    "cream_cheese": Shape(-0.009, 0.009, 0.041, slide=0.025),
    "butter": Shape(-0.009, 0.009, 0.038, slide=0.022),
    "chocolate_pudding": Shape(-0.013, 0.014, 0.041, slide=0.025),
    "salad_dressing": Shape(-0.073, 0.073, 0.027),
    "bbq_sauce": Shape(-0.055, 0.052, 0.023),
    "ketchup": Shape(-0.072, 0.073, 0.029),
    "milk": Shape(-0.070, 0.061, 0.027),
    "orange_juice": Shape(-0.070, 0.061, 0.027),
    # containers and supports
    "basket": Shape(0.005, 0.149, 0.086, surface=0.021),
    "plate": Shape(-0.003, 0.016, 0.070, surface=0.016),
    "akita_black_bowl": Shape(
        0.002, 0.052, 0.054, grasp="rim", rim_radius=0.047, pregrasp=0.035, surface=0.012
    ),
    "glazed_rim_porcelain_ramekin": Shape(0.001, 0.043, 0.045),
    "cookies": Shape(-0.009, 0.009, 0.041),
}

DEFAULT_SHAPE = Shape(-0.05, 0.05, 0.05)

# (category, region suffix) -> region box.
REGIONS: dict[tuple[str, str], Region] = {
    ("basket", "contain_region"): Region((0.0, 0.0, 0.072), (0.061, 0.061, 0.069)),
}

_INSTANCE = re.compile(r"_\d+$")


def category(name: str) -> str:
    """`akita_black_bowl_1` -> `akita_black_bowl`."""
    return _INSTANCE.sub("", name)


def shape_of(name: str) -> Shape:
    """The tabulated shape of object `name` (an instance name such as `plate_1`)."""
    return SHAPES.get(category(name), DEFAULT_SHAPE)


def region_of(name: str, suffix: str) -> Region | None:
    """The region `suffix` of object `name`, or None when it is not tabulated."""
    return REGIONS.get((category(name), suffix))


def region_box(region: Region, obj_pos: np.ndarray, obj_rot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World (centre (3,), half extents (3,)) of a region of an object at `obj_pos` with rotation
    matrix `obj_rot` (3, 3), following LIBERO's `in_box` (half extents rotated, then made positive)."""
    center = obj_pos + obj_rot @ np.asarray(region.center)
    half = np.abs(obj_rot @ np.asarray(region.half_size))
    return center, half
