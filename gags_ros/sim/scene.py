"""Deterministic synthetic rooms with three-level ground truth, and the camera paths through them.

A :class:`Scene` is a closed room (floor, four walls, ceiling) furnished with objects built from
analytic primitives (boxes, cylinders, spheres). Every primitive carries three instance ids, one per
level of granularity, which form a tree: a sub-part lies inside one part, a part inside one whole
object. Each id has a text label, e.g. whole "red mug" / part "mug handle" / sub-part "mug rim";
whole labels name the object's dominant colour so that queries like "the red mug" make sense.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives the same scene,
cameras and therefore the same rendered bytes on every machine.

Frames: world z is up, metres, floor at z = 0, room centred on the origin. Object-local frames have
their origin on the supporting surface below the object's centre, z up and +y facing the room.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.camera import look_at, make_pose
from ..core.types import Intrinsics

# Order of the three ids of a primitive (coarse to fine). The teachers use the reverse order
# (``gags_ros.core.teachers.base.LEVELS``); names are what matters.
LEVEL_NAMES = ("whole", "part", "subpart")

# Named colours (linear RGB in [0, 1]); the names go into whole-object labels.
PALETTE: Dict[str, Tuple[float, float, float]] = {
    "red": (0.80, 0.10, 0.08),
    "green": (0.16, 0.58, 0.20),
    "blue": (0.12, 0.28, 0.82),
    "yellow": (0.93, 0.80, 0.10),
    "orange": (0.95, 0.48, 0.06),
    "purple": (0.50, 0.18, 0.66),
    "pink": (0.96, 0.52, 0.72),
    "white": (0.92, 0.92, 0.90),
    "black": (0.09, 0.09, 0.10),
    "grey": (0.50, 0.50, 0.52),
    "brown": (0.46, 0.28, 0.13),
}

PATTERNS = ("solid", "stripes", "checker", "noise")


@dataclass(frozen=True)
class Material:
    """Procedural solid texture evaluated on the primitive's local hit point (view independent).

    ``color`` / ``color2``: RGB in [0, 1] mixed by the pattern value. ``period``: metres per pattern
    cycle. ``axis``: stripe direction in the primitive frame. ``seed``: noise lattice and pattern
    phase. ``grain``: relative amplitude of a fine (2.5 cm) noise on every pattern.
    """

    color: Tuple[float, float, float]
    color2: Tuple[float, float, float]
    pattern: str = "solid"
    period: float = 0.1
    axis: Tuple[float, float, float] = (0.0, 0.0, 1.0)
    seed: int = 0
    grain: float = 0.08


@dataclass(eq=False)
class Primitive:
    """One analytic solid.

    ``kind``: "box" (``size`` = half extents ``[3]``), "cylinder" (``size`` = (radius, half height),
    axis = local z) or "sphere" (``size`` = (radius,)). ``T_world_local``: ``[4, 4]`` rigid.
    ``ids``: (whole, part, subpart) instance ids, all > 0.
    """

    kind: str
    T_world_local: np.ndarray
    size: Tuple[float, ...]
    material: Material
    ids: Tuple[int, int, int]

    @property
    def R(self) -> np.ndarray:
        return self.T_world_local[:3, :3]

    @property
    def center(self) -> np.ndarray:
        return self.T_world_local[:3, 3]

    def aabb(self) -> Tuple[np.ndarray, np.ndarray]:
        """Exact world-frame axis-aligned bounding box ``(min [3], max [3])``."""
        R = self.R
        if self.kind == "box":
            half = np.abs(R) @ np.asarray(self.size)
        elif self.kind == "cylinder":
            r, hh = self.size
            a = R[:, 2]
            half = hh * np.abs(a) + r * np.sqrt(np.clip(1.0 - a * a, 0.0, None))
        else:
            half = np.full(3, self.size[0])
        return self.center - half, self.center + half

    def corners(self) -> np.ndarray:
        """``[8, 3]`` world points whose convex hull contains the primitive (for view culling)."""
        if self.kind == "box":
            h = np.asarray(self.size)
            s = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
            return (s * h) @ self.R.T + self.center
        lo, hi = self.aabb()
        return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """``[N]`` bool: world points ``[N, 3]`` inside the solid grown by ``margin`` metres."""
        p = (np.asarray(points, dtype=np.float64) - self.center) @ self.R
        if self.kind == "box":
            return np.all(np.abs(p) <= np.asarray(self.size) + margin, axis=1)
        if self.kind == "cylinder":
            r, hh = self.size
            return (np.hypot(p[:, 0], p[:, 1]) <= r + margin) & (np.abs(p[:, 2]) <= hh + margin)
        return np.linalg.norm(p, axis=1) <= self.size[0] + margin


@dataclass
class SceneObject:
    """A whole object (or a piece of the room when ``structure``)."""

    whole_id: int
    category: str
    label: str
    structure: bool = False


@dataclass(frozen=True)
class CameraRig:
    """Shape of the walk and orbit paths, in metres (defaults: the classic rooms' constants).

    ``walk_radius`` / ``orbit_radius``: fractions of the free disc's radius; ``walk_height``:
    mean camera height, ``walk_swing``: its amplitude; ``walk_look``: horizontal distance to the
    walk's look-at point (at ``walk_look_z``); ``orbit_height``: mean orbit height (capped at the
    ceiling - 0.3); ``orbit_look``: distance of the orbit's look-at point beyond the room centre
    (at ``orbit_look_z``). ``closeup_fallback``: close-ups whose object side is blocked also try the
    whole circle of azimuths and lower elevations (the varied rooms' clutter needs it).
    """

    walk_radius: float = 0.6
    walk_height: float = 1.0
    walk_swing: float = 0.45
    walk_look: float = 2.0
    walk_look_z: float = 0.55
    orbit_radius: float = 0.8
    orbit_height: float = 1.9
    orbit_look: float = 1.8
    orbit_look_z: float = 0.4
    closeup_fallback: bool = False


@dataclass
class Scene:
    """A furnished room. ``room``: interior size (x, y, z) in metres; ``labels[level][id] = text``.

    ``generator``: the name of the generator that made it (:data:`GENERATORS`);
    ``structure_labelled``: False when floor, walls and ceiling carry no label (their pixels have
    id 0 in every mask, so no teacher mask ever covers them); ``rig``: the camera paths' shape.
    """

    seed: int
    room: Tuple[float, float, float]
    primitives: List[Primitive]
    labels: Dict[str, Dict[int, str]]
    objects: List[SceneObject]
    free_radius: float
    generator: str = "classic"
    structure_labelled: bool = True
    rig: CameraRig = CameraRig()

    @functools.cached_property
    def _object_by_id(self) -> Dict[int, SceneObject]:
        return {o.whole_id: o for o in self.objects}

    @functools.cached_property
    def hull_corners(self) -> np.ndarray:
        """``[P, 8, 3]`` per primitive: world points whose convex hull contains it (view culling)."""
        return np.stack([p.corners() for p in self.primitives])

    @property
    def mask_ids(self) -> np.ndarray:
        """``[P, 3]`` int32 ids each primitive writes into the (whole, part, subpart) masks: its
        ``ids``, or 0 (no instance) for objects whose whole id has no label (unlabelled structure)."""
        ids = np.array([p.ids for p in self.primitives], dtype=np.int32).reshape(-1, 3)
        labelled = np.array([p.ids[0] in self.labels["whole"] for p in self.primitives], dtype=bool)
        ids[~labelled] = 0
        return ids

    def object(self, whole_id: int) -> SceneObject:
        return self._object_by_id[whole_id]

    def primitives_of(self, level: str, ids: Sequence[int]) -> List[int]:
        """Indices of the primitives whose id at ``level`` is in ``ids``."""
        k = LEVEL_NAMES.index(level)
        want = set(int(i) for i in ids)
        return [i for i, p in enumerate(self.primitives) if p.ids[k] in want]

    def aabb_of(self, prim_indices: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        boxes = [self.primitives[i].aabb() for i in prim_indices]
        return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)

    def object_aabb(self, whole_id: int) -> Tuple[np.ndarray, np.ndarray]:
        return self.aabb_of(self.primitives_of("whole", [whole_id]))

    def inside_solid(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """``[N]`` bool: points inside (or within ``margin`` of) any primitive."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        out = np.zeros(len(points), dtype=bool)
        for p in self.primitives:
            out |= p.contains(points, margin)
        return out

    def queries(self) -> List[dict]:
        """Open-vocabulary queries with their ground truth, one per distinct target.

        Objects of the room structure (floor, walls, ceiling) are not queried. Every distinct label
        text becomes one query at the coarsest level where it names a mask (so "table top", whose
        only sub-part is the whole top, is a part query); a group covering exactly the primitives of
        a coarser query is dropped ("ball" the part is "red ball" the whole). ``ids`` are all ids of
        that level carrying the text; ``box_min``/``box_max`` the world AABB of their union and
        ``boxes`` one ``[min [3], max [3]]`` per id (in ``ids`` order): a 3D answer is right when it
        lies in the box of any of them (several chairs, several table legs).
        """
        out: List[dict] = []
        seen_text, seen_geometry = set(), set()
        for k, level in enumerate(LEVEL_NAMES):
            groups: Dict[str, List[int]] = {}
            for i, p in enumerate(self.primitives):
                if self.object(p.ids[0]).structure:
                    continue
                groups.setdefault(self.labels[level][p.ids[k]], []).append(i)
            for text, prims in sorted(groups.items(), key=lambda kv: min(self.primitives[i].ids[k] for i in kv[1])):
                geometry = frozenset(prims)
                if text in seen_text or geometry in seen_geometry:
                    continue
                seen_text.add(text)
                seen_geometry.add(geometry)
                lo, hi = self.aabb_of(prims)
                ids = sorted({self.primitives[i].ids[k] for i in prims})
                boxes = [self.aabb_of([i for i in prims if self.primitives[i].ids[k] == iid]) for iid in ids]
                out.append({"text": text, "level": level, "ids": ids,
                            "box_min": [round(float(v), 6) for v in lo],
                            "box_max": [round(float(v), 6) for v in hi],
                            "boxes": [[[round(float(v), 6) for v in b_lo], [round(float(v), 6) for v in b_hi]]
                                      for b_lo, b_hi in boxes]})
        return out

    def describe(self) -> dict:
        """JSON-able summary: room size and per-object label, category and AABB."""
        objs = []
        for o in self.objects:
            lo, hi = self.object_aabb(o.whole_id)
            objs.append({"whole_id": o.whole_id, "category": o.category, "label": o.label,
                         "structure": o.structure, "box_min": [round(float(v), 6) for v in lo],
                         "box_max": [round(float(v), 6) for v in hi]})
        return {"seed": self.seed, "room": [round(float(v), 6) for v in self.room],
                "free_radius": self.free_radius, "objects": objs}


# --------------------------------------------------------------------------------------------------
# Building objects
# --------------------------------------------------------------------------------------------------

def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class _Builder:
    """Allocates ids per level and collects primitives and labels."""

    def __init__(self) -> None:
        self.primitives: List[Primitive] = []
        self.labels: Dict[str, Dict[int, str]] = {lv: {} for lv in LEVEL_NAMES}
        self.objects: List[SceneObject] = []

    def _new_id(self, level: str, text: str) -> int:
        i = len(self.labels[level]) + 1
        self.labels[level][i] = text
        return i

    def obj(self, category: str, label: str, T_world_obj: np.ndarray, structure: bool = False) -> "_Obj":
        wid = self._new_id("whole", label)
        self.objects.append(SceneObject(wid, category, label, structure))
        return _Obj(self, wid, T_world_obj)


class _Obj:
    """An object being built; ``scale`` multiplies every local position and size (1 = as specified)."""

    def __init__(self, b: _Builder, whole_id: int, T: np.ndarray) -> None:
        self.b, self.whole_id, self.T = b, whole_id, T
        self.scale = 1.0

    def part(self, label: str) -> "_Part":
        return _Part(self, self.b._new_id("part", label))

    def single(self, label: str) -> "_Sub":
        """A part with one sub-part of the same label (and geometry)."""
        return self.part(label).sub(label)


class _Part:
    def __init__(self, obj: _Obj, part_id: int) -> None:
        self.obj, self.part_id = obj, part_id

    def sub(self, label: str) -> "_Sub":
        return _Sub(self, self.obj.b._new_id("subpart", label))


class _Sub:
    def __init__(self, part: _Part, sub_id: int) -> None:
        self.part, self.sub_id = part, sub_id

    def _add(self, kind: str, center, size, mat: Material, R: Optional[np.ndarray]) -> "_Sub":
        obj = self.part.obj
        if obj.scale != 1.0:
            center = np.asarray(center, dtype=np.float64) * obj.scale
            size = tuple(float(v) * obj.scale for v in size)
        T_local = make_pose(np.eye(3) if R is None else R, center)
        obj.b.primitives.append(Primitive(kind, obj.T @ T_local, tuple(float(s) for s in size), mat,
                                          (obj.whole_id, self.part.part_id, self.sub_id)))
        return self

    def box(self, center, half, mat: Material, R: Optional[np.ndarray] = None) -> "_Sub":
        return self._add("box", center, half, mat, R)

    def cyl(self, center, radius: float, half_height: float, mat: Material,
            R: Optional[np.ndarray] = None) -> "_Sub":
        return self._add("cylinder", center, (radius, half_height), mat, R)

    def sphere(self, center, radius: float, mat: Material) -> "_Sub":
        return self._add("sphere", center, (radius,), mat, None)


def _shade(rgb, f: float) -> Tuple[float, float, float]:
    """Darker (f < 1) or towards white (f > 1) version of a colour."""
    c = np.asarray(rgb, dtype=np.float64)
    c = c * f if f <= 1.0 else c + (1.0 - c) * (f - 1.0)
    return tuple(float(v) for v in np.clip(c, 0.0, 1.0))


def _jitter(rng: np.random.Generator, rgb, amount: float = 0.04) -> Tuple[float, float, float]:
    return tuple(float(v) for v in np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0.0, 1.0))


