"""Text queries against the language map: relevancy, 3D targets, and the LERF 2D protocol.

Relevancy (LERF / LangSplat, GAGS section 3) of a unit embedding phi to a query q with canonical
phrases c (``QueryConfig.canonical_phrases``) at temperature T:

    r = min_c exp(T phi.q) / (exp(T phi.q) + exp(T phi.c)) = sigmoid(T (phi.q - max_c phi.c))

(the right-hand form is the same number, computed without overflow).

3D query (:meth:`QueryEngine.query`), per text, all on the map's device:

1. decode the latent of every Gaussian at least ``min_opacity`` opaque, ``chunk_size`` at a time
   (bfloat16 autocast on CUDA by default, see ``decode_precision``), relevancy per Gaussian;
2. min-max normalise over those Gaussians, select the ones above ``threshold``;
3. radius-neighbour cleanup among the selected (``neighbour_radius``): a Gaussian with more than
   ``keep_neighbours`` selected neighbours is a core point and kept; fewer than ``drop_neighbours``:
   dropped; in between (a border point): kept only when a core point lies within the radius, so
   the fringe of a dense object survives and sparse speckle between objects does not (DBSCAN's
   border rule);
4. targets = connected components of the kept Gaussians linked when closer than
   ``cluster_radius`` (exact single linkage); per target the mean raw relevancy (score), centroid
   and axis-aligned box of the Gaussian centres (metres, world frame), its Gaussian indices;
   best score first, at least ``min_score``, at most ``max_targets``.

Neighbour searches hash the points into cubic cells and bound each count from the cells before
measuring any distance, so only the few undecided points pay for exact pair distances; connected
components use hook-and-jump label propagation. Everything is torch: the same code answers on CPU
and GPU (the GPU meets the latency target on 1M Gaussians; see bench/query.py).

2D: :meth:`QueryEngine.relevancy_image` renders the latents of any camera view and decodes them;
:func:`localisation_hit`, :func:`segmentation_mask` and :func:`iou` implement the evaluation
protocol (30x30 mean filter; R' = 0.5 (R + mean30(R)), min-max, > 0.4, 7x7 majority).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .language.field import autocast_dtype, render_channels
from .language.losses import box_mean

__all__ = [
    "QueryEngine", "QueryResult", "QueryTarget", "cleanup_mask", "connected_components", "iou",
    "localisation_hit", "mean_filter", "relevancy", "segmentation_mask",
]

MAX_PAIRS = 1 << 24  # (point, candidate) pairs measured at once: bounds the memory of a search


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------
@dataclass
class QueryTarget:
    """One 3D answer to a text (metres, world frame)."""

    label: str                 # the query text
    score: float               # mean raw relevancy of its Gaussians, in [0, 1]
    centroid: np.ndarray       # [3] mean of its Gaussian centres
    box_min: np.ndarray        # [3] axis-aligned box of its Gaussian centres
    box_max: np.ndarray        # [3]
    indices: np.ndarray        # [count] int64 Gaussian indices into the map
    count: int


@dataclass
class QueryResult:
    """Answer to one text: ``targets`` best first; ``reason`` says why it is empty (or "")."""

    text: str
    targets: List[QueryTarget] = field(default_factory=list)
    reason: str = ""
    selected: int = 0          # Gaussians above the threshold
    kept: int = 0              # ... after the neighbour cleanup
    timings: Dict[str, float] = field(default_factory=dict)  # seconds


# ------------------------------------------------------------------------------------------------
# Relevancy
# ------------------------------------------------------------------------------------------------
def relevancy(phi: torch.Tensor, queries: torch.Tensor, canonical: torch.Tensor,
              temperature: float = 10.0) -> torch.Tensor:
    """``[..., D]`` unit embeddings, ``[T, D]`` unit queries, ``[C, D]`` unit canonical phrases ->
    ``[..., T]`` relevancy in (0, 1)."""
    phi = phi.float()
    a = phi @ queries.float().T                               # [..., T]
    b = (phi @ canonical.float().T).amax(dim=-1, keepdim=True)  # [..., 1]
    return torch.sigmoid(temperature * (a - b))


# ------------------------------------------------------------------------------------------------
# Spatial hashing, neighbour cleanup, connected components
# ------------------------------------------------------------------------------------------------
def _offsets(reach: int, device) -> torch.Tensor:
    r = torch.arange(-reach, reach + 1, device=device)
    return torch.cartesian_prod(r, r, r)                      # [(2 reach + 1)^3, 3]


class _Grid:
    """Points ``[N, 3]`` hashed into cubic cells of side ``cell``; ``reach`` = the largest cell
    offset that will be looked up."""

    def __init__(self, pts: torch.Tensor, cell: float, reach: int = 2):
        dev = pts.device
        self.n = pts.shape[0]
        lo = pts.min(dim=0).values
        ijk = torch.floor((pts - lo) / cell).long() + reach    # margin: offsets stay >= 0
        self.dims = ijk.max(dim=0).values + reach + 1
        key = self._key(ijk)
        self.order = torch.argsort(key)                        # point indices sorted by cell
        skey = key[self.order]
        self.keys, self.counts = torch.unique_consecutive(skey, return_counts=True)   # [C]
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.num_cells = int(self.keys.shape[0])
        cell_sorted = torch.repeat_interleave(torch.arange(self.num_cells, device=dev), self.counts)
        self.cell_of = torch.empty(self.n, dtype=torch.long, device=dev)
        self.cell_of[self.order] = cell_sorted                 # [N] cell of each point
        self.cell_ijk = ijk[self.order[self.starts]]           # [C, 3]

    def _key(self, ijk: torch.Tensor) -> torch.Tensor:
        return (ijk[..., 0] * self.dims[1] + ijk[..., 1]) * self.dims[2] + ijk[..., 2]

    def neighbour_cells(self, offsets: torch.Tensor) -> torch.Tensor:
        """``[C, O]`` index of the occupied cell at each offset of each cell, -1 where empty."""
        nkey = self._key(self.cell_ijk[:, None, :] + offsets[None])
        pos = torch.searchsorted(self.keys, nkey).clamp_max(self.num_cells - 1)
        return torch.where(self.keys[pos] == nkey, pos, torch.full_like(pos, -1))

    def cell_counts(self, cells: torch.Tensor) -> torch.Tensor:
        """Points in each of ``cells`` (any shape, -1 = none -> 0)."""
        return torch.where(cells >= 0, self.counts[cells.clamp_min(0)], torch.zeros_like(cells))


def _chunk_edges(cum: torch.Tensor, max_pairs: int) -> List[int]:
    """Split items with inclusive cumulative pair counts ``cum`` ``[Q]`` (CPU) into runs of about
    ``max_pairs`` pairs (an item larger than that gets a run of its own): ``[0, ..., Q]``."""
    Q, total = int(cum.shape[0]), int(cum[-1])
    if total <= max_pairs:
        return [0, Q]
    bounds = torch.searchsorted(cum, torch.arange(max_pairs, total, max_pairs), right=True).tolist()
    return sorted(set([0] + [b for b in bounds if 0 < b < Q] + [Q]))


def _enumerate(grid: _Grid, query: torch.Tensor, cand_cells: torch.Tensor, max_pairs: int):
    """Yield ``(q_pos, j)`` chunks: every point ``j`` of the candidate cells ``cand_cells`` ``[Q, O]``
    of query point positions ``q_pos`` (indices into ``query`` ``[Q]``)."""
    Q, O = cand_cells.shape
    if Q == 0:
        return
    cnt = grid.cell_counts(cand_cells)                        # [Q, O]
    per_q = cnt.sum(dim=1)
    cum = torch.cumsum(per_q, 0).cpu()
    total = int(cum[-1])
    if total == 0:
        return
    edges = _chunk_edges(cum, max_pairs)
    dev = cand_cells.device
    for s, e in zip(edges[:-1], edges[1:]):
        c = cnt[s:e].reshape(-1)
        cells = cand_cells[s:e].reshape(-1)
        n = int(cum[e - 1] - (cum[s - 1] if s > 0 else 0))
        if n == 0:
            continue
        seg = torch.repeat_interleave(torch.arange(c.shape[0], device=dev), c, output_size=n)
        first = torch.cumsum(c, 0) - c
        local = torch.arange(n, device=dev) - first[seg]
        j = grid.order[grid.starts[cells[seg]] + local]
        yield s + torch.div(seg, O, rounding_mode="floor"), j


def cleanup_mask(pts: torch.Tensor, radius: float, keep: int, drop: int,
                 max_pairs: int = MAX_PAIRS) -> torch.Tensor:
    """Radius-neighbour cleanup of ``pts`` ``[S, 3]`` -> ``[S]`` bool kept.

    Neighbours: other points within ``radius`` (inclusive). Core: > ``keep`` neighbours (kept);
    noise: < ``drop`` (dropped); border (in between): kept when a core point is a neighbour.
    ``radius <= 0`` disables the cleanup (everything kept).
    """
    S = pts.shape[0]
    dev = pts.device
    if S == 0 or radius <= 0:
        return torch.ones(S, dtype=torch.bool, device=dev)
    # Cells whose diagonal is below the radius: a point's own cell holds only neighbours (lower
    # bound), and every neighbour lies within 2 cells per axis (upper bound from 125 cells).
    grid = _Grid(pts, radius / math.sqrt(3.0) * (1.0 - 1e-6), reach=2)
    nb = grid.neighbour_cells(_offsets(2, dev))               # [C, 125]
    upper_cell = grid.cell_counts(nb).sum(dim=1) - 1
    lower = grid.counts[grid.cell_of] - 1                     # [S]
    upper = upper_cell[grid.cell_of]
    core = lower > keep
    undecided = ~core & (upper >= drop)
    count = lower.clone()
    r2 = radius * radius
    und = undecided.nonzero(as_tuple=True)[0]
    if und.numel():
        cnt = torch.zeros(und.shape[0], dtype=torch.long, device=dev)
        for qp, j in _enumerate(grid, und, nb[grid.cell_of[und]], max_pairs):
            i = und[qp]
            close = ((pts[i] - pts[j]).pow(2).sum(-1) <= r2) & (i != j)
            cnt.index_add_(0, qp[close], torch.ones_like(qp[close]))
        count[und] = cnt
        core[und] = cnt > keep
    border = undecided & ~core & (count >= drop)
    keep_mask = core.clone()
    bidx = border.nonzero(as_tuple=True)[0]
    if bidx.numel():
        hit = torch.zeros(bidx.shape[0], dtype=torch.bool, device=dev)
        for qp, j in _enumerate(grid, bidx, nb[grid.cell_of[bidx]], max_pairs):
            i = bidx[qp]
            ok = core[j] & ((pts[i] - pts[j]).pow(2).sum(-1) <= r2)
            hit[qp[ok]] = True
        keep_mask[bidx] = hit
    return keep_mask


def _union_find(n: int, u: torch.Tensor, v: torch.Tensor, parent: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Connected components of ``n`` nodes and edges ``(u, v)`` by hooking roots onto the smaller
    root and pointer jumping. Returns ``[n]`` the smallest node id of each node's component."""
    if parent is None:
        parent = torch.arange(n, device=u.device)
    if u.numel() == 0:
        return parent
    while True:
        pu, pv = parent[u], parent[v]
        m = torch.minimum(pu, pv)
        new = parent.clone()
        new.scatter_reduce_(0, pu, m, reduce="amin")
        new.scatter_reduce_(0, pv, m, reduce="amin")
        while True:
            jumped = new[new]
            if torch.equal(jumped, new):
                break
            new = jumped
        if torch.equal(new, parent):
            return parent
        parent = new


