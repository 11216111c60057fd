"""The ``varied`` room generator: the generalisation protocol's scenes (issue 13, item 5).

Unlike the classic rooms (4.6-5.6 m, one instance per class, everything labelled) a varied room has

- sides of 3-10 m (aspect at most 2.5) and a height of 2.4-3.5 m; the cameras' free disc, the
  walk's look distance and the orbit's look-at point scale with the room (:class:`CameraRig`);
- a per-object scale factor drawn from a plausible range per category (:data:`SCALE_RANGES`);
- repeated classes: 2-4 identical chairs around the table, often two identical mugs, sometimes two
  identical cardboard boxes or plants (identical label text: a query has several correct instances);
- clutter: small objects on the floor, the table and the cabinet top;
- more object kinds: sofa, cabinet, vase, trash bin, cardboard box, keyboard, book;
- unlabelled room structure in a share of the scenes (``seed % 3 == 2`` unless told): floor, walls
  and ceiling keep their geometry but carry no label, so their pixels have id 0 in every mask and no
  teacher mask ever covers them (as SAM often gives no mask of a wall).

Everything is drawn from ``numpy.random.default_rng([seed, 7])`` (the classic rooms use
``default_rng(seed)``), so a varied scene is as deterministic as a classic one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.camera import make_pose
from .scene import (FLOOR_CATEGORIES, PALETTE, WALL_CATEGORIES, CameraRig, Scene, _Builder, _Obj,
                    _Spec, _drop_structure_labels, _mat, _pick_color, _place_floor, _rect_corners, _rects_overlap, _rot_z, _shade,
                    _spec_bookshelf, _spec_bottle, _spec_chair, _spec_monitor, _spec_mug, _spec_table,
                    _structure)

# Per-category range of the uniform scale factor (wall objects: door and painting keep their size).
SCALE_RANGES: Dict[str, Tuple[float, float]] = {
    "table": (0.85, 1.2), "chair": (0.9, 1.12), "mug": (0.8, 1.3), "bottle": (0.8, 1.3), "monitor": (0.8, 1.2),
    "lamp": (0.8, 1.12), "bookshelf": (0.8, 1.15), "potted plant": (0.6, 1.5), "ball": (0.5, 1.8),
    "rug": (0.8, 1.6), "sofa": (0.85, 1.15), "cabinet": (0.8, 1.25), "vase": (0.7, 1.4),
    "trash bin": (0.8, 1.3), "cardboard box": (0.6, 1.5), "keyboard": (0.9, 1.1), "book": (0.8, 1.25),
}


# --------------------------------------------------------------------------------------------------
# New object kinds (local frame: origin on the support below the centre, z up, front +y)
# --------------------------------------------------------------------------------------------------

def _spec_sofa(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["grey", "blue", "green", "brown", "red", "black", "purple"])
    col = PALETTE[cname]
    L, Dp = rng.uniform(1.5, 2.2), rng.uniform(0.8, 0.95)
    Hs, Hb, arm, Ha = rng.uniform(0.40, 0.46), rng.uniform(0.8, 0.9), rng.uniform(0.12, 0.18), rng.uniform(0.58, 0.66)
    n = int(rng.integers(2, 4))
    back_d = 0.2

    def build(o: _Obj, rng) -> None:
        fabric = _mat(rng, col, str(rng.choice(["noise", "checker"])), rng.uniform(0.04, 0.1), contrast=0.3)
        inner = L / 2 - arm
        seat = o.part("sofa seat")
        w = 2 * inner / n
        for k in range(n):  # cushions 1 cm apart so their seams show
            x = -inner + (k + 0.5) * w
            seat.sub("seat cushion").box((x, back_d / 2, Hs - 0.06), (w / 2 - 0.005, (Dp - back_d) / 2, 0.06), fabric)
        o.part("sofa back").sub("back cushion").box((0, -Dp / 2 + back_d / 2, (Hs - 0.12 + Hb) / 2),
                                                    (inner, back_d / 2, (Hb - Hs + 0.12) / 2),
                                                    _mat(rng, _shade(col, 0.9), "noise", 0.08, contrast=0.3))
        arm_mat = _mat(rng, _shade(col, 0.8), "noise", 0.06, contrast=0.25)
        for sx in (-1, 1):
            o.single("armrest").box((sx * (L / 2 - arm / 2), 0, Ha / 2), (arm / 2, Dp / 2, Ha / 2), arm_mat)
        base = o.part("sofa base")
        base.sub("sofa frame").box((0, 0, (Hs - 0.12 + 0.08) / 2), (inner, Dp / 2, (Hs - 0.12 - 0.08) / 2),
                                   _mat(rng, _shade(col, 0.6), "noise", 0.05))
        leg_mat = _mat(rng, PALETTE["black"], "solid")
        for sx in (-1, 1):
            for sy in (-1, 1):
                base.sub("sofa leg").cyl((sx * (inner - 0.05), sy * (Dp / 2 - 0.06), 0.04), 0.025, 0.04, leg_mat)

    return _Spec("sofa", f"{cname} sofa", (L / 2, Dp / 2), build, back=Dp / 2)


def _spec_cabinet(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["white", "brown", "grey", "black", "blue", "green"])
    col = PALETTE[cname]
    W, Dp, H = rng.uniform(0.6, 1.0), rng.uniform(0.4, 0.5), rng.uniform(0.75, 1.05)
    t = 0.025

    def build(o: _Obj, rng) -> None:
        body = o.part("cabinet body")
        wood = _mat(rng, col, "stripes", rng.uniform(0.02, 0.05), axis=(0, 0, 1), contrast=0.2)
        body.sub("cabinet frame").box((0, -0.01, (H - t) / 2), (W / 2, Dp / 2 - 0.01, (H - t) / 2), wood)
        body.sub("cabinet top").box((0, 0, H - t / 2), (W / 2 + 0.01, Dp / 2, t / 2),
                                    _mat(rng, _shade(col, 0.8), "noise", 0.06, contrast=0.2))
        door_mat = _mat(rng, _shade(col, 0.92), "stripes", rng.uniform(0.03, 0.06), axis=(1, 0, 0), contrast=0.2)
        knob_mat = _mat(rng, (0.75, 0.75, 0.78), "solid")
        for sx in (-1, 1):
            door = o.part("cabinet door")
            door.sub("cabinet door").box((sx * W / 4, Dp / 2 - 0.005, (H - t) / 2 + 0.02),
                                         (W / 4 - 0.006, 0.008, (H - t) / 2 - 0.04), door_mat)
            door.sub("cabinet knob").sphere((sx * 0.06, Dp / 2 + 0.015, H * 0.6), 0.018, knob_mat)

    # Footprint: knobs included (3.3 cm in front); the top is (W/2 + 0.01, back) around the origin.
    return _Spec("cabinet", f"{cname} cabinet", (W / 2 + 0.01, Dp / 2 + 0.035), build, top=H, back=Dp / 2)


def _spec_vase(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["blue", "white", "red", "green", "yellow", "purple", "orange"])
    col = PALETTE[cname]
    r, h = rng.uniform(0.05, 0.075), rng.uniform(0.14, 0.22)
    rn, hn = 0.6 * r, rng.uniform(0.05, 0.08)
    hs = rng.uniform(0.1, 0.18)
    blossoms = [(rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04), rng.uniform(-0.02, 0.03)) for _ in
                range(int(rng.integers(2, 4)))]

    def build(o: _Obj, rng) -> None:
        vase = o.part("vase")
        glaze = _mat(rng, col, str(rng.choice(["solid", "stripes", "noise"])), rng.uniform(0.02, 0.05), axis=(0, 0, 1))
        vase.sub("vase body").cyl((0, 0, h / 2), r, h / 2, glaze)
        vase.sub("vase neck").cyl((0, 0, h + hn / 2), rn, hn / 2, _mat(rng, _shade(col, 0.85), "solid"))
        flowers = o.part("flowers")
        flowers.sub("flower stem").cyl((0, 0, h + hn + hs / 2), 0.006, hs / 2, _mat(rng, (0.2, 0.4, 0.12), "solid"))
        petal = PALETTE[str(rng.choice(["pink", "yellow", "red", "white", "purple", "orange"]))]
        bl = flowers.sub("blossom")
        for x, y, dz in blossoms:
            bl.sphere((x, y, h + hn + hs + dz), 0.03, _mat(rng, petal, "noise", 0.02, contrast=0.3))

    return _Spec("vase", f"{cname} vase", (r + 0.02, r + 0.02), build)


def _spec_trash_bin(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["grey", "black", "blue", "green", "white"])
    col = PALETTE[cname]
    r, h = rng.uniform(0.13, 0.18), rng.uniform(0.3, 0.45)

    def build(o: _Obj, rng) -> None:
        body = o.part("bin body")
        body.sub("bin body").cyl((0, 0, (h - 0.03) / 2), r, (h - 0.03) / 2,
                                 _mat(rng, col, str(rng.choice(["stripes", "noise"])), rng.uniform(0.02, 0.05), axis=(0, 0, 1)))
        body.sub("bin rim").cyl((0, 0, h - 0.015), r + 0.008, 0.015, _mat(rng, _shade(col, 0.6), "solid"))
        o.single("bin pedal").box((0, r + 0.03, 0.02), (0.05, 0.03, 0.012), _mat(rng, PALETTE["grey"], "solid"))

    return _Spec("trash bin", f"{cname} trash bin", (r + 0.01, r + 0.06), build)


def _spec_cardboard_box(rng, used) -> _Spec:
    hx, hy, hz = rng.uniform(0.12, 0.25), rng.uniform(0.1, 0.2), rng.uniform(0.08, 0.2)

    def build(o: _Obj, rng) -> None:
        body = o.part("box body")
        body.sub("box sides").box((0, 0, hz), (hx, hy, hz), _mat(rng, (0.62, 0.45, 0.26), "noise", 0.05, contrast=0.15))
        body.sub("packing tape").box((0, 0, 2 * hz + 0.002), (hx + 0.001, 0.025, 0.002),
                                     _mat(rng, (0.8, 0.7, 0.5), "solid"))
        o.single("shipping label").box((0.3 * hx, hy + 0.002, 1.1 * hz), (0.45 * hx, 0.002, 0.35 * hz),
                                       _mat(rng, PALETTE["white"], "stripes", 0.01, axis=(0, 0, 1), contrast=0.5))

    return _Spec("cardboard box", "cardboard box", (hx + 0.01, hy + 0.01), build)


def _spec_keyboard(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["black", "white", "grey"])
    col = PALETTE[cname]
    W, Dp = rng.uniform(0.38, 0.45), rng.uniform(0.13, 0.15)

    def build(o: _Obj, rng) -> None:
        o.single("keyboard base").box((0, 0, 0.01), (W / 2, Dp / 2, 0.01), _mat(rng, col, "noise", 0.05, contrast=0.2))
        keys = o.part("keys")
        key_col = _shade(col, 1.3) if max(col) < 0.3 else _shade(col, 0.7)
        km = _mat(rng, key_col, "checker", 0.018, contrast=0.3)
        for k in range(4):
            keys.sub("key row").box((0, -Dp / 2 + 0.02 + k * (Dp - 0.05) / 4, 0.026), (W / 2 - 0.012, 0.011, 0.006), km)
        keys.sub("space bar").box((0, Dp / 2 - 0.016, 0.026), (0.09, 0.009, 0.006), _mat(rng, key_col, "solid"))

    return _Spec("keyboard", f"{cname} keyboard", (W / 2, Dp / 2), build)


def _spec_book(rng, used) -> _Spec:
    cname = _pick_color(rng, used, ["red", "blue", "green", "yellow", "black", "orange", "purple"])
    col = PALETTE[cname]
    w, d, t = rng.uniform(0.13, 0.17), rng.uniform(0.19, 0.24), rng.uniform(0.02, 0.04)

    def build(o: _Obj, rng) -> None:
        cover = o.part("book cover")
        cm = _mat(rng, col, "noise", 0.05, contrast=0.25)
        cover.sub("front cover").box((0.004, 0, t - 0.002), (w / 2 - 0.004, d / 2, 0.002), cm)
        cover.sub("back cover").box((0.004, 0, 0.002), (w / 2 - 0.004, d / 2, 0.002), cm)
        cover.sub("book spine").box((-w / 2 + 0.004, 0, t / 2), (0.004, d / 2, t / 2), _mat(rng, _shade(col, 0.7), "solid"))
        o.single("pages").box((0.004, 0, t / 2), (w / 2 - 0.008, d / 2 - 0.004, t / 2 - 0.004),
                              _mat(rng, (0.93, 0.91, 0.84), "stripes", 0.004, axis=(0, 0, 1), contrast=0.1))

    return _Spec("book", f"{cname} book", (w / 2, d / 2), build)


NEW_CATEGORIES = {"sofa": _spec_sofa, "cabinet": _spec_cabinet, "vase": _spec_vase, "trash bin": _spec_trash_bin,
                  "cardboard box": _spec_cardboard_box, "keyboard": _spec_keyboard, "book": _spec_book}
VARIED_CATEGORIES = ("table", "chair", "mug", "bottle", "monitor", *FLOOR_CATEGORIES, *WALL_CATEGORIES,
                     *NEW_CATEGORIES)


# --------------------------------------------------------------------------------------------------
# Spec modifiers
# --------------------------------------------------------------------------------------------------

def _scaled(spec: _Spec, rng: np.random.Generator) -> _Spec:
    """``spec`` grown by a factor drawn from its category's :data:`SCALE_RANGES` (1 when absent)."""
    lo, hi = SCALE_RANGES.get(spec.category, (1.0, 1.0))
    s = float(rng.uniform(lo, hi)) if hi > lo else 1.0
    inner = spec.build

    def build(o: _Obj, rng) -> None:
        o.scale = s
        inner(o, rng)

    return replace(spec, half=(spec.half[0] * s, spec.half[1] * s), top=spec.top * s, back=spec.back * s, build=build)


