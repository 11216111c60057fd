"""Synthetic datasets with ground truth, in the project's dataset format (docs/dataset_format.md).

    python -m gags_ros.sim.dataset OUT --seed 0 --preset small     # one scene in OUT
    python -m gags_ros.sim.dataset OUT --seed 0 --preset default   # OUT/scene_000 .. scene_002
    python -m gags_ros.sim.dataset OUT --seed 100 --generator varied   # a varied room

A scene directory holds ``transforms.json`` (+ images, depth, per-level masks), ``labels.json``,
``queries.json`` (written by :func:`gags_ros.core.io.datasets.write_nerfstudio`) and ``scene.json``
(room size and the objects' boxes, for top-down pictures; the scene generator's name and whether
the room structure is labelled, so :func:`~gags_ros.sim.scene.scene_from_meta` rebuilds the
scene). Identical seed, preset and generator give identical bytes. In memory, :func:`scene_frames` yields the same frames without touching the disk.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..core.io.datasets import write_nerfstudio
from ..core.types import Frame, Intrinsics
from . import raycast
from .scene import GENERATORS, CameraView, Scene, closeup_path, default_intrinsics, make_scene, orbit_path, walk_path

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Preset:
    """Image size and camera paths of a generated scene.

    ``walk`` / ``orbit``: frames on those paths; ``closeups``: views per object; ``eval_every``: every
    n-th frame of the stream (offset n/2) is an eval view, the rest train; ``scenes``: how many
    consecutive seeds the benchmark set holds.
    """

    width: int = 160
    height: int = 120
    fov_x_deg: float = 70.0
    walk: int = 28
    orbit: int = 16
    closeups: int = 2
    eval_every: int = 8
    scenes: int = 1

    @property
    def intrinsics(self) -> Intrinsics:
        return default_intrinsics(self.width, self.height, self.fov_x_deg)


PRESETS = {
    # CPU demo: about 64 frames of 160x120, one scene, a few seconds to generate.
    "small": Preset(),
    # Benchmark set: three scenes of about 180 frames of 640x480 (the teacher's noise model is
    # scaled for this resolution: s = sqrt(visible area) spans 0 .. 550 px).
    "default": Preset(width=640, height=480, walk=80, orbit=40, closeups=6, scenes=3),
}


def scene_views(scene: Scene, preset: Preset) -> Tuple[List[CameraView], List[str]]:
    """The stream of camera views (walk, then orbit, then close-ups) and each one's split."""
    rng = np.random.default_rng([scene.seed, 1])  # camera stream, independent of the layout stream
    views = walk_path(scene, preset.walk, rng) + orbit_path(scene, preset.orbit, rng)
    views += closeup_path(scene, preset.closeups, preset.intrinsics, rng,
                          line_of_sight=lambda eye, p: raycast.first_hit_object(scene, eye, p))
    n = preset.eval_every
    splits = ["eval" if n > 0 and i % n == n // 2 else "train" for i in range(len(views))]
    return views, splits


def _frame(scene: Scene, K: Intrinsics, i: int, view: CameraView, split: str) -> Frame:
    out = raycast.render(scene, view.T_world_cam, K)
    return Frame(image=out.rgb, T_world_cam=view.T_world_cam, intrinsics=K, depth=out.depth, stamp=0.1 * i,
                 name=f"{i:04d}_{view.name}", masks=out.masks, extra={"index": i, "split": split})


_worker_state: dict = {}


def _init_worker(scene: Scene, K: Intrinsics) -> None:
    _worker_state["scene"], _worker_state["K"] = scene, K


def _render_job(job) -> Frame:
    return _frame(_worker_state["scene"], _worker_state["K"], *job)


def scene_frames(scene: Scene, preset: Preset, workers: int = 1) -> Iterator[Frame]:
    """Rendered frames of ``scene`` in stream order, with depth, masks and ``extra["split"]``.

    ``workers > 1`` renders in that many processes (same bytes: every frame is independent).
    """
    views, splits = scene_views(scene, preset)
    K = preset.intrinsics
    jobs = list(zip(range(len(views)), views, splits))
    if workers <= 1:
        for job in jobs:
            yield _frame(scene, K, *job)
        return
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(scene, K)) as pool:
        yield from pool.imap(_render_job, jobs, chunksize=4)


def _preset(preset, overrides: dict) -> Preset:
    p = PRESETS[preset] if isinstance(preset, str) else preset
    return replace(p, **{k: v for k, v in overrides.items() if v is not None})


