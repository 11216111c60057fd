"""Map files: round trip (same parameters, decoders, configuration, identical query answers),
atomic writes, clear errors for foreign or newer files."""

import numpy as np
import pytest
import torch

from gags_ros.core import config as C
from gags_ros.core.io.mapfile import MAP_FORMAT, MapFormatError, load_map, save_map
from gags_ros.core.query import QueryEngine

from test_query import planted_map


@pytest.fixture(scope="module")
def planted():
    return planted_map(seed=2)


def _answers(g, field, enc, cfg):
    res = QueryEngine(cfg.query, enc).query(g, field, ["red mug", "blue chair", "stuff"])
    return [[(t.label, t.score, t.centroid.tolist(), t.box_min.tolist(), t.box_max.tolist(),
              t.indices.tolist(), t.count) for t in r.targets] + [r.reason, r.selected, r.kept] for r in res]


def test_round_trip_answers_identically(planted, tmp_path):
    g, field, enc, _ = planted
    cfg = C.GagsConfig()
    C.set_value(cfg, "query.threshold", 0.45)
    C.set_value(cfg, "language.mode", "part")
    extra = {"keyframe_poses": np.eye(4)[None].repeat(3, 0), "note": "lab run 3", "steps": 120}
    path = save_map(tmp_path / "maps" / "lab.gags", g, field, cfg, extra=extra)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["lab.gags"]   # no temp left

    g2, field2, cfg2, extra2 = load_map(path, "cpu")
    assert set(g2.params) == set(g.params)
    for k, v in g.params.items():
        assert torch.equal(g2.params[k].detach(), v.detach()), k
    for (k, a), (_, b) in zip(field.state_dict().items(), field2.state_dict().items()):
        assert torch.equal(a, b), k
    assert C.to_dict(cfg2) == C.to_dict(cfg)
    assert extra2["note"] == "lab run 3" and extra2["steps"] == 120
    assert torch.equal(extra2["keyframe_poses"], torch.from_numpy(extra["keyframe_poses"]))
    before = _answers(g, field, enc, cfg)
    assert before[0][0][0] == "red mug"                  # the check below compares real answers
    assert _answers(g2, field2, enc, cfg2) == before


def test_map_without_language_field(planted, tmp_path):
    g, _, _, _ = planted
    bare = type(g)({k: v.detach() for k, v in g.params.items() if k != "features"})
    g2, field2, _, extra = load_map(save_map(tmp_path / "m.gags", bare, None, C.GagsConfig()))
    assert field2 is None and extra is None and not g2.has_features and len(g2) == len(g)


def test_overwrite_is_atomic(planted, tmp_path, monkeypatch):
    g, field, _, _ = planted
    path = tmp_path / "m.gags"
    save_map(path, g, field, C.GagsConfig())
    first = path.read_bytes()
    with pytest.raises(TypeError, match="plain"):
        save_map(path, g, field, C.GagsConfig(), extra={"bad": object()})   # refused before writing

    def crash(obj, f, *a, **k):                          # the disk fills up half way
        f.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="No space"):
        save_map(path, g, field, C.GagsConfig())
    assert path.read_bytes() == first                    # the old map survives a failed save
    assert [p.name for p in tmp_path.iterdir()] == ["m.gags"]   # and no temporary file is left


def test_wrong_files_are_refused(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"format": "something.else", "version": 1}, p)
    with pytest.raises(MapFormatError, match="not a gags_ros map"):
        load_map(p)
    torch.save({"format": MAP_FORMAT, "version": 99, "params": {}}, p)
    with pytest.raises(MapFormatError, match="version 99 is newer"):
        load_map(p)
    p.write_bytes(b"not a zip or pickle at all")
    with pytest.raises(MapFormatError, match="not a gags_ros map"):
        load_map(p)
    with pytest.raises(FileNotFoundError):
        load_map(tmp_path / "missing.gags")


def test_unknown_saved_parameters_are_ignored(planted, tmp_path):
    g, field, _, _ = planted
    path = save_map(tmp_path / "m.gags", g, field, C.GagsConfig())
    data = torch.load(path, weights_only=True)
    data["config"]["query"]["retired_option"] = 3        # written by an older version
    data["config"]["query"]["keep_neighbours"] = 5       # cross-checked against drop_neighbours:
    data["config"]["query"]["drop_neighbours"] = 3       # applied together, not one by one
    torch.save(data, path)
    _, _, cfg, _ = load_map(path)
    assert cfg.query.keep_neighbours == 5 and cfg.query.drop_neighbours == 3
    data["config"]["query"]["threshold"] = 7.0
    torch.save(data, path)
    with pytest.raises(MapFormatError, match="query.threshold"):
        load_map(path)
