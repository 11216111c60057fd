"""The 3D Gaussian-selection protocol: which Gaussians a text query selects, seen from the eval views.

The 2D protocol (:mod:`gags_ros.core.query`'s LERF-OVS functions) scores a rendered relevancy
image; this one scores the map itself, which is what a robot queries. It is the LERF-OVS "3D object
selection" protocol of the 3D open-vocabulary literature (OpenGaussian, Dr. Splat and others; the
constants and their sources are in docs/evaluation.md), per text query:

1. relevancy ``r`` of every Gaussian (the query engine's, all Gaussians);
2. smoothed over space: ``r' = 0.5 (r + mean of r over the Gaussian's NEIGHBOURS nearest
   Gaussians)``, the Gaussian itself being the first of them (what sklearn's
   ``NearestNeighbors(10).kneighbors(X)`` on the fitted points returns; scipy's cKDTree here);
3. min-max normalised over the Gaussians, ``clip(2 n - 1, 0, 1) > THRESHOLD`` selects (n > 0.7);
4. the selected Gaussians are rendered alone into each eval view (:func:`silhouettes`); a pixel
   belongs to the selection when their accumulated alpha is at least ``SILHOUETTE_ALPHA``
   (OpenGaussian's evaluation saves the alpha as an 8-bit image and keeps pixels above 10);
5. IoU of that silhouette with the ground-truth mask of the query in the view, averaged like the
   2D IoU -> mIoU3D.

Rendered alone, a selected object counts where another hides it in the view, as in the reference.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import numpy as np
import torch

NEIGHBOURS = 10                    # nearest Gaussians (itself included) whose mean smooths r
THRESHOLD = 0.4                    # on clip(2 n - 1, 0, 1): n > 0.7 selects
SILHOUETTE_ALPHA = 10.5 / 255      # 8-bit alpha > 10 after rounding: alpha >= 10.5 / 255


def smooth_relevancy(means, relevancy, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """``[N, T]`` float64: ``0.5 (r + mean of r over each Gaussian's ``neighbours`` nearest
    Gaussians, itself included)`` for centres ``means`` ``[N, 3]`` (metres) and relevancy
    ``[N, T]``. Fewer Gaussians than ``neighbours``: all of them."""
    from scipy.spatial import cKDTree

    pts = np.asarray(means, dtype=np.float64)
    r = np.asarray(relevancy, dtype=np.float64)
    k = min(int(neighbours), len(pts))
    if k == 0:
        return r.copy()
    _, idx = cKDTree(pts).query(pts, k=k)                          # [N, k], itself first
    return 0.5 * (r + r[idx.reshape(len(pts), k)].mean(axis=1))


def select(smoothed, threshold: float = THRESHOLD) -> np.ndarray:
    """``[N, T]`` bool: per column (text), min-max normalise ``smoothed`` ``[N, T]`` over the
    Gaussians (``n = (x - min) / (max - min + 1e-9)``) and select where
    ``clip(2 n - 1, 0, 1) > threshold``."""
    x = np.asarray(smoothed, dtype=np.float64)
    n = x - x.min(axis=0, keepdims=True)
    n = n / (n.max(axis=0, keepdims=True) + 1e-9)
    return np.clip(2 * n - 1, 0, 1) > threshold


def gaussian_selection(relevancy, means, neighbours: int = NEIGHBOURS, threshold: float = THRESHOLD) -> np.ndarray:
    """Steps 2-3: ``[N, T]`` bool selection from per-Gaussian raw relevancy ``[N, T]`` and centres
    ``[N, 3]``."""
    return select(smooth_relevancy(means, relevancy, neighbours), threshold)


def silhouettes(renderer, gaussians, selected, T_world_cam, intrinsics,
                alpha: float = SILHOUETTE_ALPHA) -> np.ndarray:
    """Step 4: ``[T, H, W]`` bool silhouettes of the selections ``selected`` ``[N, T]`` (bool) of
    ``gaussians`` in the view ``T_world_cam`` (``[4, 4]`` camera-to-world) with ``intrinsics``
    (its size is the output size): each selection rendered alone, its accumulated alpha
    ``>= alpha``. One render per non-empty selection, of the selected Gaussians only."""
    from ..core.language.field import render_channels

    sel = np.asarray(selected, dtype=bool)
    out = np.zeros((sel.shape[1], int(intrinsics.height), int(intrinsics.width)), dtype=bool)
    dev = gaussians.means.device
    for t in np.flatnonzero(sel.any(axis=0)):
        idx = torch.as_tensor(np.flatnonzero(sel[:, t]), device=dev)
        sub = SimpleNamespace(means=gaussians.means[idx], quats=gaussians.quats[idx],
                              scales=gaussians.scales[idx], opacities=gaussians.opacities[idx])
        with torch.no_grad():  # one channel of ones composites to the accumulated alpha
            a = render_channels(renderer, sub, torch.ones(len(idx), 1, device=dev), T_world_cam, intrinsics, dev)
        out[t] = (a[..., 0] >= alpha).cpu().numpy()
    return out


def selection_fn(renderer, gaussians, relevancy: Sequence, texts: Sequence[str], **kw):
    """A ``(frame, texts) -> [T, H, W] bool`` function for :func:`~.evaluate.score_views` from the
    per-Gaussian raw relevancy ``[N, len(texts)]`` of ``texts`` (the selection is made once)."""
    means = gaussians.means.detach().float().cpu().numpy()
    sel = gaussian_selection(np.asarray(relevancy), means, **kw)
    col = {t: i for i, t in enumerate(texts)}

    def fn(frame, asked):
        cols = [col[t] for t in asked]
        return silhouettes(renderer, gaussians, sel[:, cols], frame.T_world_cam, frame.intrinsics)

    return fn


def label_votes(renderer, gaussians, frames, level: str, ids: Sequence[int]) -> np.ndarray:
    """``[N, len(ids) + 1]`` float64: for each Gaussian, its blending weight summed over the pixels
    of each instance ``ids[j]`` (column j) and over all other pixels (last column) of the
    ``level`` masks of ``frames`` (views with ``masks``, ``T_world_cam``, ``intrinsics``).

    One render and one backward pass per view: the gradient of ``sum_p G[p] . render(c)[p]`` with
    respect to per-Gaussian channels ``c`` is ``sum_p G[p] w_i(p)``; with ``G`` the one-hot label
    image it is each Gaussian's weight inside each label."""
    from ..core.language.field import render_channels

    dev = gaussians.means.device
    col = {int(i): j for j, i in enumerate(ids)}
    L = len(ids) + 1
    votes = torch.zeros(gaussians.means.shape[0], L, dtype=torch.float64, device=dev)
    for fr in frames:
        uniq, inv = np.unique(np.asarray(fr.masks[level]), return_inverse=True)
        lab = np.array([col.get(int(u), L - 1) for u in uniq], dtype=np.int64)[inv.reshape(fr.masks[level].shape)]
        onehot = torch.nn.functional.one_hot(torch.as_tensor(lab, device=dev), L).float()  # [H, W, L]
        c = torch.ones(gaussians.means.shape[0], L, device=dev, requires_grad=True)
        out = render_channels(renderer, gaussians, c, fr.T_world_cam, fr.intrinsics, dev)  # [H, W, L]
        (out * onehot).sum().backward()
        votes += c.grad.double()
    return votes.cpu().numpy()


