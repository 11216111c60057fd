"""Language-field benchmark: 3D query latency on a 1M-Gaussian map, text-encoding latency,
distillation speed and peak memory at 640x480.

Map: a 6 x 6 x 3 m room (floor and four walls) plus five 0.3 m boxes on the floor, N Gaussians in
all (1M by default, ~2 % on the boxes). Latents: a randomly initialised LanguageField (16 -> 512)
with planted latents: each box carries a latent optimised so that it decodes close to one query
text and far from the canonical phrases, the room carries a "stuff"-like latent, all with noise.
That makes the selection realistic (one object's Gaussians, not half the map), which is what the
neighbour cleanup and clustering costs depend on.

Metrics (bench/results/query.json):
- query_latency_1M: median seconds of ``QueryEngine.query_embeddings`` for one text (decode all
  latents, relevancy, threshold, cleanup, clustering, targets to numpy), text encoding excluded;
  extras: the latency for five texts in one call, selected/kept counts;
- query_text_encoding_latency: median seconds to encode one new text with the configured CLIP text
  tower (random weights, same architecture and cost; open_clip needed) or, without open_clip, the
  MiniLM model; skipped with a note when neither is installed;
- distill_iters_per_s_640x480: Distiller steps per second rendering 640x480 latents (second-half
  objective, the steady state of online mapping); extra: first-half rate;
- distill_peak_memory_gib: peak CUDA memory allocated during those steps (map included);
- distill_iters_per_s_320x240: the same at the default render_scale 0.5 of 640x480 keyframes.

    .venv/bin/python -m bench.query                   # GPU, full size, records results
    .venv/bin/python -m bench.query --device cpu --quick # small CPU smoke run (prints, no records)
    .venv/bin/python -m bench.query --profile [--reference OLD_query.py]   # per-stage breakdown
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench._record import record  # noqa: E402  (run as: python -m bench.query)

from gags_ros.core.camera import look_at  # noqa: E402
from gags_ros.core.config import GagsConfig  # noqa: E402
from gags_ros.core.gaussians import GaussianMap, rgb_to_sh0  # noqa: E402
from gags_ros.core.language.distill import Distiller  # noqa: E402
from gags_ros.core.language.field import LanguageField  # noqa: E402
from gags_ros.core.query import QueryEngine  # noqa: E402
from gags_ros.core.render.factory import make_renderer  # noqa: E402
from gags_ros.core.teachers.base import TeacherOutput  # noqa: E402
from gags_ros.core.types import Frame, Intrinsics  # noqa: E402

TEXTS = ["red mug", "blue chair", "green plant", "laptop", "teddy bear"]
BOX_CENTRES = [(1.5, 1.5), (4.5, 1.5), (3.0, 3.0), (1.5, 4.5), (4.5, 4.5)]  # m, on the floor


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def room_points(n: int, gen: torch.Generator, device, object_fraction: float = 0.02) -> tuple:
    """``(means [n, 3], object id [n] (-1 = room))``: ``object_fraction`` of the points on five boxes."""
    n_box = max(1, int(object_fraction * n) // len(BOX_CENTRES))
    n_room = n - n_box * len(BOX_CENTRES)
    # room: floor 6x6 (area 36) and four walls 6x3 (72), uniform over the area
    face = torch.multinomial(torch.tensor([36.0, 18, 18, 18, 18]), n_room, replacement=True, generator=gen)
    u, v = torch.rand(n_room, generator=gen), torch.rand(n_room, generator=gen)
    pts = torch.empty(n_room, 3)
    floor, w0, w1, w2, w3 = (face == k for k in range(5))
    pts[floor] = torch.stack([6 * u[floor], 6 * v[floor], torch.zeros(int(floor.sum()))], 1)
    pts[w0] = torch.stack([6 * u[w0], torch.zeros(int(w0.sum())), 3 * v[w0]], 1)
    pts[w1] = torch.stack([6 * u[w1], torch.full((int(w1.sum()),), 6.0), 3 * v[w1]], 1)
    pts[w2] = torch.stack([torch.zeros(int(w2.sum())), 6 * u[w2], 3 * v[w2]], 1)
    pts[w3] = torch.stack([torch.full((int(w3.sum()),), 6.0), 6 * u[w3], 3 * v[w3]], 1)
    boxes = []
    for cx, cy in BOX_CENTRES:
        # points on the surface of a 0.3 m cube standing on the floor
        p = torch.rand(n_box, 3, generator=gen) - 0.5
        axis = torch.randint(0, 3, (n_box,), generator=gen)
        p[torch.arange(n_box), axis] = torch.sign(p[torch.arange(n_box), axis]) * 0.5
        boxes.append(p * 0.3 + torch.tensor([cx, cy, 0.15]))
    means = torch.cat([pts] + boxes)
    ids = torch.cat([torch.full((n_room,), -1)] + [torch.full((n_box,), k) for k in range(len(BOX_CENTRES))])
    return means.to(device), ids.to(device)


def plant_latent(field: LanguageField, q: torch.Tensor, canon: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    """A 16-d latent whose decoding is closer to ``q`` than to every row of ``canon`` (the canonical
    phrases and the other objects' texts), or, with ``q`` None, close to ``canon[2]`` ("stuff")."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, field.feature_dim, generator=g).to(q.device if q is not None else canon.device)
    z.requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05)
    field.requires_grad_(False)          # only the latent moves; no weight gradients to compute
    for _ in range(steps):
        opt.zero_grad()
        phi = field.decode(z)
        if q is None:
            loss = -(phi @ canon[2])
        else:
            loss = -((phi @ q) - (phi @ canon.T).amax(-1)).sum()
        loss.backward()
        opt.step()
    field.requires_grad_(True)
    return z.detach()[0]


