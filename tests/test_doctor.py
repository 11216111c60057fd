"""gags-doctor: --help without weights, missing weights refused, random weights judged untrained."""

import pytest
import torch

from gags_ros import doctor
from gags_ros.core.config import GagsConfig, ros_params_yaml
from gags_ros.core.teachers.clip import ClipEmbedder, build_tiny_clip
from gags_ros.core.teachers.keyframe import KeyframeTeacher
from gags_ros.core.teachers.sam import SamSegmenter, build_tiny_sam


def test_help_needs_no_weights(capsys):
    with pytest.raises(SystemExit) as e:
        doctor.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--params-file" in out and "--set" in out and "Exit status" in out


def test_missing_weights_are_refused_with_the_file_to_put_where(tmp_path, capsys):
    assert doctor.main([]) == 2  # the shipped defaults: segmenter sam, no checkpoint
    err = capsys.readouterr().err
    assert "configuration refused" in err and "teacher.sam_checkpoint" in err and "sam_vit_h_4b8939.pth" in err
    params = tmp_path / "node.yaml"  # a node's parameter file, read as the node reads it
    cfg = GagsConfig()
    cfg.teacher.sam_checkpoint = str(tmp_path / "missing.pth")
    params.write_text(ros_params_yaml(cfg))
    assert doctor.main(["--params-file", str(params)]) == 2
    assert f"SAM checkpoint not found: {tmp_path / 'missing.pth'}" in capsys.readouterr().err


def test_sample_image_is_small_and_loads():
    assert doctor.SAMPLE_IMAGE.stat().st_size < 20_000
    fr = doctor.load_frame(doctor.SAMPLE_IMAGE)
    assert fr.image.shape == (192, 256, 3) and fr.image.dtype.name == "uint8" and fr.image.std() > 20


def test_random_tiny_teacher_is_judged_untrained():
    """Tiny random models of the real classes: every section is reported and SAM's low predicted IoUs
    make the verdict."""
    cfg = GagsConfig()
    t = cfg.teacher
    torch.manual_seed(0)
    teacher = KeyframeTeacher(cfg, SamSegmenter(build_tiny_sam(), t, "cpu"),
                              ClipEmbedder(*build_tiny_clip(), "cpu", crop_size=32), "cpu")
    d = doctor.diagnose(teacher, doctor.load_frame(doctor.SAMPLE_IMAGE), keyframes=2)
    assert d.untrained and d.pred_iou < doctor.LOW_IOU and len(d.keyframe_seconds) == 2
    assert d.prompts == 256 and set(d.masks) == set(d.coverage) == {"subpart", "part", "whole"}
    assert sorted(c for c, _, _ in d.ranking) == sorted(doctor.CAPTIONS)
    assert abs(sum(p for _, _, p in d.ranking) - 1) < 1e-5
    text = doctor.report(d)
    for part in ("load time", "teacher per keyframe", "masks per level", "SAM predicted IoU",
                 "CLIP zero-shot ranking", "VERDICT: weights look untrained", "SAM's predicted IoUs are low"):
        assert part in text, part


@pytest.mark.slow
def test_cli_on_random_real_architectures(capsys):
    """The smallest real architectures (SAM vit_b, CLIP ViT-B-16), random, built by the node's factory:
    CLIP's ranking is near uniform and SAM's IoUs are low (about a minute on a 2-core CPU: SAM's
    image encoder at 1024 x 1024)."""
    rc = doctor.main(["--set", "device=cpu", "--set", "teacher.allow_random_weights=true",
                      "--set", "teacher.sam_model=vit_b", "--set", "teacher.clip_pretrained=",
                      # 64 prompts in batches of 16: SAM's decoder upsamples 32 channels to 256 x 256
                      # per prompt, 2 GB at the default batch of 256 on a CPU
                      "--set", "teacher.prompt_scale=0.0625", "--set", "teacher.prompt_batch=16",
                      "--keyframes", "1"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "VERDICT: weights look untrained" in out and "near uniform" in out and "IoUs are low" in out, out
    assert "SAM and CLIP run with random weights" in out
