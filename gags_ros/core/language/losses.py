"""Losses of granularity-aware distillation (GAGS section 2, Eqs. 3-7), vectorised.

Notation: P supervised pixels (covered by a mask at every level the target uses), F latent channels,
D embedding channels, M teacher masks of the keyframe (all levels; their row in the teacher's
embedding table doubles as the region id), levels ordered (subpart, part, whole).

- Eq. 3, distillation: per pixel, the L1 distance between the decoded embedding F_hat(p) and the
  weighted target F_gt(p) = sum_k w_k(p) F_k(p), averaged over the D channels (the channel mean
  keeps the loss scale independent of D, so the entropy and variance weights of Eq. 7 mean the same
  for 384-d and 512-d teachers); averaged over pixels.
- Eq. 4, entropy: mean over supervised pixels of sum_k -w_k log(w_k + 1e-6).
- Eq. 5, region-aware averaging: w smoothed by a 5x5 mean filter (borders average the pixels
  inside the image); every pixel belongs to the mask of its argmax level; the per-pixel loss is
  averaged inside each region, then over the regions present, so every object counts equally
  whatever its image area.
- Eq. 6, feature consistency: sum over regions of n_r * mean_c Var_{p in r}(f_c(p)) / (H W) on the
  rendered latents; with population variances this equals
  sum_p mean_c (f_c(p) - mu_{r(p), c})^2 / (H W).
- Eq. 7, schedule: first half L_distill + 0.001 L_H; second half region-aware L_distill +
  0.002 L_H + 0.1 L_var (weights from ``LanguageConfig``).

Ablation modes (``LanguageConfig.mode``): ``gad`` (learned w), ``avg`` (w = 1/3 each),
``subpart``/``part``/``whole`` (one-hot w). With a fixed w the entropy term is constant and left out
(reported as 0) and the granularity decoder is not run. Regions in fixed modes: the level with the
largest fixed weight; for ``avg`` (a three-way tie) the part level, the middle granularity.
Supervised pixels in single-level modes are those covered at that level; ``avg`` and ``gad`` need
all three levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch.nn import functional as F

__all__ = [
    "LEVEL_INDEX", "MODES", "LossWeights", "TeacherTargets", "box_mean", "distill_l1", "entropy",
    "feature_variance", "fixed_weights", "language_losses", "region_ids", "region_mean",
    "schedule_weights", "weighted_target",
]

LEVEL_INDEX = {"subpart": 0, "part": 1, "whole": 2}
MODES = ("gad", "avg", "subpart", "part", "whole")
ENTROPY_EPS = 1e-6


@dataclass
class LossWeights:
    """Weights of one step of Eq. 7."""

    region_aware: bool
    entropy: float
    variance: float


def schedule_weights(step: int, total_steps: int, entropy_early: float = 0.001, entropy_late: float = 0.002,
                     variance: float = 0.1) -> LossWeights:
    """Eq. 7: plain distillation + ``entropy_early`` L_H for ``step < total_steps / 2`` (0-based),
    afterwards region-aware distillation + ``entropy_late`` L_H + ``variance`` L_var (also after
    ``total_steps``: online mapping keeps the second-half objective)."""
    if 2 * step < total_steps:
        return LossWeights(False, float(entropy_early), 0.0)
    return LossWeights(True, float(entropy_late), float(variance))


@dataclass
class TeacherTargets:
    """A keyframe's teacher output at render resolution.

    level_ids:  ``[3, H, W]`` int64 rows of ``embeddings`` (-1 = no mask), levels in LEVELS order.
    embeddings: ``[M, D]`` unit-norm (float16 or float32).
    """

    level_ids: torch.Tensor
    embeddings: torch.Tensor

    @property
    def num_regions(self) -> int:
        return int(self.embeddings.shape[0])


def fixed_weights(mode: str, n: int, device, dtype=torch.float32) -> Optional[torch.Tensor]:
    """``[n, 3]`` level weights of a fixed-weight mode, or None for ``gad``."""
    if mode == "gad":
        return None
    if mode == "avg":
        return torch.full((n, 3), 1.0 / 3.0, device=device, dtype=dtype)
    if mode not in LEVEL_INDEX:
        raise ValueError(f"unknown distillation mode {mode!r}; expected one of {MODES}")
    w = torch.zeros(n, 3, device=device, dtype=dtype)
    w[:, LEVEL_INDEX[mode]] = 1.0
    return w


def box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """``[C, H, W]`` -> ``[C, H, W]`` mean over the ``k x k`` window around each pixel (for even k
    the window reaches one pixel further right/down), averaging only pixels inside the image."""
    lo = (k - 1) // 2
    hi = k - 1 - lo
    xp = F.pad(x[None], (lo, hi, lo, hi))
    ones = F.pad(torch.ones_like(x[:1])[None], (lo, hi, lo, hi))
    s = F.avg_pool2d(xp, k, stride=1)
    c = F.avg_pool2d(ones, k, stride=1)
    return (s / c)[0]


def distill_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[P, D]``, ``[P, D]`` -> ``[P]`` per-pixel L1 distance, mean over channels (Eq. 3)."""
    return (pred - target).abs().mean(dim=-1)


