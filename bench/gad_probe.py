"""GaD probe benchmark: how much teacher embedding noise granularity-aware distillation survives.

Runs :func:`gags_ros.eval.gad_probe.gad_probe` (a grid of free latents seen in 16 views; on
each half one level is consistent across views and the others are random labels; every mask
embedding gets N(0, sigma^2) per dimension before normalisation, as the simulation teacher does)
for each sigma and step budget, and records in bench/results/gad_probe.json:

- gad_probe_consistent_weight_sigma<S>_steps<N>: mean granularity weight on the consistent level
  (fraction; 1 = GaD found it everywhere, 1/3 = uniform weights, GaD degenerates to Avg);
- gad_probe_entropy_sigma<S>_steps<N>: mean entropy of the weights (nats; ln 3 = 1.0986 uniform).

CPU, deterministic, about 3 minutes on one core:

    .venv/bin/python -m bench.gad_probe
    .venv/bin/python -m bench.gad_probe --sigmas 0.05 --steps 800 --no-record   # one point
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from bench._record import record  # noqa: E402  (run as: python -m bench.gad_probe)
from gags_ros.eval.gad_probe import gad_probe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gad_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.03, 0.05],
                    help="embedding noise std per dimension (the simulation issue's is 0.05)")
    ap.add_argument("--steps", type=int, nargs="+", default=[800, 3000], help="step budgets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-record", action="store_true", help="print only")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m bench.gad_probe " + " ".join(sys.argv[1:] if argv is None else list(argv))
    print(f"{'sigma':>6} {'steps':>6} {'consistent w':>13} {'entropy':>8} {'left w (sub, part, whole)':>27} "
          f"{'right w':>20} {'s':>5}")
    for steps in a.steps:
        for sigma in a.sigmas:
            t0 = time.perf_counter()
            r = gad_probe(sigma=sigma, steps=steps, seed=a.seed)
            dt = time.perf_counter() - t0
            fmt = lambda v: "(" + ", ".join(f"{x:.2f}" for x in v) + ")"  # noqa: E731
            print(f"{sigma:6.3f} {steps:6d} {r['consistent_weight']:13.3f} {r['entropy']:8.3f} "
                  f"{fmt(r['left_weights']):>27} {fmt(r['right_weights']):>20} {dt:5.1f}", flush=True)
            if a.no_record:
                continue
            extra = {"sigma": sigma, "steps": steps, "seed": a.seed, "left_weights": r["left_weights"],
                     "right_weights": r["right_weights"], "seconds": round(dt, 1)}
            record("gad_probe", f"gad_probe_consistent_weight_sigma{sigma:g}_steps{steps}", r["consistent_weight"],
                   "fraction", command, **extra)
            record("gad_probe", f"gad_probe_entropy_sigma{sigma:g}_steps{steps}", r["entropy"], "nats", command,
                   **extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