def _frozen(spec: _Spec, rng: np.random.Generator) -> _Spec:
    """``spec`` whose materials come from one fixed stream: every copy built is identical."""
    seed = int(rng.integers(0, 2**31 - 1))
    inner = spec.build
    return replace(spec, build=lambda o, _rng: inner(o, np.random.default_rng(seed)))


# --------------------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------------------

def _disc_distance(x: float, y: float, yaw: float, hx: float, hy: float) -> float:
    """Distance from the room centre to a footprint rectangle, metres (0 when it covers the centre)."""
    local = _rot_z(-yaw)[:2, :2] @ -np.array([x, y])
    return math.hypot(max(abs(local[0]) - hx, 0.0), max(abs(local[1]) - hy, 0.0))


def _footprint_ok(rect: np.ndarray, x: float, y: float, yaw: float, hx: float, hy: float, room, free_r: float,
                  placed: Sequence[np.ndarray]) -> bool:
    W, D = room[0], room[1]
    if np.any(np.abs(rect[:, 0]) > W / 2 - 0.02) or np.any(np.abs(rect[:, 1]) > D / 2 - 0.02):
        return False
    if _disc_distance(x, y, yaw, hx, hy) < free_r:
        return False
    return not any(_rects_overlap(rect, p) for p in placed)