def build_map(n: int, device: torch.device, seed: int, plant_steps: int, object_fraction: float):
    gen = torch.Generator().manual_seed(seed)
    means, ids = room_points(n, gen, device, object_fraction)
    g = GaussianMap.from_points(means, torch.full_like(means, 0.5), 0.01, opacity=0.8, device=device)
    torch.manual_seed(seed)
    field = LanguageField(16, 512).to(device)
    emb = torch.nn.functional.normalize(torch.randn(len(TEXTS) + 4, 512, generator=gen), dim=-1).to(device)
    texts, canon = emb[:len(TEXTS)], emb[len(TEXTS):]
    others = lambda k: torch.cat([canon, texts[:k], texts[k + 1:]])  # noqa: E731
    codes = torch.stack([plant_latent(field, texts[k], others(k), plant_steps, seed + k) for k in range(len(TEXTS))]
                        + [plant_latent(field, None, canon, plant_steps, seed + 99)])
    feats = codes[ids.clamp_min(0)].clone()
    feats[ids < 0] = codes[-1]
    feats += 0.05 * torch.randn(feats.shape, generator=gen).to(device)
    g.set_features(feats)
    return g, field, texts, canon, ids


def text_encoder_for_timing(device: torch.device):
    """``(name, encode(list[str]) -> [T, D])`` of the real text tower, or ``(reason, None)``."""
    try:
        from gags_ros.core.teachers.clip import load_clip

        model, tok = load_clip("ViT-B-16", "", device, allow_random_weights=True)  # same cost as trained

        def enc(texts):
            with torch.no_grad():
                return torch.nn.functional.normalize(model.encode_text(tok(texts).to(device)).float(), dim=-1)
        return "open_clip ViT-B-16 text tower (random weights)", enc
    except ImportError:
        pass
    try:
        from gags_ros.sim.text_model import load_text_model

        model = load_text_model(str(device))

        def enc(texts):
            return torch.as_tensor(model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True))
        return "all-MiniLM-L6-v2 (open_clip not installed)", enc
    except ImportError as e:
        return f"no text model installed ({e})", None


