"""CLIP-GS: sampling and grouping, serialisation, canonicalisation, encoder, save format, losses,
query helpers and a tiny training run (CPU, a few seconds each; no text model is loaded: captions
get fixed random embeddings, the text tower being frozen anyway)."""

import math
import zlib

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gags_ros.core.clipgs import objects as ob
from gags_ros.sim import clipgs_objects as so
from gags_ros.core.clipgs import tokenizer as tk
from gags_ros.core.clipgs.classify import (MapObject, classification_metrics, classify, language_clusters,
                                           retrieval_metrics, retrieve)
from gags_ros.core.clipgs.encoder import EncoderConfig, ClipGSEncoder, load_encoder, load_image_tower, save_encoder
from gags_ros.core.clipgs.text import TextEmbedder
from gags_ros.sim.clipgs_train import (TrainConfig, build_triplets, embed_views, encode_attrs, image_voting_infonce,
                                        text_infonce, train_encoder, train_image_tower)
from gags_ros.core.clipgs.views import ImageTower, render_views, ring_cameras, view_cameras
from gags_ros.core.gaussians import GaussianMap
from gags_ros.core.render.factory import make_renderer
from gags_ros.sim import make_scene



def fake_text(texts):
    """Fixed random unit vector per text (crc32-seeded): a frozen 32-d stand-in text tower."""
    out = []
    for t in texts:
        g = torch.Generator().manual_seed(zlib.crc32(t.encode()))
        out.append(F.normalize(torch.randn(32, generator=g), dim=0))
    return torch.stack(out)


TINY = EncoderConfig(embed_dim=32, width=32, depth=1, heads=2, mlp_ratio=2.0, num_patches=8, patch_size=8,
                    budget=64, pointnet_width=8)


