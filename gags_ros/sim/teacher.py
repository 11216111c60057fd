"""Label-grounded teacher: SAM-like masks from ground truth and real text embeddings of the labels.

Stands in for SAM + CLIP where no such weights exist. The masks of a frame come from its ground-truth
instance images (``frame.masks``) with a fixed, SAM-like noise model (the simulation issue's):

- ``s = sqrt(visible pixel area of the whole object)`` in this frame;
- part and sub-part levels show the whole-object mask instead of the object's parts / sub-parts
  with probability ``clip((64 - s) / 64, 0, 0.8)`` (small, far objects are not split);
- the whole level shows the object's part masks instead with probability
  ``clip((s - 256) / 512, 0, 0.5)`` (close-ups over-segment);
- each mask is dropped with probability 0.1;
- each mask's border moves by r px, r uniform in {0, 1, 2}, outwards or inwards with equal
  probability (dilation / erosion by a (2r+1) x (2r+1) square);
- the embedding of a mask depends on the regime (``teacher.sim_regime``, docs/sim_teacher.md):

  - ``clip`` (default): CLIP's numbers. Texts and mask embeddings live in separate cones (the
    modality gap): a text is ``normalise(alpha m(text) + beta u)`` and a mask
    ``normalise(a m(label) + g u + b v + N(0, sigma^2) per dimension)``, with ``m`` the MiniLM
    embedding, ``u`` the text-cone and ``v`` the image-cone direction (fixed unit vectors). Measured
    over the small scene: cosine to the right label's text ~0.28, margin over the best canonical
    phrase ~0.05, mask-mask cosines ~0.74 (:class:`ClipRegime`);
  - ``text``: the MiniLM text embedding of its label plus N(0, 0.05^2) per dimension, then
    L2-normalised; queries are the clean MiniLM embeddings (right-label cosine ~0.7-0.9, a regime
    real CLIP never produces; kept for comparison).

Every random draw comes from its own stream ``default_rng([seed, frame key, level, object id, ...])``
(frame key: CRC-32 of ``frame.name``), so every run and every method compared sees identical noise,
whatever else is computed in between. With prompt ``points`` only masks containing a prompt survive
(as with SAM); the masks themselves do not depend on the prompts.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage

from ..core.teachers.base import LEVELS, LevelMasks
from ..core.teachers.factory import register_teacher
from ..core.types import Frame
from .scene import scene_from_meta
from .text_model import TEXT_DIM, encode_texts

_SUBST, _MASK, _EMB = 0, 1, 2  # purposes of the random streams
_UNKNOWN_LEVEL = len(LEVELS)  # stream index for masks whose output level is unknown to the embedder


@dataclass(frozen=True)
class NoiseModel:
    """Parameters of the noise model (defaults: the issue's, do not tune them to a method)."""

    whole_below_s: float = 64.0  # px; part/sub-part -> whole probability clip((64 - s) / 64, 0, max)
    whole_max: float = 0.8
    parts_above_s: float = 256.0  # px; whole -> parts probability clip((s - 256) / 512, 0, max)
    parts_scale: float = 512.0
    parts_max: float = 0.5
    drop: float = 0.1
    border_px: int = 2
    embedding_std: float = 0.05

    @staticmethod
    def off() -> "NoiseModel":
        """Exact ground-truth masks and clean label embeddings (an upper bound, for debugging)."""
        return NoiseModel(whole_max=0.0, parts_max=0.0, drop=0.0, border_px=0, embedding_std=0.0)

    def p_whole_instead(self, s: float) -> float:
        """Probability that a part / sub-part level shows the whole object (``s`` in px)."""
        return float(np.clip((self.whole_below_s - s) / self.whole_below_s, 0.0, self.whole_max))

    def p_parts_instead(self, s: float) -> float:
        """Probability that the whole level shows the object's parts (``s`` in px)."""
        return float(np.clip((s - self.parts_above_s) / self.parts_scale, 0.0, self.parts_max))


@dataclass(frozen=True)
class SimMask:
    """Provenance of one emitted mask.

    ``level``: output level; ``source`` / ``id``: the ground-truth instance it shows (level and id);
    ``whole_id``: its object; ``key``: the random-stream key of this mask (border and embedding).
    """

    level: str
    source: str
    id: int
    whole_id: int
    key: Tuple[int, ...]


REGIMES = ("clip", "text")


@dataclass(frozen=True)
class ClipRegime:
    """Mixing weights of the ``clip`` regime (docs/sim_teacher.md derives them).

    With ``m`` the unit MiniLM embedding, ``u`` / ``v`` fixed orthonormal text-cone / image-cone
    directions (random, so nearly orthogonal to every ``m``) and ``n`` ~ N(0, I):

    - text ``y``: ``normalise(text_label * m(y) + text_cone * u)`` (text_label^2 + text_cone^2 = 1);
    - mask of label ``L``: ``normalise(label * m(L) + shared * u + image_cone * v + noise_std * n)``.

    Then cos(mask, text y) ~ label * text_label * cos_m(L, y) + shared * text_cone (the norm of the
    mask vector is ~1) = 0.114 cos_m + 0.166. The right label (cos_m = 1) gets ~0.28; the canonical
    phrases (MiniLM cos_m ~0.32 at best to the scene's labels) ~0.05 less once the noise's maximum over
    four phrases is counted; other labels (cos_m ~0.26 on average, ~0.69 for the nearest) are ~0.08 /
    ~0.02 lower, so ~80 % of the masks rank their own label first among the scene's 46 texts.
    Mask-mask cosines are ~shared^2 + image_cone^2 ~0.74, above any mask-text cosine (<= 0.36): the
    modality gap. Measured values: docs/sim_teacher.md.
    """

    text_label: float = 0.714
    text_cone: float = 0.700
    label: float = 0.160
    shared: float = 0.237
    image_cone: float = 0.824
    noise_std: float = 0.025  # per dimension (384): |noise| ~0.49
    directions_seed: int = 2022  # of u and v: fixed, the same for every run and seed

    def directions(self, dim: int = TEXT_DIM) -> Tuple[np.ndarray, np.ndarray]:
        """The unit text-cone ``u`` and image-cone ``v`` directions ``[dim]`` float64 (orthogonal)."""
        g = np.random.default_rng(self.directions_seed).normal(size=(2, dim))
        q, _ = np.linalg.qr(g.T)
        return q[:, 0], q[:, 1]


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def frame_key(frame: Frame) -> int:
    """Stable 32-bit key of a frame for the random streams: CRC-32 of its name (else its index or
    ground-truth content)."""
    if frame.name:
        return zlib.crc32(frame.name.encode())
    if "index" in frame.extra:
        return int(frame.extra["index"]) & 0xFFFFFFFF
    return zlib.crc32(np.ascontiguousarray(frame.masks["whole"]).tobytes())


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _digest(mask: np.ndarray) -> bytes:
    return hashlib.blake2b(np.packbits(mask).tobytes() + str(mask.shape).encode(), digest_size=16).digest()


def _ground_truth(frame: Frame) -> Dict[str, np.ndarray]:
    if not frame.masks or any(lv not in frame.masks for lv in LEVELS):
        raise ValueError(f"frame {frame.name!r}: the simulation teacher needs ground-truth masks "
                         f"frame.masks with keys {LEVELS} (simulated datasets have them)")
    return {lv: np.asarray(frame.masks[lv]) for lv in LEVELS}


def _moved_border(inst: np.ndarray, box: Tuple[slice, slice], r: int, grow: bool) -> np.ndarray:
    """Mask ``[H, W]`` bool of the instance ``inst`` (cropped at ``box``) dilated/eroded by ``r`` px."""
    H, W = inst.shape
    out = np.zeros((H, W), dtype=bool)
    if r == 0:
        out[box] = inst[box]
        return out
    r0, r1 = max(box[0].start - r, 0), min(box[0].stop + r, H)
    c0, c1 = max(box[1].start - r, 0), min(box[1].stop + r, W)
    crop = inst[r0:r1, c0:c1].view(np.uint8)
    # A square structuring element is separable: max/min filters are the fast dilation/erosion. The
    # crop has r px of margin around the instance except at the image edge, where "nearest" stops
    # erosion: the object goes on beyond the frame.
    filt = ndimage.maximum_filter if grow else ndimage.minimum_filter
    out[r0:r1, c0:c1] = filt(crop, size=2 * r + 1, mode="nearest").view(bool)
    return out


class SimSegmenter:
    """:class:`~gags_ros.core.teachers.base.Segmenter` from ground truth with the fixed noise model.

    ``seed``: seed of every random stream (default: ``cfg.seed`` when a config is given, else 0).
    ``device``: where the returned masks live.
    """

    def __init__(self, seed: Optional[int] = None, *, cfg=None, device="cpu",
                 noise: NoiseModel = NoiseModel(), memo: int = 8, scene=None):
        self.seed = int(seed if seed is not None else (cfg.seed if cfg is not None else 0))
        self.scene = scene  # sim.scene.Scene: ray-casts ground truth for frames without masks
        self.device = torch.device(device)
        self.noise = noise
        self._memo: "OrderedDict[tuple, Dict[str, List[Tuple[SimMask, np.ndarray]]]]" = OrderedDict()
        self._memo_size = memo

    def sample(self, frame: Frame) -> Dict[str, List[Tuple[SimMask, np.ndarray]]]:
        """Every level's masks before prompt filtering: ``{level: [(SimMask, [H, W] bool), ...]}``.

        Deterministic in (seed, frame); the last few frames are memoised.
        """
        gt = self.ground_truth(frame)
        fk = frame_key(frame)
        memo_key = (fk, gt["whole"].shape, zlib.crc32(np.ascontiguousarray(gt["whole"]).tobytes()))
        hit = self._memo.get(memo_key)
        if hit is not None:
            self._memo.move_to_end(memo_key)
            return hit
        out = self._sample(gt, fk)
        self._memo[memo_key] = out
        while len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return out

    def _sample(self, gt: Dict[str, np.ndarray], fk: int) -> Dict[str, List[Tuple[SimMask, np.ndarray]]]:
        gt = {lv: g.astype(np.int64, copy=False) for lv, g in gt.items()}
        whole = gt["whole"]
        area = np.bincount(whole.ravel())
        objects = [int(o) for o in np.flatnonzero(area) if o > 0]
        boxes = {lv: ndimage.find_objects(gt[lv]) for lv in LEVELS}
        # Instances of each finer level inside each object (the ground truth is a tree, so any
        # pixel of an instance names its object).
        inside: Dict[str, Dict[int, List[int]]] = {}
        for lv in ("part", "subpart"):
            ids = gt[lv]
            sel = ids > 0
            parent = np.zeros(len(boxes[lv]) + 1, dtype=np.int64)
            parent[ids[sel]] = whole[sel]
            inside[lv] = {}
            for i, box in enumerate(boxes[lv], start=1):
                if box is not None:
                    inside[lv].setdefault(int(parent[i]), []).append(i)
        nz = self.noise
        out: Dict[str, List[Tuple[SimMask, np.ndarray]]] = {}
        for li, level in enumerate(LEVELS):
            masks: List[Tuple[SimMask, np.ndarray]] = []
            for obj in objects:
                s = float(np.sqrt(area[obj]))
                u = _rng(self.seed, fk, li, obj, _SUBST).random()
                if level == "whole":
                    shown = [("part", i) for i in inside["part"].get(obj, [])] \
                        if u < nz.p_parts_instead(s) else [("whole", obj)]
                else:
                    shown = [("whole", obj)] if u < nz.p_whole_instead(s) \
                        else [(level, i) for i in inside[level].get(obj, [])]
                for source, iid in shown:
                    key = (self.seed, fk, li, obj, LEVELS.index(source), iid)
                    r = _rng(*key, _MASK)
                    drop, radius, grow = r.random(), int(r.integers(0, nz.border_px + 1)), bool(r.random() < 0.5)
                    if drop < nz.drop:
                        continue
                    box = boxes[source][iid - 1]
                    m = _moved_border(gt[source] == iid, box, radius, grow)
                    if m.any():
                        masks.append((SimMask(level, source, iid, obj, key), m))
            out[level] = masks
        return out

    def ground_truth(self, frame: Frame) -> Dict[str, np.ndarray]:
        """The frame's instance masks per level. Frames that arrive without them (over ROS topics)
        get them ray-cast from ``scene`` at the frame's pose and intrinsics, stored in
        ``frame.masks`` so the embedder sees the same ones."""
        if not frame.masks and self.scene is not None:
            from .raycast import render

            frame.masks = render(self.scene, frame.T_world_cam, frame.intrinsics).masks
        return _ground_truth(frame)

    def segment(self, frame: Frame, points: Optional[np.ndarray] = None) -> List[LevelMasks]:
        """Three :class:`LevelMasks` (subpart, part, whole); ``points`` ``[P, 2]`` (x, y) keep only the
        masks containing at least one prompt."""
        sampled = self.sample(frame)
        H, W = self.ground_truth(frame)["whole"].shape
        if points is not None:
            pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            cols = np.clip(np.floor(pts[:, 0]).astype(np.int64), 0, W - 1)
            rows = np.clip(np.floor(pts[:, 1]).astype(np.int64), 0, H - 1)
        result = []
        for level in LEVELS:
            ms = [m for _, m in sampled[level] if points is None or m[rows, cols].any()]
            arr = np.stack(ms) if ms else np.zeros((0, H, W), dtype=bool)
            result.append(LevelMasks(torch.from_numpy(arr).to(self.device),
                                     torch.ones(len(ms), dtype=torch.float32, device=self.device)))
        return result


class SimEmbedder:
    """:class:`~gags_ros.core.teachers.base.Embedder`: mask embeddings of the labels (384-d) + noise.

    ``labels``: ``{level: {id: text}}`` (``labels.json``; ids may be strings). ``regime``: ``clip``
    or ``text`` (module doc; default ``cfg.teacher.sim_regime`` when a config is given, else
    ``clip``); ``clip``: its :class:`ClipRegime`. Each mask is traced
    back to the ground-truth instance it shows by regenerating the segmenter's masks for the frame
    (same seed and noise model; pass the ``segmenter`` to share its memo) and matching contents;
    masks changed by the caller fall back to the best-IoU instance.
    """

    dim = TEXT_DIM

    def __init__(self, labels: dict, seed: Optional[int] = None, *, cfg=None, device="cpu",
                 noise: NoiseModel = NoiseModel(), segmenter: Optional[SimSegmenter] = None,
                 text_device: str = "cpu", regime: Optional[str] = None, clip: ClipRegime = ClipRegime()):
        regime = regime or (cfg.teacher.sim_regime if cfg is not None else "clip")
        if regime not in REGIMES:
            raise ValueError(f"simulation teacher regime {regime!r}: expected one of {REGIMES}")
        self.regime = regime
        self.clip = clip
        self._u, self._v = clip.directions(self.dim)
        if not labels:
            raise ValueError("SimEmbedder needs the dataset's labels ({level: {id: text}})")
        self.labels = {lv: {int(k): str(v) for k, v in (labels.get(lv) or {}).items()} for lv in LEVELS}
        self.segmenter = segmenter or SimSegmenter(seed, cfg=cfg, device="cpu", noise=noise)
        self.seed = self.segmenter.seed
        self.noise = self.segmenter.noise
        self.device = torch.device(device)
        self.text_device = text_device

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``[T, 384]`` float32 unit-norm text embeddings (the query side; MiniLM cached per text)."""
        m = encode_texts(list(texts), self.text_device)
        if self.regime == "clip":
            c = self.clip
            m = _normalise(c.text_label * m.astype(np.float64) + c.text_cone * self._u).astype(np.float32)
        return torch.from_numpy(m).to(self.device)

    def _mask_embeddings(self, texts: Sequence[str], noise: Optional[np.ndarray]) -> np.ndarray:
        """``[M, 384]`` float64 unit mask embeddings of labels ``texts`` with ``noise`` ``[M, 384]``
        (standard normal draws, scaled here; None = clean)."""
        m = encode_texts(list(texts), self.text_device).astype(np.float64)
        if self.regime == "clip":
            c = self.clip
            x = c.label * m + c.shared * self._u + c.image_cone * self._v
            std = c.noise_std
        else:
            x, std = m, self.noise.embedding_std
        if noise is not None and std > 0:
            x = x + std * noise
        return _normalise(x)

    def label_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """``[T, 384]`` float32 noise-free mask embeddings of labels ``texts``: what a perfect
        language field carries (the text embedding itself in the ``text`` regime)."""
        return torch.from_numpy(self._mask_embeddings(texts, None).astype(np.float32)).to(self.device)

    def provenance(self, frame: Frame, masks: np.ndarray) -> List[SimMask]:
        """The :class:`SimMask` of every mask ``[M, H, W]`` bool (content match, else best IoU)."""
        by_digest: Dict[bytes, List[SimMask]] = {}
        for level in LEVELS:
            for info, m in self.segmenter.sample(frame)[level]:
                by_digest.setdefault(_digest(m), []).append(info)
        used: Dict[bytes, int] = {}
        out = []
        for m in masks:
            d = _digest(m)
            cands = by_digest.get(d)
            if cands:
                k = used.get(d, 0)
                used[d] = k + 1
                out.append(cands[min(k, len(cands) - 1)])
            else:
                out.append(self._best_match(frame, m))
        return out

    def _best_match(self, frame: Frame, m: np.ndarray) -> SimMask:
        gt = self.segmenter.ground_truth(frame)
        best, best_iou = None, -1.0
        for source in reversed(LEVELS):  # whole first: equal-IoU ties go to the coarser label
            g = gt[source]
            if g.shape != m.shape:
                rows = np.minimum(((np.arange(m.shape[0]) + 0.5) * g.shape[0] / m.shape[0]).astype(int), g.shape[0] - 1)
                cols = np.minimum(((np.arange(m.shape[1]) + 0.5) * g.shape[1] / m.shape[1]).astype(int), g.shape[1] - 1)
                g = g[rows[:, None], cols[None, :]]
            ids, inter = np.unique(g[m], return_counts=True)
            for iid, n in zip(ids, inter):
                if iid == 0:
                    continue
                iou = n / (m.sum() + (g == iid).sum() - n)
                if iou > best_iou:
                    whole = int(np.bincount(gt["whole"][gt[source] == iid]).argmax()) if source != "whole" else int(iid)
                    best, best_iou = (source, int(iid), whole), iou
        if best is None:
            raise ValueError(f"frame {frame.name!r}: a mask covers no ground-truth instance")
        source, iid, whole = best
        key = (self.seed, frame_key(frame), _UNKNOWN_LEVEL, whole, LEVELS.index(source), iid)
        return SimMask("", source, iid, whole, key)

    def embed_masks(self, frame: Frame, masks: torch.Tensor) -> torch.Tensor:
        """``[M, 384]`` float32 unit-norm noisy label embeddings of ``masks`` ``[M, H, W]`` bool."""
        m = masks.detach().to("cpu").numpy().astype(bool, copy=False)
        infos = self.provenance(frame, m)
        noise = np.stack([_rng(*i.key, _EMB).normal(0.0, 1.0, self.dim) for i in infos]) if infos else None
        emb = self._mask_embeddings([self.labels[i.source][i.id] for i in infos], noise)
        return torch.from_numpy(emb.astype(np.float32)).to(self.device)


def make_sim_teacher(labels: dict, seed: int = 0, device="cpu", noise: NoiseModel = NoiseModel(),
                     regime: str = "clip") -> Tuple[SimSegmenter, SimEmbedder]:
    """A segmenter and an embedder sharing one memo of sampled masks."""
    seg = SimSegmenter(seed, device=device, noise=noise)
    return seg, SimEmbedder(labels, device=device, segmenter=seg, regime=regime)


@torch.no_grad()
def embedding_statistics(embedder: SimEmbedder, frames: Sequence[Frame], canonical: Sequence[str],
                         max_pairs_masks: int = 2000) -> Dict[str, float]:
    """CLIP-comparable statistics of ``embedder``'s mask embeddings over ``frames`` (with masks).

    Per mask (every level's masks, label = the instance it shows), against the query-side text
    embeddings of every distinct label text and of ``canonical``:

    - ``pos_cos_mean``: mean cosine to its own label's text;
    - ``canon_margin_mean``: mean of (own-label cosine - best canonical phrase's cosine);
    - ``other_margin_mean`` / ``nearest_other_margin_mean``: mean of (own-label cosine - the mean /
      the best cosine over the other label texts);
    - ``top1_accuracy``: fraction of masks whose best label text is their own;
    - ``mask_mask_cos_mean``: mean cosine between two different masks (up to ``max_pairs_masks``
      masks, evenly spread) and ``mask_text_cos_max``: the largest mask-text cosine seen; a
      modality gap is ``mask_mask_cos_mean > mask_text_cos_max``;
    - ``masks``: how many masks were measured.
    """
    texts = sorted({t for lv in LEVELS for t in embedder.labels[lv].values()})
    col = {t: i for i, t in enumerate(texts)}
    T = embedder.embed_text(texts).double().cpu()
    C = embedder.embed_text(list(canonical)).double().cpu()
    pos, canon, other, nearest, top1, embs = [], [], [], [], [], []
    for frame in frames:
        masks = torch.cat([lv.masks for lv in embedder.segmenter.segment(frame)])
        if masks.shape[0] == 0:
            continue
        infos = embedder.provenance(frame, masks.cpu().numpy())
        E = embedder.embed_masks(frame, masks).double().cpu()
        right = torch.tensor([col[embedder.labels[i.source][i.id]] for i in infos])
        S = E @ T.T
        p = S.gather(1, right[:, None])[:, 0]
        rest = S.scatter(1, right[:, None], float("nan"))
        pos.append(p)
        canon.append(p - (E @ C.T).max(1).values)
        other.append(p - rest.nanmean(1))
        nearest.append(p - rest.nan_to_num(-2.0).max(1).values)
        top1.append((S.argmax(1) == right).double())
        embs.append(E)
    if not pos:
        raise ValueError("no masks in the given frames")
    E = torch.cat(embs)
    sub = E[torch.linspace(0, len(E) - 1, min(len(E), max_pairs_masks)).round().long().unique()]
    G = sub @ sub.T
    off = ~torch.eye(len(sub), dtype=torch.bool)
    cat = lambda xs: torch.cat(xs).mean().item()  # noqa: E731
    return {"pos_cos_mean": cat(pos), "canon_margin_mean": cat(canon), "other_margin_mean": cat(other),
            "nearest_other_margin_mean": cat(nearest), "top1_accuracy": cat(top1),
            "mask_mask_cos_mean": G[off].mean().item() if len(sub) > 1 else float("nan"),
            "mask_text_cos_max": (E @ torch.cat([T, C]).T).max().item(), "masks": float(len(E))}


def build_sim_teacher(cfg, device, labels: Optional[dict] = None) -> Tuple["SimSegmenter", "SimEmbedder"]:
    """The teacher ``teacher.segmenter = "sim"`` (registered as ``sim`` in the core's teacher
    registry, :mod:`gags_ros.core.teachers.factory`): :class:`SimSegmenter` + :class:`SimEmbedder`
    (which shares the segmenter's memo), with the configured noise and regime. ``labels``: the
    dataset's ``labels.json`` content; default (and the scene) read from ``teacher.sim_dataset``."""
    scene = None
    if cfg.teacher.sim_dataset:
        root = Path(cfg.teacher.sim_dataset).expanduser()
        if labels is None:
            labels = json.loads((root / "labels.json").read_text())
        scene = scene_from_meta(json.loads((root / "scene.json").read_text()))
    if labels is None:
        raise ValueError("teacher.segmenter='sim' needs the dataset's labels: set teacher.sim_dataset "
                         "to the simulated dataset folder (labels.json, scene.json)")
    noise = NoiseModel(embedding_std=float(cfg.teacher.sim_embedding_std))
    segmenter = SimSegmenter(cfg=cfg, device=device, scene=scene, noise=noise)
    embedder = SimEmbedder(labels, cfg=cfg, device=device, segmenter=segmenter, regime=cfg.teacher.sim_regime)
    return segmenter, embedder


register_teacher("sim", build_sim_teacher)
