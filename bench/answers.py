"""3D answers benchmark (the answers issue): hit@1 / hit@3 of the online map's answers, the
false-positive rate of absent-object queries and the calibration of the targets' confidence, for a
few query-engine settings on the same maps.

Three steps, so the map building (GPU) and the fitting and reporting (anywhere) can run on
different machines:

    # build the online map of every scene (and run seed), answer every query and ABSENT text with
    # every setting of GRID, storing per candidate target its location, score, confidence and the
    # confidence's features, the 3D oracle's answers and the losing stages; one JSON of rows per
    # map into OUT (--save-maps DIR: keep the maps; python -m bench.answers_maps requery answers
    # them again with other query settings without rebuilding them)
    python -m bench.answers run DATASET --out OUT [--seeds 0] [--set k=v ...] [--scenes scene_000 ...]
    # fit query.calibration and query.min_confidence on TRAINING runs (seeds 0-9 only): the one
    # way their defaults in gags_ros/core/config.py are produced
    python -m bench.answers calibrate OUT [OUT2 ...] --out calibration.json [--max-fp 10]
    # pool the rows of OUT: tables per setting, records in bench/results/answers.json; with
    # --tag heldout also the reliability diagram, the ECE and the issue's sim_heldout_* records
    python -m bench.answers report OUT --tag train|heldout [--configs default ...]

Confidence is recomputed from the stored features with the coefficients in force (the config's
defaults, or ``--calibration FILE``), so a refit applies to old run files without new maps. The
answers of a setting are its candidates with confidence >= min_confidence, most confident first.

A hit@1 is a first target whose location lies inside the ground-truth box of any correct instance
(the query's ``boxes``, else its ``box_min`` / ``box_max``); hit@3 any of the first three. An
absent query is a text naming nothing in the scene (household objects of no scene, ABSENT); it is a
false positive when answered with any target. ``--tag train`` is for scenes of training seeds (0-9:
tune there), ``heldout`` for seeds 100-102 (report only, never fit).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from gags_ros.core import calibration

# Texts of objects no generated scene holds (checked against the scene's labels at run time).
ABSENT = ["refrigerator", "bicycle", "guitar", "toilet", "laptop", "umbrella", "teddy bear", "piano",
          "skateboard", "fire extinguisher", "bathtub", "microwave oven"]

# Settings compared on the same maps: name -> query overrides on top of the run's configuration.
# "default" is the node's operating point (the calibration is fitted for it); the others are the
# alternatives worth comparing (bench/results/answers.json: the wider grid of the previous runs).
GRID = {"default": {},
        "cluster": {"targets": "cluster", "min_coverage": 0.0},
        "cluster_cov0.5": {"targets": "cluster", "min_coverage": 0.5},
        "cluster_cov0.2": {"targets": "cluster", "min_coverage": 0.2},
        "peak_gate": {"targets": "peak", "min_coverage": 0.5, "peak_radius": 0.15},
        "mass_t0.8": {"targets": "mass", "threshold": 0.8},
        "mass_t0.9": {"targets": "mass", "threshold": 0.9},
        "mass_t0.7": {"targets": "mass", "threshold": 0.7},
        "mass_r1.5": {"targets": "mass", "mass_radius": 1.5},
        "mass_r6": {"targets": "mass", "mass_radius": 6.0},
        "mass_cov0.2": {"targets": "mass", "min_coverage": 0.2},
        "mass_medoid": {"targets": "mass", "location": "medoid"},
        "mass_in0.5": {"targets": "mass", "inset": 0.5},
        "mass_in1": {"targets": "mass", "inset": 1.0},
        "mass_in2": {"targets": "mass", "inset": 2.0},
        "mass_in4": {"targets": "mass", "inset": 4.0}}
CANDIDATES = 8          # candidate targets stored per query: the refitted confidence may reorder them
DEFAULT = "default"


def _answers(pipeline, texts, overrides):
    """Per text, up to CANDIDATES candidate targets (every confidence: min_confidence off) as
    ``{"loc" [3] m, "score", "confidence", "features" [6], "count"}``."""
    import dataclasses

    eng, g, field = pipeline.query_engine, pipeline.mapper.gaussians, pipeline.distiller.field
    base = eng.cfg
    eng.cfg = dataclasses.replace(base, **{**overrides, "min_confidence": 0.0})
    try:
        res = eng.query(g, field, texts, max_targets=CANDIDATES, min_score=0.0)
    finally:
        eng.cfg = base
    return [[{"loc": [float(v) for v in t.centroid], "score": float(t.score), "confidence": float(t.confidence),
              "features": [float(v) for v in t.features], "count": int(t.count)} for t in r.targets]
            for r in res]


def mode_config(cfg, mode: str):
    """``cfg`` (the evaluation's, online GaD) with the online map distilled by ``language.mode``
    ``mode`` instead (the evaluation fixes gad; the answers compare modes on their own maps)."""
    from gags_ros.core.config import set_value, validate

    set_value(cfg, "language.mode", mode)
    return validate(cfg)


def run_head(p, scene, seed: int, mode: str, info: dict, absent, overrides: dict) -> dict:
    """The fields of a run file that describe the map and the settings (before its answers)."""
    q = p.cfg.query
    return {"scene": scene.name, "seed": seed, "mode": mode, "map": info, "queries": scene.queries, "absent": absent,
            "overrides": overrides, "grid": GRID, "features": list(calibration.FEATURES),
            "query_defaults": {"targets": q.targets, "min_coverage": q.min_coverage,
                               "calibration": list(q.calibration), "min_confidence": q.min_confidence},
            "answers": {}}


def run(a) -> int:
    from gags_ros.core.pipeline import GagsPipeline
    from gags_ros.eval import evaluate as ev
    from gags_ros.eval import stages

    overrides = dict(ev.QUICK) if a.quick else {}
    overrides.update(dict(a.overrides))
    st = ev.EvalSettings(seeds=a.seeds, modes=[], device=a.device, overrides=overrides)
    cache = ev.prepare_text_cache(a.dataset, ev.make_config(st, 0).query.canonical_phrases, a.text_cache)
    from gags_ros.sim.text_model import ensure_cached

    ensure_cached(ABSENT, cache)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [d for d in ev.scene_dirs(a.dataset) if not a.scenes or d.name in a.scenes]
    if not dirs:   # a wrong folder or scene name must not pass for a run with nothing to report
        print(f"no scene {' '.join(a.scenes)} in {a.dataset}" if a.scenes else f"no scene in {a.dataset}",
              file=sys.stderr)
        return 1
    for d in dirs:
        scene = ev.load_scene(d)
        labels = {str(t).lower() for lv in scene.labels.values() for t in lv.values()}
        absent = [t for t in ABSENT if t not in labels]
        for seed in a.seeds:
            t0 = time.perf_counter()
            p = GagsPipeline(mode_config(ev.make_config(st, seed), a.mode), teacher_options={"labels": scene.labels})
            info = ev.stream(p, scene.path, max_frames=a.frames)
            texts = [q["text"] for q in scene.queries]
            rows = run_head(p, scene, seed, a.mode, info, absent, overrides)
            for name, o in GRID.items():
                rows["answers"][name] = {"present": _answers(p, texts, o), "absent": _answers(p, absent, o)}
            # the 3D label oracle's answers and the first losing stage per query, field and oracle,
            # at the node's default query config (gags_ros/eval/stages.py)
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


def _boxes(q) -> np.ndarray:
    """``[B, 2, 3]`` ground-truth boxes (min, max; metres) of every correct instance of query ``q``."""
    if q.get("boxes"):
        return np.asarray(q["boxes"], dtype=np.float64).reshape(-1, 2, 3)
    return np.asarray([q["box_min"], q["box_max"]], dtype=np.float64).reshape(1, 2, 3)


def inside(loc, q) -> bool:
    """The location ``[3]`` (metres) lies inside (inclusive) the box of any correct instance of ``q``."""
    b = _boxes(q)
    p = np.asarray(loc, dtype=np.float64)
    return bool(np.any(np.all((b[:, 0] <= p) & (p <= b[:, 1]), axis=1)))


def answers(cands, coef=None, min_confidence: float = 0.0, min_score: float = 0.0) -> list:
    """The answers among stored candidates ``cands`` (dicts of :func:`_answers`): confidence
    recomputed from the features with ``coef`` ``[6]`` (None: the stored confidence), kept when at
    least ``min_confidence`` and ``min_score``, most confident first (as the engine orders them)."""
    out = []
    for t in cands:
        c = t["confidence"] if coef is None else float(calibration.confidence(t["features"], coef)[0])
        if c >= min_confidence and t["score"] >= min_score:
            out.append({**t, "confidence": c})
    out.sort(key=lambda t: -t["confidence"])
    return out


def first_targets(runs, name: str, coef=None):
    """The first answer (no confidence cut) of every query of setting ``name``, for calibration:
    ``(features [m, 6], confidence [m], label [m] 0/1, absent [m] bool)``; label = hit@1 (absent
    queries: 0). Queries without any candidate give no example."""
    feats, conf, label, absent = [], [], [], []
    for r in runs:
        ans = r["answers"][name]
        for q, cands in zip(r["queries"], ans["present"]):
            a = answers(cands, coef)
            if a:
                feats.append(a[0]["features"]), conf.append(a[0]["confidence"])
                label.append(inside(a[0]["loc"], q)), absent.append(False)
        for cands in ans["absent"]:
            a = answers(cands, coef)
            if a:
                feats.append(a[0]["features"]), conf.append(a[0]["confidence"])
                label.append(False), absent.append(True)
    return (np.asarray(feats, dtype=np.float64).reshape(-1, calibration.NUM_COEFFICIENTS),
            np.asarray(conf, dtype=np.float64), np.asarray(label, dtype=np.float64), np.asarray(absent, dtype=bool))


def absent_best(runs, name: str, coef=None) -> np.ndarray:
    """``[m]`` best confidence of each absent query of setting ``name`` (0 without a candidate)."""
    return np.asarray([max((t["confidence"] for t in answers(c, coef)), default=0.0)
                       for r in runs for c in r["answers"][name]["absent"]], dtype=np.float64)


def summarise(runs, name: str, min_score: float = 0.0, min_confidence: float = 0.0, coef=None) -> dict:
    """Percentages over the runs' queries for setting ``name``: hit@1, hit@3 (overall and per
    level) and the absent-object false-positive rate, answers cut at ``min_score`` and
    ``min_confidence`` with confidence from ``coef`` (None: as stored)."""
    hit1, hit3, lv, fp = [], [], [], []
    for r in runs:
        for q, cands in zip(r["queries"], r["answers"][name]["present"]):
            ans = answers(cands, coef, min_confidence, min_score)
            hit1.append(bool(ans) and inside(ans[0]["loc"], q))
            hit3.append(any(inside(t["loc"], q) for t in ans[:3]))
            lv.append(q["level"])
        fp += [bool(answers(c, coef, min_confidence, min_score)) for c in r["answers"][name]["absent"]]
    hit1, hit3, lv = np.array(hit1, dtype=bool), np.array(hit3, dtype=bool), np.array(lv)
    out = {"hit1": 100 * float(hit1.mean()) if hit1.size else float("nan"),
           "hit3": 100 * float(hit3.mean()) if hit3.size else float("nan"),
           "absent_fp": 100 * float(np.mean(fp)) if fp else float("nan"),
           "queries": int(hit1.size), "absent_queries": len(fp)}
    for level in ("whole", "part", "subpart"):
        m = lv == level
        if m.any():
            out[f"hit1_{level}"] = 100 * float(hit1[m].mean())
            out[f"hit3_{level}"] = 100 * float(hit3[m].mean())
    return out


def fit(runs, name: str = DEFAULT, max_fp: float = 0.10, l2: float = 1e-2, rounds: int = 5) -> dict:
    """Fit the confidence on training runs: logistic regression of the hit@1 label of each
    present query's first target and of 0 for each absent query's first target on their features
    (:func:`first_targets`). Which target is first depends on the coefficients, so the fit is
    repeated from the stored order until the first targets stop changing (``rounds`` at most). Then
    ``min_confidence`` = the least cut with absent false positives <= ``max_fp`` (a fraction),
    rounded up to 3 decimals. Returns coefficients, cut and the training numbers."""
    coef = None
    for k in range(rounds):
        x, _, y, _ = first_targets(runs, name, coef)
        new = calibration.fit_logistic(x, y, l2=l2)
        same = coef is not None and np.array_equal(first_targets(runs, name, new)[0], x)
        coef = new
        if same:
            break
    cut, _ = calibration.threshold_for_fp(absent_best(runs, name, coef), max_fp)
    cut = min(1.0, math.ceil(cut * 1000) / 1000)
    x, conf, y, absent = first_targets(runs, name, coef)
    return {"setting": name, "coefficients": [float(v) for v in coef], "features": list(calibration.FEATURES),
            "min_confidence": cut, "max_fp": max_fp, "l2": l2, "rounds": k + 1, "examples": int(y.size),
            "positives": int(y.sum()), "absent_examples": int(absent.sum()),
            "train_ece": calibration.expected_calibration_error(conf, y),
            "train": summarise(runs, name, 0.0, cut, coef),
            "maps": [f"{r['scene']}/{r['seed']}" for r in runs]}


def config_snippet(result: dict) -> str:
    """The fitted values as the lines of gags_ros/core/config.py's QueryConfig defaults."""
    c = ", ".join(f"{v:.4g}" for v in result["coefficients"])
    return (f"calibration: [{c}]\nmin_confidence: {result['min_confidence']:g}\n"
            f"# python -m bench.answers calibrate on {len(result['maps'])} training maps "
            f"({', '.join(result['maps'])}), setting {result['setting']}")


