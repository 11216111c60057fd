"""The evaluation command: open-vocabulary localisation and segmentation against ground truth.

    python -m gags_ros.eval.evaluate DATASET_OR_BENCHMARK [--seeds 0 1 2]
        [--modes avg subpart part whole gad] [--device auto|cpu|cuda] [--quick] [--out OUT]

Works on any dataset in the project's format (docs/dataset_format.md) with masks, ``labels.json``
and ``queries.json``: one scene folder (``transforms.json``) or a benchmark folder
(``benchmark.json`` listing scene folders). The protocol (docs/evaluation.md):

0. Text embeddings of every label, query text and canonical phrase of the dataset are written to
   ``text_embeddings.npz`` in the dataset folder first (:mod:`.text_model`; needs the MiniLM model
   only for texts the file lacks) and every later embedding is read from it, so a machine without
   the model gives the same numbers.
1. Online GaD, per scene and seed: :class:`~gags_ros.core.pipeline.GagsPipeline` with the
   simulation teacher (``teacher.segmenter = "sim"``, ``language.mode = "gad"``, ``seed`` = the
   seed: it seeds the map, the prompts and the teacher's noise) takes the train-split frames in
   stream order, then ``finish()``. This is variant ``gad_online``.
2. Ablations on identical geometry and identical teacher outputs: for each mode of ``--modes``
   a fresh language field and fresh latents (same initialisation for every mode) are distilled
   offline (:meth:`Distiller.offline`, the same ``--steps`` for every mode) on the frozen map of
   step 1 from the teacher outputs the online run stored. Variants ``avg``, ``subpart``, ``part``,
   ``whole``, ``gad``.
3. Scores on the eval-split views, for each query of ``queries.json`` and each view where its
   target is visible: the relevancy image of the rendered view, scored as LangSplat's LERF-OVS
   evaluation code does (:mod:`gags_ros.core.query`; docs/evaluation.md has every constant with
   its source): localisation (a hit when a pixel tied at the maximum of the ``k x k``
   mean-filtered relevancy lies in the pixel box of one of the query's instances) and
   segmentation IoU with the union of its instances' masks at its level (R' = (R + mean_k(R)) / 2,
   min-max, clip(2 n - 1, 0, 1) > 0.4, ``m x m`` majority filter); ``k = 30`` and ``m = 7``
   whatever the image size (``--kernel K`` fixes k, ``--kernel 0`` scales both with the image
   height). mIoU3D (:mod:`.selection`): the Gaussians the query selects (kNN-smoothed relevancy,
   min-max, clip(2 n - 1, 0, 1) > 0.4) rendered alone into the view, IoU of their silhouette with
   the same mask. In 3D, per query: the best target of the query engine (threshold,
   neighbour cleanup, clustering) is a hit when its centroid lies in the query's ground-truth box;
   distance errors to the box centre and to the box. Per level (whole / part / subpart) and
   pooled ("all"). Reference row ``label_oracle`` (no 3D targets): the same scoring of a perfect
   field, each pixel carrying the clean text embedding of its ground-truth label at the query's
   level; its mIoU3D gives each Gaussian the label it renders into most.
4. Per seed a metric is the mean over scenes of each scene's mean over its (query, view) pairs
   (2D, mIoU3D) or queries (3D), as LERF-OVS reports the mean of per-scene numbers; the tables
   give the mean and the sample std over seeds.

Outputs in ``--out`` (default ``DATASET/eval``): ``results.json`` (settings, summary, per-scene
numbers, per-run statistics), ``results.md`` (tables), ``runs/<scene>__seed<k>.json`` (every
record of a run) and, for the first seed of each scene, ``pictures/<scene>_relevancy.png``
(RGB with ground-truth boxes, ground-truth mask, relevancy of each variant with its argmax) and
``pictures/<scene>_topdown.png`` (Gaussian centres coloured by RGB, ground-truth boxes, the online
map's targets).

Step budgets: the configuration's defaults (``--set section.key=value`` changes any) and
``--steps`` offline distillation steps per mode; ``--quick`` is a small CPU profile
(:data:`QUICK`). ``--jobs N`` runs N (scene, seed) runs in parallel processes (spread over the GPUs with
``--device cuda``); ``--only`` and
``--resume`` split a long evaluation into several commands (the summary is built from every run
file in ``OUT/runs`` made with the same settings).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import lerf_ovs, metrics, selection
from .pictures import pick_views, relevancy_picture, topdown_picture
from ..sim.text_model import CACHE_ENV, CACHE_FILE, ensure_cached


FORMAT_VERSION = 1
MODES = ("avg", "subpart", "part", "whole", "gad")
ONLINE = "gad_online"  # variant name of step 1
ORACLE = "label_oracle"  # a perfect field scored by the same protocol: a reference row
METRICS_2D = ("acc", "iou", "iou3d")  # iou3d: the 3D Gaussian-selection protocol (.selection)
METRICS_3D = ("found", "hit", "center_dist", "box_dist")
DEFAULT_STEPS = 3000
REFERENCE_HEIGHT = 480  # px; the image height the scaled kernel sizes (--kernel 0) are relative to
LERF_KERNEL = 30        # the reference's mean filter, px, whatever the image size (docs/evaluation.md)
LERF_MAJORITY = 7       # the reference's majority filter, px
# Changes whenever the scoring protocol does, so run files scored otherwise are never mixed in.
PROTOCOL = "langsplat-eval/2"

# The CPU profile of --quick: a few optimisation steps per keyframe, fewer Gaussians, 1 thread
# (the CPU machines are shared). Only the step budgets change, never the protocol.
QUICK = {
    "cpu_threads": 1,
    "mapping.max_image_width": 80,
    "mapping.steps_per_keyframe": 10,
    "mapping.final_refine_steps": 100,
    "mapping.init_points_per_keyframe": 1000,
    "language.steps_per_keyframe": 10,
}
QUICK_STEPS = 400


# --------------------------------------------------------------------------------------------------
# Settings and data
# --------------------------------------------------------------------------------------------------
@dataclass
class EvalSettings:
    """Everything that changes the numbers of an evaluation (saved with every run)."""

    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    modes: List[str] = field(default_factory=lambda: list(MODES))
    device: str = "auto"
    steps: int = DEFAULT_STEPS          # offline distillation steps per mode
    kernel: int = LERF_KERNEL           # mean-filter size, px (the reference's 30); 0 = 30 scaled to the image height
    overrides: Dict[str, object] = field(default_factory=dict)  # dotted config values
    pictures: int = 4                   # queries shown in the relevancy picture (0 = no pictures)
    protocol: str = PROTOCOL            # scoring protocol version (not an option: part of the key)

    def key(self) -> str:
        """Short hash of the settings that shape a run's numbers (not seeds: a run has one)."""
        d = asdict(self)
        d.pop("seeds")
        d.pop("pictures")
        d["overrides"] = {k: v for k, v in d["overrides"].items() if k != "cpu_threads"}  # speed only
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def lerf_sizes(height: int, kernel: int = LERF_KERNEL) -> Tuple[int, int]:
    """``(mean-filter size, majority-filter size)`` in px: ``kernel > 0`` fixes the mean filter
    (the reference: 30, whatever the image size) and the majority filter at 7 (1 for
    ``kernel == 1``, no smoothing at all); ``kernel == 0`` scales 30 and 7 with the image height
    ``height`` relative to 480 px (majority odd, at least 1; not the reference)."""
    if kernel > 0:
        return int(kernel), (1 if kernel == 1 else LERF_MAJORITY)
    s = height / REFERENCE_HEIGHT
    k = max(1, int(round(LERF_KERNEL * s)))
    m = max(1, int(round(LERF_MAJORITY * s)))
    return k, m if m % 2 == 1 else m + 1


