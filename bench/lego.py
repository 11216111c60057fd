"""Incremental mapping on NeRF-synthetic lego: streaming vs offline at the same step budget.

Streaming: the 100 train views arrive in file order, as a robot would send them; each frame goes
through ``Mapper.add_frame`` (keyframe policy, seeding) and each keyframe is followed by
``--steps-per-keyframe`` optimisation steps over the window; when the stream ends the mapper runs
``--refine-steps`` over all keyframes. The clock counts mapping only: images are decoded before
it starts (a camera driver delivers decoded frames) and it is paused while the map is evaluated.
Test-view PSNR / SSIM (all 25 test views, white background, full 800 x 800) are measured at
checkpoints along the stream, so the record has quality against wall time and Gaussian count.

Offline: the same mapper with all 100 views known from the start (each seeded with
``--offline-seeds`` Gaussians, about 3DGS's 100k random points in total), then the same total
number of steps over all views (``Mapper.refine``: densify in the first half, centre lr decay).

Scene prior: ``mapping.init_depth_no_depth`` is set to the cameras' working distance (median
distance from the train cameras to the point their optical axes pass closest to), as an operator
would configure it; seeds with no depth are spread in [0.5, 1.5] x that along their rays.

Records (bench/results/lego.json): lego_stream_test_psnr (dB), lego_stream_test_ssim,
lego_stream_seconds (s), lego_stream_gaussians, lego_offline_test_psnr (dB),
lego_offline_test_ssim, lego_offline_seconds (s); each with the curve and the settings.

GPU run (repository root):   python -m bench.lego --data ../shared/datasets/lego
CPU smoke test of the code:  python -m bench.lego --quick   (64 px views, a few frames, no record)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from bench._record import record
from gags_ros.core.config import GagsConfig
from gags_ros.core.io.datasets import load_blender
from gags_ros.core.mapping import Mapper
from gags_ros.core.mapping.keyframes import frame_to_tensors
from gags_ros.core.mapping.losses import psnr, ssim
from gags_ros.core.render import make_renderer
from gags_ros.core.types import Frame

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "lego"


def working_distance(poses: Sequence[np.ndarray]) -> float:
    """Median distance from the cameras to the point closest (least squares) to all optical axes."""
    A, b = np.zeros((3, 3)), np.zeros(3)
    for T in poses:
        d = T[:3, 2] / np.linalg.norm(T[:3, 2])
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ T[:3, 3]
    focus = np.linalg.lstsq(A, b, rcond=None)[0]
    return float(np.median([np.linalg.norm(T[:3, 3] - focus) for T in poses]))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(mapper: Mapper, frames: Sequence[Frame], max_width: int) -> dict:
    """Mean PSNR (dB) and SSIM (Gaussian window, valid region) over ``frames``, rendered at the
    mapping resolution of each frame (the frame itself when it is no wider than ``max_width``)."""
    ps, ss = [], []
    for f in frames:
        intr, image, _, _, _ = frame_to_tensors(f, max_width, mapper.device)
        out = mapper.render(f.T_world_cam, intr).colors[0].clamp(0, 1)
        ps.append(psnr(out, image))
        ss.append(float(ssim(out, image, padding="valid")))
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))}


def stream(cfg: GagsConfig, device: torch.device, train: Sequence[Frame], test: Sequence[Frame],
           steps_per_keyframe: int, refine_steps: int, checkpoints: Sequence[int],
           log: Callable[[str], None] = print) -> dict:
    """Stream ``train`` in order, refine, and evaluate on ``test`` at the checkpoints (frame counts)."""
    mapper = Mapper(cfg, make_renderer(cfg.mapping.renderer, device), device)
    clock, curve = 0.0, []

    def checkpoint(label):
        point = {"after": label, "seconds": round(clock, 2), "gaussians": len(mapper.gaussians),
                 "keyframes": len(mapper.keyframes), "steps": mapper.stats()["steps"],
                 **evaluate(mapper, test, cfg.mapping.max_image_width)}
        curve.append(point)
        log(f"  {point}")

    for i, f in enumerate(train):
        sync(device)
        t0 = time.perf_counter()
        if mapper.add_frame(f) is not None:
            mapper.step(steps_per_keyframe)
        sync(device)
        clock += time.perf_counter() - t0
        if i + 1 in checkpoints:
            checkpoint(f"frame {i + 1}")
    t0 = time.perf_counter()
    mapper.refine(refine_steps)
    sync(device)
    clock += time.perf_counter() - t0
    checkpoint("refine")
    return {"curve": curve, "mapper": mapper, **curve[-1]}


def offline(cfg: GagsConfig, device: torch.device, train: Sequence[Frame], test: Sequence[Frame],
            total_steps: int, seeds_per_view: int, log: Callable[[str], None] = print) -> dict:
    """All views known up front: every view a keyframe, seeded, then ``total_steps`` over all."""
    cfg.mapping.init_points_per_keyframe = seeds_per_view
    cfg.mapping.keyframe_min_translation = 0.0  # every view is a keyframe
    mapper = Mapper(cfg, make_renderer(cfg.mapping.renderer, device), device)
    sync(device)
    t0 = time.perf_counter()
    for f in train:
        mapper.add_frame(f)
    mapper.refine(total_steps)
    sync(device)
    seconds = time.perf_counter() - t0
    res = {"seconds": round(seconds, 2), "gaussians": len(mapper.gaussians), "keyframes": len(mapper.keyframes),
           "steps": mapper.stats()["steps"], **evaluate(mapper, test, cfg.mapping.max_image_width)}
    log(f"  offline {res}")
    return res


def lego_config(device: str, train: Sequence[Frame], max_width: int) -> GagsConfig:
    cfg = GagsConfig()
    cfg.device = device
    cfg.mapping.background = [1.0, 1.0, 1.0]  # NeRF-synthetic is evaluated on white
    cfg.mapping.max_image_width = max_width
    cfg.mapping.init_depth_no_depth = working_distance([f.T_world_cam for f in train])
    return cfg


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NeRF-synthetic lego folder")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--mode", choices=["both", "stream", "offline"], default="both")
    ap.add_argument("--steps-per-keyframe", type=int, default=100)
    ap.add_argument("--refine-steps", type=int, default=3000)
    ap.add_argument("--offline-seeds", type=int, default=1000, help="seeds per view in offline mode")
    ap.add_argument("--quick", action="store_true", help="CPU smoke test: 64 px, 6 frames, nothing recorded")
    args = ap.parse_args(argv)

    device = torch.device(GagsConfig(device=args.device).resolved_device())
    downscale = 12.5 if args.quick else 1.0
    train = load_blender(args.data, "train", background=(1.0, 1.0, 1.0), downscale=downscale)
    test = load_blender(args.data, "test", background=(1.0, 1.0, 1.0), downscale=downscale)
    width = train[0].intrinsics.width
    if args.quick:
        train, test = train[:6], test[:2]
        args.steps_per_keyframe, args.refine_steps, args.offline_seeds = 10, 20, 300
    n = len(train)
    checkpoints = sorted({max(1, n // 4), n // 2, 3 * n // 4, n})
    total = n * args.steps_per_keyframe + args.refine_steps
    settings = {"steps_per_keyframe": args.steps_per_keyframe, "refine_steps": args.refine_steps,
                "train_views": n, "test_views": len(test), "resolution": width}
    print(f"lego: {n} train / {len(test)} test views at {width} px on {device}; {total} steps per mode")

    if args.mode in ("both", "stream"):
        cfg = lego_config(str(device), train, width)
        s = stream(cfg, device, train, test, args.steps_per_keyframe, args.refine_steps, checkpoints)
        print(f"stream: {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f}, {s['seconds']:.1f} s, {s['gaussians']} Gaussians")
        if not args.quick:
            extra = dict(settings, curve=s["curve"], keyframes=s["keyframes"], steps=s["steps"])
            record("lego", "lego_stream_test_psnr", s["psnr"], "dB", **extra)
            record("lego", "lego_stream_test_ssim", s["ssim"], "", **settings)
            record("lego", "lego_stream_seconds", s["seconds"], "s", **settings)
            record("lego", "lego_stream_gaussians", s["gaussians"], "Gaussians", **settings)
    if args.mode in ("both", "offline"):
        cfg = lego_config(str(device), train, width)
        o = offline(cfg, device, train, test, total, args.offline_seeds)
        print(f"offline: {o['psnr']:.2f} dB, SSIM {o['ssim']:.4f}, {o['seconds']:.1f} s, {o['gaussians']} Gaussians")
        if not args.quick:
            extra = dict(settings, offline_seeds=args.offline_seeds, gaussians=o["gaussians"])
            record("lego", "lego_offline_test_psnr", o["psnr"], "dB", **extra)
            record("lego", "lego_offline_test_ssim", o["ssim"], "", **extra)
            record("lego", "lego_offline_seconds", o["seconds"], "s", **extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
