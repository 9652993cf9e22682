"""Latent frame layouts of Cosmos Policy per env family, as data (REFERENCE.md §2).

A layout is the order of latent frames in the diffusion sequence (s, a, s', V(s')) and, for each
inference mode, which frames are clean conditioning:

- policy      [s] -> [a, s', V]        (conditioning: blank + current state)
- world model [s, a] -> [s', V]        (conditioning: + action)
- value       [s, a, s'] -> [V]        (conditioning: everything but the value frame)

Frame 0 is a blank frame: the Wan VAE encodes pixel frame 0 alone into latent frame 0 (its causal
1 + T' layout), and every later latent frame holds one image repeated 4x in time. Non-image frames
(proprio, action, value) are encoded from black placeholder images and then overwritten.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping

from robofleet.envs.contract import CAMERA_KEYS


class SlotKind(enum.Enum):
    """What a latent frame holds."""

    BLANK = "blank"
    PROPRIO = "proprio"
    IMAGE = "image"
    ACTION = "action"
    VALUE = "value"


class Mode(enum.Enum):
    """Which frames are given (clean) and which are generated."""

    POLICY = "policy"
    WORLD_MODEL = "world_model"
    VALUE = "value"


@dataclass(frozen=True)
class Slot:
    """One latent frame: its kind, whether it is the future (s') copy, and the camera role of an image."""

    kind: SlotKind
    future: bool = False
    camera: str | None = None  # camera role ("wrist", "primary", ...) for IMAGE slots

    @property
    def name(self) -> str:
        """e.g. "proprio", "future_wrist", "action"."""
        base = self.camera if self.kind is SlotKind.IMAGE else self.kind.value
        return f"future_{base}" if self.future else base


BLANK = Slot(SlotKind.BLANK)
PROPRIO = Slot(SlotKind.PROPRIO)
ACTION = Slot(SlotKind.ACTION)
FUTURE_PROPRIO = Slot(SlotKind.PROPRIO, future=True)
VALUE = Slot(SlotKind.VALUE)


def _image(camera: str, future: bool = False) -> Slot:
    return Slot(SlotKind.IMAGE, future=future, camera=camera)


@dataclass(frozen=True)
class LatentLayout:
    """The latent sequence of one env family.

    slots: the latent frames in order; len(slots) = latent frames T (LIBERO 9, RoboCasa/ALOHA 11).
    camera_keys: camera role -> `Observation.images` key of the env family's adapter (envs/contract.py
        CAMERA_KEYS: the layout itself speaks roles).
    conditioning: mode -> indices of the clean conditioning frames.
    chunk_size: K, action rows per prediction (LIBERO 16, RoboCasa 32, ALOHA 50).
    action_dim, proprio_dim: d_act and P; used as-is with random weights. A checkpoint's dataset
        statistics define the dims otherwise (they must agree with action_dim).
    default_action_steps: denoising steps for the action sample (REFERENCE.md: 5, ALOHA 10).
    """

    family: str
    slots: tuple[Slot, ...]
    camera_keys: Mapping[str, str]
    conditioning: Mapping[Mode, tuple[int, ...]]
    chunk_size: int
    action_dim: int
    proprio_dim: int
    default_action_steps: int = 5

    @property
    def num_frames(self) -> int:
        """Latent frames T."""
        return len(self.slots)

    def index(self, slot: Slot) -> int:
        """Position of `slot` in the sequence (ValueError if the layout has none)."""
        return self.slots.index(slot)

    def image_slots(self, future: bool) -> tuple[int, ...]:
        """Indices of the current (future=False) or future image frames, in camera order."""
        return tuple(i for i, s in enumerate(self.slots) if s.kind is SlotKind.IMAGE and s.future == future)

    @property
    def cameras(self) -> tuple[str, ...]:
        """Camera roles in slot order."""
        return tuple(str(self.slots[i].camera) for i in self.image_slots(future=False))

    def conditioning_mask(self, mode: Mode) -> tuple[bool, ...]:
        """(T,) True where the frame is clean conditioning in `mode`."""
        given = set(self.conditioning[mode])
        return tuple(i in given for i in range(self.num_frames))


LIBERO = LatentLayout(
    family="libero",
    slots=(BLANK, PROPRIO, _image("wrist"), _image("primary"), ACTION,
           FUTURE_PROPRIO, _image("wrist", True), _image("primary", True), VALUE),
    camera_keys=CAMERA_KEYS["libero"],
    conditioning={
        Mode.POLICY: (0, 1, 2, 3),
        Mode.WORLD_MODEL: (0, 1, 2, 3, 4),
        Mode.VALUE: (0, 1, 2, 3, 4, 5, 6, 7),
    },
    chunk_size=16,
    action_dim=7,
    proprio_dim=9,
)

ROBOCASA = LatentLayout(
    family="robocasa",
    slots=(BLANK, PROPRIO, _image("wrist"), _image("left"), _image("right"), ACTION,
           FUTURE_PROPRIO, _image("wrist", True), _image("left", True), _image("right", True), VALUE),
    camera_keys=CAMERA_KEYS["robocasa"],
    conditioning={
        Mode.POLICY: (0, 1, 2, 3, 4),
        Mode.WORLD_MODEL: (0, 1, 2, 3, 4, 5),
        Mode.VALUE: (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    },
    chunk_size=32,
    action_dim=7,
    proprio_dim=9,
)

ALOHA = LatentLayout(
    family="aloha",
    slots=(BLANK, PROPRIO, _image("left_wrist"), _image("right_wrist"), _image("top"), ACTION,
           FUTURE_PROPRIO, _image("left_wrist", True), _image("right_wrist", True), _image("top", True), VALUE),
    camera_keys=CAMERA_KEYS["aloha"],
    conditioning={
        Mode.POLICY: (0, 1, 2, 3, 4),
        Mode.WORLD_MODEL: (0, 1, 2, 3, 4, 5),
        Mode.VALUE: (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    },
    chunk_size=50,
    action_dim=14,
    proprio_dim=14,
    default_action_steps=10,
)

LAYOUTS: dict[str, LatentLayout] = {layout.family: layout for layout in (LIBERO, ROBOCASA, ALOHA)}
