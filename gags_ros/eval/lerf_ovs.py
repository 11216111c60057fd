"""The LERF-OVS 2D evaluation protocol as LangSplat's evaluation code scores it (30x30 mean filter
with OpenCV's reflect-101 border; R' = 0.5 (R + mean30(R)), min-max, clip(2 n - 1, 0, 1) > 0.4,
7x7 majority; docs/evaluation.md): :func:`localisation_hit`, :func:`segmentation_mask`, :func:`iou`.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

def _as_image(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).float()


# The reference is LangSplat's eval/evaluate_iou_loc.py and eval/utils.py (GAGS's copy is the
# same on one map); docs/evaluation.md cites file and line for each constant.
REFERENCE_KERNEL = 30        # px, mean-filter window, whatever the image size
REFERENCE_MAJORITY = 7       # px, majority-filter window (utils.smooth: 3 px either side)
REFERENCE_THRESHOLD = 0.4    # on clip(2 n - 1, 0, 1), n the min-max normalised map: n > 0.7
TIE_TOLERANCE = 1e-9         # smoothed values this close to the maximum count as tied with it


def reflect101_index(n: int, lo: int, hi: int) -> torch.Tensor:
    """``[n + lo + hi]`` long: source index of each position ``-lo .. n - 1 + hi`` of a row of ``n``
    pixels extended by OpenCV's default border ``BORDER_REFLECT_101`` (``gfedcb|abcdefgh|gfedcba``:
    the edge pixel is not repeated), reflecting again as often as the extension needs."""
    i = torch.arange(-lo, n + hi)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    j = i.remainder(period)
    return torch.where(j >= n, period - j, j)


def mean_filter(x: torch.Tensor, k: int) -> torch.Tensor:
    """``[H, W]`` -> ``[H, W]``: OpenCV's ``filter2D`` with a ``k x k`` box of ``1 / k^2`` and its
    defaults: anchor at the kernel centre ``k // 2`` (the window of pixel ``p`` is
    ``[p - k // 2, p + k - 1 - k // 2]``, ``[p - 15, p + 14]`` for k = 30) and border
    ``BORDER_REFLECT_101``, so a corner pixel enters its own window once (weight ``1 / k^2``).

    Summed-area table in float64: O(H W) whatever ``k``.
    """
    H, W = x.shape
    lo = k // 2
    hi = k - 1 - lo
    xp = x.double()[reflect101_index(H, lo, hi)][:, reflect101_index(W, lo, hi)]  # [H + k - 1, W + k - 1]
    c = torch.nn.functional.pad(xp.cumsum(0).cumsum(1), (1, 0, 1, 0))  # c[i, j] = sum xp[:i, :j]
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return (s / (k * k)).to(x.dtype)


def localisation_hit(relevancy_map, boxes, kernel: int = REFERENCE_KERNEL) -> Tuple[bool, Tuple[int, int]]:
    """LERF-OVS localisation: smooth ``relevancy_map`` ``[H, W]`` with :func:`mean_filter`; every
    pixel tied at the maximum (within :data:`TIE_TOLERANCE`) is a candidate and the query is a hit
    when any candidate ``(x, y)`` (column, row) lies in any of ``boxes`` (``[B, 4]`` pixel boxes
    ``x_min, y_min, x_max, y_max``, inclusive). Returns ``(hit, (x, y))``: a candidate inside a box
    when hit, else the first candidate in row-major order."""
    r = _as_image(relevancy_map)
    sm = mean_filter(r, kernel).double()
    ys, xs = torch.nonzero(sm >= sm.max() - TIE_TOLERANCE, as_tuple=True)
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    inside = ((b[:, 0] <= xs[:, None]) & (xs[:, None] <= b[:, 2])
              & (b[:, 1] <= ys[:, None]) & (ys[:, None] <= b[:, 3])).any(dim=1)  # [candidates]
    i = int(torch.nonzero(inside)[0, 0]) if bool(inside.any()) else 0
    return bool(inside.any()), (int(xs[i]), int(ys[i]))


def majority_filter(mask, size: int = REFERENCE_MAJORITY) -> torch.Tensor:
    """``[H, W]`` bool -> ``[H, W]`` bool, LangSplat's ``smooth``: with ``r = size // 2``, pixel
    ``(i, j)`` becomes the majority value of rows ``max(0, i - r) .. min(i + r + 1, H - 1) - 1`` and
    columns alike (the reference's slice ends at ``H - 1``, so the last row and column never vote),
    ties to 0 (numpy's argmax of the bincount). ``size <= 1``: the mask unchanged."""
    m = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask).bool()
    r = int(size) // 2
    if r == 0:
        return m.clone()
    H, W = m.shape
    if H < 2 or W < 2:
        raise ValueError(f"majority filter of a {H}x{W} mask: the reference's windows are empty")
    c = torch.nn.functional.pad(m.double().cumsum(0).cumsum(1), (1, 0, 1, 0))  # [H + 1, W + 1]
    i, j = torch.arange(H), torch.arange(W)
    r0, r1 = (i - r).clamp_min(0), (i + r + 1).clamp_max(H - 1)      # [H] rows [r0, r1)
    c0, c1 = (j - r).clamp_min(0), (j + r + 1).clamp_max(W - 1)      # [W] columns [c0, c1)
    ones = c[r1][:, c1] - c[r0][:, c1] - c[r1][:, c0] + c[r0][:, c0]  # [H, W]
    area = (r1 - r0)[:, None] * (c1 - c0)[None, :]
    return ones > area - ones


def segmentation_mask(relevancy_map, threshold: float = REFERENCE_THRESHOLD, kernel: int = REFERENCE_KERNEL,
                      majority: int = REFERENCE_MAJORITY) -> torch.Tensor:
    """LERF-OVS segmentation (LangSplat's ``activate_stream``): R' = 0.5 (R + mean_kernel(R))
    (:func:`mean_filter`), n = (R' - min) / (max - min + 1e-9), set where clip(2 n - 1, 0, 1) >
    ``threshold`` (n > 0.7 at 0.4), then :func:`majority_filter`. ``[H, W]`` -> ``[H, W]`` bool."""
    r = _as_image(relevancy_map).double()
    rs = 0.5 * (r + mean_filter(r, kernel))
    n = rs - rs.min()
    n = n / (n.max() + 1e-9)
    return majority_filter((2 * n - 1).clamp(0, 1) > threshold, majority)


def iou(pred, gt) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    p = torch.as_tensor(np.asarray(pred) if not torch.is_tensor(pred) else pred).bool()
    g = torch.as_tensor(np.asarray(gt) if not torch.is_tensor(gt) else gt).bool().to(p.device)
    union = int((p | g).sum())
    return 1.0 if union == 0 else int((p & g).sum()) / union
