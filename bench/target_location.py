"""3D target location benchmark: where in a target does the object lie?

Builds the online map (GaD while streaming, the evaluation's step 1) of every scene of a simulated
dataset, or loads maps saved by an earlier run (``--maps``), asks every query of ``queries.json``
and scores the best target's location against the ground-truth box (a hit when inside), for:

- ``peak``: the query engine's location (its Gaussians within ``query.peak_radius`` of its most
  relevant one), what the Query service returns;
- ``component_mean``: the mean of all the target's Gaussians (the engine's location until fff6e31);
- ``argmax_gaussian``: the single most relevant Gaussian of the map (no target at all; a reference).

Records in bench/results/target_location.json: ``target_location_hit3d_<strategy>`` (percent,
all levels pooled; per level in the record); with ``--peak-radii``, ``peak`` is scored at each
radius too (``target_location_hit3d_peak_r<radius>``, the same maps). Small scene on CPU, about 6
minutes per seed:

    .venv/bin/python -m bench.target_location .data/sim/small --quick --seeds 0 1 \\
        --set query.neighbour_radius=0.15 --set query.cluster_radius=0.2 \\
        --set mapping.max_image_width=96 --set language.steps_per_keyframe=40 --save-maps /tmp/maps

The demo's map (``--demo``: the demo's node parameters, gags_ros.demo.DEMO_PARAMS; the ROS test
streams 12 frames of the demo's scene, seed 0 of the small preset), about 3 minutes per seed:

    .venv/bin/python -m gags_ros.sim.dataset /tmp/demo_scene --preset small --seed 0
    .venv/bin/python -m bench.target_location /tmp/demo_scene --demo --frames 12 --seeds 0 1 2 3 \\
        --peak-radii 0.05 0.1 0.15
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from bench._record import record  # noqa: E402  (run as: python -m bench.target_location)
from gags_ros.core.pipeline import GagsPipeline
from gags_ros.eval import evaluate as ev
from gags_ros.eval import metrics

STRATEGIES = ("peak", "component_mean", "argmax_gaussian")


def locations(pipeline, texts, peak_radii=()) -> dict:
    """``{strategy: [location [3] or None per text]}`` on the pipeline's map; ``peak_r<r>`` for
    each of ``peak_radii`` (metres): the engine's location with ``query.peak_radius = r``."""
    eng, g, field = pipeline.query_engine, pipeline.mapper.gaussians, pipeline.distiller.field
    answers = eng.query(g, field, texts, max_targets=1)
    out, cfg = {}, eng.cfg
    for r in peak_radii:
        eng.cfg = dataclasses.replace(cfg, peak_radius=float(r))
        out[f"peak_r{r:g}"] = [a.targets[0].centroid if a.targets else None
                               for a in eng.query(g, field, texts, max_targets=1)]
    eng.cfg = cfg
    means = g.means.detach().double().cpu().numpy()
    with torch.no_grad():
        rel = eng.gaussian_relevancy(g, field, eng.encode(texts, g.means.device)).float().cpu().numpy()
    rel[g.opacities.detach().cpu().numpy() < eng.cfg.min_opacity] = -1.0  # as the engine: never selected
    out.update({s: [] for s in STRATEGIES})
    for i, a in enumerate(answers):
        t = a.targets[0] if a.targets else None
        out["peak"].append(None if t is None else t.centroid)
        out["component_mean"].append(None if t is None else means[t.indices].mean(axis=0))
        out["argmax_gaussian"].append(means[int(rel[:, i].argmax())])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.target_location", description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="the evaluation's CPU profile")
    ap.add_argument("--demo", action="store_true", help="the demo's node parameters (gags_ros.demo.DEMO_PARAMS)")
    ap.add_argument("--frames", type=int, default=0, help="stream the first N train frames (0 = all)")
    ap.add_argument("--peak-radii", type=float, nargs="*", default=[], help="also score peak at these "
                    "query.peak_radius values [m]")
    ap.add_argument("--set", dest="overrides", type=ev._parse_override, action="append", default=[])
    ap.add_argument("--maps", help="load <scene>__seed<k> map files from here instead of building them")
    ap.add_argument("--save-maps", help="save the built maps here")
    ap.add_argument("--text-cache")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args(argv)
    overrides = dict(ev.QUICK) if a.quick else {}
    if a.demo:
        from gags_ros.demo import DEMO_PARAMS

        overrides.update({k: v for k, v in DEMO_PARAMS.items() if not k.startswith("ros.")})
    overrides.update(dict(a.overrides))
    st = ev.EvalSettings(seeds=a.seeds, modes=[], device=a.device, overrides=overrides)
    ev.prepare_text_cache(a.dataset, ev.make_config(st, 0).query.canonical_phrases, a.text_cache)
    strategies = STRATEGIES + tuple(f"peak_r{r:g}" for r in a.peak_radii)
    hits = {s: [] for s in strategies}  # (level, hit)
    for d in ev.scene_dirs(a.dataset):
        scene = ev.load_scene(d)
        for seed in a.seeds:
            cfg = ev.make_config(st, seed)
            p = GagsPipeline(cfg, teacher_options={"labels": scene.labels})
            name = ev.run_name(scene.name, seed)
            if a.maps:
                p.load(str(Path(a.maps) / name))
            else:
                ev.stream(p, scene.path, max_frames=a.frames)
                if a.save_maps:
                    p.save(str(Path(a.save_maps) / name))
            locs = locations(p, [q["text"] for q in scene.queries], a.peak_radii)
            for s, ls in locs.items():
                hits[s] += [(q["level"], c is not None and metrics.box_contains(c, q["box_min"], q["box_max"]))
                            for q, c in zip(scene.queries, ls)]
            print(f"{name}: " + ", ".join(f"{s} {100 * np.mean([h for _, h in hits[s][-len(scene.queries):]]):.1f} %"
                                         for s in strategies), flush=True)
    command = "python -m bench.target_location " + " ".join(sys.argv[1:] if argv is None else list(argv))
    for s in strategies:
        per = {lv: 100.0 * float(np.mean([h for L, h in hits[s] if L == lv]))
               for lv in metrics.QUERY_LEVELS if any(L == lv for L, _ in hits[s])}
        allv = 100.0 * float(np.mean([h for _, h in hits[s]]))
        print(f"{s:16s} all {allv:5.1f} % " + " ".join(f"{lv} {v:5.1f}" for lv, v in per.items()))
        if not a.no_record:
            record("target_location", f"target_location_hit3d_{s}", allv, "%", command, per_level=per,
                   queries=len(hits[s]), dataset=str(a.dataset), seeds=a.seeds, overrides=overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
