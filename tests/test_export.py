"""Semantic export (gags/export): the PLY of Gaussians with latents, coverage, label and score read
back by plyfile and by an independent numpy parser of the header; labels agree with the query
engine. And the map cloud's PointCloud2 layout decodes identically with sensor_msgs_py."""

import numpy as np
import plyfile
import pytest
import torch

from gags_ros.core.io import export as E
from gags_ros.core.config import GagsConfig
from gags_ros.core.language import coverage
from gags_ros.core.query import QueryEngine
from gags_ros.core.io.ply import gaussian_properties

from test_query import planted_map

VOCABULARY = ["red mug", "blue chair", "stuff", "café table"]   # one non-ASCII name: stored JSON-escaped


def parse_ply(path):
    """An independent reader (not gags_ros.core.io.ply): header lines -> comments, a structured dtype
    of the one vertex element, and its records."""
    raw = path.read_bytes()
    head, body = raw.split(b"end_header\n", 1)
    lines = head.decode("ascii").splitlines()
    assert lines[0] == "ply" and lines[1] == "format binary_little_endian 1.0", lines[:2]
    types = {"float": "<f4", "int": "<i4"}
    comments, fields, count = [], [], None
    for line in lines[2:]:
        kind, rest = line.split(" ", 1)
        if kind == "comment":
            comments.append(rest)
        elif kind == "element":
            name, n = rest.split()
            assert name == "vertex" and count is None
            count = int(n)
        else:
            assert kind == "property", line
            t, name = rest.split()
            fields.append((name, types[t]))
    dtype = np.dtype(fields)
    assert len(body) == count * dtype.itemsize, "body size disagrees with the header"
    return comments, np.frombuffer(body, dtype=dtype, count=count)


@pytest.fixture(scope="module")
def planted():
    g, field, enc, parts = planted_map()
    # coverage records: the mug fully supervised, the chair half, the rest never seen
    n = len(g)
    seen, supervised = torch.zeros(n), torch.zeros(n)
    seen[parts["mug"]] = supervised[parts["mug"]] = 2.0
    seen[parts["chair"]], supervised[parts["chair"]] = 4.0, 2.0
    for name in coverage.RECORDS:
        g.add_record(name, init=supervised if name != coverage.SEEN else seen)
    cfg = GagsConfig().query
    cfg.min_coverage = 0.4
    return g, field, QueryEngine(cfg, enc), parts


def test_export_reads_back_with_plyfile_and_a_numpy_parser(planted, tmp_path):
    g, field, engine, parts = planted
    saved = g.params["opacities"].detach().clone()
    with torch.no_grad():   # two mug Gaussians too transparent for any query: unknown
        g.params["opacities"][parts["mug"][:2]] = -6.0
    try:
        check_export(g, field, engine, parts, tmp_path)
    finally:
        with torch.no_grad():
            g.params["opacities"].copy_(saved)


def check_export(g, field, engine, parts, tmp_path):
    path = tmp_path / "map.ply"
    out = E.write_semantic_ply(path, g, field, engine, VOCABULARY, coverage_mode="gad", world_frame="odom")
    n = len(g)
    known = np.concatenate([parts["mug"][2:], parts["chair"]])
    assert out == {"gaussians": n, "labelled": len(known), "path": str(path)}

    ply = plyfile.PlyData.read(str(path))
    v = ply["vertex"].data
    names = gaussian_properties() + [f"f_lang_{i}" for i in range(16)] + ["coverage", "label", "score"]
    assert list(v.dtype.names) == names
    assert v.dtype["label"] == np.dtype("<i4") and v.dtype["score"] == np.dtype("<f4") and len(v) == n
    comments, rec = parse_ply(path)
    assert comments == ply.comments
    for name in names:
        np.testing.assert_array_equal(rec[name], v[name])

    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), g.means.detach().numpy())
    np.testing.assert_array_equal(np.stack([v[f"f_lang_{i}"] for i in range(16)], 1),
                                  g.params["features"].detach().numpy())
    np.testing.assert_array_equal(v["opacity"], g.params["opacities"].detach().numpy())
    cov = np.full(n, 0.0, np.float32)
    cov[parts["mug"]], cov[parts["chair"]] = 1.0, 0.5
    np.testing.assert_allclose(v["coverage"], cov)

    # labels: the planted objects, unknown (-1) wherever a query would not look
    label, score = v["label"], v["score"]
    unknown = np.setdiff1d(np.arange(n), known)
    assert (label[unknown] == -1).all() and (score[unknown] == -1).all()
    assert (label[parts["mug"][2:]] == 0).all() and (label[parts["chair"]] == 1).all()
    rel = engine.gaussian_relevancy(g, field, engine.encode(VOCABULARY, "cpu"), torch.as_tensor(known)).numpy()
    np.testing.assert_array_equal(label[known], rel.argmax(1))
    np.testing.assert_allclose(score[known], rel.max(1), rtol=1e-6)
    # the query engine's best target for "red mug" is made of Gaussians labelled "red mug"
    (res,) = engine.query(g, field, ["red mug"])
    assert res.targets and (label[res.targets[0].indices] == 0).all()

    assert E.read_vocabulary(ply.comments) == VOCABULARY
    assert "frame odom (positions in metres)" in ply.comments
    assert all(c.isascii() for c in ply.comments)


