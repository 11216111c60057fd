"""Per-Gaussian records (min-depth, coverage, ...), the language latents and their Adam moments stay
with their Gaussian through gsplat's densification, pruning and MCMC relocation.

The property test drives gsplat 1.5.3's own strategy operations (``gsplat.strategy.ops``) and our
seeding (``append_gaussians``) in random sequences on a small map and compares every row with a
reference model that knows only which Gaussian each row belongs to. Each Gaussian carries an
identity in ``sh0[:, 0, 0]``, which every op copies verbatim (duplicate, split and relocation
copy colours unchanged), so "row i belongs to Gaussian id" can be read off the map itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gsplat import DefaultStrategy
from gsplat.strategy import ops
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gags_ros.core.gaussians import GaussianMap
from gags_ros.core.mapping import Mapper, append_gaussians

F = 3  # latent channels
RECORDS = {"min_depth": float("inf"), "coverage": 0.0}  # name -> value of a freshly seeded Gaussian


def _relocation_torch(opacities, scales, ratios, binoms):
    """gsplat's ``compute_relocation`` (its CUDA kernel, MCMC paper Eq. 9) in plain torch, for CPU
    machines: only the new opacity / scale of the sources depend on it, not which rows move where."""
    n_max = binoms.shape[0]
    ratios = ratios.clamp(1, n_max).long()
    new_op = 1.0 - (1.0 - opacities) ** (1.0 / ratios)
    denom = torch.zeros_like(opacities)
    for j, n in enumerate(ratios.tolist()):
        for i in range(1, n + 1):
            for k in range(i):
                denom[j] += binoms[i - 1, k] * (-1) ** k / math.sqrt(k + 1) * new_op[j] ** (k + 1)
    return new_op, (opacities / denom)[:, None] * scales


@pytest.fixture(autouse=True)
def _cpu_relocation(monkeypatch):
    if not torch.cuda.is_available():
        monkeypatch.setattr(ops, "compute_relocation", _relocation_torch)


BINOMS = torch.tensor([[math.comb(n, k) if k <= n else 0 for k in range(51)] for n in range(51)],
                      dtype=torch.float32)


def identity_row(ident: torch.Tensor) -> torch.Tensor:
    """What the reference model tracks per row: ``[N, 3 + F]`` = (id, min_depth, coverage, latent)."""
    return torch.stack([ident, ident + 0.5, 2.0 * ident, *[ident * 10 + c for c in range(F)]], 1)


def small_map(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    g = GaussianMap.from_points(torch.rand(n, 3, generator=gen), torch.rand(n, 3, generator=gen), 0.05,
                                opacity=0.5)
    ident = torch.arange(1, n + 1, dtype=torch.float32)
    g.params["sh0"].data[:, 0, 0] = ident
    ref = identity_row(ident)
    g.params["features"] = torch.nn.Parameter(ref[:, 3:].clone())
    for j, (name, fill) in enumerate(RECORDS.items()):
        g.add_record(name, fill, init=ref[:, 1 + j])
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in g.params.items() if p.requires_grad}
    # Adam moments of the latents belong to their Gaussian too: the row's id, 0 once reset.
    optimizers["features"].state[g.params["features"]] = {
        "step": torch.tensor(1.0), "exp_avg": ref[:, 3:].clone(), "exp_avg_sq": ref[:, 3:].clone() ** 2}
    return g, optimizers, ref


def observed(g: GaussianMap) -> torch.Tensor:
    return torch.cat([g.params["sh0"][:, 0, :1], g.record("min_depth")[:, None], g.record("coverage")[:, None],
                      g.params["features"]], 1).detach()


OPS = st.sampled_from(["duplicate", "split", "remove", "relocate", "sample_add", "seed"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(4, 24), st.integers(0, 2 ** 16), st.lists(st.tuples(OPS, st.integers(0, 2 ** 16)),
                                                             min_size=1, max_size=8))
def test_records_latents_and_moments_follow_their_gaussian(n, seed, sequence):
    g, optimizers, ref = small_map(n, seed)
    params, state = g.params, {}
    next_id = n + 1
    moments = ref[:, 3:].clone()  # expected exp_avg rows (0 where gsplat resets them)
    for op, s in sequence:
        N = len(g)
        gen = torch.Generator().manual_seed(s)
        mask = torch.rand(N, generator=gen) < 0.3
        torch.manual_seed(s)  # split / relocation draw from the global RNG
        zeros = lambda k: torch.zeros(k, moments.shape[1])  # noqa: E731
        if op == "duplicate":
            ops.duplicate(params, optimizers, state, mask)
            ref, moments = torch.cat([ref, ref[mask]]), torch.cat([moments, zeros(int(mask.sum()))])
        elif op == "split":
            ops.split(params, optimizers, state, mask)
            ref = torch.cat([ref[~mask], ref[mask], ref[mask]])  # children inherit their parent's row
            moments = torch.cat([moments[~mask], zeros(2 * int(mask.sum()))])
        elif op == "remove":
            if mask.all():
                continue
            ops.remove(params, optimizers, state, mask)
            ref, moments = ref[~mask], moments[~mask]
        elif op == "relocate":
            if mask.all() or not mask.any():
                continue
            before = observed(g)
            old_moments = optimizers["features"].state[params["features"]]["exp_avg"].clone()
            ops.relocate(params, optimizers, state, mask, BINOMS)
            # A relocated (dead) row becomes a copy of a live source: it takes the source's whole row.
            got_ids = params["sh0"][:, 0, 0].detach()
            src = {float(i): r for i, r in zip(before[~mask, 0].tolist(), ref[~mask])}
            assert set(got_ids[mask].tolist()) <= set(src)
            ref = ref.clone()
            ref[mask] = torch.stack([src[float(i)] for i in got_ids[mask].tolist()])
            # Moments: gsplat zeroes the sources' and leaves the relocated rows' (theirs before).
            now = optimizers["features"].state[params["features"]]["exp_avg"]
            live = ~mask
            assert torch.all((now[live] == moments[live]).all(1) | (now[live] == 0).all(1))
            assert torch.equal(now[mask], old_moments[mask])
            moments = now.clone()
        elif op == "sample_add":
            k = 1 + s % 5
            before_ids = params["sh0"][:, 0, 0].detach().clone()
            ops.sample_add(params, optimizers, state, k, BINOMS)
            new_ids = params["sh0"][N:, 0, 0].detach()
            rows = {float(i): r for i, r in zip(before_ids.tolist(), ref)}
            ref = torch.cat([ref, torch.stack([rows[float(i)] for i in new_ids.tolist()])])
            now = optimizers["features"].state[params["features"]]["exp_avg"]
            assert torch.all((now[:N] == moments).all(1) | (now[:N] == 0).all(1)) and not now[N:].any()
            moments = now.clone()
        else:  # seeding: new Gaussians with their own identity, records at their fill value
            k = 1 + s % 4
            ident = torch.arange(next_id, next_id + k, dtype=torch.float32)
            next_id += k
            new = {"means": torch.rand(k, 3), "scales": torch.full((k, 3), -3.0), "quats": torch.randn(k, 4),
                   "opacities": torch.zeros(k), "sh0": torch.stack([ident, ident, ident], 1)[:, None, :]}
            append_gaussians(params, optimizers, state, new, g.records)
            fresh = torch.cat([ident[:, None], torch.tensor([list(RECORDS.values())]).expand(k, -1),
                               torch.zeros(k, F)], 1)
            ref, moments = torch.cat([ref, fresh]), torch.cat([moments, zeros(k)])
        got = observed(g)
        assert got.shape == ref.shape, op
        assert torch.equal(got, ref), (op, got, ref)
        assert torch.equal(optimizers["features"].state[params["features"]]["exp_avg"], moments), op
        for name in RECORDS:
            assert not params[name].requires_grad and name not in optimizers
        assert optimizers["features"].param_groups[0]["params"][0] is params["features"]


# --------------------------------------------------------------------------------------------------
# The mapper's own strategy step and the min-depth record of GaS
# --------------------------------------------------------------------------------------------------

def _mapper_with_identities(strategy=None):
    from tests.test_mapper import INTR, RENDERER, make_frame, orbit_pose, small_cfg

    cfg = small_cfg(max_gaussians=2000, init_points_per_keyframe=300, lr_colors=0.0)
    m = Mapper(cfg, RENDERER, "cpu", strategy=strategy)
    m.add_frame(make_frame(orbit_pose(0.0), with_depth=True))
    n = len(m.gaussians)
    m.gaussians.params["sh0"].data[:, 0, 0] = torch.arange(1, n + 1, dtype=torch.float32)
    return m, INTR, make_frame, orbit_pose


def test_mapper_densification_carries_records_and_new_seeds_start_at_their_fill():
    """gsplat's DefaultStrategy through the mapper (grow everything, prune, the Gaussian budget):
    a record set from each Gaussian's identity still matches it; seeds start at the fill value."""
    strategy = DefaultStrategy(refine_start_iter=0, refine_every=1, grow_grad2d=0.0, refine_stop_iter=10 ** 9)
    m, _, make_frame, orbit_pose = _mapper_with_identities(strategy)
    n0 = len(m.gaussians)
    # Every visible Gaussian grows: the smaller half duplicate, the larger half split.
    size = m.gaussians.scales.detach().max(-1).values.median()
    strategy.grow_scale3d = float(size) / m.strategy_state["scene_scale"]
    rec = m.add_record("probe", fill=-1.0)
    rec.copy_(m.gaussians.params["sh0"][:, 0, 0] + 0.5)
    m.step(2)
    g = m.gaussians
    assert len(g) > n0  # it densified, and split: parents left their rows for the end
    assert not torch.equal(g.params["sh0"][:n0, 0, 0], torch.arange(1, n0 + 1, dtype=torch.float32))
    np.testing.assert_array_equal(g.record("probe").numpy(), (g.params["sh0"][:, 0, 0] + 0.5).detach().numpy())
    n1 = len(g)
    m.add_frame(make_frame(orbit_pose(0.3), with_depth=True))
    assert len(g) > n1 and torch.all(g.record("probe")[n1:] == -1.0)
    assert "probe" not in g.state_dict() and "probe" not in m.optimizers