def _mat(rng: np.random.Generator, color, pattern: Optional[str] = None, period: Optional[float] = None,
         contrast: Optional[float] = None, axis=None, color2=None, grain: float = 0.08) -> Material:
    """A material around ``color``; unspecified pattern parameters are drawn from ``rng``."""
    color = _jitter(rng, color)
    pattern = pattern or str(rng.choice(PATTERNS))
    period = float(period if period is not None else rng.uniform(0.03, 0.15))
    if color2 is None:
        contrast = float(contrast if contrast is not None else rng.uniform(0.25, 0.45))
        # Dark colours get lighter secondary tones, light ones darker: both keep their colour name.
        color2 = _shade(color, 1.0 + contrast) if max(color) < 0.3 else _shade(color, 1.0 - contrast)
    if axis is None:
        a = rng.normal(size=3)
        axis = a / np.linalg.norm(a)
    return Material(color, tuple(color2), pattern, period, tuple(float(v) for v in axis),
                    int(rng.integers(0, 2**31 - 1)), grain)


# Object specs: sampled dimensions and colours (needed for placement) plus a build function that
# adds the primitives once the object's pose is known.

@dataclass
class _Spec:
    category: str
    label: str
    half: Tuple[float, float]  # footprint half extents (local x, y), metres
    build: Callable[[_Obj, np.random.Generator], None]
    top: float = 0.0  # height of a support surface for small objects (tables)
    back: float = 0.0  # distance from the local origin back to the object's rear face (wall objects)