def _place_wall(rng, spec: _Spec, room, free_r: float, placed: List[np.ndarray],
                tries: int = 200) -> Optional[Tuple[float, float, float]]:
    """Pose ``(x, y, yaw)`` with the object's back on a wall, clear of the free disc and of every
    placed footprint (corners included, unlike the classic rooms' interval check)."""
    W, D = room[0], room[1]
    hx, hy = spec.half
    for _ in range(tries):
        wall = int(rng.integers(0, 4))
        length = W if wall in (0, 1) else D
        if length < 2 * hx + 0.3:
            continue
        s = rng.uniform(-length / 2 + hx + 0.1, length / 2 - hx - 0.1)
        n, surface = {0: ((0.0, 1.0), (s, -D / 2)), 1: ((0.0, -1.0), (s, D / 2)),
                      2: ((1.0, 0.0), (-W / 2, s)), 3: ((-1.0, 0.0), (W / 2, s))}[wall]
        n, surface = np.array(n), np.array(surface)
        yaw = math.atan2(n[1], n[0]) - math.pi / 2
        fc = surface + n * (hy + 0.005)
        rect = _rect_corners(fc[0], fc[1], yaw, hx + 0.05, hy)
        if not _footprint_ok(rect, fc[0], fc[1], yaw, hx, hy, (W + 0.04, D + 0.04), free_r, placed):
            continue
        placed.append(rect)
        origin = surface + n * (spec.back + 0.005)
        return float(origin[0]), float(origin[1]), yaw
    return None


