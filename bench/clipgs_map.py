"""CLIP-GS on the map's own objects (issue 24): train on objects cut from the mapper's maps of
training rooms (plus augmentation that imitates the map), evaluate on maps of held-out rooms.

Data (:mod:`gags_ros.sim.clipgs_mapdata`): every room of ``--train-seeds`` (default 0-9) and
``--eval-seeds`` (default 100-102; the two sets must be disjoint) is streamed into the mapper and
cut into objects by the simulation's instance geometry after each number of optimisation steps in
``--map-steps`` (0 = the seeded map, more = optimised); maps are cached in ``--cache`` so reruns
skip mapping. Training set: the synthetic objects of the quick/full preset (as bench.clipgs) plus
the training rooms' map objects with ``--copies`` augmented copies each.

Variants (``--variants``): ``xyzrgb`` (point tokenizer on position + colour only, trained first),
``scratch`` (CLIP-GS from a random start), ``from_xyzrgb`` (the paper's recipe: CLIP-GS initialised
from the trained xyzrgb model with the 3DGS-attribute branch zero-initialised, then
``--finetune-steps`` steps); ``render_embed`` (the image tower on rendered views) as the baseline.

Metrics per variant and map kind (:func:`gags_ros.eval.clipgs_metrics.map_metrics`): top-1 over the
12 categories with a bootstrap 95 % interval, 3D -> text and text -> 3D R@1, object count; the
synthetic held-out objects' top-1 too. Records (bench/results/clipgs.json), for the map kind
``--record-kind`` (optimised when mapped, else seeded) and the recipe variant ``from_xyzrgb``:
``clipgs_map_top1``, ``clipgs_map_top1_ci_low``, ``clipgs_map_top1_ci_high``, ``clipgs_map_r1_3d_text``,
``clipgs_map_r1_text_3d``, ``clipgs_map_objects``, ``clipgs_map_top1_xyzrgb``, ``clipgs_map_top1_scratch``,
``clipgs_map_top1_render_embed``, ``clipgs_synthetic_top1``; the first record carries every
variant's figures for every map kind in ``detail``.

    # CPU smoke run (2-core CPU, minutes; seeded maps only):
    .venv/bin/python -m bench.clipgs_map --quick --train-seeds 0 1 2 --map-steps 0 --copies 2
    # GPU recipe (one H100/H200), see docs/clipgs.md:
    .venv/bin/python -m bench.clipgs_map --device cuda --threads 0 --map-steps 0 2000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gags_ros.core.clipgs.classify import render_and_embed
from gags_ros.core.clipgs.objects import ObjectGaussians
from gags_ros.core.clipgs.text import TextEmbedder
from gags_ros.core.render.factory import make_renderer
from gags_ros.eval.clipgs_metrics import map_metrics
from gags_ros.sim import CATEGORIES
from gags_ros.sim.clipgs_mapdata import (EVAL_SEEDS, TRAIN_SEEDS, MapAugment, MapObjectSample, build_map_dataset,
                                         check_disjoint, map_scene_objects)
from gags_ros.sim.clipgs_objects import SampledObject
from gags_ros.sim.clipgs_train import (build_triplets, embed_views, encode_attrs, full_config, init_from_xyzrgb,
                                       quick_config, synthetic_split, train_encoder, train_image_tower)
from gags_ros.sim.text_model import encode_texts

VARIANTS = ("xyzrgb", "scratch", "from_xyzrgb")


def load_maps(seeds, args) -> list:
    """Map objects of rooms ``seeds`` (cached per room and step list in ``--cache``, format 2)."""
    out = []
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        f = cache / f"v2_scene{s}_steps{'-'.join(map(str, sorted(args.map_steps)))}.pt"
        if f.is_file():   # plain tensors, numbers and strings: read weights-only (docs/security.md)
            objs = [MapObjectSample(SampledObject(ObjectGaussians(*d["gaussians"]), d["category"], d["label"],
                                                  d["parts"], d["scene"], d["whole_id"]), d["kind"])
                    for d in torch.load(f, weights_only=True)]
        else:
            objs = map_scene_objects(s, args.map_steps, args.device, args.renderer)
            g = [o.obj.gaussians.to("cpu") for o in objs]
            torch.save([{"gaussians": [x.means, x.quats, x.scales, x.opacities, x.rgb], "category": o.obj.category,
                         "label": o.obj.label, "parts": list(o.obj.part_labels), "scene": o.obj.scene_seed,
                         "whole_id": o.obj.whole_id, "kind": o.kind} for o, x in zip(objs, g)], f)
        out += objs
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small model and data (CPU preset)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--renderer", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-seeds", type=int, nargs="+", default=list(TRAIN_SEEDS))
    ap.add_argument("--eval-seeds", type=int, nargs="+", default=list(EVAL_SEEDS))
    ap.add_argument("--map-steps", type=int, nargs="+", default=[0])
    ap.add_argument("--copies", type=int, default=4, help="augmented copies per training map object")
    ap.add_argument("--steps", type=int, default=0, help="override encoder steps (xyzrgb, scratch)")
    ap.add_argument("--finetune-steps", type=int, default=200, help="from_xyzrgb fine-tuning steps")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--no-synthetic", action="store_true", help="train on map objects only")
    ap.add_argument("--record-kind", choices=["seeded", "optimised"], default=None)
    ap.add_argument("--cache", default="runs/clipgs_maps")
    ap.add_argument("--device-name", default="", help="device named in the records (default: the torch device)")
    ap.add_argument("--note", default="", help="free text kept with the records (e.g. 'CPU smoke run')")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--json", help="also write every figure here")
    ap.add_argument("--out", help="write the recipe variant's encoder (with the image tower) here, e.g. the "
                                  "node's clipgs.encoder_path")
    args = ap.parse_args()
    check_disjoint(args.train_seeds, args.eval_seeds)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    cfg = quick_config(args.seed, args.device) if args.quick else full_config(args.seed, args.device)
    if args.steps:
        cfg.steps = args.steps
    cfg.renderer = args.renderer
    text = TextEmbedder(encode_texts)
    renderer = make_renderer(cfg.renderer, cfg.device)
    rng = np.random.default_rng([args.seed, 24])

    t0 = time.perf_counter()
    train_maps = load_maps(args.train_seeds, args)
    eval_maps = load_maps(args.eval_seeds, args)
    train_set = build_map_dataset(train_maps, args.copies, rng, MapAugment(up=list(cfg.encoder.up)))
    objs = [s.obj for s in train_set]
    if not args.no_synthetic:
        objs += synthetic_split(cfg, "train")
    test_objs = synthetic_split(cfg, "test")
    train = build_triplets([o.gaussians for o in objs], [o.label for o in objs], [o.category for o in objs], cfg,
                           text, renderer, rng)
    test = build_triplets([o.gaussians for o in test_objs], [o.label for o in test_objs],
                          [o.category for o in test_objs], cfg, text, None, rng)
    kinds = sorted({s.kind for s in eval_maps})
    evals = {k: [s.obj for s in eval_maps if s.kind == k] for k in kinds}
    ev_trip = {k: build_triplets([o.gaussians for o in v], [o.label for o in v], [o.category for o in v], cfg, text,
                                 None, rng) for k, v in evals.items()}
    print(f"[data] {len(train_maps)} training map objects -> {len(train_set)} with copies, {len(train)} training "
          f"triplets, eval {dict((k, len(v)) for k, v in evals.items())} ({time.perf_counter() - t0:.0f} s)", flush=True)

    tower = train_image_tower(train, cfg, log=lambda s: None)
    view_emb = embed_views(tower, train.views)
    vocab = sorted(CATEGORIES)
    res = {}
    encs = {}
    for name in args.variants:
        t0 = time.perf_counter()
        if name == "xyzrgb" or (name == "from_xyzrgb" and "xyzrgb" not in encs):
            c = dataclasses.replace(cfg.encoder, attributes="xyzrgb", tokenizer="point")
            encs["xyzrgb"], _ = train_encoder(c, train, view_emb, cfg, log=lambda s: None)
        if name == "scratch":
            encs["scratch"], _ = train_encoder(cfg.encoder, train, view_emb, cfg, log=lambda s: None)
        if name == "from_xyzrgb":
            init = init_from_xyzrgb(encs["xyzrgb"], cfg.encoder)
            encs["from_xyzrgb"], _ = train_encoder(cfg.encoder, train, view_emb, cfg, log=lambda s: None, init=init,
                                                   steps=args.finetune_steps)
        enc = encs[name]
        r = {"synthetic": map_metrics(encode_attrs(enc, test.attrs), test.categories, test.captions, vocab, text)}
        for k, trip in ev_trip.items():
            r[k] = map_metrics(encode_attrs(enc, trip.attrs), trip.categories, trip.captions, vocab, text)
        r["train_s"] = time.perf_counter() - t0
        res[name] = r
        print(f"[{name}] {json.dumps(r)}", flush=True)
    r = {}
    for k, v in list(evals.items()) + [("synthetic", test_objs)]:
        gs = [o.gaussians for o in v]
        trip = ev_trip.get(k, test)
        emb = render_and_embed(gs, tower, renderer, cfg.views, cfg.view_size, up=cfg.encoder.up,
                               min_opacity=cfg.encoder.min_opacity)
        r[k] = map_metrics(emb, trip.categories, trip.captions, vocab, text)
    res["render_embed"] = r
    print(f"[render_embed] {json.dumps(r)}", flush=True)
    total_s = time.perf_counter() - t_all
    print(f"[bench] total {total_s:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    main_v = "from_xyzrgb" if "from_xyzrgb" in res else args.variants[0]
    if args.out:
        from gags_ros.core.clipgs.encoder import save_encoder

        meta = {"train_config": dataclasses.asdict(cfg), "vocabulary": vocab, "text_model": "all-MiniLM-L6-v2",
                "variant": main_v, "train_seeds": args.train_seeds, "map_steps": args.map_steps,
                "metrics_map": {k: v for k, v in res[main_v].items() if isinstance(v, dict)},
                "image_tower": {"config": tower.config(), "view_size": cfg.view_size, "views": cfg.views}}
        print(f"[bench] wrote {save_encoder(args.out, encs[main_v], meta, image_tower=tower)}")

    kind = args.record_kind or ("optimised" if "optimised" in evals else "seeded")
    m = res[main_v][kind]
    rows = [("clipgs_map_top1", m["top1"]), ("clipgs_map_top1_ci_low", m["top1_ci_low"]),
            ("clipgs_map_top1_ci_high", m["top1_ci_high"]), ("clipgs_map_r1_3d_text", m["r1_3d_text"]),
            ("clipgs_map_r1_text_3d", m["r1_text_3d"]), ("clipgs_map_objects", m["objects"]),
            ("clipgs_synthetic_top1", res[main_v]["synthetic"]["top1"]),
            ("clipgs_map_top1_render_embed", res["render_embed"][kind]["top1"])]
    rows += [(f"clipgs_map_top1_{v}", res[v][kind]["top1"]) for v in args.variants if v != main_v]
    print("\n| metric | value |\n| --- | --- |")
    for metric, value in rows:
        print(f"| {metric} | {value:.4f} |" if isinstance(value, float) else f"| {metric} | {value} |")
    if not args.no_record:
        from bench._record import record

        common = {"variant": main_v, "map_kind": kind, "preset": "quick" if args.quick else "full",
                  "train_seeds": args.train_seeds, "eval_seeds": args.eval_seeds, "map_steps": args.map_steps,
                  "copies": args.copies, "steps": cfg.steps, "finetune_steps": args.finetune_steps,
                  "synthetic_in_training": not args.no_synthetic, "threads": torch.get_num_threads(),
                  "total_s": round(total_s, 1), "detail": res}
        if args.device_name:
            common["device"] = args.device_name
        if args.note:
            common["note"] = args.note
        for i, (metric, value) in enumerate(rows):
            extra = common if i == 0 else {k: v for k, v in common.items() if k != "detail"}
            record("clipgs", metric, value, "objects" if metric.endswith("objects") else "fraction", **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