def reliability_png(conf, hit, path, bins: int = 10, title: str = "") -> None:
    """Reliability diagram (observed hit rate vs mean confidence per bin, the diagonal, and the
    count of each bin as a bar below) as a PNG; PIL only."""
    from PIL import Image, ImageDraw

    r = calibration.reliability(conf, hit, bins)
    S, M = 400, 50
    img = Image.new("RGB", (S + 2 * M, S + 2 * M + 80), "white")
    d = ImageDraw.Draw(img)
    X = lambda v: M + v * S                                   # noqa: E731
    Y = lambda v: M + (1 - v) * S                             # noqa: E731
    d.rectangle([X(0), Y(1), X(1), Y(0)], outline="black")
    d.line([X(0), Y(0), X(1), Y(1)], fill=(150, 150, 150))
    for v in (0.0, 0.5, 1.0):                                 # ticks: confidence below, hit rate left
        d.text((X(v) - 8, Y(0) + 4), f"{v:g}", fill="black")
        d.text((M - 24, Y(v) - 6), f"{v:g}", fill="black")
    peak = max(int(r["count"].max()), 1)
    for k in range(bins):
        lo, hi = r["edges"][k], r["edges"][k + 1]
        if r["count"][k] > 0:
            d.rectangle([X(lo) + 2, Y(r["hit_rate"][k]), X(hi) - 2, Y(0)], outline=(30, 90, 200), fill=(160, 190, 240))
            cx, cy = X(r["mean_confidence"][k]), Y(r["hit_rate"][k])
            d.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=(200, 40, 40))
        h = 60 * r["count"][k] / peak
        d.rectangle([X(lo) + 2, S + 2 * M + 70 - h, X(hi) - 2, S + 2 * M + 70], fill=(120, 120, 120))
        d.text((X(lo) + 4, S + 2 * M + 72 - h - 12), str(int(r["count"][k])), fill="black")
    ece = calibration.expected_calibration_error(conf, hit, bins)
    d.text((M, 8), f"{title}  ECE {100 * ece:.1f} %  n={int(r['count'].sum())}", fill="black")
    d.text((M, S + M + 16), "confidence (bins of 0.1; dots: mean confidence, bars: hit rate; grey: counts)",
           fill="black")
    img.save(path)


