"""CLIP-GS benchmark: zero-shot classification and text -> object retrieval on held-out synthetic
objects and on clusters of simulated scene maps, against render-and-embed and three ablations;
latency per object.

Held-out maps (once, shared by all seeds): ``--map-scenes`` simulated rooms (seeds 90000 + i, never
used for training) streamed into the mapper (depth-seeded keyframes of the "small" preset, then
``--map-steps`` optimisation steps: 0 in the quick preset, so the clusters hold freshly seeded
Gaussians); one cluster per object, the map's Gaussians within 2 cm of its primitives.

Per seed (3 by default), from the simulation's rooms (training and held-out objects come from
disjoint rooms, so every held-out object is an instance never seen in training):

1. sample map-like object Gaussians, canonicalise, render K training views;
2. train the image tower (clean views -> caption embeddings), freeze it;
3. train four encoders on the same triplets and evaluate each on the held-out objects and map
   clusters: ``clipgs`` (GS tokenizer, all attributes, voting), ``uniform_views`` (same, every view
   weight 1), ``xyzrgb`` (point tokenizer on xyz + rgb only), ``raw`` (point tokenizer on all 19
   attributes);
4. ``render_embed``: each object rendered from K clean views, embedded by the tower, averaged;
5. latency per object (median, batch of one, canonicalisation included): encoder vs
   render-and-embed, on synthetic objects and on map clusters.

Metrics: top-1 / top-5 over the simulation's 12 categories; R@1 / R@5 of text -> object with every
distinct caption as a query (a hit when a retrieved object carries that caption). Records
(bench/results/clipgs.json): mean over seeds as value, with std and per-seed values; names without
a suffix are held-out synthetic objects, ``_map`` the map clusters.

    .venv/bin/python -m bench.clipgs --quick                 # CPU preset, ~10 min on 2 shared cores
    .venv/bin/python -m bench.clipgs --device cuda --threads 0   # full preset on a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gags_ros.core.clipgs.classify import render_and_embed
from gags_ros.core.clipgs.text import TextEmbedder
from gags_ros.sim.clipgs_train import (build_triplets, embed_views, encode_attrs, evaluate, full_config,
                                        quick_config, synthetic_split, train_encoder, train_image_tower,
                                        view_weight_stats)
from gags_ros.core.render.factory import make_renderer
from gags_ros.sim import CATEGORIES
from gags_ros.sim.text_model import encode_texts

VARIANTS = {
    # name: (encoder config changes, voting)
    "clipgs": ({}, True),
    "uniform_views": ({}, False),
    "xyzrgb": ({"attributes": "xyzrgb", "tokenizer": "point"}, True),
    "raw": ({"attributes": "all", "tokenizer": "point"}, True),
}


def per_category_top1(obj_emb: torch.Tensor, trip, vocab, text) -> dict:
    """Top-1 per true category, and the most frequent wrong answer: ``{cat: [acc, n, confused]}``."""
    T = text(list(vocab)).to(obj_emb)
    pred = [vocab[i] for i in (obj_emb @ T.T).argmax(dim=1).tolist()]
    out = {}
    for c in sorted(set(trip.categories)):
        rows = [p for p, t in zip(pred, trip.categories) if t == c]
        wrong = [p for p in rows if p != c]
        out[c] = [sum(p == c for p in rows) / len(rows), len(rows), max(set(wrong), key=wrong.count) if wrong else ""]
    return out


def _median_ms(fn, items, warmup: int = 2) -> float:
    for it in items[:warmup]:
        fn(it)
    times = []
    for it in items:
        t0 = time.perf_counter()
        fn(it)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(1000.0 * (time.perf_counter() - t0))
    return float(statistics.median(times))


def build_map_objects(args) -> list:
    """Clusters of maps built from held-out simulated rooms (seeds 90000 + i, never used for
    training): frames of the "small" preset streamed into the mapper (depth-seeded keyframes, then
    ``--map-steps`` optimisation steps), one cluster per object from its ground-truth box."""
    from gags_ros.sim.clipgs_objects import scene_map_objects
    from gags_ros.core.config import GagsConfig
    from gags_ros.core.mapping.mapper import Mapper
    from gags_ros.sim import make_scene
    from gags_ros.sim.dataset import PRESETS, scene_frames

    out = []
    for i in range(args.map_scenes):
        t0 = time.perf_counter()
        scene = make_scene(90000 + i)
        cfg = GagsConfig()
        cfg.device = args.device
        mapper = Mapper(cfg, make_renderer(args.renderer, args.device), args.device)
        for f in scene_frames(scene, PRESETS["small"]):
            if f.extra.get("split", "train") == "train":
                mapper.add_frame(f)
        if args.map_steps:
            mapper.step(args.map_steps)
        objs = scene_map_objects(mapper.gaussians, scene)
        out += objs
        print(f"[map] scene {90000 + i}: {len(mapper.gaussians)} Gaussians, {len(mapper.keyframes)} keyframes, "
              f"{args.map_steps} steps, {len(objs)} object clusters ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def run_seed(seed: int, args, text, map_objs: list) -> dict:
    cfg = quick_config(seed, args.device) if args.quick else full_config(seed, args.device)
    if args.steps:
        cfg.steps = args.steps
    cfg.renderer = args.renderer
    renderer = make_renderer(cfg.renderer, cfg.device)
    t0 = time.perf_counter()
    train_objs, test_objs = synthetic_split(cfg, "train"), synthetic_split(cfg, "test")
    rng = np.random.default_rng([seed, 2])
    train = build_triplets([o.gaussians for o in train_objs], [o.label for o in train_objs],
                           [o.category for o in train_objs], cfg, text, renderer, rng)
    test = build_triplets([o.gaussians for o in test_objs], [o.label for o in test_objs],
                          [o.category for o in test_objs], cfg, text, None, rng)
    vocab = sorted(CATEGORIES)
    maps = build_triplets([o.gaussians for o in map_objs], [o.label for o in map_objs],
                          [o.category for o in map_objs], cfg, text, None, rng) if map_objs else None
    out = {"n_train": len(train), "n_test": len(test), "n_map": len(map_objs), "data_s": time.perf_counter() - t0}
    print(f"[seed {seed}] {len(train)} training / {len(test)} held-out objects ({out['data_s']:.0f} s)", flush=True)

    t0 = time.perf_counter()
    tower = train_image_tower(train, cfg, log=lambda s: None)
    view_emb = embed_views(tower, train.views)
    out["view_weights"] = view_weight_stats(view_emb, train)
    out["tower_s"] = time.perf_counter() - t0
    print(f"[seed {seed}] image tower {out['tower_s']:.0f} s; mean S per view kind {out['view_weights']}", flush=True)

    encoders = {}
    for name, (changes, voting) in VARIANTS.items():
        t0 = time.perf_counter()
        enc_cfg = dataclasses.replace(cfg.encoder, **changes)
        enc, hist = train_encoder(enc_cfg, train, view_emb, cfg, voting=voting, log=lambda s: None)
        m = evaluate(encode_attrs(enc, test.attrs), test, vocab, text)
        m["train_s"] = time.perf_counter() - t0
        m["final_loss"] = float(np.mean(hist["loss"][-20:]))
        out[name] = m
        if maps is not None:
            emb = encode_attrs(enc, maps.attrs)
            out[name + "_map"] = evaluate(emb, maps, vocab, text)
            out.setdefault("map_per_category", {})[name] = per_category_top1(emb, maps, vocab, text)
            m = {**m, **{f"map_{k}": v for k, v in out[name + "_map"].items()}}
        encoders[name] = enc
        print(f"[seed {seed}] {name}: {json.dumps({k: round(v, 4) for k, v in m.items()})}", flush=True)

    t0 = time.perf_counter()
    re = render_and_embed([o.gaussians for o in test_objs], tower, renderer, cfg.views, cfg.view_size,
                          up=cfg.encoder.up, min_opacity=cfg.encoder.min_opacity)
    out["render_embed"] = evaluate(re, test, vocab, text)
    if maps is not None:
        re_map = render_and_embed([o.gaussians for o in map_objs], tower, renderer, cfg.views, cfg.view_size,
                                  up=cfg.encoder.up, min_opacity=cfg.encoder.min_opacity)
        out["render_embed_map"] = evaluate(re_map, maps, vocab, text)
        out["map_per_category"]["render_embed"] = per_category_top1(re_map, maps, vocab, text)
    print(f"[seed {seed}] render_embed: {json.dumps(out['render_embed'])} map: {json.dumps(out.get('render_embed_map'))} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)

    # Latency per object, batch of one, world-frame Gaussians in (canonicalisation included).
    enc = encoders["clipgs"]
    items = [o.gaussians.to(cfg.device) for o in test_objs[: args.latency_objects]]
    out["encoder_ms"] = _median_ms(lambda g: enc.encode_objects([g]), items)
    out["render_embed_ms"] = _median_ms(
        lambda g: render_and_embed([g], tower, renderer, cfg.views, cfg.view_size, up=cfg.encoder.up), items)
    msg = f"encoder {out['encoder_ms']:.1f} ms, render-and-embed {out['render_embed_ms']:.1f} ms"
    if map_objs:
        items = [o.gaussians.to(cfg.device) for o in map_objs[: args.latency_objects]]
        out["encoder_ms_map"] = _median_ms(lambda g: enc.encode_objects([g]), items)
        out["render_embed_ms_map"] = _median_ms(
            lambda g: render_and_embed([g], tower, renderer, cfg.views, cfg.view_size, up=cfg.encoder.up), items)
        msg += f"; map clusters: encoder {out['encoder_ms_map']:.1f} ms, render-and-embed {out['render_embed_ms_map']:.1f} ms"
    print(f"[seed {seed}] latency per object: {msg}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small model and data (CPU preset)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--renderer", default="auto", help="auto (gsplat on CUDA), torch or gsplat")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=0, help="override encoder steps")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: the 2-core CI machine is shared; more threads thrash)")
    ap.add_argument("--latency-objects", type=int, default=20)
    ap.add_argument("--map-scenes", type=int, default=5, help="held-out rooms mapped for the map-cluster test (0 = skip)")
    ap.add_argument("--map-steps", type=int, default=-1,
                    help="mapper optimisation steps per room after depth seeding (default: 0 quick, 2000 full)")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--json", help="also write the per-seed results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    if args.map_steps < 0:
        args.map_steps = 0 if args.quick else 2000
    text = TextEmbedder(encode_texts)
    map_objs = build_map_objects(args) if args.map_scenes else []
    runs = [run_seed(s, args, text, map_objs) for s in args.seeds]
    total_s = time.perf_counter() - t_all
    print(f"[bench] total {total_s:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))

    def agg(values):
        return float(np.mean(values)), float(np.std(values))

    rows = []
    preset = "quick" if args.quick else "full"
    names = ["clipgs", "render_embed", "xyzrgb", "raw", "uniform_views"]
    if map_objs:
        names += [n + "_map" for n in names]
    for name in names:
        suffix = "" if name == "clipgs" else ("_map" if name == "clipgs_map" else f"_{name}")
        for metric in ("top1", "top5", "r1", "r5"):
            vals = [r[name][metric] for r in runs]
            mean, std = agg(vals)
            rows.append((f"clipgs_{metric}{suffix}", mean, "fraction", {"std": std, "per_seed": vals}))
    lat = [("encoder_ms", "clipgs_encoder_latency_ms"), ("render_embed_ms", "clipgs_render_embed_latency_ms")]
    if map_objs:
        lat += [("encoder_ms_map", "clipgs_encoder_latency_ms_map"), ("render_embed_ms_map", "clipgs_render_embed_latency_ms_map")]
    for key, metric in lat:
        vals = [r[key] for r in runs]
        mean, std = agg(vals)
        rows.append((metric, mean, "ms", {"std": std, "per_seed": vals}))
    print("\n| metric | mean | std |\n| --- | --- | --- |")
    for metric, mean, unit, extra in rows:
        print(f"| {metric} | {mean:.4f} | {extra['std']:.4f} |")
    if not args.no_record:
        from bench._record import record

        common = {"preset": preset, "seeds": args.seeds, "threads": torch.get_num_threads(),
                  "n_train": [r["n_train"] for r in runs], "n_test": [r["n_test"] for r in runs],
                  "n_map": len(map_objs), "map_scenes": args.map_scenes, "map_steps": args.map_steps,
                  "total_s": round(total_s, 1)}
        for metric, mean, unit, extra in rows:
            record("clipgs", metric, mean, unit, **extra, **common)
        for kind in runs[0]["view_weights"]:
            vals = [r["view_weights"].get(kind, float("nan")) for r in runs]
            record("clipgs", f"clipgs_view_weight_{kind}", float(np.mean(vals)), "cosine",
                   std=float(np.std(vals)), per_seed=vals, **common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
