"""3D answers (the answers issue): language coverage per Gaussian, unknown Gaussians never answer,
peak-anchored targets, "not found", coverage in map files."""

import numpy as np
import pytest
import torch

from gags_ros.core import config as C
from gags_ros.core.camera import look_at
from gags_ros.core.gaussians import GaussianMap
from gags_ros.core.language import coverage
from gags_ros.core.mapfile import load_map, save_map
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
