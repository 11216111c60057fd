"""Query engine: relevancy formula, 3D targets on a planted-feature map, cleanup and clustering
against brute force, the 2D LERF protocol functions."""

import math
import zlib

import numpy as np
import pytest
import torch

from gags_ros.core.camera import look_at
from gags_ros.core.config import GagsConfig
from gags_ros.core.gaussians import GaussianMap
from gags_ros.core.language.field import LanguageField
from gags_ros.core.query import QueryEngine, cleanup_mask, connected_components, relevancy
from gags_ros.eval.lerf_ovs import iou, localisation_hit, segmentation_mask
from gags_ros.core.types import Intrinsics

DIM = 64
CANONICAL = ["object", "things", "stuff", "texture"]
MUG_CENTRE = np.array([0.5, 0.2, 1.0])
CHAIR_CENTRE = np.array([-0.4, 0.0, 1.5])


class FakeTextEncoder:
    """Deterministic unit embeddings with CLIP-like structure: every text shares a common direction;
    canonical phrases lean on it more than object names, so an object's embedding is closer to
    "object" than to another object's name (as with CLIP) and relevancy ranks like LERF's."""

    def __init__(self, dim: int = DIM):
        self.dim = dim
        self.common = self._direction("<common>")
        self.calls = 0

    def _direction(self, text: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
        return torch.nn.functional.normalize(torch.randn(self.dim, generator=g), dim=0)

    def embed(self, text: str) -> torch.Tensor:
        s = self._direction(text)
        s = torch.nn.functional.normalize(s - (s @ self.common) * self.common, dim=0)
        a, b = (0.8, 0.6) if text in CANONICAL else (0.6, 0.8)
        return a * self.common + b * s

    def __call__(self, texts):
        self.calls += 1
        return torch.stack([self.embed(t) for t in texts])



def cluster_cfg():
    """The query config of the connected-component extraction (targets=cluster, threshold 0.4) that
    these tests exercise; the default targets=mass has its own tests (test_answers.py)."""
    cfg = GagsConfig().query
    cfg.targets, cfg.threshold = "cluster", 0.4
    return cfg

def _box_points(centre, size, n, gen):
    return torch.as_tensor(centre, dtype=torch.float32) + (torch.rand(n, 3, generator=gen) - 0.5) * torch.tensor(size)


def planted_map(seed: int = 0, two_mugs: bool = False):
    """A map with a "red mug" blob and a "blue chair" blob, sparse "stuff" Gaussians around them and
    a few isolated "red mug" speckles; a decoder trained to decode the planted latents.

    Returns ``(gaussians, field, encoder, parts)`` with ``parts`` a dict of index arrays.
    """
    gen = torch.Generator().manual_seed(seed)
    enc = FakeTextEncoder()
    mug = _box_points(MUG_CENTRE, (0.08, 0.06, 0.10), 300, gen)
    chair = _box_points(CHAIR_CENTRE, (0.12, 0.10, 0.12), 300, gen)
    stuff = torch.rand(400, 3, generator=gen) * torch.tensor([2.0, 2.0, 2.0]) + torch.tensor([-1.0, -1.0, 0.5])
    speckle = torch.tensor([[0.9, -0.8, 2.3], [-0.9, 0.9, 0.6], [0.0, -0.9, 2.4]])
    blocks = [mug, chair, stuff, speckle]
    codes = [torch.zeros(16) for _ in range(3)]
    for k in range(3):
        codes[k][k] = 3.0
    kinds = [0, 1, 2, 0]
    if two_mugs:
        blocks.append(_box_points(MUG_CENTRE + np.array([0.0, 0.0, 0.8]), (0.08, 0.06, 0.10), 300, gen))
        kinds.append(0)
    pts = torch.cat(blocks)
    latents = torch.cat([codes[k] + 0.05 * torch.randn(len(b), 16, generator=gen) for b, k in zip(blocks, kinds)])
    g = GaussianMap.from_points(pts, torch.full_like(pts, 0.5), 0.01, opacity=0.9)
    g.params["features"] = torch.nn.Parameter(latents)
    bounds = np.cumsum([0] + [len(b) for b in blocks])
    parts = {name: np.arange(bounds[i], bounds[i + 1]) for i, name in enumerate(["mug", "chair", "stuff", "speckle"])}
    if two_mugs:
        parts["mug2"] = np.arange(bounds[4], bounds[5])

    # Decoder: mug code -> "red mug", chair code -> "blue chair", stuff code and zero -> "stuff".
    torch.manual_seed(seed)
    field = LanguageField(16, DIM)
    targets = enc(["red mug", "blue chair", "stuff"])
    x = torch.cat([c + 0.05 * torch.randn(16, 16, generator=gen) for c in codes] + [torch.zeros(4, 16)])
    y = torch.cat([targets[k].expand(16, DIM) for k in range(3)] + [targets[2].expand(4, DIM)])
    opt = torch.optim.Adam(field.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        loss = (field.decode(x) - y).abs().mean()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01, f"decoder planting did not converge ({loss.item():.4f})"
    return g, field, enc, parts


@pytest.fixture(scope="module")
def planted():
    return planted_map()


def test_relevancy_matches_direct_formula():
    torch.manual_seed(0)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, dtype=torch.float64), dim=-1)  # noqa: E731
    phi, q, c = unit(50, 8), unit(3, 8), unit(4, 8)
    direct = torch.empty(50, 3, dtype=torch.float64)
    for i in range(50):
        for t in range(3):
            a = math.exp(10 * float(phi[i] @ q[t]))
            direct[i, t] = min(a / (a + math.exp(10 * float(phi[i] @ c[k]))) for k in range(4))
    assert torch.allclose(relevancy(phi, q, c, 10.0).double(), direct, atol=1e-6)
    # large temperatures must not overflow
    assert torch.isfinite(relevancy(phi, q, c, 1000.0)).all()


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_decode_dot_matches_decode(dtype):
    # the fused relevancy path (no [n, D] embeddings, folded biases, QR of the last layer) against
    # decode() @ v in float64; biases made large so that a wrong fold could not hide
    torch.manual_seed(0)
    field = LanguageField(16, 96)
    with torch.no_grad():
        for p in field.parameters():
            p.add_(0.2 * torch.randn_like(p))
    f = torch.randn(500, 16)
    v = torch.nn.functional.normalize(torch.randn(7, 96), dim=-1)

    def reference():
        with torch.no_grad():
            return field.double().decode(f.double()).double() @ v.double().T

    ref = reference()
    field.float()
    got = field.decode_dot(f, v, dtype)
    assert got.shape == (500, 7) and got.dtype == torch.float32
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        direct = field.decode(f).float() @ v.T
    tol = 1e-5 if dtype is None else 4e-3                 # bfloat16 operands, like autocast
    assert (got.double() - ref).abs().max() < tol
    assert (got - direct).abs().max() < 2 * tol
    # the cached fold follows the weights: an optimiser step changes the answer
    opt = torch.optim.SGD(field.parameters(), lr=0.5)
    field.decode(f).sum().backward()
    opt.step()
    with torch.no_grad():
        after = field.decode(f).float() @ v.T
    assert (field.decode_dot(f, v) - after).abs().max() < 1e-5
    assert (after - direct).abs().max() > 1e-2


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_latent_relevancy_matches_the_direct_formula(planted, precision):
    g, field, enc, parts = planted
    cfg = cluster_cfg()
    cfg.decode_precision = precision
    cfg.chunk_size = 256                                  # several chunks
    eng = QueryEngine(cfg, enc)
    emb = eng.encode(["red mug", "blue chair", "laptop"], "cpu")
    lat = g.params["features"].detach()
    idx = torch.arange(0, len(g), 3)
    got = eng.latent_relevancy(field, lat, emb, idx)
    with torch.no_grad():
        direct = relevancy(field.decode(lat[idx]), emb, eng.canonical("cpu"), cfg.temperature)
    assert got.shape == direct.shape == (len(idx), 3)
    # bfloat16: closer to float32 than bfloat16 autocast of decode() (which rounds the embeddings)
    assert (got - direct).abs().max() < (1e-5 if precision == "float32" else 5e-3)


