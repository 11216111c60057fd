"""3D answers (the answers issue): language coverage per Gaussian, unknown Gaussians never answer,
peak-anchored targets, "not found", coverage in map files."""

import gzip
import json

import numpy as np
import pytest
import torch

from gags_ros.core import config as C
from gags_ros.core.camera import look_at
from gags_ros.core.gaussians import GaussianMap
from gags_ros.core.language import coverage
from gags_ros.core.io.mapfile import load_map, save_map
from gags_ros.core.query import QueryEngine
from gags_ros.core.render.factory import make_renderer
from gags_ros.core.types import Intrinsics

from test_query import planted_map


class _RecordMapper:
    """The part of the Mapper that coverage uses: the map and add_record."""

    def __init__(self, g: GaussianMap):
        self.gaussians = g

    def add_record(self, name, fill=0.0):
        if name not in self.gaussians.records:
            self.gaussians.add_record(name, fill)
        return self.gaussians.record(name)


def _mark(g: GaussianMap, supervised: np.ndarray, seen: float = 10.0) -> None:
    """Coverage records by hand: every Gaussian seen with weight ``seen``, ``supervised`` [N] bool
    ones fully on supervised pixels (all levels), the others on unmasked pixels only."""
    m = _RecordMapper(g)
    coverage.ensure_records(m)
    g.record(coverage.SEEN).fill_(seen)
    for name in coverage.RECORDS[1:]:
        g.record(name).copy_(torch.as_tensor(supervised, dtype=torch.float32) * seen)


