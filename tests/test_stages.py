"""Where the 3D answer is lost (the answers issue, item 4): the 3D label oracle answered by the real
query engine, and the first losing stage of a query on hand-made maps that lose exactly there."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gags_ros.core import config as C
from gags_ros.core.camera import look_at
from gags_ros.core.gaussians import GaussianMap
from gags_ros.core.query import QueryEngine
from gags_ros.core.render.factory import make_renderer
from gags_ros.eval import stages
from gags_ros.core.types import Intrinsics

from test_answers import _mark
from test_query import FakeTextEncoder, planted_map

ENC = FakeTextEncoder()


def _emb(text: str, canonical_share: float = 0.0) -> torch.Tensor:
    """``[D]`` unit embedding of ``text``, leaning ``canonical_share`` towards the phrase "stuff"
    (less relevant to ``text``, still far above the background)."""
    e = (1 - canonical_share) * ENC([text])[0] + canonical_share * ENC(["stuff"])[0]
    return torch.nn.functional.normalize(e, dim=0)


def _grid(lo, hi, step) -> torch.Tensor:
    """``[n, 3]`` lattice points from ``lo`` to ``hi`` (inclusive, metres) every ``step`` metres."""
    axes = [torch.arange(a, b + 1e-9, step) if b > a else torch.tensor([a]) for a, b in zip(lo, hi)]
    return torch.cartesian_prod(*axes).float()


BACKGROUND = (_grid((-2.0, -2.0, 1.5), (2.0, 2.0, 1.5), 0.2), _emb("stuff"))   # a sparse irrelevant ceiling


def _map(*blocks):
    """An oracle-style map from ``(points [n, 3], embedding [D] or [n, D])`` blocks: its features
    are the embeddings, for :class:`stages.OracleField`. Returns ``(map, [(start, end)] per block)``."""
    pts = torch.cat([b[0] for b in blocks])
    feats = torch.cat([b[1].expand(len(b[0]), -1) for b in blocks])
    g = GaussianMap.from_points(pts, torch.full_like(pts, 0.5), 0.01, opacity=0.9)
    g.params["features"] = torch.nn.Parameter(feats)
    ends = np.cumsum([0] + [len(b[0]) for b in blocks])
    return g, list(zip(ends[:-1], ends[1:]))


def _query(text, pts, pad=0.0):
    lo, hi = pts.min(0).values.numpy() - pad, pts.max(0).values.numpy() + pad
    return {"text": text, "level": "whole", "box_min": lo.tolist(), "box_max": hi.tolist()}


def _stage(g, query, field=None, **kw):
    eng = QueryEngine(C.GagsConfig().query, ENC)
    # the stages these cases lose at are the cluster extraction's, before any confidence cut (cfg= overrides)
    eng.cfg.targets, eng.cfg.threshold, eng.cfg.min_confidence = "cluster", 0.4, 0.0
    for k, v in kw.pop("cfg", {}).items():
        setattr(eng.cfg, k, v)
    (rec,) = stages.query_stages(eng, g, field or stages.OracleField(ENC.dim), [query], **kw)
    assert rec["consistent"], rec                     # the recomputed stages match the engine's counts
    return rec


MUG = _grid((0.4, 0.2, 0.0), (0.46, 0.26, 0.06), 0.01)
CHAIR = _grid((-0.5, -0.4, 0.0), (-0.4, -0.3, 0.1), 0.01)


@pytest.mark.parametrize("targets", ["cluster", "peak"])
def test_hit(targets):
    g, _ = _map((MUG, _emb("red mug")), (CHAIR, _emb("blue chair")), BACKGROUND)
    rec = _stage(g, _query("red mug", MUG), cfg={"targets": targets})
    assert rec["stage"] == "hit" and rec["rank"] == 0 and rec["inbox"] == len(MUG)
    # the node's score cut above the answer's score: found, but reported "not found"
    assert _stage(g, _query("red mug", MUG), min_score=0.9999, cfg={"targets": targets})["stage"] == "score"


def test_boxes_list_counts_every_instance():
    """With ``boxes``, a hit on either instance counts; the union box_min/box_max is not used."""
    far = MUG + torch.tensor([0.0, 1.0, 0.0])
    g, _ = _map((MUG, _emb("red mug")), (far, _emb("red mug", 0.1)), BACKGROUND)
    q = _query("red mug", far)
    assert _stage(g, q)["stage"] == "ranking"
    q["boxes"] = [[far.min(0).values.tolist(), far.max(0).values.tolist()],
                  [MUG.min(0).values.tolist(), MUG.max(0).values.tolist()]]
    assert _stage(g, q)["stage"] == "hit"


@pytest.mark.parametrize("how", ["opacity", "coverage"])
def test_eligible(how):
    """The object's Gaussians are all below min_opacity, or all unsupervised under the coverage gate."""
    g, spans = _map((MUG, _emb("red mug")), (CHAIR, _emb("blue chair")), BACKGROUND)
    (s, e) = spans[0]
    if how == "opacity":
        with torch.no_grad():
            g.params["opacities"][s:e] = torch.logit(torch.tensor(0.01))
    else:
        sup = np.ones(len(g), dtype=bool)
        sup[s:e] = False
        _mark(g, sup)
    rec = _stage(g, _query("red mug", MUG))
    assert rec["stage"] == "eligible" and rec["inbox"] == len(MUG) and rec["inbox_eligible"] == 0
    assert rec["inbox_opaque"] == (0 if how == "opacity" else len(MUG))


