"""New Gaussians where the map does not yet explain a keyframe.

A pixel is unexplained when the map barely covers it (rendered alpha < 0.5) and either a depth
image says there is a surface or the rendered colour (map plus background) differs from the
observed one: a pixel that already shows the background colour is explained by the background.

Each seed sits on its pixel's ray at, in order of preference:
1. the measured depth (depth image);
2. the map's rendered depth, where the map covers the pixel a little (alpha >= 0.05);
3. a random depth, uniform in the range of depths the map shows in this view (5th to 95th
   percentile, widened by 25 % each way), or in [0.5, 1.5] x ``default_depth`` when the map shows
   nothing here. Random depths along the rays rather than one fixed depth: the optimisation then
   keeps the seeds that agree across views (the random-volume initialisation that 3DGS uses for
   NeRF-synthetic scenes, restricted to the viewing rays that need it) instead of having to pull
   a whole sheet of Gaussians through space.
Seeds are isotropic with a standard deviation of the seed spacing projected to their depth, take
the observed colour, and start at opacity ``opacity``.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

UNEXPLAINED_ALPHA = 0.5   # rendered alpha below which a pixel counts as not covered
PARTIAL_ALPHA = 0.05      # rendered depth is trusted from this alpha up
COLOR_TOLERANCE = 0.1     # max abs channel difference for "the render already shows this colour"


def seed_gaussians(
    image: torch.Tensor,              # [H, W, 3] observed, in [0, 1]
    depth: Optional[torch.Tensor],    # [H, W] metres, 0 = invalid
    rendered_rgb: torch.Tensor,       # [H, W, 3] map rendered at this view, background included
    rendered_alpha: torch.Tensor,     # [H, W]
    rendered_depth: torch.Tensor,     # [H, W] expected depth, metres
    K: torch.Tensor,                  # [3, 3] px
    T_world_cam: torch.Tensor,        # [4, 4]
    n_max: int,
    default_depth: float,
    generator: torch.Generator,       # CPU generator (deterministic on every device)
    opacity: float = 0.1,
) -> Dict[str, torch.Tensor]:
    """``{"means" [M, 3], "rgb" [M, 3], "scales" [M] (std dev, m), "opacity" [M]}`` with M <= n_max."""
    dev = image.device
    H, W = image.shape[:2]
    err = (rendered_rgb - image).abs().amax(dim=-1)
    need = err > COLOR_TOLERANCE
    if depth is not None:
        need = need | (depth > 0)
    need = need & (rendered_alpha < UNEXPLAINED_ALPHA)
    pix = torch.nonzero(need.reshape(-1)).squeeze(1)
    n_need = pix.numel()
    empty = {"means": torch.zeros(0, 3, device=dev), "rgb": torch.zeros(0, 3, device=dev),
             "scales": torch.zeros(0, device=dev), "opacity": torch.zeros(0, device=dev)}
    if n_need == 0 or n_max <= 0:
        return empty
    if n_need > n_max:
        pix = pix[torch.randperm(n_need, generator=generator)[:n_max].to(dev)]
    m = pix.numel()
    v, u = pix // W, pix % W

    d = torch.zeros(m, device=dev)
    known = torch.zeros(m, dtype=torch.bool, device=dev)
    if depth is not None:
        d_obs = depth.reshape(-1)[pix]
        known = d_obs > 0
        d = torch.where(known, d_obs, d)
    a = rendered_alpha.reshape(-1)[pix]
    from_map = ~known & (a >= PARTIAL_ALPHA)
    d = torch.where(from_map, rendered_depth.reshape(-1)[pix], d)
    rand = ~(known | from_map)
    if rand.any():
        covered = rendered_depth[(rendered_alpha >= UNEXPLAINED_ALPHA) & (rendered_depth > 0)]
        if covered.numel() >= 16:
            sample = covered[:: max(1, covered.numel() // 100_000)].float()  # quantile's size limit
            q = torch.quantile(sample, torch.tensor([0.05, 0.95], device=dev))
            lo, hi = 0.8 * float(q[0]), 1.25 * float(q[1])
        else:
            lo, hi = 0.5 * default_depth, 1.5 * default_depth
        r = torch.rand(m, generator=generator).to(dev)
        d = torch.where(rand, lo + (hi - lo) * r, d)

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x = (u.float() + 0.5 - cx) / fx * d
    y = (v.float() + 0.5 - cy) / fy * d
    p_cam = torch.stack([x, y, d], dim=-1)
    means = p_cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
    spacing = (n_need / m) ** 0.5          # px between seeds in the unexplained region
    scales = d * spacing / (0.5 * (fx + fy))
    return {"means": means, "rgb": image.reshape(-1, 3)[pix], "scales": scales,
            "opacity": torch.full((m,), float(opacity), device=dev)}