def _pick_color(rng: np.random.Generator, used: set, allowed: Sequence[str]) -> str:
    free = [c for c in allowed if c not in used] or list(allowed)
    c = str(rng.choice(free))
    used.add(c)
    return c


def _spec_table(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["brown", "white", "black", "red", "blue", "green", "yellow", "grey"])
    col = PALETTE[cname]
    L, W, H = rng.uniform(1.0, 1.4), rng.uniform(0.6, 0.85), rng.uniform(0.70, 0.78)
    t, leg, inset = 0.04, 0.05, 0.05

    def build(o: _Obj, rng) -> None:
        o.single("table top").box((0, 0, H - t / 2), (L / 2, W / 2, t / 2),
                                  _mat(rng, col, "stripes", rng.uniform(0.02, 0.05), axis=(1, 0.05, 0)))
        base = o.part("table base")
        leg_mat = _mat(rng, _shade(col, 0.8), "noise", 0.05)
        lx, ly = L / 2 - inset - leg / 2, W / 2 - inset - leg / 2
        for sx in (-1, 1):
            for sy in (-1, 1):
                base.sub("table leg").box((sx * lx, sy * ly, (H - t) / 2), (leg / 2, leg / 2, (H - t) / 2), leg_mat)
        rail = base.sub("table rail")
        rail_mat = _mat(rng, _shade(col, 0.7), "noise", 0.08)
        z = H - t - 0.04
        for s in (-1, 1):
            rail.box((0, s * ly, z), (lx - leg / 2, 0.01, 0.04), rail_mat)
            rail.box((s * lx, 0, z), (0.01, ly - leg / 2, 0.04), rail_mat)

    return _Spec("table", f"{cname} table", (L / 2, W / 2), build, top=H)


