"""Pure-PyTorch EWA splatting: the CPU backend and the reference of the gsplat backend.

It follows gsplat 1.5.3's classic 3DGS pipeline step by step so both backends give the same images:

- projection (``ProjectionEWA3DGSFused.cu``): world -> camera, near/far culling on the centre's
  depth, ``Sigma_2d = J W Sigma W^T J^T`` with the Jacobian evaluated at the centre clamped to
  1.3x the field of view, ``+ eps2d * I`` low-pass, culling of degenerate covariances, of
  opacities below 1/255 and of Gaussians whose box misses the image;
- opacity-aware box: half-size ``ceil(sqrt(2 ln(255 o)) * sqrt(Sigma_2d[i, i]))`` pixels, which
  is exactly where ``o exp(-sigma)`` falls below 1/255 along each axis, so pairing a pixel only
  with the Gaussians whose box covers it drops nothing it would use;
- rasterization (``RasterizeToPixels3DGSFwd.cu``): per pixel, Gaussians sorted by camera depth,
  ``alpha = min(0.999, o exp(-sigma))`` (gsplat clamps at 0.999; the original 3DGS code at
  0.99), contributions with ``alpha < 1/255`` skipped (``sigma < 0``, which gsplat also skips,
  cannot occur with a positive-definite conic), and a pixel stops before the Gaussian that would
  bring its transmittance to ``<= 1e-4``.

Everything is differentiable by autograd. Work and memory scale with the number of (pixel,
Gaussian) pairs inside the boxes; large images are processed in bands of rows (``max_pairs``).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch.utils.checkpoint import checkpoint

from ..gaussians import quat_to_rotmat  # noqa: F401  (re-exported for tests)
from . import RenderOutput

ALPHA_MIN = 1.0 / 255.0   # gsplat's ALPHA_THRESHOLD
ALPHA_MAX = 0.999         # gsplat's clamp of a single Gaussian's alpha
T_MIN = 1e-4              # a pixel stops before its transmittance drops to this


def covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` world covariances ``R S S R^T`` from ``quats`` ``[N, 4]`` and std devs ``[N, 3]``."""
    M = quat_to_rotmat(quats) * scales[:, None, :]
    return M @ M.transpose(-1, -2)


