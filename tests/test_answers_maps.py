"""The answers benchmark on saved maps: a map written by ``bench.answers run --save-maps`` answers
again offline (``bench.answers_maps requery``) exactly as it answered when it was built, and other
query settings change the answers without rebuilding."""

import json

from gags_ros.sim.dataset import generate


def test_saved_maps_answer_again_as_when_built(tmp_path):
    from bench import answers, answers_maps

    data = generate(tmp_path / "scene", seed=3, preset="small", width=64, height=48)
    runs, maps, again = tmp_path / "runs", tmp_path / "maps", tmp_path / "again"
    assert answers.main(["run", str(data), "--out", str(runs), "--quick", "--frames", "6", "--device", "cpu",
                         "--save-maps", str(maps)]) == 0
    (built,) = [json.loads(p.read_text()) for p in runs.glob("*.json")]
    assert len(list(maps.glob("*.map.pt"))) == 1
    assert answers_maps.main(["requery", str(maps), str(data), "--out", str(again)]) == 0
    (re,) = [json.loads(p.read_text()) for p in again.glob("*.json")]
    assert re["queries"] == built["queries"] and re["absent"] == built["absent"]
    assert re["answers"] == built["answers"]                      # every setting, present and absent
    assert re["oracle3d"] == built["oracle3d"]                    # the oracle rebuilt from the saved winners
    assert [r["stage"] for r in re["stages"]] == [r["stage"] for r in built["stages"]]
    # another setting is answered from the same map
    other = tmp_path / "other"
    assert answers_maps.main(["requery", str(maps), str(data), "--out", str(other),
                              "--set", "query.threshold=0.9"]) == 0
    (o,) = [json.loads(p.read_text()) for p in other.glob("*.json")]
    assert o["overrides"]["query.threshold"] == 0.9
    assert sum(r["selected"] for r in o["stages"]) < sum(r["selected"] for r in built["stages"])
    # packed for the trip back from a GPU lease and unpacked: the same answers up to the latents'
    # 8-bit rounding (same targets found; locations within a few millimetres)
    packs, unpacked, again2 = tmp_path / "packs", tmp_path / "unpacked", tmp_path / "again2"
    assert answers_maps.main(["pack", str(maps), "--out", str(packs)]) == 0
    (pk,) = list(packs.glob("*.pack.pt"))
    (mp,) = list(maps.glob("*.map.pt"))
    assert pk.stat().st_size < 0.6 * mp.stat().st_size
    assert answers_maps.main(["unpack", str(packs), "--out", str(unpacked)]) == 0
    assert answers_maps.main(["requery", str(unpacked), str(data), "--out", str(again2)]) == 0
    (u,) = [json.loads(p.read_text()) for p in again2.glob("*.json")]
    same = near = 0
    for name in built["answers"]:            # every setting (a 64x48 map leaves some without targets)
        for a_, b_ in zip(u["answers"][name]["present"], built["answers"][name]["present"]):
            if a_ and b_:
                same += 1
                near += sum((x - y) ** 2 for x, y in zip(a_[0]["loc"], b_[0]["loc"])) ** 0.5 < 0.01
    assert same > 20 and near >= 0.8 * same
    assert len(u["oracle3d"]["present"]) == len(built["oracle3d"]["present"])


def test_view_records_added_to_maps_saved_without_them(tmp_path):
    """``bench.answers_maps views``: a map saved before the view records gets them from the
    dataset's train views; its coverage records stay as they were."""
    import torch

    from bench import answers, answers_maps
    from gags_ros.core.language import coverage
    from gags_ros.core.io.mapfile import load_map, save_map

    data = generate(tmp_path / "scene", seed=3, preset="small", width=64, height=48)
    maps = tmp_path / "maps"
    assert answers.main(["run", str(data), "--out", str(tmp_path / "runs"), "--quick", "--frames", "4",
                         "--device", "cpu", "--save-maps", str(maps)]) == 0
    (f,) = list(maps.glob("*.map.pt"))
    g, field, cfg, extra = load_map(f)
    assert coverage.has_view(g)
    before = {k: g.record(k).clone() for k in coverage.RECORDS}
    for k in coverage.VIEW:                      # as a map from before the view records
        del g.records[k]
        del g.params[k]
    save_map(f, g, field, cfg, extra)
    assert not coverage.has_view(load_map(f)[0])
    assert answers_maps.main(["views", str(maps), str(data)]) == 0
    g2 = load_map(f)[0]
    assert coverage.has_view(g2)
    seen = g2.record(coverage.SEEN) > 0
    view = torch.stack([g2.record(k) for k in coverage.VIEW], dim=1)
    assert float(view[seen].norm(dim=1).min()) > 0
    for k, v in before.items():
        assert torch.equal(g2.record(k), v)


def test_a_run_without_its_scene_fails(tmp_path):
    from bench import answers

    data = generate(tmp_path / "scene", seed=3, preset="small", width=32, height=24)
    assert answers.main(["run", str(data), "--out", str(tmp_path / "runs"), "--scenes", "scene_999",
                         "--quick", "--frames", "2", "--device", "cpu"]) == 1


def test_a_seed_set_is_generated_where_the_runs_look(tmp_path):
    """``answers_set run --scenes-only``: scene <seed> lands in data/scene_<seed> (where its runs
    look for it) and the index lists it."""
    from bench import answers_set

    assert answers_set.main(["run", str(tmp_path), "--preset", "small", "--generator", "varied", "--seeds", "3",
                             "--scenes-only", "--workers", "1"]) == 0
    data = tmp_path / "data" / "small_varied"
    assert (data / "scene_003" / "scene.json").exists()
    assert json.loads((data / "benchmark.json").read_text())["scenes"] == ["scene_003"]


def test_seed_sets_and_the_benchmark_index(tmp_path):
    from bench.answers_set import _index, parse_seeds, set_texts

    assert parse_seeds(["0-3", "2", "100-102"]) == [0, 1, 2, 3, 100, 101, 102]
    texts = set_texts("varied", [100])
    assert "refrigerator" in texts and "object" in texts            # absent texts, canonical phrases
    from gags_ros.sim.scene import make_scene

    assert {q["text"] for q in make_scene(100, generator="varied").queries()} <= set(texts)
    for s in (7, 5):
        d = tmp_path / f"scene_{s:03d}"
        d.mkdir()
        (d / "scene.json").write_text(json.dumps({"seed": s}))
    (tmp_path / "scene_009").mkdir()                                  # incomplete: not listed
    _index(tmp_path)
    index = json.loads((tmp_path / "benchmark.json").read_text())
    assert index["scenes"] == ["scene_005", "scene_007"] and index["seeds"] == [5, 7]
