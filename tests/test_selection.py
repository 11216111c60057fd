"""The 3D Gaussian-selection protocol (gags_ros/eval/selection.py) on hand-made maps."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gags_ros.core.camera import look_at
from gags_ros.core.gaussians import GaussianMap
from gags_ros.core.language.field import render_channels
from gags_ros.core.render.factory import make_renderer
from gags_ros.eval import selection as sel
from gags_ros.core.types import Intrinsics

# A camera at the origin looking along +z (image x = world x, image y = world y): a point (x, y, z)
# lands on pixel (16 + 40 x / z, 12 + 40 y / z) of a 32 x 24 image.
T_CAM = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), up=(0.0, -1.0, 0.0))
INTR = Intrinsics(40.0, 40.0, 16.0, 12.0, 32, 24)


def _line(n=12):
    # x_i = i + 0.001 i^2: spacing grows a little along the line, so no two Gaussians are at the
    # same distance from a third and every "10 nearest" below is unambiguous.
    i = np.arange(n, dtype=np.float64)
    return np.stack([i + 0.001 * i ** 2, np.zeros(n), np.zeros(n)], axis=1)


def test_smoothing_with_ten_nearest_neighbours_by_hand():
    # 12 Gaussians on a line (x_i ~ i), relevancy 1 at i = 0 only. The 10 nearest of a Gaussian
    # include itself. i = 0: 0..9, mean 0.1, r' = 0.5 (1 + 0.1) = 0.55. i = 1..4: within 8 of them
    # there are 10 Gaussians including 0 (e.g. i = 4: 0..9): r' = 0.5 (0 + 0.1) = 0.05. i = 5:
    # 1..9 (9) and then 0 (5.025 away) before 10 (5.075 away): 0.05. i = 6: 2..10 (9) and then 1
    # (5.035) before 11 (5.085) and 0 (6.036): r' = 0. i >= 7: 0 is farther still: 0.
    r = np.zeros((12, 1))
    r[0] = 1.0
    got = sel.smooth_relevancy(_line(), r)
    assert np.allclose(got[:, 0], [0.55] + [0.05] * 5 + [0.0] * 6)
    # Columns are texts, smoothed independently; fewer Gaussians than 10: all of them.
    few = sel.smooth_relevancy(_line(3), np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 3.0]]))
    assert np.allclose(few, [[2 / 3, 0.5], [1 / 6, 0.5], [1 / 6, 2.0]])


def test_selection_rule_is_n_above_0_7():
    # min-max over the Gaussians, clip(2 n - 1, 0, 1) > 0.4: n = 0.69 no, n = 0.71 yes.
    s = np.array([[0.0, 2.0], [0.5, 2.0], [0.69, 2.5], [0.71, 3.0], [1.0, 4.0]])
    got = sel.select(s)
    assert got[:, 0].tolist() == [False, False, False, True, True]
    assert got[:, 1].tolist() == [False, False, False, False, True]     # n = 0, 0, .25, .5, 1
    # The smoothed line above: only i = 0 (n = 1; the others n <= 0.05 / 0.55).
    r = np.zeros((12, 1))
    r[0] = 1.0
    assert sel.gaussian_selection(r, _line())[:, 0].tolist() == [True] + [False] * 11


def _map(points, opacity=0.99, scale=0.05):
    return GaussianMap.from_points(torch.tensor(points, dtype=torch.float32),
                                   torch.full((len(points), 3), 0.5), scale, opacity=opacity)


def test_silhouette_is_the_selection_rendered_alone():
    renderer = make_renderer("torch", "cpu")
    # One Gaussian on the optical axis: selected, its silhouette is where its alpha >= 10.5 / 255
    # (an 8-bit alpha image above 10).
    g = _map([[0.0, 0.0, 1.0]], scale=0.1)
    alpha = render_channels(renderer, g, torch.ones(1, 1), T_CAM, INTR, "cpu")[..., 0].numpy()
    s = sel.silhouettes(renderer, g, np.array([[True, False]]), T_CAM, INTR)
    assert s.shape == (2, 24, 32)
    assert np.array_equal(s[0], alpha >= 10.5 / 255) and s[0, 12, 16] and not s[0, 0, 0] and not s[1].any()
    assert (alpha > 0.01).sum() > s[0].sum() > (alpha > 0.5).sum()   # the low threshold matters
    # Rendered alone, a selected Gaussian behind an unselected opaque one still shows (the
    # reference ignores occlusion by unselected Gaussians); nothing selected: nothing rendered.
    g2 = _map([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]], scale=0.1)
    both = sel.silhouettes(renderer, g2, np.array([[False, True, False], [True, True, False]]), T_CAM, INTR)
    assert both[0, 12, 16] and both[1, 12, 16] and not both[2].any()
    alone = render_channels(renderer, _map([[0.0, 0.0, 2.0]], scale=0.1), torch.ones(1, 1), T_CAM, INTR, "cpu")
    assert np.array_equal(both[0], alone[..., 0].numpy() >= 10.5 / 255)


def test_selection_of_a_relevant_cluster_renders_its_silhouette():
    renderer = make_renderer("torch", "cpu")
    gen = np.random.default_rng(0)
    left = np.array([-0.2, 0.0, 1.0]) + 0.005 * gen.standard_normal((12, 3))
    right = np.array([0.2, 0.0, 1.0]) + 0.005 * gen.standard_normal((12, 3))
    g = _map(np.concatenate([left, right]))
    # Relevancy 1 on the left cluster, 0 on the right: each Gaussian's 10 nearest lie in its own
    # cluster (0.4 m apart, 1 cm wide), so r' = r and only the left cluster is selected.
    r = np.concatenate([np.ones(12), np.zeros(12)])[:, None]
    fn = sel.selection_fn(renderer, g, r, ["left thing"])
    frame = SimpleNamespace(T_world_cam=T_CAM, intrinsics=INTR)
    got = fn(frame, ["left thing"])[0]
    alone = render_channels(renderer, _map(left), torch.ones(12, 1), T_CAM, INTR, "cpu")[..., 0].numpy()
    # The clusters are 16 px apart with 2 px spread: the right one adds nothing near the left.
    assert np.array_equal(got, alone >= 10.5 / 255) and got[12, 8] and not got[:, 16:].any()


def test_label_votes_and_the_3d_label_oracle():
    renderer = make_renderer("torch", "cpu")
    # Gaussian 0 on the left half (id 1), Gaussian 1 on the right half (id 2), Gaussian 2 behind
    # the camera (never seen).
    g = _map([[-0.2, 0.0, 1.0], [0.2, 0.0, 1.0], [0.0, 0.0, -1.0]])
    ids = np.ones((24, 32), np.int64)
    ids[:, 16:] = 2
    frame = SimpleNamespace(masks={"part": ids}, T_world_cam=T_CAM, intrinsics=INTR)
    votes = sel.label_votes(renderer, g, [frame, frame], "part", [1, 2])
    assert votes.shape == (3, 3)
    # Summed over pixels, a lone Gaussian's blending weight is its alpha: all inside its own label.
    a0 = render_channels(renderer, _map([[-0.2, 0.0, 1.0]]), torch.ones(1, 1), T_CAM, INTR, "cpu").sum().item()
    assert votes[0] == pytest.approx([2 * a0, 0.0, 0.0], abs=1e-4)
    assert votes[1].argmax() == 1 and votes[1, 1] == pytest.approx(2 * a0, rel=1e-4)
    assert not votes[2].any()
    labels = {"part": {"1": "mug handle", "2": "mug body"}}
    queries = [{"text": "handle", "level": "part"}, {"text": "body", "level": "part"}]
    table = {"mug handle": [0.9, 0.2], "mug body": [0.1, 0.8]}

    def rel_of_labels(level, texts, rows):
        assert level == "part" and rows == [0, 1]
        return np.array([table[t] for t in texts])

    r = sel.label_oracle_relevancy(renderer, g, [frame], labels, queries, rel_of_labels)
    assert np.allclose(r, [[0.9, 0.2], [0.1, 0.8], [0.0, 0.0]])