def test_threshold():
    """The field calls the boxed object something else: eligible, never selected."""
    g, _ = _map((MUG, _emb("red mug")), (CHAIR, _emb("blue chair")), BACKGROUND)
    rec = _stage(g, _query("red mug", CHAIR))
    assert rec["stage"] == "threshold" and rec["inbox_eligible"] == len(CHAIR) and rec["inbox_selected"] == 0


def test_cleanup_drops_an_isolated_speck():
    speck = torch.tensor([[1.0, 1.0, 0.5]])
    g, _ = _map((MUG, _emb("red mug")), (speck, _emb("red mug")), BACKGROUND)
    rec = _stage(g, _query("red mug", speck, pad=0.02))
    assert rec["stage"] == "cleanup" and rec["inbox_selected"] == 1 and rec["inbox_kept"] == 0
    # without the cleanup (targets=peak has none) the same speck is lost later, not at the cleanup
    assert _stage(g, _query("red mug", speck, pad=0.02), cfg={"targets": "peak"})["stage"] != "cleanup"


def test_cluster_relevant_floor_linked_to_the_object():
    """A relevant floor touches the object; the one component peaks on the floor, far from the box."""
    floor = _grid((0.0, 0.0, 0.0), (1.0, 1.0, 0.0), 0.015)
    far = torch.tensor([[1.0, 1.0, 0.0]])
    obj = _grid((0.05, 0.05, 0.01), (0.11, 0.11, 0.07), 0.01)
    g, _ = _map((floor, _emb("red mug", 0.05)), (far, _emb("red mug")), (obj, _emb("red mug", 0.1)), BACKGROUND)
    rec = _stage(g, _query("red mug", obj))
    assert rec["stage"] == "cluster", rec
    assert rec["inbox_kept"] == len(obj) and rec["targets"] >= 1


def test_location_thin_box():
    """The peak lies on a thin rug (its box 4 mm high); the Gaussians of a box standing on it, within
    peak_radius of the peak, pull the location above the rug's box."""
    rug = _grid((-0.3, -0.3, 0.002), (0.3, 0.3, 0.002), 0.015)
    centre = rug.new_tensor([[0.0, 0.0, 0.002]])
    above = _grid((-0.02, -0.02, 0.03), (0.02, 0.02, 0.03), 0.01)
    g, _ = _map((centre, _emb("rug")), (rug, _emb("rug", 0.05)), (above, _emb("rug", 0.1)), BACKGROUND)
    q = {"text": "rug", "level": "whole", "box_min": [-0.31, -0.31, 0.0], "box_max": [0.31, 0.31, 0.004]}
    rec = _stage(g, q)
    assert rec["stage"] == "location", rec
    assert rec["first"]["loc"][2] > 0.004