def time_it(fn, device, repeats: int, warmup: int = 2) -> list:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def bench_query(args, device, emit):
    t0 = time.perf_counter()
    g, field, texts, canon, ids = build_map(args.gaussians, device, args.seed, args.plant_steps,
                                            args.object_fraction)
    print(f"[query] map of {len(g)} Gaussians built in {time.perf_counter() - t0:.1f} s")
    cfg = GagsConfig()
    qcfg = cfg.query
    if args.chunk_size:
        qcfg.chunk_size = args.chunk_size
    qcfg.decode_precision = args.decode_precision
    table = dict(zip(TEXTS + qcfg.canonical_phrases, list(texts) + list(canon)))
    eng = QueryEngine(qcfg, lambda ts: torch.stack([table[t] for t in ts]))
    one = texts[:1]
    res = eng.query_embeddings(g, field, TEXTS[:1], one)[0]
    ok = len(res.targets) > 0
    expect = means_of(g, ids == 0)
    if ok:
        err = float(np.linalg.norm(res.targets[0].centroid - expect))
        print(f"[query] '{TEXTS[0]}': {len(res.targets)} target(s), best score {res.targets[0].score:.3f}, "
              f"{res.targets[0].count} Gaussians, centroid error {err * 100:.1f} cm; selected {res.selected}, "
              f"kept {res.kept}")
    else:
        print(f"[query] '{TEXTS[0]}': no target ({res.reason})")
    lat1 = time_it(lambda: eng.query_embeddings(g, field, TEXTS[:1], one), device, args.repeats)
    lat5 = time_it(lambda: eng.query_embeddings(g, field, TEXTS, texts), device, max(3, args.repeats // 4))
    med1, med5 = statistics.median(lat1), statistics.median(lat5)
    print(f"[query] latency 1 text: median {med1 * 1e3:.2f} ms (min {min(lat1) * 1e3:.2f}); "
          f"5 texts: {med5 * 1e3:.2f} ms")
    emit("query_latency_1M" if args.gaussians == 1_000_000 else f"query_latency_{args.gaussians}", med1, "s",
         gaussians=len(g), texts_per_call=1, latency_5_texts_s=med5, selected=res.selected, kept=res.kept,
         targets=len(res.targets), found_planted_object=ok, repeats=args.repeats,
         decode_precision=qcfg.decode_precision, chunk_size=qcfg.chunk_size)

    name, enc = text_encoder_for_timing(device)
    if enc is None:
        print(f"[query] text encoding not measured: {name}")
        return
    counter = iter(range(10 ** 9))
    lat = time_it(lambda: enc([f"a photo of object number {next(counter)}"]), device, args.repeats)
    print(f"[query] text encoding ({name}): median {statistics.median(lat) * 1e3:.2f} ms")
    emit("query_text_encoding_latency", statistics.median(lat), "s", encoder=name, repeats=args.repeats)


def _load_reference(path: str):
    """An older gags_ros/core/query.py (e.g. ``git show HEAD:gags_ros/core/query.py > FILE``) as a
    module, for before/after comparisons; None when ``path`` is empty or missing."""
    import importlib.util

    if not path or not Path(path).is_file():
        return None
    spec = importlib.util.spec_from_file_location("gags_ros.core._reference_query", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod                 # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _median_ms(xs) -> float:
    return statistics.median(xs) * 1e3


def profile_query(args, device):
    """Per-stage breakdown of one 3D query on the benchmark map (``--profile``; prints, no records).

    Stages are timed with the device synchronised between them (``QueryEngine.sync_timings``), so
    their sum exceeds the plain latency by the synchronisations. With ``--reference FILE`` (an older
    query.py) the same map is answered by both versions: latencies, stage times, relevancy
    differences and whether the targets are identical."""
    from gags_ros.core import query as Q

    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    lines = []

    def say(msg=""):
        print(msg, flush=True)
        lines.append(msg)

    g, field, texts, canon, ids = build_map(args.gaussians, device, args.seed, args.plant_steps, args.object_fraction)
    qcfg = GagsConfig().query
    qcfg.decode_precision = args.decode_precision
    if args.chunk_size:
        qcfg.chunk_size = args.chunk_size
    table = dict(zip(TEXTS + qcfg.canonical_phrases, list(texts) + list(canon)))
    encoder = lambda ts: torch.stack([table[t] for t in ts])  # noqa: E731
    eng = QueryEngine(qcfg, encoder)
    one = texts[:1]
    reps = args.repeats
    feats = g.features.detach()
    if device.type == "cuda":
        try:
            x = torch.ones(64, 64, device=device, dtype=torch.bfloat16)
            fp32_out = torch.mm(x, x, out_dtype=torch.float32).dtype == torch.float32
        except (TypeError, RuntimeError) as e:
            fp32_out = f"no ({e})"
        say(f"torch.mm bf16 -> float32 output: {fp32_out}")
    say(f"profile: {len(g)} Gaussians on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
        f"torch {torch.__version__}, decode {qcfg.decode_precision}, chunk {qcfg.chunk_size}")

    # -- latency and per-stage breakdown of the current version
    res = eng.query_embeddings(g, field, TEXTS[:1], one)[0]
    lat = time_it(lambda: eng.query_embeddings(g, field, TEXTS[:1], one), device, reps)
    lat5 = time_it(lambda: eng.query_embeddings(g, field, TEXTS, texts), device, max(3, reps // 4))
    eng.sync_timings = True
    stages = {}
    for _ in range(reps):
        r = eng.query_embeddings(g, field, TEXTS[:1], one)[0]
        for k, v in r.timings.items():
            stages.setdefault(k, []).append(v)
    eng.sync_timings = False
    say(f"current: latency 1 text {_median_ms(lat):.2f} ms (min {min(lat) * 1e3:.2f}), 5 texts {_median_ms(lat5):.2f} ms; "
        f"selected {res.selected}, kept {res.kept}, targets {len(res.targets)}")
    say("current stages (synchronised), median ms: " + ", ".join(f"{k} {_median_ms(v):.3f}" for k, v in stages.items()))

    # -- decode variants: chunk sizes and precisions of the relevancy stage alone
    rows = []
    for prec in ("bfloat16", "float32") if device.type == "cuda" else ("float32",):
        for cs in (1 << 20, 1 << 18):
            c = GagsConfig().query
            c.decode_precision, c.chunk_size = prec, cs
            e = QueryEngine(c, encoder)
            t = time_it(lambda: e.gaussian_relevancy(g, field, one), device, max(5, reps // 2))
            rows.append(f"{prec}/{cs}: {_median_ms(t):.3f}")
    say("relevancy stage alone (1 text), median ms: " + "; ".join(rows))

    # -- accuracy: relevancy against the direct formula (decode, normalise, dot) in float32
    with torch.no_grad():
        sub = feats[:: max(1, len(g) // 200_000)]
        direct32 = Q.relevancy(torch.cat([field.decode(sub[i:i + 65536]) for i in range(0, len(sub), 65536)]),
                               one, eng.canonical(device), qcfg.temperature)
        fused = eng.latent_relevancy(field, sub, one)
        c32 = GagsConfig().query
        c32.decode_precision = "float32"
        fused32 = QueryEngine(c32, encoder).latent_relevancy(field, sub, one)
    say(f"relevancy max |diff| vs direct float32 on {len(sub)} Gaussians: fused {qcfg.decode_precision} "
        f"{(fused - direct32).abs().max().item():.2e}, fused float32 {(fused32 - direct32).abs().max().item():.2e}")

    # -- the reference (older) version on the same map
    ref = _load_reference(args.reference)
    if ref is not None:
        reng = ref.QueryEngine(qcfg, encoder)
        rres = reng.query_embeddings(g, field, TEXTS[:1], one)[0]
        rlat = time_it(lambda: reng.query_embeddings(g, field, TEXTS[:1], one), device, reps)
        rlat5 = time_it(lambda: reng.query_embeddings(g, field, TEXTS, texts), device, max(3, reps // 4))
        eligible = torch.arange(len(g), device=device)
        rrel = time_it(lambda: reng.gaussian_relevancy(g, field, one, eligible), device, max(5, reps // 2))
        with torch.no_grad():
            rel_old = reng.gaussian_relevancy(g, field, one, eligible)[:, 0]
            rel_new = eng.gaussian_relevancy(g, field, one)[:, 0]
            norm = (rel_old - rel_old.min()) / (rel_old.max() - rel_old.min())
            pts = g.params["means"].detach()[(norm > qcfg.threshold).nonzero(as_tuple=True)[0]]
        rclean = time_it(lambda: ref.cleanup_mask(pts, qcfg.neighbour_radius, qcfg.keep_neighbours,
                                                  qcfg.drop_neighbours), device, reps)
        nclean = time_it(lambda: Q.cleanup_mask(pts, qcfg.neighbour_radius, qcfg.keep_neighbours,
                                                qcfg.drop_neighbours), device, reps)
        rcc = time_it(lambda: ref.connected_components(pts, qcfg.cluster_radius), device, reps)
        ncc = time_it(lambda: Q.connected_components(pts, qcfg.cluster_radius), device, reps)
        same_clean = torch.equal(ref.cleanup_mask(pts, qcfg.neighbour_radius, qcfg.keep_neighbours, qcfg.drop_neighbours),
                                 Q.cleanup_mask(pts, qcfg.neighbour_radius, qcfg.keep_neighbours, qcfg.drop_neighbours))
        same_cc = torch.equal(ref.connected_components(pts, qcfg.cluster_radius),
                              Q.connected_components(pts, qcfg.cluster_radius))
        same_targets = [
            len(a.targets) == len(b.targets) and all(np.array_equal(x.indices, y.indices) for x, y in zip(a.targets, b.targets))
            for a, b in zip(reng.query_embeddings(g, field, TEXTS, texts), eng.query_embeddings(g, field, TEXTS, texts))]
        say(f"reference: latency 1 text {_median_ms(rlat):.2f} ms, 5 texts {_median_ms(rlat5):.2f} ms; relevancy stage "
            f"{_median_ms(rrel):.3f} ms; selected {rres.selected}, kept {rres.kept}, targets {len(rres.targets)}")
        say(f"on the {len(pts)} selected points: cleanup reference {_median_ms(rclean):.3f} ms / current "
            f"{_median_ms(nclean):.3f} ms (same: {same_clean}); clusters reference {_median_ms(rcc):.3f} ms / "
            f"current {_median_ms(ncc):.3f} ms (same: {same_cc})")
        say(f"raw relevancy current vs reference: max |diff| {(rel_new - rel_old).abs().max().item():.2e}; "
            f"identical targets per text (5 texts): {same_targets}")

    # -- kernels and host synchronisations of one query
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            eng.query_embeddings(g, field, TEXTS[:1], one)
            sync(device)
        ka = prof.key_averages()
        calls = {k: sum(e.count for e in ka if e.key == k) for k in
                 ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cudaStreamSynchronize",
                  "cudaMemcpyAsync", "cudaDeviceSynchronize")}
        say("runtime calls in one query: " + ", ".join(f"{k} {v}" for k, v in calls.items() if v))
        tab = ka.table(sort_by="device_time_total" if hasattr(ka[0], "device_time_total") else "cuda_time_total",
                       row_limit=30, max_name_column_width=60)
        say(tab)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "query_profile.txt").write_text("\n".join(lines) + "\n")


def means_of(g: GaussianMap, mask: torch.Tensor) -> np.ndarray:
    return g.params["means"].detach()[mask].mean(0).cpu().numpy()


def _teacher(width: int, height: int, dim: int, gen: torch.Generator) -> TeacherOutput:
    """Block masks at three levels (subpart 40 px, part 80 px, whole 160 px at 640x480)."""
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ids, first = [], 0
    for cell in (max(1, width // 16), max(1, width // 8), max(1, width // 4)):
        nx = -(-width // cell)
        lvl = (yy // cell) * nx + (xx // cell)
        ids.append(lvl + first)
        first += int(lvl.max()) + 1
    level_ids = torch.stack(ids).int()
    level_ids[0, : height // 10, : width // 10] = -1      # an unsupervised corner
    emb = torch.nn.functional.normalize(torch.randn(first, dim, generator=gen), dim=-1).half()
    return TeacherOutput(level_ids, emb)


def bench_distill(args, device, emit):
    from gags_ros.core.mapping import Keyframe, Mapper, append_gaussians

    gen = torch.Generator().manual_seed(args.seed)
    means, _ = room_points(args.distill_gaussians, gen, device)
    n = means.shape[0]
    renderer = make_renderer(args.renderer, device)
    for scale, metric in ((1.0, f"distill_iters_per_s_{args.width}x{args.height}"),
                          (0.5, f"distill_iters_per_s_{args.width // 2}x{args.height // 2}")):
        cfg = GagsConfig(device=str(device))
        cfg.language.render_scale = scale
        cfg.language.total_steps = 10 ** 6
        mapper = Mapper(cfg, renderer, device)
        quats = torch.zeros(n, 4, device=device)
        quats[:, 0] = 1
        append_gaussians(mapper.gaussians.params, mapper.optimizers, mapper.strategy_state, {
            "means": means, "scales": torch.full((n, 3), 0.012, device=device).log(), "quats": quats,
            "opacities": torch.logit(torch.full((n,), 0.8, device=device)),
            "sh0": rgb_to_sh0(torch.full((n, 3), 0.5, device=device))[:, None]})
        intr = Intrinsics(0.8 * args.width, 0.8 * args.width, args.width / 2, args.height / 2, args.width, args.height)
        targets = [(0.0, 3.0), (6.0, 3.0), (3.0, 0.0), (3.0, 6.0)]   # look at the four walls
        for i, (tx, ty) in enumerate(targets):
            T = look_at((3.0, 3.0, 1.5), (tx, ty, 1.0))
            frame = Frame(np.zeros((args.height, args.width, 3), np.uint8), T, intr, name=f"kf{i}")
            viewmat = torch.from_numpy(np.linalg.inv(T)).float().to(device)
            mapper.keyframes.append(Keyframe(i, frame, intr, torch.zeros(args.height, args.width, 3, device=device),
                                             None, viewmat, torch.from_numpy(intr.K).float().to(device)))
        dist = Distiller(cfg, mapper, 512, device)
        for i in range(len(targets)):
            dist.add_teacher_output(i, _teacher(args.width, args.height, 512, gen))
        rates = {}
        peak = None
        for phase, start in ((1, 0), (2, cfg.language.total_steps // 2)):
            dist.steps_total = start
            dist.step(args.distill_warmup)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            t0 = time.perf_counter()
            res = dist.step(args.distill_steps)
            sync(device)
            rates[phase] = args.distill_steps / (time.perf_counter() - t0)
            assert res["phase"] == phase and np.isfinite(res["loss"]), res
            if device.type == "cuda" and phase == 2:
                peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
        h, w = intr.scaled(scale).height, intr.scaled(scale).width
        print(f"[distill] {w}x{h}, {n} Gaussians ({renderer.name}): {rates[2]:.1f} it/s (second half), "
              f"{rates[1]:.1f} it/s (first half); loss {res['loss']:.4f}"
              + (f"; peak {peak:.2f} GiB" if peak is not None else ""))
        emit(metric, rates[2], "it/s", gaussians=n, render_size=[w, h], renderer=renderer.name,
             first_half_iters_per_s=rates[1], steps=args.distill_steps, precision=cfg.language.precision)
        if peak is not None and scale == 1.0:
            emit("distill_peak_memory_gib", peak, "GiB", gaussians=n, render_size=[w, h])
        del dist, mapper
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    ap.add_argument("--quick", action="store_true", help="small sizes for a CPU smoke run (no records)")
    ap.add_argument("--record", action="store_true", help="record results even with --quick")
    ap.add_argument("--gaussians", type=int, default=1_000_000, help="map size of the query benchmark")
    ap.add_argument("--distill-gaussians", type=int, default=300_000, help="map size of the distillation benchmark")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--distill-steps", type=int, default=100)
    ap.add_argument("--distill-warmup", type=int, default=10)
    ap.add_argument("--plant-steps", type=int, default=300)
    ap.add_argument("--object-fraction", type=float, default=0.02,
                    help="fraction of the query map's Gaussians on the five boxes")
    ap.add_argument("--renderer", default="auto", choices=["auto", "gsplat", "torch"])
    ap.add_argument("--chunk-size", type=int, default=0, help="query.chunk_size (0 = the config's)")
    ap.add_argument("--decode-precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help="query.decode_precision")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", choices=["query", "distill"], action="append", default=[])
    ap.add_argument("--profile", action="store_true",
                    help="per-stage breakdown of the 3D query instead of the benchmarks (prints, no records)")
    ap.add_argument("--reference", default="",
                    help="with --profile: an older gags_ros/core/query.py to compare with")
    args = ap.parse_args(argv)
    if args.quick:
        args.gaussians, args.distill_gaussians = min(args.gaussians, 20_000), min(args.distill_gaussians, 5_000)
        args.width, args.height = min(args.width, 64), min(args.height, 48)
        args.repeats, args.distill_steps, args.distill_warmup = 3, 3, 1
        args.plant_steps = min(args.plant_steps, 100)
        args.object_fraction = 0.5    # dense enough boxes in a small map to survive the cleanup
    device = torch.device(GagsConfig(device=args.device).resolved_device())
    command = "python -m bench.query " + " ".join(argv if argv is not None else sys.argv[1:])
    do_record = not args.quick or args.record

    def emit(metric, value, unit, **extra):
        if do_record:
            record("query", metric, value, unit, command=command, **extra)
        else:
            print(f"[not recorded] {metric} = {value:.6g} {unit}")

    print(f"device {device}; torch {torch.__version__}")
    if args.profile:
        profile_query(args, device)
        return 0
    if "query" not in args.skip:
        bench_query(args, device, emit)
    if "distill" not in args.skip:
        bench_distill(args, device, emit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
