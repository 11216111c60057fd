"""Simulation benchmark: the evaluation command on a generated dataset, recorded in bench/results/sim.json.

A thin wrapper of :mod:`gags_ros.eval.evaluate` (same arguments, see docs/evaluation.md): it
runs the evaluation, then records, for the pooled level "all", the mean over seeds in "value" and
the sample std over seeds in "std" (percent):

- sim_<preset>_<variant>_miou, _macc (the reference 2D protocol), _miou3d (the 3D
  Gaussian-selection protocol), _hit3d for every variant evaluated (gad, avg, subpart, part,
  whole: offline distillations on the same geometry; gad_online: the map built while streaming;
  oracle: the label oracle), e.g. sim_small_gad_online_miou3d, sim_small_oracle_miou;
- sim_<preset>_<variant>_dist3d: distance of the target centroid to the box centre (m);
- sim_<preset>_gad_minus_avg_miou / _macc: the GaD gain of the paper's ablation, when both were run.

Records made before the protocol followed the reference (evaluate.PROTOCOL, stored in each record
as "protocol") are named sim_<variant>_<metric> without the preset and were scored with our former
rule (n > 0.4, replicated border, first argmax, kernels scaled with the image height).

Each record carries the dataset preset (also in its command), scenes, seeds, the evaluation's
settings and its results folder. Nothing is recorded for a partial evaluation (``--only`` without
all runs present).

    # CPU (small preset; about 6 minutes per seed on a shared 2-core machine)
    .venv/bin/python -m gags_ros.sim.dataset .data/sim/small --preset small
    .venv/bin/python -m bench.sim .data/sim/small --quick --device cpu --seeds 0 1 2

    # GPU (benchmark set, generated here; see docs/evaluation.md for the device command)
    python -m bench.sim .data/sim/default --device cuda --jobs 3
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from bench._record import record  # (run as: python -m bench.sim)
from gags_ros.eval import evaluate as ev


def preset_name(dataset) -> str:
    """Name of the generator preset of the dataset's scenes (``custom WxH`` when it matches none,
    ``external`` for datasets not written by the simulation)."""
    from gags_ros.sim.dataset import PRESETS

    names = set()
    for d in ev.scene_dirs(dataset):
        meta_path = Path(d) / "scene.json"
        if not meta_path.exists():
            return "external"
        p = json.loads(meta_path.read_text()).get("preset", {})
        match = [n for n, pr in PRESETS.items()
                 if all(p.get(k) == getattr(pr, k) for k in pr.__dataclass_fields__ if k != "scenes")]
        names.add(match[0] if match else f"custom {p.get('width')}x{p.get('height')}")
    return "+".join(sorted(names))


def main(argv=None) -> int:
    ap = ev.build_parser()
    ap.prog = "python -m bench.sim"
    ap.add_argument("--bench", default="sim",
                    help="results file bench/results/<BENCH>.json (default sim; e.g. sim_teacher_noise for a "
                    "study that changes the teacher's noise model, so its numbers never read as the benchmark's)")
    a = ap.parse_args(argv)
    settings = ev.settings_from_args(a)
    t0 = time.time()
    res = ev.evaluate(a.dataset, settings, a.out, a.jobs, a.only, a.resume, a.text_cache)
    out = Path(a.out) if a.out else Path(a.dataset) / "eval"
    print((out / "results.md").read_text())
    expected = len(ev.scene_dirs(a.dataset)) * len(settings.seeds)
    have = {(r["scene"], r["seed"]) for r in res["runs"] if r["seed"] in settings.seeds}
    if len(have) < expected:
        print(f"partial evaluation ({len(have)} of {expected} runs): nothing recorded")
        return 0
    preset = preset_name(a.dataset)
    argv_s = " ".join(sys.argv[1:] if argv is None else list(argv))
    command = f"python -m bench.sim {argv_s}  # preset {preset}"
    extra = {"protocol": ev.PROTOCOL, "preset": preset, "scenes": res["scenes"], "seeds": res["seeds"], "settings": res["settings"],
             "results": str(out / "results.json"), "seconds": round(time.time() - t0, 1)}
    # Runs made on another machine (a GPU run merged here with --resume) keep their device.
    devices = {r.get("device_name") for r in res["runs"]}
    if len(devices) == 1 and None not in devices and devices != {"cpu"}:
        extra["device"] = devices.pop()
    summary = res["summary"]
    prefix = "sim_" + "".join(c if c.isalnum() else "_" for c in preset)
    for v in res["variants"]:
        allv = summary[v].get("all", {})
        short = "oracle" if v == ev.ORACLE else v
        for metric, name, scale, unit in (("iou", "miou", 100.0, "%"), ("acc", "macc", 100.0, "%"),
                                          ("iou3d", "miou3d", 100.0, "%"), ("hit", "hit3d", 100.0, "%"),
                                          ("center_dist", "dist3d", 1.0, "m")):
            s = allv.get(metric)
            if s is None or s["mean"] != s["mean"]:  # nan: not measured
                continue
            record(a.bench, f"{prefix}_{short}_{name}", s["mean"] * scale, unit, command, std=s["std"] * scale,
                   n=s["n"], **extra)
    if "gad" in summary and "avg" in summary:
        for metric, name in (("iou", "miou"), ("acc", "macc")):
            g, b = res["per_seed"]["gad"]["all"][metric], res["per_seed"]["avg"]["all"][metric]
            diffs = [g[k] - b[k] for k in g if k in b and g[k] == g[k] and b[k] == b[k]]
            if diffs:
                record(a.bench, f"{prefix}_gad_minus_avg_{name}", 100.0 * statistics.mean(diffs), "%", command,
                       std=100.0 * (statistics.stdev(diffs) if len(diffs) > 1 else 0.0), **extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