def _load_runs(dirs):
    """The run files (``*.json``, or ``*.json.gz`` as the results pages keep them) of ``dirs``."""
    import gzip

    paths = sorted(p for d in dirs for pat in ("*.json", "*.json.gz") for p in Path(d).glob(pat))
    return [json.loads(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_text()) for p in paths]


def calibrate(a) -> int:
    runs = _load_runs(a.runs)
    if not runs:
        print(f"no run files in {a.runs}")
        return 1
    res = fit(runs, a.setting, a.max_fp / 100.0, a.l2)
    res["command"] = "python -m bench.answers " + " ".join(sys.argv[1:] if a.argv is None else list(a.argv))
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    t = res["train"]
    print(f"{res['examples']} first targets ({res['positives']} hits, {res['absent_examples']} absent) from "
          f"{len(runs)} maps; training ECE {100 * res['train_ece']:.1f} %; at min_confidence "
          f"{res['min_confidence']:g}: hit@1 {t['hit1']:.1f} %, absent FP {t['absent_fp']:.1f} %")
    print("# query section defaults (gags_ros/core/config.py QueryConfig):")
    print(config_snippet(res))
    return 0


def _coefficients(a):
    """(coefficients, min_confidence) in force: ``--calibration FILE`` or the config's defaults."""
    if a.calibration:
        c = json.loads(Path(a.calibration).read_text())
        return c["coefficients"], float(c["min_confidence"])
    from gags_ros.core.config import GagsConfig

    q = GagsConfig().query
    return list(q.calibration), float(q.min_confidence)


