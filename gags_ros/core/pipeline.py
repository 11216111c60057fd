"""The whole online system behind one object: frames in, map + language field out, queries answered.

Data flows one way: frame -> mapper (keyframe policy, geometry) -> teacher (masks, embeddings) ->
distiller (language latents) -> query engine. :class:`GagsPipeline` is what the single worker thread
(:mod:`gags_ros.core.worker`) drives; it is also used directly by the evaluation and benchmarks.
Components are built on first use so a node starts instantly and a query before any frame is
answered with "no map yet" rather than waiting for models to load.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from .config import GagsConfig
from .types import Frame

log = logging.getLogger("gags_ros.pipeline")


class NoMapError(RuntimeError):
    """A query or save before any Gaussian exists."""


@dataclass
class Target:
    """One 3D answer to a text query (metres, world frame)."""

    label: str
    score: float
    centroid: np.ndarray  # [3]
    box_min: np.ndarray  # [3]
    box_max: np.ndarray  # [3]
    count: int
    indices: Optional[np.ndarray] = None  # [count] Gaussian indices


@dataclass
class PipelineStats:
    state: str = "waiting"
    message: str = ""
    keyframes: int = 0
    gaussians: int = 0
    mapping_steps: int = 0
    language_steps: int = 0
    teacher_keyframes: int = 0
    loss_rgb: float = float("nan")
    loss_language: float = float("nan")
    frames_processed: int = 0
    timings: dict = field(default_factory=dict)


class GagsPipeline:
    """Mapper + teacher + distiller + query engine, owned by one thread.

    ``sim_labels``: labels.json content for the simulation teacher (``teacher.segmenter == "sim"``).
    """

    def __init__(self, cfg: GagsConfig, sim_labels: Optional[dict] = None):
        self.cfg = cfg
        self.sim_labels = sim_labels
        self.device = cfg.resolved_device()
        self.mapper = None
        self.teacher = None
        self.distiller = None
        self.query_engine = None
        self._stats = PipelineStats()
        self._pending_teacher: List[tuple] = []  # (keyframe index, frame) awaiting teacher output

    # ---- construction -------------------------------------------------------------------------
    def _ensure_mapper(self):
        if self.mapper is None:
            from .mapping import Mapper
            from .render.factory import make_renderer

            self.renderer = make_renderer(self.cfg.mapping.renderer, self.device)
            self.mapper = Mapper(self.cfg, self.renderer, self.device)
        return self.mapper

    def _ensure_language(self):
        if not self.cfg.language.enabled:
            return None
        if self.teacher is None:
            from .language.distill import Distiller
            from .query import QueryEngine
            from .teachers.pipeline import build_teacher

            self.teacher = build_teacher(self.cfg, self.device, sim_labels=self.sim_labels)
            dim = self.teacher.embedder.dim
            self.distiller = Distiller(self.cfg, self._ensure_mapper(), dim, self.device)
            self.query_engine = QueryEngine(self.cfg.query, self.teacher.embedder.embed_text)
        return self.teacher

    # ---- the worker's interface ---------------------------------------------------------------
    def add_frame(self, frame: Frame) -> Optional[int]:
        mapper = self._ensure_mapper()
        self._stats.frames_processed += 1
        kf = mapper.add_frame(frame)
        if kf is None:
            return None
        self._stats.state = "mapping"
        t0 = time.perf_counter()
        losses = mapper.step(self.cfg.mapping.steps_per_keyframe)
        self._note_mapping(losses, time.perf_counter() - t0)
        if self.cfg.language.enabled:
            self._teach(kf, frame)
        return kf

    def _teach(self, kf: int, frame: Frame) -> None:
        teacher = self._ensure_language()
        t0 = time.perf_counter()
        out = teacher.process(frame, **self._teacher_inputs(kf))
        out.keyframe = kf
        self.distiller.add_teacher_output(kf, out)
        self._stats.teacher_keyframes += 1
        self._stats.timings["teacher_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        losses = self.distiller.step(self.cfg.language.steps_per_keyframe)
        self._note_language(losses, time.perf_counter() - t0)

    def _teacher_inputs(self, kf: int) -> dict:
        """Rendered depth, minimum-depth record and Gaussian density of keyframe ``kf``."""
        record = getattr(self, "_min_depth", None)
        if record is None:
            return {}
        return record.inputs_for(self.mapper, kf)

    def idle_step(self) -> bool:
        if self.mapper is None or len(self.mapper.keyframes) == 0:
            return False
        losses = self.mapper.step(10)
        self._note_mapping(losses, 0.0)
        if self.distiller is not None and self._stats.teacher_keyframes > 0:
            self._note_language(self.distiller.step(5), 0.0)
        self._stats.state = "idle"
        return True

    def _note_mapping(self, losses: dict, seconds: float) -> None:
        s = self._stats
        s.mapping_steps = int(losses.get("steps_total", s.mapping_steps))
        if "loss" in losses:
            s.loss_rgb = float(losses["loss"])
        s.timings["mapping_s"] = seconds

    def _note_language(self, losses: dict, seconds: float) -> None:
        s = self._stats
        s.language_steps = int(losses.get("steps_total", s.language_steps))
        if "loss" in losses:
            s.loss_language = float(losses["loss"])
        s.timings["distill_s"] = seconds

    def stats(self) -> dict:
        s = self._stats
        if self.mapper is not None:
            s.keyframes = len(self.mapper.keyframes)
            s.gaussians = len(self.mapper.gaussians)
        return dict(vars(s))

    # ---- queries and map management -----------------------------------------------------------
    def query(self, texts: Sequence[str], max_targets: Optional[int] = None,
              min_score: Optional[float] = None) -> List[List[Target]]:
        """Targets per text, best first. Raises NoMapError before a language map exists."""
        if self.mapper is None or len(self.mapper.gaussians) == 0:
            raise NoMapError("no map yet: no keyframe has been mapped")
        if self.distiller is None or self._stats.teacher_keyframes == 0:
            raise NoMapError("no language features yet: no keyframe has been distilled")
        results = self.query_engine.query(self.mapper.gaussians, self.distiller.field, list(texts),
                                          max_targets=max_targets, min_score=min_score)
        return [[Target(t.label, float(t.score), np.asarray(t.centroid), np.asarray(t.box_min),
                        np.asarray(t.box_max), int(t.count), getattr(t, "indices", None))
                 for t in r.targets] for r in results]
