"""Where SAM is prompted: granularity-aware prompts (GAGS Eq. 1) and the minimum-depth record.

GAGS wants an object to get the same SAM granularity in every view, so the prompt density of an
image region follows how much closer the map has seen that surface before:

    r(P) = mean(D[P]) / mean(D_min[P where D_min > 0])
    n(P) = 1 if r < 1 or r undefined, else clamp(floor(4 r), 1, n_max)

for every patch ``P`` of a ``prompt_patches x prompt_patches`` split of the image (8 x 8 in GAGS);
the patch gets ``n * n`` prompt points. ``D`` is the rendered depth of the view and ``D_min`` the
per-Gaussian minimum visible depth over all views seen so far, splatted back into the view
(:class:`MinDepthRecord`). Inside a patch, points are drawn from a 10 x 10 sub-grid of cells with
probability proportional to the number of projected Gaussians per cell (uniformly over the cells
where the patch has none), each uniformly inside its cell.

Choices made here (the paper leaves them open):

- The prompt budget is one constant, ``prompt_scale``, that multiplies every patch's ``n * n`` in
  every view (randomised rounding: ``floor(s n^2)`` plus one with probability of the remainder), so
  the expected counts keep Eq. 1's ratios between patches and between views. Eq. 1 exists for those
  ratios: a view at 3 m gets ``(4 * 3)^2 / 4^2 = 9`` times the prompts of one at 1 m, on a patch
  covering 9 times the surface, so both prompt a surface equally densely. A per-image cap would
  subsample the far view back and undo that.
- ``mean(D[P])`` averages the pixels where the rendered depth is valid (> 0): a pixel where nothing
  was rendered has no depth, and counting it as 0 would make far, half-empty patches look near.
  A patch with no valid depth, or no ``D_min > 0``, has r undefined -> n = 1.
- Without a map (no rendered depth), a constant-depth stand-in is used: ``D = D_min``, so r = 1 and
  n = floor(4) = 4 everywhere, 16 points per patch (1024 for 8 x 8 patches) before ``prompt_scale``,
  uniform inside patches.
  With a depth image but no record, ``D_min = D`` (the view is its own nearest view): the same r = 1.
- Sampling is seeded from ``(seed, key)`` (``key`` = keyframe index), so a keyframe's prompts do not
  depend on the order in which keyframes were processed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

SUBGRID = 10  # cells per patch side for density-weighted sampling (GAGS)
DEPTH_TOLERANCE = 0.25  # a Gaussian is visible when |z - D(p)| <= 0.25 D(p) (GAGS)


@dataclass
class Prompts:
    """Prompt points of one image.

    points: ``[P, 2]`` float32 pixel coordinates (x, y), pixel centres at +0.5.
    n:      ``[patches, patches]`` int64 n of each patch (granularity mode; None in uniform mode).
    counts: ``[patches, patches]`` int64 prompts drawn in each patch: n * n scaled by
            ``prompt_scale`` (granularity mode; None in uniform mode).
    ratio:  ``[patches, patches]`` float32 depth ratio r (NaN where undefined; None in uniform mode).
    """

    points: np.ndarray
    n: Optional[torch.Tensor] = None
    ratio: Optional[torch.Tensor] = None
    counts: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.points.shape[0])


def _as_map(x, device=None) -> Optional[torch.Tensor]:
    if x is None:
        return None
    t = torch.as_tensor(x, device=device)
    if t.dim() == 3:  # [H, W, 1] renders
        t = t[..., 0]
    return t.float()


def patch_ratios(depth: torch.Tensor, min_depth: torch.Tensor, patches: int) -> torch.Tensor:
    """Depth ratio r per patch (Eq. 1), NaN where undefined.

    depth, min_depth: ``[H, W]`` metres, 0 = unknown. Returns ``[patches, patches]`` float32.
    Patch of pixel row y is ``floor(y * patches / H)`` (columns alike).
    """
    h, w = depth.shape
    dev = depth.device
    py = torch.arange(h, device=dev) * patches // h
    px = torch.arange(w, device=dev) * patches // w
    pid = (py[:, None] * patches + px[None, :]).reshape(-1)
    nb = patches * patches

    def patch_mean(m: torch.Tensor) -> torch.Tensor:
        m = m.reshape(-1)
        valid = m > 0
        s = torch.bincount(pid, weights=torch.where(valid, m, 0.0).double(), minlength=nb)
        c = torch.bincount(pid, weights=valid.double(), minlength=nb)
        return torch.where(c > 0, s / c.clamp_min(1), torch.nan)

    r = patch_mean(depth) / patch_mean(min_depth)
    return r.float().reshape(patches, patches)


def points_per_side(ratio: torch.Tensor, n_max: int) -> torch.Tensor:
    """n of Eq. 1 from r: 1 where r < 1 or undefined (NaN/inf), else floor(4 r) clamped to [1, n_max]."""
    ok = torch.isfinite(ratio) & (ratio >= 1.0)
    n = torch.floor(4.0 * torch.where(ok, ratio, 1.0)).long().clamp(1, n_max)
    return torch.where(ok, n, torch.ones_like(n))


def cell_counts(density: Optional[torch.Tensor], h: int, w: int, patches: int) -> torch.Tensor:
    """Projected-Gaussian count per sub-grid cell, ``[patches * patches, SUBGRID * SUBGRID]`` float64.

    density: ``[H, W]`` count of projected Gaussians per pixel (None = none anywhere).
    Row = patch (row-major), column = cell inside the patch (row-major).
    """
    fine = patches * SUBGRID
    if density is None:
        return torch.zeros(patches * patches, SUBGRID * SUBGRID, dtype=torch.float64)
    dev = density.device
    fy = torch.arange(h, device=dev) * fine // h
    fx = torch.arange(w, device=dev) * fine // w
    cid = (fy[:, None] * fine + fx[None, :]).reshape(-1)
    c = torch.bincount(cid, weights=density.reshape(-1).double(), minlength=fine * fine)
    c = c.reshape(patches, SUBGRID, patches, SUBGRID).permute(0, 2, 1, 3)
    return c.reshape(patches * patches, SUBGRID * SUBGRID).cpu()


def scaled_counts(n: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Prompts per patch: ``n * n * scale`` rounded at random to a neighbouring integer (expectation
    exact), ``[patches, patches]`` int64 from ``n`` ``[patches, patches]`` int."""
    want = (n.double() ** 2) * float(scale)
    base = torch.floor(want)
    up = torch.rand(want.shape, generator=generator, dtype=torch.float64) < (want - base)
    return (base + up.double()).long()


