"""ROS-side costs, measured with real processes on this machine.

    python -m bench.ros [--soak-seconds 60] [--demo]

- soak (bench/soak.py): 640x480 rgb8 at 30 Hz into a mapping node: callback cost per image
  (ros_callback_cost_ms_640x480), images lost before the callbacks (ros_callback_drops), resident
  memory growth after warm-up (ros_soak_rss_growth_mb);
- with --demo (gags_ros.demo on the simulated room): end-to-end latency from a keyframe's arrival at
  the node to its contribution being queryable (ros_keyframe_to_queryable_s: mapping steps, teacher
  and first distillation steps of that keyframe, queue wait included), and the Query service's round
  trip (ros_query_roundtrip_ms).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench._record import record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--soak-seconds", type=float, default=60.0)
    ap.add_argument("--demo", action="store_true", help="also run the simulated demo for latencies")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    from bench.soak import soak

    r = soak(a.soak_seconds, 30.0, 640, 480)
    rss = [m for _, m in r["rss_mb"]]
    warm = rss[len(rss) // 3:]
    cmd = f"python -m bench.ros --soak-seconds {a.soak_seconds:g}"
    record("ros", "ros_callback_cost_ms_640x480", r["callback_ms_mean"], "ms", cmd)
    record("ros", "ros_callback_drops", r["callback_drops"], "images", cmd, published=r["published"])
    record("ros", "ros_soak_rss_growth_mb", max(warm) - warm[0], "MiB", cmd, seconds=a.soak_seconds)
    if a.demo:
        from gags_ros import demo

        with tempfile.TemporaryDirectory() as d:
            s = demo.run(Path(d), device=a.device)
        cmd = f"python -m bench.ros --demo --device {a.device}"
        lat = float(s["diagnostics"].get("keyframe_to_queryable_s", "nan"))
        record("ros", "ros_keyframe_to_queryable_s", lat, "s", cmd, note="last keyframe of the demo stream")
        ms = [q["latency_ms"] for q in s["queries"]]
        record("ros", "ros_query_roundtrip_ms", sorted(ms)[len(ms) // 2], "ms", cmd, note="median over the demo's queries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
