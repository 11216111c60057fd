"""Query side of CLIP-GS: list, classify and retrieve the map's objects by text, without rendering;
and the render-and-embed baseline that does render.

Objects come from the map as Gaussian index sets: query targets (``QueryTarget.indices``) or
clusters of the language field (:func:`language_clusters`). :class:`ObjectIndex` embeds them once
with the encoder; then every classification or retrieval is one matrix product with text
embeddings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch

from .encoder import ClipGSEncoder
from .objects import ObjectGaussians, canonicalize, object_from_map
from .text import TextFn
from .views import ImageTower, ViewSet, render_views, ring_cameras

__all__ = ["MapObject", "ObjectIndex", "Classification", "classify", "retrieve", "two_stage", "render_and_embed",
           "classification_metrics", "retrieval_metrics", "language_clusters"]


@dataclass
class MapObject:
    """One object of the map: its Gaussian ``indices`` ``[n]``, centroid ``[3]`` and box (metres,
    world frame), and where it came from (``source``: a query text or "cluster k")."""

    indices: np.ndarray
    centroid: np.ndarray
    box_min: np.ndarray
    box_max: np.ndarray
    source: str = ""
    field_embedding: Optional[np.ndarray] = None   # [E] unit mean of the language field over it (proposals)


@dataclass
class Classification:
    """Top-k labels of one object, best first, with cosine similarities."""

    labels: List[str]
    scores: List[float]


def classify(
    obj_emb: torch.Tensor,              # [M, E] unit object embeddings
    vocabulary: Sequence[str],
    text: TextFn,
    k: int = 5,
) -> List[Classification]:
    """Zero-shot classification: each object's ``k`` nearest vocabulary entries by cosine."""
    if len(vocabulary) == 0:
        raise ValueError("classify: empty vocabulary")
    T = text(list(vocabulary)).to(obj_emb)
    sim = obj_emb @ T.T                                                 # [M, V]
    k = min(k, len(vocabulary))
    s, i = sim.topk(k, dim=1)
    return [Classification([vocabulary[j] for j in row.tolist()], srow.tolist()) for row, srow in zip(i, s)]


def retrieve(
    obj_emb: torch.Tensor,              # [M, E]
    query: str,
    text: TextFn,
    k: int = 5,
) -> tuple:
    """Text -> objects: ``(indices [k'], scores [k'])`` of the ``k`` most similar objects
    (k' = min(k, M)), best first."""
    if obj_emb.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    q = text([query]).to(obj_emb)[0]
    s, i = (obj_emb @ q).topk(min(k, obj_emb.shape[0]))
    return i.cpu().numpy(), s.cpu().numpy()


def two_stage(
    field_sim: torch.Tensor,            # [R, C] language field: row x candidate similarity (proposes)
    clip_sim: torch.Tensor,             # [R, C] CLIP-GS: the same pairs (re-scores)
    proposals: int,
    k: int,
) -> tuple:
    """Two-stage ranking: per row, the language field proposes its ``proposals`` best candidates and
    CLIP-GS re-ranks those alone; the other candidates are never returned. Rows are queries and
    candidates objects (retrieval) or rows objects and candidates labels (classification).
    ``proposals <= 0`` or ``>= C``: CLIP-GS alone over every candidate.
    Returns ``(indices [R, k'], CLIP-GS scores [R, k'])`` best first, ``k' = min(k, proposals, C)``."""
    if field_sim.shape != clip_sim.shape:
        raise ValueError(f"two_stage: field {tuple(field_sim.shape)} and CLIP-GS {tuple(clip_sim.shape)} differ")
    C = clip_sim.shape[1]
    p = C if proposals <= 0 else min(proposals, C)
    prop = field_sim.topk(p, dim=1).indices                             # [R, p]
    s, j = clip_sim.gather(1, prop).topk(min(k, p), dim=1)              # re-score the proposals
    return prop.gather(1, j), s


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------

def classification_metrics(
    obj_emb: torch.Tensor,              # [M, E]
    true: Sequence[str],                # [M] category of each object
    vocabulary: Sequence[str],
    text: TextFn,
) -> dict:
    """Zero-shot top-1 / top-5 accuracy (fractions) of objects against ``vocabulary``."""
    vocabulary = list(vocabulary)
    missing = sorted(set(true) - set(vocabulary))
    if missing:
        raise ValueError(f"classification_metrics: true categories {missing} are not in the vocabulary")
    T = text(vocabulary).to(obj_emb)
    rank = (obj_emb @ T.T).argsort(dim=1, descending=True)             # [M, V]
    idx = torch.tensor([vocabulary.index(c) for c in true], device=rank.device)
    pos = (rank == idx[:, None]).float().argmax(dim=1)
    return {"top1": float((pos < 1).float().mean()), "top5": float((pos < 5).float().mean())}


