"""gags-doctor: check the SAM and CLIP weights a configuration names before trusting the node.

    gags-doctor [--params-file PARAMS.yaml] [--set teacher.sam_checkpoint=/path/sam_vit_h.pth ...]
    python -m gags_ros.doctor --help

Loads the teacher exactly as the mapping node does (the same configuration tree and the same
factory, :func:`~gags_ros.core.teachers.factory.build_teacher`), runs it on a small image shipped
with the package (``assets/doctor_room.jpg``: a room with a desk, a monitor, a floor lamp and a rug,
rendered by the simulation: scene seed 0, view 40 of the small preset, 256 x 192) and prints

- load time, and teacher time per keyframe (SAM + CLIP; the first keyframe includes warm-up);
- masks per level and the fraction of the image each level covers;
- SAM's confidence: the mean over prompts of the best predicted IoU, before any filter;
- CLIP's zero-shot ranking of a few captions for the whole image (the model's own logit scale);
- a verdict: "weights look untrained" when CLIP's ranking is near uniform (normalised entropy above
  ``UNIFORM_ENTROPY``) or SAM's predicted IoUs are low (below ``LOW_IOU``), else "weights look
  trained" (with a warning when CLIP does not rank the image's own caption first).

Exit status: 0 trained, 1 untrained, 2 configuration refused (e.g. missing weights: the message
names the parameter and the file to put where).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

SAMPLE_IMAGE = Path(__file__).with_name("assets") / "doctor_room.jpg"
# The first caption describes the sample image; the others are far from it.
CAPTIONS = (
    "a photo of a room with a desk, a computer monitor and a floor lamp",
    "a photo of a dog running on grass",
    "a photo of a city street at night",
    "a photo of a bowl of fruit",
    "a page of printed text",
    "a photo of a mountain lake",
)
UNIFORM_ENTROPY = 0.9  # of the caption probabilities, over log(#captions); a trained CLIP is far below
LOW_IOU = 0.5  # trained SAM: best predicted IoU of a point prompt mostly above 0.8


@dataclass
class Diagnosis:
    """What :func:`diagnose` measured. Times in seconds; coverage in [0, 1] of the image's pixels."""

    keyframe_seconds: List[float]
    stage_seconds: Dict[str, float]
    prompts: int
    masks: Dict[str, int]
    coverage: Dict[str, float]
    pred_iou: float
    ranking: List[Tuple[str, float, float]]  # (caption, cosine, probability), best first
    entropy: float  # normalised entropy of the caption probabilities, in [0, 1]
    expected_caption: Optional[str] = None
    load_seconds: float = float("nan")
    problems: List[str] = field(default_factory=list)

    @property
    def untrained(self) -> bool:
        return bool(self.problems)


def load_frame(path: Path):
    """A :class:`~gags_ros.core.types.Frame` of the RGB image at ``path`` (identity pose, 60 deg
    horizontal field of view; the teacher needs neither)."""
    from PIL import Image

    from .core.types import Frame, Intrinsics

    img = np.array(Image.open(path).convert("RGB"))  # writable: the teacher wraps it in a tensor
    h, w = img.shape[:2]
    f = w / 2 / math.tan(math.radians(30))
    return Frame(img, np.eye(4), Intrinsics(f, f, w / 2, h / 2, w, h))


def diagnose(teacher, frame, captions: Sequence[str] = CAPTIONS, keyframes: int = 2,
             expected_caption: Optional[str] = None) -> Diagnosis:
    """Run ``teacher`` (a :class:`~gags_ros.core.teachers.keyframe.KeyframeTeacher` with a SAM
    segmenter and a CLIP embedder) ``keyframes`` times on ``frame`` and judge its weights."""
    import torch

    from .core.teachers.base import LEVELS

    times, out = [], None
    for k in range(max(1, keyframes)):
        t0 = time.perf_counter()
        out = teacher.process(frame, keyframe=k)
        times.append(time.perf_counter() - t0)
    masks = {n: int(teacher.stats[f"masks_{n}"]) for n in LEVELS}
    coverage = {n: float((out.level_ids[i] >= 0).float().mean()) for i, n in enumerate(LEVELS)}
    pred_iou = float(teacher.segmenter.stats.get("pred_iou_best_mean", float("nan")))

    emb = teacher.embedder
    h, w = frame.image.shape[:2]
    image = emb.embed_masks(frame, torch.ones(1, h, w, dtype=torch.bool))[0]
    cos = emb.embed_text(list(captions)) @ image
    scale = float(emb.model.logit_scale.exp()) if hasattr(emb.model, "logit_scale") else 100.0
    prob = torch.softmax(scale * cos, 0)
    entropy = float(-(prob * prob.clamp_min(1e-12).log()).sum() / math.log(len(captions)))
    order = torch.argsort(prob, descending=True).tolist()
    d = Diagnosis(times, dict(teacher.timings), int(teacher.stats["prompts"]), masks, coverage, pred_iou,
                  [(captions[i], float(cos[i]), float(prob[i])) for i in order], entropy, expected_caption)
    if entropy > UNIFORM_ENTROPY:
        d.problems.append(f"CLIP's caption ranking is near uniform (normalised entropy {entropy:.3f} > "
                          f"{UNIFORM_ENTROPY})")
    if not pred_iou >= LOW_IOU:  # NaN (no prompts) counts as low
        d.problems.append(f"SAM's predicted IoUs are low (mean best of each prompt {pred_iou:.3f} < {LOW_IOU})")
    return d


