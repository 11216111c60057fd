"""Analytic ray-caster for :class:`~gags_ros.sim.scene.Scene`: exact first hits, no splatting.

Independent of the Gaussian renderers on purpose (it is the ground truth they are judged against):
one ray through every pixel centre, closed-form intersections with boxes, cylinders and spheres,
a z-buffer over primitives, then Lambertian shading of a procedural solid texture.

Outputs per view: RGB (uint8), depth (float32 metres along the optical axis z, not ray length) and
one instance-id image per level. Vectorised with numpy in float64; deterministic bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from ..core.camera import invert_pose, pixel_rays
from ..core.types import Intrinsics
from .scene import LEVEL_NAMES, Material, Primitive, Scene

_EPS = 1e-6  # metres: hits closer than this to the ray origin are ignored
_NEAR = 1e-3  # metres: culling plane

# Two directional lights (unit vectors towards the lights) and an ambient term.
_KEY = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])
_FILL = np.array([-0.6, -0.8, 0.4]) / np.linalg.norm([-0.6, -0.8, 0.4])
_AMBIENT, _KEY_GAIN, _FILL_GAIN = 0.35, 0.5, 0.25


@dataclass
class RayCast:
    """One rendered view.

    rgb: ``[H, W, 3]`` uint8. depth: ``[H, W]`` float32 z-depth in metres (0 where no surface).
    masks: ``{"whole"|"part"|"subpart": [H, W] int32}`` instance ids (0 = none).
    primitive: ``[H, W]`` int32 index of the visible primitive (-1 = none).
    """

    rgb: np.ndarray
    depth: np.ndarray
    masks: Dict[str, np.ndarray]
    primitive: np.ndarray


# --------------------------------------------------------------------------------------------------
# Intersections in the primitive's local frame; o: [3] origin, d: [N, 3] directions (not unit).
# Each returns t [N] (ray parameter of the entry point, inf where missed).
# --------------------------------------------------------------------------------------------------

def _hit_box(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> np.ndarray:
    tn = np.full(len(d), -np.inf)
    tf = np.full(len(d), np.inf)
    for k in range(3):  # slabs, one axis at a time (column-wise is faster than [N, 3] reductions)
        dk = d[:, k]
        inv = 1.0 / np.where(np.abs(dk) < 1e-15, 1e-15, dk)
        t0 = (-half[k] - o[k]) * inv
        t1 = (half[k] - o[k]) * inv
        np.maximum(tn, np.minimum(t0, t1), out=tn)
        np.minimum(tf, np.maximum(t0, t1), out=tf)
    return np.where((tf >= tn) & (tn > _EPS), tn, np.inf)


def _hit_cylinder(o: np.ndarray, d: np.ndarray, r: float, hh: float) -> np.ndarray:
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    a = dx * dx + dy * dy
    b = 2.0 * (o[0] * dx + o[1] * dy)
    c = o[0] * o[0] + o[1] * o[1] - r * r
    disc = b * b - 4.0 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
    ok = (disc >= 0) & (a > 1e-18) & (ts > _EPS) & (np.abs(o[2] + ts * dz) <= hh)
    t = np.where(ok, ts, np.inf)
    safe = np.where(np.abs(dz) < 1e-15, 1e-15, dz)
    for zc in (-hh, hh):
        tc = (zc - o[2]) / safe
        x, y = o[0] + tc * dx, o[1] + tc * dy
        ok = (tc > _EPS) & (x * x + y * y <= r * r)
        t = np.where(ok & (tc < t), tc, t)
    return t


def _hit_sphere(o: np.ndarray, d: np.ndarray, r: float) -> np.ndarray:
    a = np.einsum("ij,ij->i", d, d)
    b = 2.0 * (d @ o)
    c = float(o @ o) - r * r
    disc = b * b - 4.0 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def _mul3(x: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``x @ M`` for ``x`` ``[N, 3]``, ``M`` ``[3, 3]`` (numpy's matmul is several times slower on
    tall, thin and non-contiguous operands)."""
    return x[:, 0:1] * M[0] + x[:, 1:2] * M[1] + x[:, 2:3] * M[2]


