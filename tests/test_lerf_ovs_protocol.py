"""The 2D LERF-OVS protocol as the reference scores it (LangSplat eval/evaluate_iou_loc.py and
eval/utils.py; docs/evaluation.md cites the lines), on small hand-made maps whose expected masks,
hits and IoUs are worked out by hand from the reference's definitions:

- mean filter: OpenCV filter2D with a k x k box of 1/k^2, anchor k // 2 (window [p - 15, p + 14]
  for k = 30), border BORDER_REFLECT_101 (index -1 reads 1, index n reads n - 2);
- segmentation: R' = 0.5 (R + mean30(R)); n = (R' - min) / (max - min + 1e-9); set where
  clip(2 n - 1, 0, 1) > 0.4; then utils.smooth: majority of rows max(0, i - 3) .. min(i + 4, H - 1) - 1
  (and columns alike), ties to 0;
- localisation: a hit when any pixel tied at the maximum of the mean-filtered map lies in a box;
- the reported number is the mean of per-scene numbers.
"""

import math

import numpy as np
import pytest
import torch

from gags_ros.eval.lerf_ovs import localisation_hit, majority_filter, mean_filter, segmentation_mask
from gags_ros.eval import evaluate as ev
from gags_ros.eval.metrics import summarize


# ---- mean filter --------------------------------------------------------------------------------
def test_k30_window_is_p_minus_15_to_p_plus_14():
    x = torch.zeros(40, 40, dtype=torch.float64)
    x[20, 20] = 900.0
    got = mean_filter(x, 30).numpy()
    # pixel (i, j) sees (20, 20) when i - 15 <= 20 <= i + 14, i.e. 6 <= i <= 35 (same for j); row 20
    # is never reached by a reflection (it would sit at -20 or 58, outside every window [-15, 53]).
    want = np.zeros((40, 40))
    want[6:36, 6:36] = 1.0
    assert np.allclose(got, want, atol=1e-9)


def test_reflect101_corner_pixel_counts_once_in_its_own_window():
    x = torch.zeros(40, 40, dtype=torch.float64)
    x[0, 0] = 900.0
    got = mean_filter(x, 30).numpy()
    # Reflect-101 mirrors -m to m (m >= 1): index 0 is never a mirror image, so (0, 0) enters a
    # window once, when 0 is in [i - 15, i + 14]: i <= 15 and j <= 15. Weight 1 / 900 each.
    # (Replicating the border, (0, 0) would fill the 16 x 16 corner of its own window: 256.)
    want = np.zeros((40, 40))
    want[:16, :16] = 1.0
    assert np.allclose(got, want, atol=1e-9)


def test_small_kernels_by_hand():
    # k = 3 (anchor 1, window [p - 1, p + 1]) on a 3 x 3 image with only the corner set to 9:
    # the corner's own window reads rows {1, 0, 1} and columns {1, 0, 1}: (0, 0) once -> 9 / 9.
    x = torch.zeros(3, 3, dtype=torch.float64)
    x[0, 0] = 9.0
    assert mean_filter(x, 3)[0, 0].item() == pytest.approx(1.0)
    # k = 2 (anchor 1, window [p - 1, p]) on the column ramp x[i, j] = j: column j averages
    # columns j - 1 and j, so j - 0.5; column 0 reads columns {1, 0} (reflect-101): 0.5.
    ramp = torch.arange(5, dtype=torch.float64).repeat(4, 1)
    assert np.allclose(mean_filter(ramp, 2).numpy()[0], [0.5, 0.5, 1.5, 2.5, 3.5])
    # A window wider than the image reflects again: a 2-pixel row (a, b) extends as ... b a b a b ...
    two = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    # k = 5, anchor 2: pixel 0 reads indices -2..2 -> a b a b a = (1 + 3 + 1 + 3 + 1) / 25 per row,
    # and the single row reflects onto itself 5 times.
    assert mean_filter(two, 5)[0, 0].item() == pytest.approx(5 * (1 + 3 + 1 + 3 + 1) / 25)