@dataclass
class SceneData:
    """One scene folder: labels, queries, eval frames (with masks) and scene.json when present."""

    name: str
    path: Path
    labels: dict
    queries: List[dict]
    eval_frames: list
    meta: Optional[dict] = None


def scene_dirs(path) -> List[Path]:
    """The scene folders of a benchmark folder (``benchmark.json``) or ``[path]`` for one scene."""
    root = Path(path)
    if (root / "benchmark.json").exists():
        names = json.loads((root / "benchmark.json").read_text())["scenes"]
        return [root / n for n in names]
    if (root / "transforms.json").exists():
        return [root]
    raise FileNotFoundError(f"{root}: neither benchmark.json nor transforms.json (see docs/dataset_format.md)")


def load_scene(path) -> SceneData:
    """Labels, queries and the eval-split frames of one scene; ValueError when evaluation inputs
    (labels.json, queries.json, eval frames with masks) are missing."""
    from ..core.io.datasets import load_nerfstudio

    p = Path(path)
    for f in ("labels.json", "queries.json"):
        if not (p / f).exists():
            raise ValueError(f"{p}: {f} is missing; the evaluation needs labels and queries")
    labels = json.loads((p / "labels.json").read_text())
    queries = json.loads((p / "queries.json").read_text())
    frames = load_nerfstudio(p, split="eval")
    if not frames:
        raise ValueError(f"{p}: no frame has split 'eval'")
    for fr in frames:
        if not fr.masks or any(lv not in fr.masks for lv in metrics.QUERY_LEVELS):
            raise ValueError(f"{p}: eval frame {fr.name!r} lacks the per-level masks")
    meta = json.loads((p / "scene.json").read_text()) if (p / "scene.json").exists() else None
    return SceneData(p.name, p, labels, queries, frames, meta)


def dataset_texts(dirs: Sequence[Path], canonical: Sequence[str]) -> List[str]:
    """Every text the evaluation embeds: labels, query texts and canonical phrases."""
    texts = set(canonical)
    for d in dirs:
        labels = json.loads((d / "labels.json").read_text())
        texts |= {str(t) for lv in labels.values() for t in lv.values()}
        texts |= {q["text"] for q in json.loads((d / "queries.json").read_text())}
    return sorted(texts)


