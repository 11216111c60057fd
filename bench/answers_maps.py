"""Answer the answers benchmark again on saved maps, with other query settings, without rebuilding.

    # bench.answers run ... --save-maps MAPS    (writes MAPS/<scene>__seed<k>.map.pt per map)
    python -m bench.answers_maps requery MAPS DATASET --out OUT [--set query.targets=peak ...]

Building a map costs minutes (CPU) to a GPU lease; answering costs seconds. Tuning the query
engine (the answers issue: thresholds, radii, target extraction, calibration) on the training seeds'
maps therefore re-answers saved maps: each map file holds the map (gags_ros map format, the run's
configuration) and, in its ``extra``, the 3D label oracle's winning instance per Gaussian and
level (:func:`gags_ros.eval.stages.oracle_from_winners` rebuilds the oracle from them), so the
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
    from gags_ros.core.io.mapfile import save_map

    g = pipeline.mapper.gaussians
    extra = {"winners": {lv: torch.as_tensor(np.asarray(w, dtype=np.int64)) for lv, w in oracle.winners.items()},
             "run": json.loads(json.dumps(info))}
    with pipeline.mapper.lock:
        return save_map(path, g, pipeline.distiller.field, pipeline.cfg, extra)


def requery(a) -> int:
    from bench import answers as A
    from gags_ros.core.config import set_value, validate
    from gags_ros.core.io.mapfile import load_map
    from gags_ros.core.pipeline import GagsPipeline
    from gags_ros.eval import evaluate as ev
    from gags_ros.eval import stages

    files = sorted(Path(a.maps).glob("*.map.pt"))
    if not files:
        print(f"no *.map.pt files in {a.maps}")
        return 1
    scenes = {d.name: d for d in ev.scene_dirs(a.dataset)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from gags_ros.core.config import GagsConfig
    from gags_ros.sim.text_model import ensure_cached

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
        p = GagsPipeline(cfg, teacher_options={"labels": scene.labels})
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
            if a.only and name not in a.only and name != A.DEFAULT:
                continue
            rows["answers"][name] = {"present": A._answers(p, texts, o), "absent": A._answers(p, absent, o)}
        rows.update(stages.bench_rows(p, scene.labels, scene.queries, absent, oracle=oracle))
        rows["seconds"] = time.perf_counter() - t0
        dest = out / f.name.replace(".map.pt", ".json")
        dest.write_text(json.dumps(rows))
        print(f"{dest.name}: {len(p.mapper.gaussians)} Gaussians, {rows['seconds']:.1f} s", flush=True)
    return 0


PACK_FORMAT = "gags_ros-answers-pack"


def _q(x: torch.Tensor, dtype) -> dict:
    """Per-column min-max quantisation of ``x`` ``[N, C]`` to every value of the integer ``dtype``
    (uint8 or int16)."""
    info = torch.iinfo(dtype)
    x = x.float().reshape(x.shape[0], -1)
    lo, hi = x.amin(dim=0), x.amax(dim=0)
    step = ((hi - lo) / (info.max - info.min)).clamp_min(1e-12)
    return {"q": (torch.round((x - lo) / step) + info.min).to(dtype), "lo": lo, "step": step, "min": info.min}


def _dq(d: dict) -> torch.Tensor:
    return (d["q"].float() - d["min"]) * d["step"] + d["lo"]


def pack(a) -> int:
    """Shrink saved maps for the trip back from a GPU lease (at most 16 MiB a file): only the
    Gaussians a query can select (opacity >= ``--min-opacity``), centres as int16 over the map's
    extent (0.2 mm steps on a 10 m room), scales as one float16 log geometric mean (what
    :func:`~gags_ros.core.query.engine.spacing_unit` uses), latents as uint8 per channel (1/255 of each channel's
    range), opacities and the field's decoders as float16, the coverage and view records
    as bfloat16 (sums of blend weight exceed float16's range), rotations,
    colours and the min-depth record dropped (a query uses none of them). Relevancy moves by the latents' rounding only: good for tuning the engine on a
    lease's maps, not a map to publish."""
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(a.maps).glob("*.map.pt")):
        d = torch.load(f, map_location="cpu", weights_only=True)
        prm = d["params"]
        keep = torch.sigmoid(prm["opacities"].float()) >= a.min_opacity
        rec = d["records"]
        packed = {
            "format": PACK_FORMAT, "n": int(keep.sum()), "of": int(keep.numel()),
            "means": _q(prm["means"][keep], torch.int16),
            "opacities": prm["opacities"][keep].half(),
            "log_scale": prm["scales"][keep].float().mean(dim=1).half(),   # spacing_unit needs no more
            "features": _q(prm["features"][keep], torch.uint8),
            "records": {"fill": {k: v for k, v in rec["fill"].items() if k != "min_depth"},
                        "values": {k: v[keep].to(torch.bfloat16) for k, v in rec["values"].items()
                                   if k != "min_depth"}},
            "winners": {lv: w[keep].to(torch.uint8 if int(w.max()) < 256 else torch.int16)
                        for lv, w in d["extra"]["winners"].items()},
            "rest": {k: v for k, v in d.items() if k not in ("params", "records")},
        }
        packed["rest"]["extra"] = {k: v for k, v in d["extra"].items() if k != "winners"}
        if d.get("field"):   # the decoders in float16 (about 1 MiB)
            packed["rest"]["field"] = {**d["field"], "state": {k: v.half() for k, v in d["field"]["state"].items()}}
        dest = out / f.name.replace(".map.pt", ".pack.pt")
        torch.save(packed, dest)
        print(f"{dest.name}: {packed['n']} of {packed['of']} Gaussians, {dest.stat().st_size / 2**20:.1f} MiB")
    return 0


