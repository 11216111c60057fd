"""Calibrated confidence of 3D query targets (the answers issue, item 2).

A target's raw score (mean raw relevancy near its relevancy peak) does not say whether the target
is right: with CLIP-like teacher cosines scores of present and absent objects alike sit near
0.45-0.6. The confidence is the probability that a target is right (its location inside a
ground-truth box of the text), from a logistic model over features the query engine has at hand
and that mean the same on any scene, because they compare the target with the map's own relevancy
for the same text:

====  ======================  =====================================================================
 k     name                    feature ``x[k]`` (``x[0] = 1``, the intercept)
====  ======================  =====================================================================
 1     ``score``               the target's score, raw relevancy in [0, 1]
 2     ``margin``              score minus the median raw relevancy of the eligible Gaussians
                               (known and opaque enough) for the text
 3     ``margin90``            score minus the 0.9 quantile of that relevancy (an object is a few
                               per cent of a map: the quantile lies on the background's upper end)
 4     ``log_support``         ln(1 + Gaussians that make up the score: those within
                               ``query.peak_radius`` of the peak)
 5     ``log_selected``        log10 of the share of eligible Gaussians above the relevancy
                               threshold (a diffuse field selects much of the map; floor 1e-6)
====  ======================  =====================================================================

``confidence = sigmoid(sum_k c[k] x[k])`` with ``c`` = ``query.calibration``. The coefficients and
``query.min_confidence`` are fitted by ``python -m bench.answers calibrate`` on training scenes
only (:func:`fit_logistic`, :func:`threshold_for_fp`); :func:`reliability` and
:func:`expected_calibration_error` measure the result on held-out scenes.

Pure numpy, no scikit-learn: a six-coefficient logistic fit is a few Newton steps, and the
runtime package does not need the dependency.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

FEATURES = ("bias", "score", "margin", "margin90", "log_support", "log_selected")
NUM_COEFFICIENTS = len(FEATURES)
MIN_SELECTED_SHARE = 1e-6


def target_features(score, support, median: float, q90: float, selected_share: float) -> np.ndarray:
    """Features of candidate targets of one text, ``[n, 6]`` float64 (column 0 = 1).

    ``score`` ``[n]``: raw scores; ``support`` ``[n]``: Gaussians behind each score; ``median``
    and ``q90``: the median and 0.9 quantile of the eligible Gaussians' raw relevancy for the
    text; ``selected_share``: selected / eligible Gaussians (in [0, 1]).

    Each candidate's features are its own: no feature compares candidates with each other, so two
    instances of one class ("two chairs") are not made less confident by their likeness."""
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    support = np.asarray(support, dtype=np.float64).reshape(-1)
    n = score.size
    x = np.empty((n, NUM_COEFFICIENTS))
    x[:, 0] = 1.0
    x[:, 1] = score
    x[:, 2] = score - median
    x[:, 3] = score - q90
    x[:, 4] = np.log1p(support)
    x[:, 5] = np.log10(max(float(selected_share), MIN_SELECTED_SHARE))
    return x


def confidence(features, coefficients: Sequence[float]) -> np.ndarray:
    """``[n, 6]`` features (:func:`target_features`) -> ``[n]`` probabilities ``sigmoid(x . c)``."""
    x = np.asarray(features, dtype=np.float64).reshape(-1, NUM_COEFFICIENTS)
    c = np.asarray(coefficients, dtype=np.float64)
    if c.shape != (NUM_COEFFICIENTS,):
        raise ValueError(f"calibration has {c.size} coefficients; expected {NUM_COEFFICIENTS} ({', '.join(FEATURES)})")
    z = x @ c
    return 0.5 * (1.0 + np.tanh(0.5 * z))                     # sigmoid without overflow


def fit_logistic(features, labels, l2: float = 1e-2, iterations: int = 100) -> np.ndarray:
    """Maximum-likelihood logistic coefficients ``[6]`` for ``features`` ``[n, 6]`` (column 0 = 1)
    and 0/1 ``labels`` ``[n]``, with an L2 penalty ``l2 * |c[1:]|^2 / 2`` (the intercept is free),
    so separable training sets give finite coefficients. Newton's method (IRLS) from zero."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.size or x.shape[0] == 0:
        raise ValueError(f"features {x.shape} and labels {y.shape} do not match")
    d = x.shape[1]
    penalty = np.full(d, float(l2))
    penalty[0] = 0.0
    c = np.zeros(d)
    for _ in range(iterations):
        p = confidence(x, c) if d == NUM_COEFFICIENTS else 1.0 / (1.0 + np.exp(-(x @ c)))
        grad = x.T @ (p - y) + penalty * c
        w = p * (1.0 - p)
        hess = (x * w[:, None]).T @ x + np.diag(penalty) + 1e-9 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        c -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return c


def reliability(conf, hit, bins: int = 10) -> Dict[str, np.ndarray]:
    """Reliability diagram data: ``bins`` equal-width confidence bins over [0, 1] (the last one
    closed). Returns ``count`` ``[bins]``, ``mean_confidence`` and ``hit_rate`` ``[bins]`` (NaN in
    empty bins) and ``edges`` ``[bins + 1]``."""
    conf = np.asarray(conf, dtype=np.float64).reshape(-1)
    hit = np.asarray(hit, dtype=np.float64).reshape(-1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=bins) / count
        rate = np.bincount(idx, weights=hit, minlength=bins) / count
    return {"count": count, "mean_confidence": mean_conf, "hit_rate": rate, "edges": edges}


def expected_calibration_error(conf, hit, bins: int = 10) -> float:
    """ECE = sum over bins of (share of examples) * |hit rate - mean confidence|, in [0, 1]."""
    r = reliability(conf, hit, bins)
    n = r["count"].sum()
    if n == 0:
        return float("nan")
    m = r["count"] > 0
    return float(np.sum(r["count"][m] / n * np.abs(r["hit_rate"][m] - r["mean_confidence"][m])))


def threshold_for_fp(absent_conf, max_fp: float) -> Tuple[float, float]:
    """The least confidence cut at which at most ``max_fp`` (a fraction) of absent-object queries
    keep a target, from the best confidence of each absent query ``[m]`` (0 when it had no
    candidate). Returns ``(cut, false-positive fraction at the cut)``; a query is a false positive
    when its best confidence reaches the cut."""
    a = np.sort(np.asarray(absent_conf, dtype=np.float64).reshape(-1))[::-1]
    if a.size == 0:
        return 0.0, 0.0
    allowed = int(np.floor(max_fp * a.size + 1e-9))          # absent queries that may keep a target
    if allowed >= a.size:
        return 0.0, float(np.mean(a >= 0.0))
    cut = float(np.nextafter(a[allowed], np.inf))             # just above the first that must go
    return cut, float(np.mean(a >= cut))