def _spec_chair(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["red", "blue", "green", "yellow", "orange", "purple", "black", "white", "grey"])
    col = PALETTE[cname]
    S, Hs = rng.uniform(0.40, 0.48), rng.uniform(0.42, 0.48)
    Hb = Hs + rng.uniform(0.35, 0.45)
    frame_col = _shade(col, 0.75)

    def build(o: _Obj, rng) -> None:
        o.single("chair seat").box((0, 0, Hs - 0.025), (S / 2, S / 2, 0.025),
                                   _mat(rng, col, str(rng.choice(["checker", "noise"])), rng.uniform(0.04, 0.1)))
        back = o.part("chair back")
        back.sub("backrest").box((0, -(S / 2 - 0.02), Hb - 0.09), (S / 2 - 0.04, 0.015, 0.08),
                                 _mat(rng, col, "stripes", rng.uniform(0.03, 0.06), axis=(0, 0, 1)))
        post_mat = _mat(rng, frame_col, "noise", 0.05)
        for sx in (-1, 1):
            back.sub("back post").box((sx * (S / 2 - 0.02), -(S / 2 - 0.02), (Hs + Hb) / 2), (0.02, 0.02, (Hb - Hs) / 2),
                                      post_mat)
        base = o.part("chair base")
        leg_mat = _mat(rng, frame_col, "noise", 0.05)
        for sx in (-1, 1):
            for sy in (-1, 1):
                base.sub("chair leg").box((sx * (S / 2 - 0.02), sy * (S / 2 - 0.02), (Hs - 0.05) / 2),
                                          (0.02, 0.02, (Hs - 0.05) / 2), leg_mat)
        brace = base.sub("leg brace")
        for sx in (-1, 1):
            brace.box((sx * (S / 2 - 0.02), 0, 0.15), (0.012, S / 2 - 0.04, 0.012), leg_mat)

    return _Spec("chair", f"{cname} chair", (S / 2, S / 2), build)


def _spec_mug(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["red", "blue", "green", "yellow", "orange", "purple", "pink", "white", "black"])
    col = PALETTE[cname]
    r, h, rim = rng.uniform(0.035, 0.05), rng.uniform(0.08, 0.11), 0.012

    def build(o: _Obj, rng) -> None:
        body = o.part("mug body")
        body.sub("mug body").cyl((0, 0, (h - rim) / 2), r, (h - rim) / 2,
                                 _mat(rng, col, str(rng.choice(["solid", "stripes", "noise"])), rng.uniform(0.01, 0.03),
                                      axis=(0, 0, 1)))
        rim_col = PALETTE["black"] if cname in ("white", "yellow", "pink") else PALETTE["white"]
        body.sub("mug rim").cyl((0, 0, h - rim / 2), r + 0.002, rim / 2, _mat(rng, rim_col, "solid"))
        hm = _mat(rng, _shade(col, 0.85), "solid")
        handle = o.single("mug handle")
        handle.box((r + 0.018, 0, 0.75 * h), (0.02, 0.008, 0.006), hm)
        handle.box((r + 0.018, 0, 0.25 * h), (0.02, 0.008, 0.006), hm)
        handle.box((r + 0.032, 0, 0.5 * h), (0.006, 0.008, 0.25 * h + 0.006), hm)

    return _Spec("mug", f"{cname} mug", (r + 0.04, r), build)


def _spec_bottle(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["green", "blue", "brown", "white", "red", "orange", "purple"])
    col = PALETTE[cname]
    r, hb = rng.uniform(0.03, 0.04), rng.uniform(0.15, 0.22)
    rn, hn = rng.uniform(0.012, 0.016), rng.uniform(0.05, 0.08)

    def build(o: _Obj, rng) -> None:
        body = o.part("bottle body")
        body.sub("bottle body").cyl((0, 0, hb / 2), r, hb / 2, _mat(rng, col, "noise", 0.04, contrast=0.2))
        label_col = PALETTE[str(rng.choice(["white", "yellow", "grey"]))] if cname != "white" else PALETTE["red"]
        body.sub("bottle label").cyl((0, 0, 0.45 * hb), r + 0.002, 0.2 * hb,
                                     _mat(rng, label_col, str(rng.choice(["stripes", "checker"])), rng.uniform(0.01, 0.03)))
        neck = o.part("bottle neck")
        neck.sub("bottle neck").cyl((0, 0, hb + hn / 2), rn, hn / 2, _mat(rng, col, "solid"))
        neck.sub("bottle cap").cyl((0, 0, hb + hn + 0.01), rn + 0.003, 0.01,
                                   _mat(rng, PALETTE[str(rng.choice(["white", "black", "red", "yellow"]))], "solid"))

    return _Spec("bottle", f"{cname} bottle", (r, r), build)


def _spec_monitor(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["black", "white", "grey"])
    col = PALETTE[cname]
    w = rng.uniform(0.45, 0.6)
    h, lift = 0.6 * w, rng.uniform(0.10, 0.15)

    def build(o: _Obj, rng) -> None:
        screen = o.part("screen")
        zc = lift + h / 2
        screen.sub("bezel").box((0, 0, zc), (w / 2, 0.015, h / 2), _mat(rng, col, "noise", 0.1, contrast=0.15))
        c1, c2 = (PALETTE[str(c)] for c in rng.choice(["blue", "orange", "green", "pink", "yellow"], 2, replace=False))
        screen.sub("display").box((0, 0.016, zc), (w / 2 - 0.015, 0.002, h / 2 - 0.015),
                                  _mat(rng, _shade(c1, 1.2), "noise", rng.uniform(0.05, 0.12), color2=_shade(c2, 1.1)))
        stand = o.part("monitor stand")
        sm = _mat(rng, _shade(col, 0.9), "noise", 0.04, contrast=0.2)
        stand.sub("stand base").box((0, 0, 0.0075), (0.1, 0.075, 0.0075), sm)
        stand.sub("stand neck").box((0, -0.03, (lift + 0.05) / 2), (0.02, 0.01, (lift + 0.05) / 2), sm)

    return _Spec("monitor", f"{cname} monitor", (w / 2, 0.075), build)


def _spec_lamp(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["white", "yellow", "orange", "red", "blue", "green", "pink", "purple"])
    col = PALETTE[cname]
    rb, hp = rng.uniform(0.14, 0.18), rng.uniform(1.2, 1.6)
    rs, hs = rng.uniform(0.18, 0.25), rng.uniform(0.22, 0.30)
    metal = PALETTE[str(rng.choice(["black", "grey"]))]

    def build(o: _Obj, rng) -> None:
        o.single("lamp shade").cyl((0, 0, hp + hs / 2 - 0.05), rs, hs / 2,
                                   _mat(rng, col, str(rng.choice(["stripes", "noise", "checker"])), rng.uniform(0.04, 0.1)))
        stand = o.part("lamp stand")
        stand.sub("lamp base").cyl((0, 0, 0.015), rb, 0.015, _mat(rng, metal, "noise", 0.05, contrast=0.3))
        stand.sub("lamp pole").cyl((0, 0, hp / 2), 0.015, hp / 2, _mat(rng, metal, "solid"))

    r = max(rb, rs)
    return _Spec("lamp", f"{cname} lamp", (r, r), build)