def oracle_hit1(runs) -> dict:
    """``{"all" | level: percent}``: hit@1 of the 3D label oracle (each Gaussian carrying its
    ground-truth label's clean embedding, answered by the unchanged engine at the run's defaults)
    over the runs' queries, from the stage records of ``bench.answers run``."""
    from gags_ros.eval.stages import summarise_stages

    s = summarise_stages([x for r in runs for x in r.get("oracle3d_stages", [])])
    return {lv: 100.0 * d["hit"] / d["queries"] for lv, d in s.items() if d["queries"]}


def heldout_metrics(runs, name: str, coef, min_confidence: float, bins: int = 10) -> dict:
    """The issue's held-out numbers for setting ``name``: hit@1 / hit@3 per level and absent FP at
    ``min_confidence`` (percent), the ECE (percent) and reliability bins of the first targets."""
    s = summarise(runs, name, 0.0, min_confidence, coef)
    _, conf, y, _ = first_targets(runs, name, coef)
    rel = calibration.reliability(conf, y, bins)
    return {**s, "ece": 100 * calibration.expected_calibration_error(conf, y, bins), "examples": int(y.size),
            "bins": {k: [None if not np.isfinite(v) else float(v) for v in rel[k]]
                     for k in ("count", "mean_confidence", "hit_rate", "edges")}}


