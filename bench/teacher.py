"""Latency and peak memory of the per-keyframe language teacher (SAM + CLIP), by stage.

Real architectures with random initialisation (no weights can be had here; cost does not depend on
them): SAM vit_h and vit_b, CLIP ViT-B-16, 640 x 480 keyframes, 64 / 256 / 1024 prompts. For each
(model, prompts) the teacher runs ``--warmup`` keyframes, then ``--keyframes`` timed ones; the
median of each stage and of the total is recorded in bench/results/teacher.json:

    teacher_keyframe_latency_<model>_<prompts>   s
    teacher_stage_<stage>_<model>_<prompts>      s   (prompts, image_encoder, decoder,
                                                      filtering_nms, crops, clip, level_maps)
    teacher_peak_memory_<model>_<prompts>        GiB (torch.cuda.max_memory_allocated, weights included)
    teacher_masks_<model>_<prompts>              masks embedded per keyframe

Filters: a randomly initialised SAM predicts meaningless IoUs, so the configured filters would
throw away nearly every mask and make CLIP look free. By default (``--filters none``) every
decoded mask survives (quality thresholds off, NMS thresholds that never fire): the keyframe
carries the upper bound of 3 masks per prompt through upsampling, NMS, crops and CLIP, so the
numbers are what a trained SAM costs at worst. ``--filters config`` keeps the configured thresholds
(metrics get a ``_configfilters`` suffix).

GPU run (from the repository root):  python -m bench.teacher --device cuda
Quick CPU check of the code path:    python -m bench.teacher --device cpu --quick   (tiny models,
small frames, nothing recorded)
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bench._record import record
from gags_ros.core.config import GagsConfig
from gags_ros.core.teachers.clip import ClipEmbedder, build_tiny_clip, load_clip
from gags_ros.core.teachers.keyframe import KeyframeTeacher
from gags_ros.core.teachers.sam import SamSegmenter, build_tiny_sam, load_sam
from gags_ros.core.types import Frame, Intrinsics

STAGES = ("prompts", "image_encoder", "decoder", "filtering_nms", "crops", "clip", "level_maps")


def synthetic_keyframe(h: int, w: int, seed: int):
    """A frame with coloured rectangles over a gradient, a depth map, D_min and a density map."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx / w, yy / h, 0.5 + 0 * xx], -1) * 255
    for _ in range(12):
        y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
        img[y0:y0 + rng.integers(8, h // 2), x0:x0 + rng.integers(8, w // 2)] = rng.integers(0, 256, 3)
    depth = (1.0 + 3.0 * rng.random((h // 8 + 1, w // 8 + 1))).repeat(8, 0).repeat(8, 1)[:h, :w]
    frame = Frame(img.astype(np.uint8), np.eye(4), Intrinsics(500.0, 500.0, w / 2, h / 2, w, h))
    density = rng.poisson(0.3, (h, w)).astype(np.float32)
    return frame, depth.astype(np.float32), (0.6 * depth).astype(np.float32), density


# The synthetic keyframes have D_min = 0.6 D: r = 1.67, n = 6 in each of 8 x 8 patches (GAGS Eq. 1).
EQ1_PROMPTS = 64 * 6 * 6


def configure(cfg: GagsConfig, prompts: int, filters: str, quick: bool) -> None:
    t = cfg.teacher
    t.prompt_scale = min(1.0, prompts / EQ1_PROMPTS)  # about ``prompts`` per keyframe (records the count)
    t.prompt_batch = min(t.prompt_batch, prompts)
    if filters == "none":
        # Set directly (not through config validation): thresholds below any score, NMS that never fires.
        t.pred_iou_thresh = -float("inf")
        t.stability_score_thresh = -float("inf")
        t.mask_nms_score = -float("inf")
        t.box_nms_thresh = t.mask_nms_iou = 1.0
        t.mask_nms_containment = 0.0
        t.min_mask_area = 0
    if quick:
        t.crop_size = 32


def build_models(model: str, device: str, quick: bool, half: bool):
    if quick:
        sam, (clip, tok) = build_tiny_sam(device), build_tiny_clip(device)
    else:
        sam = load_sam(model, "", device, allow_random_weights=True)
        clip, tok = load_clip("ViT-B-16", "", device, half, allow_random_weights=True)
    return sam, clip, tok


def run_one(cfg, sam, clip, tok, device, frames, warmup: int):
    t = cfg.teacher
    teacher = KeyframeTeacher(cfg, SamSegmenter(sam, t, device), ClipEmbedder(clip, tok, device, t.crop_size,
                                                                              t.clip_batch), device)
    cuda = torch.device(device).type == "cuda"
    for i, (fr, d, dm, dens) in enumerate(frames[:warmup]):
        teacher.process(fr, d, dm, dens, keyframe=i)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, masks = [], []
    for i, (fr, d, dm, dens) in enumerate(frames[warmup:]):
        teacher.process(fr, d, dm, dens, keyframe=warmup + i)
        times.append(dict(teacher.timings))
        masks.append(sum(v for k, v in teacher.stats.items() if k.startswith("masks_")))
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    med = {k: statistics.median(t_.get(k, 0.0) for t_ in times) for k in (*STAGES, "total")}
    return med, peak, statistics.median(masks), teacher.stats["prompts"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--models", default="vit_h,vit_b", help="SAM registry names, comma-separated")
    ap.add_argument("--prompts", default="64,256,1024", help="prompts per keyframe, comma-separated")
    ap.add_argument("--keyframes", type=int, default=7, help="timed keyframes (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed keyframes first")
    ap.add_argument("--filters", choices=["none", "config"], default="none",
                    help="none: every mask survives (cost upper bound); config: configured thresholds")
    ap.add_argument("--quick", action="store_true",
                    help="tiny random models, 120x160 frames, 16 and 48 prompts; records nothing")
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args(argv)

    cfg0 = GagsConfig(device=args.device)
    device = cfg0.resolved_device()
    h, w = (120, 160) if args.quick else (480, 640)
    if args.quick:
        args.keyframes, args.warmup = min(args.keyframes, 2), min(args.warmup, 1)
    prompt_counts = [int(p) for p in args.prompts.split(",")]
    models = args.models.split(",")
    if args.quick:  # one tiny model (standing in for the first named), two small prompt counts
        prompt_counts, models = [16, 48], models[:1]
    frames = [synthetic_keyframe(h, w, s) for s in range(args.warmup + args.keyframes)]
    suffix = "" if args.filters == "none" else "_configfilters"
    do_record = not (args.quick or args.no_record)

    print(f"device {device}, frames {w}x{h}, filters {args.filters}")
    for model in models:
        t0 = time.perf_counter()
        sam, clip, tok = build_models(model, device, args.quick, cfg0.teacher.half_precision)
        print(f"[{model}{' (tiny stand-in)' if args.quick else ''}] models built in "
              f"{time.perf_counter() - t0:.1f} s")
        for p in prompt_counts:
            cfg = GagsConfig(device=args.device)
            configure(cfg, p, args.filters, args.quick)
            med, peak, n_masks, n_prompts = run_one(cfg, sam, clip, tok, device, frames, args.warmup)
            stages = "  ".join(f"{k} {med[k] * 1e3:.1f}" for k in STAGES)
            print(f"[{model} {p:5d} prompts] total {med['total'] * 1e3:.1f} ms | {stages} ms | "
                  f"masks {n_masks:.0f} | peak {peak:.2f} GiB")
            if not do_record:
                continue
            tag = f"{model}_{p}{suffix}"
            extra = dict(prompts=n_prompts, masks=n_masks, frame=f"{w}x{h}", keyframes=args.keyframes,
                         filters=args.filters, clip="ViT-B-16", init="random")
            record("teacher", f"teacher_keyframe_latency_{tag}", med["total"], "s", **extra)
            for k in STAGES:
                record("teacher", f"teacher_stage_{k}_{tag}", med[k], "s", **extra)
            record("teacher", f"teacher_peak_memory_{tag}", peak, "GiB", **extra)
            record("teacher", f"teacher_masks_{tag}", n_masks, "masks", **extra)
        del sam, clip
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
