"""3D answers benchmark (the answers issue): hit@1 / hit@3 of the online map's answers and the
false-positive rate of absent-object queries, for a grid of query-engine settings on the same maps.

Two steps, so the map building (GPU) and the reporting (anywhere) can run on different machines:

    # build the online map of every scene (and run seed), answer every query and ABSENT text with
    # every setting of GRID; one JSON of rows per map into OUT
    python -m bench.answers run DATASET --out OUT [--seeds 0] [--set k=v ...] [--scenes scene_000 ...]
    # pool the rows of OUT: tables per setting, records in bench/results/answers.json
    python -m bench.answers report OUT --tag train|heldout [--configs peak_gate0.5 ...]

A hit@1 is a first target whose location lies inside the query's ground-truth box (the union box
of every instance carrying the text); hit@3 any of the first three. An absent query is a text
naming nothing in the scene (household objects of no scene, ABSENT); it is a false positive when
answered with any target. ``--tag train`` is for scenes of training seeds (0-9: tune there),
``heldout`` for seeds 100-102 (report only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

# Texts of objects no generated scene holds (checked against the scene's labels at run time).
ABSENT = ["refrigerator", "bicycle", "guitar", "toilet", "laptop", "umbrella", "teddy bear", "piano",
          "skateboard", "fire extinguisher", "bathtub", "microwave oven"]

# Settings compared on the same maps: name -> query overrides.
GRID = {"cluster": {"targets": "cluster", "min_coverage": 0.0},
        "cluster_gate0.5": {"targets": "cluster", "min_coverage": 0.5},
        "peak": {"targets": "peak", "min_coverage": 0.0}}
for _c in (0.3, 0.5, 0.7, 0.9):
    for _s in (1, 3):
        for _r in (0.05, 0.1, 0.15):
            GRID[f"peak_gate{_c}_s{_s}_r{_r}"] = {"targets": "peak", "min_coverage": _c,
                                                  "min_peak_support": _s, "peak_radius": _r}


def _answers(pipeline, texts, overrides):
    import dataclasses

    eng, g, field = pipeline.query_engine, pipeline.mapper.gaussians, pipeline.distiller.field
    base = eng.cfg
    eng.cfg = dataclasses.replace(base, **overrides)
    try:
        res = eng.query(g, field, texts, max_targets=3, min_score=0.0)
    finally:
        eng.cfg = base
    return [[{"loc": [float(v) for v in t.centroid], "score": float(t.score)} for t in r.targets] for r in res]


def mode_config(cfg, mode: str):
    """``cfg`` (the evaluation's, online GaD) with the online map distilled by ``language.mode``
    ``mode`` instead (the evaluation fixes gad; the answers compare modes on their own maps)."""
    from gags_ros.core.config import set_value, validate

    set_value(cfg, "language.mode", mode)
    return validate(cfg)


def run(a) -> int:
    from gags_ros.core.pipeline import GagsPipeline
    from gags_ros.core.sim import evaluate as ev
    from gags_ros.core.sim import stages

    overrides = dict(ev.QUICK) if a.quick else {}
    overrides.update(dict(a.overrides))
    st = ev.EvalSettings(seeds=a.seeds, modes=[], device=a.device, overrides=overrides)
    cache = ev.prepare_text_cache(a.dataset, ev.make_config(st, 0).query.canonical_phrases, a.text_cache)
    from gags_ros.core.sim.text_model import ensure_cached

    ensure_cached(ABSENT, cache)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for d in ev.scene_dirs(a.dataset):
        if a.scenes and d.name not in a.scenes:
            continue
        scene = ev.load_scene(d)
        labels = {str(t).lower() for lv in scene.labels.values() for t in lv.values()}
        absent = [t for t in ABSENT if t not in labels]
        for seed in a.seeds:
            t0 = time.perf_counter()
            p = GagsPipeline(mode_config(ev.make_config(st, seed), a.mode), scene.labels)
            info = ev.stream(p, scene.path, max_frames=a.frames)
            texts = [q["text"] for q in scene.queries]
            rows = {"scene": scene.name, "seed": seed, "mode": a.mode, "map": info, "queries": scene.queries, "absent": absent,
                    "overrides": overrides, "answers": {}}
            for name, o in GRID.items():
                rows["answers"][name] = {"present": _answers(p, texts, o), "absent": _answers(p, absent, o)}
            # the 3D label oracle's answers and the first losing stage per query, field and oracle,
            # at the node's default query config (gags_ros/core/sim/stages.py)
            oracle = stages.pipeline_oracle(p, scene.labels, scene.queries)
            rows.update(stages.bench_rows(p, scene.labels, scene.queries, absent, oracle=oracle))
            if a.save_maps:   # to answer again offline with other query settings (bench.answers_maps)
                from bench.answers_maps import save_run_map

                save_run_map(Path(a.save_maps) / f"{ev.run_name(scene.name, seed)}.map.pt", p, oracle,
                             scene=scene.name, seed=seed, mode=a.mode, map=info, overrides=overrides)
            rows["seconds"] = time.perf_counter() - t0
            path = out / f"{ev.run_name(scene.name, seed)}.json"
            path.write_text(json.dumps(rows))
            print(f"{path.name}: {info['gaussians']} Gaussians, {rows['seconds']:.0f} s", flush=True)
    return 0


def _inside(loc, q) -> bool:
    return bool(np.all(np.asarray(loc) >= q["box_min"]) and np.all(np.asarray(loc) <= q["box_max"]))


def summarise(runs, name: str, min_score: float) -> dict:
    """Percentages over the runs' queries for setting ``name`` at score cut ``min_score``."""
    hit1, hit3, lv, fp = [], [], [], []
    for r in runs:
        for q, ans in zip(r["queries"], r["answers"][name]["present"]):
            ans = [t for t in ans if t["score"] >= min_score]
            hit1.append(bool(ans) and _inside(ans[0]["loc"], q))
            hit3.append(any(_inside(t["loc"], q) for t in ans[:3]))
            lv.append(q["level"])
        fp += [any(t["score"] >= min_score for t in ans) for ans in r["answers"][name]["absent"]]
    hit1, hit3, lv = np.array(hit1), np.array(hit3), np.array(lv)
    out = {"hit1": 100 * hit1.mean(), "hit3": 100 * hit3.mean(), "absent_fp": 100 * float(np.mean(fp)),
           "queries": int(len(hit1)), "absent_queries": len(fp)}
    for level in ("whole", "part", "subpart"):
        m = lv == level
        if m.any():
            out[f"hit1_{level}"] = 100 * hit1[m].mean()
            out[f"hit3_{level}"] = 100 * hit3[m].mean()
    return out


def report(a) -> int:
    from bench._record import record

    runs = [json.loads(p.read_text()) for p in sorted(Path(a.out).glob("*.json"))]
    if not runs:
        print(f"no run files in {a.out}")
        return 1
    names = a.configs or list(runs[0]["answers"])
    cuts = a.min_scores
    print(f"{len(runs)} maps: " + ", ".join(f"{r['scene']}/{r['seed']}" for r in runs))
    print(f"{'setting':28s} {'cut':>5s} {'hit@1':>6s} {'whole':>6s} {'part':>6s} {'sub':>6s} {'hit@3':>6s} {'absFP':>6s}")
    table = {}
    for name in names:
        for cut in cuts:
            s = summarise(runs, name, cut)
            table[(name, cut)] = s
            print(f"{name:28s} {cut:5.2f} {s['hit1']:6.1f} {s.get('hit1_whole', 0):6.1f} {s.get('hit1_part', 0):6.1f} "
                  f"{s.get('hit1_subpart', 0):6.1f} {s['hit3']:6.1f} {s['absent_fp']:6.1f}")
    if a.no_record:
        return 0
    command = "python -m bench.answers " + " ".join(sys.argv[1:] if a.argv is None else list(a.argv))
    meta = {"maps": [f"{r['scene']}/{r['seed']}" for r in runs], "overrides": runs[0]["overrides"],
            "device_of_maps": a.map_device}
    for (name, cut), s in table.items():
        tag = f"answers_{a.tag}_{name}_cut{cut:g}"
        record("answers", f"{tag}_hit1", s["hit1"], "%", command,
               per_level={k: v for k, v in s.items() if k.startswith("hit1_")}, queries=s["queries"], **meta)
        record("answers", f"{tag}_hit3", s["hit3"], "%", command, queries=s["queries"], **meta)
        record("answers", f"{tag}_absent_fp", s["absent_fp"], "%", command, queries=s["absent_queries"], **meta)
    return 0


def main(argv=None) -> int:
    from gags_ros.core.sim import evaluate as ev

    ap = argparse.ArgumentParser(prog="python -m bench.answers", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("dataset")
    r.add_argument("--out", required=True)
    r.add_argument("--seeds", type=int, nargs="+", default=[0])
    r.add_argument("--scenes", nargs="*", default=[])
    r.add_argument("--device", default="auto")
    r.add_argument("--quick", action="store_true", help="the evaluation's CPU profile")
    r.add_argument("--mode", default="gad", help="language.mode of the online map (gad, avg, ...)")
    r.add_argument("--save-maps", default="", help="also write each map (with its 3D oracle's labels) into "
                   "this folder, for python -m bench.answers_maps requery")
    r.add_argument("--frames", type=int, default=0, help="stream only the first N train frames (smoke tests)")
    r.add_argument("--set", dest="overrides", type=ev._parse_override, action="append", default=[])
    r.add_argument("--text-cache")
    p = sub.add_parser("report")
    p.add_argument("out")
    p.add_argument("--tag", required=True, choices=["train", "heldout", "small"])
    p.add_argument("--configs", nargs="*")
    p.add_argument("--min-scores", type=float, nargs="+", default=[0.0, 0.5])
    p.add_argument("--map-device", default="", help="where the maps were built (for the records)")
    p.add_argument("--no-record", action="store_true")
    a = ap.parse_args(argv)
    a.argv = argv
    return run(a) if a.cmd == "run" else report(a)


if __name__ == "__main__":
    raise SystemExit(main())