def sample_in_cells(k: torch.Tensor, counts: torch.Tensor, h: int, w: int,
                    generator: torch.Generator) -> np.ndarray:
    """``k[p]`` points per patch p, cells drawn with probability ~ ``counts[p]``, uniform inside.

    k: ``[patches, patches]`` int (CPU); counts: ``[patches**2, SUBGRID**2]`` (CPU).
    Returns ``[sum k, 2]`` float32 (x, y) pixels, patches in row-major order.
    """
    patches = k.shape[0]
    k = k.reshape(-1).cpu()
    kmax = int(k.max())
    if kmax == 0:
        return np.zeros((0, 2), np.float32)
    probs = counts.double().clone()
    empty = probs.sum(1) <= 0
    probs[empty] = 1.0  # a patch without Gaussians: uniform over its cells
    # Sampling kmax per patch with replacement and keeping the first k[p] is the same distribution
    # as sampling k[p]; it keeps the whole draw one call.
    cells = torch.multinomial(probs, kmax, replacement=True, generator=generator)  # [patches^2, kmax]
    keep = torch.arange(kmax)[None, :] < k[:, None]
    patch = torch.arange(patches * patches)[:, None].expand_as(cells)[keep]
    cells = cells[keep]
    fine = patches * SUBGRID
    fy = (patch // patches) * SUBGRID + cells // SUBGRID
    fx = (patch % patches) * SUBGRID + cells % SUBGRID
    u = torch.rand(cells.shape[0], 2, generator=generator, dtype=torch.float64)
    x = (fx + u[:, 0]) * (w / fine)
    y = (fy + u[:, 1]) * (h / fine)
    pts = torch.stack([x, y], 1).float()
    # Cells are half-open; keep points strictly inside the image after float rounding.
    pts[:, 0].clamp_(0.0, np.nextafter(np.float32(w), np.float32(0)))
    pts[:, 1].clamp_(0.0, np.nextafter(np.float32(h), np.float32(0)))
    return pts.numpy()


class PromptSampler:
    """Prompt points for a keyframe from ``TeacherConfig`` (mode, patches, n_max, scale) and a seed."""

    def __init__(self, cfg, seed: int = 0):
        self.cfg = cfg
        self.seed = int(seed)

    def _generator(self, key: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + int(key)) % (2**63 - 1))

    def sample(self, height: int, width: int, depth=None, min_depth=None, density=None,
               key: int = 0) -> Prompts:
        """Prompts for an image of ``height`` x ``width`` pixels.

        depth:     ``[H, W]`` rendered depth D in metres (0 = none); None = constant-depth stand-in.
        min_depth: ``[H, W]`` splatted minimum depth D_min (0 = nothing projects); None = D.
        density:   ``[H, W]`` projected Gaussians per pixel; None = uniform inside patches.
        key:       keyframe index, mixed into the seed.
        """
        cfg = self.cfg
        g = self._generator(key)
        if cfg.prompt_mode == "uniform":
            from segment_anything.utils.amg import build_point_grid

            grid = build_point_grid(cfg.uniform_points_per_side)
            return Prompts((grid * np.array([width, height])).astype(np.float32))

        p = cfg.prompt_patches
        depth = _as_map(depth)
        if depth is None:
            ratio = torch.ones(p, p)
        else:
            if tuple(depth.shape) != (height, width):
                raise ValueError(f"depth is {tuple(depth.shape)}, image is {(height, width)}")
            md = _as_map(min_depth, depth.device)
            ratio = patch_ratios(depth, depth if md is None else md, p).cpu()
        n = points_per_side(ratio, cfg.prompt_n_max)
        dens = _as_map(density)
        if dens is not None and tuple(dens.shape) != (height, width):
            raise ValueError(f"density is {tuple(dens.shape)}, image is {(height, width)}")
        k = scaled_counts(n, cfg.prompt_scale, g)
        pts = sample_in_cells(k, cell_counts(dens, height, width, p), height, width, g)
        return Prompts(pts, n=n, ratio=ratio, counts=k)


