"""Where a 3D answer is lost: the 3D label oracle answered by the real query engine, and the first
stage of the query engine at which a query's right answer is lost (the answers issue, item 4).

**3D label oracle** (:func:`label_oracle_3d`). At each query level every Gaussian carries the
clean embedding of the ground-truth label it renders into most over a set of views
(:func:`.selection.label_votes`, :func:`.selection.vote_winners`), and the unchanged
:class:`~gags_ros.core.query.QueryEngine` answers from that: the map is a shallow copy of the real
one whose ``features`` are those ``[N, D]`` embeddings, and :class:`OracleField` gives the engine
the two things it uses of a language field (``embed_dim`` and ``dot_plan``), with the latents
being the embeddings themselves. So the oracle measures the engine's extraction given a perfect
field, on the real map's geometry, opacities and coverage.

- Label embeddings come from the engine's own text encoder (``engine.encode``): the query space.
  In the ``clip`` simulation regime a mask embedding is not a text embedding (the modality gap,
  :class:`.teacher.ClipRegime`); ``encode_labels`` (e.g. the teacher's ``label_embeddings``)
  gives the field a perfectly distilled teacher would carry instead.
- A Gaussian mostly outside every labelled instance, or never seen by the views, carries the
  embedding of the first canonical phrase (``query.canonical_phrases[0]``). Its relevancy to any
  query q is then ``sigmoid(T (c.q - 1))``, near 0: what a perfect field says of unlabelled
  stuff, as the 2D oracle's background pixels (relevancy 0). It is not marked unknown: the
  oracle map keeps the real map's coverage records, so the coverage gate removes exactly the
  Gaussians it removes for the field, and the two differ only in the features.

**Stages** (:func:`query_stages`), following ../shared/docs/ANSWERS_EVIDENCE.md, per query the
first of:

- ``eligible``: no Gaussian inside any ground-truth box passes the opacity / coverage gate;
- ``threshold``: the relevancy threshold selects no Gaussian inside a box;
- ``cleanup``: (``targets=cluster``) the neighbour cleanup drops every selected in-box Gaussian;
- ``cluster``: no target is located in a box, and no target's relevancy peak is in one (the in-box
  Gaussians joined a target that peaks elsewhere, or, ``targets=peak``, were suppressed);
- ``location``: a target's peak is in a box but its location (mean of the Gaussians within
  ``peak_radius`` of the peak) is outside;
- ``ranking``: a target located in a box exists but is not first;
- ``score``: the first target is in a box but scores below ``min_score`` ("not found");
- ``hit``: the first target is located inside a box.

A box is one of the query's ``boxes`` (``[min[3], max[3]]`` per correct instance) when given,
else its ``box_min`` / ``box_max``; inside is inclusive, as :func:`.metrics.box_contains`. The
stages are recomputed from the engine's public pieces (``known``, ``gaussian_relevancy``,
:func:`~gags_ros.core.query.cleanup_mask`, its config) and one ``engine.query`` call gives the
targets; each record says whether the engine's own selected / kept counts agree
(``consistent``), so a drift between this copy and the engine shows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..core import query as q
from .selection import label_votes, vote_winners

__all__ = ["LabelOracle", "OracleField", "STAGES", "answer_rows", "bench_rows", "label_oracle_3d",
           "oracle_from_winners", "oracle_stages", "pipeline_oracle", "query_boxes", "query_stages", "summarise_stages",
           "with_features"]

STAGES = ("eligible", "threshold", "cleanup", "cluster", "location", "ranking", "score", "hit")


# ------------------------------------------------------------------------------------------------
# The oracle
# ------------------------------------------------------------------------------------------------
class OracleField:
    """What :class:`~gags_ros.core.query.QueryEngine` uses of a language field, for latents that
    are unit embeddings already: ``embed_dim`` = D, and ``dot_plan(vecs [V, D]) -> (f [n, D] ->
    f @ vecs.T [n, V])``. Float32 whatever ``dtype`` asks (no decoder to run in low precision)."""

    def __init__(self, embed_dim: int):
        self.embed_dim = int(embed_dim)

    def dot_plan(self, vecs: torch.Tensor, dtype: Optional[torch.dtype] = None) -> Callable:
        v = vecs.detach().to(torch.float32)

        def plan(f: torch.Tensor) -> torch.Tensor:
            return f.to(torch.float32) @ v.to(f.device).T

        return plan


def with_features(gaussians, features: torch.Tensor):
    """A shallow copy of the map ``gaussians`` whose ``features`` are ``features`` ``[N, D]``:
    every other entry (geometry, coverage records) is the same tensor, so the copy costs the
    features only and the real map is untouched."""
    if features.shape[0] != len(gaussians):
        raise ValueError(f"{features.shape[0]} feature rows for a map of {len(gaussians)} Gaussians")
    out = copy.copy(gaussians)
    params = {k: v for k, v in gaussians.params.items() if k != "features"}
    params["features"] = torch.nn.Parameter(features.detach().float(), requires_grad=False)
    out.params = torch.nn.ParameterDict(params)
    out.records = dict(getattr(gaussians, "records", {}))
    return out


@dataclass
class LabelOracle:
    """Per query level, a map whose Gaussians carry their ground-truth label's embedding."""

    maps: Dict[str, object]           # level -> shallow copy of the map, features [N, D]
    field: OracleField
    winners: Dict[str, np.ndarray]    # level -> [N] int64 instance id each Gaussian renders into most (0: none)

    def query(self, engine, texts: Sequence[str], level: str, **kw) -> List[q.QueryResult]:
        """``engine.query`` on the level's oracle map (``kw``: max_targets, min_score, ...)."""
        return engine.query(self.maps[level], self.field, list(texts), **kw)


