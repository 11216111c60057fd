"""Language coverage: how much teacher supervision each Gaussian has received.

A Gaussian that no teacher mask ever covered has latents that nothing constrained (new Gaussians
start near zero, and the decoder maps those to middling relevancy for every text). On scenes where
SAM leaves regions without masks (floors, walls, thin or textureless surfaces) such Gaussians won
most 3D answers (../shared/docs/ANSWERS_EVIDENCE.md: 61-90 % of the misses). The query engine
therefore treats them as *unknown*, not as relevant.

Per Gaussian i the map keeps five records (per-Gaussian records of the map, so densification,
pruning and relocation carry them with their Gaussian; children inherit their parent's):

- ``coverage_seen``: sum over teacher keyframes and pixels p of i's blend weight w_i(p) (the
  alpha-compositing weight T_i(p) alpha_i(p) with which it contributes to pixel p);
- ``coverage_whole`` / ``coverage_part`` / ``coverage_subpart``: the same sum over the pixels
  covered by some mask of that level;
- ``coverage_all``: over the pixels covered at all three levels (what the avg and GaD objectives
  supervise).

Units are pixels at the distillation render size; the query uses the resolution-free ratio
``supervised / seen`` (:func:`supervised_fraction`) and "seen at all" (``seen > 0``).

In the same pass the map keeps three more records, ``view_x`` / ``view_y`` / ``view_z``: the sum
over teacher keyframes and pixels of w_i(p) times the pixel's unit viewing ray (world frame, from
the camera into the scene). Normalised, a Gaussian's (or a patch's) sum points from where it was
seen into the surface it models: the side the object's interior lies on
(the query places a target a little inside the surface it found,
``query.inset``).

The sums come from one extra render per teacher keyframe: render a constant channel per record
``c_ik`` and backpropagate ``sum_p m_k(p) * render_k(p)``; since ``render_k(p) = sum_i w_i(p) c_ik``,
the gradient with respect to ``c_ik`` is exactly ``sum_p m_k(p) w_i(p)``. Any renderer that is
differentiable in its colours gives it (ours and gsplat alike).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..camera import pixel_rays
from ..teachers.base import LEVELS
from .field import render_channels

SEEN = "coverage_seen"
ALL = "coverage_all"
PER_LEVEL = {lv: f"coverage_{lv}" for lv in LEVELS}
RECORDS = (SEEN, *PER_LEVEL.values(), ALL)
VIEW = ("view_x", "view_y", "view_z")


def ensure_records(mapper) -> None:
    """Register the coverage records on ``mapper`` (new Gaussians start uncovered)."""
    for name in RECORDS + VIEW:
        mapper.add_record(name, 0.0)


def has_coverage(gaussians) -> bool:
    return all(name in getattr(gaussians, "records", {}) for name in RECORDS)


def pixel_masks(level_ids: torch.Tensor) -> torch.Tensor:
    """``[5, H, W]`` float masks (seen, one per level in LEVELS order, all levels) of teacher mask
    ids ``[3, H, W]`` (-1 = no mask), in :data:`RECORDS` order."""
    covered = (level_ids >= 0).float()
    return torch.cat([torch.ones_like(covered[:1]), covered, covered.prod(dim=0, keepdim=True)])


def has_view(gaussians) -> bool:
    return all(name in getattr(gaussians, "records", {}) for name in VIEW)


def unit_rays(intrinsics, T_world_cam, device) -> torch.Tensor:
    """``[H, W, 3]`` unit viewing ray of every pixel centre in the world frame (camera to scene)."""
    _, d = pixel_rays(intrinsics, np.asarray(T_world_cam.detach().cpu() if torch.is_tensor(T_world_cam)
                                             else T_world_cam, dtype=np.float64))
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    return torch.as_tensor(d, dtype=torch.float32, device=device)


def accumulate(renderer, mapper, level_ids: torch.Tensor, T_world_cam, intrinsics, device) -> None:
    """Add one teacher keyframe's coverage and view records to the records of
    ``mapper.gaussians`` (registered on first use).

    ``level_ids``: ``[3, H, W]`` mask ids at the size of ``intrinsics`` (the render).
    """
    weights = torch.cat([pixel_masks(level_ids.to(device)).permute(1, 2, 0),              # [H, W, 5 + 3]
                         unit_rays(intrinsics, T_world_cam, device)], dim=-1)
    _add_blend_sums(renderer, mapper, weights, RECORDS + VIEW, T_world_cam, intrinsics, device)


def accumulate_view(renderer, mapper, T_world_cam, intrinsics, device) -> None:
    """Add one view's view records only (the coverage records untouched): for maps saved
    before the view records existed."""
    _add_blend_sums(renderer, mapper, unit_rays(intrinsics, T_world_cam, device), VIEW, T_world_cam,
                    intrinsics, device)


def _add_blend_sums(renderer, mapper, weights: torch.Tensor, names, T_world_cam, intrinsics, device) -> None:
    """Add ``sum_p weights[p, k] w_i(p)`` to record ``names[k]`` of every Gaussian i (``weights``
    ``[H, W, K]``, the render's size; those records registered on first use, no others)."""
    for name in names:
        mapper.add_record(name, 0.0)
    g = mapper.gaussians
    n = len(g)
    if n == 0:
        return
    probe = torch.zeros(n, weights.shape[-1], device=device, requires_grad=True)
    with torch.enable_grad():
        img = render_channels(renderer, g, probe, T_world_cam, intrinsics, device)  # [H, W, K]
        (img * weights).sum().backward()
    sums = probe.grad.detach()
    for k, name in enumerate(names):
        g.record(name).add_(sums[:, k])


def supervised_fraction(gaussians, mode: str) -> Optional[torch.Tensor]:
    """``[N]`` share of each Gaussian's seen blend weight that fell on pixels the language
    objective of ``mode`` supervises (0 for a Gaussian never seen by a teacher keyframe), or None
    for a map without coverage records (e.g. loaded from an older file: coverage unknown)."""
    if not has_coverage(gaussians):
        return None
    name = PER_LEVEL.get(mode, ALL)            # single-level modes supervise their level's pixels
    seen = gaussians.record(SEEN)
    return torch.where(seen > 0, gaussians.record(name) / seen.clamp_min(1e-12), torch.zeros_like(seen))