def report(a) -> int:
    from bench._record import record

    runs = _load_runs([a.out])
    if not runs:
        print(f"no run files in {a.out}")
        return 1
    coef, min_conf = _coefficients(a)
    names = a.configs or list(runs[0]["answers"])
    print(f"{len(runs)} maps: " + ", ".join(f"{r['scene']}/{r['seed']}" for r in runs))
    print(f"confidence: coefficients {[round(v, 4) for v in coef]}, min_confidence {min_conf:g}")
    print(f"{'setting':14s} {'conf>=':>6s} {'hit@1':>6s} {'whole':>6s} {'part':>6s} {'sub':>6s} {'hit@3':>6s} {'absFP':>6s}")
    table = {}
    for name in names:
        for cut in (0.0, min_conf):
            s = summarise(runs, name, 0.0, cut, coef)
            table[(name, cut)] = s
            print(f"{name:14s} {cut:6.3f} {s['hit1']:6.1f} {s.get('hit1_whole', 0):6.1f} {s.get('hit1_part', 0):6.1f} "
                  f"{s.get('hit1_subpart', 0):6.1f} {s['hit3']:6.1f} {s['absent_fp']:6.1f}")
    held = None
    if a.tag == "heldout" and DEFAULT in runs[0]["answers"] and not a.grid_only:
        held = heldout_metrics(runs, DEFAULT, coef, min_conf)
        png = Path(a.png or Path(a.out) / "reliability.png")
        _, conf, y, _ = first_targets(runs, DEFAULT, coef)
        reliability_png(conf, y, png, title=f"held-out first targets, {len(runs)} maps")
        print(f"held-out ({DEFAULT}): ECE {held['ece']:.1f} % over {held['examples']} first targets; "
              f"reliability diagram {png}")
    if a.no_record:
        return 0
    command = "python -m bench.answers " + " ".join(sys.argv[1:] if a.argv is None else list(a.argv))
    meta = {"maps": [f"{r['scene']}/{r['seed']}" for r in runs], "overrides": runs[0]["overrides"],
            "device_of_maps": a.map_device, "calibration": [float(v) for v in coef], "min_confidence": min_conf}
    if a.map_device:   # the numbers are the maps' (built there); this machine only counts them
        meta["device"] = a.map_device
    for (name, cut), s in table.items():
        tag = f"answers_{a.tag}_{runs[0].get('mode', 'gad')}_{name}_conf{cut:g}"
        record("answers", f"{tag}_hit1", s["hit1"], "%", command,
               per_level={k: v for k, v in s.items() if k.startswith("hit1_")}, queries=s["queries"], **meta)
        record("answers", f"{tag}_hit3", s["hit3"], "%", command, queries=s["queries"], **meta)
        record("answers", f"{tag}_absent_fp", s["absent_fp"], "%", command, queries=s["absent_queries"], **meta)
    if held is not None:   # the names: the node's default setting only
        mode = runs[0].get("mode", "gad")
        prefix = f"sim_{a.preset}_heldout" if a.preset else "sim_heldout"   # default set: the names
        base = f"{prefix}_{mode}_online"
        for level in ("whole", "part", "subpart"):
            if f"hit1_{level}" in held:
                record("sim", f"{base}_hit1_{level}", held[f"hit1_{level}"], "%", command, **meta)
                record("sim", f"{base}_hit3_{level}", held[f"hit3_{level}"], "%", command, **meta)
        record("sim", f"{prefix}_absent_fp" + ("" if mode == "gad" else f"_{mode}"), held["absent_fp"], "%", command,
               queries=held["absent_queries"], **meta)
        record("sim", f"{base}_ece", held["ece"], "%", command, reliability=held["bins"], **meta)
        sfx = "" if mode == "gad" else f"_{mode}"
        for level, v in oracle_hit1(runs).items():   # the 3D label oracle on these maps' geometry
            record("sim", f"{prefix}_oracle3d_hit1_{level}{sfx}", v, "%", command, **meta)
    return 0