def connected_components(pts: torch.Tensor, radius: float, max_pairs: int = MAX_PAIRS) -> torch.Tensor:
    """Single-linkage components of ``pts`` ``[K, 3]``: points closer than ``radius`` (inclusive)
    share a component. Returns ``[K]`` int64 labels ``0 .. n-1``.

    Cells have a diagonal below ``radius``, so a cell's points form one component at once. Two
    cells within reach are linked without measuring points when their boxes' farthest corners
    are within the radius or their first points are; never when their boxes are farther apart
    than the radius; the remaining cell pairs are measured point by point, and only when they
    are still in different components.
    """
    K = pts.shape[0]
    dev = pts.device
    if K == 0:
        return torch.zeros(0, dtype=torch.long, device=dev)
    if radius <= 0:
        return torch.unique(pts, dim=0, return_inverse=True)[1]
    grid = _Grid(pts, radius / math.sqrt(3.0) * (1.0 - 1e-6), reach=2)
    C = grid.num_cells
    nb = grid.neighbour_cells(_offsets(2, dev))               # [C, 125]
    a = torch.arange(C, device=dev)[:, None].expand_as(nb)
    valid = nb > a                                            # each unordered pair once
    a, b = a[valid], nb[valid]
    cell_of3 = grid.cell_of[:, None].expand(-1, 3)
    bmin = torch.full((C, 3), float("inf"), device=dev).scatter_reduce(0, cell_of3, pts, "amin")
    bmax = torch.full((C, 3), float("-inf"), device=dev).scatter_reduce(0, cell_of3, pts, "amax")
    gap = torch.maximum(bmin[b] - bmax[a], bmin[a] - bmax[b]).clamp_min(0)
    lower = gap.pow(2).sum(-1)
    span = torch.maximum((bmax[b] - bmin[a]).abs(), (bmax[a] - bmin[b]).abs())
    upper = span.pow(2).sum(-1)
    rep = pts[grid.order[grid.starts]]                        # first point of each cell
    r2 = radius * radius
    sure = (upper <= r2) | ((rep[a] - rep[b]).pow(2).sum(-1) <= r2)
    comp = _union_find(C, a[sure], b[sure])
    maybe = ~sure & (lower <= r2)
    ma, mb = a[maybe], b[maybe]
    todo = comp[ma] != comp[mb]
    ma, mb = ma[todo], mb[todo]
    if ma.numel():
        na, nbn = grid.counts[ma], grid.counts[mb]
        pairs = na * nbn
        cum = torch.cumsum(pairs, 0).cpu()
        E = ma.shape[0]
        edges = _chunk_edges(cum, max_pairs)
        linked = torch.zeros(E, dtype=torch.bool, device=dev)
        for s, e in zip(edges[:-1], edges[1:]):
            p = pairs[s:e]
            n = int(cum[e - 1] - (cum[s - 1] if s > 0 else 0))
            seg = torch.repeat_interleave(torch.arange(e - s, device=dev), p, output_size=n)
            local = torch.arange(n, device=dev) - (torch.cumsum(p, 0) - p)[seg]
            nb_seg = nbn[s:e][seg]
            ia = grid.order[grid.starts[ma[s:e][seg]] + torch.div(local, nb_seg, rounding_mode="floor")]
            ib = grid.order[grid.starts[mb[s:e][seg]] + local % nb_seg]
            close = (pts[ia] - pts[ib]).pow(2).sum(-1) <= r2
            linked[s + seg[close]] = True
        comp = _union_find(C, ma[linked], mb[linked], parent=comp)
    labels = comp[grid.cell_of]
    return torch.unique(labels, return_inverse=True)[1]