def _reference_mean_filter(x: np.ndarray, k: int) -> np.ndarray:
    """Brute force from the definition: numpy's "reflect" pad is OpenCV's BORDER_REFLECT_101."""
    lo, hi = k // 2, k - 1 - k // 2
    xp = np.pad(x.astype(np.float64), ((lo, hi), (lo, hi)), mode="reflect")
    H, W = x.shape
    return np.array([[xp[i:i + k, j:j + k].mean() for j in range(W)] for i in range(H)])


@pytest.mark.parametrize("k", [1, 2, 5, 30])
def test_mean_filter_matches_the_window_definition(k):
    x = torch.rand(23, 37, generator=torch.Generator().manual_seed(k)) * 10
    got = mean_filter(x, k)
    assert got.shape == x.shape and got.dtype == x.dtype
    assert np.allclose(got.numpy(), _reference_mean_filter(x.numpy(), k), atol=1e-5)


# ---- localisation: ties ---------------------------------------------------------------------------
def test_every_pixel_tied_at_the_maximum_is_a_candidate():
    # Two hot pixels at (row 20, column 5) and (row 20, column 34) of a 40 x 40 map, k = 30.
    # Row 20 is inside the window of rows 6..35. Column counts (reflect-101):
    #   j <= 10: column 5 twice (itself and its mirror at -5);    j = 20: both columns, once each;
    #   j >= 30: column 34 twice (itself and its mirror at 44);   elsewhere: one of them.
    # So the maximum 2 / 900 is tied on rows 6..35 at columns 0..10, 20 and 30..39.
    r = torch.zeros(40, 40)
    r[20, 5] = r[20, 34] = 1.0
    hit, (x, y) = localisation_hit(r, [[20, 6, 20, 6]])       # one pixel: column 20, row 6
    assert hit and (x, y) == (20, 6)
    assert localisation_hit(r, [[20, 0, 20, 39]])[1] == (20, 6)  # the first tied pixel in the box
    assert localisation_hit(r, [[39, 35, 39, 39]])[0]           # the bottom-right end of the tie
    assert not localisation_hit(r, [[12, 0, 18, 39]])[0]        # columns 12..18: one copy only
    assert not localisation_hit(r, [[0, 36, 39, 39]])[0]        # rows 36..39: outside every tie
    miss, first = localisation_hit(r, [[12, 0, 18, 39]])
    assert first == (0, 6)                                      # first tied pixel, row-major


def test_a_flat_map_hits_any_box():
    assert localisation_hit(torch.full((30, 40), 0.5), [[35, 25, 39, 29]])[0]


# ---- segmentation ---------------------------------------------------------------------------------
def test_threshold_is_n_above_0_7():
    # kernel 1 and majority 1 (options): R' = R; n = R / (1 + 1e-9); clip(2n - 1) > 0.4 <=> n > 0.7.
    r = torch.tensor([[0.0, 0.5, 0.65, 0.69, 0.71, 1.0]] * 2)
    m = segmentation_mask(r, kernel=1, majority=1)
    assert m.tolist() == [[False, False, False, False, True, True]] * 2


def test_majority_filter_by_hand():
    # size 3 (r = 1): rows max(0, i - 1) .. min(i + 2, H - 1) - 1: the last row and column never vote.
    m = np.zeros((5, 5), bool)
    m[4, :] = m[:, 4] = True
    assert not majority_filter(m, 3).any()
    # Ties go to 0: pixel (0, 0) reads rows 0..1 x columns 0..1, two of four set.
    t = np.zeros((5, 5), bool)
    t[0, 0] = t[1, 1] = True
    assert not majority_filter(t, 3)[0, 0]
    # 3 of 4 set: 1. Interior pixel (2, 2) reads rows 1..3 x columns 1..3: 5 of 9 set -> 1.
    t[0, 1] = True
    assert majority_filter(t, 3)[0, 0]
    c = np.zeros((5, 5), bool)
    c[1, 1] = c[1, 3] = c[2, 2] = c[3, 1] = c[3, 3] = True
    got = majority_filter(c, 3)
    assert got[2, 2] and not got[1, 2]  # (1, 2) reads rows 0..2 x columns 1..3: 3 of 9
    # The default 7: on an 8 x 8 mask, pixel (7, 7) reads rows 4..6 x columns 4..6 (9 pixels).
    d = np.zeros((8, 8), bool)
    d[4:7, 4:6] = True                                    # 6 of those 9
    assert majority_filter(d)[7, 7]
    d[4, 4] = False                                       # 5 of 9
    assert majority_filter(d)[7, 7]
    d[4, 5] = False                                       # 4 of 9
    assert not majority_filter(d)[7, 7]