def _place_on_surface(rng, specs: Sequence[_Spec], T_support: np.ndarray, half: Tuple[float, float], z: float,
                      add, margin: float = 0.03) -> None:
    """Put ``specs`` on a support rectangle (half extents ``half`` m, height ``z`` m, in the frame
    ``T_support`` [4, 4]): footprints inside it, 3 cm apart; a spec that finds no spot in 100 tries
    is left out. A monitor stands at the back edge facing +y, a keyboard 8-15 cm in front of it."""
    hx, hy = half[0] - margin, half[1] - margin
    rects: List[np.ndarray] = []
    monitor_front: Optional[Tuple[float, float]] = None
    for spec in specs:
        for _ in range(100):
            if spec.category == "monitor":
                x, y, yaw = rng.uniform(-hx, hx), -hy + spec.half[1], 0.0
            elif spec.category == "keyboard" and monitor_front is not None:
                x, y, yaw = (monitor_front[0] + rng.uniform(-0.05, 0.05),
                             monitor_front[1] + rng.uniform(0.08, 0.15) + spec.half[1], 0.0)
            else:
                x, y, yaw = rng.uniform(-hx, hx), rng.uniform(-hy, hy), rng.uniform(-math.pi, math.pi)
            rect = _rect_corners(x, y, yaw, *spec.half)
            if np.any(np.abs(rect[:, 0]) > hx) or np.any(np.abs(rect[:, 1]) > hy):
                continue
            grown = _rect_corners(x, y, yaw, spec.half[0] + 0.015, spec.half[1] + 0.015)
            if any(_rects_overlap(grown, r) for r in rects):
                continue
            rects.append(grown)
            if spec.category == "monitor":
                monitor_front = (x, y + spec.half[1])
            add(spec, T_support @ make_pose(_rot_z(yaw), (x, y, z)))
            break