def generate(out_dir, seed: int = 0, preset="small", *, overwrite: bool = False, workers: int = 1,
             generator: str = "classic", structure_labels: Optional[bool] = None, **overrides) -> Path:
    """Write one scene of ``seed`` into ``out_dir``; returns it.

    ``generator`` / ``structure_labels``: which room (:func:`~gags_ros.sim.scene.make_scene`);
    both are recorded in ``scene.json``. ``preset``: a name in :data:`PRESETS` or a :class:`Preset`;
    keyword ``overrides`` replace its
    fields (``width=320``...). The scene is written to a sibling temporary directory and renamed, so
    ``out_dir`` is either absent or complete. An existing ``out_dir`` raises ``FileExistsError``
    unless ``overwrite``.
    """
    p = _preset(preset, overrides)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True / --overwrite to replace it)")
    scene = make_scene(seed, generator, structure_labels)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        frames = list(scene_frames(scene, p, workers))
        write_nerfstudio(tmp, frames, labels=scene.labels, queries=scene.queries())
        meta = {"format_version": FORMAT_VERSION, "generator": "gags_ros.sim", "seed": seed,
                "scene_generator": scene.generator, "structure_labels": scene.structure_labelled,
                "preset": {k: getattr(p, k) for k in p.__dataclass_fields__}, **scene.describe()}
        (tmp / "scene.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def generate_benchmark(out_dir, seed: int = 0, preset="default", scenes: Optional[int] = None, *,
                       overwrite: bool = False, workers: int = 1, generator: str = "classic",
                       structure_labels: Optional[bool] = None, **overrides) -> List[Path]:
    """Write ``scenes`` (default: the preset's count) scenes of seeds ``seed, seed+1, ...`` as
    ``out_dir/scene_<seed>``, plus ``out_dir/benchmark.json`` listing them (and the generator)."""
    p = _preset(preset, overrides)
    n = p.scenes if scenes is None else scenes
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    dirs = [generate(root / f"scene_{s:03d}", s, p, overwrite=overwrite, workers=workers, generator=generator,
                     structure_labels=structure_labels)
            for s in range(seed, seed + n)]
    (root / "benchmark.json").write_text(json.dumps(
        {"format_version": FORMAT_VERSION, "scenes": [d.name for d in dirs], "seeds": list(range(seed, seed + n)),
         "scene_generator": generator}, indent=2))
    return dirs


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Generate synthetic scenes with three-level ground truth "
                                 "(transforms.json, depth, masks, labels.json, queries.json)")
    ap.add_argument("out", help="output directory (one scene for --preset small, a benchmark set otherwise)")
    ap.add_argument("--seed", type=int, default=0, help="scene seed (first seed of a benchmark set)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--scenes", type=int, help="number of scenes (default: the preset's)")
    ap.add_argument("--width", type=int, help="image width override, px")
    ap.add_argument("--height", type=int, help="image height override, px")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="render processes")
    ap.add_argument("--overwrite", action="store_true", help="replace existing scene directories")
    ap.add_argument("--generator", choices=GENERATORS, default="classic",
                    help="room generator: classic (default; 4.6-5.6 m, one instance per class) or varied "
                    "(3-10 m, scaled objects, clutter, repeated classes, unlabelled structure in 1/3 of the seeds)")
    ap.add_argument("--structure-labels", choices=("auto", "on", "off"), default="auto",
                    help="label floor, walls and ceiling: auto = the generator's choice")
    a = ap.parse_args(argv)
    structure = {"auto": None, "on": True, "off": False}[a.structure_labels]
    kw = dict(overwrite=a.overwrite, workers=a.workers, generator=a.generator, structure_labels=structure)
    t0 = time.time()
    overrides = dict(width=a.width, height=a.height)
    n = a.scenes if a.scenes is not None else PRESETS[a.preset].scenes
    if n == 1 and a.scenes is None:
        dirs = [generate(a.out, a.seed, a.preset, **kw, **overrides)]
    else:
        dirs = generate_benchmark(a.out, a.seed, a.preset, n, **kw, **overrides)
    for d in dirs:
        meta = json.loads((d / "transforms.json").read_text())
        nq = len(json.loads((d / "queries.json").read_text()))
        print(f"{d}: {len(meta['frames'])} frames {meta['w']}x{meta['h']}, {nq} queries")
    print(f"done in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