def prepare_text_cache(path, canonical: Sequence[str], cache: Optional[Path] = None) -> Path:
    """Write (or complete) the text-embedding cache of a dataset and point ``$GAGS_TEXT_CACHE`` at
    it for this process and its children. Default file: ``<dataset>/text_embeddings.npz``."""
    root = Path(path)
    cache = Path(cache) if cache else root / CACHE_FILE
    ensure_cached(dataset_texts(scene_dirs(root), canonical), cache)
    os.environ[CACHE_ENV] = str(cache.resolve())
    return cache


def make_config(settings: EvalSettings, seed: int, device: Optional[str] = None):
    """The pipeline configuration of a run: defaults, the simulation teacher, online GaD, the seed
    and ``settings.overrides``; ``device`` (e.g. ``cuda:1``) replaces ``settings.device``."""
    from ..core.config import GagsConfig, set_value, validate

    cfg = GagsConfig()
    set_value(cfg, "device", device or settings.device)
    set_value(cfg, "teacher.segmenter", "sim")
    set_value(cfg, "language.enabled", True)
    for k, v in settings.overrides.items():
        set_value(cfg, k, v)
    set_value(cfg, "language.mode", "gad")
    set_value(cfg, "seed", int(seed))
    return validate(cfg)


# --------------------------------------------------------------------------------------------------
# Steps 1 and 2: the online map and the offline ablations
# --------------------------------------------------------------------------------------------------
@dataclass
class Variant:
    """Latents ``[N, F]`` and decoders of one distillation on the shared geometry."""

    name: str
    latents: "object"  # torch.Tensor [N, F]
    field: "object"    # LanguageField
    info: dict = field(default_factory=dict)


def stream(pipeline, scene_path: Path, on_frame: Optional[Callable[[int], None]] = None,
           max_frames: int = 0) -> dict:
    """Step 1: the train split (its first ``max_frames`` frames when > 0) in stream order into
    ``pipeline``, then ``finish()``. Returns frame / keyframe counts and seconds."""
    from ..core.io.datasets import iter_nerfstudio

    t0 = time.perf_counter()
    n = 0
    for frame in itertools.islice(iter_nerfstudio(scene_path, split="train"), max_frames or None):
        pipeline.add_frame(frame)
        pipeline.run_owed()  # the keyframe's optimisation steps (the worker pays them in chunks)
        n += 1
        if on_frame is not None:
            on_frame(n)
    t_stream = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipeline.finish()
    st = pipeline.stats()
    return {"frames": n, "keyframes": st["keyframes"], "gaussians": st["gaussians"],
            "mapping_steps": st["mapping_steps"], "language_steps": st["language_steps"],
            "stream_s": t_stream, "finish_s": time.perf_counter() - t0}


def _set_latents(mapper, latents) -> None:
    import torch

    with mapper.lock, torch.no_grad():
        mapper.gaussians.set_features(latents)


def online_variant(pipeline) -> Variant:
    """The map's own latents and field after streaming (variant ``gad_online``)."""
    feats = pipeline.mapper.gaussians.features.detach().clone()
    return Variant(ONLINE, feats, pipeline.distiller.field)


def distill_offline(pipeline, cfg, mode: str, steps: int) -> Variant:
    """Step 2 for one mode: fresh latents and decoders distilled for ``steps`` offline steps on the
    frozen geometry of ``pipeline`` from the teacher outputs its online distiller stored.

    The pipeline's latents are replaced by the new ones (the caller restores them with
    :func:`_set_latents`). Every mode starts from the same initial latents and decoder weights
    (both drawn from ``cfg.seed``) and visits the keyframes in the same order.
    """
    import torch

    from ..core.language.distill import Distiller
    from ..core.teachers.base import TeacherOutput

    mapper, online = pipeline.mapper, pipeline.distiller
    cfg_m = copy.deepcopy(cfg)
    cfg_m.language.mode = mode
    mapper.remove_param("features")   # a Distiller registers fresh latents only when the map has none
    dev = pipeline.device
    d = Distiller(cfg_m, mapper, online.embed_dim, dev, renderer=online.renderer)
    for k in online.teacher_keyframes:
        h, w = mapper.keyframes[k].frame.image.shape[:2]
        # The simulation teacher's outputs have the frame's size: this is the stored output itself.
        t = online.targets_at(k, h, w)
        d.add_teacher_output(k, TeacherOutput(t.level_ids.to(torch.int32), t.embeddings, k))
    t0 = time.perf_counter()
    summary = d.offline(steps)
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    info = {"seconds": time.perf_counter() - t0,
            **{k: v for k, v in summary.items() if isinstance(v, (int, float))}}
    return Variant(mode, mapper.gaussians.features.detach().clone(), d.field, info)


# --------------------------------------------------------------------------------------------------
# Step 3: scores
# --------------------------------------------------------------------------------------------------
RelevancyFn = Callable[[object, List[str]], np.ndarray]  # (eval frame, texts) -> [T, H, W]