def project(
    means: torch.Tensor,      # [N, 3]
    covars: torch.Tensor,     # [N, 3, 3]
    opacities: torch.Tensor,  # [N]
    viewmat: torch.Tensor,    # [4, 4] world -> camera
    K: torch.Tensor,          # [3, 3]
    width: int,
    height: int,
    eps2d: float,
    near: float,
    far: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EWA projection of N Gaussians into one camera.

    Returns ``radii`` ``[N, 2]`` int32 (box half-size in px, 0 = culled), ``means2d`` ``[N, 2]`` px,
    ``depths`` ``[N]`` metres (camera z of the centre) and ``conics`` ``[N, 3]`` (upper triangle of
    the inverse 2D covariance, ``a, b, c`` for ``[[a, b], [b, c]]``). Culled entries hold finite
    but meaningless values.
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    p = means @ R.T + t                                     # [N, 3] camera frame
    x, y, z = p.unbind(-1)
    in_range = (z >= near) & (z <= far)
    # Culled Gaussians are still carried through the maths below: give them a harmless depth so
    # nothing divides by zero (their outputs are never used and receive no gradient).
    z_safe = torch.where(in_range, z, torch.ones_like(z))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx = z_safe * torch.minimum(lim_xp, torch.maximum(-lim_xn, x / z_safe))
    ty = z_safe * torch.minimum(lim_yp, torch.maximum(-lim_yn, y / z_safe))
    zeros = torch.zeros_like(z)
    J = torch.stack([fx / z_safe, zeros, -fx * tx / z_safe ** 2,
                     zeros, fy / z_safe, -fy * ty / z_safe ** 2], dim=-1).reshape(-1, 2, 3)
    JW = J @ R                                              # [N, 2, 3]
    cov2d = JW @ covars @ JW.transpose(-1, -2)              # [N, 2, 2]
    a = cov2d[:, 0, 0] + eps2d
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + eps2d
    det = a * c - b * b
    ok = in_range & (det > 0)
    det_safe = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], dim=-1)

    with torch.no_grad():
        op = opacities.detach()
        ok = ok & (op >= ALPHA_MIN)
        extend = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_MIN) / ALPHA_MIN)).clamp_max(3.33)
        rx = torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0)))
        ok = ok & ((rx > 0) | (ry > 0))
        mx, my = means2d.detach().unbind(-1)
        ok = ok & (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.stack([rx, ry], dim=-1).where(ok[:, None], torch.zeros_like(rx)[:, None])
    return radii.to(torch.int32), means2d, torch.where(in_range, z, zeros), conics


def _pairs(m2: torch.Tensor, r: torch.Tensor, y_lo: int, y_hi: int, width: int
           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every (pixel, Gaussian) pair of the rows ``[y_lo, y_hi)`` whose pixel lies in the Gaussian's
    box, ordered by pixel and, within a pixel, by the Gaussians' order (front to back).

    ``m2`` ``[K, 2]`` px and ``r`` ``[K, 2]`` box half-sizes (detached). Returns ``(pixel ids [M]``
    (row-major over the whole image), ``Gaussian ids [M])``.
    """
    dev = m2.device
    x0 = torch.floor(m2[:, 0] - r[:, 0]).clamp(0, width).long()
    x1 = torch.ceil(m2[:, 0] + r[:, 0]).clamp(0, width).long()
    y0 = torch.floor(m2[:, 1] - r[:, 1]).clamp(y_lo, y_hi).long()
    y1 = torch.ceil(m2[:, 1] + r[:, 1]).clamp(y_lo, y_hi).long()
    bw = x1 - x0
    counts = bw * (y1 - y0)
    gid = torch.repeat_interleave(torch.arange(len(m2), device=dev), counts)
    if gid.numel() == 0:
        return gid, gid
    first = torch.cumsum(counts, 0) - counts
    j = torch.arange(gid.numel(), device=dev) - first[gid]
    bw_g = bw[gid]
    pid = (y0[gid] + j // bw_g) * width + x0[gid] + j % bw_g
    order = torch.sort(pid, stable=True).indices   # pairs were made front to back per Gaussian
    return pid[order], gid[order]


def _composite(
    pid: torch.Tensor,      # [M] pixel ids, grouped by pixel
    gid: torch.Tensor,      # [M] Gaussian ids, front to back within a pixel
    means2d: torch.Tensor,  # [K, 2] px
    conics: torch.Tensor,   # [K, 3]
    opac: torch.Tensor,     # [K]
    feats: torch.Tensor,    # [K, D]
    width: int,
    y_lo: int,
    n_pixels: int,
) -> torch.Tensor:
    """Front-to-back alpha compositing of the pairs (pixel ids counted from row ``y_lo``):
    ``[n_pixels, D + 1]`` holding
    ``sum_i w_i f_i`` and, last, ``sum_i w_i`` (the alpha), ``w_i = alpha_i prod_{j<i}(1 - alpha_j)``."""
    px = (pid % width).to(means2d.dtype) + 0.5
    py = (pid // width + y_lo).to(means2d.dtype) + 0.5
    # index_select rather than fancy indexing: its backward (index_add) is deterministic on CPU.
    m2 = means2d.index_select(0, gid)
    dx = m2[:, 0] - px
    dy = m2[:, 1] - py
    co = conics.index_select(0, gid)
    # sigma = 0.5 (a dx^2 + c dy^2) + b dx dy, >= 0 since the conic is positive definite.
    sigma = dx * (0.5 * co[:, 0] * dx + co[:, 1] * dy) + 0.5 * co[:, 2] * dy * dy
    alpha = torch.exp(torch.log(opac.index_select(0, gid)) - sigma).clamp_max(ALPHA_MAX)
    alpha = alpha * (alpha >= ALPHA_MIN)
    # Transmittance in log space with one cumulative sum over all pairs; float64 keeps the
    # per-pixel differences of the running sum exact to ~1e-9.
    la = torch.log1p(-alpha).double()
    ex = torch.cumsum(la, 0) - la                          # exclusive running sum over all pairs
    idx = torch.arange(len(pid), device=pid.device)
    starts = torch.ones_like(pid, dtype=torch.bool)
    starts[1:] = pid[1:] != pid[:-1]
    seg_first = torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), 0).values
    log_T_before = ex - ex.index_select(0, seg_first)
    T_before = torch.exp(log_T_before).to(alpha.dtype)
    # A pixel stops before the Gaussian that would leave T <= 1e-4; T only decreases, so the test
    # on each pair alone is enough.
    keep = torch.exp(log_T_before + la).detach() > T_MIN
    w = alpha * T_before * keep
    src = torch.cat([feats.index_select(0, gid) * w[:, None], w[:, None]], dim=1)
    out = torch.zeros(n_pixels, src.shape[1], device=src.device, dtype=src.dtype)
    return out.index_add(0, pid, src)


class TorchRenderer:
    """Differentiable EWA splatting in plain PyTorch (any device; meant for small images).

    Instead of gsplat's 16x16 tiles, every pixel is paired with exactly the Gaussians whose box
    covers it, which on a CPU wastes far less work on small Gaussians; the result is the same.
    ``eps2d``: low-pass added to the 2D covariance, px^2 (gsplat's and 3DGS's 0.3).
    ``max_pairs``: (pixel, Gaussian) pairs processed at once; images needing more are done in
    bands of rows, each recomputed in the backward pass instead of stored (bounds memory).
    """

    name = "torch"

    def __init__(self, eps2d: float = 0.3, max_pairs: int = 1 << 22):
        self.eps2d = float(eps2d)
        self.max_pairs = int(max_pairs)

    def render(
        self,
        means: torch.Tensor,      # [N, 3] metres, world frame
        quats: torch.Tensor,      # [N, 4] unit (w, x, y, z)
        scales: torch.Tensor,     # [N, 3] standard deviations, metres
        opacities: torch.Tensor,  # [N] in (0, 1)
        colors: torch.Tensor,     # [N, D] or [C, N, D]
        viewmats: torch.Tensor,   # [C, 4, 4] world -> camera
        Ks: torch.Tensor,         # [C, 3, 3] pixels
        width: int,
        height: int,
        background: Optional[torch.Tensor] = None,  # [C, D] or [D]
        with_depth: bool = True,
        near: float = 0.01,       # metres
        far: float = 1e10,        # metres
    ) -> RenderOutput:
        C, N = viewmats.shape[0], means.shape[0]
        D = colors.shape[-1]
        dev, dt = means.device, means.dtype
        covars = covariances(quats, scales)                  # [N, 3, 3]
        proj = [project(means, covars, opacities, viewmats[c], Ks[c], width, height, self.eps2d, near, far)
                for c in range(C)]
        radii = torch.stack([p[0] for p in proj])            # [C, N, 2]
        means2d = torch.stack([p[1] for p in proj])          # [C, N, 2]
        depths = torch.stack([p[2] for p in proj])           # [C, N]
        conics = torch.stack([p[3] for p in proj])           # [C, N, 3]
        if means2d.requires_grad:
            means2d.retain_grad()

        images = []
        for c in range(C):
            feats = colors[c] if colors.dim() == 3 else colors
            if with_depth:
                feats = torch.cat([feats, depths[c][:, None]], dim=-1)
            vis = torch.nonzero((radii[c] > 0).all(dim=-1)).squeeze(1)
            vis = vis[torch.argsort(depths[c, vis].detach(), stable=True)]
            m2, co = means2d[c].index_select(0, vis), conics[c].index_select(0, vis)
            op, fe = opacities.index_select(0, vis), feats.index_select(0, vis)
            m2d, r = m2.detach(), radii[c, vis].to(dt)
            # Bands of rows small enough for max_pairs (estimated from the boxes' areas).
            n_pairs = float(((2 * r[:, 0] + 1) * (2 * r[:, 1] + 1)).sum()) if len(vis) else 0.0
            n_bands = max(1, min(height, math.ceil(n_pairs / self.max_pairs)))
            bounds = [round(height * b / n_bands) for b in range(n_bands + 1)]
            bands = []
            for y_lo, y_hi in zip(bounds[:-1], bounds[1:]):
                pid, gid = _pairs(m2d, r, y_lo, y_hi, width)
                pid = pid - y_lo * width
                n_pix = (y_hi - y_lo) * width
                args = (pid, gid, m2, co, op, fe, width, y_lo, n_pix)
                if n_bands > 1 and torch.is_grad_enabled():
                    bands.append(checkpoint(_composite, *args, use_reentrant=False))
                else:
                    bands.append(_composite(*args))
            images.append(torch.cat(bands, dim=0).reshape(height, width, -1))
        img = torch.stack(images)                            # [C, H, W, D(+1) + 1]
        alpha = img[..., -1:]                                # [C, H, W, 1]
        img = img[..., :-1]

        depth = None
        if with_depth:
            # gsplat's "ED": accumulated depth over accumulated alpha.
            depth = img[..., D:] / alpha.clamp_min(1e-10)
            img = img[..., :D]
        if background is not None:
            bg = background.to(dev, dt)
            bg = bg.expand(C, D) if bg.dim() == 1 else bg
            img = img + (1.0 - alpha) * bg[:, None, None, :]
        meta = {
            "means2d": means2d,          # [C, N, 2] px, grad retained for densification
            "radii": radii,              # [C, N, 2] int32, 0 = not rendered
            "depths": depths,            # [C, N] metres
            "conics": conics,            # [C, N, 3]
            "opacities": opacities.detach().expand(C, N),
            "gaussian_ids": None,        # packed=False layout, as gsplat's strategies expect
            "width": width,
            "height": height,
            "n_cameras": C,
            "n_batches": 1,
        }
        return RenderOutput(colors=img, alpha=alpha, depth=depth, meta=meta)
