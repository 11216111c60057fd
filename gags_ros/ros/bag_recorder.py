"""Bag recorder: write ROS 2 topics into a rosbag2 (mcap or sqlite3) without ROS's rosbag2.

    python -m gags_ros.ros.bag_recorder OUT [--storage mcap|sqlite3] [--topics T ...] [--idle S]

A thin node: raw (still serialized) subscriptions to each topic as soon as it appears on the graph,
messages written with their receive time by :class:`gags_ros.core.io.bags.BagWriter`. Stops on
Ctrl-C, after ``--duration`` seconds, or ``--idle`` seconds after the last message once one came.
Default topics: what the replay node publishes (camera, depth, TF); /clock is not recorded (the
player makes it from bag time). With ``--ros-args -p use_sim_time:=true`` bag time is the /clock
time (as ``ros2 bag record --use-sim-time``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..core.io.bags import STORAGES, BagWriter
from .dds import ensure_profile_env

DEFAULT_TOPICS = ["/camera/image_raw", "/camera/camera_info", "/camera/depth", "/tf", "/tf_static"]


def parse_args(argv: List[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bag_recorder", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="bag folder to create (must not exist)")
    ap.add_argument("--storage", choices=STORAGES, default="mcap", help="storage format (default mcap)")
    ap.add_argument("--topics", nargs="+", default=DEFAULT_TOPICS, help="absolute topic names")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after this long [s] (0 = no limit)")
    ap.add_argument("--idle", type=float, default=0.0,
                    help="stop this long after the last message, once one came [s] (0 = never)")
    return ap.parse_args(argv)


class BagRecorder(Node):
    def __init__(self, writer: BagWriter, topics: List[str]):
        super().__init__("gags_bag_recorder")
        self.writer = writer
        self.wanted = list(topics)
        self.subs = {}
        self.last_message = None  # monotonic s of the last message written
        # steady: under use_sim_time a ROS-time timer would wait for /clock, which the publisher
        # being waited for may only start once it has subscribers
        self.create_timer(0.1, self._discover, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._discover()

    def _discover(self) -> None:
        """Subscribe to wanted topics that have appeared, with the type their publishers give."""
        types = dict(self.get_topic_names_and_types())
        for topic in self.wanted:
            if topic in self.subs or not types.get(topic):
                continue
            msgtype = types[topic][0]
            pkg, _, name = msgtype.split("/")
            cls = getattr(__import__(f"{pkg}.msg", fromlist=[name]), name)
            static = topic == "/tf_static"
            qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if static else DurabilityPolicy.VOLATILE)
            self.subs[topic] = self.create_subscription(
                cls, topic, lambda raw, topic=topic, msgtype=msgtype: self._write(topic, msgtype, raw), qos, raw=True)
            self.get_logger().info(f"recording {topic} ({msgtype})")

    def _write(self, topic: str, msgtype: str, raw: bytes) -> None:
        self.writer.write(topic, msgtype, self.get_clock().now().nanoseconds, raw)
        self.last_message = time.monotonic()


def main(argv: Optional[List[str]] = None) -> int:
    ensure_profile_env()
    argv = sys.argv[1:] if argv is None else argv
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    args = parse_args(argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv)
    rclpy.init(args=[sys.argv[0]] + ros_args)
    t0 = time.monotonic()
    with BagWriter(args.out, args.storage) as writer:
        node = BagRecorder(writer, args.topics)
        try:
            while rclpy.ok():
                rclpy.spin_once(node, timeout_sec=0.05)
                now = time.monotonic()
                if args.duration and now - t0 >= args.duration:
                    break
                if args.idle and node.last_message is not None and now - node.last_message >= args.idle:
                    break
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            node.get_logger().info(f"recorded {writer.count} messages into {args.out} ({args.storage})")
            node.destroy_node()
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
