"""The embedded demo (README command 1): a simulated room streamed over real ROS 2 topics.

    python -m gags_ros.demo [--out out/demo] [--frames 30] [--rate 4] [--device auto] [--settle]

1. generates a small simulated scene with ground truth (gags_ros.sim, seed 0);
2. starts the mapping node and the replay node with the same node specs as mapping.launch.py
   (gags_ros.ros.launch_spec); the replay node streams the scene's train views as camera topics
   with poses on TF; the mapping node uses the simulation's label-grounded teacher (the only
   semantic teacher that runs without downloaded weights);
3. once the stream is mapped (with ``--settle``: and refined), calls the Query service for a
   handful of the scene's queries and prints each answer against the ground-truth box and the
   hit@1 over them, then asks for two objects that are not in the room (:data:`ABSENT`) and prints
   what came back: "not found" (no target reached ``query.min_confidence``) or the target;
4. writes pictures: a top-down view of the map with targets and ground-truth boxes
   (``topdown.png``), plus ``demo.json`` with every number.

It runs on the CPU in a few minutes (on a GPU when one is present and --device auto).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

# Light settings so the CPU demo finishes in minutes; every other parameter keeps its default.
DEMO_PARAMS = {
    "teacher.segmenter": "sim",
    "cpu_threads": 1,  # one torch thread: the replay node and this process share the cores
    "mapping.max_image_width": 96,  # the CPU renderer's cost grows with pixels x Gaussians
    "mapping.steps_per_keyframe": 25,
    "mapping.init_points_per_keyframe": 2000,
    "mapping.max_gaussians": 30000,
    "mapping.final_refine_steps": 300,
    "mapping.keyframe_min_translation": 0.5,
    "mapping.keyframe_min_rotation": 30.0,
    "ros.depth_topic": "camera/depth",  # the simulated camera is RGB-D
    "language.steps_per_keyframe": 60,
    "query.neighbour_radius": 0.15,  # the CPU map is sparse: 5 cm neighbourhoods hold too few Gaussians
    "query.cluster_radius": 0.2,
    # ... and a 5 cm peak holds one or two: 15 cm, 3D hits 37.2 -> 41.5 % on this map (4 seeds;
    # bench/results/target_location.json, the --demo records).
    "query.peak_radius": 0.15,
    "language.total_steps": 3000,
    "ros.frame_buffer": 256,   # keep every frame: the demo measures mapping, not dropping
    "ros.cloud_period": 2.0,
}


# Objects no generated room holds (checked against the scene's labels): the demo asks for them to
# show whether the node says "not found" rather than pointing somewhere.
ABSENT = ("refrigerator", "bicycle")


@dataclass
class QueryOutcome:
    text: str
    level: str
    box_min: List[float]
    box_max: List[float]
    success: bool
    message: str
    centroid: Optional[List[float]] = None
    score: float = float("nan")
    confidence: float = float("nan")
    hit: bool = False
    distance_to_box: float = float("nan")  # m, 0 inside
    latency_ms: float = float("nan")
    targets: list = field(default_factory=list)


def visible_area(scene_dir: Path, queries: list, n_frames: int) -> dict:
    """Pixels each query's instances cover in the first ``n_frames`` train frames (ground truth)."""
    from PIL import Image

    frames = [f for f in json.loads((Path(scene_dir) / "transforms.json").read_text())["frames"]
              if f.get("split") == "train"][:n_frames]
    area = {q["text"]: 0 for q in queries}
    for f in frames:
        for level in ("whole", "part", "subpart"):
            ids = np.asarray(Image.open(Path(scene_dir) / f["mask_file_paths"][level]))
            counts = np.bincount(ids.ravel())
            for q in queries:
                if q["level"] == level:
                    area[q["text"]] += sum(int(counts[i]) for i in q["ids"] if i < len(counts))
    return area


def pick_queries(scene_dir: Path, queries: list, n_frames: int, n: int = 6) -> list:
    """A handful of queries about what the stream shows: the most visible objects (whole level),
    then the most visible part and sub-part (chosen from the ground truth, before mapping)."""
    area = visible_area(scene_dir, queries, n_frames)
    seen = sorted((q for q in queries if area[q["text"]] > 0), key=lambda q: -area[q["text"]])
    by_level = {lv: [q for q in seen if q["level"] == lv] for lv in ("whole", "part", "subpart")}
    return (by_level["whole"][: max(1, n - 2)] + by_level["part"][:1] + by_level["subpart"][:1])[:n]