def report(d: Diagnosis) -> str:
    """The printed report of ``d``, ending with the verdict line."""
    warm = d.keyframe_seconds[1:] or d.keyframe_seconds
    lines = [f"load time:               {d.load_seconds:.2f} s",
             f"teacher per keyframe:    {statistics.median(warm):.3f} s (median of {len(warm)}; first, with "
             f"warm-up: {d.keyframe_seconds[0]:.3f} s), {d.prompts} prompts",
             "  stages: " + ", ".join(f"{k} {v:.3f}" for k, v in d.stage_seconds.items()) + " s",
             "masks per level:         " + ", ".join(f"{n} {d.masks[n]} ({100 * d.coverage[n]:.0f} % of the image)"
                                                     for n in d.masks),
             f"SAM predicted IoU:       {d.pred_iou:.3f} (mean over prompts of the best of three)",
             f"CLIP zero-shot ranking (normalised entropy {d.entropy:.3f}):"]
    lines += [f"  {p:6.3f}  cos {c:+.3f}  {text}" for text, c, p in d.ranking]
    if d.untrained:
        lines.append("VERDICT: weights look untrained: " + "; ".join(d.problems))
    else:
        lines.append("VERDICT: weights look trained")
        if d.expected_caption and d.ranking[0][0] != d.expected_caption:
            lines.append(f"warning: CLIP does not rank the image's caption first ({d.expected_caption!r}): "
                         f"check that teacher.clip_model matches the weights")
    return "\n".join(lines)


def _override(text: str) -> Tuple[str, object]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects section.key=value, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), yaml.safe_load(v) if v.strip() else ""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gags-doctor", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Exit status: 0 weights look trained, 1 untrained, 2 configuration refused.")
    ap.add_argument("--params-file", metavar="PATH",
                    help="ROS parameter file of the node (default: the configuration's defaults, as in "
                    "config/mapping.yaml)")
    ap.add_argument("--set", dest="overrides", type=_override, action="append", default=[],
                    metavar="SECTION.KEY=VALUE", help="configuration value (repeatable), e.g. "
                    "teacher.sam_checkpoint=~/.ros/gags_models/sam_vit_h_4b8939.pth")
    ap.add_argument("--image", type=Path, default=SAMPLE_IMAGE,
                    help="RGB image to run on (default: the shipped room; captions then judge CLIP too)")
    ap.add_argument("--caption", dest="captions", action="append",
                    help="caption to rank (repeatable; default: the sample image's caption and five others)")
    ap.add_argument("--keyframes", type=int, default=2, help="teacher runs on the image (default 2)")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .core.config import ConfigError, GagsConfig, load_yaml, set_value, validate
    from .core.teachers.factory import build_teacher, check_teacher_weights, random_weight_models

    try:
        cfg = load_yaml(args.params_file) if args.params_file else GagsConfig()
        for k, v in args.overrides:
            set_value(cfg, k, v)
        validate(cfg)
        if cfg.teacher.segmenter != "sam":
            raise ConfigError(f"teacher.segmenter={cfg.teacher.segmenter!r}: the doctor checks SAM and CLIP "
                              f"weights (segmenter 'sam')")
        check_teacher_weights(cfg)
    except ConfigError as e:
        print(f"gags-doctor: configuration refused: {e}", file=sys.stderr)
        return 2
    device = cfg.resolved_device()
    t = cfg.teacher
    print(f"SAM {t.sam_model} ({t.sam_checkpoint or 'random weights'}), CLIP {t.clip_model} "
          f"({t.clip_pretrained or 'random weights'}), device {device}")
    if random_weight_models(cfg):
        print(f"note: {' and '.join(random_weight_models(cfg))} run with random weights "
              f"(teacher.allow_random_weights)")
    t0 = time.perf_counter()
    teacher = build_teacher(cfg, device)
    load = time.perf_counter() - t0
    captions = tuple(args.captions) if args.captions else CAPTIONS
    expected = CAPTIONS[0] if args.image == SAMPLE_IMAGE and not args.captions else None
    d = diagnose(teacher, load_frame(args.image), captions, args.keyframes, expected)
    d.load_seconds = load
    print(report(d))
    return 1 if d.untrained else 0


if __name__ == "__main__":
    raise SystemExit(main())