def test_teacher_min_depth_record_follows_split_and_prune():
    """The minimum-depth record of GaS (GAGS Eq. 1) stays with its Gaussian: split children inherit
    their parent's D_min, pruned Gaussians take theirs away (the old record assumed appends at the
    end and gave the children other Gaussians' values, and wiped itself on a net shrink)."""
    from gags_ros.core.config import GagsConfig
    from gags_ros.core.pipeline import GagsPipeline
    from tests.test_sim_teacher import LABELS

    cfg = GagsConfig()
    cfg.teacher.segmenter = "sim"
    m, intr, make_frame, orbit_pose = _mapper_with_identities()
    p = GagsPipeline(cfg, teacher_options={"labels": LABELS})
    p.mapper = m
    p._ensure_language()
    frame = make_frame(orbit_pose(0.0), with_depth=True)
    assert p.teacher.mapper is m  # the teacher owns the map's record
    p.teacher.view_inputs(frame)  # observes the keyframe: D_min of every visible Gaussian
    g = m.gaussians
    ids = g.params["sh0"][:, 0, 0].detach().clone()
    dmin = dict(zip(ids.tolist(), p.teacher.min_depth.values.clone().tolist()))
    assert np.isfinite(list(dmin.values())).mean() > 0.5
    gen = torch.Generator().manual_seed(0)
    state = m._strategy_state_for_ops()
    ops.split(g.params, m.optimizers, state, torch.rand(len(g), generator=gen) < 0.3)
    ops.remove(g.params, m.optimizers, state, torch.rand(len(g), generator=gen) < 0.4)
    want = torch.tensor([dmin[i] for i in g.params["sh0"][:, 0, 0].tolist()])
    got = p.teacher.min_depth.splat(g.means.detach(), frame.T_world_cam, frame.intrinsics.K,
                            torch.ones(intr.height, intr.width))  # no update, just the record's use
    assert got.min_depth.shape == (intr.height, intr.width)
    torch.testing.assert_close(p.teacher.min_depth.values, want, rtol=0, atol=0)


def test_features_are_read_and_replaced_through_the_map():
    import torch

    from gags_ros.core.gaussians import GaussianMap

    g = GaussianMap.from_points(torch.zeros(5, 3), torch.zeros(5, 3), 0.01)
    with pytest.raises(KeyError, match="no language latents"):
        g.features
    g.set_features(torch.ones(5, 4))
    param = g.features
    assert param.shape == (5, 4) and param.requires_grad
    g.set_features(torch.full((5, 4), 2.0))            # same shape: the same parameter, new values
    assert g.features is param and torch.all(param == 2.0)
    g.set_features(torch.zeros(5, 8), trainable=False)  # another width: a new parameter
    assert g.features.shape == (5, 8) and not g.features.requires_grad
    with pytest.raises(ValueError, match="3 Gaussians, the map has 5"):
        g.set_features(torch.zeros(3, 8))