def score_views(relevancy_fn: RelevancyFn, scene: SceneData, kernel: int = LERF_KERNEL,
                tags: Optional[dict] = None, selection_fn: Optional[RelevancyFn] = None) -> List[dict]:
    """2D records of every (query, eval view) pair whose target is visible in the view.

    ``relevancy_fn(frame, texts)``: ``[T, H, W]`` raw relevancy of the rendered eval ``frame`` at
    its masks' size. Records: ``tags`` plus ``query``, ``level``, ``view``, ``acc`` (0/1), ``iou``,
    and ``iou3d`` when ``selection_fn(frame, texts)`` gives the ``[T, H, W]`` bool silhouettes of
    the 3D selections (:mod:`.selection`): their IoU with the same ground-truth mask.
    """

    texts = [x["text"] for x in scene.queries]
    out = []
    for frame in scene.eval_frames:
        rel = np.asarray(relevancy_fn(frame, texts), dtype=np.float32)
        H, W = frame.masks["whole"].shape
        if rel.shape != (len(texts), H, W):
            raise ValueError(f"relevancy of view {frame.name!r} has shape {rel.shape}, expected "
                             f"({len(texts)}, {H}, {W})")
        k, m = lerf_sizes(H, kernel)
        gts = {i: gt for i, gt in enumerate(metrics.view_ground_truth(frame.masks, x) for x in scene.queries)
               if gt is not None}
        # silhouettes only of the queries scored in this view (each is a render)
        sil = {} if selection_fn is None else dict(zip(gts, selection_fn(frame, [texts[i] for i in gts])))
        for i, gt in gts.items():
            query = scene.queries[i]
            pred = lerf_ovs.segmentation_mask(rel[i], kernel=k, majority=m)
            s = metrics.score_view(rel[i], frame.masks, query, pred_mask=pred.numpy(), kernel=k)
            if i in sil:
                s["iou3d"] = float(lerf_ovs.iou(sil[i], gt[0]))
            out.append({**(tags or {}), "query": query["text"], "level": query["level"], "view": frame.name, **s})
    return out


def label_oracle(scene: SceneData, encode: Callable[[List[str]], "object"], canonical, temperature: float,
                 encode_labels: Optional[Callable[[List[str]], "object"]] = None) -> RelevancyFn:
    """Relevancy images of a perfect language field: every pixel carries the clean (noise-free)
    teacher embedding of its ground-truth label at the query's level (0 where no instance). Scored
    like the variants, it is a reference for what the text model and the protocol make of perfect
    labels (variant ``label_oracle``). Not an upper bound under our former threshold (n > 0.4:
    learned fields beat its mIoU on the default set, 33-35 vs 30.7); see
    docs/results/sim_small_cpu.md for the reference protocol.

    ``encode(texts) -> [T, D]`` unit embeddings (the query engine's); ``canonical``: ``[C, D]``;
    ``encode_labels``: the teacher's clean mask embedding of label texts (default ``encode``: the
    text regime, where a mask carries its label's text embedding).
    """
    import torch

    from ..core import query as q

    labels = {lv: {int(k): str(v) for k, v in d.items()} for lv, d in scene.labels.items()}
    level_of = {x["text"]: x["level"] for x in scene.queries}

    def fn(frame, texts):
        H, W = frame.masks["whole"].shape
        out = np.zeros((len(texts), H, W), dtype=np.float32)
        q_emb = encode(list(texts)).float()
        for lv in sorted({level_of[t] for t in texts}):
            rows = [i for i, t in enumerate(texts) if level_of[t] == lv]
            uniq, inv = np.unique(np.asarray(frame.masks[lv]), return_inverse=True)
            known = [i for i, u in enumerate(uniq) if u > 0 and int(u) in labels.get(lv, {})]
            if not known:
                continue
            emb = (encode_labels or encode)([labels[lv][int(uniq[i])] for i in known]).float().to(q_emb.device)
            r = torch.zeros(len(uniq), len(rows))
            r[known] = q.relevancy(emb, q_emb[rows], canonical, temperature).cpu()
            out[rows] = r.numpy()[inv.reshape(H, W)].transpose(2, 0, 1)
        return out

    return fn


def label_oracle_selection(pipeline, scene: SceneData, temperature: float,
                           encode_labels: Optional[Callable[[List[str]], "object"]] = None) -> RelevancyFn:
    """The 3D selection silhouettes (:func:`.selection.selection_fn`) of the 3D label oracle: each
    Gaussian of the map carries the clean teacher embedding of the ground-truth label it renders into
    most over the eval views (:func:`.selection.label_oracle_relevancy`); ``encode_labels`` as for
    :func:`label_oracle` (default: the label's text embedding)."""
    from ..core import query as q

    engine, g = pipeline.query_engine, pipeline.mapper.gaussians
    dev = g.means.device
    texts = [x["text"] for x in scene.queries]
    encode_labels = encode_labels or (lambda t: engine.encode(t, dev))

    def label_relevancy(level, label_texts, rows):
        return q.relevancy(encode_labels(label_texts).float().to(dev), engine.encode([texts[i] for i in rows], dev),
                           engine.canonical(dev), temperature).float().cpu().numpy()

    r = selection.label_oracle_relevancy(pipeline.renderer, g, scene.eval_frames, scene.labels, scene.queries,
                                         label_relevancy)
    return selection.selection_fn(pipeline.renderer, g, r, texts)