def entropy(w: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ``[P, 3]`` weights -> scalar mean over pixels of sum_k -w_k log(w_k + 1e-6)."""
    if w.shape[0] == 0:
        return w.sum() * 0.0
    return (-(w * torch.log(w + ENTROPY_EPS)).sum(dim=-1)).mean()


def region_ids(level_ids: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Region of each pixel: the mask id at its chosen level.

    level_ids: ``[3, P]`` int64; level: ``[P]`` int64 in {0, 1, 2} -> ``[P]`` int64.
    """
    return level_ids.gather(0, level[None])[0]


def region_mean(values: torch.Tensor, regions: torch.Tensor, num_regions: int) -> torch.Tensor:
    """Eq. 5 averaging: ``values`` ``[P]`` averaged inside each region id of ``regions`` ``[P]``
    (in [0, num_regions)), then over the regions that have pixels. Differentiable in ``values``."""
    if values.shape[0] == 0:
        return values.sum() * 0.0
    sums = torch.zeros(num_regions, device=values.device, dtype=values.dtype).index_add(0, regions, values)
    counts = torch.bincount(regions, minlength=num_regions).to(values.dtype)
    present = counts > 0
    return (sums[present] / counts[present]).mean()


def feature_variance(f: torch.Tensor, regions: torch.Tensor, num_regions: int, num_pixels: int) -> torch.Tensor:
    """Eq. 6: ``f`` ``[P, F]`` rendered latents of supervised pixels, ``regions`` ``[P]``;
    ``num_pixels`` = H * W of the whole render. Population variance per region and channel."""
    if f.shape[0] == 0:
        return f.sum() * 0.0
    counts = torch.bincount(regions, minlength=num_regions).to(f.dtype).clamp_min(1.0)
    sums = torch.zeros(num_regions, f.shape[1], device=f.device, dtype=f.dtype).index_add(0, regions, f)
    mu = sums / counts[:, None]
    dev = f - mu[regions]
    return dev.pow(2).mean(dim=-1).sum() / float(num_pixels)


TARGET_CHUNK = 1 << 16  # pixels per chunk of the target gathers (bounds their temporaries)


class _WeightedTarget(torch.autograd.Function):
    """F_gt = sum_k w_k E[ids_k] in float32 without keeping a ``[P, 3, D]`` tensor: the forward and
    the backward (d/dw_k = g . E[ids_k]) gather the level embeddings chunk by chunk. At 640x480
    and D = 512 the dense gather would hold 1.8 GB in float32, and a float16 one would flush the
    ~1e-8 gradients of a per-pixel mean to zero."""

    @staticmethod
    def forward(ctx, w, ids, embeddings):
        ctx.save_for_backward(ids, embeddings)
        ids0 = ids.clamp_min(0)
        out = torch.empty(w.shape[0], embeddings.shape[1], device=w.device, dtype=torch.float32)
        for s in range(0, w.shape[0], TARGET_CHUNK):
            e = slice(s, s + TARGET_CHUNK)
            acc = w[e, 0, None].float() * embeddings[ids0[0, e]].float()
            for k in range(1, ids.shape[0]):
                acc += w[e, k, None].float() * embeddings[ids0[k, e]].float()
            out[e] = acc
        return out

    @staticmethod
    def backward(ctx, g):
        ids, embeddings = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        ids0 = ids.clamp_min(0)
        gw = torch.empty(g.shape[0], ids.shape[0], device=g.device, dtype=torch.float32)
        for s in range(0, g.shape[0], TARGET_CHUNK):
            e = slice(s, s + TARGET_CHUNK)
            for k in range(ids.shape[0]):
                gw[e, k] = (g[e].float() * embeddings[ids0[k, e]].float()).sum(-1)
        return gw, None, None


def weighted_target(w: torch.Tensor, ids: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """F_gt = sum_k w_k F_k: ``w`` ``[P, 3]``, ``ids`` ``[3, P]`` int64 rows of ``embeddings``
    ``[M, D]`` (any float type; -1 = uncovered, only where its weight is 0) -> ``[P, D]`` float32,
    differentiable in ``w``."""
    return _WeightedTarget.apply(w, ids, embeddings)


def language_losses(latents: torch.Tensor, targets: TeacherTargets, field, mode: str,
                    weights: LossWeights) -> dict:
    """All terms of Eq. 7 for one rendered view.

    latents: ``[H, W, F]`` rendered latents (differentiable into the Gaussians' features).
    targets: teacher output at the same ``H x W``. field: a ``LanguageField``.
    Returns tensors ``loss`` (to backpropagate), ``distill``, ``entropy``, ``variance`` and the
    number of supervised ``pixels``.
    """
    H, W, Fdim = latents.shape
    ids = targets.level_ids.reshape(3, H * W)
    if mode in LEVEL_INDEX:
        valid = ids[LEVEL_INDEX[mode]] >= 0
    else:
        valid = (ids >= 0).all(dim=0)
    flat = latents.reshape(H * W, Fdim)
    idx = valid.nonzero(as_tuple=True)[0]
    f = flat[idx]                                         # [P, F]
    ids_v = ids[:, idx]                                   # [3, P]
    P = int(idx.shape[0])

    w = fixed_weights(mode, P, latents.device)
    if w is None:
        w_all = field.granularity(flat)                   # [HW, 3]; input detached inside
        w = w_all[idx]
        l_h = entropy(w)
    else:
        w_all = None
        l_h = latents.sum() * 0.0

    # Target: weighted sum of the three level embeddings; uncovered levels (single-level modes)
    # have weight 0, their clamped row is a placeholder.
    target = weighted_target(w, ids_v, targets.embeddings)
    pred = field.decode(f)                                # [P, D]
    per_pixel = distill_l1(pred, target)                  # [P]

    zero = latents.sum() * 0.0
    if weights.region_aware and P > 0:
        if w_all is not None:
            ws = box_mean(w_all.detach().T.reshape(3, H, W), 5).reshape(3, H * W)[:, idx]
            level = ws.argmax(dim=0)
        else:
            fixed = 1 if mode == "avg" else LEVEL_INDEX[mode]
            level = torch.full((P,), fixed, device=latents.device, dtype=torch.long)
        regions = region_ids(ids_v, level)
        l_d = region_mean(per_pixel, regions, targets.num_regions)
        l_var = feature_variance(f, regions, targets.num_regions, H * W) if weights.variance > 0 else zero
    else:
        l_d = per_pixel.mean() if P > 0 else zero
        l_var = zero

    loss = l_d + weights.entropy * l_h + weights.variance * l_var
    return {"loss": loss, "distill": l_d.detach(), "entropy": l_h.detach(), "variance": l_var.detach(),
            "pixels": P}