# --------------------------------------------------------------------------------------------------
# The room
# --------------------------------------------------------------------------------------------------

@dataclass
class _Room:
    """What the placement steps of :func:`make_varied_scene` share: the generator, the room
    ``(W, D, H)`` metres, the camera's free disc radius, the footprints placed so far and the
    builder."""

    seed: int
    rng: np.random.Generator
    room: Tuple[float, float, float]
    free_r: float
    b: "_Builder"
    used: set = field(default_factory=set)
    placed: List[np.ndarray] = field(default_factory=list)

    def add(self, spec: "_Spec", T: np.ndarray) -> None:
        spec.build(self.b.obj(spec.category, spec.label, T), self.rng)

    def floor(self, spec: "_Spec", margin: float = 0.1) -> bool:
        pose = _place_floor(self.rng, spec, self.room, self.free_r, self.placed, margin=margin, tries=200)
        if pose is not None:
            self.add(spec, make_pose(_rot_z(pose[2]), (pose[0], pose[1], 0.0)))
        return pose is not None


def _wall_furniture(r: _Room) -> Optional[Tuple["_Spec", np.ndarray]]:
    """Against the walls: big furniture first, then door and painting(s); the cabinet (spec, pose)
    when one was placed."""
    rng, small, area = r.rng, min(r.room[:2]), r.room[0] * r.room[1]
    wall_specs = []
    for name, f, p in (("sofa", _spec_sofa, 0.6 if small >= 3.5 else 0.25), ("bookshelf", _spec_bookshelf, 0.6),
                       ("cabinet", _spec_cabinet, 0.75)):
        if rng.random() < p:
            wall_specs.append(_scaled(f(rng, r.used), rng))
    wall_specs += [WALL_CATEGORIES["door"](rng, r.used)] if rng.random() < 0.8 else []
    wall_specs += [WALL_CATEGORIES["painting"](rng, r.used) for _ in range(1 + int(area > 40))]
    cabinet: Optional[Tuple[_Spec, np.ndarray]] = None
    for spec in wall_specs:
        pose = _place_wall(rng, spec, r.room, r.free_r, r.placed)
        if pose is None:
            continue
        T = make_pose(_rot_z(pose[2]), (pose[0], pose[1], 0.0))
        r.add(spec, T)
        if spec.category == "cabinet":
            cabinet = (spec, T)
    return cabinet