def test_coverage_is_the_blend_weight_on_masked_pixels():
    """Two walls of Gaussians side by side, seen by one camera whose left half is masked at every
    level and right half at none; a third wall behind the camera. The records must hold each
    Gaussian's blend weight on masked pixels, summing over Gaussians to the rendered alpha."""
    xs = torch.linspace(-0.9, 0.9, 37)
    gy, gz = torch.meshgrid(torch.linspace(-0.6, 0.6, 25), torch.linspace(0.4, 1.6, 25), indexing="ij")
    wall = lambda x0: torch.stack([torch.full((gy.numel(),), x0), gy.reshape(-1), gz.reshape(-1)], 1)  # noqa: E731
    left, right = wall(2.0) + torch.tensor([0.0, 0.7, 0.0]), wall(2.0) + torch.tensor([0.0, -0.7, 0.0])
    behind = wall(-2.0)
    pts = torch.cat([left, right, behind])
    g = GaussianMap.from_points(pts, torch.full_like(pts, 0.5), 0.03, opacity=0.8)
    n = len(left)
    W, H = 64, 48
    intr = Intrinsics(40.0, 40.0, W / 2, H / 2, W, H)
    T = look_at([0.0, 0.0, 1.0], [2.0, 0.0, 1.0])          # looking along +x; +y of the world is image left
    ids = torch.full((3, H, W), -1, dtype=torch.int64)
    ids[:, :, : W // 2] = 0                                 # left half masked at all levels
    ids[0, :, W // 2:] = 1                                  # right half: a sub-part mask only
    renderer = make_renderer("torch", "cpu")
    coverage.accumulate(renderer, _RecordMapper(g), ids, T, intr, "cpu")

    seen = g.record(coverage.SEEN)
    with torch.no_grad():
        alpha = renderer.render(g.means, g.quats, g.scales, g.opacities, torch.ones(len(g), 1),
                                torch.linalg.inv(torch.as_tensor(T, dtype=torch.float32))[None],
                                torch.as_tensor(intr.K, dtype=torch.float32)[None], W, H,
                                background=None, with_depth=False).colors[0, ..., 0]
    assert float(seen.sum()) == pytest.approx(float(alpha.sum()), rel=1e-4)
    assert float(seen[2 * n:].abs().max()) == 0.0           # behind the camera: never seen
    frac_all = coverage.supervised_fraction(g, "gad")
    frac_sub = coverage.supervised_fraction(g, "subpart")
    vis_l, vis_r = seen[:n] > 1e-3, seen[n:2 * n] > 1e-3
    assert vis_l.sum() > 50 and vis_r.sum() > 50
    assert float(frac_all[:n][vis_l].median()) > 0.95 and float(frac_all[n:2 * n][vis_r].median()) < 0.05
    assert float(frac_sub[n:2 * n][vis_r].median()) > 0.95        # the sub-part level covers the right
    assert float(frac_all[2 * n:].max()) == 0.0


@pytest.mark.parametrize("targets", ["cluster", "peak"])
def test_unknown_gaussians_never_yield_a_target(targets):
    """Two "red mug" blobs decode alike; the one no teacher mask supervised is unknown: the answer is
    the other, and with both unknown there is none, with a reason."""
    g, field, enc, parts = planted_map(seed=1, two_mugs=True)
    cfg = C.GagsConfig().query
    cfg.targets = targets
    eng = QueryEngine(cfg, enc)
    sup = np.ones(len(g), dtype=bool)
    sup[parts["mug"]] = False
    sup[parts["speckle"]] = False
    _mark(g, sup)
    (res,) = eng.query(g, field, ["red mug"])
    assert res.targets, res.reason
    for t in res.targets:
        assert not np.isin(t.indices, parts["mug"]).any()
        assert not np.isin(t.indices, parts["speckle"]).any()
    assert np.isin(res.targets[0].indices, parts["mug2"]).mean() > 0.9
    sup[parts["mug2"]] = False
    _mark(g, sup)
    (res,) = eng.query(g, field, ["red mug"])
    assert all(not np.isin(t.indices, np.concatenate([parts["mug"], parts["mug2"]])).any() for t in res.targets)
    # the gate off: the unsupervised mugs answer again
    cfg.min_coverage = 0.0
    (res,) = eng.query(g, field, ["red mug"])
    assert res.targets and np.isin(res.targets[0].indices, np.concatenate([parts["mug"], parts["mug2"]])).mean() > 0.9


def test_nothing_known_says_why():
    g, field, enc, _ = planted_map(seed=1)
    _mark(g, np.zeros(len(g), dtype=bool))
    (res,) = QueryEngine(C.GagsConfig().query, enc).query(g, field, ["red mug"])
    assert res.targets == [] and "known" in res.reason and "query.min_coverage" in res.reason


def test_peak_targets_skip_specks_and_locate_the_object():
    g, field, enc, parts = planted_map(seed=2)
    cfg = C.GagsConfig().query
    cfg.targets = "peak"
    eng = QueryEngine(cfg, enc)
    means = g.params["means"].detach().numpy()
    for text, name in (("red mug", "mug"), ("blue chair", "chair")):
        (res,) = eng.query(g, field, [text])
        assert res.targets, res.reason
        first = res.targets[0]
        lo, hi = means[parts[name]].min(0), means[parts[name]].max(0)
        assert np.all(first.centroid >= lo) and np.all(first.centroid <= hi)
        assert np.isin(first.indices, parts[name]).all()
        for t in res.targets:                               # a single isolated Gaussian is never a target
            assert not np.isin(t.indices, parts["speckle"]).any() or t.count >= cfg.min_peak_support
        assert [t.score for t in res.targets] == sorted((t.score for t in res.targets), reverse=True)


@pytest.mark.parametrize("targets", ["cluster", "peak"])
def test_not_found_is_a_reason_with_no_target(targets):
    g, field, enc, _ = planted_map(seed=2)
    cfg = C.GagsConfig().query
    cfg.targets = targets
    (res,) = QueryEngine(cfg, enc).query(g, field, ["red mug"], min_score=0.99999)
    assert res.targets == [] and res.reason.startswith("not found")


def test_coverage_survives_save_and_load(tmp_path):
    g, field, _, _ = planted_map(seed=3)
    rng = np.random.default_rng(0)
    _mark(g, rng.random(len(g)) < 0.5)
    g.record(coverage.SEEN).copy_(torch.as_tensor(rng.random(len(g)) * 5, dtype=torch.float32))
    path = save_map(tmp_path / "m.gags", g, field, C.GagsConfig())
    g2, _, _, _ = load_map(path)
    assert set(g2.records) == set(g.records)
    for name in coverage.RECORDS:
        assert torch.equal(g2.record(name), g.record(name)), name
    assert torch.equal(coverage.supervised_fraction(g2, "gad"), coverage.supervised_fraction(g, "gad"))


def test_version_1_map_files_load_with_coverage_unknown(tmp_path):
    """Files written before the records: every Gaussian counts as known (the gate is off)."""
    g, field, enc, parts = planted_map(seed=3)
    path = save_map(tmp_path / "m.gags", g, field, C.GagsConfig())
    data = torch.load(path, weights_only=True)
    data["version"] = 1
    del data["records"]
    torch.save(data, path)
    g2, field2, _, _ = load_map(path)
    assert coverage.supervised_fraction(g2, "gad") is None
    eng = QueryEngine(C.GagsConfig().query, enc)
    assert eng.known(g2) is None
    (res,) = eng.query(g2, field2, ["red mug"])
    assert res.targets and np.isin(res.targets[0].indices, parts["mug"]).mean() > 0.9


def test_relevancy_image_shows_unsupervised_regions_as_unknown():
    """The mug no teacher mask supervised renders as unknown (NaN) in the user's relevancy image;
    the supervised chair beside it keeps its relevancy; the protocol's image (unknown=None) decodes
    every pixel."""
    from test_query import CHAIR_CENTRE, MUG_CENTRE

    from gags_ros.core.camera import look_at

    g, field, enc, parts = planted_map(seed=2)
    eng = QueryEngine(C.GagsConfig().query, enc)
    sup = np.ones(len(g), dtype=bool)
    sup[parts["mug"]] = False
    _mark(g, sup)
    renderer = make_renderer("torch", "cpu")
    intr = Intrinsics(40.0, 40.0, 16.0, 12.0, 32, 24)
    for centre, known in ((MUG_CENTRE, False), (CHAIR_CENTRE, True)):
        T = look_at(centre - np.array([0.0, 0.0, 0.6]), centre, up=(0.0, -1.0, 0.0))
        share = eng.known_image(renderer, g, T, intr)
        rel = eng.relevancy_image(renderer, g, field, T, intr, ["red mug"], unknown=float("nan"))
        raw = eng.relevancy_image(renderer, g, field, T, intr, ["red mug"])
        centre_px = (slice(11, 13), slice(15, 17))
        assert torch.isfinite(raw).all()
        if known:
            assert share[centre_px].min() > 0.9
            assert torch.isfinite(rel[0][centre_px]).all()
            assert torch.equal(rel[0][centre_px], raw[0][centre_px])
        else:
            assert share[centre_px].max() < 0.1
            assert torch.isnan(rel[0][centre_px]).all()
    # the gate off: nothing is unknown
    eng.cfg.min_coverage = 0.0
    assert eng.known_image(renderer, g, T, intr) is None


# ------------------------------------------------------------------------------------------------
# Calibrated confidence (gags_ros/core/calibration.py) and the answers benchmark's pure functions
# ------------------------------------------------------------------------------------------------
from gags_ros.core import calibration as cal  # noqa: E402


def test_logistic_fit_recovers_a_known_relation():
    rng = np.random.default_rng(0)
    n = 40000
    x = np.column_stack([np.ones(n), rng.uniform(0.3, 0.9, n), rng.normal(0.1, 0.1, n), rng.normal(0, 0.05, n),
                         np.log1p(rng.integers(1, 200, n)), np.log10(rng.uniform(1e-3, 0.5, n))])
    true = np.array([-4.0, 3.0, 10.0, -8.0, 0.5, -0.7])
    y = rng.random(n) < cal.confidence(x, true)
    c = cal.fit_logistic(x, y, l2=1e-6)
    se = np.sqrt(np.diag(np.linalg.inv((x * (cal.confidence(x, c) * (1 - cal.confidence(x, c)))[:, None]).T @ x)))
    assert np.all(np.abs(c - true) < 4 * se), (c, true, se)      # within 4 standard errors
    assert np.abs(cal.confidence(x, c) - cal.confidence(x, true)).max() < 0.05


def test_logistic_fit_stays_finite_on_separable_labels():
    x = np.column_stack([np.ones(6), [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], np.zeros((6, 4))])
    c = cal.fit_logistic(x, [0, 0, 0, 1, 1, 1])
    p = cal.confidence(x, c)
    assert np.all(np.isfinite(c)) and np.all(p[:3] < 0.5) and np.all(p[3:] > 0.5)


def test_reliability_bins_by_hand():
    r = cal.reliability([0.05, 0.15, 0.15, 0.95, 1.0], [0, 1, 0, 1, 1], bins=10)
    assert r["count"].tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]      # 1.0 falls in the last bin
    assert r["hit_rate"][0] == 0 and r["hit_rate"][1] == 0.5 and r["hit_rate"][9] == 1.0
    assert r["mean_confidence"][1] == pytest.approx(0.15) and r["mean_confidence"][9] == pytest.approx(0.975)
    assert np.isnan(r["hit_rate"][5])
    # ECE by hand: (1 * 0.05 + 2 * 0.35 + 2 * 0.025) / 5
    assert cal.expected_calibration_error([0.05, 0.15, 0.15, 0.95, 1.0], [0, 1, 0, 1, 1]) == pytest.approx(0.16)


def test_ece_small_when_calibrated_large_when_not():
    rng = np.random.default_rng(1)
    conf = rng.random(50000)
    calibrated = rng.random(conf.size) < conf
    assert cal.expected_calibration_error(conf, calibrated) < 0.01
    over = rng.random(conf.size) < conf ** 4                  # confident, rarely right
    assert cal.expected_calibration_error(conf, over) > 0.25
    assert cal.expected_calibration_error(np.full(100, 0.9), np.arange(100) < 30) == pytest.approx(0.6)


def test_threshold_keeps_absent_false_positives_at_most_the_limit():
    best = np.array([0.9, 0.8, 0.8, 0.3, 0.2, 0.1, 0.05, 0.0, 0.0, 0.0])
    cut, fp = cal.threshold_for_fp(best, 0.10)                # one of ten may keep a target
    assert 0.8 < cut <= 0.9 and fp == pytest.approx(0.1)
    cut, fp = cal.threshold_for_fp(best, 0.0)
    assert cut > 0.9 and fp == 0.0
    cut, fp = cal.threshold_for_fp(best, 0.25)                # two may, but the tie at 0.8 goes as a pair
    assert 0.8 < cut <= 0.9 and fp == pytest.approx(0.1)


def test_target_features_by_hand():
    x = cal.target_features([0.6, 0.5], [9, 0], median=0.4, q90=0.45, selected_share=0.01)
    assert x.shape == (2, 6)
    np.testing.assert_allclose(x[0], [1.0, 0.6, 0.2, 0.15, np.log(10.0), -2.0])
    np.testing.assert_allclose(x[1], [1.0, 0.5, 0.1, 0.05, 0.0, -2.0])
    with pytest.raises(ValueError, match="6"):
        cal.confidence(x, [1.0, 2.0])


def _cand(loc, score, conf, feats=None):
    return {"loc": list(loc), "score": score, "confidence": conf, "count": 10,
            "features": feats if feats is not None else [1.0, score, 0, 0, 0, 0]}


def _run(present, absent, queries):
    return {"scene": "s", "seed": 0, "queries": queries, "answers": {"default": {"present": present, "absent": absent}}}


BOX = {"text": "chair", "level": "whole", "box_min": [0, 0, 0], "box_max": [1, 1, 1]}
TWO = {"text": "chair", "level": "whole", "box_min": [0, 0, 0], "box_max": [5, 1, 1],
       "boxes": [[[0, 0, 0], [1, 1, 1]], [[4, 0, 0], [5, 1, 1]]]}


def test_absent_false_positive_rate_and_hits_on_hand_made_runs():
    from bench import answers as A

    queries = [BOX, dict(BOX, level="part"), TWO]
    present = [[_cand([0.5, 0.5, 0.5], 0.6, 0.9)],                                  # hit
               [_cand([3, 3, 3], 0.6, 0.7), _cand([0.5, 0.5, 0.5], 0.5, 0.4)],     # hit@3 only; cut 0.5: miss
               [_cand([2.5, 0.5, 0.5], 0.6, 0.8), _cand([4.5, 0.5, 0.5], 0.6, 0.85)]]  # 2nd instance first
    absent = [[_cand([1, 1, 1], 0.6, 0.6)], [], [_cand([1, 1, 1], 0.6, 0.2)], [_cand([1, 1, 1], 0.6, 0.05)]]
    runs = [_run(present, absent, queries)]
    s = A.summarise(runs, "default")
    assert s["absent_fp"] == pytest.approx(75.0) and s["absent_queries"] == 4
    assert s["hit1"] == pytest.approx(200 / 3) and s["hit3"] == pytest.approx(100.0)
    assert s["hit1_whole"] == pytest.approx(100.0) and s["hit1_part"] == 0.0
    s = A.summarise(runs, "default", min_confidence=0.5)
    assert s["absent_fp"] == pytest.approx(25.0) and s["hit3_part"] == 0.0
    # the box between the two instances is no hit although it lies in their union box
    assert not A.inside([2.5, 0.5, 0.5], TWO) and A.inside([2.5, 0.5, 0.5], BOX | {"box_max": [5, 1, 1]})
    np.testing.assert_allclose(A.absent_best(runs, "default"), [0.6, 0.0, 0.2, 0.05])


def test_calibrate_separates_hits_from_absent_answers():
    """Hits have high margins, misses and absent answers low ones: the fitted confidence ranks
    them so, and the chosen cut keeps absent false positives within 10 %."""
    from bench import answers as A

    rng = np.random.default_rng(3)
    runs = []
    for _ in range(4):
        queries, present, absent = [], [], []
        for i in range(30):
            hit = rng.random() < 0.5
            m = rng.normal(0.25 if hit else 0.05, 0.05)
            queries.append(BOX)
            present.append([_cand([0.5, 0.5, 0.5] if hit else [3, 3, 3], 0.5 + m, 0.5,
                                  [1.0, 0.5 + m, m, m / 2, 2.0, -1.0])])
        for i in range(12):
            m = rng.normal(0.03, 0.05)
            absent.append([_cand([3, 3, 3], 0.5 + m, 0.5, [1.0, 0.5 + m, m, m / 2, 2.0, -1.0])])
        runs.append(_run(present, absent, queries))
    res = A.fit(runs, "default", max_fp=0.10)
    assert res["coefficients"][2] > 0                         # a larger margin means more confident
    assert res["train"]["absent_fp"] <= 10.0 and res["train"]["hit1"] > 20.0
    assert res["examples"] == 4 * 42 and res["absent_examples"] == 48
    snippet = A.config_snippet(res)
    assert snippet.startswith("calibration: [") and f"min_confidence: {res['min_confidence']:g}" in snippet
    _, conf, y, _ = A.first_targets(runs, "default", res["coefficients"])
    assert cal.expected_calibration_error(conf, y) < 0.15      # calibrated on its own training set


def test_heldout_report_records_the_issue_names(tmp_path, monkeypatch):
    from bench import answers as A

    monkeypatch.setenv("GAGS_BENCH_RESULTS", str(tmp_path / "results"))
    queries = [BOX, dict(BOX, level="part"), dict(BOX, level="subpart")]
    present = [[_cand([0.5, 0.5, 0.5], 0.6, 0.9, [1, 0.6, 0.3, 0.2, 2, -1])]] * 3
    absent = [[_cand([1, 1, 1], 0.5, 0.2, [1, 0.5, 0.0, 0.0, 2, -1])]] * 2
    out = tmp_path / "runs"
    out.mkdir()
    oracle = [{"text": "chair", "level": lv, "stage": st}
              for lv, st in (("whole", "hit"), ("part", "ranking"), ("subpart", "hit"))]
    run = dict(_run(present, absent, queries), overrides={}, oracle3d_stages=oracle)
    (out / "s__seed0.json").write_text(json.dumps(run))
    # results pages keep their run files gzipped: read alike
    (out / "s__seed1.json.gz").write_bytes(gzip.compress(json.dumps(dict(run, seed=1)).encode()))
    assert A.main(["report", str(out), "--tag", "heldout"]) == 0
    recs = {r["metric"]: r for r in json.loads((tmp_path / "results" / "sim.json").read_text())}
    for n in ("sim_heldout_gad_online_hit1_whole", "sim_heldout_gad_online_hit1_part",
              "sim_heldout_gad_online_hit1_subpart", "sim_heldout_absent_fp", "sim_heldout_gad_online_ece"):
        assert n in recs
    assert recs["sim_heldout_gad_online_hit1_whole"]["maps"] == ["s/0", "s/1"]
    assert recs["sim_heldout_oracle3d_hit1_whole"]["value"] == 100.0
    assert recs["sim_heldout_oracle3d_hit1_part"]["value"] == 0.0
    assert abs(recs["sim_heldout_oracle3d_hit1_all"]["value"] - 200.0 / 3) < 1e-9
    assert (out / "reliability.png").exists()


# ------------------------------------------------------------------------------------------------
# The engine: confidence, its order and "not found"
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("targets", ["cluster", "peak"])
def test_not_found_when_no_candidate_is_confident(targets):
    g, field, enc, _ = planted_map(seed=2)
    cfg = C.GagsConfig().query
    cfg.targets = targets
    cfg.min_confidence = 0.0
    eng = QueryEngine(cfg, enc)
    (res,) = eng.query(g, field, ["red mug"])
    assert res.targets
    best = max(t.confidence for t in res.targets)
    cfg.min_confidence = min(1.0, best + 1e-6)
    (res,) = eng.query(g, field, ["red mug"])
    assert res.targets == [] and res.reason.startswith("not found:")
    assert f"best confidence {best:.3f}" in res.reason and "query.min_confidence" in res.reason
    cfg.min_confidence = best                                 # the best one reaches the cut exactly
    (res,) = eng.query(g, field, ["red mug"])
    assert len(res.targets) >= 1 and res.targets[0].confidence == pytest.approx(best)


@pytest.mark.parametrize("targets", ["cluster", "peak"])
def test_targets_ordered_by_confidence_not_score(targets):
    """With a calibration that prefers small targets, the single "red mug" speckles come before the
    mugs that win on score: the order is the confidence's, and each confidence is
    sigmoid(c . features)."""
    g, field, enc, parts = planted_map(seed=2, two_mugs=True)
    cfg = C.GagsConfig().query
    cfg.targets, cfg.min_confidence, cfg.neighbour_radius, cfg.min_peak_support = targets, 0.0, 0.0, 1
    eng = QueryEngine(cfg, enc)
    (up,) = eng.query(g, field, ["red mug"], max_targets=8)
    cfg.calibration = [0.0, 0.0, 0.0, 0.0, -5.0, 0.0]         # confidence falls with ln(1 + support)
    (down,) = eng.query(g, field, ["red mug"], max_targets=8)
    assert len(down.targets) >= 3
    conf = [t.confidence for t in down.targets]
    assert conf == sorted(conf, reverse=True)
    support = [t.features[4] for t in down.targets]
    assert support == sorted(support)                         # smallest first
    assert np.isin(down.targets[0].indices, parts["speckle"]).all()
    assert not np.isin(up.targets[0].indices, parts["speckle"]).any()   # the default order: a mug first
    for t in down.targets:
        assert t.features.shape == (6,)
        assert t.confidence == pytest.approx(float(cal.confidence(t.features, cfg.calibration)[0]))


def test_calibration_needs_six_coefficients():
    cfg = C.GagsConfig()
    cfg.query.calibration = [1.0, 2.0]
    with pytest.raises(C.ConfigError, match="query.calibration"):
        C.validate(cfg)


# ------------------------------------------------------------------------------------------------
# The node: confidence in the QueryTarget message, "not found" in the message
# ------------------------------------------------------------------------------------------------
class _FakeNode:
    """The parts of MappingNode that _on_query uses; the worker answers with ``answer``."""

    def __init__(self, answer):
        from std_msgs.msg import Header

        self.cfg = C.GagsConfig()
        self.answer, self.answered, self.Header = answer, [], Header

    def header(self):
        return self.Header(frame_id="map")

    async def _serve(self, response, what, fn):
        return True, [self.answer]

    def on_query_answered(self, text, targets):
        self.answered.append((text, targets))


def _call_on_query(answer, text):
    import asyncio

    from gags_ros.ros.mapping_node import MappingNode
    from gags_ros.srv import Query

    node = _FakeNode(answer)
    return asyncio.run(MappingNode._on_query(node, Query.Request(text=text), Query.Response()))


@pytest.mark.ros
def test_confidence_reaches_the_query_response():
    from gags_ros.core.query import QueryResult, QueryTarget

    t = QueryTarget("chair", 0.55, np.array([1.0, 2.0, 0.5]), np.zeros(3), np.ones(3), np.arange(40), 40, 0.83)
    res = _call_on_query(QueryResult("chair", [t]), "chair")
    assert res.success and len(res.targets) == 1
    assert res.targets[0].confidence == pytest.approx(0.83) and res.targets[0].score == pytest.approx(0.55)
    assert res.message.startswith("1 target(s) for 'chair'")


@pytest.mark.ros
def test_not_found_reaches_the_query_response():
    from gags_ros.core.query import QueryResult

    why = "not found: best confidence 0.12 of 4 candidate target(s) is below 0.40 (query.min_confidence)"
    res = _call_on_query(QueryResult("bicycle", [], why), "bicycle")
    assert res.success and len(res.targets) == 0
    assert res.message.startswith("not found: best confidence 0.12") and "'bicycle'" in res.message


def test_mass_targets_sit_on_the_object_not_on_a_relevant_floater():
    """targets=mass: a lone Gaussian as relevant as the mug (a floater that rendered into the mug's
    pixels) is no answer; the mug's relevant mass is, located inside it."""
    from test_query import MUG_CENTRE

    from gags_ros.core.query import spacing_unit

    g, field, enc, parts = planted_map(seed=3)
    cfg = C.GagsConfig().query
    cfg.targets, cfg.min_confidence, cfg.min_coverage = "mass", 0.0, 0.0
    eng = QueryEngine(cfg, enc)
    (res,) = eng.query(g, field, ["red mug"])
    assert res.targets, res.reason
    first = res.targets[0]
    assert np.all(np.abs(first.centroid - MUG_CENTRE) <= np.array([0.08, 0.06, 0.10]))
    assert not np.isin(parts["speckle"], first.indices).any()
    # the speckles (isolated "red mug" Gaussians) are never a target ahead of the mug
    for t in res.targets[1:]:
        assert t.confidence <= first.confidence
    assert 0.0 < spacing_unit(g.scales.detach()) < 0.02      # planted Gaussians are 1 cm


@pytest.mark.parametrize("location", ["mean", "medoid"])
def test_medoid_location_is_one_of_the_objects_gaussians(location):
    """targets=mass, location=medoid: a hollow object (the mug's Gaussians on a ring of 6 cm radius)
    is located on one of its own Gaussians; the weighted mean lies in the empty centre."""
    from test_query import MUG_CENTRE

    g, field, enc, parts = planted_map(seed=3)
    a = torch.linspace(0, 2 * np.pi, len(parts["mug"]) + 1)[:-1]
    ring = torch.stack([0.06 * torch.cos(a), 0.06 * torch.sin(a), torch.zeros_like(a)], dim=1)
    with torch.no_grad():
        g.params["means"][parts["mug"]] = torch.as_tensor(MUG_CENTRE, dtype=torch.float32) + ring
    cfg = C.GagsConfig().query
    cfg.targets, cfg.min_confidence, cfg.min_coverage, cfg.location = "mass", 0.0, 0.0, location
    cfg.mass_radius = 20.0          # spacing units of 1 cm: the whole ring is one peak's mass
    (res,) = QueryEngine(cfg, enc).query(g, field, ["red mug"])
    loc = res.targets[0].centroid
    mug = g.params["means"].detach()[parts["mug"]].double().numpy()
    nearest = np.sqrt(((mug - loc) ** 2).sum(axis=1)).min()
    if location == "medoid":
        assert nearest < 1e-6
        assert abs(np.linalg.norm(loc - MUG_CENTRE) - 0.06) < 1e-3
    else:
        assert np.linalg.norm(loc - MUG_CENTRE) < 0.01 and nearest > 0.05


def test_view_records_point_from_the_camera_into_the_surface():
    """The view records (coverage's ``view_*``) of a wall seen by one camera: each seen Gaussian's
    normalised sum is the unit ray from the camera centre to it (its pixels' rays), so it points
    into the wall; their norm is the Gaussian's seen weight (unit rays, all nearly parallel)."""
    gy, gz = torch.meshgrid(torch.linspace(-0.6, 0.6, 25), torch.linspace(0.4, 1.6, 25), indexing="ij")
    pts = torch.stack([torch.full((gy.numel(),), 2.0), gy.reshape(-1), gz.reshape(-1)], 1)
    g = GaussianMap.from_points(pts, torch.full_like(pts, 0.5), 0.02, opacity=0.8)
    W, H = 64, 48
    intr = Intrinsics(40.0, 40.0, W / 2, H / 2, W, H)
    eye = np.array([0.0, 0.3, 1.0])
    T = look_at(eye, [2.0, 0.3, 1.0])
    ids = torch.zeros((3, H, W), dtype=torch.int64)
    coverage.accumulate(make_renderer("torch", "cpu"), _RecordMapper(g), ids, T, intr, "cpu")
    assert coverage.has_view(g)
    seen = g.record(coverage.SEEN)
    view = torch.stack([g.record(k) for k in coverage.VIEW], dim=1).double()
    vis = seen > 0.05
    assert int(vis.sum()) > 100
    ray = pts.double() - torch.as_tensor(eye)
    ray = ray / ray.norm(dim=1, keepdim=True)
    got = view / view.norm(dim=1, keepdim=True)
    cos = (got[vis] * ray[vis]).sum(dim=1)
    assert float(cos.min()) > 0.995
    assert torch.allclose(view[vis].norm(dim=1), seen[vis].double(), rtol=0.02)


@pytest.mark.parametrize("inset", [0.0, 2.0])
def test_inset_moves_the_target_into_the_surface_it_was_seen_on(inset):
    """targets=mass with view records: a flat relevant patch (the top of a box, seen from above)
    is located ``inset`` spacing units below its surface, along the direction it was seen from;
    0 leaves it on the surface; maps without view records are not moved."""
    from gags_ros.core.query import spacing_unit

    g, field, enc, parts = planted_map(seed=3)
    mug = parts["mug"]
    with torch.no_grad():                       # the mug's Gaussians: a flat 10 cm square at z = 0.8
        xy = torch.rand(len(mug), 2, generator=torch.Generator().manual_seed(0)) * 0.1
        g.params["means"][mug] = torch.cat([xy + 0.5, torch.full((len(mug), 1), 0.8)], dim=1)
    cfg = C.GagsConfig().query
    cfg.targets, cfg.min_confidence, cfg.min_coverage, cfg.inset = "mass", 0.0, 0.0, inset
    cfg.mass_radius = 30.0
    (before,) = QueryEngine(cfg, enc).query(g, field, ["red mug"])      # no view records yet
    m = _RecordMapper(g)
    coverage.ensure_records(m)
    down = torch.tensor([0.3, 0.0, -1.0]) / float(torch.tensor([0.3, 0.0, -1.0]).norm())
    for k, name in enumerate(coverage.VIEW):   # seen from above and a little to the side
        g.record(name).fill_(5.0 * float(down[k]))
    (after,) = QueryEngine(cfg, enc).query(g, field, ["red mug"])
    unit = spacing_unit(g.scales.detach())
    moved = after.targets[0].centroid - before.targets[0].centroid
    assert abs(before.targets[0].centroid[2] - 0.8) < 1e-4
    np.testing.assert_allclose(moved, inset * unit * down.double().numpy(), atol=1e-5)
