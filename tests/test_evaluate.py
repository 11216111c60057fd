"""The evaluation command: text-embedding cache, scoring path, end-to-end run on a tiny scene."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gags_ros.eval import evaluate as ev
from gags_ros.sim import text_model as tm
from gags_ros.sim.dataset import Preset, generate

TINY = Preset(width=64, height=48, walk=8, orbit=4, closeups=0, eval_every=4)
TINY_BUDGET = {"cpu_threads": 1, "mapping.steps_per_keyframe": 3, "mapping.final_refine_steps": 10,
               "mapping.init_points_per_keyframe": 300, "language.steps_per_keyframe": 2}


@pytest.fixture(autouse=True)
def _no_text_cache_leak(monkeypatch):
    # The evaluation points $GAGS_TEXT_CACHE at its dataset; undo that after each test.
    monkeypatch.delenv(tm.CACHE_ENV, raising=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("sim") / "tiny", 3, TINY)


def _eval_names(scene: Path) -> list:
    meta = json.loads((scene / "transforms.json").read_text())
    return [Path(f["file_path"]).stem for f in meta["frames"] if f.get("split") == "eval"]


# ---- text cache --------------------------------------------------------------------------------
def test_text_cache_gives_the_models_bits(tmp_path, monkeypatch):
    monkeypatch.delenv(tm.CACHE_ENV, raising=False)
    texts = ["red mug", "mug handle", "object", "chaise longue ünïcödé", "table leg"]
    direct = tm.encode_texts(texts)
    path = tm.ensure_cached(texts[:3], tmp_path / "c.npz")
    # Missing texts are computed and added while the model is there.
    assert np.array_equal(tm.encode_texts(texts, cache=path), direct)
    assert sorted(tm.read_cache(path)) == sorted(texts)

    # Without the model: everything comes from the file, bit for bit, by argument or environment.
    def no_model(*a, **k):
        raise ImportError("no text model here")

    monkeypatch.setattr(tm, "load_text_model", no_model)
    monkeypatch.setattr(tm, "_encode_one", no_model)
    tm._loaded.clear()  # as in a fresh process
    from_file = tm.encode_texts(texts, cache=path)
    assert from_file.dtype == np.float32 and from_file.tobytes() == direct.tobytes()
    monkeypatch.setenv(tm.CACHE_ENV, str(path))
    assert tm.encode_texts(list(reversed(texts))).tobytes() == direct[::-1].tobytes()
    with pytest.raises(tm.TextCacheMiss, match="blue lamp"):
        tm.encode_texts(["red mug", "blue lamp"])


def test_text_cache_rejects_another_model(tmp_path):
    p = tmp_path / "c.npz"
    np.savez(p, format_version=np.int64(1), model=np.str_("clip"), texts=np.array(["a"]),
             embeddings=np.zeros((1, tm.TEXT_DIM), np.float32))
    with pytest.raises(ValueError, match="model"):
        tm.read_cache(p)


def test_dataset_texts_cover_labels_queries_and_phrases(tiny):
    texts = ev.dataset_texts([tiny], ["object", "things"])
    labels = json.loads((tiny / "labels.json").read_text())
    queries = json.loads((tiny / "queries.json").read_text())
    want = {t for lv in labels.values() for t in lv.values()} | {q["text"] for q in queries} | {"object", "things"}
    assert set(texts) == want


# ---- scoring path ------------------------------------------------------------------------------
def test_planted_oracle_scores_perfectly_on_the_eval_views(tiny):
    scene = ev.load_scene(tiny)
    assert [f.name for f in scene.eval_frames] == _eval_names(tiny)
    seen = []

    def oracle(frame, texts):
        assert frame.extra["split"] == "eval"
        seen.append(frame.name)
        by_text = {q["text"]: q for q in scene.queries}
        return np.stack([np.isin(frame.masks[by_text[t]["level"]], by_text[t]["ids"]).astype(np.float32)
                         for t in texts])

    recs = ev.score_views(oracle, scene, kernel=1, tags={"variant": "oracle"})
    assert seen == _eval_names(tiny)
    # Expected pairs, counted from the mask files on disk.
    expected = set()
    for name in _eval_names(tiny):
        for q in scene.queries:
            ids = np.asarray(Image.open(tiny / "masks" / q["level"] / f"{name}.png"))
            if np.isin(ids, q["ids"]).any():
                expected.add((q["text"], name))
    assert {(r["query"], r["view"]) for r in recs} == expected and len(recs) == len(expected)
    assert all(r["acc"] == 1.0 and r["iou"] == 1.0 and r["variant"] == "oracle" for r in recs)

    # The relevancy of the next query instead: localisation and IoU drop.
    def wrong(frame, texts):
        return np.roll(oracle(frame, texts), 1, axis=0)

    bad = ev.score_views(wrong, scene, kernel=1)
    # (A rolled-in query absent from the view gives a flat map: every pixel ties at its maximum,
    # which the reference counts as a hit, so localisation drops less than IoU.)
    assert np.mean([r["acc"] for r in bad]) < 0.8 and np.mean([r["iou"] for r in bad]) < 0.5


def test_label_oracle_finds_whole_objects(tiny):
    import torch

    from gags_ros.core.query import QueryEngine

    scene = ev.load_scene(tiny)
    cfg = ev.make_config(ev.EvalSettings(), 0)
    ev.prepare_text_cache(tiny, cfg.query.canonical_phrases)
    engine = QueryEngine(cfg.query, lambda t: torch.from_numpy(tm.encode_texts(t)))
    oracle = ev.label_oracle(scene, lambda t: engine.encode(t, "cpu"), engine.canonical("cpu"), cfg.query.temperature)
    frame = scene.eval_frames[0]
    texts = [q["text"] for q in scene.queries]
    rel = oracle(frame, texts)
    assert rel.shape == (len(texts), *frame.masks["whole"].shape) and 0 <= rel.min() and rel.max() < 1
    for i, q in enumerate(scene.queries):
        m = np.isin(frame.masks[q["level"]], q["ids"])
        if m.any():  # the target's own pixels are the most relevant ones
            assert rel[i][m].max() == rel[i].max(), q["text"]
    recs = ev.score_views(oracle, scene, kernel=1, tags={"variant": "label_oracle"})
    whole = [r["acc"] for r in recs if r["level"] == "whole"]
    assert whole and np.mean(whole) == 1.0



def test_label_oracle_in_the_clip_regime_carries_the_clean_mask_embedding(tiny):
    """In the clip regime a perfect field carries a label's noise-free *mask* embedding (in the image
    cone), not its text: relevancies stay CLIP-low, yet the target's pixels are still the most
    relevant and whole objects are localised."""
    from gags_ros.core.query import QueryEngine
    from gags_ros.sim.teacher import SimEmbedder

    scene = ev.load_scene(tiny)
    cfg = ev.make_config(ev.EvalSettings(), 0)
    ev.prepare_text_cache(tiny, cfg.query.canonical_phrases)
    emb = SimEmbedder(scene.labels, regime="clip")
    engine = QueryEngine(cfg.query, emb.embed_text)
    oracle = ev.label_oracle(scene, lambda t: engine.encode(t, "cpu"), engine.canonical("cpu"),
                             cfg.query.temperature, emb.label_embeddings)
    frame = scene.eval_frames[0]
    texts = [q["text"] for q in scene.queries]
    rel = oracle(frame, texts)
    assert 0.5 < rel.max() < 0.8  # sigmoid(10 x a margin of about a tenth at most)
    for i, q in enumerate(scene.queries):
        m = np.isin(frame.masks[q["level"]], q["ids"])
        if m.any():
            assert rel[i][m].max() == rel[i].max(), q["text"]
    whole = [r["acc"] for r in ev.score_views(oracle, scene, kernel=1) if r["level"] == "whole"]
    assert whole and np.mean(whole) == 1.0

def test_score_targets():
    scene = ev.SceneData("s", Path("."), {}, [
        {"text": "a", "level": "whole", "ids": [1], "box_min": [0, 0, 0], "box_max": [1, 1, 1]},
        {"text": "b", "level": "part", "ids": [2], "box_min": [2, 0, 0], "box_max": [4, 1, 1]}], [])
    r = ev.score_targets([[0.5, 0.5, 0.5], None], scene, {"variant": "v"})
    assert r[0]["hit"] == 1.0 and r[0]["center_dist"] == 0.0 and r[0]["found"] == 1.0
    assert r[1]["found"] == 0.0 and r[1]["hit"] == 0.0 and r[1]["level"] == "part"


def test_runs_with_other_settings_are_not_mixed(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x__seed0.json").write_text(json.dumps({"settings_key": "other"}))
    with pytest.raises(ValueError, match="other settings"):
        ev.load_runs(tmp_path, ev.EvalSettings().key())


def test_command_line_settings():
    a = ev.build_parser().parse_args(["d", "--quick", "--seeds", "4", "--modes", "gad", "avg",
                                      "--set", "mapping.steps_per_keyframe=7"])
    s = ev.settings_from_args(a)
    assert s.seeds == [4] and s.modes == ["gad", "avg"] and s.steps == ev.QUICK_STEPS
    assert s.overrides["mapping.steps_per_keyframe"] == 7 and s.overrides["cpu_threads"] == 1
    cfg = ev.make_config(s, 4)
    assert cfg.seed == 4 and cfg.teacher.segmenter == "sim" and cfg.language.mode == "gad"
    assert cfg.mapping.steps_per_keyframe == 7
    # Thread count changes speed, not numbers: runs made with other thread counts stay comparable.
    t = ev.EvalSettings(overrides={**s.overrides, "cpu_threads": 8}, seeds=[4], modes=s.modes, steps=s.steps)
    assert t.key() == s.key()


# ---- end to end --------------------------------------------------------------------------------
def test_ablation_shares_geometry_and_teacher_outputs(tiny):
    import torch

    from gags_ros.core.pipeline import GagsPipeline

    settings = ev.EvalSettings(seeds=[0], modes=["avg", "whole"], device="cpu", steps=4, overrides=TINY_BUDGET)
    ev.prepare_text_cache(tiny, ["object", "things", "stuff", "texture"])
    cfg = ev.make_config(settings, 0)
    scene = ev.load_scene(tiny)
    p = GagsPipeline(cfg, teacher_options={"labels": scene.labels})
    ev.stream(p, tiny)
    online = ev.online_variant(p)
    geometry = {k: v.detach().clone() for k, v in p.mapper.gaussians.params.items() if k != "features"}
    a = ev.distill_offline(p, cfg, "avg", 4)
    b = ev.distill_offline(p, cfg, "whole", 4)
    for k, v in geometry.items():
        assert torch.equal(p.mapper.gaussians.params[k], v), k
    assert a.info["steps"] == 4 and b.info["steps"] == 4
    assert not torch.equal(a.latents, online.latents) and not torch.equal(a.latents, b.latents)
    assert a.field is not b.field and a.field is not online.field
    torch.rand(123)  # whatever else drew from torch's global RNG, a mode's distillation is the same
    again = ev.distill_offline(p, cfg, "avg", 4)
    assert torch.equal(again.latents, a.latents)
    assert all(torch.equal(x, y) for x, y in zip(again.field.parameters(), a.field.parameters()))
    ev._set_latents(p.mapper, online.latents)
    assert torch.equal(p.mapper.gaussians.params["features"], online.latents)


def test_end_to_end_on_a_tiny_scene(tiny, tmp_path, monkeypatch):
    settings = ev.EvalSettings(seeds=[0], modes=["avg", "gad"], device="cpu", steps=20,
                               overrides=TINY_BUDGET, pictures=2)
    assert ev.main([str(tiny), "--texts-only"]) == 0
    # From here on as on a GPU machine: no text model, only the cache written above.
    def no_model(*a, **k):
        raise ImportError("no text model here")

    monkeypatch.setattr(tm, "load_text_model", no_model)
    monkeypatch.setattr(tm, "_encode_one", no_model)
    res = ev.evaluate(tiny, settings, out=tmp_path / "eval")
    out = tmp_path / "eval"
    assert (tiny / tm.CACHE_FILE).exists()
    queries = json.loads((tiny / "queries.json").read_text())
    assert {q["text"] for q in queries} <= set(tm.read_cache(tiny / tm.CACHE_FILE))
    assert res["variants"] == ["gad_online", "gad", "avg", "label_oracle"]
    assert res["scenes"] == ["tiny"] and res["seeds"] == [0]
    saved = json.loads((out / "results.json").read_text())
    assert saved["summary"].keys() == res["summary"].keys()
    levels = {q["level"] for q in queries}
    for v in res["variants"]:
        assert set(res["summary"][v]) == levels | {"all"}
        for lv, ms in res["summary"][v].items():
            for m in ("acc", "iou", "iou3d") + (("hit", "found") if v != "label_oracle" else ()):
                assert 0.0 <= ms[m]["mean"] <= 1.0 and ms[m]["std"] == 0.0 and ms[m]["seeds"] == 1, (v, lv, m)
            assert res["per_seed"][v][lv]["iou"]["0"] == pytest.approx(ms["iou"]["mean"])
    run = json.loads((out / "runs" / "tiny__seed0.json").read_text())
    assert run["eval_views"] == _eval_names(tiny)
    assert {r["view"] for r in run["records_2d"]} <= set(_eval_names(tiny))
    counts = {v: sum(r["variant"] == v for r in run["records_2d"]) for v in res["variants"]}
    assert len(set(counts.values())) == 1 and counts["gad"] > 0
    assert all(sum(r["variant"] == v for r in run["records_3d"]) == len(queries) for v in res["variants"][:3])
    assert not any(r["variant"] == "label_oracle" for r in run["records_3d"])
    assert run["distill"]["avg"]["steps"] == 20 and run["distill"]["gad"]["steps"] == 20
    md = (out / "results.md").read_text()
    assert "| mIoU (%) | all | whole | part | subpart |" in md and "| gad_online |" in md
    assert len(run["pictures"]) == 2
    # A run depends on its seed and settings only (here: after other work in this process).
    again = ev.evaluate_run(tiny, 0, settings, tmp_path / "again", pictures=False)
    for k in ("records_2d", "records_3d"):  # as JSON: nan == nan there
        assert json.dumps(again[k]) == json.dumps(run[k])
    for p in run["pictures"]:
        im = Image.open(p)
        assert im.format == "PNG" and im.width > 100
