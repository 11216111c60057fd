"""Statistics of the simulation teacher's embeddings over a scene, recorded in bench/results/sim.json.

Measures what docs/sim_teacher.md compares with CLIP (see
:func:`gags_ros.sim.teacher.embedding_statistics`): every frame of the scene (both splits),
every level's masks, the configured regime (``teacher.sim_regime``, default ``clip``) and
canonical phrases, for each ``--seeds`` (the teacher's noise seed; training seeds only). Records the
mean over seeds:

    sim_teacher_pos_cos_mean            cosine of a mask embedding to its own label's text
    sim_teacher_canon_margin_mean       own label's cosine - best canonical phrase's cosine
    sim_teacher_other_margin_mean       own label's cosine - mean over the other labels
    sim_teacher_nearest_other_margin_mean  own label's cosine - best other label
    sim_teacher_top1_accuracy           masks whose best label text is their own (fraction)
    sim_teacher_mask_mask_cos_mean      cosine between two masks' embeddings
    sim_teacher_mask_text_cos_max       largest mask-text cosine (a modality gap: below the line above)

each with the regime, the scene and the seeds.

    .venv/bin/python -m gags_ros.sim.dataset .data/sim/small --preset small
    .venv/bin/python -m bench.sim_teacher .data/sim/small            # ~1 min on a 2-core CPU
    .venv/bin/python -m bench.sim_teacher .data/sim/small --regime text
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench._record import record  # (run as: python -m bench.sim_teacher)


def main(argv=None) -> int:
    from gags_ros.core.config import GagsConfig
    from gags_ros.core.io.datasets import load_nerfstudio
    from gags_ros.sim.teacher import REGIMES, SimEmbedder, embedding_statistics

    cfg = GagsConfig()
    ap = argparse.ArgumentParser(prog="python -m bench.sim_teacher", description=__doc__.split("\n")[0])
    ap.add_argument("scene", help="a simulated scene folder (labels.json, transforms.json, masks/)")
    ap.add_argument("--regime", choices=REGIMES, default=cfg.teacher.sim_regime)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-record", action="store_true", help="print only")
    a = ap.parse_args(argv)
    if any(s >= 100 for s in a.seeds):
        ap.error("seeds 100 and above are held out for the final evaluation")
    scene = Path(a.scene)
    labels = json.loads((scene / "labels.json").read_text())
    frames = [f for f in load_nerfstudio(scene) if f.masks]
    canonical = cfg.query.canonical_phrases
    per_seed = [embedding_statistics(SimEmbedder(labels, seed=s, regime=a.regime), frames, canonical)
                for s in a.seeds]
    print(f"{scene.name}: {len(frames)} frames, regime {a.regime}, seeds {a.seeds}")
    for k in per_seed[0]:
        print(f"  {k}: " + "  ".join(f"{st[k]:.4f}" for st in per_seed))
    if a.no_record:
        return 0
    extra = {"regime": a.regime, "scene": scene.name, "seeds": a.seeds, "frames": len(frames),
             "canonical": list(canonical)}
    for k in per_seed[0]:
        if k == "masks":
            continue
        vals = [st[k] for st in per_seed]
        record("sim", f"sim_teacher_{k}", statistics.fmean(vals), "cosine" if "cos" in k or "margin" in k
               else "fraction", std=statistics.stdev(vals) if len(vals) > 1 else 0.0,
               masks=sum(st["masks"] for st in per_seed), **extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
