"""Scoring of the evaluation: LERF-protocol 2D metrics, 3D target metrics, and their aggregation.

The ground-truth side (instance boxes and masks of a query in a view, world boxes) and the
aggregation live here; smoothing, argmax and thresholding of relevancy maps are the query engine's
(:mod:`gags_ros.core.query`), which :func:`score_view` calls.

2D, per (query, eval view) where the target is visible:
- localisation: a pixel tied at the maximum of the 30x30-smoothed relevancy falls inside the pixel
  bounding box of any ground-truth instance of the query (LERF's "inside any box of that label");
  mean -> mAcc;
- segmentation: IoU of the predicted binary mask with the union of the query's instance masks;
  mean -> mIoU.
3D, per query: the target centroid lies inside the query's world box (hit), its distance to the box
centre, and its distance to the box (0 inside).

Records are flat dicts; :func:`summarize` averages each metric per (variant, level, seed, scene),
then over scenes (the mean of per-scene numbers, as LERF-OVS results are reported), then gives
mean and spread over seeds.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

QUERY_LEVELS = ("whole", "part", "subpart")
ALL = "all"  # the column pooling every level


# --------------------------------------------------------------------------------------------------
# Ground truth of a query in one view
# --------------------------------------------------------------------------------------------------

def query_mask(ids_image: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """``[H, W]`` bool: pixels whose instance id (``ids_image`` ``[H, W]`` of the query's level) is in ``ids``."""
    return np.isin(np.asarray(ids_image), np.asarray(list(ids), dtype=np.int64))


def instance_boxes(ids_image: np.ndarray, ids: Sequence[int], min_pixels: int = 1) -> np.ndarray:
    """``[K, 4]`` int pixel boxes ``(x0, y0, x1, y1)`` (inclusive columns / rows) of every instance
    in ``ids`` with at least ``min_pixels`` pixels in ``ids_image``."""
    img = np.asarray(ids_image)
    boxes = []
    for i in ids:
        rows, cols = np.nonzero(img == i)
        if len(rows) >= max(min_pixels, 1):
            boxes.append((cols.min(), rows.min(), cols.max(), rows.max()))
    return np.array(boxes, dtype=np.int64).reshape(-1, 4)


def view_ground_truth(masks: Dict[str, np.ndarray], query: dict,
                      min_pixels: int = 1) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(mask [H, W] bool, boxes [K, 4])`` of ``query`` in a view with per-level instance images
    ``masks``, or None when fewer than ``min_pixels`` of it are visible (the pair is not scored)."""
    img = masks[query["level"]]
    m = query_mask(img, query["ids"])
    if m.sum() < max(min_pixels, 1):
        return None
    return m, instance_boxes(img, query["ids"], min_pixels=1)


# --------------------------------------------------------------------------------------------------
# 3D scores
# --------------------------------------------------------------------------------------------------

def box_contains(point: Sequence[float], box_min: Sequence[float], box_max: Sequence[float],
                 tol: float = 0.0) -> bool:
    """``point`` ``[3]`` inside the axis-aligned box grown by ``tol`` metres."""
    p, lo, hi = (np.asarray(v, dtype=np.float64) for v in (point, box_min, box_max))
    return bool(np.all(p >= lo - tol) and np.all(p <= hi + tol))


def query_boxes(query: dict) -> List[Tuple[List[float], List[float]]]:
    """The per-instance boxes ``[(min [3], max [3]), ...]`` of a query (``boxes``; queries written
    before they existed: the one union box ``box_min`` / ``box_max``)."""
    if query.get("boxes"):
        return [(list(lo), list(hi)) for lo, hi in query["boxes"]]
    return [(list(query["box_min"]), list(query["box_max"]))]


def inside_any_box(point: Sequence[float], query: dict, tol: float = 0.0) -> bool:
    """``point`` ``[3]`` (m) inside the box of any instance the query names (grown by ``tol`` m)."""
    return any(box_contains(point, lo, hi, tol) for lo, hi in query_boxes(query))


def box_center_distance(point: Sequence[float], box_min: Sequence[float], box_max: Sequence[float]) -> float:
    """Euclidean distance (m) from ``point`` to the box centre."""
    p, lo, hi = (np.asarray(v, dtype=np.float64) for v in (point, box_min, box_max))
    return float(np.linalg.norm(p - (lo + hi) / 2))


def box_distance(point: Sequence[float], box_min: Sequence[float], box_max: Sequence[float]) -> float:
    """Euclidean distance (m) from ``point`` to the nearest point of the box (0 inside)."""
    p, lo, hi = (np.asarray(v, dtype=np.float64) for v in (point, box_min, box_max))
    return float(np.linalg.norm(np.maximum(lo - p, 0.0) + np.maximum(p - hi, 0.0)))


def score_target(centroid: Optional[Sequence[float]], query: dict) -> dict:
    """3D scores of one query's best target centroid (None when the query returned no target):
    ``{"found", "hit", "center_dist", "box_dist"}`` (distances nan when not found)."""
    if centroid is None:
        return {"found": 0.0, "hit": 0.0, "center_dist": math.nan, "box_dist": math.nan}
    lo, hi = query["box_min"], query["box_max"]
    return {"found": 1.0, "hit": float(box_contains(centroid, lo, hi)),
            "center_dist": box_center_distance(centroid, lo, hi), "box_dist": box_distance(centroid, lo, hi)}


def score_view(relevancy: np.ndarray, masks: Dict[str, np.ndarray], query: dict,
               pred_mask: Optional[np.ndarray] = None, kernel: int = 30, min_pixels: int = 1) -> Optional[dict]:
    """2D scores ``{"acc", "iou"}`` of one query in one eval view, or None when the target is not
    visible there.

    ``relevancy``: ``[H, W]`` raw relevancy of the query in the view; ``masks``: the view's per-level
    instance images; ``pred_mask``: ``[H, W]`` bool prediction (default: the LERF thresholding of
    ``relevancy``). Smoothing, argmax and IoU are the reference protocol's
    (:func:`.lerf_ovs.localisation_hit`, :func:`.lerf_ovs.segmentation_mask`).
    """
    from . import lerf_ovs as q

    gt = view_ground_truth(masks, query, min_pixels)
    if gt is None:
        return None
    m, boxes = gt
    hit, _ = q.localisation_hit(relevancy, boxes, kernel=kernel)
    if pred_mask is None:
        pred_mask = q.segmentation_mask(relevancy, kernel=kernel)
    return {"acc": float(hit), "iou": float(q.iou(pred_mask, m))}


# --------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------

def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def seed_means(records: Iterable[dict], metrics: Sequence[str], variant_key: str = "variant",
               level_key: str = "level", seed_key: str = "seed", scene_key: str = "scene",
               ) -> Dict[Tuple[str, str], Dict[str, Dict[object, float]]]:
    """``{(variant, level): {metric: {seed: value}}}`` (levels include "all"): per seed, the mean
    over scenes of each scene's mean over its records (LERF-OVS reports the mean of per-scene
    numbers, so a scene with many pairs does not outweigh the others). Records without
    ``scene_key`` form one scene; nan values are not applicable (ignored)."""
    acc: Dict[Tuple[str, str], Dict[object, Dict[object, Dict[str, List[float]]]]] = {}
    for r in records:
        for level in (r[level_key], ALL):
            bucket = acc.setdefault((r[variant_key], level), {}).setdefault(r[seed_key], {}).setdefault(
                r.get(scene_key), {})
            for m in metrics:
                v = r.get(m, math.nan)
                bucket.setdefault(m, []).append(math.nan if v is None else float(v))
    return {key: {m: {seed: _mean_std([_mean_std(vals.get(m, []))[0] for vals in scenes.values()])[0]
                      for seed, scenes in seeds.items()} for m in metrics}
            for key, seeds in acc.items()}


def summarize(records: Iterable[dict], metrics: Sequence[str], variant_key: str = "variant",
              level_key: str = "level", seed_key: str = "seed", scene_key: str = "scene",
              ) -> Dict[Tuple[str, str], Dict[str, dict]]:
    """Mean and spread over seeds of each metric, per (variant, level) and per (variant, "all").

    Each record holds ``variant_key``, ``level_key``, ``seed_key``, optionally ``scene_key``, and
    metric values (nan = not applicable, ignored). Within one seed a metric is the mean over scenes
    of the per-scene means over records (:func:`seed_means`; "all" pools the levels of a scene);
    across seeds the result is ``{"mean", "std" (sample std, 0 for one seed), "seeds", "n" (records)}``.
    """
    records = list(records)
    per_seed = seed_means(records, metrics, variant_key, level_key, seed_key, scene_key)
    counts: Dict[Tuple[str, str], Dict[str, int]] = {}
    for r in records:
        for level in (r[level_key], ALL):
            c = counts.setdefault((r[variant_key], level), {})
            for m in metrics:
                v = r.get(m, math.nan)
                c[m] = c.get(m, 0) + int(v is not None and not math.isnan(float(v)))
    out: Dict[Tuple[str, str], Dict[str, dict]] = {}
    for key, ms in per_seed.items():
        out[key] = {}
        for m in metrics:
            values = list(ms[m].values())
            mean, std = _mean_std(values)
            out[key][m] = {"mean": mean, "std": std, "seeds": sum(not math.isnan(x) for x in values),
                           "n": counts[key][m]}
    return out


def format_table(summary: Dict[Tuple[str, str], Dict[str, dict]], metric: str,
                 variants: Optional[Sequence[str]] = None, levels: Sequence[str] = (ALL, *QUERY_LEVELS),
                 scale: float = 100.0, digits: int = 1, title: Optional[str] = None) -> str:
    """A markdown table of one metric: rows = variants, columns = levels, cells ``mean ± std``
    (times ``scale``; "-" where absent)."""
    if variants is None:
        variants = list(dict.fromkeys(v for v, _ in summary))
    head = f"| {title or metric} | " + " | ".join(levels) + " |"
    lines = [head, "|" + "---|" * (len(levels) + 1)]
    for v in variants:
        cells = []
        for lv in levels:
            s = summary.get((v, lv), {}).get(metric)
            if s is None or math.isnan(s["mean"]):
                cells.append("-")
            else:
                cells.append(f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