def unpack(a) -> int:
    """:func:`pack`'s files back into map files ``bench.answers_maps requery`` reads."""
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(a.packs).glob("*.pack.pt")):
        p = torch.load(f, map_location="cpu", weights_only=True)
        if p.get("format") != PACK_FORMAT:
            raise SystemExit(f"{f}: not a pack file")
        n = p["n"]
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        d = dict(p["rest"])
        d["params"] = {"means": _dq(p["means"]), "opacities": p["opacities"].float(), "quats": quats,
                       "scales": p["log_scale"].float()[:, None].expand(n, 3).contiguous(), "sh0": torch.zeros(n, 1, 3),
                       "features": _dq(p["features"])}
        if d.get("field"):
            d["field"] = {**d["field"], "state": {k: v.float() for k, v in d["field"]["state"].items()}}
        d["records"] = {"fill": p["records"]["fill"],
                        "values": {k: v.float() for k, v in p["records"]["values"].items()}}
        d["extra"] = {**d["extra"], "winners": {lv: w.long() for lv, w in p["winners"].items()}}
        d["metadata"] = {**d.get("metadata", {}), "gaussians": n}
        dest = out / f.name.replace(".pack.pt", ".map.pt")
        torch.save(d, dest)
        print(f"{dest.name}: {n} Gaussians")
    return 0


def add_views(a) -> int:
    """Give saved maps built before the view records (:mod:`gags_ros.core.language.coverage`)
    those records, from the dataset's train views at ``--scale`` of their size: every train frame
    (not only the run's keyframes: the records are a direction, and the frames a keyframe stands
    for look the same way; :func:`~gags_ros.core.language.coverage.accumulate_view`). The
    coverage records are left as they were."""
    from gags_ros.core.io.datasets import iter_nerfstudio
    from gags_ros.core.language import coverage
    from gags_ros.core.io.mapfile import load_map, save_map
    from gags_ros.core.render.factory import make_renderer
    from gags_ros.eval import evaluate as ev

    class _Records:
        def __init__(self, g):
            self.gaussians = g

        def add_record(self, name, fill=0.0):
            if name not in self.gaussians.records:
                self.gaussians.add_record(name, fill)

    scenes = {d.name: d for d in ev.scene_dirs(a.dataset)}
    renderer = make_renderer("torch", "cpu")
    for f in sorted(Path(a.maps).glob("*.map.pt")):
        g, field, cfg, extra = load_map(f, "cpu")
        if coverage.has_view(g):
            print(f"{f.name}: has view records")
            continue
        views = 0
        for fr in iter_nerfstudio(scenes[extra["run"]["scene"]], split="train"):
            coverage.accumulate_view(renderer, _Records(g), fr.T_world_cam, fr.intrinsics.scaled(a.scale), "cpu")
            views += 1
        save_map(f, g, field, cfg, extra)
        print(f"{f.name}: view records from {views} views")
    return 0


def main(argv=None) -> int:
    from gags_ros.eval import evaluate as ev

    ap = argparse.ArgumentParser(prog="python -m bench.answers_maps", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("requery")
    r.add_argument("maps", help="folder of *.map.pt written by bench.answers run --save-maps")
    r.add_argument("dataset", help="the dataset the maps were built from (queries, labels)")
    r.add_argument("--out", required=True)
    r.add_argument("--device", default="cpu")
    r.add_argument("--text-cache")
    r.add_argument("--set", dest="overrides", type=ev._parse_override, action="append", default=[])
    r.add_argument("--only", nargs="+", default=[], help="answer these settings of bench.answers.GRID only "
                   "(and the default); all when not given")
    k = sub.add_parser("pack", help="shrink saved maps for the trip back from a GPU lease (see pack)")
    k.add_argument("maps")
    k.add_argument("--out", required=True)
    k.add_argument("--min-opacity", type=float, default=0.05,
                   help="drop Gaussians less opaque than this (query.min_opacity's default: never selected)")
    u = sub.add_parser("unpack", help="pack files back into map files for requery")
    u.add_argument("packs")
    u.add_argument("--out", required=True)
    v = sub.add_parser("views", help="add view records to maps saved before them (see add_views)")
    v.add_argument("maps")
    v.add_argument("dataset")
    v.add_argument("--scale", type=float, default=0.5, help="render size relative to the dataset's images")
    a = ap.parse_args(argv)
    return {"requery": requery, "pack": pack, "unpack": unpack, "views": add_views}[a.cmd](a)


if __name__ == "__main__":
    raise SystemExit(main())