# ------------------------------------------------------------------------------------------------
# The engine
# ------------------------------------------------------------------------------------------------
class QueryEngine:
    """Answers text queries on a :class:`GaussianMap` with a :class:`LanguageField`.

    ``cfg``: :class:`~gags_ros.core.config.QueryConfig` (read at every call, so changed parameters
    apply to the next query). ``text_encoder``: ``callable(list[str]) -> [T, D]`` unit-norm
    embeddings in the field's space (the teacher's ``Embedder.embed_text``).
    """

    def __init__(self, cfg, text_encoder: Callable[[List[str]], torch.Tensor]):
        self.cfg = cfg
        self.text_encoder = text_encoder
        self._canonical_key: Optional[tuple] = None
        self._canonical: Optional[torch.Tensor] = None

    # ---- text ---------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], device) -> torch.Tensor:
        """``[T, D]`` float32 unit embeddings of ``texts`` on ``device``."""
        emb = torch.as_tensor(self.text_encoder(list(texts))).to(device, torch.float32)
        return torch.nn.functional.normalize(emb, dim=-1)

    def canonical(self, device) -> torch.Tensor:
        """``[C, D]`` embeddings of the canonical phrases (cached until the phrases change)."""
        key = (tuple(self.cfg.canonical_phrases), str(device))
        if self._canonical_key != key:
            self._canonical = self.encode(self.cfg.canonical_phrases, device)
            self._canonical_key = key
        return self._canonical

    def _check_text(self, text: str) -> str:
        if not isinstance(text, str) or not text.strip():
            return "empty query text"
        if len(text) > self.cfg.max_text_length:
            return (f"query text has {len(text)} characters; at most {self.cfg.max_text_length} "
                    f"(parameter query.max_text_length)")
        return ""

    # ---- relevancy ----------------------------------------------------------------------------
    def latent_relevancy(self, field, latents: torch.Tensor, text_emb: torch.Tensor,
                         index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[n, T]`` raw relevancy of ``latents`` ``[N, F]`` (rows ``index`` only, when given) to
        ``text_emb`` ``[T, D]``, decoding ``chunk_size`` rows at a time."""
        dev = latents.device
        canon = self.canonical(dev)
        amp = autocast_dtype(self.cfg.decode_precision, dev)
        n = latents.shape[0] if index is None else index.shape[0]
        out = torch.empty(n, text_emb.shape[0], device=dev)
        cs = int(self.cfg.chunk_size)
        with torch.no_grad():
            for s in range(0, n, cs):
                f = latents[s:s + cs] if index is None else latents[index[s:s + cs]]
                with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                    phi = field.decode(f)
                out[s:s + cs] = relevancy(phi, text_emb, canon, self.cfg.temperature)
        return out

    def gaussian_relevancy(self, gaussians, field, text_emb: torch.Tensor,
                           index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[n, T]`` raw relevancy of the Gaussians ``index`` (all when None) to ``text_emb``."""
        return self.latent_relevancy(field, gaussians.params["features"].detach(), text_emb, index)

    def relevancy_image(self, renderer, gaussians, field, T_world_cam, intrinsics,
                        texts: Sequence[str]) -> torch.Tensor:
        """``[T, H, W]`` relevancy of the rendered view ``T_world_cam`` (``[4, 4]`` camera-to-world)
        with ``intrinsics`` (its size is the output size) for each text. ValueError for a map
        without latents."""
        why = self._map_problem(gaussians, field)
        if why:
            raise ValueError(f"no relevancy image: {why}")
        feats = gaussians.params["features"].detach()
        dev = feats.device
        emb = self.encode(texts, dev)
        with torch.no_grad():
            lat = render_channels(renderer, gaussians, feats, T_world_cam, intrinsics, dev)  # [H, W, F]
        H, W, _ = lat.shape
        r = self.latent_relevancy(field, lat.reshape(H * W, -1), emb)
        return r.T.reshape(-1, H, W)

    # ---- 3D -----------------------------------------------------------------------------------
    def query(self, gaussians, field, texts: Sequence[str], max_targets: Optional[int] = None,
              min_score: Optional[float] = None) -> List[QueryResult]:
        """One :class:`QueryResult` per text (see the module doc). Never raises for an empty map,
        a map without latents, a bad text or an empty selection: the result says why instead."""
        texts = list(texts)
        results = [QueryResult(t, reason=self._check_text(t)) for t in texts]
        why = self._map_problem(gaussians, field)
        if why:
            for r in results:
                r.reason = r.reason or why
            return results
        todo = [i for i, r in enumerate(results) if not r.reason]
        if not todo:
            return results
        dev = gaussians.params["features"].device
        t0 = time.perf_counter()
        emb = self.encode([texts[i] for i in todo], dev)
        if emb.shape[-1] != field.embed_dim:
            raise ValueError(f"text embeddings are {emb.shape[-1]}-d, the field decodes to {field.embed_dim}-d")
        self.canonical(dev)
        t_enc = time.perf_counter() - t0
        answered = self.query_embeddings(gaussians, field, [texts[i] for i in todo], emb,
                                         max_targets=max_targets, min_score=min_score)
        for i, r in zip(todo, answered):
            r.timings["encode_s"] = t_enc
            results[i] = r
        return results

    @staticmethod
    def _map_problem(gaussians, field) -> str:
        if gaussians is None or len(gaussians) == 0:
            return "the map is empty"
        if "features" not in gaussians.params or field is None:
            return "the map has no language features yet"
        return ""

    def query_embeddings(self, gaussians, field, texts: Sequence[str], text_emb: torch.Tensor,
                         max_targets: Optional[int] = None, min_score: Optional[float] = None) -> List[QueryResult]:
        """:meth:`query` for texts already encoded (``text_emb`` ``[T, D]`` unit, on the map's
        device): what the latency target measures."""
        cfg = self.cfg
        max_targets = cfg.max_targets if max_targets is None or max_targets <= 0 else int(max_targets)
        min_score = cfg.min_score if min_score is None or min_score < 0 else float(min_score)
        results = [QueryResult(t) for t in texts]
        why = self._map_problem(gaussians, field)
        if why:
            for r in results:
                r.reason = why
            return results
        t0 = time.perf_counter()
        with torch.no_grad():
            means = gaussians.params["means"].detach()
            opac = gaussians.opacities.detach()
            eligible = (opac >= cfg.min_opacity).nonzero(as_tuple=True)[0]
            if eligible.numel() == 0:
                for r in results:
                    r.reason = f"no Gaussian is at least {cfg.min_opacity} opaque (query.min_opacity)"
                return results
            rel = self.gaussian_relevancy(gaussians, field, text_emb, eligible)   # [n, T]
            lo, hi = rel.amin(dim=0), rel.amax(dim=0)
            norm = (rel - lo) / (hi - lo).clamp_min(1e-12)
            t_rel = time.perf_counter() - t0
            for k, r in enumerate(results):
                t1 = time.perf_counter()
                self._targets_for(r, means, eligible, rel[:, k], norm[:, k], max_targets, min_score)
                r.timings.update(relevancy_s=t_rel, targets_s=time.perf_counter() - t1,
                                 total_s=t_rel + time.perf_counter() - t1)
        return results

    def _targets_for(self, res: QueryResult, means: torch.Tensor, eligible: torch.Tensor,
                     raw: torch.Tensor, norm: torch.Tensor, max_targets: int, min_score: float) -> None:
        cfg = self.cfg
        sel = (norm > cfg.threshold).nonzero(as_tuple=True)[0]
        res.selected = int(sel.numel())
        if res.selected == 0:
            res.reason = f"no Gaussian above the relevancy threshold {cfg.threshold} (query.threshold)"
            return
        pts = means[eligible[sel]]
        kept = cleanup_mask(pts, cfg.neighbour_radius, cfg.keep_neighbours, cfg.drop_neighbours)
        sel, pts = sel[kept], pts[kept]
        res.kept = int(sel.numel())
        if res.kept == 0:
            res.reason = (f"all {res.selected} selected Gaussians were isolated (fewer than "
                          f"{cfg.keep_neighbours} selected neighbours within {cfg.neighbour_radius} m)")
            return
        labels = connected_components(pts, cfg.cluster_radius)
        n = int(labels.max()) + 1
        dev = pts.device
        counts = torch.bincount(labels, minlength=n)
        cf = counts.to(pts.dtype)
        score = torch.zeros(n, device=dev).index_add_(0, labels, raw[sel].float()) / cf
        centroid = torch.zeros(n, 3, device=dev).index_add_(0, labels, pts) / cf[:, None]
        lab3 = labels[:, None].expand(-1, 3)
        bmin = torch.full((n, 3), float("inf"), device=dev).scatter_reduce(0, lab3, pts, "amin")
        bmax = torch.full((n, 3), float("-inf"), device=dev).scatter_reduce(0, lab3, pts, "amax")
        order = torch.argsort(score, descending=True)
        order = order[score[order] >= min_score][:max_targets]
        if order.numel() == 0:
            res.reason = (f"{n} candidate target(s), none with score >= {min_score:.3f} (best "
                          f"{float(score.max()):.3f}; query.min_score)")
            return
        # Gaussian indices of the returned targets only, grouped by label in one sort.
        gidx = eligible[sel]
        by_label = torch.argsort(labels, stable=True)
        starts = (torch.cumsum(counts, 0) - counts).cpu()
        counts_c, order_c = counts.cpu(), order.cpu()
        gsorted = gidx[by_label].cpu().numpy()
        sc, ce, b0, b1 = (x.cpu().numpy() for x in (score, centroid, bmin, bmax))
        for t in order_c.tolist():
            s, c = int(starts[t]), int(counts_c[t])
            res.targets.append(QueryTarget(res.text, float(sc[t]), ce[t].astype(np.float64),
                                           b0[t].astype(np.float64), b1[t].astype(np.float64),
                                           np.sort(gsorted[s:s + c]).astype(np.int64), c))


# ------------------------------------------------------------------------------------------------
# The 2D evaluation protocol
# ------------------------------------------------------------------------------------------------
def _as_image(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).float()


def mean_filter(x: torch.Tensor, k: int) -> torch.Tensor:
    """``[H, W]`` -> ``[H, W]`` mean over the ``k x k`` window of each pixel, borders replicated (so
    windows keep their size and the argmax is not drawn towards the image border; for even ``k``
    the window reaches one pixel further right/down)."""
    lo = (k - 1) // 2
    hi = k - 1 - lo
    xp = torch.nn.functional.pad(x[None, None], (lo, hi, lo, hi), mode="replicate")
    return torch.nn.functional.avg_pool2d(xp, k, stride=1)[0, 0]


def localisation_hit(relevancy_map, boxes, kernel: int = 30) -> Tuple[bool, Tuple[int, int]]:
    """LERF localisation: smooth ``relevancy_map`` ``[H, W]`` with a ``kernel`` x ``kernel`` mean
    filter (:func:`mean_filter`), take the argmax pixel ``(x, y)`` (column, row); a hit when it lies in any of ``boxes``
    (``[B, 4]`` pixel boxes ``x_min, y_min, x_max, y_max``, inclusive). Returns ``(hit, (x, y))``."""
    r = _as_image(relevancy_map)
    H, W = r.shape
    sm = mean_filter(r, kernel)
    flat = int(torch.argmax(sm.reshape(-1)))
    y, x = divmod(flat, W)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    hit = bool(np.any((b[:, 0] <= x) & (x <= b[:, 2]) & (b[:, 1] <= y) & (y <= b[:, 3])))
    return hit, (x, y)


def segmentation_mask(relevancy_map, threshold: float = 0.4, kernel: int = 30, majority: int = 7) -> torch.Tensor:
    """LERF / LangSplat segmentation: R' = 0.5 (R + mean_kernel(R)), min-max normalised, ``> threshold``,
    then a ``majority`` x ``majority`` majority filter (a pixel is set when more than half of its
    window inside the image is). ``[H, W]`` -> ``[H, W]`` bool."""
    r = _as_image(relevancy_map)
    rs = 0.5 * (r + mean_filter(r, kernel))
    lo, hi = rs.min(), rs.max()
    rn = (rs - lo) / (hi - lo).clamp_min(1e-12)
    m = (rn > threshold).float()
    # majority over the window's pixels inside the image (replicating a border would vote twice)
    return box_mean(m[None], majority)[0] > 0.5


def iou(pred, gt) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    p = torch.as_tensor(np.asarray(pred) if not torch.is_tensor(pred) else pred).bool()
    g = torch.as_tensor(np.asarray(gt) if not torch.is_tensor(gt) else gt).bool().to(p.device)
    union = int((p | g).sum())
    return 1.0 if union == 0 else int((p & g).sum()) / union