def score_targets(centroids: Sequence[Optional[Sequence[float]]], scene: SceneData,
                  tags: Optional[dict] = None) -> List[dict]:
    """3D records, one per query: ``centroids[i]`` is the best target of query ``i`` (None: none)."""
    return [{**(tags or {}), "query": q["text"], "level": q["level"], **metrics.score_target(c, q)}
            for q, c in zip(scene.queries, centroids)]


def variant_records(pipeline, variant: Variant, scene: SceneData, kernel: int, tags: dict):
    """2D and 3D records of one variant (its latents are loaded into the map first)."""
    import torch

    _set_latents(pipeline.mapper, variant.latents)
    engine, g = pipeline.query_engine, pipeline.mapper.gaussians

    def relevancy(frame, texts):
        return engine.relevancy_image(pipeline.renderer, g, variant.field, frame.T_world_cam,
                                      frame.intrinsics, texts).float().cpu().numpy()

    texts = [q["text"] for q in scene.queries]
    with torch.no_grad():
        r3 = engine.gaussian_relevancy(g, variant.field, engine.encode(texts, g.means.device))  # [N, T]
    sel = selection.selection_fn(pipeline.renderer, g, r3.float().cpu().numpy(), texts)
    rec2 = score_views(relevancy, scene, kernel, tags, sel)
    answers = engine.query(g, variant.field, [q["text"] for q in scene.queries], max_targets=1)
    best = [a.targets[0].centroid if a.targets else None for a in answers]
    rec3 = score_targets(best, scene, tags)
    for r, a in zip(rec3, answers):
        if not a.targets:
            r["reason"] = a.reason  # why the query engine found nothing
    return rec2, rec3, best


# --------------------------------------------------------------------------------------------------
# One run: (scene, seed)
# --------------------------------------------------------------------------------------------------
def run_name(scene: str, seed: int) -> str:
    return f"{scene}__seed{seed}"


def evaluate_run(scene_path, seed: int, settings: EvalSettings, out_dir, pictures: bool = False,
                 device: Optional[str] = None) -> dict:
    """Steps 1-3 for one scene and seed; writes and returns ``OUT/runs/<scene>__seed<seed>.json``
    (settings, statistics, 2D and 3D records). ``device``: this run's device when not
    ``settings.device`` (parallel runs spread over GPUs)."""
    import torch

    from ..core.pipeline import GagsPipeline

    scene = load_scene(scene_path)
    cfg = make_config(settings, seed, device)
    tag = f"[{scene.name} seed {seed}]"
    t_run = time.perf_counter()
    pipeline = GagsPipeline(cfg, teacher_options={"labels": scene.labels})
    every = 25

    def progress(n):
        if n % every == 0:
            st = pipeline.stats()
            print(f"{tag} {n} frames, {st['keyframes']} keyframes, {st['gaussians']} Gaussians, "
                  f"{time.perf_counter() - t_run:.0f} s", file=sys.stderr, flush=True)

    stats = stream(pipeline, scene.path, progress)
    print(f"{tag} streamed {stats['frames']} frames: {stats['keyframes']} keyframes, {stats['gaussians']} "
          f"Gaussians, {stats['stream_s'] + stats['finish_s']:.0f} s", file=sys.stderr, flush=True)
    variants = [online_variant(pipeline)]
    for mode in settings.modes:
        variants.append(distill_offline(pipeline, cfg, mode, settings.steps))
        print(f"{tag} {mode}: {settings.steps} steps in {variants[-1].info['seconds']:.0f} s, loss "
              f"{variants[-1].info.get('first_loss', float('nan')):.4f} -> {variants[-1].info.get('loss', float('nan')):.4f}",
              file=sys.stderr, flush=True)
    rec2, rec3, targets = [], [], {}
    t0 = time.perf_counter()
    tags = {"scene": scene.name, "seed": int(seed)}
    for v in variants:
        r2, r3, best = variant_records(pipeline, v, scene, settings.kernel, {**tags, "variant": v.name})
        rec2 += r2
        rec3 += r3
        targets[v.name] = best
    engine = pipeline.query_engine
    dev = pipeline.mapper.gaussians.means.device
    encode_labels = getattr(pipeline.teacher.embedder, "label_embeddings", None)
    oracle = label_oracle(scene, lambda t: engine.encode(t, dev), engine.canonical(dev), cfg.query.temperature,
                          encode_labels)
    rec2 += score_views(oracle, scene, settings.kernel, {**tags, "variant": ORACLE},
                        label_oracle_selection(pipeline, scene, cfg.query.temperature, encode_labels))
    stats["eval_s"] = time.perf_counter() - t0
    out_dir = Path(out_dir)
    pics = []
    if pictures and settings.pictures > 0:
        pics = _pictures(pipeline, variants, scene, settings, targets, out_dir / "pictures", seed)
    _set_latents(pipeline.mapper, variants[0].latents)  # the map keeps its own (online) latents
    stats["run_s"] = time.perf_counter() - t_run
    run = {"format_version": FORMAT_VERSION, "settings_key": settings.key(), "settings": asdict(settings),
           "scene": scene.name, "scene_path": str(scene.path), "seed": int(seed), "device": str(pipeline.device),
           "device_name": torch.cuda.get_device_name(pipeline.device) if str(pipeline.device).startswith("cuda") else "cpu",
           "torch": torch.__version__, "stats": stats,
           "distill": {v.name: v.info for v in variants if v.info}, "pictures": pics,
           "eval_views": [f.name for f in scene.eval_frames], "records_2d": rec2, "records_3d": rec3}
    path = out_dir / "runs" / f"{run_name(scene.name, seed)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(run, default=_json_default))
    tmp.replace(path)
    print(f"{tag} done in {stats['run_s']:.0f} s", file=sys.stderr, flush=True)
    return run


