"""Pictures of an evaluation run (``pictures/`` of :mod:`.evaluate`): the relevancy of a few
(query, eval view) pairs per variant, and the map from above with ground-truth boxes and targets.
``scene``: an :class:`~.evaluate.SceneData`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import lerf_ovs, metrics

_CMAP = np.array([[0.19, 0.07, 0.23], [0.27, 0.45, 0.93], [0.10, 0.81, 0.80], [0.44, 0.99, 0.37],
                  [0.93, 0.86, 0.21], [0.98, 0.46, 0.10], [0.48, 0.02, 0.01]])  # turbo-like anchors


def colormap(x: np.ndarray) -> np.ndarray:
    """``[H, W]`` values in [0, 1] -> ``[H, W, 3]`` uint8 (blue = low, red = high)."""
    x = np.clip(np.nan_to_num(np.asarray(x, dtype=np.float64)), 0.0, 1.0) * (len(_CMAP) - 1)
    i = np.minimum(np.floor(x).astype(int), len(_CMAP) - 2)
    t = (x - i)[..., None]
    return (255 * ((1 - t) * _CMAP[i] + t * _CMAP[i + 1])).astype(np.uint8)


def _tile(img: np.ndarray, f: float):
    """``img`` ``[H, W, 3]`` uint8 resized by ``f`` (nearest up, area-averaged down) as a PIL image."""
    from PIL import Image

    im = Image.fromarray(img)
    if f == 1:
        return im
    return im.resize((int(round(im.width * f)), int(round(im.height * f))), Image.NEAREST if f > 1 else Image.BOX)


def relevancy_picture(path: Path, scene, picks: List[Tuple[int, int]],
                      maps: Dict[str, Dict[Tuple[int, int], np.ndarray]], mean_filter: int = lerf_ovs.REFERENCE_KERNEL,
                      unknown: Optional[Dict[str, Dict[Tuple[int, int], np.ndarray]]] = None) -> Path:
    """Rows: (query index, eval view index) ``picks`` of ``scene`` (:class:`~.evaluate.SceneData`);
    columns: RGB with the ground-truth boxes, ground-truth mask, then each variant's min-max
    normalised relevancy with the argmax of its map smoothed by a ``mean_filter`` px mean filter
    (green cross: a hit, red: a miss). ``unknown``: per variant and pick an ``[H, W]``
    bool mask of pixels without language supervision (:meth:`QueryEngine.known_image` < 0.5),
    drawn as grey diagonal hatching over the relevancy (the cross still follows the protocol,
    which decodes every pixel)."""
    from PIL import Image, ImageDraw

    variants = list(maps)
    frame0 = scene.eval_frames[picks[0][1]]
    H, W = frame0.masks["whole"].shape
    # Tiles 200-320 px wide: small views enlarged by whole pixels, large ones shrunk.
    f = float(math.ceil(200 / W)) if W < 200 else min(1.0, 320 / W)
    cw, ch, head = int(round(W * f)), int(round(H * f)), 14
    cols = 2 + len(variants)
    canvas = Image.new("RGB", (cols * (cw + 4), len(picks) * (ch + head + 4) + head), (255, 255, 255))
    dr = ImageDraw.Draw(canvas)
    for c, title in enumerate(["RGB + GT boxes", "GT mask"] + variants):
        dr.text((c * (cw + 4) + 2, 1), title, fill=(0, 0, 0))
    for r, (qi, vi) in enumerate(picks):
        query, frame = scene.queries[qi], scene.eval_frames[vi]
        gt_mask, boxes = metrics.view_ground_truth(frame.masks, query)
        y0 = head + r * (ch + head + 4)
        dr.text((2, y0), f"'{query['text']}' ({query['level']}) in {frame.name}", fill=(0, 0, 0))
        y0 += head
        rgb = np.asarray(frame.image)
        tile = _tile(rgb, f)
        td = ImageDraw.Draw(tile)
        for x0, y0b, x1, y1 in boxes:
            td.rectangle([x0 * f, y0b * f, (x1 + 1) * f - 1, (y1 + 1) * f - 1], outline=(255, 255, 0))
        canvas.paste(tile, (0, y0))
        gm = (0.35 * rgb + 0.65 * np.where(gt_mask[..., None], [255, 255, 255], [0, 0, 0])).astype(np.uint8)
        canvas.paste(_tile(gm, f), (cw + 4, y0))
        for c, v in enumerate(variants):
            rel = maps[v][(qi, vi)]
            lo, hi = float(rel.min()), float(rel.max())
            img = colormap((rel - lo) / max(hi - lo, 1e-12))
            unk = (unknown or {}).get(v, {}).get((qi, vi))
            if unk is not None:
                yy, xx = np.mgrid[:H, :W]
                hatch = ((xx + yy) // 2) % 3 == 0
                img = np.where(unk[..., None], np.where(hatch[..., None], 90, 170), img).astype(np.uint8)
            tile = _tile(img, f)
            hit, (x, y) = lerf_ovs.localisation_hit(rel, boxes, kernel=mean_filter)
            td = ImageDraw.Draw(tile)
            cx, cy, s = (x + 0.5) * f, (y + 0.5) * f, 5
            col = (0, 255, 0) if hit else (255, 0, 0)
            td.line([cx - s, cy - s, cx + s, cy + s], fill=col, width=2)
            td.line([cx - s, cy + s, cx + s, cy - s], fill=col, width=2)
            canvas.paste(tile, ((c + 2) * (cw + 4), y0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def topdown_picture(path: Path, scene, means: np.ndarray, colors: np.ndarray,
                    targets: Sequence[Optional[Sequence[float]]], title: str = "", px_per_m: int = 100) -> Path:
    """Top-down map (x right, y up): Gaussian centres ``[N, 3]`` coloured by ``colors`` ``[N, 3]``
    (in [0, 1]; highest drawn last, the ceiling left out), every query's ground-truth box (yellow:
    whole, cyan: part, magenta: sub-part) and its target centroid (green dot: inside the box, red:
    outside, joined to the box centre), names of the whole objects."""
    from PIL import Image, ImageDraw

    means = np.asarray(means, dtype=np.float64).reshape(-1, 3)
    colors = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    if scene.meta and "room" in scene.meta:
        rx, ry, rz = scene.meta["room"]
        lo, hi = np.array([-rx / 2, -ry / 2]), np.array([rx / 2, ry / 2])
        keep = means[:, 2] < rz - 0.15  # the ceiling would hide everything
    else:
        lo, hi = np.percentile(means[:, :2], 1, axis=0), np.percentile(means[:, :2], 99, axis=0)
        keep = means[:, 2] < np.percentile(means[:, 2], 95)
    margin = 0.3
    lo, hi = lo - margin, hi + margin
    W, H = (np.ceil((hi - lo) * px_per_m).astype(int) + 1).tolist()
    head = 16
    img = np.full((H, W, 3), 40, dtype=np.uint8)
    m, c = means[keep], colors[keep]
    order = np.argsort(m[:, 2])
    u = ((m[order, 0] - lo[0]) * px_per_m).astype(int)
    v = ((hi[1] - m[order, 1]) * px_per_m).astype(int)
    rgb = (np.clip(c[order], 0, 1) * 255).astype(np.uint8)
    # Sparse maps: each centre covers 1 px (dense) to 3 x 3 px (a few thousand Gaussians).
    r = 0 if len(m) > 0.5 * W * H else 1
    for du in range(-r, r + 1):
        for dv in range(-r, r + 1):
            uu, vv = u + du, v + dv
            ok = (uu >= 0) & (uu < W) & (vv >= 0) & (vv < H)
            img[vv[ok], uu[ok]] = rgb[ok]
    canvas = Image.new("RGB", (W, H + head), (255, 255, 255))
    canvas.paste(Image.fromarray(img), (0, head))
    dr = ImageDraw.Draw(canvas)
    dr.text((2, 1), title, fill=(0, 0, 0))

    def px(x, y):
        return (x - lo[0]) * px_per_m, head + (hi[1] - y) * px_per_m

    colour = {"whole": (255, 220, 0), "part": (0, 220, 255), "subpart": (255, 0, 255)}
    for qd, t in zip(scene.queries, targets):
        b0, b1 = np.asarray(qd["box_min"]), np.asarray(qd["box_max"])
        (x0, y1), (x1, y0) = px(b0[0], b0[1]), px(b1[0], b1[1])
        dr.rectangle([x0, y0, x1, y1], outline=colour.get(qd["level"], (255, 255, 255)))
        if qd["level"] == "whole":
            dr.text((x0 + 2, y0 + 2), qd["text"], fill=(255, 255, 255))
        if t is not None:
            cx, cy = px(t[0], t[1])
            bx, by = px((b0[0] + b1[0]) / 2, (b0[1] + b1[1]) / 2)
            hit = metrics.box_contains(t, b0, b1)
            col = (0, 255, 0) if hit else (255, 60, 60)
            if not hit:
                dr.line([cx, cy, bx, by], fill=col)
            dr.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=col)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def pick_views(scene, n: int) -> List[Tuple[int, int]]:
    """Up to ``n`` (query, eval view) pairs for the relevancy picture: levels in turn (whole, part,
    subpart, ...), each time the query whose target covers the largest fraction of some view."""
    by_level: Dict[str, List[Tuple[float, int, int]]] = {lv: [] for lv in metrics.QUERY_LEVELS}
    for qi, query in enumerate(scene.queries):
        best = None
        for vi, fr in enumerate(scene.eval_frames):
            a = float(metrics.query_mask(fr.masks[query["level"]], query["ids"]).mean())
            if a > 0 and (best is None or a > best[0]):
                best = (a, qi, vi)
        if best is not None:
            by_level.setdefault(query["level"], []).append(best)
    for v in by_level.values():
        v.sort(reverse=True)
    picks: List[Tuple[int, int]] = []
    while len(picks) < n and any(by_level.values()):
        for lv in list(by_level):
            if by_level[lv] and len(picks) < n:
                _, qi, vi = by_level[lv].pop(0)
                picks.append((qi, vi))
    return picks