def test_planted_query_returns_the_blob(planted):
    """targets=cluster (peak targets: tests/test_answers.py)."""
    g, field, enc, parts = planted
    cfg = cluster_cfg()
    cfg.targets = "cluster"
    eng = QueryEngine(cfg, enc)
    res_mug, res_chair = eng.query(g, field, ["red mug", "blue chair"])
    means = g.params["means"].detach().numpy().astype(np.float64)
    for res, name in ((res_mug, "mug"), (res_chair, "chair")):
        assert res.reason == "" and len(res.targets) == 1, (res.reason, res.targets)
        t = res.targets[0]
        blob = means[parts[name]]
        assert np.array_equal(np.sort(t.indices), parts[name])   # speckles and stuff left out
        assert t.count == len(parts[name])
        # location and score: the blob's Gaussians within peak_radius of its most relevant one
        rel = eng.gaussian_relevancy(g, field, eng.encode([res.text], "cpu"))[:, 0].numpy().astype(np.float64)
        r = rel[parts[name]]
        near = np.linalg.norm(blob - blob[r.argmax()], axis=1) <= cfg.peak_radius
        assert 1 < near.sum() < len(blob)
        np.testing.assert_allclose(t.centroid, blob[near].mean(0), atol=1e-5)
        assert t.score == pytest.approx(r[near].mean(), abs=1e-5)
        np.testing.assert_allclose(t.box_min, blob.min(0), atol=1e-6)
        np.testing.assert_allclose(t.box_max, blob.max(0), atol=1e-6)
        assert 0.9 < t.score <= 1.0 and t.label == res.text
    # the speckles were selected, then removed as isolated
    assert res_mug.selected == len(parts["mug"]) + len(parts["speckle"]) and res_mug.kept == len(parts["mug"])
    # canonical phrases are encoded once and cached
    calls = enc.calls
    eng.query(g, field, ["red mug"])
    assert enc.calls == calls + 1


