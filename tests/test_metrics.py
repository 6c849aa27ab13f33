"""The paper's metrics: arithmetic on constructed cases, with tiny random CLIP/DINO and a real translation flow."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from metric_models import sliding_texture, translation_flow, write_tiny_clip, write_tiny_dino
from PIL import Image

from s2v.errors import S2VError
from s2v.metrics import (
    ClipScorer,
    DinoScorer,
    centre_indices,
    dynamic_degree,
    flow_midpoint,
    flow_sample_indices,
    motion_smoothness,
    pad_to_multiple,
    raft_flow,
    top_flow_magnitude,
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> ClipScorer:
    return ClipScorer.load(str(write_tiny_clip(tmp_path_factory.mktemp("clip"))))


@pytest.fixture(scope="module")
def dino(tmp_path_factory) -> DinoScorer:
    return DinoScorer.load(str(write_tiny_dino(tmp_path_factory.mktemp("dino"))))


def still_video(image: np.ndarray, frames: int = 9) -> np.ndarray:
    return np.repeat(image[None], frames, axis=0)


def test_the_sixteen_centre_frames_are_scored():
    assert centre_indices(49) == list(range(16, 32))
    assert centre_indices(17) == list(range(0, 16))
    assert centre_indices(9) == list(range(9))


def test_frames_identical_to_the_reference_give_clip_i_and_dino_i_of_100(clip, dino, subject_array):
    video = still_video(subject_array)
    assert clip.scores("a dog", Image.fromarray(subject_array), video)[1] == pytest.approx(100.0, abs=1e-3)
    assert dino.image_score(Image.fromarray(subject_array), video) == pytest.approx(100.0, abs=1e-3)


def test_a_different_reference_scores_below_100(clip, dino, subject_array):
    other = Image.fromarray(np.full_like(subject_array, 90))
    video = still_video(subject_array)
    assert clip.scores("a dog", other, video)[1] < 99.9
    assert dino.image_score(other, video) < 99.9


def test_clip_t_reads_the_prompt_without_the_reference_token(clip, subject_array):
    video = still_video(subject_array)
    reference = Image.fromarray(subject_array)
    plain = clip.scores("a dog runs on the beach", reference, video)[0]
    assert clip.scores("<cls> a dog runs on the beach", reference, video)[0] == pytest.approx(plain, abs=1e-4)
    assert clip.scores("a cat sleeps", reference, video)[0] != pytest.approx(plain, abs=1e-4)
    assert -100.0 <= plain <= 100.0


def test_flow_frames_are_sampled_at_about_8_fps():
    assert flow_sample_indices(49, 8) == list(range(49))
    assert flow_sample_indices(49, 24) == list(range(0, 49, 3))
    assert flow_sample_indices(10, 4) == list(range(10))


def test_the_top_five_percent_of_flow_magnitudes_are_averaged():
    flow = np.zeros((20, 20, 2), np.float32)
    flow.reshape(-1, 2)[:20] = (3.0, 4.0)  # 20 of 400 pixels = 5%, magnitude 5
    assert top_flow_magnitude(flow) == pytest.approx(5.0)
    flow.reshape(-1, 2)[:10] = (6.0, 8.0)
    assert top_flow_magnitude(flow) == pytest.approx(7.5)


def test_identical_frames_have_dynamic_degree_0_and_smoothness_1(subject_array):
    video = still_video(np.array(Image.fromarray(subject_array).resize((64, 64))), 16)
    result = dynamic_degree(video, 8, translation_flow)
    assert result.pair_scores == (0.0,) * 15 and not result.dynamic
    assert motion_smoothness(video, flow_midpoint(translation_flow)) == 1.0


def test_a_video_counts_as_dynamic_exactly_above_vbench_thresholds():
    # 64 px frames: threshold 6 * 64 / 256 = 1.5 px; 16 frames at 8 fps: round(4 * 16 / 16) = 4 moving pairs.
    slow = dynamic_degree(sliding_texture(16, [1] * 15), 8, translation_flow)
    assert slow.threshold == 1.5 and slow.required == 4
    assert slow.pair_scores == pytest.approx((1.0,) * 15) and not slow.dynamic
    assert dynamic_degree(sliding_texture(16, [2] * 15), 8, translation_flow).dynamic
    three_moves = dynamic_degree(sliding_texture(16, [2, 2, 2] + [0] * 12), 8, translation_flow)
    four_moves = dynamic_degree(sliding_texture(16, [2, 2, 2, 2] + [0] * 11), 8, translation_flow)
    assert (three_moves.moving_pairs, three_moves.dynamic) == (3, False)
    assert (four_moves.moving_pairs, four_moves.dynamic) == (4, True)


def test_the_threshold_scales_with_the_shorter_side_and_must_be_exceeded():
    # 128x256 frames: 6 * 128 / 256 = 3 px (the longer side would make it 6); a 3 px pair does not exceed it.
    at_threshold = dynamic_degree(sliding_texture(16, [3] * 15, height=128, width=256), 8, translation_flow)
    above = dynamic_degree(sliding_texture(16, [4] * 15, height=128, width=256), 8, translation_flow)
    assert at_threshold.threshold == 3.0 and at_threshold.moving_pairs == 0 and not at_threshold.dynamic
    assert above.dynamic


@pytest.mark.parametrize("frames, required", [(49, 12), (16, 4), (10, 2), (2, 0)])
def test_the_required_moving_pairs_are_round_4n_over_16(frames, required):
    still = np.zeros((frames, 16, 16, 3), np.uint8)
    assert dynamic_degree(still, 8, translation_flow).required == required


def test_dynamic_degree_samples_a_24_fps_video_every_third_frame():
    # shifts of 1 px a frame are 3 px between samples at 24 fps: dynamic, where at 8 fps they are not.
    video = sliding_texture(48, [1] * 47)
    sampled = dynamic_degree(video, 24, translation_flow)
    assert sampled.pair_scores == pytest.approx((3.0,) * 15) and sampled.dynamic
    assert not dynamic_degree(video, 8, translation_flow).dynamic


def test_smoothness_scores_each_odd_frame_against_its_interpolation():
    video = np.zeros((4, 8, 8, 3), np.uint8)
    calls = []

    def off_by_51(before, after):
        calls.append((before.mean(), after.mean()))
        return before + 51

    video[2] += 2
    assert motion_smoothness(video, off_by_51) == pytest.approx((255 - 51) / 255)
    assert calls == [(0.0, 2.0)]  # frame 3 has no frame after it, so only frame 1 is scored


def test_flow_midpoint_follows_motion_that_a_blend_smears():
    video = sliding_texture(9, [4] * 8)
    flowed = motion_smoothness(video, flow_midpoint(translation_flow))
    blended = motion_smoothness(video, lambda a, b: ((a.astype(np.uint16) + b) // 2).astype(np.uint8))
    assert flowed > 0.98 and flowed > blended + 0.01


def test_a_flow_computed_on_padded_frames_is_cropped_from_its_centre():
    # A square moving on a still background, its exact flow computed as RAFT computes it: on frames padded
    # to multiples of 8 with the frame in the middle. 36x60 frames pad to 40x64.
    def frame(x):
        image = np.full((36, 60, 3), 30, np.uint8)
        image[12:24, x : x + 12] = (220, 200, 40)
        return image

    video = np.stack([frame(6 + 6 * k) for k in range(5)])

    def square_flow(a, b, pad=(0, 0)):
        xa, xb = (np.flatnonzero(f[18, :, 0] > 100)[0] for f in (a, b))
        flow = np.zeros((a.shape[0] + 2 * pad[0], a.shape[1] + 2 * pad[1], 2), np.float32)
        flow[12 + pad[0] : 24 + pad[0], xa + pad[1] : xa + 12 + pad[1], 0] = xb - xa
        return flow

    exact = motion_smoothness(video, flow_midpoint(square_flow))
    padded = motion_smoothness(video, flow_midpoint(lambda a, b: square_flow(a, b, pad=(2, 2))))
    assert padded == exact > 0.98


def test_frames_are_padded_evenly_to_multiples_of_8_with_edges_repeated():
    image = torch.arange(36 * 60, dtype=torch.float32).reshape(1, 1, 36, 60)
    padded = pad_to_multiple(image)
    assert padded.shape == (1, 1, 40, 64)
    assert torch.equal(padded[..., 2:38, 2:62], image) and torch.equal(padded[..., 0, 2:62], image[..., 0, :])


def test_missing_metric_models_name_the_flag_that_takes_a_local_copy(tmp_path):
    with pytest.raises(S2VError, match="--clip-model"):
        ClipScorer.load("nobody/no-such-clip")
    with pytest.raises(S2VError, match=str(tmp_path)):
        DinoScorer.load(str(tmp_path))


def test_raft_without_a_usable_torchvision_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision.models.optical_flow", None)
    with pytest.raises(S2VError, match="torchvision"):
        raft_flow()
