"""The query engine: relevancy of the map's Gaussians to texts and their 3D targets.

Relevancy (LERF / LangSplat, GAGS section 3) of a unit embedding phi to a query q with canonical
phrases c (``QueryConfig.canonical_phrases``) at temperature T:

    r = min_c exp(T phi.q) / (exp(T phi.q) + exp(T phi.c)) = sigmoid(T (phi.q - max_c phi.c))

(the right-hand form is the same number, computed without overflow).

3D query (:meth:`QueryEngine.query`), per text, on the map's device:

0. only *known* Gaussians take part: at least ``min_opacity`` opaque and, where the map records
   language coverage (:mod:`.language.coverage`), with at least ``min_coverage`` of their seen
   blend weight on pixels the teacher supervised. A Gaussian no mask ever covered carries latents
   nothing constrained: it is unknown, never relevant;
1. relevancy of every known Gaussian, ``chunk_size`` at a time: the
   decoder runs up to its last hidden layer (bfloat16 on CUDA by default, see
   ``decode_precision``) and the dot products with the texts and canonical phrases and the
   embedding norm are taken from there (:meth:`LanguageField.decode_dot`), so the D-dim
   embeddings are never formed;
2. min-max normalise over those Gaussians, select the ones above ``threshold``;
3. (``targets=cluster`` only) radius-neighbour cleanup among the selected (``neighbour_radius``): a Gaussian with more than
   ``keep_neighbours`` selected neighbours is a core point and kept; fewer than ``drop_neighbours``:
   dropped; in between (a border point): kept only when a core point lies within the radius, so
   the fringe of a dense object survives and sparse speckle between objects does not (DBSCAN's
   border rule);
4. ``targets=peak`` (an option; :meth:`QueryEngine._peak_targets`): no cleanup; the first target
   sits at the most relevant selected Gaussian (location and score from the selected Gaussians
   within ``peak_radius`` of it, box within ``nms_radius``), further targets at the next peaks at
   least ``nms_radius`` from better ones. ``targets=cluster``: after the
   cleanup of step 3, targets = connected components of the kept Gaussians linked when closer than
   ``cluster_radius`` (exact single linkage); per target its relevancy peak (its most relevant
   Gaussian), the **score** = the mean raw relevancy of its Gaussians within ``peak_radius`` of the
   peak, the **centroid** (its location) = the mean of those Gaussians' centres, the axis-aligned
   box of all its Gaussian centres (metres, world frame) and its Gaussian indices;
   ``targets=mass`` (the default; :meth:`QueryEngine._mass_targets`): peaks of relevant mass
   (opacity x normalised relevancy within ``mass_radius`` spacing units), located at its
   weighted mean;
5. every candidate target (any way) gets a **confidence**, the calibrated probability that it
   is right, from its score compared with the map's own relevancy for the text
   (:mod:`.calibration`, ``calibration``); the answers are the candidates with score at least
   ``min_score`` and confidence at least ``min_confidence``, most confident first, at most
   ``max_targets``. None: "not found: ..." with the best confidence (a success, zero targets).

   Why the peak and not the mean of the component: single linkage joins a small relevant object
   with the moderately relevant surface it stands on (a mug handle and its mug and table), and the
   component's mean then lies on the surface. The peak is the 3D counterpart of LERF's 2D
   localisation (the argmax of the smoothed relevancy). In simulation it locates parts and
   sub-parts far better than the component's mean (docs/results/sim_default_gpu/README.md).

Neighbour searches hash the points into cubic cells and bound each count from the cells before
measuring any distance, so only the points of undecided cells pay for exact pair distances; the
linked cell pairs of the clustering go to the host, where scipy's graph search labels them, and
the per-target statistics are numpy passes over one copy of the kept Gaussians. The tables are
dense tensors, so a query launches few kernels and synchronises with the device a handful of
times. The same code answers on CPU and GPU (the GPU meets the latency target on 1M Gaussians;
see bench/query.py, ``--profile`` for a per-stage breakdown).

2D: :meth:`QueryEngine.relevancy_image` renders the latents of any camera view and decodes them
(the LERF-OVS evaluation protocol that scores such images: :mod:`gags_ros.eval.lerf_ovs`).
"""

from __future__ import annotations

