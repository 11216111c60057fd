"""Answer the answers benchmark again on saved maps, with other query settings, without rebuilding.

    # bench.answers run ... --save-maps MAPS    (writes MAPS/<scene>__seed<k>.map.pt per map)
    python -m bench.answers_maps requery MAPS DATASET --out OUT [--set query.targets=peak ...]

Building a map costs minutes (CPU) to a GPU lease; answering costs seconds. Tuning the query
engine (the answers issue: thresholds, radii, target extraction, calibration) on the training seeds'
maps therefore re-answers saved maps: each map file holds the map (gags_ros map format, the run's
configuration) and, in its ``extra``, the 3D label oracle's winning instance per Gaussian and
level (:func:`gags_ros.core.sim.stages.oracle_from_winners` rebuilds the oracle from them), so the
rows written to OUT have the schema of ``bench.answers run``'s (answers, oracle3d, stages) and
``bench.answers report`` / ``calibrate`` read them alike.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def save_run_map(path: Path, pipeline, oracle, **info) -> Path:
    """Write ``pipeline``'s map with the ``oracle``'s winners (``{level: [N] int64}``) and the
    run's ``info`` (plain data) in the map file's ``extra``."""
    from gags_ros.core.mapfile import save_map

    g = pipeline.mapper.gaussians
    extra = {"winners": {lv: torch.as_tensor(np.asarray(w, dtype=np.int64)) for lv, w in oracle.winners.items()},
             "run": json.loads(json.dumps(info))}
    with pipeline.mapper.lock:
        return save_map(path, g, pipeline.distiller.field, pipeline.cfg, extra)


def requery(a) -> int:
    from bench import answers as A
    from gags_ros.core.config import set_value, validate
    from gags_ros.core.mapfile import load_map
    from gags_ros.core.pipeline import GagsPipeline
    from gags_ros.core.sim import evaluate as ev
    from gags_ros.core.sim import stages

    files = sorted(Path(a.maps).glob("*.map.pt"))
    if not files:
        print(f"no *.map.pt files in {a.maps}")
        return 1
    scenes = {d.name: d for d in ev.scene_dirs(a.dataset)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from gags_ros.core.config import GagsConfig
    from gags_ros.core.sim.text_model import ensure_cached

    cache = ev.prepare_text_cache(a.dataset, GagsConfig().query.canonical_phrases, a.text_cache)
    ensure_cached(list(A.ABSENT), cache)
    for f in files:
        t0 = time.perf_counter()
        _, _, cfg, extra = load_map(f, "cpu")
        run = extra["run"]
        scene = ev.load_scene(scenes[run["scene"]])
        set_value(cfg, "device", a.device)
        for k, v in a.overrides:
            set_value(cfg, k, v)
        cfg = validate(cfg)
        p = GagsPipeline(cfg, scene.labels)
        p.load(str(f))
        ensure_cached(list(cfg.query.canonical_phrases), cache)
        winners = {lv: w.numpy() for lv, w in extra["winners"].items()}
        oracle = stages.oracle_from_winners(p.query_engine, p.mapper.gaussians, winners, scene.labels)
        labels = {str(t).lower() for lv in scene.labels.values() for t in lv.values()}
        absent = [t for t in A.ABSENT if t not in labels]
        texts = [q["text"] for q in scene.queries]
        rows = A.run_head(p, scene, run["seed"], run.get("mode", "gad"), run["map"], absent,
                          {**run.get("overrides", {}), **dict(a.overrides)})
        rows["requery_of"] = f.name
        for name, o in A.GRID.items():
            rows["answers"][name] = {"present": A._answers(p, texts, o), "absent": A._answers(p, absent, o)}
        rows.update(stages.bench_rows(p, scene.labels, scene.queries, absent, oracle=oracle))
        rows["seconds"] = time.perf_counter() - t0
        dest = out / f.name.replace(".map.pt", ".json")
        dest.write_text(json.dumps(rows))
        print(f"{dest.name}: {len(p.mapper.gaussians)} Gaussians, {rows['seconds']:.1f} s", flush=True)
    return 0


def main(argv=None) -> int:
    from gags_ros.core.sim import evaluate as ev

    ap = argparse.ArgumentParser(prog="python -m bench.answers_maps", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("requery")
    r.add_argument("maps", help="folder of *.map.pt written by bench.answers run --save-maps")
    r.add_argument("dataset", help="the dataset the maps were built from (queries, labels)")
    r.add_argument("--out", required=True)
    r.add_argument("--device", default="cpu")
    r.add_argument("--text-cache")
    r.add_argument("--set", dest="overrides", type=ev._parse_override, action="append", default=[])
    a = ap.parse_args(argv)
    return requery(a)


if __name__ == "__main__":
    raise SystemExit(main())