def _pictures(pipeline, variants: List[Variant], scene: SceneData, settings: EvalSettings,
              targets: Dict[str, list], out: Path, seed: int) -> List[str]:
    import torch

    picks = pick_views(scene, settings.pictures)
    paths = []
    if picks:
        engine, g = pipeline.query_engine, pipeline.mapper.gaussians
        maps: Dict[str, Dict[Tuple[int, int], np.ndarray]] = {}
        unknown: Dict[str, Dict[Tuple[int, int], np.ndarray]] = {}
        shown = [v for v in variants if v.name in (ONLINE, "gad", "avg")] or variants
        shown += [v for v in variants if v not in shown]
        for v in shown:
            _set_latents(pipeline.mapper, v.latents)
            maps[v.name], unknown[v.name] = {}, {}
            for qi, vi in picks:
                fr = scene.eval_frames[vi]
                rel = engine.relevancy_image(pipeline.renderer, g, v.field, fr.T_world_cam, fr.intrinsics,
                                             [scene.queries[qi]["text"]])
                maps[v.name][(qi, vi)] = rel[0].float().cpu().numpy()
                share = engine.known_image(pipeline.renderer, g, fr.T_world_cam, fr.intrinsics)
                if share is not None:
                    unknown[v.name][(qi, vi)] = share.cpu().numpy() < 0.5
        mean_filter, _ = lerf_sizes(scene.eval_frames[picks[0][1]].masks["whole"].shape[0], settings.kernel)
        paths.append(str(relevancy_picture(out / f"{scene.name}_relevancy.png", scene, picks, maps, mean_filter,
                                           unknown)))
    g = pipeline.mapper.gaussians
    with torch.no_grad():
        sel = g.opacities.detach() >= 0.1
        means = g.means.detach()[sel].float().cpu().numpy()
        colors = g.colors.detach()[sel].float().clamp(0, 1).cpu().numpy()
    name = ONLINE  # the system's own answers
    hits = sum(t is not None and metrics.box_contains(t, q["box_min"], q["box_max"])
               for t, q in zip(targets[name], scene.queries))
    title = f"{scene.name} seed {seed}: {name} targets, {hits}/{len(scene.queries)} inside their box"
    paths.append(str(topdown_picture(out / f"{scene.name}_topdown.png", scene, means, colors, targets[name], title)))
    return paths


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-able: {type(o)}")


# --------------------------------------------------------------------------------------------------
# Step 4: aggregation
# --------------------------------------------------------------------------------------------------
TABLES = (("iou", "mIoU (%)", 100.0, 1), ("acc", "mAcc, localisation (%)", 100.0, 1),
          ("hit", "3D hit rate (%)", 100.0, 1), ("iou3d", "mIoU3D, 3D Gaussian selection (%)", 100.0, 1),
          ("found", "3D queries with a target (%)", 100.0, 1),
          ("center_dist", "3D distance of found targets to the box centre (m)", 1.0, 2))


def summarize_runs(runs: Sequence[dict]) -> dict:
    """From run dicts: ``{"summary": {variant: {level: {metric: {mean, std, seeds, n}}}},
    "per_seed": {variant: {level: {metric: {seed: mean}}}}, "per_scene": {scene: {variant: {level:
    {metric: mean over seeds}}}}}`` (levels include "all")."""
    rec2 = [r for run in runs for r in run["records_2d"]]
    rec3 = [r for run in runs for r in run["records_3d"]]

    def nest(s2, s3):
        out: Dict[str, Dict[str, dict]] = {}
        for s in (s2, s3):
            for (v, lv), ms in s.items():
                out.setdefault(v, {}).setdefault(lv, {}).update(ms)
        return out

    summary = nest(metrics.summarize(rec2, METRICS_2D), metrics.summarize(rec3, METRICS_3D))
    per_seed: Dict[str, Dict[str, Dict[str, Dict[str, float]]]] = {}
    for recs, names in ((rec2, METRICS_2D), (rec3, METRICS_3D)):
        for (v, lv), ms in metrics.seed_means(recs, names).items():
            d = per_seed.setdefault(v, {}).setdefault(lv, {})
            for m, by_seed in ms.items():
                d.setdefault(m, {}).update({str(seed): x for seed, x in by_seed.items()})
    per_scene = {}
    for sc in sorted({run["scene"] for run in runs}):
        n = nest(metrics.summarize([r for r in rec2 if r["scene"] == sc], METRICS_2D),
                 metrics.summarize([r for r in rec3 if r["scene"] == sc], METRICS_3D))
        per_scene[sc] = {v: {lv: {m: s["mean"] for m, s in ms.items()} for lv, ms in lvs.items()}
                         for v, lvs in n.items()}
    return {"summary": summary, "per_seed": per_seed, "per_scene": per_scene}