def retrieval_metrics(
    obj_emb: torch.Tensor,              # [M, E]
    labels: Sequence[str],              # [M] caption of each object
    text: TextFn,
) -> dict:
    """Text -> object recall: every distinct caption is a query; a query hits at k when one of its
    ``k`` nearest objects carries that caption (several objects may share one, e.g. two "red mug"s).
    Returns R@1, R@5 (fractions over queries) and the number of queries."""
    queries = sorted(set(labels))
    Q = text(queries).to(obj_emb)
    rank = (Q @ obj_emb.T).argsort(dim=1, descending=True)             # [Q, M]
    lab = np.asarray(labels, dtype=object)
    r1 = r5 = 0
    for qi, q in enumerate(queries):
        top = lab[rank[qi, :5].cpu().numpy()]
        r1 += int(top[0] == q)
        r5 += int(q in set(top))
    return {"r1": r1 / len(queries), "r5": r5 / len(queries), "queries": len(queries)}


# ------------------------------------------------------------------------------------------------
# Render-and-embed baseline
# ------------------------------------------------------------------------------------------------

@torch.no_grad()
def render_and_embed(
    objs: Sequence[ObjectGaussians],    # world frame
    tower: ImageTower,
    renderer,
    views: int = 5,
    size: int = 32,
    up: Sequence[float] = (0.0, 0.0, 1.0),
    min_opacity: float = 0.05,
    view_set: Optional[ViewSet] = None,
) -> torch.Tensor:
    """``[M, E]``: each object rendered alone from ``views`` clean ring views (elevation 30 deg),
    each view embedded by the image tower, the embeddings averaged and re-normalised.

    The object is canonicalised first (all kept Gaussians, no resampling), exactly as the encoder
    sees it, so the two compare on equal terms.
    """
    dev = next(tower.parameters()).device
    vs = view_set or ring_cameras(views)
    out = []
    was = tower.training
    tower.eval()
    for o in objs:
        c = canonicalize(o.to(dev), budget=max(len(o), 1), up=up, min_opacity=min_opacity)
        imgs = render_views(renderer, c.full, vs, size)
        out.append(torch.nn.functional.normalize(tower(imgs).mean(dim=0), dim=0))
    tower.train(was)
    return torch.stack(out) if out else torch.zeros(0, tower.embed_dim, device=dev)


# ------------------------------------------------------------------------------------------------
# Objects of a map
# ------------------------------------------------------------------------------------------------

def _map_object(gmap, idx: torch.Tensor, source: str) -> MapObject:
    m = gmap.means[idx].detach()
    return MapObject(idx.cpu().numpy(), m.mean(0).cpu().numpy(), m.amin(0).cpu().numpy(), m.amax(0).cpu().numpy(), source)


@torch.no_grad()
def language_clusters(
    gmap,
    field,
    min_opacity: float = 0.05,
    similarity: float = 0.9,
    radius: float = 0.05,
    min_gaussians: int = 64,
    max_groups: int = 64,
    chunk: int = 200_000,
) -> List[MapObject]:
    """Object proposals from the language field alone (no text).

    1. Decode every Gaussian at least ``min_opacity`` opaque into the embedding space.
    2. Group the embeddings greedily: the first ungrouped Gaussian in order of descending opacity
       seeds a group, which takes every ungrouped Gaussian with cosine >= ``similarity`` to the
       group's seed (up to ``max_groups`` groups; the rest stay unassigned).
    3. Split each group into spatial connected components (Gaussians closer than ``radius``
       metres are linked; ``query.connected_components``), keep components of at least
       ``min_gaussians``.
    """
    from ..query import connected_components

    dev = gmap.means.device
    eligible = torch.nonzero(gmap.opacities.detach() >= min_opacity).squeeze(1)
    if eligible.numel() == 0:
        return []
    feats = gmap.features.detach()[eligible]
    emb = torch.cat([field.decode(feats[i:i + chunk]).float() for i in range(0, len(feats), chunk)])
    order = torch.argsort(gmap.opacities.detach()[eligible], descending=True)
    group = torch.full((len(eligible),), -1, dtype=torch.long, device=dev)
    for g in range(max_groups):
        free = order[group[order] < 0]
        if free.numel() < min_gaussians:
            break
        seed = free[0]
        members = (group < 0) & ((emb @ emb[seed]) >= similarity)
        group[members] = g
    out: List[MapObject] = []
    for g in range(int(group.max()) + 1 if (group >= 0).any() else 0):
        sel = torch.nonzero(group == g).squeeze(1)
        if sel.numel() < min_gaussians:
            continue
        comp = connected_components(gmap.means.detach()[eligible[sel]], radius)
        for c in torch.unique(comp):
            part = sel[comp == c]
            if part.numel() >= min_gaussians:
                o = _map_object(gmap, eligible[part], f"cluster {len(out)}")
                o.field_embedding = torch.nn.functional.normalize(emb[part].mean(0), dim=0).cpu().numpy()
                out.append(o)
    return out