class _ScoreField:
    """A field whose latents carry their dot products: column 0 is the dot with the (one) query
    text, column 1 with every canonical phrase, so relevancy = sigmoid(T (f0 - f1)) exactly."""

    embed_dim = DIM

    def dot_plan(self, vecs, dtype=None):
        return lambda f: torch.cat([f[:, :1], f[:, 1:2].expand(-1, vecs.shape[0] - 1)], dim=1)


def test_target_location_is_its_relevancy_peak_not_the_mean_of_what_it_touches():
    """A highly relevant mug standing on a large, moderately relevant table top: both are selected
    and joined into one target (targets=cluster). Its location (centroid) and score come from the
    relevancy peak (the mug); its box covers everything it joined (the table too)."""
    gen = torch.Generator().manual_seed(3)
    mug_c = np.array([0.3, 0.3, 0.06])
    mug = _box_points(mug_c, (0.08, 0.08, 0.10), 300, gen)
    xs = torch.arange(-0.4, 0.4, 0.015)
    gx, gy = torch.meshgrid(xs, xs, indexing="ij")
    table = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.zeros(gx.numel())], dim=1)   # z = 0
    far = torch.rand(200, 3, generator=gen) * 2 + torch.tensor([2.0, 2.0, 0.0])               # irrelevant
    pts = torch.cat([mug, table, far])
    f = torch.zeros(len(pts), 2)
    d_mug = torch.linalg.norm(mug - torch.as_tensor(mug_c, dtype=torch.float32), dim=1)
    f[:300, 0] = 1.0 + 0.5 * (0.1 - d_mug)                # mug: relevancy ~1, highest at its middle
    f[300:300 + len(table)] = torch.tensor([0.55, 0.5])   # table: sigmoid(0.5) = 0.62
    f[300 + len(table):] = torch.tensor([0.0, 1.0])       # elsewhere ~0
    g = GaussianMap.from_points(pts, torch.full_like(pts, 0.5), 0.01, opacity=0.9)
    g.params["features"] = torch.nn.Parameter(f)
    cfg = cluster_cfg()
    cfg.targets = "cluster"
    eng = QueryEngine(cfg, FakeTextEncoder())
    (res,) = eng.query(g, _ScoreField(), ["red mug"])
    assert res.reason == "" and len(res.targets) == 1
    t = res.targets[0]
    assert t.count > 300 + 0.9 * len(table)               # mug and table are one target...
    assert t.box_min[0] < -0.35 and t.box_max[0] > 0.33   # ...whose box spans the table
    mug_lo, mug_hi = mug.min(0).values.numpy(), mug.max(0).values.numpy()
    assert np.all(t.centroid >= mug_lo) and np.all(t.centroid <= mug_hi), t.centroid   # but it is the mug
    assert np.linalg.norm(t.centroid - mug_c) < 0.03
    assert t.score > 0.99
    # the mean of everything the target joined lies on the table, far from the mug
    assert np.linalg.norm(pts[t.indices].numpy().mean(0) - mug_c) > 0.2