def test_ranking():
    mug2 = MUG + torch.tensor([0.0, 0.8, 0.0])
    g, _ = _map((MUG, _emb("red mug")), (mug2, _emb("red mug", 0.1)), BACKGROUND)
    rec = _stage(g, _query("red mug", mug2))
    assert rec["stage"] == "ranking" and rec["rank"] == 1
    summary = stages.summarise_stages([rec, _stage(g, _query("red mug", MUG))])
    assert summary["all"]["ranking"] == 1 and summary["all"]["hit"] == 1 and summary["whole"]["queries"] == 2


def test_stages_of_a_decoded_field():
    """The planted map with its trained decoder (a real LanguageField): the mug is a hit."""
    g, field, enc, parts = planted_map(seed=0)
    eng = QueryEngine(C.GagsConfig().query, enc)
    pts = g.params["means"].detach()[parts["mug"]]
    (rec,) = stages.query_stages(eng, g, field, [_query("red mug", pts)])
    assert rec["consistent"] and rec["stage"] == "hit"


def _planted_oracle(seed=1):
    g, field, enc, parts = planted_map(seed=seed)
    eng = QueryEngine(C.GagsConfig().query, enc)
    win = np.zeros(len(g), dtype=np.int64)
    win[parts["mug"]], win[parts["chair"]] = 1, 2
    labels = {"whole": {"1": "red mug", "2": "blue chair"}}
    return g, eng, parts, stages.oracle_from_winners(eng, g, {"whole": win}, labels)


def test_oracle_answers_planted_object_inside_it():
    g, eng, parts, oracle = _planted_oracle()
    before = g.params["features"].detach().clone()
    means = g.params["means"].detach().numpy()
    for text, name in (("red mug", "mug"), ("blue chair", "chair")):
        (res,) = oracle.query(eng, [text], "whole")
        assert res.targets, res.reason
        lo, hi = means[parts[name]].min(0), means[parts[name]].max(0)
        assert np.all(res.targets[0].centroid >= lo) and np.all(res.targets[0].centroid <= hi)
    m = oracle.maps["whole"]
    assert m.params["means"] is g.params["means"]                      # shallow: the real geometry
    assert torch.equal(g.params["features"].detach(), before)           # the real map is untouched
    assert m.params["features"].shape == (len(g), oracle.field.embed_dim) == (len(g), eng.text_encoder.dim)
    # the speckle decodes as "red mug" in the field but is background to the oracle
    bg = eng.canonical(torch.device("cpu"))[0]
    assert torch.allclose(m.params["features"][parts["speckle"]], bg.expand(len(parts["speckle"]), -1))
    q = _query("red mug", torch.as_tensor(means[parts["mug"]]))
    assert stages.oracle_stages(oracle, eng, [q])[0]["stage"] == "hit"


def test_oracle_keeps_the_maps_coverage_gate():
    g, eng, parts, _ = _planted_oracle()
    sup = np.ones(len(g), dtype=bool)
    sup[parts["mug"]] = False
    _mark(g, sup)
    win = np.zeros(len(g), dtype=np.int64)
    win[parts["mug"]] = 1
    oracle = stages.oracle_from_winners(eng, g, {"whole": win}, {"whole": {1: "red mug"}})
    q = _query("red mug", g.params["means"].detach()[parts["mug"]])
    (rec,) = stages.oracle_stages(oracle, eng, [q])
    assert rec["stage"] == "eligible" and rec["inbox_opaque"] == len(parts["mug"])