def draw_topdown(path: Path, xyz: Optional[np.ndarray], rgb: Optional[np.ndarray], outcomes: List[QueryOutcome],
                 size: int = 640) -> None:
    """Top-down (x right, y up) picture: map points in their colours, ground-truth boxes in white,
    targets as green (hit) or red (miss) crosses with their labels."""
    from PIL import Image, ImageDraw

    pts = [np.asarray(o.box_min)[:2] for o in outcomes] + [np.asarray(o.box_max)[:2] for o in outcomes]
    if xyz is not None and len(xyz):
        pts += [xyz[:, :2].min(0), xyz[:, :2].max(0)]
    lo, hi = np.min(pts, 0) - 0.3, np.max(pts, 0) + 0.3
    scale = (size - 20) / float(max(hi - lo))

    def px(p):
        return (10 + (p[0] - lo[0]) * scale, size - 10 - (p[1] - lo[1]) * scale)

    im = Image.new("RGB", (size, size), (25, 25, 30))
    d = ImageDraw.Draw(im)
    if xyz is not None and len(xyz):
        order = np.argsort(xyz[:, 2])  # higher points drawn last, as seen from above
        for p, c in zip(xyz[order], (np.clip(rgb[order], 0, 1) * 255).astype(int)):
            x, y = px(p)
            d.point((x, y), fill=tuple(int(v) for v in c))
    for o in outcomes:
        (x0, y1), (x1, y0) = px(o.box_min), px(o.box_max)
        d.rectangle([x0, y0, x1, y1], outline=(240, 240, 240))
        if o.centroid is not None:
            x, y = px(o.centroid)
            col = (60, 230, 90) if o.hit else (240, 70, 60)
            d.line([x - 6, y - 6, x + 6, y + 6], fill=col, width=2)
            d.line([x - 6, y + 6, x + 6, y - 6], fill=col, width=2)
            d.text((x + 8, y - 6), o.text, fill=col)
        else:
            d.text((x0, y0 - 12), o.text + " (none)", fill=(240, 70, 60))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def run(out: Path, frames: int = 0, rate: float = 4.0, device: str = "auto", n_queries: int = 6,
        timeout: float = 1200.0, extra_params: Optional[dict] = None, log=print,
        pick=None, settle: bool = False, replay_args: Optional[List[str]] = None) -> dict:
    """Generate, stream, map, query; returns the summary written to ``out/demo.json``.

    ``pick(scene_dir, queries, n_frames) -> queries`` chooses the queries (default: :func:`pick_queries`).
    ``settle``: query once the node has finished its final refinement (state ``idle``, a fixed
    number of steps after the last keyframe) instead of as soon as the stream is mapped (state
    ``refining``, queries served while it refines): a map that no longer changes under the queries.
    ``replay_args``: the replay node's arguments instead of the scene's frames (e.g. a bag of them:
    ``[bag, "--clock"]`` with ``extra_params={"use_sim_time": True}``).
    """
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from gags_ros.ros.dds import ensure_profile_env

    ensure_profile_env()  # this process publishes / receives camera-sized messages too
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import rclpy

    from gags_ros.ros.launch_spec import mapping_nodes
    from gags_ros.ros.launcher import start

    out = Path(out)
    scene, n_frames, all_queries = _scene(out, frames, log)
    queries = pick(scene, all_queries, n_frames) if pick else pick_queries(scene, all_queries, n_frames, n_queries)
    params = dict(DEMO_PARAMS, **{"device": device, "teacher.sim_dataset": str(scene.resolve())},
                  **(extra_params or {}))
    replay = replay_args or [str(scene), "--rate", str(rate), "--max-frames", str(n_frames), "--split", "train",
                             "--wait-subscribers", "120"]
    procs = start(mapping_nodes(overrides=params, replay=replay))
    rclpy.init()
    c = _Client()
    summary: dict = {"frames": n_frames, "params": params}
    try:
        # 1. wait until every streamed frame has been taken and its keyframes mapped and distilled
        # (and, when settling, refined).
        t_start = time.monotonic()
        s = c.wait_mapped(procs, n_frames, ("idle",) if settle else ("refining", "idle"), timeout, log)
        summary.update(map_seconds=time.monotonic() - t_start, keyframes=s.keyframes, gaussians=s.gaussians,
                       frames_received=s.frames_received, frames_dropped=s.frames_dropped,
                       frames_rejected=s.frames_rejected,
                       status_stamp=s.header.stamp.sec + 1e-9 * s.header.stamp.nanosec)  # node clock, s
        log(f"[demo] mapped {s.frames_received} frames -> {s.keyframes} keyframes, {s.gaussians} Gaussians "
            f"in {summary['map_seconds']:.0f} s")
        # 2. queries while the node keeps refining; then objects the room does not hold.
        outcomes = [c.ask(q["text"], q["level"], q) for q in queries]
        # the last answer's markers before the absent queries replace them (the topic keeps the latest)
        last = outcomes[-1].text if outcomes and outcomes[-1].centroid is not None else None
        c.spin_until(lambda: not last or any(last in m.text for arr in c.markers for m in arr.markers), 5.0)
        labels = {str(q["text"]).lower() for q in all_queries}
        absent = [c.ask(text, "absent") for text in ABSENT if text not in labels]
        c.spin_until(lambda: bool(c.clouds and c.markers), 5.0)
        # 3. report and pictures.
        hits = _report(outcomes, absent, log)
        xyz, rgb = _cloud_points(c.clouds[-1]) if c.clouds else (None, None)
        draw_topdown(out / "topdown.png", xyz, rgb, outcomes)
        summary.update(hits=hits, hit1=100.0 * hits / max(len(outcomes), 1), queries=[vars(o) for o in outcomes],
                       absent=[vars(o) for o in absent], absent_answered=sum(o.centroid is not None for o in absent),
                       markers_received=len(c.markers), diagnostics=c.diagnostics,
                       marker_texts=[m.text for arr in c.markers for m in arr.markers if m.text])  # every answer's
        (out / "demo.json").write_text(json.dumps(summary, indent=1, default=float))
        log(f"[demo] pictures and numbers: {out / 'topdown.png'}, {out / 'demo.json'}")
        return summary
    finally:
        c.node.destroy_node()
        rclpy.try_shutdown()
        for p in procs:
            if p.poll() is None:
                p.send_signal(2)
        for p in procs:
            try:
                p.wait(15)
            except Exception:  # a stuck child must not hide the demo's own error
                p.kill()


