"""The whole online system behind one object: frames in, map + language field out, queries answered.

Data flows one way: frame -> mapper (keyframe policy, geometry) -> teacher (masks, embeddings) ->
distiller (language latents) -> query engine. :class:`GagsPipeline` is what the single worker thread
(:mod:`gags_ros.core.worker`) drives; it is also used directly by the evaluation and benchmarks.
Components are built on first use so a node starts instantly and a query before any frame is
answered with "no map yet" rather than waiting for models to load.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Sequence

import numpy as np

from .config import ConfigError, GagsConfig
from .frame_sync import prepare_frame
from .io.export import write_semantic_ply
from .io.mapfile import load_map, save_map
from .language import coverage
from .paths import default_map_name, map_dir
from .query import QueryResult, check_query_text
from .types import Frame

log = logging.getLogger("gags_ros.pipeline")


class NoMapError(RuntimeError):
    """A query or save before any Gaussian exists."""


# How a missing-weights report starts (status, diagnostics, logs, refused queries)
LANGUAGE_DISABLED = "teacher weights missing, language disabled (mapping geometry only): "


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
    frames_skipped: int = 0
    timings: dict = field(default_factory=dict)


class GagsPipeline:
    """Mapper + teacher + distiller + query engine, owned by one thread.

    ``teacher_options``: keyword arguments for the builder of the configured teacher
    (:func:`~gags_ros.core.teachers.factory.build_teacher`), e.g. ``{"labels": ...}`` (labels.json
    content) for the simulation's ``sim`` teacher.
    Each new keyframe is seeded and taught at once (:meth:`add_frame`) and is owed
    ``mapping.steps_per_keyframe`` geometry steps and ``language.steps_per_keyframe`` distillation
    steps, which :meth:`idle_step` pays in chunks of ``CHUNK`` steps before the worker takes the
    next frame; after that it keeps optimising both as background work, up to
    ``mapping.final_refine_steps`` steps after the last keyframe, then rests. Queries and other
    requests are served between chunks.
    """

    CHUNK = 5  # steps per call: short, so a query waits at most a few steps

    def __init__(self, cfg: GagsConfig, teacher_options: Optional[Mapping[str, Any]] = None,
                 language_error: str = ""):
        self.cfg = cfg
        self.teacher_options = dict(teacher_options or {})
        self.device = cfg.resolved_device()
        if cfg.cpu_threads > 0:
            import torch

            torch.set_num_threads(cfg.cpu_threads)
        self.renderer = None        # built with each mapper (_ensure_mapper)
        self.teacher = None         # models load once and survive resets
        self.query_engine = None
        # CLIP-GS: the loaded encoder (once), the map objects' index and the map state it was built at
        self._clipgs_encoder = None
        self._clipgs_index = None
        self._clipgs_key: Optional[tuple] = None
        # Why the language half cannot run (missing teacher weights), or "": geometry goes on without
        # it, and the reason is reported once instead of a traceback per keyframe. A caller that
        # checked the weights itself (the node, at start) passes and reports its own reason.
        self.language_error = language_error
        self._reset_state()

    def _reset_state(self) -> None:
        self.mapper = None
        self.distiller = None
        self._has_language = False
        self._idle_steps = 0
        self._owed_mapping = 0
        self._owed_language = 0
        self._last_examined: Optional[float] = None  # stamp of the last frame given to the mapper
        self._last_query: Optional[tuple] = None  # (text, embedding) of the last answered query
        self._arrived: Optional[float] = None  # monotonic s when the last taught keyframe reached the node
        self._stats = PipelineStats()

    # ---- construction -------------------------------------------------------------------------
    def _ensure_mapper(self):
        if self.mapper is None:
            from .mapping import Mapper
            from .render.factory import make_renderer

            self.renderer = make_renderer(self.cfg.mapping.renderer, self.device)
            self.mapper = Mapper(self.cfg, self.renderer, self.device)
        return self.mapper

    def _ensure_language(self):
        """Teacher (models load once and survive resets), distiller and query engine."""
        if self.teacher is None:
            from .query import QueryEngine
            from .teachers.factory import build_teacher

            t0 = time.perf_counter()
            self.teacher = build_teacher(self.cfg, self.device, **self.teacher_options)
            self.query_engine = QueryEngine(self.cfg.query, self.teacher.embedder.embed_text)
            self.query_engine.coverage_mode = self.cfg.language.mode
            log.info("teacher ready in %.1f s", time.perf_counter() - t0)
        if self.distiller is None:
            from .language.distill import Distiller

            self.distiller = Distiller(self.cfg, self._ensure_mapper(), self.teacher.embedder.dim, self.device)
            self.teacher.attach_map(self.mapper)  # the teacher's D_min record lives in this map
        return self.teacher

    # ---- the worker's interface ---------------------------------------------------------------
    def add_frame(self, frame: Frame) -> Optional[int]:
        rate = self.cfg.mapping.max_frame_rate
        last = self._last_examined
        if rate > 0 and last is not None and 0.0 <= frame.stamp - last < 1.0 / rate - 1e-3:
            self._stats.frames_skipped += 1  # a camera faster than keyframes need: skip cheaply
            return None
        self._last_examined = frame.stamp
        frame = prepare_frame(frame)  # undistortion / depth registration deferred by the frame assembly
        mapper = self._ensure_mapper()
        self._stats.frames_processed += 1
        kf = mapper.add_frame(frame)
        if kf is None:
            return None
        self._stats.state = "mapping"
        self._idle_steps = 0
        self._owed_mapping += self.cfg.mapping.steps_per_keyframe
        if self.cfg.language.enabled:
            self._teach(kf, frame)
        return kf

    def owes_work(self) -> bool:
        return self._owed_mapping > 0 or self._owed_language > 0

    def _teach(self, kf: int, frame: Frame) -> None:
        if self.language_error:
            return
        try:
            self._ensure_language()
        except ConfigError as e:    # weights missing (teachers.factory.check_teacher_weights)
            self.language_error = f"{LANGUAGE_DISABLED}{e}"
            log.error("%s", self.language_error)
            return
        t0 = time.perf_counter()
        out = self.teacher.teach(frame, kf)
        self.distiller.add_teacher_output(kf, out)
        self._has_language = True
        self._stats.teacher_keyframes += 1
        self._stats.timings["teacher_s"] = time.perf_counter() - t0
        self._owed_language += self.cfg.language.steps_per_keyframe
        self._arrived = frame.extra.get("arrived")  # monotonic seconds when the image reached the node

    def idle_step(self) -> bool:
        if self.mapper is None or len(self.mapper.keyframes) == 0:
            return False
        if self.owes_work():
            t0 = time.perf_counter()
            if self._owed_mapping > 0:
                n = min(self.CHUNK, self._owed_mapping)
                self._note("mapping", self.mapper.step(n), time.perf_counter() - t0)
                self._owed_mapping -= n
            elif self._owed_language > 0:
                n = min(self.CHUNK, self._owed_language)
                self._note("language", self.distiller.step(n), time.perf_counter() - t0)
                self._owed_language -= n
                if self._owed_language == 0 and self._arrived is not None:
                    # The last keyframe's contribution is distilled: it answers queries from now on.
                    self._stats.timings["keyframe_to_queryable_s"] = time.monotonic() - self._arrived
            return True
        if self._idle_steps >= self.cfg.mapping.final_refine_steps:
            self._stats.state = "idle"
            return False
        self._stats.state = "refining"
        self._note("mapping", self.mapper.step(self.CHUNK), 0.0)
        if self.distiller is not None and self.distiller.teacher_keyframes:
            self._note("language", self.distiller.step(self.CHUNK), 0.0)
        self._idle_steps += self.CHUNK
        return True

    def run_owed(self) -> None:
        """Pay all owed work now (offline use: evaluation, benchmarks)."""
        while self.owes_work() and self.idle_step():
            pass

    # optimiser -> (steps counter, loss, timing key) in the stats
    _NOTES = {"mapping": ("mapping_steps", "loss_rgb", "mapping_s"),
              "language": ("language_steps", "loss_language", "distill_s")}

    def _note(self, which: str, losses: dict, seconds: float) -> None:
        """Record a chunk of ``which`` ("mapping" / "language") steps: total steps, last loss and
        (when nonzero) the chunk's seconds."""
        steps, loss, timing = self._NOTES[which]
        s = self._stats
        setattr(s, steps, int(losses.get("steps_total", getattr(s, steps))))
        if "loss" in losses:
            setattr(s, loss, float(losses["loss"]))
        if seconds:
            s.timings[timing] = seconds

    def stats(self) -> dict:
        s = self._stats
        if self.mapper is not None:
            s.keyframes = len(self.mapper.keyframes)
            s.gaussians = len(self.mapper.gaussians)
        else:
            s.keyframes = s.gaussians = 0
        return dict(vars(s), language_error=self.language_error)

    # ---- queries ------------------------------------------------------------------------------
    def _check_queryable(self) -> None:
        if self.mapper is None or len(self.mapper.gaussians) == 0:
            raise NoMapError("no map yet: no keyframe has been mapped")
        if not self._has_language:
            raise NoMapError("no language features yet: no keyframe has been distilled" + self._no_language_reason())

    def _no_language_reason(self) -> str:
        return f" ({self.language_error})" if self.language_error else ""

    def query(self, texts: Sequence[str], max_targets: Optional[int] = None,
              min_score: Optional[float] = None) -> List[QueryResult]:
        """One :class:`~gags_ros.core.query.QueryResult` per text, the engine's own (no target, with
        the reason, when nothing passes the thresholds).

        Raises NoMapError before a language map exists, ValueError for an empty or over-long text.
        """
        for t in texts:
            why = check_query_text(t, self.cfg.query.max_text_length)
            if why:
                raise ValueError(why)
        self._check_queryable()
        results = self.query_engine.query(self.mapper.gaussians, self.distiller.field, list(texts),
                                          max_targets=max_targets, min_score=min_score)
        if results:
            self._last_query = (texts[-1], self.query_engine.encode([texts[-1]], self.mapper.gaussians.means.device))
        return results

    def relevancy_image(self, T_world_cam: np.ndarray, intrinsics, texts: Sequence[str],
                        unknown: Optional[float] = float("nan")):
        """``[T, H, W]`` relevancy of a rendered view (see QueryEngine.relevancy_image); pixels the
        map has no language supervision for carry ``unknown`` (NaN by default; None: decode them
        too)."""
        self._check_queryable()
        return self.query_engine.relevancy_image(self.renderer, self.mapper.gaussians, self.distiller.field,
                                                 T_world_cam, intrinsics, texts, unknown=unknown)

    def cloud(self, max_points: int):
        """``(xyz [n, 3], rgb [n, 3], relevancy [n] or None, coverage [n] or None)`` numpy, at most
        ``max_points`` of the most opaque Gaussians. ``relevancy``: raw relevancy in [0, 1] to the
        last query when there was one, -1 for unknown Gaussians (query.min_coverage); ``coverage``:
        each Gaussian's supervised share of seen blend weight in [0, 1] when the map records it."""
        import torch

        if self.mapper is None or len(self.mapper.gaussians) == 0:
            return None
        with self.mapper.lock, torch.no_grad():
            g = self.mapper.gaussians
            idx = torch.argsort(g.opacities, descending=True)[:max_points]
            xyz = g.means[idx].float().cpu().numpy()
            rgb = g.colors[idx].clamp(0, 1).float().cpu().numpy()
            frac = coverage.supervised_fraction(g, self.cfg.language.mode)
            cov = None if frac is None else frac[idx].float().cpu().numpy()
            rel = None
            if self._last_query is not None and self._has_language:
                rel = self.query_engine.gaussian_relevancy(g, self.distiller.field, self._last_query[1],
                                                           idx)[:, 0].float().cpu().numpy()
                known = self.query_engine.known(g)
                if known is not None:
                    rel[~known[idx].cpu().numpy()] = -1.0
        return xyz, rgb, rel, cov

    # ---- CLIP-GS objects ----------------------------------------------------------------------
    def _object_index(self, source: str = "clusters", query_text: str = ""):
        """A CLIP-GS :class:`~gags_ros.core.clipgs.classify.ObjectIndex` of the map's objects:
        language-field proposals (cached until the map changes) or the targets of a query."""
        from .clipgs.classify import ObjectIndex
        from .clipgs.encoder import load_encoder

        self._check_queryable()
        c = self.cfg.clipgs
        if not c.encoder_path:
            raise NoMapError("no CLIP-GS encoder loaded: set clipgs.encoder_path (train one with "
                             "python -m gags_ros.sim.clipgs_train)")
        if self._clipgs_encoder is None:
            self._clipgs_encoder, _ = load_encoder(os.path.expanduser(c.encoder_path), self.device)
        text = self.teacher.embedder.embed_text
        g = self.mapper.gaussians
        if source == "query":
            (answer,) = self.query([query_text])
            with self.mapper.lock:
                return ObjectIndex.from_targets(self._clipgs_encoder, g, answer.targets, text)
        if source != "clusters":
            raise ValueError(f"source={source!r}: expected 'clusters' or 'query'")
        key = (self._stats.mapping_steps, self._stats.language_steps, len(g))
        if self._clipgs_key != key:
            with self.mapper.lock:
                self._clipgs_index = ObjectIndex.from_language_field(
                    self._clipgs_encoder, g, self.distiller.field, text, similarity=c.cluster_similarity,
                    radius=c.cluster_radius, min_gaussians=c.min_cluster_gaussians,
                    proposals=c.proposals)
            self._clipgs_key = key
        self._clipgs_index.proposals = c.proposals   # a parameter change applies without re-encoding
        return self._clipgs_index

    def classify_objects(self, vocabulary: Sequence[str] = (), source: str = "clusters", query_text: str = "",
                         top_k: int = 0):
        """``(objects, labelled, encode_ms)``: the map's objects, their top-k labels (dicts of
        ``ObjectIndex.labelled``) and the encoder's time per object."""
        index = self._object_index(source, query_text)
        vocab = list(vocabulary) or list(self.cfg.clipgs.vocabulary)
        if not index.objects:
            return [], [], 0.0
        return index.objects, index.labelled(vocab, top_k or self.cfg.clipgs.top_k), index.encode_ms

    def retrieve_objects(self, text: str, max_results: int = 5, min_score: Optional[float] = None):
        """``[(MapObject, similarity)]`` best first, at least ``min_score``."""
        index = self._object_index("clusters")
        if not index.objects:
            return []
        hits = index.retrieve(text, max(1, max_results))
        return [(o, sc) for o, sc in hits if min_score is None or sc >= min_score]

    # ---- map management -----------------------------------------------------------------------
    def save(self, path: Optional[str] = None) -> str:
        """Write geometry, latents, decoders and configuration to one file (atomically)."""
        if self.mapper is None or len(self.mapper.gaussians) == 0:
            raise NoMapError("nothing to save: the map is empty")
        if path is None:
            path = str(map_dir(self.cfg.save_dir) / default_map_name())
        with self.mapper.lock:
            field = self.distiller.field if self._has_language else None
            extra = {"keyframe_poses": [kf.T_world_cam for kf in self.mapper.keyframes],
                     "stats": {k: v for k, v in self.stats().items() if isinstance(v, (int, float, str))}}
            return str(save_map(path, self.mapper.gaussians, field, self.cfg, extra))

    def export(self, path: str, vocabulary: Sequence[str] = ()) -> dict:
        """Write the map as a semantic PLY (:mod:`.io.export`: geometry, latents, coverage and, given a
        ``vocabulary``, a label and score per Gaussian), atomically. NoMapError for an empty map, or
        for a vocabulary before language features exist; ValueError for a bad vocabulary."""
        if self.mapper is None or len(self.mapper.gaussians) == 0:
            raise NoMapError("nothing to export: the map is empty")
        if vocabulary and not self._has_language:
            raise NoMapError("no labels yet: no keyframe has been distilled" + self._no_language_reason())
        with self.mapper.lock:
            field = self.distiller.field if self._has_language else None
            engine = self.query_engine if field is not None else None
            return write_semantic_ply(path, self.mapper.gaussians, field, engine, vocabulary, self.cfg.language.mode,
                                      self.cfg.ros.world_frame, self.cfg.ros.map_file_mode)

    def load(self, path: str) -> int:
        """Replace the map with a saved one; mapping continues on top of it. Returns its Gaussians."""
        gaussians, field, _saved_cfg, _extra = load_map(path, self.device)
        self._reset_state()
        mapper = self._ensure_mapper()
        state = gaussians.state_dict()
        geometry = {k: v for k, v in state.items() if k != "features"}
        if coverage.has_coverage(gaussians):     # else (older files): coverage unknown, the gate is off
            coverage.ensure_records(mapper)
            geometry.update({k: gaussians.record(k) for k in coverage.RECORDS})
            if coverage.has_view(gaussians):     # else (older files): no inward direction, no inset
                geometry.update({k: gaussians.record(k) for k in coverage.VIEW})
        mapper.add_gaussians(geometry)
        if field is not None and "features" in state:
            self._ensure_language()
            with mapper.lock:
                mapper.gaussians.set_features(state["features"])
            self.distiller.load_field(field)
            self._has_language = True
        return len(mapper.gaussians)

    def reset(self) -> None:
        """Forget the map (models stay loaded)."""
        self._reset_state()

    def finish(self, steps: Optional[int] = None) -> dict:
        """Final refinement of geometry (and language) when a stream ends."""
        if self.mapper is None:
            return {}
        self._stats.state = "refining"
        out = self.mapper.refine(steps)
        self._note("mapping", out, 0.0)
        if self.distiller is not None and self.distiller.teacher_keyframes:
            self._note("language", self.distiller.step(steps or self.cfg.mapping.final_refine_steps), 0.0)
        self._stats.state = "idle"
        return out