def test_labels_do_not_depend_on_the_texts_per_pass(planted, monkeypatch, tmp_path):
    g, field, engine, _ = planted
    whole = E.label_gaussians(engine, g, field, VOCABULARY)
    monkeypatch.setattr(E, "TEXTS_PER_PASS", 1)
    one_by_one = E.label_gaussians(engine, g, field, VOCABULARY)
    np.testing.assert_array_equal(whole[0], one_by_one[0])
    np.testing.assert_array_equal(whole[1], one_by_one[1])


def test_geometry_only_export_and_refusals(planted, tmp_path):
    g, field, engine, _ = planted
    path = tmp_path / "geo.ply"
    out = E.write_semantic_ply(path, g, field, engine)       # no vocabulary: no label / score
    names = plyfile.PlyData.read(str(path))["vertex"].data.dtype.names
    assert "label" not in names and "f_lang_0" in names and out["labelled"] == 0
    with pytest.raises(ValueError, match="vocabulary entry 1: empty query text"):
        E.write_semantic_ply(path, g, field, engine, ["mug", " "])
    bare = type(g)(dict((k, v) for k, v in g.params.items() if k != "features"))
    with pytest.raises(ValueError, match="labels need language features"):
        E.write_semantic_ply(path, bare, None, None, ["mug"])
    E.write_semantic_ply(tmp_path / "bare.ply", bare)
    v = plyfile.PlyData.read(str(tmp_path / "bare.ply"))["vertex"].data
    assert "f_lang_0" not in v.dtype.names and len(v) == len(g)


def test_map_cloud_decodes_identically_with_sensor_msgs_py():
    """The relevancy cloud (gags/map) read with ROS's own reader (sensor_msgs_py, the one RViz-side
    tools and user code use) gives our values field by field, rgb packed as RViz expects."""
    from sensor_msgs_py import point_cloud2
    from std_msgs.msg import Header

    from gags_ros.ros.conversions import pointcloud2_from_msg, pointcloud2_to_msg

    rng = np.random.default_rng(0)
    n = 257
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    rgb = rng.uniform(size=(n, 3)).astype(np.float32)
    rel = rng.uniform(size=n).astype(np.float32)
    rel[::7] = -1.0
    cov = rng.uniform(size=n).astype(np.float32)
    msg = pointcloud2_to_msg(xyz, rgb, Header(frame_id="map"), rel, cov)
    names = ["x", "y", "z", "rgb", "relevancy", "coverage"]
    theirs = point_cloud2.read_points(msg, skip_nans=False)
    assert list(theirs.dtype.names) == names
    ours = pointcloud2_from_msg(msg)
    for name in names:
        np.testing.assert_array_equal(theirs[name].view(np.uint32), ours[name].view(np.uint32))
    np.testing.assert_array_equal(np.stack([theirs[k] for k in "xyz"], 1), xyz)
    np.testing.assert_array_equal(theirs["relevancy"], rel)
    np.testing.assert_array_equal(theirs["coverage"], cov)
    packed = theirs["rgb"].view(np.uint32)
    want = (np.clip(rgb, 0, 1) * 255).astype(np.uint32)
    np.testing.assert_array_equal(np.stack([packed >> 16 & 255, packed >> 8 & 255, packed & 255], 1), want)
    # and the structured-to-xyz helper ROS users call
    np.testing.assert_array_equal(point_cloud2.read_points_numpy(msg, field_names=["x", "y", "z"]), xyz)
    # no relevancy yet (no query): the layout without it decodes too
    plain = point_cloud2.read_points(pointcloud2_to_msg(xyz, rgb, Header(frame_id="map")), skip_nans=False)
    assert list(plain.dtype.names) == ["x", "y", "z", "rgb"]


def test_export_creates_its_folder_with_the_map_file_mode(planted, tmp_path):
    g, field, engine, _ = planted
    path = tmp_path / "new" / "folder" / "m.ply"
    E.write_semantic_ply(path, g, field, engine, ["red mug"], mode="0640")
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["m.ply"]     # no temporary left behind
