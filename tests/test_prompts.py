"""Granularity-aware prompts (GAGS Eq. 1) and the minimum-depth record, on constructed inputs."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from gags_ros.core.config import TeacherConfig
from gags_ros.core.teachers.prompts import (SUBGRID, MinDepthRecord, PromptSampler, cell_counts,
                                            patch_ratios, points_per_side)

H, W = 80, 160  # 8 x 8 patches of 10 x 20 px; sub-grid cells of 1 x 2 px


def patch_of(points, patches=8, h=H, w=W):
    rows = np.floor(points[:, 1] * patches / h).astype(int)
    return rows, np.floor(points[:, 0] * patches / w).astype(int)


def per_patch(values, patches=8, h=H, w=W):
    """[h, w] map that is ``values[pr, pc]`` on patch (pr, pc)."""
    v = torch.as_tensor(values, dtype=torch.float32)
    return v.repeat_interleave(h // patches, 0).repeat_interleave(w // patches, 1)


def sampler(**kw):
    cfg = TeacherConfig()
    cfg.prompt_scale = 1.0  # Eq. 1's counts themselves
    for k, v in kw.items():
        setattr(cfg, k, v)
    return PromptSampler(cfg, seed=7)


def test_n_from_ratio_clamps_and_undefined():
    r = torch.tensor([0.5, 0.999, 1.0, 1.3, 2.0, 4.99, 10.0, float("nan"), float("inf")])
    assert points_per_side(r, 20).tolist() == [1, 1, 4, 5, 8, 19, 20, 1, 1]
    assert points_per_side(r, 6).tolist() == [1, 1, 4, 5, 6, 6, 6, 1, 1]


def test_patch_ratio_uses_valid_pixels_and_undefined_patches():
    depth = torch.full((H, W), 2.0)
    dmin = torch.full((H, W), 1.0)
    depth[:5, :20] = 0.0  # half of patch (0, 0) rendered nothing: its mean is over the rest
    dmin[:, 20:40] = 0.0  # patch column 1 has no D_min at all: undefined
    depth[10:20, 40:60] = 0.0  # patch (1, 2) has no rendered depth: undefined
    dmin[20:30, 60:80] = 0.0
    dmin[20:25, 60:80] = 0.5  # patch (2, 3): D_min mean over its nonzero half = 0.5 -> r = 4
    r = patch_ratios(depth, dmin, 8)
    assert r[0, 0] == pytest.approx(2.0)
    assert torch.isnan(r[:, 1]).all() and torch.isnan(r[1, 2])
    assert r[2, 3] == pytest.approx(4.0)
    n = points_per_side(r, 20)
    assert n[0, 0] == 8 and (n[:, 1] == 1).all() and n[1, 2] == 1 and n[2, 3] == 16


def test_near_view_sparse_far_view_dense():
    dmin = torch.full((H, W), 1.5)
    near = sampler().sample(H, W, depth=torch.full((H, W), 1.5), min_depth=dmin)
    far = sampler().sample(H, W, depth=torch.full((H, W), 4.5), min_depth=dmin)
    assert (near.n == 4).all() and len(near) == 64 * 16
    assert (far.n == 12).all() and len(far) == 64 * 144
    closer_than_ever = sampler().sample(H, W, depth=torch.full((H, W), 1.0), min_depth=dmin)
    assert (closer_than_ever.n == 1).all() and len(closer_than_ever) == 64


def test_points_per_patch_follow_n_and_stay_in_their_patch():
    ratios = torch.tensor(np.random.default_rng(0).uniform(0.5, 3.0, (8, 8)), dtype=torch.float32)
    depth = per_patch(ratios)
    pr = sampler().sample(H, W, depth=depth, min_depth=torch.ones(H, W))
    n = points_per_side(ratios, 20)
    assert torch.equal(pr.n, n)
    rows, cols = patch_of(pr.points)
    counts = np.zeros((8, 8), int)
    np.add.at(counts, (rows, cols), 1)
    assert np.array_equal(counts, (n ** 2).numpy())
    assert pr.points.dtype == np.float32
    assert (pr.points[:, 0] >= 0).all() and (pr.points[:, 0] < W).all()
    assert (pr.points[:, 1] >= 0).all() and (pr.points[:, 1] < H).all()


def test_constant_depth_stand_in():
    pr = sampler().sample(H, W)
    assert (pr.ratio == 1).all() and (pr.n == 4).all() and len(pr) == 1024
    same = sampler().sample(H, W, depth=torch.full((H, W), 3.0))  # a depth image but no record
    assert (same.n == 4).all()


def test_cell_sampling_frequencies_follow_gaussian_counts():
    # One patch, n = 64 -> 4096 points; density in three cells with weights 1 : 3 : 6.
    h, w = 50, 100  # cells of 5 x 10 px
    density = torch.zeros(h, w)
    density[0:5, 0:10] = 1 / 50  # cell (0, 0): total 1
    density[25, 50] = 3  # cell (5, 5): total 3
    density[45:50, 90:100] = 6 / 50  # cell (9, 9): total 6
    pr = sampler(prompt_patches=1, prompt_n_max=64).sample(h, w, depth=torch.full((h, w), 16.0),
                                                            min_depth=torch.ones(h, w), density=density)
    assert len(pr) == 4096
    cy = np.floor(pr.points[:, 1] / 5).astype(int)
    cx = np.floor(pr.points[:, 0] / 10).astype(int)
    cell = cy * 10 + cx
    assert set(np.unique(cell)) <= {0, 55, 99}
    observed = [np.sum(cell == c) for c in (0, 55, 99)]
    assert chisquare(observed, np.array([0.1, 0.3, 0.6]) * 4096).pvalue > 1e-3


def test_sampling_matches_random_density_and_is_uniform_where_empty():
    rng = np.random.default_rng(1)
    h, w = 40, 40  # 2 x 2 patches, cells of 2 x 2 px
    density = torch.tensor(rng.integers(0, 5, (h, w)), dtype=torch.float32)
    density[:20, 20:] = 0  # patch (0, 1) has no Gaussians: uniform over its cells
    s = sampler(prompt_patches=2, prompt_n_max=64)
    pr = s.sample(h, w, depth=torch.full((h, w), 16.0), min_depth=torch.ones(h, w), density=density)
    counts = cell_counts(density, h, w, 2)
    fy = np.floor(pr.points[:, 1] / 2).astype(int)
    fx = np.floor(pr.points[:, 0] / 2).astype(int)
    patch = (fy // SUBGRID) * 2 + fx // SUBGRID
    cell = (fy % SUBGRID) * SUBGRID + fx % SUBGRID
    for p in range(4):
        obs = np.bincount(cell[patch == p], minlength=100)
        expect = counts[p].numpy()
        if expect.sum() == 0:
            expect = np.ones(100)
        nz = expect > 0
        assert obs[~nz].sum() == 0
        assert chisquare(obs[nz], expect[nz] / expect.sum() * obs.sum()).pvalue > 1e-3


def test_scale_keeps_expected_counts_and_is_deterministic_per_key():
    ratios = torch.tensor(np.random.default_rng(2).uniform(1.0, 3.0, (8, 8)), dtype=torch.float32)
    depth, dmin = per_patch(ratios), torch.ones(H, W)
    n = points_per_side(ratios, 20)
    scaled = sampler(prompt_scale=0.3).sample(H, W, depth=depth, min_depth=dmin, key=5)
    again = sampler(prompt_scale=0.3).sample(H, W, depth=depth, min_depth=dmin, key=5)
    other = sampler(prompt_scale=0.3).sample(H, W, depth=depth, min_depth=dmin, key=6)
    want = 0.3 * n.double() ** 2  # randomised rounding: floor or ceil of the scaled count
    assert ((scaled.counts == torch.floor(want)) | (scaled.counts == torch.ceil(want))).all()
    rows, cols = patch_of(scaled.points)
    counts = np.zeros((8, 8), int)
    np.add.at(counts, (rows, cols), 1)
    assert np.array_equal(counts, scaled.counts.numpy())
    assert np.array_equal(scaled.points, again.points) and not np.array_equal(scaled.points, other.points)
    # Over many keys the mean count per patch is the scaled count (ratios between patches survive).
    mean = torch.stack([sampler(prompt_scale=0.3).sample(H, W, depth=depth, min_depth=dmin, key=k).counts
                        for k in range(200)]).double().mean(0)
    assert torch.allclose(mean, want, atol=0.15)


def test_views_at_1_and_3_m_prompt_a_surface_equally_densely():
    """GaS under the default budget: a textured plane (Gaussians on a 1 cm grid) seen at 1 m, then
    at 3 m, 640 x 480. The surface both views see gets the same prompt density per square metre."""
    h, w, f = 480, 640, 500.0
    k = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    g = torch.arange(-2.0, 2.0, 0.01)
    yy, xx = torch.meshgrid(g[50:-50], g, indexing="ij")  # 3 x 4 m: fills the far view
    plane = torch.stack([xx.reshape(-1), yy.reshape(-1), torch.zeros(xx.numel())], 1)
    rec, s = MinDepthRecord(), PromptSampler(TeacherConfig(), seed=3)  # the default prompt_scale
    density = {}
    for key, dist in enumerate((1.0, 3.0)):  # keyframes in this order: the record knows 1 m first
        depth = torch.full((h, w), dist)
        view = rec.observe(plane, pose(-dist), k, depth)
        pr = s.sample(h, w, depth=depth, min_depth=view.min_depth, density=view.density, key=key)
        x = (pr.points[:, 0] - w / 2) * dist / f  # on the plane, metres
        y = (pr.points[:, 1] - h / 2) * dist / f
        inside = (np.abs(x) < 0.48) & (np.abs(y) < 0.36)  # the surface under the far view's 4 central patches
        density[dist] = inside.sum() / (0.96 * 0.72)
    assert density[1.0] > 100  # prompts per square metre
    assert abs(density[3.0] / density[1.0] - 1) < 0.2, density


def test_uniform_mode():
    from segment_anything.utils.amg import build_point_grid

    pr = sampler(prompt_mode="uniform", uniform_points_per_side=16).sample(H, W)
    assert np.allclose(pr.points, build_point_grid(16) * [W, H]) and pr.n is None


# ---- minimum-depth record ------------------------------------------------------------------------

K = np.array([[50.0, 0, 40], [0, 50.0, 40], [0, 0, 1]])  # 80 x 80 px, 77 deg field of view


def pose(z):
    """Camera at (0, 0, z) looking along +z (world = OpenCV optical axes)."""
    T = np.eye(4)
    T[2, 3] = z
    return T


def plane_depth(cam_z, plane_z=2.0, size=80):
    return torch.full((size, size), plane_z - cam_z)


@pytest.fixture
def scene():
    """A 21 x 21 grid of Gaussians on the plane z = 2 (1.6 m square) plus 5 hidden behind it at z = 5."""
    g = torch.linspace(-0.8, 0.8, 21)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    plane = torch.stack([xx.reshape(-1), yy.reshape(-1), torch.full((441,), 2.0)], 1)
    hidden = torch.tensor([[0.0, 0.0, 5.0]] * 5) + torch.randn(5, 3) * 0.01
    return torch.cat([plane, hidden])


def test_min_depth_record_near_and_far_views(scene):
    rec = MinDepthRecord()
    far = rec.observe(scene, pose(-2.0), K, plane_depth(-2.0))  # plane 4 m away, all of it in view
    assert torch.all(rec.values[:441] == 4.0) and torch.isinf(rec.values[441:]).all()
    assert not far.visible[441:].any()  # behind the plane: |5 - 2| > 0.25 * 4 from this view
    near = rec.observe(scene, pose(1.25), K, plane_depth(1.25))  # 0.75 m away: sees |x|, |y| < 0.6
    seen = near.visible[:441]
    inner = (scene[:441, :2].abs() < 0.6).all(1)
    assert torch.equal(seen, inner)
    assert torch.allclose(rec.values[:441][seen], torch.tensor(0.75))
    assert (rec.values[:441][~seen] == 4.0).all()
    # Splat back into the far view: per pixel the record of the centres landing there, 0 elsewhere.
    again = rec.splat(scene, pose(-2.0), K, plane_depth(-2.0))
    landed = again.min_depth > 0
    assert np.allclose(torch.unique(again.min_depth[landed]).numpy(), [0.75, 4.0])
    assert int(again.density.sum()) == int(again.visible.sum()) == 441
    assert torch.equal(landed, again.density > 0)
    # Eq. 1: the plane covers the far view's central patches; they mix centres seen at 0.75 m and
    # at 4 m, so r = 4 / (their mean) >= 1 and n = floor(4 r), up to 20 in the middle (denser than
    # the near view, which is its own nearest view: r = 1 -> n = 4).
    s = sampler()
    far_p = s.sample(80, 80, depth=plane_depth(-2.0), min_depth=again.min_depth, density=again.density)
    near_p = s.sample(80, 80, depth=plane_depth(1.25), min_depth=near.min_depth, density=near.density)
    defined = torch.isfinite(far_p.ratio)
    blocks = again.min_depth.numpy().reshape(8, 10, 8, 10).transpose(0, 2, 1, 3).reshape(8, 8, 100)
    assert np.array_equal(defined.numpy(), blocks.max(-1) > 0) and 4 <= int(defined.sum()) <= 16
    for r, c in defined.nonzero().tolist():
        expect = 4.0 / blocks[r, c][blocks[r, c] > 0].mean()
        assert far_p.ratio[r, c] == pytest.approx(expect, rel=1e-5) and expect >= 1.0
        assert far_p.n[r, c] == min(20, int(np.floor(4 * expect)))
    assert far_p.ratio[defined].max() > 2.0 and far_p.n.max() > 8
    assert (far_p.n[~defined] == 1).all()
    defined = torch.isfinite(near_p.ratio)
    assert torch.allclose(near_p.ratio[defined], torch.tensor(1.0)) and (near_p.n[defined] == 4).all()
    # Prompts go where the Gaussians are: every far-view prompt of a defined patch lands on the plane.
    rows, cols = patch_of(far_p.points, 8, 80, 80)
    on_plane = far_p.n[rows, cols] > 1
    assert (np.abs(far_p.points[on_plane] - 40) <= 11).all()


def test_min_depth_splat_takes_pixel_minimum():
    rec = MinDepthRecord()
    pts = torch.tensor([[0.0, 0.0, 2.0], [0.001, 0.0, 2.02]])  # same pixel
    rec.observe(pts, pose(0.0), K, plane_depth(0.0))
    rec.values[1] = 1.5  # as if seen closer elsewhere
    v = rec.splat(pts, pose(0.0), K, plane_depth(0.0))
    assert v.min_depth[40, 40] == pytest.approx(1.5) and v.density[40, 40] == 2
    assert (v.min_depth > 0).sum() == 1


def test_min_depth_record_follows_the_map(scene):
    rec = MinDepthRecord()
    rec.observe(scene[:441], pose(0.0), K, plane_depth(0.0))
    before = rec.values.clone()
    rec.observe(scene, pose(0.0), K, plane_depth(0.0))  # map grew: appended Gaussians start unseen
    assert len(rec) == 446 and torch.equal(rec.values[:441], before)
    idx = torch.tensor([3, 2, -1, 0])  # mapper-provided index map (new -> old, -1 = new)
    rec.sync(4, index_map=idx)
    assert rec.values[0] == before[3] and rec.values[1] == before[2] and torch.isinf(rec.values[2])
    rec.sync(2)  # shrink without an index map: pruning reorders, so the record restarts
    assert len(rec) == 2 and torch.isinf(rec.values).all()
    with pytest.raises(ValueError):
        rec.sync(3, index_map=torch.tensor([0, 1]))