@pytest.mark.parametrize("targets", ["cluster", "peak"])
def test_targets_sorted_capped_and_filtered(targets):
    g, field, enc, parts = planted_map(seed=1, two_mugs=True)
    cfg = cluster_cfg()
    cfg.targets = targets
    eng = QueryEngine(cfg, enc)
    (res,) = eng.query(g, field, ["red mug"])
    assert len(res.targets) == 2
    assert res.targets[0].score >= res.targets[1].score
    got = sorted(tuple(np.sort(t.indices)[:1]) for t in res.targets)
    assert got == sorted([(parts["mug"][0],), (parts["mug2"][0],)])
    (one,) = eng.query(g, field, ["red mug"], max_targets=1)
    assert len(one.targets) == 1 and one.targets[0].score == res.targets[0].score
    (none,) = eng.query(g, field, ["red mug"], min_score=0.99999)
    assert none.targets == [] and "query.min_score" in none.reason


def test_low_opacity_gaussians_are_not_selected(planted):
    g0, field, enc, parts = planted
    g = GaussianMap({k: v.detach().clone() for k, v in g0.params.items()})
    g.params["opacities"].data[parts["mug"][:150]] = torch.logit(torch.tensor(0.01))
    (res,) = QueryEngine(cluster_cfg(), enc).query(g, field, ["red mug"])
    assert len(res.targets) == 1
    assert np.array_equal(np.sort(res.targets[0].indices), parts["mug"][150:])


def test_empty_answers_say_why(planted):
    g, field, enc, parts = planted
    eng = QueryEngine(cluster_cfg(), enc)
    (r,) = eng.query(GaussianMap(), field, ["red mug"])
    assert r.targets == [] and "empty" in r.reason
    bare = GaussianMap({k: v.detach() for k, v in g.params.items() if k != "features"})
    (r,) = eng.query(bare, None, ["red mug"])
    assert r.targets == [] and "no language features" in r.reason
    r_empty, r_long, r_ok = eng.query(g, field, ["  ", "x" * 300, "red mug"])
    assert "empty query text" in r_empty.reason and "max_text_length" in r_long.reason
    assert len(r_ok.targets) == 1
    flat = GaussianMap({k: v.detach().clone() for k, v in g.params.items()})
    flat.params["features"].data[:] = 0.0          # every Gaussian decodes alike: nothing stands out
    (r,) = eng.query(flat, field, ["red mug"])
    assert r.targets == [] and "threshold" in r.reason


