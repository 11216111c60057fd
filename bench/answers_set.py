"""Build the answers benchmark's maps for a whole seed set in one go (one GPU machine, or the CPU).

    # on a machine with the text model: the embeddings of every text the set will need
    python -m bench.answers_set texts CACHE.npz --generator varied --seeds 0-9 100-102
    # anywhere (a GPU machine needs only CACHE.npz): scenes, then one `bench.answers run` per
    # (scene, language mode, run seed), JOBS at a time
    python -m bench.answers_set run OUT --preset default --generator varied --seeds 100-102 \\
        --modes gad avg --run-seeds 0 1 2 --jobs 6 --text-cache CACHE.npz [--quick] [--set k=v ...]

``run`` writes the scenes to ``OUT/data/<preset>_<generator>/scene_<seed>`` (kept when complete,
so a second call adds runs without regenerating) and the run files of ``bench.answers run`` to
``OUT/runs/<preset>_<generator>_<mode>/``; one log per job in ``OUT/logs``. The set's rows are
then pooled by ``python -m bench.answers report`` / ``calibrate`` (training seeds 0-9 to fit,
held-out seeds 100-102 to report).

Why a driver of its own: a GPU lease is short and starts slowly, so a set is built in one command
with the scenes rendered by all cores and several maps sharing the GPU; the subprocesses keep each
map's state (CUDA context, RNG, torch threads) apart, as separate runs of ``bench.answers`` would.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Sequence


def parse_seeds(items: Sequence[str]) -> List[int]:
    """``["0-9", "100-102", "7"]`` -> the listed seeds in order, each once."""
    out: List[int] = []
    for it in items:
        lo, _, hi = str(it).partition("-")
        for s in range(int(lo), int(hi or lo) + 1):
            if s not in out:
                out.append(s)
    return out


def set_texts(generator: str, seeds: Sequence[int]) -> List[str]:
    """Every text a run over the scenes of ``seeds`` embeds: labels, query texts, the canonical
    phrases of the default config and the absent-object texts of bench.answers."""
    from bench.answers import ABSENT
    from gags_ros.core.config import GagsConfig
    from gags_ros.sim.scene import make_scene

    texts = set(GagsConfig().query.canonical_phrases) | set(ABSENT)
    for s in seeds:
        scene = make_scene(int(s), generator=generator)
        texts |= {str(t) for lv in scene.labels.values() for t in lv.values()}
        texts |= {q["text"] for q in scene.queries()}
    return sorted(texts)


def texts(a) -> int:
    from gags_ros.sim.text_model import ensure_cached

    t = set_texts(a.generator, parse_seeds(a.seeds))
    ensure_cached(t, Path(a.cache))
    print(f"{a.cache}: {len(t)} texts")
    return 0


def _job(cmd: List[str], log: Path, env: dict) -> tuple:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    return rc, time.perf_counter() - t0


def _index(data: Path) -> None:
    """``data/benchmark.json`` listing every complete scene folder in it (a set grown by several
    calls stays one benchmark)."""
    import json

    from gags_ros.sim.dataset import FORMAT_VERSION

    dirs = sorted(d for d in data.glob("scene_*") if (d / "scene.json").exists())
    seeds = [json.loads((d / "scene.json").read_text())["seed"] for d in dirs]
    (data / "benchmark.json").write_text(json.dumps({"format_version": FORMAT_VERSION,
                                                      "scenes": [d.name for d in dirs], "seeds": seeds}, indent=2))


def run(a) -> int:
    out = Path(a.out)
    seeds = parse_seeds(a.seeds)
    data = out / "data" / f"{a.preset}_{a.generator}"
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if a.text_cache:
        env["GAGS_TEXT_CACHE"] = str(Path(a.text_cache).resolve())
    t0 = time.perf_counter()
    todo = [s for s in seeds if not (data / f"scene_{s:03d}" / "scene.json").exists()]
    for s in todo:   # one scene at a time, all cores rendering it, into data/scene_<seed>
        rc = subprocess.call([py, "-m", "gags_ros.sim.dataset", str(data), "--seed", str(s),
                              "--preset", a.preset, "--scenes", "1", "--generator", a.generator, "--workers", str(a.workers),
                              "--overwrite"], env=env)
        if rc:
            print(f"scene {s}: generation failed ({rc})")
            return rc
    _index(data)
    print(f"scenes ready in {time.perf_counter() - t0:.0f} s ({len(todo)} generated)", flush=True)
    if a.scenes_only:
        return 0
    jobs = []
    for mode in a.modes:
        dest = out / "runs" / f"{a.preset}_{a.generator}_{mode}"
        for s in seeds:
            for rs in a.run_seeds:
                cmd = [py, "-m", "bench.answers", "run", str(data), "--scenes", f"scene_{s:03d}", "--seeds", str(rs),
                       "--mode", mode, "--out", str(dest), "--device", a.device]
                if a.text_cache:
                    cmd += ["--text-cache", str(Path(a.text_cache).resolve())]
                if a.quick:
                    cmd.append("--quick")
                if a.save_maps:
                    cmd += ["--save-maps", str(out / "maps" / f"{a.preset}_{a.generator}_{mode}")]
                if a.frames:
                    cmd += ["--frames", str(a.frames)]
                for k, v in a.overrides:
                    cmd += ["--set", f"{k}={v}"]
                jobs.append((f"{a.preset}_{a.generator}_{mode}_{s:03d}_{rs}", cmd))
    t1 = time.perf_counter()
    failed = 0
    with ThreadPoolExecutor(a.jobs) as pool:
        futs = {name: pool.submit(_job, cmd, logs / f"{name}.log", env) for name, cmd in jobs}
        for name, fut in futs.items():
            rc, sec = fut.result()
            failed += rc != 0
            print(f"{name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {sec:.0f} s", flush=True)
    print(f"{len(jobs)} maps in {time.perf_counter() - t1:.0f} s, {failed} failed")
    return 1 if failed else 0


def main(argv=None) -> int:
    from gags_ros.eval import evaluate as ev

    ap = argparse.ArgumentParser(prog="python -m bench.answers_set", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("texts")
    t.add_argument("cache")
    t.add_argument("--generator", default="varied")
    t.add_argument("--seeds", nargs="+", required=True)
    r = sub.add_parser("run")
    r.add_argument("out")
    r.add_argument("--preset", default="default")
    r.add_argument("--generator", default="varied")
    r.add_argument("--seeds", nargs="+", required=True, help="scene seeds, e.g. 0-9 or 100-102")
    r.add_argument("--modes", nargs="+", default=["gad"])
    r.add_argument("--run-seeds", type=int, nargs="+", default=[0])
    r.add_argument("--jobs", type=int, default=1, help="maps built at once")
    r.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="render processes per scene")
    r.add_argument("--device", default="auto")
    r.add_argument("--text-cache")
    r.add_argument("--quick", action="store_true", help="the evaluation's CPU profile")
    r.add_argument("--save-maps", action="store_true", help="keep every map in OUT/maps (bench.answers_maps)")
    r.add_argument("--scenes-only", action="store_true", help="generate the scenes, build no map (e.g. while "
                   "gsplat compiles)")
    r.add_argument("--frames", type=int, default=0, help="stream only the first N train frames (smoke tests)")
    r.add_argument("--set", dest="overrides", type=ev._parse_override, action="append", default=[])
    a = ap.parse_args(argv)
    return texts(a) if a.cmd == "texts" else run(a)


if __name__ == "__main__":
    raise SystemExit(main())
