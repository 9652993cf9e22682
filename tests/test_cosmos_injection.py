"""Latent layouts, latent frame injection/extraction and image preparation (no network needed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robofleet.policies.cosmos.camera import prepare_image
from robofleet.policies.cosmos.images import frames_to_video, pixel_frame, slot_frames
from robofleet.policies.cosmos.injection import average_copies, normalize, read_value, tile_into_frame, unnormalize
from robofleet.policies.cosmos.layout import ACTION, ALOHA, LAYOUTS, LIBERO, ROBOCASA, VALUE, Mode, SlotKind

FRAME_224 = (16, 28, 28)  # one latent frame at 224 px: 12544 values


def test_layout_frames_and_policy_conditioning_match_the_paper():
    assert [LIBERO.num_frames, ROBOCASA.num_frames, ALOHA.num_frames] == [9, 11, 11]
    assert [len(layout.conditioning[Mode.POLICY]) for layout in (LIBERO, ROBOCASA, ALOHA)] == [4, 5, 5]
    assert [slot.name for slot in LIBERO.slots] == [
        "blank", "proprio", "wrist", "primary", "action", "future_proprio", "future_wrist", "future_primary", "value"
    ]


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_world_model_adds_the_action_and_value_mode_gives_all_but_the_value(layout):
    policy = set(layout.conditioning[Mode.POLICY])
    assert set(layout.conditioning[Mode.WORLD_MODEL]) == policy | {layout.index(ACTION)}
    assert set(layout.conditioning[Mode.VALUE]) == set(range(layout.num_frames)) - {layout.index(VALUE)}
    assert all(layout.slots[i].kind is not SlotKind.ACTION for i in policy)


def test_action_chunk_round_trips_exactly_through_a_latent_frame():
    chunk = torch.rand(2, 16 * 7) * 2 - 1  # LIBERO: K = 16, d_act = 7 -> 112 copies in 12544 values
    frame = tile_into_frame(chunk, FRAME_224)
    assert frame.shape == (2, *FRAME_224)
    assert torch.equal(average_copies(frame, 16 * 7).float(), chunk)


def test_incomplete_last_copy_is_ignored_when_reading_back():
    vector = torch.tensor([[0.5, -0.25, 1.0]])
    frame = tile_into_frame(vector, (1, 2, 4))  # 8 elements: two copies + 2 left over
    frame.view(-1)[6:] = 99.0  # the partial copy must not leak into the average
    assert torch.equal(average_copies(frame, 3), vector.double())


def test_env_units_round_trip_through_normalisation_and_a_frame():
    low, high = np.array([-1.0, 0.0, 2.0]), np.array([1.0, 0.5, 6.0])
    proprio = np.array([[0.3, 0.1, 5.5]])
    scaled = normalize(proprio, low, high)
    assert scaled.min() >= -1 and scaled.max() <= 1
    frame = tile_into_frame(torch.tensor(scaled, dtype=torch.float32), FRAME_224)
    back = unnormalize(average_copies(frame, 3).numpy(), low, high)
    np.testing.assert_allclose(back, proprio, atol=1e-6)


def test_constant_dimension_normalises_to_zero_instead_of_dividing_by_zero():
    assert normalize(np.array([3.0]), np.array([3.0]), np.array([3.0])).tolist() == [0.0]


def test_value_is_the_frame_mean_mapped_to_0_1_and_clipped():
    frames = torch.stack([torch.full(FRAME_224, 0.5), torch.full(FRAME_224, 3.0), torch.full(FRAME_224, -2.0)])
    assert read_value(frames).tolist() == [0.75, 1.0, 0.0]


def test_prepared_image_has_model_size_from_any_camera_size():
    image = np.random.default_rng(0).integers(0, 256, (256, 200, 3), dtype=np.uint8)
    out = prepare_image(image, 224, jpeg_roundtrip=True, center_crop=True)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8


def test_center_crop_keeps_the_central_90_percent_area():
    image = np.zeros((224, 224, 3), dtype=np.uint8)
    image[:6] = 255  # the top 6 rows fall outside int(224 * sqrt(0.9)) = 212 centred rows
    out = prepare_image(image, 224, jpeg_roundtrip=False, center_crop=True)
    assert out.max() == 0
    assert prepare_image(image, 224, jpeg_roundtrip=False, center_crop=False).max() == 255


def test_pixel_video_has_a_blank_frame_then_each_slot_four_times():
    current = {"wrist": np.full((32, 32, 3), 255, np.uint8), "primary": np.full((32, 32, 3), 128, np.uint8)}
    frames = slot_frames(LIBERO, [current], [None], 32)
    video = frames_to_video(torch.from_numpy(frames), torch.float32)
    assert video.shape == (1, 3, 1 + 4 * 8, 32, 32)
    wrist, future_primary = LIBERO.image_slots(False)[0], LIBERO.image_slots(True)[1]
    assert video[0, :, pixel_frame(wrist)].min() == 1.0  # white wrist image
    assert video[0, :, pixel_frame(future_primary)].max().item() == pytest.approx(128 / 127.5 - 1, abs=1e-6)  # copy
    assert video[0, :, 0].max() == -1.0 and video[0, :, pixel_frame(LIBERO.index(ACTION))].max() == -1.0  # black
