"""Bags with simulated time: the simulated stream (replay node, topics) recorded into a rosbag2 by
our recorder (mcap and sqlite3, the `rosbags` library), replayed with /clock to a mapping node on
use_sim_time, maps a room as well as the live topic stream does: hit@1 of the same queries within 5
points (the demo's measure, gags_ros.demo.run, on the same settled CPU map settings).

Both streams run on the replay node's simulated clock (``--clock``: stamps 0, 0.2, 0.4, ... s), and
the recorder records in that time (``use_sim_time``, as ``ros2 bag record --use-sim-time``): the
frames then carry the same stamps in both, and the simulated teacher, whose noise is drawn per frame
name (the stamp), sees the same frames. With wall-clock stamps two runs of the same stream differ in
that noise, and hit@1 over 21 queries moved by 10 points between two runs for that reason alone."""

import json
import time

import pytest

from gags_ros import demo
from rosutil import start_node, stop

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FRAMES = 8
RATE = 5.0
# The demo's CPU map with fewer steps and smaller images (64 px wide, the demo's 96: the CPU
# renderer's cost grows with pixels; this module 283 -> 160 s on the shared 2-core machine, mapping
# 80 -> 35 s a stream, hit@1 33 % in all three streams either way), settled soon after the stream:
# the queries see a map that no longer changes. Every target shown (min_confidence 0): this is
# about the map, not the calibration.
PARAMS = {"mapping.max_image_width": 64, "mapping.steps_per_keyframe": 15, "language.steps_per_keyframe": 30,
          "mapping.final_refine_steps": 20, "query.min_confidence": 0.0}


def every_visible_query(scene_dir, queries, n_frames):
    """Every query (whole, part, sub-part) whose object the streamed frames show: with ~20 queries,
    one answer that flips on a borderline score moves hit@1 by a few points, not 17 as with six."""
    area = demo.visible_area(scene_dir, queries, n_frames)
    return [q for q in queries if area[q["text"]] > 0]


@pytest.fixture(scope="module")
def topic_stream(tmp_path_factory, ros_env):
    """The scene and the demo's result over the live topic stream (the reference)."""
    out = tmp_path_factory.mktemp("topics")
    scene = out / "scene"
    summary = demo.run(out, frames=FRAMES, device="cpu", timeout=600, settle=True, extra_params=PARAMS, log=print,
                       pick=every_visible_query, replay_args=stream_args(scene) + ["--wait-subscribers", "120"])
    return out / "scene", summary


def stream_args(scene):
    """The replay node's arguments for the scene's first FRAMES train views on its simulated clock."""
    return [str(scene), "--rate", str(RATE), "--max-frames", str(FRAMES), "--split", "train", "--clock"]


def record(scene, bag, storage, env, log_dir):
    """Record the replay node's stream of the scene's first FRAMES train views into ``bag``."""
    recorder = start_node("gags_ros.ros.bag_recorder", ["-p", "use_sim_time:=true"], env,
                          args=[str(bag), "--storage", storage, "--idle", "3"], log=log_dir / f"record_{storage}.log")
    replay = start_node("gags_ros.ros.replay_node", [], env, log=log_dir / f"replay_{storage}.log",
                        args=stream_args(scene) + ["--wait-subscribers", "60", "--start-delay", "1.0"])
    try:
        assert replay.wait(120) == 0, (log_dir / f"replay_{storage}.log").read_text()
        assert recorder.wait(60) == 0, (log_dir / f"record_{storage}.log").read_text()
    finally:
        stop(replay)
        stop(recorder)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_replayed_with_sim_time_maps_like_the_topic_stream(storage, topic_stream, tmp_path, ros_env, monkeypatch):
    from gags_ros.core.io.bags import read_messages

    for k, v in ros_env.items():
        monkeypatch.setenv(k, v)
    scene, reference = topic_stream
    bag = tmp_path / f"sim_{storage}"
    t0 = time.monotonic()
    record(scene, bag, storage, ros_env, tmp_path)
    counts, span = {}, []
    for topic, msgtype, t_ns, raw in read_messages(bag):
        counts[topic] = counts.get(topic, 0) + 1
        span.append(t_ns * 1e-9)
    assert counts.get("/camera/image_raw") == FRAMES and counts.get("/camera/depth") == FRAMES, counts
    assert counts.get("/tf", 0) >= FRAMES, counts
    assert any(bag.glob("*.mcap" if storage == "mcap" else "*.db3")), list(bag.iterdir())
    recorded = time.monotonic() - t0

    (tmp_path / "scene").symlink_to(scene.resolve())   # demo.run generates it only when absent
    s = demo.run(tmp_path, frames=FRAMES, device="cpu", timeout=600, settle=True, log=print, pick=every_visible_query,
                 extra_params=dict(PARAMS, use_sim_time=True), replay_args=[str(bag), "--clock"])
    assert s["frames_received"] == FRAMES and s["frames_dropped"] == 0 and s["frames_rejected"] == 0, s
    # the same queries (picked from the ground truth), the same quality, of a map that finds objects
    # (a map that found none would match any other: 0 == 0)
    assert reference["hit1"] >= 15.0, reference["hit1"]
    assert [q["text"] for q in s["queries"]] == [q["text"] for q in reference["queries"]]
    assert abs(s["hit1"] - reference["hit1"]) <= 5.0, (s["hit1"], reference["hit1"], json.dumps(s["queries"]))
    # stamps in bag time: the status that showed the map done is stamped with the last /clock, the
    # bag time of the bag's last message (not the wall clock, nor 0 as before any /clock)
    assert max(span) > 1.0 and abs(s["status_stamp"] - max(span)) < 1e-6, (s["status_stamp"], min(span), max(span))
    print(f"[bags] {storage}: recorded in {recorded:.0f} s; hit@1 {s['hit1']:.1f} (topics {reference['hit1']:.1f})")