def variant_order(names) -> List[str]:
    order = [ONLINE, "gad", "avg", "subpart", "part", "whole", ORACLE]
    return [v for v in order if v in names] + sorted(v for v in names if v not in order)


def markdown(summary: dict, runs: Sequence[dict], title: str = "") -> str:
    """The tables of ``summary`` (mean ± std over seeds) with a short header."""
    flat = {(v, lv): ms for v, lvs in summary.items() for lv, ms in lvs.items()}
    variants = variant_order(summary)
    seeds = sorted({r["seed"] for r in runs})
    scenes = sorted({r["scene"] for r in runs})
    lines = [f"# {title or 'Evaluation'}", "",
             f"{len(scenes)} scene(s) ({', '.join(scenes)}), seeds {seeds}; cells: mean ± std over seeds. "
             f"Variants: {ONLINE} = the online map (GaD while streaming); the others are offline "
             f"distillations on the same geometry and teacher outputs; {ORACLE} = a perfect field, each "
             f"pixel carrying the clean text embedding of its ground-truth label at the query's level (mIoU3D: "
             f"each Gaussian carrying the label it renders into most): what the text model and the protocol make "
             f"of perfect labels. 2D: LangSplat's LERF-OVS protocol; mIoU3D: the 3D Gaussian-selection protocol "
             f"(docs/evaluation.md).", ""]
    for metric, name, scale, digits in TABLES:
        lines += [metrics.format_table(flat, metric, variants, scale=scale, digits=digits, title=name), ""]
    return "\n".join(lines)


def load_runs(out_dir, settings_key: str) -> List[dict]:
    """Every run file in ``OUT/runs`` made with settings ``settings_key`` (others raise: mixing
    settings in one summary would be silent nonsense)."""
    runs = []
    for p in sorted((Path(out_dir) / "runs").glob("*.json")):
        run = json.loads(p.read_text())
        if run.get("settings_key") != settings_key:
            raise ValueError(f"{p} was made with other settings ({run.get('settings_key')} != {settings_key}); "
                             f"use another --out or delete it")
        runs.append(run)
    return runs