def main(argv=None) -> int:
    from gags_ros.eval import evaluate as ev

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
    c = sub.add_parser("calibrate", help="fit query.calibration and query.min_confidence on training runs")
    c.add_argument("runs", nargs="+", help="run folders of training scenes (seeds 0-9 only)")
    c.add_argument("--out", required=True, help="JSON with the coefficients, the cut and the training numbers")
    c.add_argument("--setting", default=DEFAULT, help="GRID setting whose answers are fitted")
    c.add_argument("--max-fp", type=float, default=10.0, help="absent-object false positives allowed, percent")
    c.add_argument("--l2", type=float, default=1e-2, help="L2 penalty on the non-intercept coefficients")
    p = sub.add_parser("report")
    p.add_argument("out")
    p.add_argument("--tag", required=True, choices=["train", "heldout", "small"])
    p.add_argument("--configs", nargs="*")
    p.add_argument("--calibration", help="calibrate's JSON (default: the config's query.calibration and "
                   "query.min_confidence)")
    p.add_argument("--png", help="reliability diagram (heldout; default OUT/reliability.png)")
    p.add_argument("--map-device", default="", help="where the maps were built (for the records)")
    p.add_argument("--preset", default="", help="held-out records' set: '' = the default set (sim_heldout_*), "
                   "e.g. small -> sim_small_heldout_*")
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--grid-only", action="store_true", help="record the per-setting answers_* records only, "
                   "not the issue's sim_* ones (for run files whose \"default\" is not the node's default any more)")
    a = ap.parse_args(argv)
    a.argv = argv
    return {"run": run, "calibrate": calibrate, "report": report}[a.cmd](a)


if __name__ == "__main__":
    raise SystemExit(main())