def vote_winners(votes) -> np.ndarray:
    """``[N]`` int64: the column of :func:`label_votes` ``[N, I + 1]`` each Gaussian renders into
    most, ``-1`` where that is the last column (outside every listed instance) or where it was
    never seen (all votes 0)."""
    v = np.asarray(votes)
    best = v.argmax(axis=1)
    return np.where((v.max(axis=1) > 0) & (best < v.shape[1] - 1), best, -1).astype(np.int64)


def label_oracle_relevancy(renderer, gaussians, frames, labels: dict, queries: Sequence[dict],
                           relevancy_of_labels) -> np.ndarray:
    """``[N, Q]`` per-Gaussian relevancy of a 3D label oracle: at each query's level every Gaussian
    carries the clean text embedding of the ground-truth instance it renders into most over
    ``frames`` (:func:`label_votes`); a Gaussian mostly outside every labelled instance (or never
    seen) gets relevancy 0, as background pixels do in the 2D oracle.

    ``labels``: ``{level: {instance id (str or int): text}}``; ``relevancy_of_labels(level, texts,
    query_rows) -> [len(texts), len(query_rows)]`` raw relevancy of the label texts to those queries."""
    N = gaussians.means.shape[0]
    out = np.zeros((N, len(queries)), dtype=np.float64)
    for lv in sorted({q["level"] for q in queries}):
        rows = [i for i, q in enumerate(queries) if q["level"] == lv]
        names = {int(k): str(v) for k, v in labels.get(lv, {}).items()}
        ids = sorted(names)
        if not ids:
            continue
        best = vote_winners(label_votes(renderer, gaussians, frames, lv, ids))   # [N], -1: none
        r = np.asarray(relevancy_of_labels(lv, [names[i] for i in ids], rows), dtype=np.float64)  # [I, R]
        has = best >= 0
        block = np.zeros((N, len(rows)))
        block[has] = r[best[has]]
        out[:, rows] = block
    return out