def _spec_bookshelf(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["brown", "white", "black", "grey", "blue"])
    col = PALETTE[cname]
    W, D, H = rng.uniform(0.8, 1.2), 0.3, rng.uniform(1.4, 1.9)
    n = int(rng.integers(3, 5))
    th = 0.02

    def build(o: _Obj, rng) -> None:
        frame = o.part("bookshelf frame")
        wood = _mat(rng, col, "stripes", rng.uniform(0.02, 0.05), axis=(0, 0, 1))
        for sx in (-1, 1):
            frame.sub("side panel").box((sx * (W / 2 - th / 2), 0, H / 2), (th / 2, D / 2, H / 2), wood)
        frame.sub("back panel").box((0, -D / 2 + th / 4, H / 2), (W / 2 - th, th / 4, H / 2),
                                    _mat(rng, _shade(col, 0.8), "noise", 0.1))
        frame.sub("top board").box((0, 0, H - th / 2), (W / 2 - th, D / 2, th / 2), wood)
        spacing = (H - th) / n
        inner = W / 2 - th
        for k in range(n):
            z0 = k * spacing + 0.04
            shelf = o.part("shelf")
            shelf.sub("shelf board").box((0, th / 4, z0 - th / 2), (inner, D / 2 - th / 4, th / 2),
                                         _mat(rng, _shade(col, 0.9), "stripes", 0.03, axis=(1, 0, 0)))
            x = -inner + rng.uniform(0.01, 0.06)
            while True:
                bw = rng.uniform(0.02, 0.05)
                if x + bw > inner - 0.01:
                    break
                bh = min(rng.uniform(0.15, 0.28), spacing - 0.05)
                bd = rng.uniform(0.15, 0.22)
                bcol = PALETTE[str(rng.choice(list(PALETTE)))]
                shelf.sub("book").box((x + bw / 2, D / 2 - bd / 2 - 0.02, z0 + bh / 2), (bw / 2 - 0.001, bd / 2, bh / 2),
                                      _mat(rng, bcol, str(rng.choice(["solid", "stripes", "noise"])), 0.04,
                                           axis=(0, 0, 1)))
                x += bw + (rng.uniform(0.05, 0.15) if rng.random() < 0.12 else 0.0)

    return _Spec("bookshelf", f"{cname} bookshelf", (W / 2, D / 2), build, back=D / 2)


def _spec_plant(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["white", "red", "orange", "blue", "grey", "brown", "yellow"])
    col = PALETTE[cname]
    rp, hp = rng.uniform(0.12, 0.18), rng.uniform(0.2, 0.3)
    hl = rng.uniform(0.35, 0.6)
    leaves = [(rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08), hp + hl + rng.uniform(-0.1, 0.1),
               rng.uniform(0.12, 0.2)) for _ in range(int(rng.integers(3, 6)))]

    def build(o: _Obj, rng) -> None:
        pot = o.part("flower pot")
        pot.sub("flower pot").cyl((0, 0, hp / 2), rp, hp / 2, _mat(rng, col, str(rng.choice(["stripes", "noise", "checker"]))))
        pot.sub("soil").cyl((0, 0, hp + 0.0), rp - 0.015, 0.006, _mat(rng, (0.25, 0.16, 0.08), "noise", 0.03))
        plant = o.part("plant")
        plant.sub("plant stem").cyl((0, 0, hp + hl / 2), 0.012, hl / 2, _mat(rng, (0.2, 0.35, 0.1), "solid"))
        leaf = plant.sub("leaves")
        for x, y, z, r in leaves:
            leaf.sphere((x, y, z), r, _mat(rng, (0.12, 0.5, 0.12), "noise", rng.uniform(0.03, 0.07), contrast=0.5))

    r = max(rp, max(math.hypot(x, y) + r for x, y, _, r in leaves))
    return _Spec("potted plant", "potted plant", (r, r), build)


def _spec_ball(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["red", "blue", "green", "yellow", "orange", "purple", "pink", "white"])
    col = PALETTE[cname]
    r = rng.uniform(0.1, 0.16)

    def build(o: _Obj, rng) -> None:
        o.single("ball").sphere((0, 0, r), r, _mat(rng, col, str(rng.choice(["stripes", "checker"])), rng.uniform(0.06, 0.12),
                                                   contrast=0.5))

    return _Spec("ball", f"{cname} ball", (r, r), build)


def _spec_rug(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["red", "blue", "green", "purple", "orange", "grey", "brown"])
    col = PALETTE[cname]
    L, W = rng.uniform(1.2, 2.0), rng.uniform(0.8, 1.4)

    def build(o: _Obj, rng) -> None:
        o.single("rug").box((0, 0, 0.004), (L / 2, W / 2, 0.004),
                            _mat(rng, col, str(rng.choice(["stripes", "checker"])), rng.uniform(0.1, 0.25), axis=(1, 0, 0),
                                 contrast=0.5))

    return _Spec("rug", f"{cname} rug", (L / 2, W / 2), build)


def _spec_door(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["brown", "white", "grey", "blue", "green", "red"])
    col = PALETTE[cname]
    w, h = rng.uniform(0.8, 0.95), rng.uniform(2.0, 2.1)

    def build(o: _Obj, rng) -> None:
        o.single("door panel").box((0, 0.015, h / 2), (w / 2, 0.015, h / 2),
                                   _mat(rng, col, "stripes", rng.uniform(0.02, 0.05), axis=(1, 0, 0.05)))
        fm = _mat(rng, _shade(col, 0.7), "noise", 0.05)
        frame = o.single("door frame")
        for sx in (-1, 1):
            frame.box((sx * (w / 2 + 0.03), 0.02, h / 2 + 0.03), (0.03, 0.02, h / 2 + 0.03), fm)
        frame.box((0, 0.02, h + 0.03), (w / 2, 0.02, 0.03), fm)
        o.single("door handle").box((w / 2 - 0.1, 0.045, 1.0), (0.06, 0.015, 0.012), _mat(rng, (0.75, 0.75, 0.78), "solid"))

    return _Spec("door", f"{cname} door", (w / 2 + 0.06, 0.06), build)