def write_results(out_dir, runs: Sequence[dict], settings: EvalSettings, dataset: str) -> dict:
    """``results.json`` and ``results.md`` in ``out_dir`` from ``runs``; returns the results."""
    out = Path(out_dir)
    s = summarize_runs(runs)
    results = {"format_version": FORMAT_VERSION, "dataset": dataset, "settings": asdict(settings),
               "settings_key": settings.key(), "scenes": sorted({r["scene"] for r in runs}),
               "seeds": sorted({r["seed"] for r in runs}), "variants": variant_order(s["summary"]),
               **s,
               "runs": [{k: r.get(k) for k in ("scene", "seed", "device", "device_name", "stats", "distill", "pictures",
                                              "eval_views")}
                        for r in runs]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_json_default))
    (out / "results.md").write_text(markdown(s["summary"], runs, f"Evaluation of {dataset}") + "\n")
    return results


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------
def _parse_override(text: str) -> Tuple[str, object]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects section.key=value, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), yaml.safe_load(v)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m gags_ros.eval.evaluate",
                                 description="Open-vocabulary evaluation (LERF protocol, 3D targets) of a "
                                 "dataset in the project's format: online GaD and offline ablations.")
    ap.add_argument("dataset", help="scene folder (transforms.json) or benchmark folder (benchmark.json)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (default 0 1 2)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                    help="offline distillation modes (default: all five)")
    ap.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:N")
    ap.add_argument("--steps", type=int, help=f"offline distillation steps per mode (default {DEFAULT_STEPS}, "
                    f"--quick {QUICK_STEPS})")
    ap.add_argument("--quick", action="store_true", help="small CPU step budgets: " +
                    ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    ap.add_argument("--set", dest="overrides", type=_parse_override, action="append", default=[],
                    metavar="SECTION.KEY=VALUE", help="configuration value (repeatable), e.g. "
                    "mapping.steps_per_keyframe=50")
    ap.add_argument("--kernel", type=int, default=LERF_KERNEL,
                    help=f"mean-filter size in px (default {LERF_KERNEL}, the reference's, whatever the image "
                    f"size; 0: 30 and the 7 px majority filter scaled with the image height / {REFERENCE_HEIGHT})")
    ap.add_argument("--pictures", type=int, default=4, help="queries in the relevancy picture (0: no pictures)")
    ap.add_argument("--out", help="output folder (default: DATASET/eval)")
    ap.add_argument("--jobs", type=int, default=1, help="(scene, seed) runs in parallel processes")
    ap.add_argument("--only", nargs="+", metavar="SCENE[:SEED]",
                    help="run only these scenes (all seeds) or scene:seed pairs; the summary covers every "
                    "run file in OUT/runs")
    ap.add_argument("--resume", action="store_true",
                    help="keep run files already in OUT/runs made with the same settings instead of re-running them")
    ap.add_argument("--text-cache", help=f"text embedding cache (default: DATASET/{CACHE_FILE})")
    ap.add_argument("--texts-only", action="store_true",
                    help="write the text embedding cache and stop (prepares a run on a machine without the model)")
    return ap


def settings_from_args(a) -> EvalSettings:
    overrides = dict(QUICK) if a.quick else {}
    overrides.update(dict(a.overrides))
    steps = a.steps if a.steps is not None else (QUICK_STEPS if a.quick else DEFAULT_STEPS)
    return EvalSettings(seeds=list(a.seeds), modes=list(dict.fromkeys(a.modes)), device=a.device,
                        steps=int(steps), kernel=int(a.kernel), overrides=overrides, pictures=int(a.pictures))


def _jobs_list(dirs: List[Path], seeds: List[int], only: Optional[List[str]]) -> List[Tuple[Path, int]]:
    jobs = [(d, s) for d in dirs for s in seeds]
    if not only:
        return jobs
    keep = []
    for d, s in jobs:
        for o in only:
            name, _, seed = o.partition(":")
            if d.name == name and (not seed or int(seed) == s):
                keep.append((d, s))
                break
    if not keep:
        raise SystemExit(f"--only {only}: matches none of {[d.name for d in dirs]} x seeds {seeds}")
    return keep


def _run_job(args) -> str:
    scene_path, seed, settings_dict, out, pictures, device = args
    logging.basicConfig(level=logging.WARNING)
    evaluate_run(scene_path, seed, EvalSettings(**settings_dict), out, pictures, device)
    return f"{Path(scene_path).name}:{seed}"


def _warm_up(device: str) -> None:
    """Compile gsplat's CUDA kernels once before parallel runs (each would otherwise wait on it)."""
    import torch

    from ..core.render.factory import make_renderer

    if torch.device(device).type != "cuda":
        return
    r = make_renderer("auto", device)
    n = 16
    means = torch.randn(n, 3, device=device) + torch.tensor([0.0, 0.0, 3.0], device=device)
    quats = torch.zeros(n, 4, device=device)
    quats[:, 0] = 1
    K = torch.tensor([[[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]]], device=device)
    for ch, depth in ((3, True), (16, False)):  # what mapping and distillation render
        r.render(means, quats, torch.full((n, 3), 0.1, device=device), torch.full((n,), 0.5, device=device),
                 torch.rand(n, ch, device=device), torch.eye(4, device=device)[None], K, 64, 64,
                 background=None, with_depth=depth)
    torch.cuda.synchronize(device)


def evaluate(dataset, settings: EvalSettings, out=None, jobs: int = 1, only=None, resume: bool = False,
             text_cache=None) -> dict:
    """The whole command (see the module doc); returns the results dict of ``results.json``."""
    root = Path(dataset)
    dirs = scene_dirs(root)
    out = Path(out) if out else root / "eval"
    cache = prepare_text_cache(root, make_config(settings, 0).query.canonical_phrases, text_cache)
    print(f"text embeddings: {cache}", file=sys.stderr, flush=True)
    todo = _jobs_list(dirs, settings.seeds, only)
    done = set()
    if resume and (out / "runs").exists():
        done = {(r["scene"], r["seed"]) for r in load_runs(out, settings.key())}
    todo = [(d, s) for d, s in todo if (d.name, s) not in done]
    first_seed = min(settings.seeds)
    job_args = [(str(d), s, asdict(settings), str(out), s == first_seed, None) for d, s in todo]
    t0 = time.perf_counter()
    if jobs <= 1 or len(job_args) <= 1:
        for a in job_args:
            _run_job(a)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import torch

        dev = make_config(settings, 0).resolved_device()
        _warm_up(dev)
        # Runs take turns over the GPUs when "cuda" names no particular one.
        gpus = torch.cuda.device_count() if dev == "cuda" else 0
        # Threads per process: share the cores instead of oversubscribing them.
        threads = settings.overrides.get("cpu_threads", 0) or max(1, (os.cpu_count() or 1) // jobs)
        job_args = [(a[0], a[1], {**a[2], "overrides": {**a[2]["overrides"], "cpu_threads": threads}}, a[3], a[4],
                     f"cuda:{i % gpus}" if gpus > 1 else None) for i, a in enumerate(job_args)]
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
            for name in ex.map(_run_job, job_args):
                print(f"finished {name} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    runs = load_runs(out, settings.key())
    return write_results(out, runs, settings, str(root))


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = settings_from_args(a)
    if a.texts_only:
        cache = prepare_text_cache(a.dataset, make_config(settings, 0).query.canonical_phrases, a.text_cache)
        print(f"text embeddings: {cache}")
        return 0
    t0 = time.time()
    res = evaluate(a.dataset, settings, a.out, a.jobs, a.only, a.resume, a.text_cache)
    out = Path(a.out) if a.out else Path(a.dataset) / "eval"
    print((out / "results.md").read_text())
    print(f"results: {out / 'results.json'} ({len(res['runs'])} runs, {time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