def _reference_cleanup(pts, r, keep, drop):
    from scipy.spatial import cKDTree

    p = pts.double().numpy()
    nbrs = cKDTree(p).query_ball_point(p, r)
    cnt = np.array([len(x) - 1 for x in nbrs])
    core = cnt > keep
    out = core.copy()
    for i in np.where((cnt >= drop) & (cnt <= keep))[0]:
        out[i] = any(core[j] for j in nbrs[i] if j != i)
    return out


def test_cleanup_rule_by_hand():
    gen = torch.Generator().manual_seed(0)
    a = (torch.rand(25, 3, generator=gen) - 0.5) * 0.004              # 25 points: core
    b = (torch.rand(12, 3, generator=gen) - 0.5) * 0.004 + torch.tensor([0.09, 0, 0])  # 11 neighbours each
    lone = torch.tensor([[1.0, 1.0, 1.0], [1.01, 1.0, 1.0]])
    kept = cleanup_mask(torch.cat([a, b, lone]), 0.05, 20, 10)
    assert kept[:25].all() and not kept[25:].any()        # b: border points without a core neighbour
    q = torch.tensor([[0.045, 0.0, 0.0]])                 # 37 neighbours: core, and next to b
    kept = cleanup_mask(torch.cat([a, b, q, lone]), 0.05, 20, 10)
    assert kept[:38].all() and not kept[38:].any()        # b now borders a core point