def _spec_painting(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["black", "brown", "white", "yellow"])
    col = PALETTE[cname]
    w, h = rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.8)
    zc, fw = rng.uniform(1.4, 1.7), rng.uniform(0.04, 0.06)

    def build(o: _Obj, rng) -> None:
        c1, c2 = (PALETTE[str(c)] for c in rng.choice(["blue", "orange", "green", "red", "yellow", "purple"], 2, replace=False))
        o.single("canvas").box((0, 0.01, zc), (w / 2, 0.01, h / 2), _mat(rng, c1, "noise", rng.uniform(0.08, 0.2), color2=c2))
        frame = o.single("picture frame")
        fm = _mat(rng, col, "noise", 0.05, contrast=0.2)
        for s in (-1, 1):
            frame.box((s * (w / 2 + fw / 2), 0.02, zc), (fw / 2, 0.02, h / 2 + fw), fm)
            frame.box((0, 0.02, zc + s * (h / 2 + fw / 2)), (w / 2, 0.02, fw / 2), fm)

    return _Spec("painting", "painting", (w / 2 + fw, 0.04), build)


FLOOR_CATEGORIES = {"lamp": _spec_lamp, "bookshelf": _spec_bookshelf, "potted plant": _spec_plant,
                    "ball": _spec_ball, "rug": _spec_rug}
TABLE_CATEGORIES = {"mug": _spec_mug, "bottle": _spec_bottle, "monitor": _spec_monitor}
WALL_CATEGORIES = {"door": _spec_door, "painting": _spec_painting}
CATEGORIES = ("table", "chair", *TABLE_CATEGORIES, *FLOOR_CATEGORIES, *WALL_CATEGORIES)


# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------

def _rect_corners(x: float, y: float, yaw: float, hx: float, hy: float) -> np.ndarray:
    R = _rot_z(yaw)[:2, :2]
    return np.array([[sx * hx, sy * hy] for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]) @ R.T + (x, y)