def oracle_from_winners(engine, gaussians, winners: Dict[str, np.ndarray], labels: dict,
                        encode_labels: Optional[Callable] = None) -> LabelOracle:
    """The oracle from each level's ``[N]`` winning instance id (0 = none) and ``labels``
    (``{level: {id: text}}``, ids may be strings). ``encode_labels(texts) -> [T, D]`` unit label
    embeddings (default: ``engine.encode``, the query space)."""
    dev = gaussians.params["means"].device
    encode = encode_labels or (lambda texts: engine.encode(texts, dev))
    background = engine.canonical(dev)[0].float()                       # [D]
    D = int(background.shape[0])
    maps, wins = {}, {}
    for lv, win in winners.items():
        win = np.asarray(win, dtype=np.int64)
        names = {int(k): str(v) for k, v in (labels.get(lv) or {}).items()}
        feats = background.expand(len(gaussians), D).clone()            # [N, D]
        win = np.where(np.isin(win, list(names)), win, 0)               # unlabelled ids: background
        ids = sorted(set(win[win > 0].tolist()))
        if ids:
            emb = torch.nn.functional.normalize(
                torch.as_tensor(encode([names[i] for i in ids])).float().to(dev), dim=-1)   # [I, D]
            row = torch.as_tensor(np.searchsorted(ids, win[win > 0]), device=dev)
            feats[torch.as_tensor(np.flatnonzero(win > 0), device=dev)] = emb[row]
        maps[lv] = with_features(gaussians, feats)
        wins[lv] = win
    return LabelOracle(maps, OracleField(D), wins)


def label_oracle_3d(engine, renderer, gaussians, frames, labels: dict, levels: Optional[Sequence[str]] = None,
                    encode_labels: Optional[Callable] = None) -> LabelOracle:
    """The 3D label oracle of ``gaussians``: per level of ``levels`` (default: those of
    ``labels``), each Gaussian's label is the instance it renders into most over ``frames``
    (views with ``masks``, ``T_world_cam``, ``intrinsics``; e.g. the map's keyframes), by blend
    weight (:func:`.selection.label_votes`: one render and backward pass per view and level)."""
    winners = {}
    for lv in (levels or sorted(labels)):
        ids = sorted(int(k) for k in (labels.get(lv) or {}))
        win = np.zeros(len(gaussians), dtype=np.int64)
        if ids:
            col = vote_winners(label_votes(renderer, gaussians, frames, lv, ids))   # [N], -1: none
            win[col >= 0] = np.asarray(ids, dtype=np.int64)[col[col >= 0]]
        winners[lv] = win
    return oracle_from_winners(engine, gaussians, winners, labels, encode_labels)


# ------------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------------
def query_boxes(query: dict) -> np.ndarray:
    """``[B, 2, 3]`` float64 boxes (min, max; metres) of the correct instances of ``query``: its
    ``boxes`` when present, else ``[box_min, box_max]``."""
    b = query.get("boxes")
    if b is None or len(b) == 0:
        b = [[query["box_min"], query["box_max"]]]
    return np.asarray(b, dtype=np.float64).reshape(-1, 2, 3)


