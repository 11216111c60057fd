"""The 3D Gaussian-selection protocol (gags_ros/core/sim/selection.py) on hand-made maps."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gags_ros.core.camera import look_at
from gags_ros.core.gaussians import GaussianMap
from gags_ros.core.language.field import render_channels
from gags_ros.core.render.factory import make_renderer
from gags_ros.core.sim import selection as sel
from gags_ros.core.types import Intrinsics

# A camera at the origin looking along +z (image x = world x, image y = world y): a point (x, y, z)
# lands on pixel (16 + 40 x / z, 12 + 40 y / z) of a 32 x 24 image.
T_CAM = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), up=(0.0, -1.0, 0.0))
INTR = Intrinsics(40.0, 40.0, 16.0, 12.0, 32, 24)


def _line(n=12):
    return np.stack([np.arange(n, dtype=np.float64), np.zeros(n), np.zeros(n)], axis=1)


def test_smoothing_with_ten_nearest_neighbours_by_hand():
    # 12 Gaussians at x = 0..11 on a line, relevancy 1 at x = 0 only. The 10 nearest others of
    # x = 1..5 include x = 0 (for x = 5: 0..4 and 6..10, all within 5 m; x = 11 is 6 m away), so
    # r' = 0.5 (0 + 1/10) = 0.05; those of x = 6..11 do not (x = 6: 1..5 and 7..11 within 5 m,
    # x = 0 at 6 m): r' = 0. x = 0 itself: 0.5 (1 + 0) = 0.5.
    r = np.zeros((12, 1))
    r[0] = 1.0
    got = sel.smooth_relevancy(_line(), r)
    assert np.allclose(got[:, 0], [0.5] + [0.05] * 5 + [0.0] * 6)
    # Columns are texts, smoothed independently; fewer Gaussians than 11: all others are neighbours.
    two = sel.smooth_relevancy(_line(3), np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 3.0]]))
    assert np.allclose(two, [[0.5, 0.75], [0.25, 0.75], [0.25, 1.5]])


def test_a_gaussian_is_not_its_own_neighbour_even_when_another_shares_its_centre():
    pts = np.zeros((3, 3))
    pts[2, 0] = 5.0
    r = np.array([[1.0], [0.0], [0.0]])
    # k = 2 others each: Gaussian 0's are 1 and 2 (mean 0), Gaussian 1's are 0 and 2 (mean 0.5).
    got = sel.smooth_relevancy(pts, r, neighbours=2)
    assert np.allclose(got[:, 0], [0.5, 0.25, 0.25])


def test_selection_rule_is_n_above_0_7():
    # min-max over the Gaussians, clip(2 n - 1, 0, 1) > 0.4: n = 0.69 no, n = 0.71 yes.
    s = np.array([[0.0, 2.0], [0.5, 2.0], [0.69, 2.5], [0.71, 3.0], [1.0, 4.0]])
    got = sel.select(s)
    assert got[:, 0].tolist() == [False, False, False, True, True]
    assert got[:, 1].tolist() == [False, False, False, False, True]     # n = 0, 0, .25, .5, 1
    # The smoothed line above: only x = 0 (n = 1; the others n <= 0.1).
    r = np.zeros((12, 1))
    r[0] = 1.0
    assert sel.gaussian_selection(r, _line())[:, 0].tolist() == [True] + [False] * 11


def _map(points, opacity=0.99, scale=0.05):
    return GaussianMap.from_points(torch.tensor(points, dtype=torch.float32),
                                   torch.full((len(points), 3), 0.5), scale, opacity=opacity)


def test_silhouette_is_the_selected_share_of_the_rendered_opacity():
    renderer = make_renderer("torch", "cpu")
    # One Gaussian on the optical axis: selected, its silhouette is where its own alpha > 0.5.
    g = _map([[0.0, 0.0, 1.0]], scale=0.1)
    alpha = render_channels(renderer, g, torch.ones(1, 1), T_CAM, INTR, "cpu")[..., 0].numpy()
    s = sel.silhouettes(renderer, g, np.array([[True, False]]), T_CAM, INTR)
    assert s.shape == (2, 24, 32)
    assert np.array_equal(s[0], alpha > 0.5) and s[0, 12, 16] and not s[0, 0, 0] and not s[1].any()
    # Occlusion: an unselected opaque Gaussian in front of a selected one on the same ray. The back
    # one's share at the centre is (1 - a_front) a_back <= 0.01 x 0.99: hidden. Selected in front: ~0.99.
    g2 = _map([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]], scale=0.1)
    back = sel.silhouettes(renderer, g2, np.array([[False], [True]]), T_CAM, INTR)[0]
    front = sel.silhouettes(renderer, g2, np.array([[True], [False]]), T_CAM, INTR)[0]
    assert not back[12, 16] and front[12, 16]


def test_selection_of_a_relevant_cluster_renders_its_silhouette():
    renderer = make_renderer("torch", "cpu")
    gen = np.random.default_rng(0)
    left = np.array([-0.2, 0.0, 1.0]) + 0.005 * gen.standard_normal((12, 3))
    right = np.array([0.2, 0.0, 1.0]) + 0.005 * gen.standard_normal((12, 3))
    g = _map(np.concatenate([left, right]))
    # Relevancy 1 on the left cluster, 0 on the right: each Gaussian's 10 nearest neighbours lie in
    # its own cluster (0.4 m apart, 1 cm wide), so r' = r and only the left cluster is selected.
    r = np.concatenate([np.ones(12), np.zeros(12)])[:, None]
    fn = sel.selection_fn(renderer, g, r, ["left thing"])
    frame = SimpleNamespace(T_world_cam=T_CAM, intrinsics=INTR)
    got = fn(frame, ["left thing"])[0]
    alone = render_channels(renderer, _map(left), torch.ones(12, 1), T_CAM, INTR, "cpu")[..., 0].numpy()
    # The clusters are 16 px apart with 2 px spread: the right one adds nothing near the left.
    assert np.array_equal(got, alone > 0.5) and got[12, 8] and not got[:, 16:].any()


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
