"""Per-keyframe teacher: prompts -> three levels of masks -> one embedding per mask -> compact output.

:class:`KeyframeTeacher` turns a keyframe into a :class:`~gags_ros.core.teachers.base.TeacherOutput`
(three level maps of mask ids plus ``[M, dim]`` float16 embeddings) and records seconds per stage;
:class:`TeacherCache` keeps the outputs the distillation reads. :mod:`.factory` builds the configured
segmenter and embedder.

Level maps: where masks of one level overlap, a pixel takes the id of the smallest covering mask.
After the per-level NMS the remaining overlaps are partial or loose nestings; painting the smaller
mask on top keeps every surviving mask visible in its level map (the larger one still owns the rest
of its area), whereas "highest score wins" can erase a small object entirely under a confident large
mask. GAGS paints its level maps the same way (largest first).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional

import torch

from ..timing import StageTimer
from ..types import Frame
from .base import LEVELS, Embedder, LevelMasks, Segmenter, TeacherOutput
from .prompts import MapMinDepthRecord, PromptSampler


def paint_level(masks: torch.Tensor, first_id: int = 0, chunk: int = 64) -> torch.Tensor:
    """``[H, W]`` int32 map: id ``first_id + i`` of the smallest mask ``i`` covering each pixel, -1 where
    none does. ``masks``: ``[M, H, W]`` bool. Ties in area go to the lower index (the segmenters list
    a level's masks best score first)."""
    m, h, w = masks.shape
    best = torch.full((h, w), -1, dtype=torch.int32, device=masks.device)
    if m == 0:
        return best
    # rank 0 = largest (among equal areas, the highest index); a covering mask of higher rank wins.
    index = torch.arange(m, device=masks.device)
    order = torch.argsort(masks.sum((1, 2)) * m + index, descending=True)
    rank = torch.arange(m, dtype=torch.int32, device=masks.device)
    for c in range(0, m, chunk):
        sel = masks[order[c:c + chunk]]
        best = torch.maximum(best, torch.where(sel, rank[c:c + chunk, None, None], -1).amax(0))
    ids = order.to(torch.int32) + first_id
    return torch.where(best >= 0, ids[best.clamp_min(0).long()], -1)


class KeyframeTeacher:
    """Prompts (Eq. 1) -> :class:`Segmenter` -> :class:`Embedder` -> :class:`TeacherOutput`.

    ``cfg``: the root :class:`~gags_ros.core.config.GagsConfig` (``teacher`` section and ``seed``).
    After each :meth:`process`, ``timings`` holds seconds per stage (``prompts``, then whatever the
    segmenter and embedder report: for SAM + CLIP ``image_encoder``, ``decoder``, ``filtering_nms``,
    ``crops``, ``clip``; then ``level_maps`` and ``total``) and ``stats`` the prompt and mask counts.

    Attached to a map (:meth:`attach_map`), the teacher owns that map's minimum-depth record
    (``min_depth``, GaS) and :meth:`teach` renders the depth its prompts need.
    """

    def __init__(self, cfg, segmenter: Segmenter, embedder: Embedder, device: str | torch.device):
        self.cfg = cfg
        self.segmenter = segmenter
        self.embedder = embedder
        self.device = torch.device(device)
        self.sampler = PromptSampler(cfg.teacher, cfg.seed)
        self.timings: Dict[str, float] = {}
        self.stats: Dict[str, int] = {}
        self.mapper = None                                  # the map taught by teach() (attach_map)
        self.min_depth: Optional[MapMinDepthRecord] = None  # that map's D_min record

    def attach_map(self, mapper) -> None:
        """Teach the keyframes of ``mapper`` (a :class:`~gags_ros.core.mapping.Mapper`: ``render``,
        ``lock``, ``gaussians``, ``add_record``, ``device``) from now on, with a new minimum-depth
        record that lives in that map (a per-Gaussian record, +inf until seen)."""
        self.mapper = mapper
        self.min_depth = MapMinDepthRecord(mapper)

    def view_inputs(self, frame: Frame) -> dict:
        """Rendered depth D ``[H, W]`` (metres), the minimum-depth record D_min splatted into the
        view and the Gaussian density of ``frame``'s view of the attached map (GAGS Eq. 1), at the
        frame's own resolution; the record first takes in this view."""
        out = self.mapper.render(frame.T_world_cam, frame.intrinsics, "rgb")
        depth = out.depth[0, ..., 0]
        with self.mapper.lock:  # the record is the map's: read both between optimisation steps
            g = self.mapper.gaussians
            stats = self.min_depth.observe(g.means.detach(), frame.T_world_cam, frame.intrinsics.K, depth)
        return {"depth": depth, "min_depth": stats.min_depth, "density": stats.density}

    def teach(self, frame: Frame, keyframe: int) -> TeacherOutput:
        """Teacher output of keyframe ``keyframe`` of the attached map (:meth:`process` with
        :meth:`view_inputs`)."""
        if self.mapper is None:
            raise RuntimeError("KeyframeTeacher.teach needs a map: call attach_map(mapper) first")
        return self.process(frame, keyframe=keyframe, **self.view_inputs(frame))

    def process(self, frame: Frame, depth=None, min_depth=None, density=None,
                keyframe: int = -1) -> TeacherOutput:
        """Teacher output of one keyframe. Its level maps have the size of the segmenter's masks
        (SAM: the keyframe, downscaled to at most ``max_image_height``).

        depth:     ``[H, W]`` rendered depth of this view (metres); None -> ``frame.depth``, else the
                   constant-depth stand-in (see :mod:`.prompts`).
        min_depth: ``[H, W]`` D_min splatted from :class:`~.prompts.MinDepthRecord`; None -> D.
        density:   ``[H, W]`` projected Gaussians per pixel; None -> uniform inside patches.
        keyframe:  mapper's keyframe index (seeds the prompt sampling, tags the output).
        """
        timer = StageTimer(self.device)
        h, w = frame.image.shape[:2]
        with timer("total"):
            with timer("prompts"):
                prompts = self.sampler.sample(h, w, frame.depth if depth is None else depth,
                                              min_depth, density, key=max(keyframe, 0))
            levels: List[LevelMasks] = self.segmenter.segment(frame, prompts.points)
            masks = torch.cat([lv.masks.to(self.device) for lv in levels])
            embeddings = self.embedder.embed_masks(frame, masks)
            with timer("level_maps"):
                maps, first = [], 0
                for lv in levels:
                    maps.append(paint_level(lv.masks.to(self.device), first))
                    first += lv.masks.shape[0]
                out = TeacherOutput(torch.stack(maps), embeddings.to(torch.float16), keyframe)
        t = timer.seconds
        self.timings = {"prompts": t["prompts"], **getattr(self.segmenter, "timings", {}),
                        **getattr(self.embedder, "timings", {}), "level_maps": t["level_maps"],
                        "total": t["total"]}
        self.stats = {"prompts": len(prompts),
                      **{f"masks_{n}": int(lv.masks.shape[0]) for n, lv in zip(LEVELS, levels)}}
        return out


class TeacherCache:
    """Teacher outputs by keyframe index, at most ``capacity``; the least recently used goes first."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._items: "OrderedDict[int, TeacherOutput]" = OrderedDict()

    def put(self, keyframe: int, output: TeacherOutput) -> None:
        self._items[keyframe] = output
        self._items.move_to_end(keyframe)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, keyframe: int) -> Optional[TeacherOutput]:
        out = self._items.get(keyframe)
        if out is not None:
            self._items.move_to_end(keyframe)
        return out

    def __contains__(self, keyframe: int) -> bool:
        return keyframe in self._items

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> List[int]:
        """Cached keyframe indices, least recently used first."""
        return list(self._items)
