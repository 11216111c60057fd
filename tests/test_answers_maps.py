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
