"""Replay node: stream a dataset folder or a ROS 2 bag as camera topics, with poses on TF.

    python -m gags_ros.ros.replay_node SOURCE [--rate HZ] [--split train] [--loop] [--clock] ...
    ros2 run gags_ros replay_node SOURCE ...

SOURCE is a folder with ``transforms.json`` (nerfstudio / simulation format, see
docs/dataset_format.md), a Blender NeRF-synthetic folder (``transforms_train.json``), a COLMAP
folder, or a ROS 2 bag (a folder with metadata.yaml, or an .mcap / .db3 file; read with the
`rosbags` library, messages republished as raw CDR so no message is decoded).

Dataset frames are published as ``camera/image_raw`` (rgb8), ``camera/camera_info``,
``camera/depth`` (32FC1 metres, when the dataset has depth) and a TF ``world_frame ->
camera_frame`` with the image's stamp (optionally also ``camera/pose`` as PoseStamped). Stamps are
the node clock's now, or, with ``--clock``, a simulated time starting at 0 that advances one frame
period per frame and is published on /clock.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional

import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TransformStamped
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from ..core.io.bags import is_bag, read_messages, topics
from ..core.types import Frame
from .conversions import camera_info_to_msg, image_to_msg, pose_from_matrix, sec_to_stamp, transform_from_matrix
from .dds import ensure_profile_env


def parse_args(argv: List[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="replay_node", description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="dataset folder (transforms.json, Blender, COLMAP) or ROS 2 bag")
    ap.add_argument("--rate", type=float, default=10.0, help="dataset frames per second [Hz] (default 10)")
    ap.add_argument("--speed", type=float, default=1.0, help="bag playback speed factor (default 1)")
    ap.add_argument("--split", default="train", help="dataset split: train, eval or all (default train)")
    ap.add_argument("--downscale", type=float, default=1.0, help="divide the image size by this (default 1)")
    ap.add_argument("--loop", action="store_true", help="start again at the end")
    ap.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = all)")
    ap.add_argument("--clock", action="store_true", help="publish /clock with simulated time")
    ap.add_argument("--pose-topic", default="", help="also publish PoseStamped here (e.g. camera/pose)")
    ap.add_argument("--world-frame", default="map", help="TF parent frame (default map)")
    ap.add_argument("--camera-frame", default="camera_optical_frame", help="TF child / image frame_id")
    ap.add_argument("--wait-subscribers", type=float, default=10.0,
                    help="wait up to this long for an image subscriber before starting [s]")
    ap.add_argument("--start-delay", type=float, default=0.5, help="pause after CameraInfo before frames [s]")
    return ap.parse_args(argv)


def dataset_frames(source: Path, split: str, downscale: float) -> Iterator[Frame]:
    """Frames of a dataset folder in stream order (the loader is picked from its files)."""
    from ..core.io import datasets

    sp = None if split == "all" else split
    if (source / "transforms.json").exists() or source.name == "transforms.json":
        return datasets.iter_nerfstudio(source, split=sp, downscale=downscale)
    if (source / f"transforms_{split}.json").exists():
        return datasets.iter_blender(source, split=split, downscale=downscale)
    if (source / "sparse").exists() or (source / "cameras.txt").exists() or (source / "cameras.bin").exists():
        return datasets.iter_colmap(source, downscale=downscale)
    raise FileNotFoundError(f"{source}: no transforms.json, transforms_{split}.json or COLMAP model found")


class ReplayNode(Node):
    def __init__(self, args: argparse.Namespace):
        super().__init__("gags_replay")
        self.args = args
        sensor = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_image = self.create_publisher(Image, "camera/image_raw", sensor)
        self.pub_info = self.create_publisher(CameraInfo, "camera/camera_info", sensor)
        self.pub_depth = self.create_publisher(Image, "camera/depth", sensor)
        self.pub_tf = self.create_publisher(TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.pub_pose = self.create_publisher(PoseStamped, args.pose_topic, sensor) if args.pose_topic else None
        self.pub_clock = self.create_publisher(Clock, "/clock", 10) if args.clock else None
        self.sim_time = 0.0
        self.published = 0

    def stamp(self) -> Time:
        if self.pub_clock is not None:
            t = sec_to_stamp(self.sim_time)
            self.pub_clock.publish(Clock(clock=t))
            return t
        return self.get_clock().now().to_msg()

    def wait_for_subscribers(self, with_depth: bool = False, pubs: Optional[list] = None) -> None:
        """Wait (up to --wait-subscribers s) until image, CameraInfo, TF and, for RGB-D data, depth
        (or ``pubs``) have a subscriber, so no frame goes out before the mapper listens to all of it."""
        if pubs is None:
            pubs = [self.pub_image, self.pub_info, self.pub_tf] + ([self.pub_depth] if with_depth else [])
        deadline = time.monotonic() + self.args.wait_subscribers
        while pubs and min(p.get_subscription_count() for p in pubs) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        missing = [p.topic_name for p in pubs if p.get_subscription_count() == 0]
        if missing:
            self.get_logger().warning(f"no subscriber on {', '.join(missing)}; publishing anyway")

    def publish_frame(self, f: Frame) -> None:
        a = self.args
        header = Header(stamp=self.stamp(), frame_id=a.camera_frame)
        tf = TransformStamped(header=Header(stamp=header.stamp, frame_id=a.world_frame), child_frame_id=a.camera_frame,
                              transform=transform_from_matrix(f.T_world_cam))
        # Pose first: the mapping node looks the pose up at the image stamp.
        self.pub_tf.publish(TFMessage(transforms=[tf]))
        if self.pub_pose is not None:
            self.pub_pose.publish(PoseStamped(header=Header(stamp=header.stamp, frame_id=a.world_frame),
                                              pose=pose_from_matrix(f.T_world_cam)))
        self.pub_info.publish(camera_info_to_msg(f.intrinsics, header))
        if f.depth is not None:
            self.pub_depth.publish(image_to_msg(f.depth.astype("float32"), header, "32FC1"))
        self.pub_image.publish(image_to_msg(f.image, header, "rgb8"))
        self.published += 1

    def run_dataset(self) -> None:
        a = self.args
        period = 1.0 / a.rate
        first = True
        while rclpy.ok():
            for f in dataset_frames(Path(a.source), a.split, a.downscale):
                if first:  # CameraInfo ahead of the first image so the mapper has intrinsics
                    self.wait_for_subscribers(with_depth=f.depth is not None)
                    self.pub_info.publish(camera_info_to_msg(f.intrinsics, Header(stamp=self.stamp(), frame_id=a.camera_frame)))
                    time.sleep(a.start_delay)
                    first = False
                t0 = time.monotonic()
                self.publish_frame(f)
                self.sim_time += period
                if a.max_frames and self.published >= a.max_frames:
                    return
                time.sleep(max(0.0, period - (time.monotonic() - t0)))
            if not a.loop:
                return

    def _bag_publisher(self, topic: str, msgtype: str):
        """A publisher for a bag's topic: /tf_static latched (transient local) as tf2 expects, TF
        and the rest reliable keep-last."""
        pkg, _, name = msgtype.split("/")
        cls = getattr(importlib.import_module(f"{pkg}.msg"), name)
        if topic == "/tf":
            return self.pub_tf
        durability = DurabilityPolicy.TRANSIENT_LOCAL if topic == "/tf_static" else DurabilityPolicy.VOLATILE
        qos = QoSProfile(depth=100 if topic == "/tf_static" else 10, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE, durability=durability)
        return self.create_publisher(cls, topic, qos)

    def run_bag(self) -> None:
        """Publish the bag's messages at their bag-time spacing (divided by --speed); with --clock,
        /clock carries the bag time of each message just before it (a node on use_sim_time then
        stamps, times out and looks up TF in bag time). A recorded /clock topic is not replayed."""
        a = self.args
        # Every publisher first, then wait for the mapper's inputs among them: a publisher created at
        # its first message would send it before any subscriber has matched it (lost).
        pubs = {t: self._bag_publisher(t, m) for t, m in topics(Path(a.source)).items() if t != "/clock"}
        inputs = {p.topic_name for p in (self.pub_image, self.pub_info, self.pub_tf, self.pub_depth)}
        self.wait_for_subscribers(pubs=[p for p in pubs.values() if p.topic_name in inputs])
        time.sleep(a.start_delay)
        start_bag, start_wall = None, time.monotonic()
        for topic, msgtype, t_ns, raw in read_messages(Path(a.source)):
            if topic == "/clock":
                continue
            start_bag = t_ns if start_bag is None else start_bag
            due = start_wall + (t_ns - start_bag) * 1e-9 / a.speed
            time.sleep(max(0.0, due - time.monotonic()))
            if self.pub_clock is not None:
                self.pub_clock.publish(Clock(clock=sec_to_stamp(t_ns * 1e-9)))
            pubs[topic].publish(raw)  # raw CDR: no decoding on replay
            self.published += 1
            if a.max_frames and self.published >= a.max_frames:
                return


def main(argv: Optional[List[str]] = None) -> int:
    ensure_profile_env()
    argv = sys.argv[1:] if argv is None else argv
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    mine = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    args = parse_args(mine)
    rclpy.init(args=[sys.argv[0]] + ros_args)
    node = ReplayNode(args)
    try:
        if is_bag(Path(args.source)):
            node.run_bag()
        else:
            node.run_dataset()
        node.get_logger().info(f"replay finished: {node.published} messages/frames published")
        time.sleep(0.5)  # let the last messages leave before the participant goes away
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