def _scene(out: Path, frames: int, log):
    """The demo's simulated room in ``out/scene`` (generated once): ``(folder, frames to stream,
    every query of the scene)``."""
    from gags_ros.sim.dataset import generate

    scene = out / "scene"
    if not (scene / "transforms.json").exists():
        t0 = time.perf_counter()
        generate(scene, seed=0, preset="small", overwrite=True)
        log(f"[demo] generated a simulated room in {time.perf_counter() - t0:.1f} s: {scene}")
    train = [f for f in json.loads((scene / "transforms.json").read_text())["frames"] if f.get("split") == "train"]
    n_frames = len(train) if frames <= 0 else min(frames, len(train))
    return scene, n_frames, json.loads((scene / "queries.json").read_text())


class _Client:
    """The demo's ROS side (an rclpy node; ``rclpy.init`` first): the node's status, diagnostics,
    markers and map cloud as they arrive, and the Query service."""

    def __init__(self):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2
        from visualization_msgs.msg import MarkerArray

        from gags_ros.msg import MappingStatus
        from gags_ros.srv import Query

        self.node = Node("gags_demo")
        self.ex = SingleThreadedExecutor()
        self.ex.add_node(self.node)
        self.status: List[MappingStatus] = []
        self.markers: List[MarkerArray] = []
        self.clouds: List[PointCloud2] = []
        self.diagnostics: dict = {}
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(MappingStatus, "gags/status", self.status.append, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.diagnostics.update(
            {kv.key: kv.value for st in m.status for kv in st.values}), 10)
        self.node.create_subscription(MarkerArray, "gags/targets", self.markers.append, latched)
        self.node.create_subscription(PointCloud2, "gags/map", self.clouds.append, latched)
        self.client = self.node.create_client(Query, "gags/query")
        self._served = False

    def spin_until(self, done, seconds: float) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds and not done():
            self.ex.spin_once(timeout_sec=0.2)

    def wait_mapped(self, procs, n_frames: int, ready, timeout: float, log):
        """The node's status once the replay has ended, every frame was taken, the queue is empty,
        a teacher output was distilled and the state is in ``ready``; progress every 10 s."""
        t_start, last_print = time.monotonic(), 0.0
        while True:
            self.ex.spin_once(timeout_sec=0.2)
            if any(p.poll() not in (None, 0) for p in procs[:1]):
                raise RuntimeError("the mapping node exited early (see its output above)")
            s = self.status[-1] if self.status else None
            replay_done = procs[1].poll() is not None
            if s is not None and time.monotonic() - last_print > 10:
                last_print = time.monotonic()
                log(f"[demo] {time.monotonic() - t_start:5.0f} s  frames {s.frames_received}/{n_frames}  "
                    f"keyframes {s.keyframes}  Gaussians {s.gaussians}  steps {s.mapping_steps}/{s.language_steps}  "
                    f"loss rgb {s.loss_rgb:.3f} lang {s.loss_language:.3f}  state {s.state}")
            if s is not None and replay_done and s.frames_received >= n_frames and s.queue_length == 0 \
                    and s.state in ready and s.teacher_keyframes > 0:
                return s
            if time.monotonic() - t_start > timeout:
                raise TimeoutError(f"mapping did not finish within {timeout} s")

    def ask(self, text: str, level: str, query: Optional[dict] = None) -> QueryOutcome:
        """Call the Query service for ``text`` (3 targets, no score cut); with the ground-truth
        ``query``, the first target scored against the box of any correct instance."""
        from gags_ros.eval.metrics import box_distance
        from gags_ros.ros.client import call as call_service, wait_until_served
        from gags_ros.srv import Query

        if not self._served:
            wait_until_served(self.node, self.client, Query.Request(text=""), timeout=60, executor=self.ex)
            self._served = True
        t0 = time.perf_counter()
        res = call_service(self.node, self.client, Query.Request(text=text, max_targets=3, min_score=0.0),
                           timeout=60, executor=self.ex)
        o = QueryOutcome(text, level, query["box_min"] if query else [], query["box_max"] if query else [],
                         res.success, res.message, latency_ms=1e3 * (time.perf_counter() - t0))
        _note_targets(o, res)
        if query is not None and res.targets:
            boxes = query.get("boxes") or [[query["box_min"], query["box_max"]]]     # any correct instance
            o.distance_to_box = min(box_distance(o.centroid, lo, hi) for lo, hi in boxes)
            o.hit = o.distance_to_box == 0.0
        return o


