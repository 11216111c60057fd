"""Synthetic CLIP-GS training objects: sampled (not optimised) splats on the surfaces of the
simulation's analytic objects, made to look like clusters cut from a map.

Points are drawn uniformly on the surfaces of a simulated object's primitives, coloured by the
primitive's procedural texture under the ray-caster's lighting, each a flat Gaussian lying in the
surface (tangent std dev from the sample spacing, a thin normal axis), with random opacities. To look
like clusters cut from a map (:class:`MapLike`), surfaces no room-side viewpoint sees are dropped, a
slab may be cut away, a band of the supporting floor or table top joins, transparent floaters are
scattered and every attribute gets noise. They cost no mapping, so training data is cheap; objects
cut from real maps (:func:`~gags_ros.core.clipgs.objects.object_from_map`) are what the encoder
finally serves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..core.clipgs.objects import ObjectGaussians, object_from_map, rotmat_to_quat
from ..core.gaussians import GaussianMap
from . import raycast as rc
from .raycast import texture
from .scene import LEVEL_NAMES, make_scene

__all__ = ["CLEAN", "MapLike", "SampledObject", "sample_scene_object", "scene_map_objects", "scene_objects"]


@dataclass
class SampledObject:
    """A synthetic object: world-frame Gaussians plus its ground truth.

    ``category`` (e.g. "mug"), ``label`` (the whole-object label, e.g. "red mug", used as caption),
    ``part_labels`` (labels of its parts), ``scene_seed`` and ``whole_id`` (where it came from).
    """

    gaussians: ObjectGaussians
    category: str
    label: str
    part_labels: List[str]
    scene_seed: int
    whole_id: int


def _surface_samples(prim, n: int, rng: np.random.Generator):
    """``(points [n, 3], normals [n, 3])`` uniform on a primitive's surface, in its local frame."""
    if prim.kind == "box":
        h = np.asarray(prim.size, dtype=np.float64)
        areas = np.array([h[1] * h[2], h[1] * h[2], h[0] * h[2], h[0] * h[2], h[0] * h[1], h[0] * h[1]])
        face = rng.choice(6, size=n, p=areas / areas.sum())
        ax, sgn = face // 2, np.where(face % 2 == 0, -1.0, 1.0)
        p = rng.uniform(-1, 1, (n, 3)) * h
        p[np.arange(n), ax] = sgn * h[ax]
        nrm = np.zeros((n, 3))
        nrm[np.arange(n), ax] = sgn
        return p, nrm
    if prim.kind == "cylinder":
        r, hh = prim.size
        areas = np.array([2 * math.pi * r * 2 * hh, math.pi * r * r, math.pi * r * r])
        part = rng.choice(3, size=n, p=areas / areas.sum())
        th = rng.uniform(0, 2 * math.pi, n)
        p = np.zeros((n, 3))
        nrm = np.zeros((n, 3))
        side = part == 0
        p[side] = np.stack([r * np.cos(th[side]), r * np.sin(th[side]), rng.uniform(-hh, hh, side.sum())], -1)
        nrm[side] = np.stack([np.cos(th[side]), np.sin(th[side]), np.zeros(side.sum())], -1)
        cap = ~side
        rad = r * np.sqrt(rng.uniform(0, 1, cap.sum()))
        sg = np.where(part[cap] == 1, 1.0, -1.0)
        p[cap] = np.stack([rad * np.cos(th[cap]), rad * np.sin(th[cap]), sg * hh], -1)
        nrm[cap, 2] = sg
        return p, nrm
    if prim.kind == "sphere":
        v = rng.normal(size=(n, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v * prim.size[0], v
    raise ValueError(f"unknown primitive kind {prim.kind!r}")


def _area(prim) -> float:
    if prim.kind == "box":
        h = prim.size
        return 8 * (h[0] * h[1] + h[1] * h[2] + h[0] * h[2])
    if prim.kind == "cylinder":
        r, hh = prim.size
        return 2 * math.pi * r * 2 * hh + 2 * math.pi * r * r
    return 4 * math.pi * prim.size[0] ** 2


def _lighting(normals: np.ndarray) -> np.ndarray:
    """``[N]`` shading factor of the simulation's ray-caster for world normals ``[N, 3]``, so sampled
    splats carry the colours a mapper would fit to its images."""
    return (rc._AMBIENT + rc._KEY_GAIN * np.maximum(normals @ rc._KEY, 0.0)
            + rc._FILL_GAIN * np.maximum(normals @ rc._FILL, 0.0))


@dataclass
class MapLike:
    """How much a synthetic object should look like a cluster cut from a real map.

    ``views``: the object is seen from this many random viewpoints on the room side (within 90 deg
    of the direction to the room centre, elevation 5-60 deg); surfaces facing none of them are
    dropped, as a mapper never reconstructs them (bottoms, backs against walls; 0 keeps all).
    ``cut_prob`` / ``cut_max``: chance of losing a slab of the object (partial observation), up to
    this fraction of its horizontal extent. ``support``: fraction of extra Gaussians from the
    surface it stands on (floor or table top, within 25% of its footprint beyond its edge), which a
    cluster of the language field often swallows. ``floaters``: fraction of near-transparent
    Gaussians (opacity < 0.04) in its box. ``position_noise``: std dev along the normal as a fraction
    of the sample spacing; ``colour_noise``: per-channel std dev. ``fresh_prob``: chance that the
    object looks freshly seeded by the mapper (``mapping.seeding``: isotropic, unrotated Gaussians
    of one low opacity, here drawn in [0.05, 0.5]) rather than optimised (flat, in the surface); a
    live map always holds both kinds.
    """

    views: int = 4
    cut_prob: float = 0.3
    cut_max: float = 0.3
    support: float = 0.08
    floaters: float = 0.05
    position_noise: float = 0.15
    colour_noise: float = 0.04
    fresh_prob: float = 0.3


CLEAN = MapLike(views=0, cut_prob=0.0, support=0.0, floaters=0.0, position_noise=0.0, colour_noise=0.0,
                fresh_prob=0.0)


def _flat_gaussians(pts: np.ndarray, nrms: np.ndarray, cols: np.ndarray, spacing: float,
                    rng: np.random.Generator) -> ObjectGaussians:
    """Flat Gaussians lying in the surface (normal = local z), random in-plane angle, tangent std dev
    ``0.6 spacing``, normal std dev ``0.06 spacing``, each times a log-normal factor (sigma 0.2),
    opacity uniform in [0.5, 1]."""
    n = len(pts)
    helper = np.where(np.abs(nrms[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    t1 = np.cross(nrms, helper)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(nrms, t1)
    ang = rng.uniform(0, 2 * math.pi, (n, 1))
    t1, t2 = np.cos(ang) * t1 + np.sin(ang) * t2, -np.sin(ang) * t1 + np.cos(ang) * t2
    R = np.stack([t1, t2, nrms], axis=-1)                              # columns = local axes
    scales = np.array([[0.6, 0.6, 0.06]]) * spacing * np.exp(rng.normal(0, 0.2, (n, 3)))
    return ObjectGaussians(torch.as_tensor(pts, dtype=torch.float32),
                           rotmat_to_quat(torch.as_tensor(R, dtype=torch.float32)),
                           torch.as_tensor(scales, dtype=torch.float32),
                           torch.as_tensor(rng.uniform(0.5, 1.0, n), dtype=torch.float32),
                           torch.as_tensor(np.clip(cols, 0, 1), dtype=torch.float32))


def _support_samples(scene, whole_id: int, prims, n: int, rng: np.random.Generator):
    """Up to ``n`` samples ``(points, normals, colours)`` of whatever the object stands on, in a
    band around its footprint."""
    lo, hi = scene.object_aabb(whole_id)
    ext = hi[:2] - lo[:2]
    c = (lo[:2] + hi[:2]) / 2
    xy = c + rng.uniform(-0.5, 0.5, (4 * n, 2)) * ext * 1.5
    inside = np.all(np.abs(xy - c) <= ext / 2, axis=1)
    xy = xy[~inside]
    probe = np.concatenate([xy, np.full((len(xy), 1), lo[2] - 0.002)], axis=1)
    own = set(id(p) for p in prims)
    pts, cols = [], []
    for p in scene.primitives:
        if id(p) in own or len(probe) == 0:
            continue
        m = p.contains(probe)
        if m.any():
            q = probe[m].copy()
            q[:, 2] = lo[2]
            local = (q - p.center) @ p.R
            cols.append(texture(p.material, local) * _lighting(np.tile([[0.0, 0.0, 1.0]], (len(q), 1)))[:, None])
            pts.append(q)
            probe = probe[~m]
    if not pts:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3))
    pts, cols = np.concatenate(pts)[:n], np.concatenate(cols)[:n]
    return pts, np.tile([[0.0, 0.0, 1.0]], (len(pts), 1)), cols


def sample_scene_object(
    scene,
    whole_id: int,
    n: int,
    rng: np.random.Generator,
    map_like: MapLike = MapLike(),
) -> ObjectGaussians:
    """Sampled (not optimised) splats on the surface of one object of a simulated ``Scene``.

    About ``n`` surface Gaussians, world frame, metres (fewer when ``map_like`` drops unseen or cut
    surfaces; never fewer than n/4), plus support-surface and floater Gaussians. Samples are spread
    over the object's primitives by area; those inside another primitive of the same object (hidden
    interfaces) are dropped. Each is a flat Gaussian in the surface (:func:`_flat_gaussians`,
    ``spacing = sqrt(area / n)``), coloured by the primitive's texture under the ray-caster's light.
    """
    ml = map_like
    prims = [scene.primitives[i] for i in scene.primitives_of("whole", [whole_id])]
    if not prims:
        raise ValueError(f"scene {scene.seed} has no object {whole_id}")
    total_area = float(sum(_area(p) for p in prims))
    pts, nrms, cols = _object_surface(prims, n, rng)
    lo, hi = scene.object_aabb(whole_id)
    keep = _seen_and_cut(ml, pts, nrms, lo, hi, n, rng)
    pts, nrms, cols = pts[keep], nrms[keep], cols[keep]
    spacing = math.sqrt(total_area / n)
    if ml.support > 0:
        sp, sn, sc = _support_samples(scene, whole_id, prims, int(round(ml.support * n)), rng)
        pts, nrms, cols = np.concatenate([pts, sp]), np.concatenate([nrms, sn]), np.concatenate([cols, sc])
    m = len(pts)
    pts = pts + nrms * rng.normal(0, ml.position_noise * spacing + 1e-12, (m, 1))
    cols = cols + rng.normal(0, ml.colour_noise + 1e-12, cols.shape)
    g = _flat_gaussians(pts, nrms, cols, spacing, rng)
    if ml.fresh_prob > 0 and rng.random() < ml.fresh_prob:
        iso = g.scales[:, :2].mean(dim=1, keepdim=True).expand(-1, 3).contiguous()
        g = ObjectGaussians(g.means, torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(m, 4).contiguous(), iso,
                            torch.full((m,), float(rng.uniform(0.05, 0.5))), g.rgb)
    nf = int(round(ml.floaters * n))
    if nf > 0:
        g = ObjectGaussians.cat([g, _floater_gaussians(nf, lo, hi, spacing, rng)])
    return g


def _object_surface(prims, n: int, rng: np.random.Generator):
    """``n`` (or fewer) surface samples of an object's primitives ``prims``, spread by area, those
    inside another of its primitives (hidden interfaces) dropped: ``(points [m, 3] m, normals
    [m, 3], colours [m, 3] in 0..1)``, coloured by the texture under the ray-caster's light."""
    areas = np.array([_area(p) for p in prims])
    counts = rng.multinomial(int(n * 2.5) + 16, areas / float(areas.sum()))  # oversampled; culled below
    pts, nrms, cols = [], [], []
    for k, (p, c) in enumerate(zip(prims, counts)):
        if c == 0:
            continue
        local, nl = _surface_samples(p, int(c), rng)
        world = local @ p.R.T + p.center
        nw = nl @ p.R.T
        hidden = np.zeros(len(world), dtype=bool)
        for j, q in enumerate(prims):
            if j != k:
                hidden |= q.contains(world, margin=-1e-4)
        rgb = texture(p.material, local) * _lighting(nw)[:, None]
        pts.append(world[~hidden]); nrms.append(nw[~hidden]); cols.append(rgb[~hidden])
    pts, nrms, cols = np.concatenate(pts), np.concatenate(nrms), np.concatenate(cols)
    # The same density as n samples over the whole surface, whatever is dropped next.
    sel = rng.permutation(len(pts))[:min(len(pts), n)]
    return pts[sel], nrms[sel], cols[sel]


def _seen_and_cut(ml: "MapLike", pts: np.ndarray, nrms: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int,
                  rng: np.random.Generator) -> np.ndarray:
    """``[m]`` bool: the samples a map would hold (``ml``: seen from a viewpoint on the room side,
    not in a cut-off slab; never fewer than n/4). ``lo`` / ``hi``: the object's box, metres."""
    centre = (lo + hi) / 2
    keep = np.ones(len(pts), dtype=bool)
    if ml.views > 0:
        # Viewpoints on the room side of the object (the room centre is the origin).
        to_room = -centre[:2] / max(np.linalg.norm(centre[:2]), 1e-9)
        base = math.atan2(to_room[1], to_room[0])
        r = float(np.linalg.norm(hi - lo)) + 1.0
        seen = np.zeros(len(pts), dtype=bool)
        for _ in range(ml.views):
            az, el = base + rng.uniform(-math.pi / 2, math.pi / 2), rng.uniform(math.radians(5), math.radians(60))
            eye = centre + r * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
            seen |= ((eye - pts) * nrms).sum(axis=1) > 0
        keep &= seen
    if ml.cut_prob > 0 and rng.random() < ml.cut_prob:
        d = rng.normal(size=2)
        d /= np.linalg.norm(d)
        proj = (pts[:, :2] - centre[:2]) @ d
        thr = proj.max() - rng.uniform(0, ml.cut_max) * (proj.max() - proj.min())
        keep &= proj <= thr
    if keep.sum() < n // 4:  # never leave a sliver
        keep[rng.permutation(len(keep))[: n // 4]] = True
    return keep


def _floater_gaussians(nf: int, lo: np.ndarray, hi: np.ndarray, spacing: float,
                       rng: np.random.Generator) -> "ObjectGaussians":
    """``nf`` near-transparent Gaussians (opacity 0.005-0.04) anywhere in the box ``lo``..``hi``."""
    fp = rng.uniform(lo, hi, (nf, 3))
    fq = rng.normal(size=(nf, 4))
    fq /= np.linalg.norm(fq, axis=1, keepdims=True)
    fl = np.full((nf, 3), spacing) * np.exp(rng.normal(0, 0.3, (nf, 3)))
    fo = rng.uniform(0.005, 0.04, nf)
    fc = rng.uniform(0, 1, (nf, 3))
    return ObjectGaussians(*(torch.as_tensor(a, dtype=torch.float32) for a in (fp, fq, fl, fo, fc)))


def scene_objects(
    seeds: Sequence[int],
    n: int,
    rng: np.random.Generator,
    categories: Optional[Sequence[str]] = None,
    map_like: MapLike = MapLike(),
) -> List[SampledObject]:
    """Every non-structure object of the simulated rooms ``seeds`` (``sim.make_scene``), sampled as
    ``n`` Gaussians each (see :func:`sample_scene_object`); ``categories`` filters them."""
    out: List[SampledObject] = []
    for seed in seeds:
        scene = make_scene(int(seed))
        for o in scene.objects:
            if o.structure or (categories is not None and o.category not in categories):
                continue
            part_idx = LEVEL_NAMES.index("part")
            parts = sorted({scene.labels["part"][scene.primitives[i].ids[part_idx]]
                            for i in scene.primitives_of("whole", [o.whole_id])})
            g = sample_scene_object(scene, o.whole_id, n, rng, map_like)
            out.append(SampledObject(g, o.category, o.label, parts, int(seed), o.whole_id))
    return out


def scene_map_objects(
    gmap: GaussianMap,
    scene,
    margin: float = 0.02,
    min_gaussians: int = 32,
) -> List[SampledObject]:
    """Clusters of a map built from a simulated ``scene``, one per non-structure object: the map's
    Gaussians whose centres lie inside one of the object's primitives grown by ``margin`` metres.
    An oracle segmentation (what a perfect language-field cluster would hold), but the Gaussians are
    the mapper's, with whatever of the support surface, wall or a neighbour lies within the margin.
    Objects with fewer than ``min_gaussians`` Gaussians (barely seen) are skipped."""
    means = gmap.means.detach()
    pts = means.cpu().numpy().astype(np.float64)
    out: List[SampledObject] = []
    part_idx = LEVEL_NAMES.index("part")
    for o in scene.objects:
        if o.structure:
            continue
        lo, hi = scene.object_aabb(o.whole_id)
        near = np.flatnonzero(np.all((pts >= lo - margin) & (pts <= hi + margin), axis=1))
        inside = np.zeros(len(near), dtype=bool)
        prim_ids = scene.primitives_of("whole", [o.whole_id])
        for i in prim_ids:
            inside |= scene.primitives[i].contains(pts[near], margin)
        idx = near[inside]
        if len(idx) < min_gaussians:
            continue
        parts = sorted({scene.labels["part"][scene.primitives[i].ids[part_idx]] for i in prim_ids})
        out.append(SampledObject(object_from_map(gmap, torch.as_tensor(idx, device=means.device)), o.category,
                                 o.label, parts, int(scene.seed), o.whole_id))
    return out
