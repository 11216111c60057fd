"""The whole online system in one process (no ROS): a simulated RGB-D stream through GagsPipeline
with the label-grounded teacher; queries, save/load, reset; CLIP-GS classify/retrieve plumbing."""


import numpy as np
import pytest
import torch

from gags_ros.core.config import GagsConfig, set_value
from gags_ros.core.io.datasets import load_nerfstudio
from gags_ros.core.pipeline import GagsPipeline, NoMapError
from gags_ros.sim.dataset import generate

FRAMES = 6


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("sim") / "scene", seed=0, preset="small")


def make_cfg(scene, **extra):
    cfg = GagsConfig()
    for k, v in {"device": "cpu", "teacher.segmenter": "sim", "teacher.sim_dataset": str(scene),
                 "mapping.max_image_width": 96, "mapping.steps_per_keyframe": 15,
                 "language.steps_per_keyframe": 15, "mapping.init_points_per_keyframe": 1500,
                 "mapping.final_refine_steps": 20, **extra}.items():
        set_value(cfg, k, v)
    return cfg


@pytest.fixture(scope="module")
def mapped(scene):
    p = GagsPipeline(make_cfg(scene))
    with pytest.raises(NoMapError, match="no map yet"):
        p.query(["red mug"])
    for f in load_nerfstudio(scene, split="train")[:FRAMES]:
        p.add_frame(f)
        p.run_owed()
    return p


def test_stream_builds_geometry_and_language(mapped):
    s = mapped.stats()
    assert s["keyframes"] >= 2 and s["gaussians"] > 1000
    assert s["teacher_keyframes"] == s["keyframes"]
    assert s["mapping_steps"] == 15 * s["keyframes"] and s["language_steps"] == 15 * s["keyframes"]
    assert not mapped.owes_work()
    # Background refinement runs in short chunks and stops after mapping.final_refine_steps.
    n = 0
    while mapped.idle_step():
        n += 1
    assert n == 20 // mapped.CHUNK and mapped.stats()["state"] == "idle"


def test_queries_answer_with_reasons_and_reject_bad_text(mapped):
    (a, b) = mapped.query(["table", "zzzz unrelated words"])
    for ans in (a, b):
        assert ans.targets or ans.reason
        for t in ans.targets:
            assert np.all(t.box_min <= t.centroid + 1e-6) and np.all(t.centroid <= t.box_max + 1e-6)
            assert t.count == len(t.indices) > 0
    with pytest.raises(ValueError, match="empty query text"):
        mapped.query([" "])
    xyz, rgb, rel, cov = mapped.cloud(500)
    assert xyz.shape == (500, 3) and rgb.shape == (500, 3) and rel is not None and rel.shape == (500,)
    # language coverage on the cloud: in [0, 1], most of the opaque Gaussians supervised; the
    # unknown ones carry relevancy -1 (never "relevant")
    assert cov is not None and cov.shape == (500,) and cov.min() >= 0 and cov.max() <= 1 + 1e-6
    unknown = cov < mapped.cfg.query.min_coverage
    assert 0 < unknown.mean() < 0.5, unknown.mean()
    assert np.all(rel[unknown] == -1.0) and np.all(rel[~unknown] >= 0)


def test_save_load_answers_identically_and_reset(mapped, scene, tmp_path):
    path = mapped.save(str(tmp_path / "m.gags"))
    before = mapped.query(["table"])[0]
    q = GagsPipeline(make_cfg(scene))
    assert q.load(path) == len(mapped.mapper.gaussians)
    from gags_ros.core.language import coverage

    for name in coverage.RECORDS:        # the language coverage came back with the map
        assert torch.equal(q.mapper.gaussians.record(name).cpu(), mapped.mapper.gaussians.record(name).cpu())
    after = q.query(["table"])[0]
    assert [t.count for t in after.targets] == [t.count for t in before.targets]
    for t0, t1 in zip(before.targets, after.targets):
        np.testing.assert_allclose(t0.centroid, t1.centroid, atol=1e-6)
    q.reset()
    with pytest.raises(NoMapError):
        q.query(["table"])
    with pytest.raises(NoMapError, match="nothing to save"):
        q.save(str(tmp_path / "empty.gags"))


def test_clipgs_classify_and_retrieve(mapped, tmp_path):
    from gags_ros.core.clipgs.encoder import EncoderConfig, ClipGSEncoder, save_encoder

    with pytest.raises(NoMapError, match="clipgs.encoder_path"):
        mapped.classify_objects()
    torch.manual_seed(0)
    enc = ClipGSEncoder(EncoderConfig(width=32, depth=1, heads=2, num_patches=8, patch_size=8, budget=64,
                                     pointnet_width=16))
    path = save_encoder(tmp_path / "enc.pt", enc)
    set_value(mapped.cfg, "clipgs.encoder_path", str(path))
    set_value(mapped.cfg, "clipgs.min_cluster_gaussians", 16)
    set_value(mapped.cfg, "clipgs.cluster_similarity", 0.5)
    objects, labelled, ms = mapped.classify_objects(["table", "mug", "chair"], top_k=2)
    assert objects and len(labelled) == len(objects) and ms > 0
    for o, lab in zip(objects, labelled):
        assert lab["labels"][0] in ("table", "mug", "chair") and len(lab["labels"]) == 2
        assert lab["scores"][0] >= lab["scores"][1] and -1.0 <= lab["scores"][1] <= 1.0
        assert lab["count"] == len(o.indices)
    hits = mapped.retrieve_objects("a table", max_results=3)
    sims = [s for _, s in hits]
    assert 1 <= len(hits) <= 3 and sims == sorted(sims, reverse=True)
    # Clusters carry the language field's view of them: answers are two-stage (clipgs.proposals).
    assert mapped._object_index("clusters").two_stage and mapped.cfg.clipgs.proposals == 5
    with pytest.raises(ValueError, match="source"):
        mapped.classify_objects(source="nonsense")