@pytest.mark.parametrize("seed", range(6))
def test_cleanup_and_clusters_match_brute_force(seed):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_cc
    from scipy.spatial import cKDTree

    gen = torch.Generator().manual_seed(seed)
    n = 300 + 400 * seed
    pts = torch.rand(n, 3, generator=gen) * (0.3 + 0.3 * seed)
    if seed % 2:
        pts[:, 2] = 0.0                                   # a surface: many points per cell
    max_pairs = [50, 1000, 1 << 20][seed % 3]             # exercise chunking
    kept = cleanup_mask(pts, 0.05, 20, 10, max_pairs=max_pairs)
    assert np.array_equal(kept.numpy(), _reference_cleanup(pts, 0.05, 20, 10))
    labels = connected_components(pts, 0.1, max_pairs=max_pairs).numpy()
    pairs = cKDTree(pts.double().numpy()).query_pairs(0.1, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    nc, ref = scipy_cc(graph, directed=False)
    assert labels.max() + 1 == nc
    assert len(set(zip(labels.tolist(), ref.tolist()))) == nc   # same partition


def test_cleanup_cell_table_path_matches_brute_force(monkeypatch):
    # large selections count pairs per (cell, offset) instead of per (point, offset)
    import gags_ros.core.query.spatial as query

    monkeypatch.setattr(query, "_POINT_TABLE_MAX", 0)
    gen = torch.Generator().manual_seed(7)
    pts = torch.rand(1500, 3, generator=gen) * 0.6
    pts[:, 2] = 0.0
    for max_pairs in (1000, 1 << 20):
        kept = cleanup_mask(pts, 0.05, 20, 10, max_pairs=max_pairs)
        assert np.array_equal(kept.numpy(), _reference_cleanup(pts, 0.05, 20, 10))


def test_localisation_hit():
    yy, xx = torch.meshgrid(torch.arange(60.0), torch.arange(80.0), indexing="ij")
    r = torch.exp(-((xx - 40) ** 2 + (yy - 30) ** 2) / (2 * 6.0 ** 2))   # an object in the middle
    r[0, 0] = 50.0                                       # a hot corner pixel (a floater)
    hit, (x, y) = localisation_hit(r, [[33, 23, 47, 37]])
    # reflect-101 borders: the corner pixel weighs 50 / 900 in its own window (a replicated border
    # would give it 256 copies, 14.2, far above the object's ~0.25): the peak stays on the object
    assert hit and abs(x - 40) <= 1 and abs(y - 30) <= 1
    assert not localisation_hit(r, [[0, 0, 20, 20]])[0]
    assert localisation_hit(r, np.array([[0, 0, 20, 20], [33, 23, 47, 37]]))[0]


def test_segmentation_mask_and_iou():
    r = torch.full((60, 80), 0.1)
    r[20:40, 30:60] = 0.9
    r[2, 2] = 1.0                                       # speckle removed by smoothing + majority
    m = segmentation_mask(r)
    gt = torch.zeros(60, 80, dtype=torch.bool)
    gt[20:40, 30:60] = True
    assert not m[2, 2] and iou(m, gt) > 0.85
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True                                    # 4 pixels
    b[1:3, 1:3] = True                                  # 4 pixels, overlap 1
    assert iou(a, b) == pytest.approx(1 / 7)
    assert iou(a, a) == 1.0 and iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def test_relevancy_image_of_a_rendered_view(planted):
    from gags_ros.core.render.factory import make_renderer

    g, field, enc, parts = planted
    eng = QueryEngine(cluster_cfg(), enc)
    T = look_at(MUG_CENTRE - np.array([0.0, 0.0, 0.6]), MUG_CENTRE, up=(0.0, -1.0, 0.0))
    intr = Intrinsics(40.0, 40.0, 16.0, 12.0, 32, 24)
    rel = eng.relevancy_image(make_renderer("torch", "cpu"), g, field, T, intr, ["red mug", "blue chair"])
    assert rel.shape == (2, 24, 32)
    # the mug fills the centre of the view (0.08 m at 0.55 m, 40 px focal: ~6 px wide)
    assert rel[0, 11:13, 15:17].min() > 0.9
    assert rel[1, 11:13, 15:17].max() < 0.5
    hit, _ = localisation_hit(rel[0], [[12, 8, 20, 16]], kernel=5)
    assert hit


def test_bfloat16_decoding_finds_the_same_target(planted):
    # the arithmetic CUDA uses by default (decode_precision "auto"), exercised on the CPU
    g, field, enc, parts = planted
    cfg = cluster_cfg()
    cfg.decode_precision = "bfloat16"
    (res,) = QueryEngine(cfg, enc).query(g, field, ["red mug"])
    assert len(res.targets) == 1 and np.array_equal(np.sort(res.targets[0].indices), parts["mug"])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_gpu_decode_dot_matches_decode(dtype):
    # cuBLASLt paths (bias/ReLU epilogues, in-place residual GEMM, float32 output) on the GPU
    torch.manual_seed(0)
    field = LanguageField(16, 512)
    with torch.no_grad():
        for p in field.parameters():
            p.add_(0.05 * torch.randn_like(p))
    f = torch.randn(20000, 16)
    v = torch.nn.functional.normalize(torch.randn(9, 512), dim=-1)
    with torch.no_grad():
        ref = field.double().decode(f.double()).double() @ v.double().T
    field.float().cuda()
    got = field.decode_dot(f.cuda(), v.cuda(), dtype).double().cpu()
    assert (got - ref).abs().max() < (1e-5 if dtype is None else 4e-3)


@pytest.mark.gpu
def test_gpu_query_matches_cpu(planted):
    g, field, enc, parts = planted
    cuda = GaussianMap({k: v.detach() for k, v in g.params.items()}, device="cuda")
    eng = QueryEngine(cluster_cfg(), lambda ts: enc(ts).cuda())
    eng_cpu = QueryEngine(cluster_cfg(), enc)
    res = eng.query(cuda, field.to("cuda"), ["red mug", "blue chair"])
    field.to("cpu")
    for r, name in zip(res, ["mug", "chair"]):
        assert len(r.targets) == 1 and np.array_equal(np.sort(r.targets[0].indices), parts[name])
        cpu = eng_cpu.query(g, field, [r.text])[0].targets[0]
        np.testing.assert_allclose(r.targets[0].centroid, cpu.centroid, atol=1e-5)
        assert r.targets[0].score == pytest.approx(cpu.score, abs=1e-4)