@dataclass
class ViewDepthStats:
    """What the record says about one view.

    min_depth: ``[H, W]`` float32 D_min, metres; per pixel the smallest recorded minimum depth of the
               visible Gaussian centres projecting there, 0 where none projects.
    density:   ``[H, W]`` float32 number of visible Gaussian centres projecting into each pixel.
    visible:   ``[N]`` bool, which Gaussians passed the visibility test in this view.
    """

    min_depth: torch.Tensor
    density: torch.Tensor
    visible: torch.Tensor


def _project(means: torch.Tensor, T_world_cam, K, height: int, width: int):
    """Pixel index (flat), camera depth z and in-image mask of ``means`` ``[N, 3]`` (world, metres)."""
    dev = means.device
    T = torch.as_tensor(np.asarray(T_world_cam), dtype=torch.float64, device=dev)
    K = torch.as_tensor(np.asarray(K), dtype=torch.float64, device=dev)
    R, t = T[:3, :3], T[:3, 3]
    cam = (means.double() - t) @ R  # R^T (x - t), row vectors
    z = cam[:, 2]
    front = z > 1e-6
    zs = torch.where(front, z, 1.0)
    u = K[0, 0] * cam[:, 0] / zs + K[0, 2]
    v = K[1, 1] * cam[:, 1] / zs + K[1, 2]
    inside = front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    ui = u.clamp(0, width - 1).long()
    vi = v.clamp(0, height - 1).long()
    return vi * width + ui, z.float(), inside


