"""Camera images -> the Cosmos Policy's input images, without torch (env workers run it too).

Per image, exactly as the reference evaluation prepares them (cosmos_utils.py,
`prepare_images_for_model`): optional JPEG quality-95 round trip with PIL's default settings
(dataset_utils.py, `apply_jpeg_compression_np`; the training data were JPEG files), resize to
the model's square size with PIL's default filter for RGB, bicubic, skipped when the image already
has that size (dataset_utils.py, `resize_images`), then optionally the 90%-area centre crop
(`int(size * sqrt(0.9))` px at torchvision's `center_crop` offset) resized back to the model
size as torchvision's antialiased bilinear `F.resize` does on a uint8 tensor (`apply_image_transforms`;
reproduced in numpy by resize.py, bit for bit).

`CameraPreparer` is this work for one whole Observation. A replica hands it to its clients (the env
workers) so that the JPEG/resize work runs there, spread over the workers' CPUs, while the replica's
process keeps the GPU busy; the policy gives bit-identical results for raw and prepared observations.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from PIL import Image

from robofleet.envs.contract import Observation
from robofleet.policies.contract import PreparedObservation
from robofleet.policies.cosmos.resize import resize_bilinear_antialias

JPEG_QUALITY = 95
CROP_AREA_FRACTION = 0.9  # training used random resized crops of 90% area; test time takes the centre one


def prepare_image(image: np.ndarray, size: int, *, jpeg_roundtrip: bool, center_crop: bool) -> np.ndarray:
    """One camera image -> the model's input image.

    image: uint8 (H, W, 3), upright, any size.
    Returns uint8 (size, size, 3).
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    picture = Image.fromarray(np.ascontiguousarray(image))
    if jpeg_roundtrip:
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        buffer.seek(0)
        picture = Image.open(buffer).convert("RGB")
    if picture.size != (size, size):
        picture = picture.resize((size, size), Image.Resampling.BICUBIC)
    resized = np.asarray(picture, dtype=np.uint8)
    if not center_crop:
        return resized
    crop, offset = center_crop_box(size)
    return resize_bilinear_antialias(resized[offset:offset + crop, offset:offset + crop], size, size)


def center_crop_box(size: int) -> tuple[int, int]:
    """(side, offset) in pixels of the 90%-area centre crop of a size x size image: 224 -> (212, 6).

    Side as the reference computes it, int(size * sqrt(0.9)); offset as torchvision's
    center_crop, int(round((size - side) / 2)).
    """
    crop = int(size * CROP_AREA_FRACTION**0.5)
    return crop, int(round((size - crop) / 2.0))


@dataclass(frozen=True)
class CameraPreparer:
    """Observation -> PreparedObservation whose images are camera role -> uint8 (size, size, 3).

    cameras: (camera role, Observation.images key) pairs, in the layout's order.
    Equal preparers prepare equally: a policy accepts an observation prepared by an equal preparer.
    """

    cameras: tuple[tuple[str, str], ...]
    size: int
    jpeg_roundtrip: bool
    center_crop: bool

    def images(self, images: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Observation.images (camera key -> uint8 (H, W, 3)) -> camera role -> prepared image."""
        prepared = {}
        for role, key in self.cameras:
            if key not in images:
                raise ValueError(f"observation lacks camera {key!r} ({role}); it has {sorted(images)}")
            prepared[role] = prepare_image(images[key], self.size, jpeg_roundtrip=self.jpeg_roundtrip,
                                           center_crop=self.center_crop)
        return prepared

    def __call__(self, obs: Observation) -> PreparedObservation:
        if isinstance(obs, PreparedObservation):
            self.check(obs)
            return obs
        return PreparedObservation(images=self.images(obs.images), proprio=obs.proprio, instruction=obs.instruction,
                                   privileged=obs.privileged, prepared_by=self)

    def check(self, obs: PreparedObservation) -> None:
        """Raise if `obs` was prepared differently from what this preparer does."""
        if obs.prepared_by != self:
            raise ValueError(f"observation was prepared by {obs.prepared_by}, but this policy prepares with {self}")