def _report(outcomes: List[QueryOutcome], absent: List[QueryOutcome], log) -> int:
    """Print the answers, hit@1 and the absent objects' answers; returns the hits."""
    log("")
    log(f"{'query':28s} {'level':8s} {'hit':4s} {'dist m':>7s} {'score':>6s} {'conf':>5s} {'ms':>6s}  answer")
    for o in outcomes:
        log(f"{o.text[:28]:28s} {o.level:8s} {'yes' if o.hit else 'no':4s} {o.distance_to_box:7.2f} "
            f"{o.score:6.3f} {o.confidence:5.2f} {o.latency_ms:6.0f}  {o.message}")
    hits = sum(o.hit for o in outcomes)
    log(f"[demo] hit@1 {hits}/{len(outcomes)} = {100.0 * hits / max(len(outcomes), 1):.0f} %: first targets "
        f"inside a ground-truth box")
    for o in absent:
        if o.centroid is None:
            log(f"[demo] absent '{o.text}': {o.message}")
        else:
            log(f"[demo] absent '{o.text}': a target at ({', '.join(f'{v:.2f}' for v in o.centroid)}) m with "
                f"confidence {o.confidence:.2f} (a false positive: the room has no {o.text})")
    return hits


def _cloud_points(msg):
    """``(xyz [N, 3] m, rgb [N, 3] in 0..1)`` of a map PointCloud2 (x, y, z, packed rgb)."""
    from gags_ros.ros.conversions import pointcloud2_from_msg

    pc = pointcloud2_from_msg(msg)
    xyz = np.stack([pc["x"], pc["y"], pc["z"]], 1)
    packed = pc["rgb"].view(np.uint32)
    return xyz, np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], 1) / 255.0


def _note_targets(o: QueryOutcome, res) -> None:
    """Copy a Query response's targets into ``o`` (its first target as the answer)."""
    o.targets = [{"position": [t.position.x, t.position.y, t.position.z], "score": t.score,
                  "confidence": t.confidence, "gaussians": t.gaussian_count} for t in res.targets]
    if res.targets:
        best = res.targets[0]
        o.centroid = [best.position.x, best.position.y, best.position.z]
        o.score, o.confidence = float(best.score), float(best.confidence)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    ap.add_argument("--frames", type=int, default=30, help="train frames to stream (0 = all 53)")
    ap.add_argument("--rate", type=float, default=4.0, help="replay rate [Hz]")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--queries", type=int, default=6, help="how many of the scene's queries to ask")
    ap.add_argument("--settle", action="store_true",
                    help="query after the final refinement (mapping.final_refine_steps) instead of during it")
    a = ap.parse_args(argv)
    try:
        s = run(Path(a.out), a.frames, a.rate, a.device, a.queries, settle=a.settle)
    except (RuntimeError, TimeoutError) as e:
        print(f"[demo] failed: {e}", file=sys.stderr)
        return 1
    return 0 if s["queries"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