class ObjectIndex:
    """The map's objects embedded once by a CLIP-GS encoder, for repeated text queries.

    ``objects``: :class:`MapObject` list (from query targets or :func:`language_clusters`).
    ``embeddings``: ``[M, E]`` unit vectors. ``encode_ms``: encoder time per object (ms).
    ``proposals`` > 0 with objects that carry field embeddings (language clusters): answers are
    two-stage (:func:`two_stage`: the language field proposes, CLIP-GS ranks); else CLIP-GS alone.
    """

    def __init__(self, encoder: ClipGSEncoder, gmap, objects: Sequence[MapObject], text: TextFn,
                 proposals: int = 0):
        self.encoder, self.text = encoder, text
        self.objects: List[MapObject] = list(objects)
        self.proposals = int(proposals)
        t0 = time.perf_counter()
        gs = [object_from_map(gmap, torch.as_tensor(o.indices)) for o in self.objects]
        self.embeddings = encoder.encode_objects(gs) if gs else torch.zeros(0, encoder.cfg.embed_dim, device=encoder.device)
        self.encode_ms = 1000.0 * (time.perf_counter() - t0) / max(len(gs), 1)
        # [M, E] language-field embeddings of the objects (stage one), when every object has one.
        have = bool(self.objects) and all(o.field_embedding is not None for o in self.objects)
        self.field_embeddings = (torch.as_tensor(np.stack([o.field_embedding for o in self.objects])).to(self.embeddings)
                                 if have else None)

    @property
    def two_stage(self) -> bool:
        """Whether answers are two-stage (the language field proposes, CLIP-GS re-scores)."""
        return self.proposals > 0 and self.field_embeddings is not None

    @staticmethod
    def from_targets(encoder: ClipGSEncoder, gmap, targets, text: TextFn) -> "ObjectIndex":
        """Objects = query targets (anything with ``indices``, ``centroid``, ``box_min``, ``box_max``,
        ``label``, e.g. ``query.QueryTarget``)."""
        missing = [i for i, t in enumerate(targets) if getattr(t, "indices", None) is None]
        if missing:
            raise ValueError(f"ObjectIndex.from_targets: targets {missing} carry no Gaussian indices")
        objs = [MapObject(np.asarray(t.indices), np.asarray(t.centroid), np.asarray(t.box_min),
                          np.asarray(t.box_max), getattr(t, "label", "")) for t in targets]
        return ObjectIndex(encoder, gmap, objs, text)

    @staticmethod
    def from_language_field(encoder: ClipGSEncoder, gmap, field, text: TextFn, proposals: int = 0,
                            **cluster_kw) -> "ObjectIndex":
        """Objects = :func:`language_clusters` of the map (no text needed to find them); with
        ``proposals`` > 0 answers are two-stage (:func:`two_stage`)."""
        return ObjectIndex(encoder, gmap, language_clusters(gmap, field, **cluster_kw), text, proposals)

    def classify(self, vocabulary: Sequence[str], k: int = 5) -> List[Classification]:
        """Top-``k`` labels per object; two-stage (the field proposes ``max(proposals, k)`` labels,
        CLIP-GS ranks them) when :attr:`two_stage`, else CLIP-GS alone."""
        if not self.two_stage:
            return classify(self.embeddings, vocabulary, self.text, k)
        if len(vocabulary) == 0:
            raise ValueError("classify: empty vocabulary")
        T = self.text(list(vocabulary)).to(self.embeddings)
        idx, s = two_stage(self.field_embeddings @ T.T, self.embeddings @ T.T, max(self.proposals, k), k)
        return [Classification([vocabulary[j] for j in row.tolist()], srow.tolist()) for row, srow in zip(idx, s)]

    def labelled(self, vocabulary: Sequence[str], k: int = 1) -> List[dict]:
        """What a marker publisher needs, one dict per object: ``position`` [3] (centroid, m),
        ``size`` [3] (box extent, m), ``count`` (Gaussians), ``labels`` / ``scores`` (top ``k``),
        ``text`` ("mug 0.83")."""
        out = []
        for o, c in zip(self.objects, self.classify(vocabulary, k)):
            out.append({"position": o.centroid.tolist(), "size": (o.box_max - o.box_min).tolist(),
                        "count": int(len(o.indices)), "labels": c.labels, "scores": c.scores,
                        "text": f"{c.labels[0]} {c.scores[0]:.2f}"})
        return out

    def retrieve(self, query: str, k: int = 5) -> List[tuple]:
        """``[(MapObject, CLIP-GS score)]`` best first; two-stage (the field proposes
        ``max(proposals, k)`` objects, CLIP-GS ranks them) when :attr:`two_stage`."""
        if not self.two_stage:
            idx, s = retrieve(self.embeddings, query, self.text, k)
            return [(self.objects[i], float(v)) for i, v in zip(idx, s)]
        q = self.text([query]).to(self.embeddings)
        idx, s = two_stage(q @ self.field_embeddings.T, q @ self.embeddings.T, max(self.proposals, k), k)
        return [(self.objects[i], float(v)) for i, v in zip(idx[0].tolist(), s[0].tolist())]