def _inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``[P]`` bool: ``points`` ``[P, 3]`` inside (inclusive) any of ``boxes`` ``[B, 2, 3]``."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 1, 3)
    return ((p >= boxes[None, :, 0]) & (p <= boxes[None, :, 1])).all(axis=2).any(axis=1)


def query_stages(engine, gaussians, field, queries: Sequence[dict], max_targets: Optional[int] = None,
                 min_score: float = 0.0, coverage_mode: Optional[str] = None) -> List[dict]:
    """One record per query (``{"text", "level", "stage", ...}``, JSON-ready): the first stage
    (:data:`STAGES`, module doc) at which ``engine`` loses the right answer on ``gaussians`` with
    ``field``, at ``engine.cfg``.

    ``max_targets``: targets asked of the engine (default: every candidate with
    ``targets=cluster``, whose order does not depend on it; ``cfg.max_targets`` with
    ``targets=peak``, whose candidate pool does). ``min_score``: the cut of the ``score`` stage
    (0: none, as the answers benchmark asks). Counts in a record: Gaussians inside a box
    (``inbox``), of those opaque enough, eligible (opaque and known), selected, kept by the
    cleanup; ``selected`` / ``kept`` over the map; ``rank`` of the first target located in a box
    (None: none); ``first`` = the first target's location and score; ``targets``: how many the
    engine returned, ``reason`` its reason when none; ``consistent``: the engine's selected / kept
    counts equal the recomputed ones."""
    cfg = engine.cfg
    texts = [x["text"] for x in queries]
    N = len(gaussians)
    if max_targets is None:
        max_targets = max(N, 1) if cfg.targets == "cluster" else cfg.max_targets
    answers = engine.query(gaussians, field, texts, max_targets=max_targets, min_score=0.0,
                           coverage_mode=coverage_mode)
    with torch.no_grad():
        means_t = gaussians.params["means"].detach()
        opaque = gaussians.opacities.detach() >= cfg.min_opacity
        known = engine.known(gaussians, coverage_mode)
        ok = opaque if known is None else opaque & known
        eligible = ok.nonzero(as_tuple=True)[0]
        raw = torch.zeros(0, len(texts))
        if eligible.numel() and texts:
            index = None if eligible.numel() == N else eligible       # as the engine: all = no gather
            dev = gaussians.features.device
            raw = engine.gaussian_relevancy(gaussians, field, engine.encode(texts, dev), index)   # [n, T]
            lo, hi = raw.amin(dim=0), raw.amax(dim=0)
            norm = ((raw - lo) / (hi - lo).clamp_min(1e-12)).cpu().numpy()
            raw = raw.cpu()
    means = means_t.double().cpu().numpy()
    opaque, elig = opaque.cpu().numpy(), eligible.cpu().numpy()
    out = []
    for t, (qry, res) in enumerate(zip(queries, answers)):
        inbox = _inside(means, query_boxes(qry))                        # [N]
        rec = {"text": qry["text"], "level": qry.get("level", ""), "inbox": int(inbox.sum()),
               "inbox_opaque": int((inbox & opaque).sum()), "inbox_eligible": int(inbox[elig].sum()),
               "selected": 0, "inbox_selected": 0, "kept": 0, "inbox_kept": 0, "rank": None,
               "first": None, "targets": len(res.targets), "reason": res.reason}
        if res.targets:
            rec["first"] = {"loc": [float(v) for v in res.targets[0].centroid], "score": float(res.targets[0].score)}
        if elig.size:
            sel = np.flatnonzero(norm[:, t] > cfg.threshold)            # rows of the eligible
            in_sel = inbox[elig[sel]]
            kept = np.ones(sel.size, dtype=bool)
            if cfg.targets == "cluster" and sel.size:
                kept = q.cleanup_mask(means_t.index_select(0, torch.as_tensor(elig[sel], device=means_t.device)),
                                      cfg.neighbour_radius, cfg.keep_neighbours, cfg.drop_neighbours).cpu().numpy()
            rec.update(selected=int(sel.size), inbox_selected=int(in_sel.sum()), kept=int(kept.sum()),
                       inbox_kept=int((in_sel & kept).sum()))
        rec["consistent"] = res.selected == rec["selected"] and res.kept == rec["kept"]
        stage = None
        if rec["inbox_eligible"] == 0:
            stage = "eligible"
        elif rec["inbox_selected"] == 0:
            stage = "threshold"
        elif rec["inbox_kept"] == 0:
            stage = "cleanup"
        if stage is None:
            located = [bool(_inside(tg.centroid, query_boxes(qry))[0]) for tg in res.targets]
            if any(located):
                rec["rank"] = located.index(True)
                stage = "ranking" if rec["rank"] > 0 else ("score" if res.targets[0].score < min_score else "hit")
            else:
                full = np.full(N, -np.inf)
                full[elig] = raw[:, t].numpy()
                peaks = [int(tg.indices[np.argmax(full[tg.indices])]) for tg in res.targets if tg.indices.size]
                stage = "location" if any(inbox[p] for p in peaks) else "cluster"
        rec["stage"] = stage
        out.append(rec)
    return out