import math
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import calibration
from ..language import coverage
from ..language.field import autocast_dtype, render_channels
from ..timing import StageTimer
from .results import QueryResult, QueryTarget, check_query_text
from .spatial import MAX_PAIRS, _cell_components, cleanup_mask

MASS_CANDIDATES = 512  # targets=mass: the most relevant selected Gaussians tried as peaks of relevant mass
PEAK_POOL = 8        # targets=peak: candidate targets scored before the best max_targets are kept


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
        self.sync_timings = False     # True: QueryResult.timings per stage, synchronising between them
        self.coverage_mode = "gad"    # the distillation objective (language.mode): which pixels count as supervised

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

    # ---- relevancy ----------------------------------------------------------------------------
    def latent_relevancy(self, field, latents: torch.Tensor, text_emb: torch.Tensor,
                         index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[n, T]`` raw relevancy of ``latents`` ``[N, F]`` (rows ``index`` only, when given) to
        ``text_emb`` ``[T, D]``, decoding ``chunk_size`` rows at a time.

        The texts and canonical phrases are scored straight from the decoder's last hidden layer
        (:meth:`LanguageField.decode_dot`): the same numbers as :func:`relevancy` of
        ``field.decode`` up to rounding, without ``[n, D]`` embeddings."""
        dev = latents.device
        T = text_emb.shape[0]
        vecs = torch.cat([text_emb.float(), self.canonical(dev).float()])      # [T + C, D]
        plan = field.dot_plan(vecs, autocast_dtype(self.cfg.decode_precision, dev))
        n = latents.shape[0] if index is None else index.shape[0]
        out = torch.empty(n, T, device=dev)
        cs = int(self.cfg.chunk_size)
        for s in range(0, n, cs):
            f = latents[s:s + cs] if index is None else latents[index[s:s + cs]]
            dots = plan(f)                                                       # [m, T + C]
            canon = dots[:, T:].amax(dim=-1, keepdim=True)
            torch.sigmoid(self.cfg.temperature * (dots[:, :T] - canon), out=out[s:s + cs])
        return out

    def gaussian_relevancy(self, gaussians, field, text_emb: torch.Tensor,
                           index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[n, T]`` raw relevancy of the Gaussians ``index`` (all when None) to ``text_emb``."""
        return self.latent_relevancy(field, gaussians.features.detach(), text_emb, index)

    def relevancy_image(self, renderer, gaussians, field, T_world_cam, intrinsics,
                        texts: Sequence[str], unknown: Optional[float] = None) -> torch.Tensor:
        """``[T, H, W]`` relevancy of the rendered view ``T_world_cam`` (``[4, 4]`` camera-to-world)
        with ``intrinsics`` (its size is the output size) for each text. ValueError for a map
        without latents.

        ``unknown``: when given (e.g. ``float("nan")`` or -1), pixels that are not *known* get this
        value instead of a relevancy: less than half of their rendered weight comes from Gaussians
        the query treats as known (:meth:`known_image`), so the picture shows where the map has no
        teacher supervision rather than a made-up relevancy. None (the evaluation protocols):
        every pixel is decoded."""
        why = self._map_problem(gaussians, field)
        if why:
            raise ValueError(f"no relevancy image: {why}")
        feats = gaussians.features.detach()
        dev = feats.device
        emb = self.encode(texts, dev)
        with torch.no_grad():
            lat = render_channels(renderer, gaussians, feats, T_world_cam, intrinsics, dev)  # [H, W, F]
        H, W, _ = lat.shape
        r = self.latent_relevancy(field, lat.reshape(H * W, -1), emb).T.reshape(-1, H, W)
        if unknown is not None:
            share = self.known_image(renderer, gaussians, T_world_cam, intrinsics)
            if share is not None:
                r = torch.where(share[None] >= 0.5, r, torch.full_like(r, float(unknown)))
        return r

    def known_image(self, renderer, gaussians, T_world_cam, intrinsics,
                    coverage_mode: Optional[str] = None) -> Optional[torch.Tensor]:
        """``[H, W]`` share in [0, 1] of each pixel's rendered weight that comes from Gaussians the
        query treats as known (:meth:`known`: opaque enough and with language coverage); 0 where
        nothing is rendered. None when every Gaussian counts as known (no coverage records, or
        ``min_coverage`` 0)."""
        known = self.known(gaussians, coverage_mode)
        if known is None:
            return None
        dev = gaussians.params["means"].device
        known = known & (gaussians.opacities.detach() >= self.cfg.min_opacity)
        ch = torch.stack([known.float(), torch.ones_like(known, dtype=torch.float32)], dim=1)  # [N, 2]
        with torch.no_grad():
            img = render_channels(renderer, gaussians, ch, T_world_cam, intrinsics, dev)     # [H, W, 2]
        return torch.where(img[..., 1] > 1e-6, img[..., 0] / img[..., 1].clamp_min(1e-6),
                           torch.zeros_like(img[..., 0]))

    # ---- 3D -----------------------------------------------------------------------------------
    def query(self, gaussians, field, texts: Sequence[str], max_targets: Optional[int] = None,
              min_score: Optional[float] = None, coverage_mode: Optional[str] = None) -> List[QueryResult]:
        """One :class:`QueryResult` per text (see the module doc). Never raises for an empty map,
        a map without latents, a bad text or an empty selection: the result says why instead."""
        texts = list(texts)
        results = [QueryResult(t, reason=check_query_text(t, self.cfg.max_text_length)) for t in texts]
        why = self._map_problem(gaussians, field)
        if why:
            for r in results:
                r.reason = r.reason or why
            return results
        todo = [i for i, r in enumerate(results) if not r.reason]
        if not todo:
            return results
        dev = gaussians.features.device
        t0 = time.perf_counter()
        emb = self.encode([texts[i] for i in todo], dev)
        if emb.shape[-1] != field.embed_dim:
            raise ValueError(f"text embeddings are {emb.shape[-1]}-d, the field decodes to {field.embed_dim}-d")
        self.canonical(dev)
        t_enc = time.perf_counter() - t0
        answered = self.query_embeddings(gaussians, field, [texts[i] for i in todo], emb,
                                         max_targets=max_targets, min_score=min_score,
                                         coverage_mode=coverage_mode)
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

    def known(self, gaussians, coverage_mode: Optional[str] = None) -> Optional[torch.Tensor]:
        """``[N]`` bool: Gaussians whose language coverage (:mod:`.language.coverage`) for the
        objective ``coverage_mode`` (default :attr:`coverage_mode`) reaches ``min_coverage``; None
        when the map has no coverage records or the gate is off (every Gaussian counts as known)."""
        if self.cfg.min_coverage <= 0:
            return None
        frac = coverage.supervised_fraction(gaussians, coverage_mode or self.coverage_mode)
        return None if frac is None else frac >= self.cfg.min_coverage

    def query_embeddings(self, gaussians, field, texts: Sequence[str], text_emb: torch.Tensor,
                         max_targets: Optional[int] = None, min_score: Optional[float] = None,
                         coverage_mode: Optional[str] = None) -> List[QueryResult]:
        """:meth:`query` for texts already encoded (``text_emb`` ``[T, D]`` unit, on the map's
        device): what the latency target measures. ``coverage_mode``: the language objective whose
        supervised pixels define coverage (default :attr:`coverage_mode`)."""
        cfg = self.cfg
        max_targets = cfg.max_targets if max_targets is None or max_targets <= 0 else int(max_targets)
        min_score = cfg.min_score if min_score is None or min_score < 0 else float(min_score)
        results = [QueryResult(t) for t in texts]
        why = self._map_problem(gaussians, field)
        if why:
            for r in results:
                r.reason = why
            return results
        clock = StageTimer(gaussians.features.device, sync=self.sync_timings)
        with torch.no_grad():
            means = gaussians.params["means"].detach()
            opac = gaussians.opacities.detach()
            ok = opac >= cfg.min_opacity
            known = self.known(gaussians, coverage_mode)
            if known is not None:
                ok &= known
            eligible = ok.nonzero(as_tuple=True)[0]
            if eligible.numel() == 0:
                why = f"no Gaussian is at least {cfg.min_opacity} opaque (query.min_opacity)"
                if known is not None:
                    why += (f" and known (language coverage >= {cfg.min_coverage}, query.min_coverage; "
                            f"{int(known.sum())} known)")
                for r in results:
                    r.reason = why
                return results
            index = None if eligible.numel() == means.shape[0] else eligible   # all: no gather
            rel = self.gaussian_relevancy(gaussians, field, text_emb, index)   # [n, T]
            lo, hi = rel.amin(dim=0), rel.amax(dim=0)
            norm = (rel - lo) / (hi - lo).clamp_min(1e-12)
            n_el = rel.shape[0]                                 # median and 0.9 quantile: [2, T], confidence
            quant = torch.stack([rel.kthvalue((n_el + 1) // 2, dim=0).values,
                                 rel.kthvalue(max(1, math.ceil(0.9 * n_el)), dim=0).values]).cpu().numpy()
            unit = spacing_unit(gaussians.scales.detach().index_select(0, eligible)) if cfg.targets == "mass" else 1.0
            view = None                                         # [N, 3] view records: the inset's direction
            if cfg.targets == "mass" and cfg.inset > 0 and coverage.has_view(gaussians):
                view = torch.stack([gaussians.record(k) for k in coverage.VIEW], dim=1)
            t_rel = clock.lap()
            for k, r in enumerate(results):
                self._targets_for(r, means, eligible, rel[:, k], norm[:, k], max_targets, min_score, clock,
                                  (float(quant[0, k]), float(quant[1, k])), opac, unit, view)
                t_targets = sum(r.timings.values())
                r.timings.update(relevancy_s=t_rel, targets_s=t_targets, total_s=t_rel + t_targets)
        return results

    def _targets_for(self, res: QueryResult, means: torch.Tensor, eligible: torch.Tensor,
                     raw: torch.Tensor, norm: torch.Tensor, max_targets: int, min_score: float,
                     clock: StageTimer, quantiles: Tuple[float, float] = (0.0, 0.0),
                     opacity: Optional[torch.Tensor] = None, unit: float = 1.0,
                     view: Optional[torch.Tensor] = None) -> None:
        """Fills ``res`` from the raw ``[n]`` and min-max normalised ``[n]`` relevancy of the
        ``eligible`` Gaussians (``quantiles``: the median and 0.9 quantile of ``raw``, for the
        confidence; ``view`` ``[N, 3]``: the map's view records for ``query.inset``, or None);
        ``res.timings`` gets each stage's seconds (laps of ``clock``)."""
        cfg = self.cfg
        sel = (norm > cfg.threshold).nonzero(as_tuple=True)[0]
        res.selected = int(sel.numel())
        if res.selected == 0:
            res.timings["select_s"] = clock.lap()
            res.reason = f"no Gaussian above the relevancy threshold {cfg.threshold} (query.threshold)"
            return
        gidx = eligible.index_select(0, sel)                  # Gaussian indices of the selected
        pts = means.index_select(0, gidx)
        res.timings["select_s"] = clock.lap()
        share = res.selected / max(int(raw.shape[0]), 1)
        if cfg.targets == "peak":
            self._peak_targets(res, pts, raw.index_select(0, sel), gidx, max_targets, min_score, clock,
                               quantiles, share)
            return
        if cfg.targets == "mass":
            weight = opacity.index_select(0, gidx) * norm.index_select(0, sel)
            self._mass_targets(res, pts, raw.index_select(0, sel), weight, gidx, max_targets, min_score, clock,
                               quantiles, share, unit, view)
            return
        kept = cleanup_mask(pts, cfg.neighbour_radius, cfg.keep_neighbours, cfg.drop_neighbours)
        kept = kept.nonzero(as_tuple=True)[0]
        sel, gidx, pts = sel.index_select(0, kept), gidx.index_select(0, kept), pts.index_select(0, kept)
        res.kept = int(sel.numel())
        res.timings["cleanup_s"] = clock.lap()
        if res.kept == 0:
            res.reason = (f"all {res.selected} selected Gaussians were isolated (fewer than "
                          f"{cfg.keep_neighbours} selected neighbours within {cfg.neighbour_radius} m)")
            return
        if cfg.cluster_radius > 0:
            grid, cell_label, n = _cell_components(pts, cfg.cluster_radius)
            cell_of = grid.cell_of
        else:                                                 # only coincident points share a target
            cell_of = torch.unique(pts, dim=0, return_inverse=True)[1]
            n = int(cell_of.max()) + 1
            cell_label = np.arange(n)
        res.timings["cluster_s"] = clock.lap()
        # Per-target statistics on the host: a few numpy passes over the kept Gaussians instead of
        # a dozen small launches. Float64 holds the coordinates, relevancy and indices exactly.
        host = torch.cat([pts.double(), raw.index_select(0, sel)[:, None].double(),      # [K, 6], one copy
                          torch.stack([cell_of, gidx], dim=1).double()], dim=1).cpu().numpy()
        labels, gidx = cell_label[host[:, 4].astype(np.int64)], host[:, 5].astype(np.int64)
        counts = np.bincount(labels, minlength=n)
        score, location, support = _peak_statistics(host[:, :3], host[:, 3], labels, n, cfg.peak_radius)
        feats = calibration.target_features(score, support, *quantiles, share)
        conf = calibration.confidence(feats, cfg.calibration)
        order = self._answer_order(res, score, conf, min_score, max_targets)
        for t in order.tolist():
            mine = labels == t
            p = host[mine, :3]
            res.targets.append(QueryTarget(res.text, float(score[t]), location[t], p.min(axis=0), p.max(axis=0),
                                           np.sort(gidx[mine]).astype(np.int64), int(counts[t]),
                                           float(conf[t]), feats[t]))
        res.timings["stats_s"] = clock.lap()

    def _answer_order(self, res: QueryResult, score: np.ndarray, conf: np.ndarray, min_score: float,
                      max_targets: int) -> np.ndarray:
        """Indices of the candidates ``score`` / ``conf`` ``[n]`` that are answers: score at least
        ``min_score`` and confidence at least ``query.min_confidence``, most confident first, at
        most ``max_targets``. None: ``res.reason`` says "not found: ..." with the best values."""
        min_conf = float(self.cfg.min_confidence)
        ok = (score >= min_score) & (conf >= min_conf)
        order = np.flatnonzero(ok)
        order = order[np.argsort(-conf[order], kind="stable")][:max_targets]
        if order.size == 0:
            n = score.size
            if n == 0:
                res.reason = "not found: no candidate target"
            elif not (score >= min_score).any():
                res.reason = (f"not found: {n} candidate target(s), none with score >= {min_score:.3f} (best "
                              f"{float(score.max()):.3f}; query.min_score)")
            else:
                best = float(conf[score >= min_score].max())
                res.reason = (f"not found: best confidence {best:.3f} of {n} candidate target(s) is below "
                              f"{min_conf:.3f} (query.min_confidence)")
        return order


    def _peak_targets(self, res: QueryResult, pts: torch.Tensor, raw: torch.Tensor, gidx: torch.Tensor,
                      max_targets: int, min_score: float, clock: StageTimer,
                      quantiles: Tuple[float, float] = (0.0, 0.0), share: float = 1.0) -> None:
        """``targets=peak``: the selected Gaussians' centres ``pts`` ``[K, 3]`` (metres), raw
        relevancy ``raw`` ``[K]`` and map indices ``gidx`` ``[K]`` -> targets anchored at relevancy
        peaks, non-maximum suppressed.

        The first target sits at the most relevant selected Gaussian: its location and score are
        the mean centre and raw relevancy of the selected Gaussians within ``peak_radius`` of it,
        its box and indices those within ``nms_radius``; those within ``nms_radius`` are then
        suppressed and the next peak is taken from the rest. A peak with fewer than
        ``min_peak_support`` selected Gaussians within ``peak_radius`` is a speck: skipped alone. Unlike connected components this never
        chains an object to the floor it stands on, and a small relevant clump cannot outrank the
        object by its mean (../shared/docs/ANSWERS_EVIDENCE.md: hit@1 +14 points). ``quantiles``
        (median, 0.9 quantile of the eligible raw relevancy) and ``share`` (selected / eligible)
        are features of the confidence."""
        cfg = self.cfg
        res.kept = int(pts.shape[0])
        alive = torch.ones(pts.shape[0], dtype=torch.bool, device=pts.device)
        masked = raw.clone()
        r_peak2, r_nms2 = cfg.peak_radius ** 2, cfg.nms_radius ** 2
        # Peaks come by raw relevancy, answers by score: a pool of at least PEAK_POOL candidates,
        # sorted, then capped, so the first answer does not depend on max_targets.
        pool = max(max_targets, PEAK_POOL)
        found = 0
        cands = []                                            # (score, support, location, box_min, box_max, indices)
        for _ in range(pool * 4 + 64):                        # bounded: specks and low-score peaks are skipped
            if found == pool or not bool(alive.any()):
                break
            p = int(torch.argmax(masked))
            d2 = ((pts - pts[p]) ** 2).sum(dim=1)
            near = (d2 <= r_peak2) & alive
            near[p] = True
            if int(near.sum()) < cfg.min_peak_support:     # a speck (floater): drop it alone
                alive[p] = False
                masked[p] = -1.0
                continue
            region = (d2 <= r_nms2) & alive
            score = float(raw[near].mean())
            box = pts[region].double().cpu().numpy()
            cands.append((score, int(near.sum()), pts[near].double().mean(dim=0).cpu().numpy(),
                          box.min(axis=0), box.max(axis=0),
                          torch.sort(gidx[region]).values.cpu().numpy().astype(np.int64)))
            found += score >= min_score
            alive &= ~region
            alive[p] = False
            masked[~alive] = -1.0
        score = np.array([c[0] for c in cands], dtype=np.float64)
        feats = calibration.target_features(score, [c[1] for c in cands], *quantiles, share)
        conf = calibration.confidence(feats, self.cfg.calibration)
        for t in self._answer_order(res, score, conf, min_score, max_targets).tolist():
            s, _, loc, bmin, bmax, idx = cands[t]
            res.targets.append(QueryTarget(res.text, s, loc, bmin, bmax, idx, int(idx.size), float(conf[t]), feats[t]))
        res.timings["targets_s"] = clock.lap()


    def _mass_targets(self, res: QueryResult, pts: torch.Tensor, raw: torch.Tensor, weight: torch.Tensor,
                      gidx: torch.Tensor, max_targets: int, min_score: float, clock: StageTimer,
                      quantiles: Tuple[float, float] = (0.0, 0.0), share: float = 1.0, unit: float = 1.0,
                      view: Optional[torch.Tensor] = None) -> None:
        """``targets=mass``: targets at the peaks of *relevant mass*. The selected Gaussians'
        centres ``pts`` ``[K, 3]`` (metres), raw relevancy ``raw`` ``[K]``, weights ``weight``
        ``[K]`` (opacity x min-max normalised relevancy) and map indices ``gidx`` ``[K]``.

        The ``MASS_CANDIDATES`` most relevant selected Gaussians are candidate peaks; each is scored
        by the summed weight of the selected Gaussians within ``mass_radius`` spacing units of it
        (:func:`spacing_unit`: the map's typical Gaussian size, so the radius follows the map's
        density instead of metres tuned on one map). Peaks are taken best mass first, each at least
        ``nms_radius`` metres (an object's size, not the map's) from the better ones. A target's
        location is the weighted mean of the selected Gaussians within the mass radius of its peak
        (``location=medoid``: the one of them nearest to that mean);
        its score their mean raw relevancy; its box and indices those within ``nms_radius``. With
        ``view`` (``[N, 3]``, the map's view records, :mod:`.language.coverage`) the location then
        moves ``inset`` spacing units along their weighted sum, normalised: from where the patch was
        seen into its surface. The mean of a surface patch lies on the object's skin, and half the
        time (noise) just outside the object; a point inside is what "where is it" asks for.

        Why mass and not the single most relevant Gaussian (``targets=peak``): relevancy is as high
        on floaters that render into the object's pixels from in front of it as on its surface, and
        a single Gaussian or the mean of a few is as likely to be such a floater; the object's
        surface holds the most relevant *mass*. On the 3D label oracle of the training maps this
        lifted hit@1 from 30 to 62 % (bench/results/answers.json, docs/results/answers.md)."""
        cfg = self.cfg
        res.kept = int(pts.shape[0])
        K = pts.shape[0]
        rho = float(cfg.mass_radius) * float(unit)
        cand = torch.topk(raw, min(MASS_CANDIDATES, K)).indices                    # [C]
        cpts = pts.index_select(0, cand)
        mass = torch.zeros(cand.shape[0], dtype=torch.float64, device=pts.device)
        step = max(1, MAX_PAIRS // max(int(cand.shape[0]), 1))
        for s in range(0, K, step):                                               # bounded [C, step] pairs
            d2 = torch.cdist(cpts, pts[s:s + step]) ** 2
            mass += ((d2 <= rho * rho).double() * weight[s:s + step].double()).sum(dim=1)
        order = torch.argsort(mass, descending=True).cpu().numpy()
        cpts_h = cpts.double().cpu().numpy()
        r_nms2 = cfg.nms_radius ** 2
        chosen: List[int] = []
        for i in order.tolist():
            if len(chosen) == max(max_targets, PEAK_POOL):
                break
            if any(((cpts_h[i] - cpts_h[j]) ** 2).sum() < r_nms2 for j in chosen):
                continue
            chosen.append(i)
        cands = []
        for i in chosen:
            d2 = ((pts - cpts[i]) ** 2).sum(dim=1)
            near = d2 <= rho * rho
            w = weight[near].double()
            loc = (pts[near].double() * w[:, None]).sum(dim=0) / w.sum().clamp_min(1e-12)
            if cfg.location == "medoid":   # the contributing Gaussian nearest to the weighted mean
                near_pts = pts[near].double()
                loc = near_pts[int(torch.argmin(((near_pts - loc) ** 2).sum(dim=1)))]
            if view is not None:
                into = (view.index_select(0, gidx[near]).double() * w[:, None]).sum(dim=0)
                length = float(torch.linalg.norm(into))
                if math.isfinite(length) and length > 0:
                    loc = loc + (float(cfg.inset) * float(unit) / length) * into
            region = d2 <= r_nms2
            box = pts[region].double().cpu().numpy()
            cands.append((float(raw[near].mean()), int(near.sum()), loc.cpu().numpy(), box.min(axis=0),
                          box.max(axis=0), torch.sort(gidx[region]).values.cpu().numpy().astype(np.int64)))
        score = np.array([c[0] for c in cands], dtype=np.float64)
        feats = calibration.target_features(score, [c[1] for c in cands], *quantiles, share)
        conf = calibration.confidence(feats, cfg.calibration)
        for t in self._answer_order(res, score, conf, min_score, max_targets).tolist():
            s_, _, loc, bmin, bmax, idx = cands[t]
            res.targets.append(QueryTarget(res.text, s_, loc, bmin, bmax, idx, int(idx.size), float(conf[t]), feats[t]))
        res.timings["targets_s"] = clock.lap()


def spacing_unit(scales: torch.Tensor) -> float:
    """The map's length unit for density-relative radii, metres: the median over Gaussians of the
    geometric mean of their three scales ``scales`` ``[N, 3]`` (metres). Gaussians tile the
    surfaces they model, so this follows the spacing of their centres (on a CPU training map:
    0.030 m against a median nearest-neighbour distance of 0.028 m); 1 for an empty map."""
    if scales.numel() == 0:
        return 1.0
    return float(scales.float().clamp_min(1e-9).log().mean(dim=1).exp().median())


def _peak_statistics(pts: np.ndarray, raw: np.ndarray, labels: np.ndarray, n: int,
                     radius: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per target (component label ``0..n-1``, each with at least one point): ``score`` ``[n]``, the
    mean of ``raw`` ``[K]`` over its points within ``radius`` of its most relevant point,
    ``location`` ``[n, 3]``, the mean of those points ``pts`` ``[K, 3]`` (metres), and ``support``
    ``[n]``, how many they are. O(K): one sort."""
    order = np.lexsort((-raw, labels))                    # by label, most relevant first
    first = np.ones(order.size, dtype=bool)
    first[1:] = labels[order[1:]] != labels[order[:-1]]
    peak = np.full(n, -1, dtype=np.int64)
    peak[labels[order[first]]] = order[first]             # row of each target's most relevant point
    d2 = ((pts - pts[peak[labels]]) ** 2).sum(axis=1)
    w = (d2 <= radius * radius).astype(np.float64)        # the peak itself always counts
    m = np.bincount(labels, weights=w, minlength=n)
    score = np.bincount(labels, weights=w * raw, minlength=n) / m
    location = np.stack([np.bincount(labels, weights=w * pts[:, k], minlength=n) for k in range(3)], axis=1) / m[:, None]
    return score, location, m