def _cloud(seed=0, n=400):
    g = torch.Generator().manual_seed(seed)
    # Uneven density: a dense blob plus a sparse spread, where random picks crowd in the blob.
    dense = torch.randn(n // 2, 3, generator=g) * 0.05
    sparse = torch.rand(n - n // 2, 3, generator=g) * 2 - 1
    return torch.cat([dense, sparse])


def _min_pairwise(p):
    d = torch.cdist(p, p)
    d.fill_diagonal_(float("inf"))
    return float(d.min())


# ------------------------------------------------------------------------------------------------
# Sampling and grouping
# ------------------------------------------------------------------------------------------------

def test_fps_spreads_points_better_than_random_picks():
    pts = _cloud()
    idx = tk.farthest_point_sampling(pts[None], 32)[0]
    assert len(set(idx.tolist())) == 32
    fps_min = _min_pairwise(pts[idx])
    g = torch.Generator().manual_seed(1)
    best_random = max(_min_pairwise(pts[torch.randperm(len(pts), generator=g)[:32]]) for _ in range(20))
    assert fps_min >= best_random
    # Greedy FPS is a 2-approximation of the optimal spread: no point is farther from the picks
    # than the smallest distance between two picks.
    cover = torch.cdist(pts, pts[idx]).min(dim=1).values.max()
    assert float(cover) <= fps_min + 1e-6


def test_fps_first_point_and_batching():
    pts = _cloud()
    first = tk.farthest_point_sampling(pts[None], 8, start="first")[0]
    assert int(first[0]) == 0
    far = tk.farthest_point_sampling(pts[None], 8, start="farthest")[0]
    assert int(far[0]) == int((pts - pts.mean(0)).norm(dim=1).argmax())
    # Geometry only: a permuted cloud gives the same points.
    perm = torch.randperm(len(pts), generator=torch.Generator().manual_seed(3))
    far_p = tk.farthest_point_sampling(pts[perm][None], 8)[0]
    assert torch.equal(pts[perm][far_p], pts[far])
    # Batched = one by one, and repeatable.
    other = _cloud(seed=5)
    both = tk.farthest_point_sampling(torch.stack([pts, other]), 8)
    assert torch.equal(both[0], far)
    assert torch.equal(both[1], tk.farthest_point_sampling(other[None], 8)[0])
    with pytest.raises(ValueError):
        tk.farthest_point_sampling(pts[None, :4], 8)


def test_knn_patches_shapes_and_membership():
    pts = torch.stack([_cloud(0), _cloud(1)])                         # [2, 400, 3]
    cidx = tk.farthest_point_sampling(pts, 6)
    centres = tk.gather(pts, cidx)
    pidx = tk.knn_patches(pts, centres, 10)
    assert pidx.shape == (2, 6, 10)
    for b in range(2):
        for j in range(6):
            d = (pts[b] - centres[b, j]).norm(dim=1)
            want = set(torch.argsort(d)[:10].tolist())
            assert set(pidx[b, j].tolist()) == want
            assert int(pidx[b, j, 0]) == int(cidx[b, j])              # the centre is its own nearest
    tok = tk.GSTokenizer(19, 16, num_patches=6, patch_size=10, pointnet_width=8)
    attrs = torch.cat([pts, torch.rand(2, 400, 16)], dim=-1)
    patches, c = tok.group(attrs)
    assert patches.shape == (2, 6, 10, 19) and c.shape == (2, 6, 3)
    # xyz is relative to the patch centre; the other attributes are copied unchanged.
    assert torch.allclose(patches[0, 0, :, :3] + c[0, 0], tk.gather(attrs, pidx)[0, 0, :, :3], atol=1e-6)
    assert torch.equal(patches[..., 3:], tk.gather(attrs, pidx)[..., 3:])


# ------------------------------------------------------------------------------------------------
# Serialisation
# ------------------------------------------------------------------------------------------------

def test_serialisation_orders_are_permutations():
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(3, 40, 3, generator=g) * 2 - 1
    for order in tk.ORDERS:
        perm = tk.serialize(centres, order)
        assert perm.shape == (3, 40)
        for row in perm:
            assert sorted(row.tolist()) == list(range(40))
    # Lexicographic order really sorts by x first.
    p = tk.serialize(centres, "xyz")
    xs = tk.gather(centres, p)[0, :, 0]
    assert torch.all(xs[1:] >= xs[:-1])


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_space_filling_codes_on_a_full_grid(bits):
    r = torch.arange(1 << bits)
    q = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    for fn in (tk.hilbert_code, tk.morton_code, tk.lexicographic_code):
        assert torch.equal(fn(q, bits).sort().values, torch.arange(len(q)))      # a bijection
    order = tk.hilbert_code(q, bits).argsort()
    steps = (q[order][1:] - q[order][:-1]).abs().sum(dim=1)
    assert torch.all(steps == 1)                                   # Hilbert: always a face neighbour
    morton = tk.morton_code(q, bits).argsort()
    assert (q[morton][1:] - q[morton][:-1]).abs().sum(dim=1).max() > 1 or bits == 0
    assert int(tk.morton_code(torch.tensor([[1, 0, 0]]), 1)) == 4  # x is the highest bit of a level


# ------------------------------------------------------------------------------------------------
# Objects and canonicalisation
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chair():
    scene = make_scene(3)
    o = next(o for o in scene.objects if o.category == "chair")
    return so.sample_scene_object(scene, o.whole_id, 300, np.random.default_rng(0), so.CLEAN)


def _rot_z(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_canonical_form_ignores_translation_scale_and_yaw(chair):
    ref = ob.attributes(ob.canonicalize(chair, budget=128).gaussians)
    for yaw, scale, t in [(0.7, 2.5, (3.0, -1.0, 0.4)), (-2.2, 0.3, (-5.0, 2.0, 1.0)), (math.pi, 1.0, (0, 0, 0))]:
        moved = chair.transformed(_rot_z(yaw), torch.tensor(t), scale)
        got = ob.attributes(ob.canonicalize(moved, budget=128).gaussians)
        assert torch.allclose(got, ref, atol=2e-4), (yaw, scale, (got - ref).abs().max())
    # A different object is not equal (the test can fail).
    assert not torch.allclose(ob.attributes(ob.canonicalize(chair.select(torch.arange(150)), budget=128).gaussians),
                              ref, atol=1e-2)


def test_canonical_form_follows_the_up_axis(chair):
    ref = ob.attributes(ob.canonicalize(chair, budget=128).gaussians)
    # The same chair in a map whose up axis is +y (rotate z -> y).
    R = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    moved = chair.transformed(R, torch.tensor([1.0, 2.0, 3.0]))
    got = ob.attributes(ob.canonicalize(moved, budget=128, up=(0.0, 1.0, 0.0)).gaussians)
    assert torch.allclose(got, ref, atol=2e-4)
    tilted = ob.attributes(ob.canonicalize(moved, budget=128).gaussians)   # wrong up: differs
    assert not torch.allclose(tilted, ref, atol=1e-2)


def test_canonicalize_drops_transparent_and_resamples(chair):
    n = len(chair)
    floaters = ob.ObjectGaussians(torch.randn(20, 3), F.normalize(torch.randn(20, 4), dim=1), torch.full((20, 3), 0.01),
                                  torch.full((20,), 0.01), torch.rand(20, 3))
    c = ob.canonicalize(ob.ObjectGaussians.cat([chair, floaters]), budget=64, min_opacity=0.05)
    assert c.n_input == n + 20 and c.n_kept == n and len(c.gaussians) == 64 and len(c.full) == n
    assert float(c.gaussians.means.norm(dim=1).max()) <= 1.0 + 1e-5
    assert abs(float(c.full.means.mean(0).norm())) < 1e-5                     # centred
    up = ob.canonicalize(chair.select(torch.arange(40)), budget=64, generator=torch.Generator().manual_seed(0))
    assert len(up.gaussians) == 64                                             # random repeats fill the budget


def test_attribute_layout(chair):
    a = ob.attributes(ob.canonicalize(chair, budget=64).gaussians)
    assert a.shape == (64, ob.ATTR_DIM) == (64, 19)
    R = a[:, 10:].reshape(-1, 3, 3)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(64, 3, 3), atol=1e-5)
    assert torch.allclose(torch.det(R), torch.ones(64), atol=1e-5)
    assert torch.all((a[:, 3:10] >= 0) & (a[:, 3:10] <= 1))
    q = F.normalize(torch.randn(50, 4), dim=1)
    assert torch.allclose(ob.quat_to_rotmat(ob.rotmat_to_quat(ob.quat_to_rotmat(q))), ob.quat_to_rotmat(q), atol=1e-5)


def test_synthetic_objects_are_map_like():
    objs = so.scene_objects([7], 200, np.random.default_rng(0))
    assert {o.category for o in objs} >= {"table", "mug", "chair"}
    mug = next(o for o in objs if o.category == "mug")
    assert "mug" in mug.label and "mug handle" in mug.part_labels
    g = mug.gaussians
    assert torch.all((g.rgb >= 0) & (g.rgb <= 1)) and torch.allclose(g.quats.norm(dim=1), torch.ones(len(g)), atol=1e-5)
    assert int((g.opacities < 0.05).sum()) == 10                              # 5 % floaters


def test_scene_map_objects_take_the_boxes():
    scene = make_scene(11)
    objs = so.scene_objects([11], 300, np.random.default_rng(0), map_like=so.CLEAN)
    allg = ob.ObjectGaussians.cat([o.gaussians for o in objs])
    gmap = GaussianMap.from_points(allg.means, allg.rgb, 0.01, opacity=0.8)
    clusters = so.scene_map_objects(gmap, scene)
    assert sorted(c.label for c in clusters) == sorted(o.label for o in objs)
    for c, o in zip(sorted(clusters, key=lambda x: x.whole_id), sorted(objs, key=lambda x: x.whole_id)):
        assert len(c.gaussians) >= len(o.gaussians)          # all of its own, maybe some of a neighbour


# ------------------------------------------------------------------------------------------------
# Encoder and save format
# ------------------------------------------------------------------------------------------------

def _batch(chair, n=4):
    objs = [chair.transformed(_rot_z(0.5 * i), torch.zeros(3), 1.0 + i) for i in range(n)]
    objs[1] = chair.select(torch.arange(200))
    return objs


def test_encoder_output_shape_and_norm(chair):
    torch.manual_seed(0)
    enc = ClipGSEncoder(TINY).eval()
    x = enc.prepare(_batch(chair))
    assert x.shape == (4, 64, 19)
    with torch.no_grad():
        z = enc(x)
        z2 = enc(x, order=2)
    assert z.shape == (4, 32)
    assert torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)
    assert not torch.allclose(z, z2, atol=1e-4)            # the serialisation order is seen
    assert torch.allclose(enc.encode_objects(_batch(chair)), z, atol=1e-5)
    # Same object moved/scaled/turned -> same embedding (canonicalisation before the network).
    assert torch.allclose(z[0], z[2], atol=1e-4) and torch.allclose(z[0], z[3], atol=1e-4)
    point = ClipGSEncoder(EncoderConfig(**{**TINY.__dict__, "attributes": "xyzrgb", "tokenizer": "point"})).eval()
    with torch.no_grad():
        assert point(x).shape == (4, 32)
        assert torch.allclose(point(x), point(x[..., :6]))  # only xyz+rgb are read


def test_save_load_round_trip(tmp_path, chair):
    torch.manual_seed(0)
    enc = ClipGSEncoder(TINY).eval()
    tower = ImageTower(32, 8).eval()
    path = save_encoder(tmp_path / "enc.pt", enc, {"vocabulary": ["mug"]}, image_tower=tower)
    assert not list(tmp_path.glob("*.tmp*"))
    enc2, meta = load_encoder(path)
    assert meta == {"vocabulary": ["mug"]} and enc2.cfg == enc.cfg
    x = enc.prepare(_batch(chair))
    with torch.no_grad():
        assert torch.equal(enc(x), enc2(x))
        img = torch.rand(2, 3, 16, 16)
        assert torch.equal(tower(img), load_image_tower(path)(img))
    blob = torch.load(path, weights_only=False)
    blob["version"] = 99
    torch.save(blob, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="version 99"):
        load_encoder(tmp_path / "future.pt")
    torch.save({"state": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a CLIP-GS"):
        load_encoder(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="gags_ros.sim.clipgs_train"):
        load_encoder(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------

def test_text_infonce_treats_shared_captions_as_positives():
    t = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    ids = torch.tensor([0, 0, 1])
    tt = torch.stack([t[0], t[0], t[1]])
    scale = torch.tensor(50.0)
    # Objects sitting exactly on their captions: the duplicate "red mug" is not a negative, so the
    # loss is at its floor (object -> text 0; text -> object: the entropy log 2 of the uniform
    # target over the two mugs, for one of the two captions) and nothing pushes the mugs apart.
    z = tt.clone().requires_grad_(True)
    perfect = text_infonce(z, tt, ids, scale)
    assert perfect.item() == pytest.approx(0.25 * math.log(2), abs=1e-4)
    perfect.backward()
    assert float((z.grad[0] - z.grad[1]).norm()) < 1e-5
    swapped = text_infonce(torch.stack([t[1], t[1], t[0]]), tt, ids, scale)
    assert float(swapped) > 1.0
    scale = torch.tensor(10.0)
    # By hand: two distinct captions, logits s z.T
    z = F.normalize(torch.randn(2, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    logits = scale * z @ t[:2].T
    want = 0.5 * (F.cross_entropy(logits, torch.arange(2)) + F.cross_entropy(logits.T, torch.arange(2)))
    assert torch.allclose(text_infonce(z, t[:2], torch.tensor([3, 7]), scale), want, atol=1e-6)


def test_image_voting_weights_select_views():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    v = F.normalize(torch.randn(4, 3, 8, generator=g), dim=-1)
    s = torch.tensor(5.0)
    w = torch.ones(4, 3)
    w[:, 2] = 0.0                                           # a view nobody trusts contributes nothing
    assert torch.allclose(image_voting_infonce(z, v, w, s), image_voting_infonce(z, v[:, :2], torch.ones(4, 2), s))
    # Uniform weights = the plain mean of the per-view symmetric InfoNCE.
    per_view = []
    for k in range(3):
        lg = s * z @ v[:, k].T
        per_view.append(0.5 * (F.cross_entropy(lg, torch.arange(4)) + F.cross_entropy(lg.T, torch.arange(4))))
    assert torch.allclose(image_voting_infonce(z, v, torch.ones(4, 3), s), torch.stack(per_view).mean(), atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Views and a tiny training run
# ------------------------------------------------------------------------------------------------

def test_views_render_and_bad_kinds(chair):
    r = make_renderer("torch", "cpu")
    c = ob.canonicalize(chair, budget=64)
    clean = render_views(r, c.full, ring_cameras(3), 16)
    assert clean.shape == (3, 3, 16, 16) and float(clean.min()) >= 0 and float(clean.max()) <= 1
    assert float((clean - 0.5).abs().amax(dim=1).gt(0.05).float().mean()) > 0.05   # the chair is in view
    vs = view_cameras(40, np.random.default_rng(0), bad_prob=1.0)
    assert "good" not in vs.kinds and {"below", "close", "occluded"} == set(vs.kinds)
    for T, kind in zip(vs.T_world_cam, vs.kinds):
        if kind == "below":
            assert T[2, 3] < 0                                   # camera under the object


def test_triplets_do_not_depend_on_the_global_rng(chair):
    cfg = TrainConfig(encoder=TINY, seed=0)
    small = [chair.select(torch.arange(40)), chair]            # the first needs padding to the budget
    torch.manual_seed(1)
    a = build_triplets(small, ["x", "y"], ["x", "y"], cfg, TextEmbedder(fake_text))
    torch.manual_seed(2)
    torch.rand(10)
    b = build_triplets(small, ["x", "y"], ["x", "y"], cfg, TextEmbedder(fake_text))
    assert torch.equal(a.attrs, b.attrs)


def test_tiny_training_learns(chair):
    rng = np.random.default_rng(0)
    objs = so.scene_objects(range(4), 96, rng, categories=["table", "mug", "chair", "lamp", "ball", "bottle"])
    cats = [o.category for o in objs]
    cfg = TrainConfig(encoder=TINY, seed=0, views=2, view_size=16, steps=80, batch_size=16, lr=3e-3, warmup=5,
                      tower_steps=30, tower_batch=32, tower_width=8, log_every=0)
    text = TextEmbedder(fake_text)
    trip = build_triplets([o.gaussians for o in objs], cats, cats, cfg, text, make_renderer("torch", "cpu"), rng)
    assert trip.views.shape == (len(objs), 2, 3, 16, 16)
    tower = train_image_tower(trip, cfg, log=lambda s: None)
    view_emb = embed_views(tower, trip.views)
    enc, hist = train_encoder(TINY, trip, view_emb, cfg, log=lambda s: None)
    first, last = np.mean(hist["text"][:10]), np.mean(hist["text"][-10:])
    print(f"text loss {first:.3f} -> {last:.3f}")
    assert last < 0.6 * first, (first, last)
    vocab = sorted(set(cats))
    m = classification_metrics(encode_attrs(enc, trip.attrs), cats, vocab, text)
    chance = 1.0 / len(vocab)
    print(f"train top-1 {m}")
    assert m["top1"] >= 3 * chance, m


# ------------------------------------------------------------------------------------------------
# Query helpers
# ------------------------------------------------------------------------------------------------

def test_classify_retrieve_and_metrics_on_hand_made_embeddings():
    vocab = ["mug", "table", "lamp"]
    T = fake_text(vocab)
    emb = F.normalize(torch.stack([T[0] + 0.1 * T[1], T[1], T[2] + 0.5 * T[1]]), dim=1)
    res = classify(emb, vocab, fake_text, k=2)
    assert [r.labels[0] for r in res] == vocab and res[2].labels[1] == "table"
    idx, s = retrieve(emb, "table", fake_text, k=2)
    assert int(idx[0]) == 1 and s[0] >= s[1]
    m = classification_metrics(emb, ["mug", "table", "table"], vocab, fake_text)
    assert m["top1"] == pytest.approx(2 / 3) and m["top5"] == 1.0
    r = retrieval_metrics(emb, ["mug", "table", "lamp"], fake_text)
    assert r["r1"] == 1.0 and r["queries"] == 3
    r = retrieval_metrics(emb, ["lamp", "table", "mug"], fake_text)     # mislabelled: mug and lamp miss
    assert r["r1"] == pytest.approx(1 / 3)


class _IdentityField:
    def decode(self, f):
        return F.normalize(f, dim=-1)


def test_language_clusters_split_by_feature_and_space():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(80, 3, generator=g) * 0.02
    pts = torch.cat([a, a + torch.tensor([1.0, 0, 0]), a + torch.tensor([0, 1.0, 0])])
    feats = torch.zeros(240, 4)
    feats[:80, 0] = 1.0
    feats[80:160, 1] = 1.0
    feats[160:, 0] = 1.0                     # same meaning as the first blob, elsewhere: its own object
    gmap = GaussianMap.from_points(pts, torch.rand(240, 3, generator=g), 0.01, opacity=0.9)
    gmap.params["features"] = torch.nn.Parameter(feats)
    clusters = language_clusters(gmap, _IdentityField(), radius=0.1, min_gaussians=20)
    assert sorted(len(c.indices) for c in clusters) == [80, 80, 80]
    cents = sorted(tuple(np.round(c.centroid, 0)) for c in clusters)
    assert cents == [(0.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)]
    assert all(isinstance(c, MapObject) for c in clusters)


def test_object_index_over_map_targets(chair):
    from types import SimpleNamespace

    from gags_ros.core.clipgs.classify import ObjectIndex

    torch.manual_seed(0)
    enc = ClipGSEncoder(TINY).eval()
    far = chair.transformed(torch.eye(3), torch.tensor([5.0, 0.0, 0.0]))
    allg = ob.ObjectGaussians.cat([chair, far])
    gmap = GaussianMap({"means": allg.means, "scales": allg.scales.log(), "quats": allg.quats,
                        "opacities": torch.logit(allg.opacities.clamp(1e-4, 1 - 1e-4)),
                        "sh0": ((allg.rgb - 0.5) / 0.28209479177387814)[:, None, :]})
    n = len(chair)
    targets = [SimpleNamespace(indices=np.arange(n), centroid=np.zeros(3), box_min=-np.ones(3), box_max=np.ones(3),
                               label="a"),
               SimpleNamespace(indices=np.arange(n, 2 * n), centroid=np.array([5.0, 0, 0]), box_min=np.array([4.0, -1, -1]),
                               box_max=np.array([6.0, 1, 1]), label="b")]
    index = ObjectIndex.from_targets(enc, gmap, targets, fake_text)
    assert index.embeddings.shape == (2, 32)
    # The same chair twice (moved): one embedding, whatever the encoder's weights.
    assert torch.allclose(index.embeddings[0], index.embeddings[1], atol=1e-4)
    assert torch.allclose(index.embeddings[0], enc.encode_objects([chair])[0], atol=1e-4)
    rows = index.labelled(["mug", "chair", "lamp"], k=2)
    assert len(rows) == 2 and rows[1]["size"] == [2.0, 2.0, 2.0] and rows[0]["count"] == n
    assert len(rows[0]["labels"]) == 2 and rows[0]["text"].startswith(rows[0]["labels"][0])
    hits = index.retrieve("chair", k=5)
    assert len(hits) == 2 and hits[0][1] >= hits[1][1]
    with pytest.raises(ValueError, match="indices"):
        ObjectIndex.from_targets(enc, gmap, [SimpleNamespace(indices=None)], fake_text)
