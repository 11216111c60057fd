"""Semantic export (gags/export) cost: seconds to write the PLY of N Gaussians with 16-d latents,
coverage and the labels of a V-word vocabulary, and its size.

    python -m bench.export [--gaussians 300000] [--vocabulary 12] [--device cpu]

The map is random (latents, decoder, text embeddings of a fixed random encoder): the cost does not
depend on what the weights mean. The text encoding is included, as in the service.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench._record import record
from gags_ros.core.config import GagsConfig
from gags_ros.core.io.export import write_semantic_ply
from gags_ros.core.gaussians import GaussianMap
from gags_ros.core.language import coverage
from gags_ros.core.language.field import LanguageField
from gags_ros.core.query import QueryEngine

EMBED_DIM = 512


def random_map(n: int, device: str) -> GaussianMap:
    gen = torch.Generator().manual_seed(0)
    pts = torch.rand(n, 3, generator=gen) * 5.0
    g = GaussianMap.from_points(pts, torch.rand(n, 3, generator=gen), 0.01, opacity=0.5).to(device)
    g.params["features"] = torch.nn.Parameter(torch.randn(n, 16, generator=gen).to(device))
    seen = torch.rand(n, generator=gen).to(device)
    for name in coverage.RECORDS:
        g.add_record(name, init=seen if name == coverage.SEEN else seen * torch.rand(n, generator=gen).to(device))
    return g


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gaussians", type=int, default=300_000)
    ap.add_argument("--vocabulary", type=int, default=12)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    g = random_map(args.gaussians, args.device)
    field = LanguageField(16, EMBED_DIM).to(args.device)
    table = torch.nn.functional.normalize(torch.randn(args.vocabulary + 8, EMBED_DIM), dim=-1)
    words = {}

    def encoder(texts):
        return torch.stack([table[words.setdefault(t, len(words))] for t in texts])

    engine = QueryEngine(GagsConfig().query, encoder)
    vocabulary = [f"class {i}" for i in range(args.vocabulary)]
    times = []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "map.ply"
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            write_semantic_ply(path, g, field, engine, vocabulary)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        size = path.stat().st_size
    best = min(times)
    command = "python -m bench.export " + " ".join(sys.argv[1:] if argv is None else argv)
    extra = dict(gaussians=args.gaussians, vocabulary=args.vocabulary, torch_threads=torch.get_num_threads())
    record("export", "semantic_ply_seconds", best, "s", command, **extra)
    record("export", "semantic_ply_bytes_per_gaussian", size / args.gaussians, "bytes", command, **extra)
    print(f"{args.gaussians} Gaussians, vocabulary {args.vocabulary}: {best:.2f} s (best of {args.repeats}), "
          f"{size / 2**20:.1f} MiB ({size / args.gaussians:.0f} bytes per Gaussian)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
