"""Camera images are prepared exactly as NVIDIA's evaluation prepares them (cosmos_utils.py).

The reference: JPEG q95 round trip with PIL defaults (`apply_jpeg_compression_np`), PIL's default
resize to 224 (`resize_images`), then the 90%-area centre crop resized back with torchvision's
antialiased bilinear `F.resize` on a uint8 tensor (`apply_image_transforms`). torchvision is not
installed here; its tensor resize is float32 `torch.nn.functional.interpolate(bilinear,
align_corners=False, antialias=True)` then `torch.round` to uint8, which these tests call directly.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from robofleet.policies.cosmos.camera import center_crop_box, prepare_image
from robofleet.policies.cosmos.factory import make_cosmos
from robofleet.policies.cosmos.resize import resize_bilinear_antialias


def _torch_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """torchvision F.resize(uint8 (C, H, W) tensor, [height, width], antialias=True), bilinear."""
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    out = torch.nn.functional.interpolate(tensor, size=[height, width], mode="bilinear", align_corners=False, antialias=True)
    return torch.round(out).to(torch.uint8)[0].permute(1, 2, 0).numpy()


def _camera_like(side: int, seed: int) -> np.ndarray:
    """Smooth shading, hard edges and sensor-like noise, as a rendered scene has."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    image = np.stack([120 + 100 * x, 80 + 90 * y, 200 - 150 * x * y], axis=-1)
    image[side // 3: side // 2, side // 4: side // 2] = (240, 30, 30)  # an object
    image += rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _reference_prepare(image: np.ndarray, size: int, jpeg: bool) -> np.ndarray:
    """The reference pipeline, step by step, with torch for torchvision's tensor ops."""
    if jpeg:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=95)
        buffer.seek(0)
        image = np.array(Image.open(buffer))
    if image.shape != (size, size, 3):
        image = np.array(Image.fromarray(image).resize((size, size)))  # PIL's default filter
    side = int(size * 0.9**0.5)
    top = int(round((size - side) / 2.0))  # torchvision center_crop
    return _torch_resize(image[top:top + side, top:top + side], size, size)


@pytest.mark.parametrize("seed", range(8))
def test_crop_resize_212_to_224_equals_torch_antialiased_bilinear_bit_for_bit(seed):
    image = np.random.default_rng(seed).integers(0, 256, (212, 212, 3), dtype=np.uint8)
    assert np.array_equal(resize_bilinear_antialias(image, 224, 224), _torch_resize(image, 224, 224))


def test_resize_equals_torch_on_camera_like_images_of_real_sizes():
    for side, out in ((212, 224), (256, 224), (224, 212), (128, 224), (480, 256)):
        image = _camera_like(side, side)
        assert np.array_equal(resize_bilinear_antialias(image, out, out), _torch_resize(image, out, out)), (side, out)


def test_resize_equals_torch_on_random_shapes_up_to_2x_downscale():
    rng = np.random.default_rng(7)
    for _ in range(60):
        height, width = (int(v) for v in rng.integers(4, 260, 2))
        out_h, out_w = int(rng.integers((height + 1) // 2, 3 * height)), int(rng.integers((width + 1) // 2, 3 * width))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        assert np.array_equal(resize_bilinear_antialias(image, out_h, out_w), _torch_resize(image, out_h, out_w)), \
            (height, width, out_h, out_w)


def test_resize_refuses_downscales_beyond_2x_rather_than_differing_from_torch():
    with pytest.raises(ValueError, match="2.0x"):
        resize_bilinear_antialias(np.zeros((163, 40, 3), np.uint8), 42, 40)


def test_center_crop_is_212_pixels_at_offset_6_for_224():
    assert center_crop_box(224) == (212, 6)
    for size in (32, 64, 96, 128, 224, 256):
        side = int(size * 0.9**0.5)
        assert center_crop_box(size) == (side, int(round((size - side) / 2.0)))


def test_pil_default_resize_of_rgb_is_the_bicubic_we_use():
    image = _camera_like(256, 1)
    ours = prepare_image(image, 224, jpeg_roundtrip=False, center_crop=False)
    assert np.array_equal(ours, np.array(Image.fromarray(image).resize((224, 224))))


@pytest.mark.parametrize("jpeg", [True, False])
@pytest.mark.parametrize("side", [256, 224])
def test_prepared_image_equals_the_reference_pipeline(jpeg, side):
    image = _camera_like(side, 3)
    assert np.array_equal(prepare_image(image, 224, jpeg_roundtrip=jpeg, center_crop=True),
                          _reference_prepare(image, 224, jpeg))


@pytest.mark.parametrize(("family", "expected"), [("libero", True), ("robocasa", True), ("aloha", False)])
def test_jpeg_roundtrip_defaults_to_the_reference_eval_script_of_each_family(family, expected):
    policy = make_cosmos({"config": "tiny", "image_size": 64}, family)  # 64 px: room for ALOHA's 50 x 14 chunk
    assert policy.settings.jpeg_roundtrip is expected
    assert policy.request_preparer.jpeg_roundtrip is expected


def test_jpeg_roundtrip_option_overrides_the_family_default():
    assert make_cosmos({"config": "tiny", "image_size": 64, "jpeg_roundtrip": True}, "aloha").settings.jpeg_roundtrip is True
    assert make_cosmos({"config": "tiny", "jpeg_roundtrip": False}, "libero").settings.jpeg_roundtrip is False