def _rects_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quadrilaterals ``[4, 2]``."""
    for poly in (a, b):
        for i in range(4):
            e = poly[(i + 1) % 4] - poly[i]
            n = np.array([-e[1], e[0]])
            pa, pb = a @ n, b @ n
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def _place_floor(rng, spec: _Spec, room, free_r: float, placed: List[np.ndarray], margin: float = 0.1,
                 tries: int = 300) -> Optional[Tuple[float, float, float]]:
    """Random pose ``(x, y, yaw)`` in the band between the free disc and the walls, facing inwards."""
    W, D = room[0], room[1]
    hx, hy = spec.half
    for _ in range(tries):
        x, y = rng.uniform(-W / 2, W / 2), rng.uniform(-D / 2, D / 2)
        yaw = math.atan2(-y, -x) - math.pi / 2 + rng.uniform(-0.5, 0.5)
        c = _rect_corners(x, y, yaw, hx, hy)
        if np.any(np.abs(c[:, 0]) > W / 2 - 0.05) or np.any(np.abs(c[:, 1]) > D / 2 - 0.05):
            continue
        # Distance from the room centre to the footprint: keep the cameras' disc free.
        local = _rot_z(-yaw)[:2, :2] @ -np.array([x, y])
        if math.hypot(max(abs(local[0]) - hx, 0.0), max(abs(local[1]) - hy, 0.0)) < free_r:
            continue
        grown = _rect_corners(x, y, yaw, hx + margin / 2, hy + margin / 2)
        if any(_rects_overlap(grown, p) for p in placed):
            continue
        placed.append(grown)
        return x, y, yaw
    return None


def _place_on_wall(rng, spec: _Spec, room, placed: List[np.ndarray], intervals: Dict[int, list],
                   tries: int = 300) -> Optional[Tuple[float, float, float]]:
    """Pose with the object's back on a wall (local +y into the room); walls' used spans recorded."""
    W, D = room[0], room[1]
    hx, hy = spec.half
    for _ in range(tries):
        wall = int(rng.integers(0, 4))
        length = W if wall in (0, 1) else D
        s = rng.uniform(-length / 2 + hx + 0.1, length / 2 - hx - 0.1)
        if any(s - hx - 0.05 < b and a < s + hx + 0.05 for a, b in intervals[wall]):
            continue
        n, surface = {0: ((0.0, 1.0), (s, -D / 2)), 1: ((0.0, -1.0), (s, D / 2)),
                      2: ((1.0, 0.0), (-W / 2, s)), 3: ((-1.0, 0.0), (W / 2, s))}[wall]
        n, surface = np.array(n), np.array(surface)
        yaw = math.atan2(n[1], n[0]) - math.pi / 2
        fc = surface + n * hy
        intervals[wall].append((s - hx, s + hx))
        placed.append(_rect_corners(fc[0], fc[1], yaw, hx + 0.05, hy + 0.05))
        origin = surface + n * spec.back
        return float(origin[0]), float(origin[1]), yaw
    return None


def _structure(b: _Builder, rng, room) -> None:
    W, D, H = room
    th = 0.1
    floor_col = PALETTE[str(rng.choice(["grey", "brown", "white"]))]
    floor_mat = _mat(rng, floor_col, str(rng.choice(["checker", "stripes"])), rng.uniform(0.4, 0.8), axis=(1, 0, 0),
                     contrast=0.25)
    b.obj("floor", "floor", np.eye(4), True).single("floor").box((0, 0, -th / 2), (W / 2 + th, D / 2 + th, th / 2), floor_mat)
    b.obj("ceiling", "ceiling", np.eye(4), True).single("ceiling").box(
        (0, 0, H + th / 2), (W / 2 + th, D / 2 + th, th / 2), _mat(rng, (0.9, 0.9, 0.88), "noise", 0.5, contrast=0.1))
    wall_col = _jitter(rng, PALETTE[str(rng.choice(["white", "yellow", "grey", "pink", "blue"]))], 0.02)
    wall_col = _shade(wall_col, 1.4)
    for center, half in (((0, -D / 2 - th / 2, H / 2), (W / 2 + th, th / 2, H / 2)),
                         ((0, D / 2 + th / 2, H / 2), (W / 2 + th, th / 2, H / 2)),
                         ((-W / 2 - th / 2, 0, H / 2), (th / 2, D / 2 + th, H / 2)),
                         ((W / 2 + th / 2, 0, H / 2), (th / 2, D / 2 + th, H / 2))):
        # Wallpaper: vertical stripes or blotches, enough texture for photometric mapping.
        paper = _mat(rng, wall_col, "stripes", rng.uniform(0.15, 0.3), axis=(1, 1, 0), contrast=0.15) \
            if rng.random() < 0.5 else _mat(rng, wall_col, "noise", rng.uniform(0.2, 0.4), contrast=0.3)
        b.obj("wall", "wall", np.eye(4), True).single("wall").box(center, half, paper)


GENERATORS = ("classic", "varied")


def make_scene(seed: int, generator: str = "classic", structure_labels: Optional[bool] = None) -> Scene:
    """The furnished room of ``seed`` made by ``generator`` (one of :data:`GENERATORS`).

    ``classic`` (default): 4.6-5.6 m rooms, one instance per class, every surface labelled; the same
    scene for a seed as before the varied generator existed. ``varied``
    (:mod:`gags_ros.sim.varied`): 3-10 m rooms, scaled objects, clutter, repeated classes,
    more kinds, unlabelled structure in a third of the seeds. ``structure_labels``: force floor,
    walls and ceiling labelled (True) or not (False); None = the generator's choice (classic: True).
    """
    if generator == "varied":
        from .varied import make_varied_scene

        return make_varied_scene(seed, structure_labels)
    if generator != "classic":
        raise ValueError(f"scene generator {generator!r}: expected one of {GENERATORS}")
    scene = _make_classic_scene(seed)
    if structure_labels is False:
        _drop_structure_labels(scene)
    return scene


def scene_from_meta(meta: dict) -> Scene:
    """Rebuild the scene a dataset's ``scene.json`` describes (its seed, generator and structure
    labelling; files written before the varied generator existed are classic)."""
    return make_scene(int(meta["seed"]), str(meta.get("scene_generator", "classic")), meta.get("structure_labels"))


def _drop_structure_labels(scene: Scene) -> None:
    """Remove the labels of floor, walls and ceiling (their primitives then write id 0 in masks)."""
    structure = {o.whole_id for o in scene.objects if o.structure}
    for p in scene.primitives:
        if p.ids[0] in structure:
            for lv, i in zip(LEVEL_NAMES, p.ids):
                scene.labels[lv].pop(i, None)
    scene.structure_labelled = False


def _make_classic_scene(seed: int) -> Scene:
    """The classic room of ``seed`` (at least 6 object categories, every level labelled)."""
    rng = np.random.default_rng(seed)
    room = (float(rng.uniform(4.6, 5.6)), float(rng.uniform(4.6, 5.6)), float(rng.uniform(2.6, 3.0)))
    free_r = 1.0
    b = _Builder()
    _structure(b, rng, room)
    used_colors: set = set()
    placed: List[np.ndarray] = []
    intervals: Dict[int, list] = {0: [], 1: [], 2: [], 3: []}

    def add(spec: _Spec, T: np.ndarray) -> None:
        spec.build(b.obj(spec.category, spec.label, T), rng)

    # Wall objects first (door, painting, bookshelf) so floor furniture does not block walls.
    wall_specs = [f(rng, used_colors) for name, f in WALL_CATEGORIES.items() if rng.random() < 0.75]
    floor_names = [str(n) for n in rng.choice(list(FLOOR_CATEGORIES), 4, replace=False)]
    if "bookshelf" in floor_names:
        wall_specs.insert(0, _spec_bookshelf(rng, used_colors))
        floor_names.remove("bookshelf")
    for spec in wall_specs:
        pose = _place_on_wall(rng, spec, room, placed, intervals)
        if pose is not None:
            add(spec, make_pose(_rot_z(pose[2]), (pose[0], pose[1], 0.0)))

    table = _spec_table(rng, used_colors)
    pose = _place_floor(rng, table, room, free_r, placed)
    if pose is None:  # never seen (the table is the first floor object), but fail loudly
        raise RuntimeError(f"scene {seed}: could not place the table")
    T_table = make_pose(_rot_z(pose[2]), (pose[0], pose[1], 0.0))
    add(table, T_table)
    _furnish_table(rng, table, T_table, used_colors, add)

    for spec in [_spec_chair(rng, used_colors)] + [FLOOR_CATEGORIES[n](rng, used_colors) for n in floor_names]:
        if spec.category == "rug":  # flat: lies in the free disc, under the cameras
            x, y = rng.uniform(-0.3, 0.3, 2)
            add(spec, make_pose(_rot_z(rng.uniform(0, math.pi)), (x, y, 0.0)))
            continue
        pose = _place_floor(rng, spec, room, free_r, placed)
        if pose is not None:
            add(spec, make_pose(_rot_z(pose[2]), (pose[0], pose[1], 0.0)))

    return Scene(seed, room, b.primitives, b.labels, b.objects, free_r)


def _furnish_table(rng, table: _Spec, T_table: np.ndarray, used_colors: set, add) -> None:
    """Mug always; bottle and monitor with probability 1/2 each, without overlaps on the top."""
    hx, hy = table.half[0] - 0.06, table.half[1] - 0.06
    spots: List[Tuple[float, float, float]] = []
    names = ["mug"] + [n for n in ("bottle", "monitor") if rng.random() < 0.5]
    for name in names:
        spec = TABLE_CATEGORIES[name](rng, used_colors)
        r = math.hypot(*spec.half)
        for _ in range(100):
            if name == "monitor":  # at the back, facing the table's front
                x, y, yaw = rng.uniform(-hx + r, hx - r), -hy + spec.half[1] + 0.02, 0.0
            else:
                x, y, yaw = rng.uniform(-hx + r, hx - r), rng.uniform(-hy + r, hy - r), rng.uniform(-math.pi, math.pi)
            if all(math.hypot(x - sx, y - sy) > r + sr + 0.03 for sx, sy, sr in spots):
                spots.append((x, y, r))
                add(spec, T_table @ make_pose(_rot_z(yaw), (x, y, table.top)))
                break


# --------------------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------------------

def default_intrinsics(width: int = 160, height: int = 120, fov_x_deg: float = 70.0) -> Intrinsics:
    """Square-pixel pinhole camera with the principal point at the image centre."""
    f = width / (2.0 * math.tan(math.radians(fov_x_deg) / 2.0))
    return Intrinsics(f, f, width / 2.0, height / 2.0, int(width), int(height))


@dataclass
class CameraView:
    """A named camera pose; ``path`` is "walk", "orbit" or "closeup"; ``target`` the close-up's whole id."""

    name: str
    path: str
    T_world_cam: np.ndarray
    target: int = 0