class MinDepthRecord:
    """Minimum visible depth of every Gaussian over the keyframes seen so far (GAGS GaS).

    ``values``: ``[N]`` float32 metres, +inf for Gaussians never seen visible.

    A Gaussian centre is visible in a view when it projects inside the image, in front of the camera,
    onto a pixel with rendered depth D > 0 and ``|z - D| <= 0.25 D``. The record is splatted back into
    a view as the per-pixel minimum over the visible centres projecting there (no splat radius: Eq. 1
    only needs the mean of D_min over a patch's nonzero pixels, so centre pixels suffice; holes are
    excluded from that mean by construction, and a radius would only re-weight large Gaussians).

    The map changes size as the mapper adds and prunes Gaussians; call :meth:`sync` before use:
    with an ``index_map`` (new index -> old index, -1 = new Gaussian) the record follows exactly;
    without one, growth is taken as appended Gaussians (the mapper seeds new ones at the end) and
    any shrink resets the record, because pruning (gsplat's remove/split) reorders Gaussians and a
    misassigned record is worse than none: it rebuilds from the next keyframes. Only visible
    Gaussians count in the density image too, so an occluded wall behind the surface does not
    attract prompts.
    """

    def __init__(self, device: str | torch.device = "cpu", tolerance: float = DEPTH_TOLERANCE):
        self.device = torch.device(device)
        self.tolerance = float(tolerance)
        self.values = torch.full((0,), float("inf"), device=self.device)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def sync(self, num_gaussians: int, index_map: Optional[torch.Tensor] = None) -> None:
        """Follow the map to ``num_gaussians`` Gaussians (see class doc for ``index_map``)."""
        if index_map is not None:
            idx = torch.as_tensor(index_map, device=self.device).long()
            if idx.shape[0] != num_gaussians:
                raise ValueError(f"index_map has {idx.shape[0]} entries for {num_gaussians} Gaussians")
            # An appended +inf is what indices -1 (new Gaussians) point to.
            ext = torch.cat([self.values, self.values.new_full((1,), float("inf"))])
            self.values = ext[torch.where((idx >= 0) & (idx < len(self)), idx, len(self))]
        elif num_gaussians > len(self):
            pad = torch.full((num_gaussians - len(self),), float("inf"), device=self.device)
            self.values = torch.cat([self.values, pad])
        elif num_gaussians < len(self):
            self.values = torch.full((num_gaussians,), float("inf"), device=self.device)

    def _visible(self, means, T_world_cam, K, depth):
        h, w = depth.shape
        pix, z, inside = _project(means, T_world_cam, K, h, w)
        d = depth.reshape(-1)[pix]
        vis = inside & (d > 0) & ((z - d).abs() <= self.tolerance * d)
        return pix, z, vis

    def observe(self, means: torch.Tensor, T_world_cam, K, depth) -> ViewDepthStats:
        """Update the record with a keyframe, then splat it into that keyframe.

        means: ``[N, 3]`` Gaussian centres (world, metres); T_world_cam ``[4, 4]``; K ``[3, 3]`` px;
        depth: ``[H, W]`` rendered depth of this view (metres, 0 = nothing rendered).
        """
        means, depth = self._inputs(means, depth)
        pix, z, vis = self._visible(means, T_world_cam, K, depth)
        self.values = torch.where(vis, torch.minimum(self.values, z), self.values)
        return self._splat(pix, vis, depth.shape)

    def splat(self, means: torch.Tensor, T_world_cam, K, depth) -> ViewDepthStats:
        """D_min and density of a view without updating the record (arguments as :meth:`observe`)."""
        means, depth = self._inputs(means, depth)
        pix, _, vis = self._visible(means, T_world_cam, K, depth)
        return self._splat(pix, vis & torch.isfinite(self.values), depth.shape)

    def _inputs(self, means, depth):
        means = torch.as_tensor(means, device=self.device).detach().float()
        depth = _as_map(depth, self.device)
        if means.shape[0] != len(self):
            self.sync(means.shape[0])
        return means, depth

    def _splat(self, pix, vis, shape) -> ViewDepthStats:
        h, w = shape
        p = pix[vis]
        dmin = torch.full((h * w,), float("inf"), device=self.device)
        dmin.scatter_reduce_(0, p, self.values[vis], reduce="amin")
        dmin = torch.where(torch.isfinite(dmin), dmin, 0.0)
        dens = torch.bincount(p, minlength=h * w).float()
        return ViewDepthStats(dmin.reshape(h, w), dens.reshape(h, w), vis)


# The record as a per-Gaussian record of the map (:meth:`GaussianMap.add_record
# <gags_ros.core.gaussians.GaussianMap.add_record>`), so gsplat's strategy moves it with its Gaussians.
MIN_DEPTH = "min_depth"  # record name: metres, +inf until the Gaussian is seen visible


class MapMinDepthRecord(MinDepthRecord):
    """GaS's minimum-depth record (:class:`MinDepthRecord`) stored as the per-Gaussian record
    ``min_depth`` of ``mapper``'s map (duck-typed: ``device``, ``add_record``, ``gaussians``).

    ``values`` ``[N]`` float32 metres is the map's record itself, so densification (children inherit
    their parent's D_min), pruning and MCMC relocation (a relocated Gaussian takes its source's)
    keep it aligned; new seeds start at +inf. Nothing to sync: a count mismatch is a bug.
    """

    def __init__(self, mapper, tolerance: float = DEPTH_TOLERANCE):
        # The base constructor would set an empty record: the values are the map's instead.
        self.mapper = mapper
        self.device = mapper.device
        self.tolerance = float(tolerance)
        mapper.add_record(MIN_DEPTH, float("inf"))

    @property
    def values(self) -> torch.Tensor:
        return self.mapper.gaussians.record(MIN_DEPTH)

    @values.setter
    def values(self, v: torch.Tensor) -> None:
        self.values.copy_(v)  # shape-checked: [N] of the map

    def sync(self, num_gaussians: int, index_map=None) -> None:
        """The record is the map's: it has ``num_gaussians`` entries or the caller's means are stale."""
        if num_gaussians != len(self):
            raise RuntimeError(f"means of {num_gaussians} Gaussians for a map of {len(self)}: the caller "
                               "read the map before its last densification step")