def _one_view_scene():
    """One view: the left of the image is instance 1, the right instance 2, a middle strip no
    instance; a blob of Gaussians seen in each, and one behind the camera. Returns ``(map, frame,
    labels, n)`` with ``n`` Gaussians per blob, in the order left, right, middle, behind."""
    def blob(y, x=2.0):
        return _grid((x, y - 0.03, 0.97), (x, y + 0.03, 1.03), 0.03)

    left, right, middle, behind = blob(0.3), blob(-0.3), blob(0.0), blob(0.0, x=-2.0)
    pts = torch.cat([left, right, middle, behind])
    g = GaussianMap.from_points(pts, torch.full_like(pts, 0.5), 0.02, opacity=0.8)
    W, H = 64, 48
    intr = Intrinsics(40.0, 40.0, W / 2, H / 2, W, H)
    mask = np.zeros((H, W), dtype=np.int32)
    mask[:, : W // 2 - 3], mask[:, W // 2 + 3:] = 1, 2        # +y of the world is the image's left
    frame = SimpleNamespace(masks={"whole": mask}, T_world_cam=look_at([0.0, 0.0, 1.0], [2.0, 0.0, 1.0]),
                            intrinsics=intr)
    return g, frame, {"whole": {"1": "red mug", "2": "blue chair"}}, len(left)


def test_oracle_labels_from_a_real_render():
    """Gaussians seen on the left carry label 1's embedding, on the right label 2's; those in the
    strip or behind the camera the background (the first canonical phrase)."""
    g, frame, labels, n = _one_view_scene()
    eng = QueryEngine(C.GagsConfig().query, ENC)
    oracle = stages.label_oracle_3d(eng, make_renderer("torch", "cpu"), g, [frame], labels)
    expect = np.concatenate([np.full(n, 1), np.full(n, 2), np.zeros(2 * n, dtype=np.int64)])
    assert oracle.winners["whole"].tolist() == expect.tolist()
    f = oracle.maps["whole"].params["features"]
    emb = eng.encode(["red mug", "blue chair"], "cpu")
    bg = eng.canonical(torch.device("cpu"))[0]
    assert torch.allclose(f[:n], emb[0].expand(n, -1)) and torch.allclose(f[n:2 * n], emb[1].expand(n, -1))
    assert torch.allclose(f[2 * n:], bg.expand(2 * n, -1))


def test_bench_rows_shape():
    """The answers benchmark's rows from a pipeline-shaped object: JSON-ready, one answer list and
    one stage record per query, the absent texts answered by the oracle."""
    import json

    g, frame, labels, n = _one_view_scene()
    g.params["features"] = torch.nn.Parameter(ENC(["stuff"]).expand(len(g), -1).clone())   # a field that knows nothing
    eng = QueryEngine(C.GagsConfig().query, ENC)
    cfg = eng.cfg
    cfg.keep_neighbours, cfg.drop_neighbours = 2, 1         # blobs of 27 Gaussians, 3 cm apart
    pipe = SimpleNamespace(query_engine=eng, renderer=make_renderer("torch", "cpu"),
                           mapper=SimpleNamespace(gaussians=g, keyframes=[SimpleNamespace(frame=frame)]),
                           distiller=SimpleNamespace(field=stages.OracleField(ENC.dim)))
    pts = g.params["means"].detach()
    queries = [_query("red mug", pts[:n]), _query("blue chair", pts[n:2 * n])]
    rows = json.loads(json.dumps(stages.bench_rows(pipe, labels, queries, ["guitar"])))
    assert set(rows) == {"oracle3d", "stages", "oracle3d_stages"}
    assert len(rows["oracle3d"]["present"]) == 2 and len(rows["oracle3d"]["absent"]) == 1
    assert all(0 < len(a) <= 3 and set(a[0]) == {"loc", "score"} for a in rows["oracle3d"]["present"])
    assert [r["stage"] for r in rows["oracle3d_stages"]] == ["hit", "hit"]
    assert [r["stage"] for r in rows["stages"]] == ["threshold", "threshold"]   # every Gaussian equally irrelevant