def _table_and_chairs(r: _Room) -> Tuple["_Spec", np.ndarray]:
    """The table with 2-4 identical chairs around it, the footprint reserved for both at once;
    returns the table's spec and pose."""
    rng = r.rng
    table = _scaled(_spec_table(rng, r.used), rng)
    chair = _frozen(_scaled(_spec_chair(rng, r.used), rng), rng)
    gap = 0.08
    reach = 2 * chair.half[1] + gap + 0.05
    reserve = replace(table, half=(table.half[0], table.half[1] + reach))
    pose = _place_floor(rng, reserve, r.room, r.free_r, r.placed, tries=400)
    if pose is None:  # fall back to the bare table (small rooms): chairs are placed where they fit
        pose = _place_floor(rng, table, r.room, r.free_r, r.placed, tries=400)
    if pose is None:
        raise RuntimeError(f"varied scene {r.seed}: could not place the table")
    T_table = make_pose(_rot_z(pose[2]), (pose[0], pose[1], 0.0))
    r.add(table, T_table)
    # Chairs may lie in the reserved footprint, not on the table or anything else.
    others = r.placed[:-1] + [_rect_corners(pose[0], pose[1], pose[2], table.half[0] + 0.02, table.half[1] + 0.02)]
    L2, W2 = table.half
    xs = (-L2 / 2, L2 / 2) if L2 >= chair.half[0] * 2 + 0.1 else (0.0,)
    slots = [(x, sy) for sy in (1, -1) for x in xs]
    order = rng.permutation(len(slots))
    n_chairs = int(rng.integers(2, 5))
    made = 0
    chair_rects: List[np.ndarray] = []
    for k in order:
        if made == n_chairs:
            break
        x, sy = slots[k]
        local = np.array([x, sy * (W2 + gap + chair.half[1])])
        c = T_table[:2, :2] @ local + T_table[:2, 3]
        yaw = pose[2] + (math.pi if sy > 0 else 0.0)  # the seat's front (+y) faces the table
        rect = _rect_corners(c[0], c[1], yaw, chair.half[0], chair.half[1])
        if not _footprint_ok(rect, c[0], c[1], yaw, chair.half[0], chair.half[1], r.room, r.free_r,
                             others + chair_rects):
            continue
        chair_rects.append(rect)
        r.add(chair, make_pose(_rot_z(yaw), (c[0], c[1], 0.0)))
        made += 1
    r.placed.extend(chair_rects)
    while made < 2 and r.floor(chair):  # no room at the table (small rooms): the pair stands elsewhere
        made += 1
    return table, T_table


