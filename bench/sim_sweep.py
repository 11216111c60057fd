"""Re-derive the defaults a teacher regime moves, on training seeds: ``language.lr_features`` and
``query.min_score`` on one streamed map per seed.

For each seed (training seeds only: 100 and above are held out) the scene is streamed once with the
evaluation's settings (same arguments as ``python -m gags_ros.eval.evaluate``), then:

- ``query.min_score``: the online map (gad_online) answers every query at each ``--min-scores``
  value (3D hit rate and share of queries with a target; the threshold changes nothing else);
- ``language.lr_features``: GaD latents are distilled offline on the same geometry and teacher
  outputs at each ``--lr-features`` value (``--steps`` steps, as the evaluation's offline modes),
  scored in 2D (mIoU, mAcc) and in 3D at each min_score.

Writes ``OUT/sweep.json`` and ``OUT/sweep.md`` (mean ± std over seeds, level "all"). CPU, small
preset, one seed: about 15-25 minutes on a shared 2-core machine.

    .venv/bin/python -m bench.sim_sweep .data/sim/small --quick --device cpu --seeds 0 --out /tmp/sweep \\
        --set query.neighbour_radius=0.15 --set query.cluster_radius=0.2 --set mapping.max_image_width=96 \\
        --set language.steps_per_keyframe=40
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

from gags_ros.eval import evaluate as ev
from gags_ros.eval import metrics


def sweep_seed(scene_path, seed: int, settings, lrs, min_scores, log=print, max_frames: int = 0) -> list:
    """2D and 3D records of every (variant, min_score) of one seed; variant names say the setting."""
    from gags_ros.core.pipeline import GagsPipeline

    scene = ev.load_scene(scene_path)
    cfg = ev.make_config(settings, seed)
    pipeline = GagsPipeline(cfg, teacher_options={"labels": scene.labels})
    t0 = time.perf_counter()
    st = ev.stream(pipeline, scene.path, max_frames=max_frames)
    log(f"[seed {seed}] streamed {st['frames']} frames, {st['gaussians']} Gaussians, {time.perf_counter() - t0:.0f} s")
    engine, g = pipeline.query_engine, pipeline.mapper.gaussians
    texts = [q["text"] for q in scene.queries]
    tags = {"scene": scene.name, "seed": int(seed)}
    variants = [(f"online lr={cfg.language.lr_features:g}", ev.online_variant(pipeline), False)]
    for lr in lrs:
        cfg_lr = copy.deepcopy(cfg)
        cfg_lr.language.lr_features = float(lr)
        variants.append((f"gad lr={lr:g}", ev.distill_offline(pipeline, cfg_lr, "gad", settings.steps), True))
        log(f"[seed {seed}] gad lr={lr:g}: {time.perf_counter() - t0:.0f} s")
    records = []
    for name, v, with_2d in variants:
        ev._set_latents(pipeline.mapper, v.latents)
        if with_2d:
            def relevancy(frame, qs, field=v.field):
                return engine.relevancy_image(pipeline.renderer, g, field, frame.T_world_cam, frame.intrinsics,
                                              qs).float().cpu().numpy()
            records += [{**r, "kind": "2d"} for r in ev.score_views(relevancy, scene, settings.kernel,
                                                                     {**tags, "variant": name})]
        for m in min_scores:
            answers = engine.query(g, v.field, texts, max_targets=1, min_score=float(m))
            best = [a.targets[0].centroid if a.targets else None for a in answers]
            records += [{**r, "kind": "3d"} for r in ev.score_targets(best, scene, {**tags, "variant": f"{name} min_score={m:g}"})]
    ev._set_latents(pipeline.mapper, variants[0][1].latents)
    return records


def tables(records) -> str:
    s2 = metrics.summarize([r for r in records if r["kind"] == "2d"], ev.METRICS_2D)
    s3 = metrics.summarize([r for r in records if r["kind"] == "3d"], ev.METRICS_3D)
    out = []
    for summary, metric, title in ((s2, "iou", "mIoU (%)"), (s2, "acc", "mAcc (%)"),
                                   (s3, "hit", "3D hit rate (%)"), (s3, "found", "3D queries with a target (%)")):
        out.append(metrics.format_table(summary, metric, title=title))
    return "\n\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = ev.build_parser()
    ap.prog = "python -m bench.sim_sweep"
    ap.add_argument("--lr-features", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1])
    ap.add_argument("--min-scores", type=float, nargs="+", default=[0.4, 0.45, 0.5, 0.52, 0.55, 0.6])
    ap.add_argument("--max-frames", type=int, default=0, help="stream only the first N frames (a smoke test)")
    a = ap.parse_args(argv)
    settings = ev.settings_from_args(a)
    if any(s >= 100 for s in settings.seeds):
        ap.error("seeds 100 and above are held out for the final evaluation: sweep on training seeds")
    out = Path(a.out or "sweep")
    out.mkdir(parents=True, exist_ok=True)
    canonical = ev.make_config(settings, 0).query.canonical_phrases
    print(f"text embeddings: {ev.prepare_text_cache(a.dataset, canonical, a.text_cache)}", file=sys.stderr)
    records = []
    for seed in settings.seeds:
        records += sweep_seed(a.dataset, seed, settings, a.lr_features, a.min_scores,
                              log=lambda s: print(s, file=sys.stderr, flush=True), max_frames=a.max_frames)
        (out / "sweep.json").write_text(json.dumps({"settings": ev.asdict(settings), "argv": sys.argv[1:],
                                                    "records": records}, default=ev._json_default))
    md = tables(records)
    (out / "sweep.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