def intersect(prim: Primitive, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Ray parameter ``t`` ``[N]`` of the first hit of rays ``origin + t * dirs`` (world, ``[N, 3]``)."""
    R = prim.R
    o = (origin - prim.center) @ R
    d = _mul3(dirs, R)
    if prim.kind == "box":
        return _hit_box(o, d, np.asarray(prim.size))
    if prim.kind == "cylinder":
        return _hit_cylinder(o, d, *prim.size)
    return _hit_sphere(o, d, prim.size[0])


def _local_normal(prim: Primitive, p: np.ndarray) -> np.ndarray:
    """Outward unit normals ``[N, 3]`` at local surface points ``p`` ``[N, 3]``."""
    n = np.zeros_like(p)
    if prim.kind == "box":
        q = np.abs(p) / np.asarray(prim.size)
        ax = np.argmax(q, axis=1)
        rows = np.arange(len(p))
        n[rows, ax] = np.sign(p[rows, ax])
    elif prim.kind == "cylinder":
        r, hh = prim.size
        rad = np.hypot(p[:, 0], p[:, 1])
        cap = np.abs(p[:, 2]) / hh >= rad / r
        n[:, 2] = np.where(cap, np.sign(p[:, 2]), 0.0)
        safe = np.maximum(rad, 1e-12)
        n[:, 0] = np.where(cap, 0.0, p[:, 0] / safe)
        n[:, 1] = np.where(cap, 0.0, p[:, 1] / safe)
    else:
        n = p / prim.size[0]
    return n


# --------------------------------------------------------------------------------------------------
# Procedural texture
# --------------------------------------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) per integer lattice point (splitmix64 finaliser; wraps in uint64)."""
    h = (ix.astype(np.int64).view(np.uint64) * np.uint64(0x9E3779B1)
         + iy.astype(np.int64).view(np.uint64) * np.uint64(0x85EBCA77)
         + iz.astype(np.int64).view(np.uint64) * np.uint64(0xC2B2AE3D)
         + np.uint64(seed) * np.uint64(0x27D4EB2F))
    h ^= h >> np.uint64(30)
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def value_noise(p: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 3D value noise in [0, 1] at points ``p`` ``[N, 3]`` (lattice spacing 1)."""
    i = np.floor(p)
    f = p - i
    w = f * f * (3.0 - 2.0 * f)
    i = i.astype(np.int64)
    out = np.zeros(len(p))
    for dx in (0, 1):
        wx = w[:, 0] if dx else 1.0 - w[:, 0]
        for dy in (0, 1):
            wy = w[:, 1] if dy else 1.0 - w[:, 1]
            for dz in (0, 1):
                wz = w[:, 2] if dz else 1.0 - w[:, 2]
                out += wx * wy * wz * _hash01(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return out


def texture(mat: Material, p: np.ndarray) -> np.ndarray:
    """Albedo ``[N, 3]`` in [0, 1] of material ``mat`` at local points ``p`` ``[N, 3]`` (metres)."""
    # A per-material phase keeps lattice and stripe boundaries off faces at round coordinates.
    phase = _hash01(np.array([mat.seed]), np.array([1]), np.array([2]), 7)[0] * mat.period
    q = (p + phase) / mat.period
    if mat.pattern == "stripes":
        v = np.floor(2.0 * (q @ np.asarray(mat.axis))) % 2.0
    elif mat.pattern == "checker":
        v = np.floor(2.0 * q).sum(axis=1) % 2.0
    elif mat.pattern == "noise":
        v = np.clip(0.65 * value_noise(q, mat.seed) + 0.35 * value_noise(2.0 * q, mat.seed + 1), 0.0, 1.0)
        v = np.clip((v - 0.5) * 1.6 + 0.5, 0.0, 1.0)
    else:
        v = np.zeros(len(p))
    c1, c2 = np.asarray(mat.color), np.asarray(mat.color2)
    albedo = c1 + v[:, None] * (c2 - c1)
    if mat.grain > 0:
        g = value_noise(p / 0.025, mat.seed + 2) - 0.5
        albedo = albedo * (1.0 + 2.0 * mat.grain * g[:, None])
    return np.clip(albedo, 0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------

# The 12 edges of a hull given as 8 corners indexed by bits (x, y, z): pairs differing in one bit.
_EDGES = np.array([(a, a | b) for b in (1, 2, 4) for a in range(8) if not a & b])


def _screen_rect(corners_cam: np.ndarray, K: Intrinsics) -> Tuple[int, int, int, int]:
    """Pixel rows/cols ``(v0, v1, u0, u1)`` (half-open) that may see a hull with camera-frame corners.

    The hull is clipped at the near plane first (its edges crossing it add their crossing points),
    so walls and floors that pass behind the camera get a tight rectangle too.
    """
    z = corners_cam[:, 2]
    front = corners_cam[z > _NEAR]
    if len(front) == 0:
        return 0, 0, 0, 0
    if len(front) < 8:
        a, b = corners_cam[_EDGES[:, 0]], corners_cam[_EDGES[:, 1]]
        za, zb = a[:, 2], b[:, 2]
        cross = (za > _NEAR) != (zb > _NEAR)
        s = ((_NEAR - za[cross]) / (zb[cross] - za[cross]))[:, None]
        front = np.concatenate([front, a[cross] + s * (b[cross] - a[cross])])
        front[:, 2] = np.maximum(front[:, 2], _NEAR)
    u = K.fx * front[:, 0] / front[:, 2] + K.cx
    v = K.fy * front[:, 1] / front[:, 2] + K.cy
    u0 = int(np.clip(np.floor(u.min() - 0.5), 0, K.width))
    u1 = int(np.clip(np.ceil(u.max() - 0.5) + 1, 0, K.width))
    v0 = int(np.clip(np.floor(v.min() - 0.5), 0, K.height))
    v1 = int(np.clip(np.ceil(v.max() - 0.5) + 1, 0, K.height))
    return v0, max(v0, v1), u0, max(u0, u1)


def _first_hits(scene: Scene, T_world_cam: np.ndarray, K: Intrinsics) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer: ``(t [H, W], primitive index [H, W], ray directions [H, W, 3])``."""
    origin, dirs = pixel_rays(K, T_world_cam)
    T_cam_world = invert_pose(T_world_cam)
    best_t = np.full((K.height, K.width), np.inf)
    best_p = np.full((K.height, K.width), -1, dtype=np.int32)
    corners_cam = scene.hull_corners @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    for i, prim in enumerate(scene.primitives):
        v0, v1, u0, u1 = _screen_rect(corners_cam[i], K)
        if v1 <= v0 or u1 <= u0:
            continue
        t = intersect(prim, origin, dirs[v0:v1, u0:u1].reshape(-1, 3)).reshape(v1 - v0, u1 - u0)
        bt = best_t[v0:v1, u0:u1]
        closer = t < bt
        bt[closer] = t[closer]
        best_p[v0:v1, u0:u1][closer] = i
    return best_t, best_p, dirs


def render(scene: Scene, T_world_cam: np.ndarray, intrinsics: Intrinsics) -> RayCast:
    """Ray-cast one view: RGB, z-depth and per-level instance masks."""
    K = intrinsics
    best_t, best_p, dirs = _first_hits(scene, T_world_cam, K)
    origin = np.asarray(T_world_cam, dtype=np.float64)[:3, 3]
    H, W = K.height, K.width
    flat_p = best_p.ravel()
    flat_t = best_t.ravel()
    flat_d = dirs.reshape(-1, 3)
    rgb = np.zeros((H * W, 3))
    hit = np.flatnonzero(flat_p >= 0)
    order = hit[np.argsort(flat_p[hit], kind="stable")]
    prims, starts = np.unique(flat_p[order], return_index=True)
    for k, (pi, s) in enumerate(zip(prims, starts)):
        idx = order[s: starts[k + 1] if k + 1 < len(starts) else len(order)]
        prim = scene.primitives[pi]
        pts = origin + flat_t[idx, None] * flat_d[idx]
        local = _mul3(pts - prim.center, prim.R)
        n = _mul3(_local_normal(prim, local), prim.R.T)
        light = _AMBIENT + _KEY_GAIN * np.maximum(n @ _KEY, 0.0) + _FILL_GAIN * np.maximum(n @ _FILL, 0.0)
        rgb[idx] = texture(prim.material, local) * light[:, None]
    rgb8 = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8).reshape(H, W, 3)
    depth = np.where(np.isfinite(best_t), best_t, 0.0).astype(np.float32)
    # Unlabelled surfaces (scene.mask_ids: 0) are no instance, like the background.
    ids = np.concatenate([scene.mask_ids, np.zeros((1, 3), dtype=np.int32)])  # row -1 -> none
    masks = {lv: ids[best_p, k] for k, lv in enumerate(LEVEL_NAMES)}
    return RayCast(rgb8, depth, masks, best_p)


def first_hit_object(scene: Scene, origin: np.ndarray, point: np.ndarray) -> int:
    """Whole id of the first surface on the ray from ``origin`` through ``point`` (0 if none)."""
    origin = np.asarray(origin, dtype=np.float64)
    d = (np.asarray(point, dtype=np.float64) - origin)[None]
    ts = np.array([intersect(p, origin, d)[0] for p in scene.primitives])
    i = int(np.argmin(ts))
    return scene.primitives[i].ids[0] if np.isfinite(ts[i]) else 0