def _table_things(r: _Room, table: "_Spec", T_table: np.ndarray) -> None:
    """On the table: one or two identical mugs, then some of bottle, monitor + keyboard, book, vase."""
    rng = r.rng
    mug = _frozen(_scaled(_spec_mug(rng, r.used), rng), rng)
    on_table = [mug] * (2 if rng.random() < 0.6 else 1)
    if rng.random() < 0.5:
        mon = _scaled(_spec_monitor(rng, r.used), rng)
        on_table.insert(0, mon)
        if rng.random() < 0.7:
            on_table.insert(1, _scaled(_spec_keyboard(rng, r.used), rng))
    for name, f, p in (("bottle", _spec_bottle, 0.5), ("book", _spec_book, 0.5), ("vase", _spec_vase, 0.4)):
        if rng.random() < p:
            on_table.append(_scaled(f(rng, r.used), rng))
    _place_on_surface(rng, on_table, T_table, table.half, table.top, r.add)


def _floor_things(r: _Room) -> None:
    """On the floor: furniture and clutter, more in bigger rooms; sometimes an identical pair; half
    the rooms a rug in the free disc, under the cameras."""
    rng = r.rng
    n_floor = int(np.clip(round(r.room[0] * r.room[1] / 6.0), 4, 9))
    pool = ["lamp", "potted plant", "ball", "trash bin", "cardboard box", "book"]
    makers = {**FLOOR_CATEGORIES, **NEW_CATEGORIES}
    names = [str(n) for n in rng.choice(pool, min(n_floor, len(pool)), replace=False)]
    names += [str(n) for n in rng.choice(["ball", "cardboard box", "book"], max(0, n_floor - len(pool)))]
    pair = str(rng.choice(["cardboard box", "potted plant"])) if rng.random() < 0.5 else None
    for name in names:
        spec = _scaled(makers[name](rng, r.used), rng)
        copies = 1
        if name == pair:
            spec, copies, pair = _frozen(spec, rng), 2, None
        for _ in range(copies):
            r.floor(spec)
    if rng.random() < 0.5:
        rug = _scaled(FLOOR_CATEGORIES["rug"](rng, r.used), rng)
        r.add(rug, make_pose(_rot_z(rng.uniform(0, math.pi)), (*rng.uniform(-0.3, 0.3, 2), 0.0)))


def make_varied_scene(seed: int, structure_labels: Optional[bool] = None) -> Scene:
    """The varied room of ``seed`` (module doc). ``structure_labels``: whether floor, walls and ceiling
    carry labels; None = the generator's share (unlabelled when ``seed % 3 == 2``)."""
    rng = np.random.default_rng([seed, 7])
    W = float(rng.uniform(3.0, 10.0))
    D = float(rng.uniform(max(3.0, W / 2.5), min(10.0, W * 2.5)))
    if rng.random() < 0.5:
        W, D = D, W
    room = (W, D, float(rng.uniform(2.4, 3.5)))
    labelled = (seed % 3 != 2) if structure_labels is None else bool(structure_labels)
    small = min(W, D)
    free_r = float(np.clip(0.2 * small, 0.6, 1.6))
    rig = CameraRig(walk_look=float(np.clip(0.4 * small, 1.2, 3.5)), orbit_look=float(np.clip(0.35 * small, 1.0, 3.0)),
                    closeup_fallback=True)
    r = _Room(seed, rng, room, free_r, _Builder())
    _structure(r.b, rng, room)
    cabinet = _wall_furniture(r)
    _table_things(r, *_table_and_chairs(r))
    if cabinet is not None:   # on the cabinet: one or two small things
        spec, T = cabinet
        pool = [_spec_vase, _spec_book, _spec_cardboard_box, _spec_bottle]
        picks = [pool[i] for i in rng.choice(len(pool), int(rng.integers(1, 3)), replace=False)]
        _place_on_surface(rng, [_scaled(f(rng, r.used), rng) for f in picks], T, (spec.half[0], spec.back), spec.top,
                          r.add)
    _floor_things(r)
    scene = Scene(seed, room, r.b.primitives, r.b.labels, r.b.objects, free_r, "varied", True, rig)
    if not labelled:
        _drop_structure_labels(scene)
    return scene