def test_segmentation_mask_and_iou_by_hand():
    # A 40 x 40 map, 1 on the 10 x 10 block rows / columns 15..24, 0 elsewhere, k = 30.
    # Inside the block, the window [i - 15, i + 14] holds all of rows 15..24 (10 <= i <= 30) and no
    # mirror image (those exist only for i < 15 or i > 24), so mean30 = 100 / 900 and
    # R' = 0.5 (1 + 1/9) = 5/9, the maximum. Outside, R = 0 and a window holds at most 10 x 10
    # block pixels (mirrors included), so R' <= 0.5 * 100/900 = 1/18 and n <= (1/18) / (5/9) = 0.1:
    # before the majority filter the mask is the block (n = 1 inside).
    r = torch.zeros(40, 40)
    r[15:25, 15:25] = 1.0
    m = segmentation_mask(r).numpy()
    # Majority 7 (rows i - 3..i + 3, all inside the image here): rows of the window inside the
    # block for i = 15..24: 4 5 6 7 7 7 7 6 5 4 (columns alike); set when a * b >= 25 of 49.
    # Unset: (4, 4) = 16, (4, 5) = (5, 4) = 20, (4, 6) = (6, 4) = 24: 5 pixels per corner.
    # Outside the block a <= 3, so a * b <= 21: unset.
    assert m[16, 16] and not m[15, 15] and not m[15, 17] and m[15, 18] and m[18, 15]
    assert not m[:15].any() and not m[25:].any() and not m[:, :15].any() and not m[:, 25:].any()
    assert m.sum() == 100 - 4 * 5
    gt = np.zeros((40, 40), bool)
    gt[15:25, 15:25] = True
    from gags_ros.eval.lerf_ovs import iou

    assert iou(m, gt) == pytest.approx(0.8)


# ---- sizes and aggregation ------------------------------------------------------------------------
def test_kernel_sizes_are_fixed_unless_scaling_is_asked_for():
    for h in (48, 120, 480, 960):
        assert ev.lerf_sizes(h) == (30, 7)
    assert ev.EvalSettings().kernel == 30
    # --kernel 0: both scaled with the image height (an option, not the reference)
    assert ev.lerf_sizes(960, kernel=0) == (60, 15) and ev.lerf_sizes(120, kernel=0) == (8, 3)


def test_reported_number_is_the_mean_of_per_scene_numbers():
    # Scene A: one pair, IoU 1.0; scene B: three pairs, IoU 0.0. The reference reports the mean of
    # the per-scene numbers, (1.0 + 0.0) / 2 = 0.5 (pooling all pairs would give 0.25).
    recs = [{"variant": "v", "level": "whole", "seed": 0, "scene": "A", "iou": 1.0}]
    recs += [{"variant": "v", "level": "whole", "seed": 0, "scene": "B", "iou": 0.0}] * 3
    s = summarize(recs, ["iou"])
    assert s[("v", "whole")]["iou"]["mean"] == pytest.approx(0.5) and s[("v", "whole")]["iou"]["n"] == 4
    assert s[("v", "all")]["iou"]["mean"] == pytest.approx(0.5)
    assert not math.isnan(s[("v", "all")]["iou"]["mean"])
