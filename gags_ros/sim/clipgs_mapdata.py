"""Map-object dataset for CLIP-GS (issue 24): object Gaussians cut from the mapper's own maps of
generated scenes, plus augmentation that imitates what a live map does to an object.

Why: an encoder trained on sampled splats learns shortcuts the map breaks (splat size relative to
the object, opacities, isotropy); training on what it will see removes them.

Objects (:func:`map_scene_objects`): a simulated room (``sim.make_scene(seed)``) streamed into the
mapper (depth-seeded keyframes of the "small" preset, ``steps`` optimisation steps after), then one
cluster per non-structure object by the sim's ground-truth instance geometry
(:func:`.clipgs_objects.scene_map_objects`: the map's Gaussians inside the object's primitives grown
by 2 cm, the 3D counterpart of the instance masks). ``steps = 0`` gives the seeded map (isotropic,
unrotated, one opacity: no 3DGS information), ``steps > 0`` the optimised one; both are kept, with
``MapObject.kind`` saying which.

Augmentation (:func:`augment`, :class:`MapAugment`), all on world-frame :class:`ObjectGaussians`:
partial views (a slab cut off along a random horizontal direction), density (a random fraction of
the Gaussians kept), scale (every scale times one log-normal factor: the map's splat size depends
on depth and focal length, not on the category), neighbour leakage (a random patch of another
object's Gaussians moved next to this one), rotation (a random yaw about the up axis, positions and
orientations), colour (per-channel gain and offset).

Scene seeds: training :data:`TRAIN_SEEDS` (0-9), evaluation :data:`EVAL_SEEDS` (100-102), disjoint
(:func:`check_disjoint` refuses overlaps).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from ..core.clipgs.objects import ObjectGaussians
from .clipgs_objects import SampledObject, scene_map_objects

__all__ = ["TRAIN_SEEDS", "EVAL_SEEDS", "MapObjectSample", "MapAugment", "check_disjoint", "map_scene_objects",
           "augment", "build_map_dataset"]

TRAIN_SEEDS = tuple(range(10))
EVAL_SEEDS = (100, 101, 102)


@dataclass
class MapObjectSample:
    """One object cut from a map: the sampled object (Gaussians, category, caption, scene seed,
    instance id) and ``kind`` "seeded" or "optimised" (the map it was cut from)."""

    obj: SampledObject
    kind: str


@dataclass
class MapAugment:
    """Augmentation strengths (see the module docstring). Probabilities per object; ``keep`` the
    range of the fraction of Gaussians kept (density), ``scale_sigma`` the std dev of the log scale
    factor, ``cut_max`` the largest fraction of the horizontal extent cut off, ``leak_max`` the
    largest leaked fraction (of this object's count), ``gain`` / ``offset`` the colour shift ranges."""

    cut_prob: float = 0.5
    cut_max: float = 0.4
    keep: tuple = (0.4, 1.0)
    scale_sigma: float = 0.4
    leak_prob: float = 0.3
    leak_max: float = 0.15
    yaw: bool = True
    gain: float = 0.15
    offset: float = 0.05
    up: List[float] = field(default_factory=lambda: [0.0, 0.0, 1.0])


def check_disjoint(train: Sequence[int], evaluation: Sequence[int]) -> None:
    """ValueError when a scene seed is used for both training and evaluation."""
    both = sorted(set(train) & set(evaluation))
    if both:
        raise ValueError(f"scene seeds {both} are in both the training and the evaluation set")


def map_scene_objects(seed: int, steps: Sequence[int] = (0,), device: str = "cpu", renderer: str = "auto",
                      preset="small", log: Callable[[str], None] = print) -> List[MapObjectSample]:
    """Objects of the mapper's map of room ``seed``, cut after each number of optimisation steps in
    ``steps`` (ascending; 0 = freshly seeded): ``kind`` "seeded" for 0 steps, else "optimised".
    ``preset``: the camera stream (a name in ``sim.dataset.PRESETS`` or a ``Preset``)."""
    from ..core.config import GagsConfig
    from ..core.mapping.mapper import Mapper
    from ..core.render.factory import make_renderer
    from .dataset import _preset, scene_frames
    from .scene import make_scene

    t0 = time.perf_counter()
    scene = make_scene(int(seed))
    cfg = GagsConfig()
    cfg.device = device
    mapper = Mapper(cfg, make_renderer(renderer, device), device)
    for f in scene_frames(scene, _preset(preset, {})):
        if f.extra.get("split", "train") == "train":
            mapper.add_frame(f)
    out: List[MapObjectSample] = []
    done = 0
    for s in sorted(steps):
        if s > done:
            mapper.step(s - done)
            done = s
        objs = scene_map_objects(mapper.gaussians, scene)
        out += [MapObjectSample(o, "seeded" if s == 0 else "optimised") for o in objs]
        log(f"[mapdata] scene {seed}: {len(mapper.gaussians)} Gaussians after {s} steps, {len(objs)} objects "
            f"({time.perf_counter() - t0:.0f} s)")
    return out


def _yaw(theta: float, up: Sequence[float]) -> torch.Tensor:
    """``[3, 3]`` rotation by ``theta`` about the axis ``up`` (Rodrigues)."""
    a = np.asarray(up, dtype=np.float64)
    a = a / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    R = np.eye(3) + math.sin(theta) * K + (1 - math.cos(theta)) * K @ K
    return torch.as_tensor(R, dtype=torch.float32)


def augment(
    g: ObjectGaussians,                     # world frame, metres
    rng: np.random.Generator,
    cfg: MapAugment = MapAugment(),
    neighbour: Optional[ObjectGaussians] = None,
) -> ObjectGaussians:
    """One augmented copy of ``g`` (see :class:`MapAugment`); never fewer than 16 Gaussians of the
    object itself (or all of them when it has fewer). ``neighbour``: another object whose Gaussians
    may leak in."""
    n = len(g)
    means = g.means
    up = torch.as_tensor(cfg.up, dtype=means.dtype, device=means.device)
    up = up / up.norm()
    keep = torch.ones(n, dtype=torch.bool, device=means.device)
    centre = means.mean(dim=0)
    if rng.random() < cfg.cut_prob:                       # partial view: a slab cut off
        d = torch.as_tensor(rng.normal(size=3), dtype=means.dtype, device=means.device)
        d = d - (d @ up) * up
        d = d / d.norm().clamp_min(1e-9)
        proj = (means - centre) @ d
        thr = proj.max() - float(rng.uniform(0, cfg.cut_max)) * (proj.max() - proj.min())
        keep &= proj <= thr
    frac = float(rng.uniform(*cfg.keep))                  # density
    keep &= torch.as_tensor(rng.random(n) < frac, device=means.device)
    floor = min(n, 16)
    if int(keep.sum()) < floor:
        keep[torch.as_tensor(rng.permutation(n)[:floor], device=means.device)] = True
    idx = torch.nonzero(keep).squeeze(1)
    parts = [g.select(idx)]
    if neighbour is not None and len(neighbour) and rng.random() < cfg.leak_prob:   # neighbour leakage
        m = max(1, int(round(rng.uniform(0, cfg.leak_max) * len(idx))))
        nb = neighbour.means
        seed_pt = nb[int(rng.integers(len(neighbour)))]
        near = (nb - seed_pt).norm(dim=1).argsort()[: min(m, len(neighbour))]
        # Put the patch next to the object: its nearest point moved to a random surface point of ours.
        anchor = means[idx[int(rng.integers(len(idx)))]]
        shift = anchor - nb[near].mean(dim=0)
        parts.append(neighbour.select(near).transformed(torch.eye(3), shift))
    out = ObjectGaussians.cat(parts)
    scale = math.exp(float(rng.normal(0, cfg.scale_sigma)))          # splat size
    rgb = out.rgb * torch.as_tensor(1 + rng.uniform(-cfg.gain, cfg.gain, 3), dtype=out.rgb.dtype) \
        + torch.as_tensor(rng.uniform(-cfg.offset, cfg.offset, 3), dtype=out.rgb.dtype)
    out = ObjectGaussians(out.means, out.quats, out.scales * scale, out.opacities, rgb.clamp(0, 1))
    if cfg.yaw:                                                       # rotation about up, about the centroid
        R = _yaw(float(rng.uniform(0, 2 * math.pi)), cfg.up).to(out.means)
        c = out.means.mean(dim=0)
        out = out.transformed(R, c - R @ c)
    return out


def build_map_dataset(
    samples: Sequence[MapObjectSample],
    copies: int,
    rng: np.random.Generator,
    cfg: MapAugment = MapAugment(),
) -> List[MapObjectSample]:
    """The samples themselves plus ``copies`` augmented copies of each; leaking neighbours are other
    objects of the same scene and map kind (as in a map)."""
    by_scene = {}
    for i, s in enumerate(samples):
        by_scene.setdefault((s.obj.scene_seed, s.kind), []).append(i)
    out = list(samples)
    for i, s in enumerate(samples):
        others = [j for j in by_scene[(s.obj.scene_seed, s.kind)] if j != i]
        for _ in range(copies):
            nb = samples[others[int(rng.integers(len(others)))]].obj.gaussians if others else None
            g = augment(s.obj.gaussians, rng, cfg, nb)
            o = s.obj
            out.append(MapObjectSample(SampledObject(g, o.category, o.label, o.part_labels, o.scene_seed, o.whole_id),
                                       s.kind))
    return out