def _pose_ok(scene: Scene, eye: np.ndarray, clearance: float = 0.1) -> bool:
    W, D, H = scene.room
    if abs(eye[0]) > W / 2 - clearance or abs(eye[1]) > D / 2 - clearance or not (0.25 < eye[2] < H - clearance):
        return False
    return not bool(scene.inside_solid(eye[None], clearance)[0])


def walk_path(scene: Scene, n: int, rng: np.random.Generator) -> List[CameraView]:
    """A robot's loop through the free middle of the room, looking outwards-ahead (classic rooms:
    0.5-1.5 m high, radius about 0.6 m; ``scene.rig`` sets the shape)."""
    views = []
    rig = scene.rig
    theta0, phase = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
    rho0 = rig.walk_radius * scene.free_radius
    for i in range(n):
        t = i / max(n, 1)
        th = theta0 + 2 * math.pi * t
        rho = rho0 * (1.0 + 0.25 * math.sin(3 * 2 * math.pi * t + phase))
        z = rig.walk_height + rig.walk_swing * math.sin(2 * 2 * math.pi * t + phase)
        eye = np.array([rho * math.cos(th), rho * math.sin(th), z])
        heading = th + math.pi / 4 + 0.6 * math.sin(2 * math.pi * 3 * t + 2 * phase)
        target = eye + np.array([rig.walk_look * math.cos(heading), rig.walk_look * math.sin(heading), 0.0])
        target[2] = rig.walk_look_z
        views.append(CameraView(f"walk_{i:04d}", "walk", look_at(eye, target)))
    return views


def orbit_path(scene: Scene, n: int, rng: np.random.Generator) -> List[CameraView]:
    """A circle above the free disc (classic rooms: 1.7-2.1 m high), each view looking across the
    room and down (``scene.rig`` sets the shape)."""
    views = []
    rig = scene.rig
    theta0 = rng.uniform(0, 2 * math.pi)
    H = scene.room[2]
    for i in range(n):
        th = theta0 + 2 * math.pi * i / max(n, 1)
        z = min(rig.orbit_height + 0.2 * math.sin(4 * th), H - 0.3)
        r = rig.orbit_radius * scene.free_radius
        eye = np.array([r * math.cos(th), r * math.sin(th), z])
        target = np.array([-rig.orbit_look * math.cos(th), -rig.orbit_look * math.sin(th), rig.orbit_look_z])
        views.append(CameraView(f"orbit_{i:04d}", "orbit", look_at(eye, target)))
    return views


def closeup_path(scene: Scene, per_object: int, intrinsics: Intrinsics, rng: np.random.Generator,
                 line_of_sight: Optional[Callable[[np.ndarray, np.ndarray], int]] = None) -> List[CameraView]:
    """``per_object`` views of every non-structure object, filling most of the image from the room side.

    ``line_of_sight(eye, point) -> whole id`` of the first surface on the segment (the ray-caster);
    views that do not see their object's centre are redrawn (up to 20 tries; then, when
    ``scene.rig.closeup_fallback``, up to 60 more from any azimuth; then skipped).
    """
    views = []
    fov = 2 * math.atan(min(intrinsics.width / intrinsics.fx, intrinsics.height / intrinsics.fy) / 2)
    for obj in scene.objects:
        if obj.structure or obj.category == "rug":
            continue
        lo, hi = scene.object_aabb(obj.whole_id)
        c = (lo + hi) / 2
        r = float(np.linalg.norm(hi - lo) / 2)
        dist = float(np.clip(1.2 * r / math.tan(fov / 2), r + 0.25, 2.5))
        base = math.atan2(-c[1], -c[0])
        made = 0
        for k in range(per_object * 20):
            if made == per_object:
                break
            span = (made + 0.5) / per_object - 0.5 if per_object > 1 else 0.0
            az = base + 1.4 * span + rng.uniform(-0.25, 0.25)
            el = rng.uniform(0.25, 0.8)
            d = dist * rng.uniform(0.8, 1.1) * (0.97 ** (k // per_object))
            eye = c + d * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
            if not _pose_ok(scene, eye):
                continue
            if line_of_sight is not None and line_of_sight(eye, c) != obj.whole_id:
                continue
            views.append(CameraView(f"closeup_{obj.whole_id:03d}_{made}", "closeup", look_at(eye, c), obj.whole_id))
            made += 1
        if made < per_object and scene.rig.closeup_fallback:
            # Blocked from the room side (clutter, a wall corner): any azimuth, lower and nearer too.
            for k in range(60):
                if made == per_object:
                    break
                az, el = rng.uniform(-math.pi, math.pi), rng.uniform(0.1, 1.2)
                d = dist * rng.uniform(0.5, 1.1)
                eye = c + d * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
                if not _pose_ok(scene, eye):
                    continue
                if line_of_sight is not None and line_of_sight(eye, c) != obj.whole_id:
                    continue
                views.append(CameraView(f"closeup_{obj.whole_id:03d}_{made}", "closeup", look_at(eye, c),
                                        obj.whole_id))
                made += 1
    return views