def oracle_stages(oracle: LabelOracle, engine, queries: Sequence[dict], **kw) -> List[dict]:
    """:func:`query_stages` of each query on its level's oracle map, in the order of ``queries``."""
    out: List[Optional[dict]] = [None] * len(queries)
    for lv in sorted({x["level"] for x in queries}):
        rows = [i for i, x in enumerate(queries) if x["level"] == lv]
        for i, rec in zip(rows, query_stages(engine, oracle.maps[lv], oracle.field, [queries[i] for i in rows], **kw)):
            out[i] = rec
    return out


def summarise_stages(records: Sequence[dict]) -> Dict[str, Dict[str, int]]:
    """``{level or "all": {stage: count, ..., "queries": n}}`` over stage records."""
    out: Dict[str, Dict[str, int]] = {}
    for rec in records:
        for key in ("all", rec["level"]):
            d = out.setdefault(key, {**{s: 0 for s in STAGES}, "queries": 0})
            d[rec["stage"]] += 1
            d["queries"] += 1
    return out


# ------------------------------------------------------------------------------------------------
# The answers benchmark
# ------------------------------------------------------------------------------------------------
def answer_rows(results: Sequence[q.QueryResult]) -> List[List[dict]]:
    """Per result, its targets as ``{"loc": [3] metres, "score"}`` (the answers benchmark's rows)."""
    return [[{"loc": [float(v) for v in t.centroid], "score": float(t.score)} for t in r.targets] for r in results]


def bench_rows(pipeline, labels: dict, queries: Sequence[dict], absent: Sequence[str], max_targets: int = 3,
               oracle: Optional[LabelOracle] = None) -> dict:
    """The answers benchmark's oracle and stage rows of one streamed map of a scene with ``labels``
    (``{level: {id: text}}``) and ``queries``, at the engine's config:

    - ``oracle3d``: ``{"present": [per query: targets], "absent": [...]}`` of the 3D label oracle
      (votes over the map's keyframes, which carry the dataset's masks; or ``oracle`` when given,
      e.g. rebuilt by :func:`oracle_from_winners` for a saved map), the shape of the field's
      answers (``max_targets``, min_score 0); absent texts are asked of the whole-level oracle;
    - ``stages`` / ``oracle3d_stages``: :func:`query_stages` records of the field and the oracle."""
    eng, g = pipeline.query_engine, pipeline.mapper.gaussians
    if oracle is None:
        oracle = pipeline_oracle(pipeline, labels, queries)
    present: List[Optional[list]] = [None] * len(queries)
    for lv in sorted({x["level"] for x in queries}):
        rows = [i for i, x in enumerate(queries) if x["level"] == lv]
        res = oracle.query(eng, [queries[i]["text"] for i in rows], lv, max_targets=max_targets, min_score=0.0)
        for i, r in zip(rows, answer_rows(res)):
            present[i] = r
    absent_rows = answer_rows(oracle.query(eng, list(absent), "whole", max_targets=max_targets, min_score=0.0)) \
        if absent else []
    return {"oracle3d": {"present": present, "absent": absent_rows},
            "stages": query_stages(eng, g, pipeline.distiller.field, queries),
            "oracle3d_stages": oracle_stages(oracle, eng, queries)}


def pipeline_oracle(pipeline, labels: dict, queries: Sequence[dict]) -> LabelOracle:
    """The 3D label oracle of a streamed pipeline's map, voted over its keyframes, at the levels of
    ``queries`` and "whole" (the absent-object queries' level)."""
    frames = [kf.frame for kf in pipeline.mapper.keyframes]
    return label_oracle_3d(pipeline.query_engine, pipeline.renderer, pipeline.mapper.gaussians, frames, labels,
                           sorted({x["level"] for x in queries} | {"whole"}))
