"""Incremental mapping on the fox photos (instant-ngp sample data): held-out view quality.

Every 8th of the images that exist is held out; the others stream in file order through the
mapper as in :mod:`bench.lego` (add_frame, steps per keyframe, final refinement), with the lens
distortion removed by the loader. Held-out views are rendered at the mapping resolution
(``mapping.max_image_width``, 640 px wide) and compared with the photo downscaled the same way.
``mapping.init_depth_no_depth`` is set to the cameras' working distance (see bench.lego).

Records (bench/results/fox.json): fox_heldout_psnr (dB), fox_heldout_ssim, fox_seconds (s),
fox_gaussians; with the curve along the stream and the settings.

GPU run (repository root):   python -m bench.fox --data ../shared/datasets/fox
CPU smoke test of the code:  python -m bench.fox --quick   (tiny views, a few frames, no record)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

import torch

from bench._record import record
from bench.lego import stream, working_distance
from gags_ros.core.config import GagsConfig
from gags_ros.core.io.datasets import load_nerfstudio

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "fox"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with transforms.json")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--steps-per-keyframe", type=int, default=100)
    ap.add_argument("--refine-steps", type=int, default=3000)
    ap.add_argument("--hold-every", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="CPU smoke test: 60 px wide, 8 frames, nothing recorded")
    args = ap.parse_args(argv)

    device = torch.device(GagsConfig(device=args.device).resolved_device())
    frames = load_nerfstudio(args.data, downscale=18.0 if args.quick else 1.0)
    held = [f for i, f in enumerate(frames) if i % args.hold_every == 0]
    train = [f for i, f in enumerate(frames) if i % args.hold_every != 0]
    if args.quick:
        train, held = train[:8], held[:2]
        args.steps_per_keyframe, args.refine_steps = 10, 20
    cfg = GagsConfig()
    cfg.device = str(device)
    cfg.mapping.init_depth_no_depth = working_distance([f.T_world_cam for f in train])
    n = len(train)
    width = min(cfg.mapping.max_image_width, train[0].intrinsics.width)
    print(f"fox: {n} train / {len(held)} held-out views, mapped at {width} px wide on {device}; "
          f"working distance {cfg.mapping.init_depth_no_depth:.2f}")
    s = stream(cfg, device, train, held, args.steps_per_keyframe, args.refine_steps,
               sorted({max(1, n // 4), n // 2, 3 * n // 4, n}))
    print(f"fox: held-out {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f}, {s['seconds']:.1f} s, {s['gaussians']} Gaussians")
    if not args.quick:
        settings = {"steps_per_keyframe": args.steps_per_keyframe, "refine_steps": args.refine_steps,
                    "train_views": n, "heldout_views": len(held), "width": width, "hold_every": args.hold_every}
        record("fox", "fox_heldout_psnr", s["psnr"], "dB", curve=s["curve"], keyframes=s["keyframes"], **settings)
        record("fox", "fox_heldout_ssim", s["ssim"], "", **settings)
        record("fox", "fox_seconds", s["seconds"], "s", **settings)
        record("fox", "fox_gaussians", s["gaussians"], "Gaussians", **settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
