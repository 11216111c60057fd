"""Assemble posed frames from separately arriving images, intrinsics, depth and poses.

ROS-free (numpy in, :class:`Frame` out) so the node stays a thin adapter and this logic is tested
without rclpy. An image waits (bounded, at most ``tf_timeout`` seconds of wall time) for its pose at
its own stamp and for a depth image within ``max_sync_offset``; anything that cannot be matched is
rejected with a reason the node logs and counts. Poses from a PoseStamped / Odometry topic go into
the same :class:`TransformBuffer` as TF, as the edge from the message's frame to the frame it is the
pose of, so both sources share interpolation and staleness checks and a pose of ``base_link``
composes with the static transforms to the image's optical frame.

Depth must be in the colour image's optical frame (registered, "aligned to colour"), or the node
registers it itself given the depth camera's CameraInfo (``ros.depth_camera_info_topic``) and TF
between the two optical frames; otherwise depth from another frame is refused naming both frames.
Undistortion of a raw camera's images (:class:`~gags_ros.core.camera_info.CameraModel`) and depth
registration cost tens of ms per frame: a complete frame carries them as ``extra["prepare"]``, run
by :func:`prepare_frame` on the worker for the frames it examines.

A stamp that goes back by more than ``ros.time_jump_threshold`` on the image or depth stream (a bag
played in a loop, a simulator reset) clears that stream's store, as tf2 clears its buffer on a
backward clock jump, and is reported through ``on_time_jump``; the TF buffer does the same per edge.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import Callable, Deque, List, Optional, Tuple

import numpy as np

from .camera_info import CameraModel, register_depth
from .config import LimitsConfig, RosConfig
from .plausibility import pose_jump_problem
from .tf_buffer import TransformBuffer, TransformError
from .types import Frame, Intrinsics, PoseError, check_rigid

POSE_TOPIC_FRAME = "gags_pose_topic_camera"  # child frame of topic poses that name none: the image's frame
ALIGNED_DEPTH_HINT = ("depth must be registered to the colour camera: use the driver's aligned depth topic "
                      "(RealSense: /camera/camera/aligned_depth_to_color/image_raw with align_depth.enable:=true; "
                      "ZED: depth/depth_registered; Orbbec: depth_registration:=true)")


@dataclass
class _Pending:
    image: np.ndarray
    stamp: float
    frame_id: str
    arrived: float  # monotonic seconds (the keyframe-to-queryable latency is measured from it)
    name: str
    since: float  # the assembler's clock when it arrived (how long it has waited, for ros.tf_timeout)


class FrameAssembler:
    """Matches images with intrinsics, depth and poses.

    ``clock``: seconds of the clock that times how long a frame may wait for its pose and depth
    (``ros.tf_timeout``): monotonic by default; the node's ROS clock under ``use_sim_time``, so a
    paused or slowed bag does not expire frames (injectable for tests).
    """

    def __init__(self, cfg: RosConfig, tf: Optional[TransformBuffer] = None,
                 clock: Callable[[], float] = time.monotonic, max_pending: int = 64,
                 limits: Optional[LimitsConfig] = None,
                 on_time_jump: Optional[Callable[[str, float, float], None]] = None):
        self.cfg = cfg
        self.limits = limits if limits is not None else LimitsConfig()
        self.intrinsics_refused = ""  # why the last CameraInfo was refused (named while images wait)
        self._last_pose: Optional[np.ndarray] = None  # T_world_cam of the last frame with a pose
        self.tf = tf if tf is not None else TransformBuffer()
        self.clock = clock
        self.camera: Optional[CameraModel] = None
        self._depth_stamps: List[float] = []
        self._depths: List[Tuple[np.ndarray, str]] = []  # (depth, frame_id)
        self._newest_image = -float("inf")
        self.on_time_jump = on_time_jump  # (stream, from_stamp, to_stamp) after a store was cleared
        self.pose_child = POSE_TOPIC_FRAME  # the frame the pose topic's poses are of (the last one named)
        self.depth_camera: Optional[CameraModel] = None  # of unregistered depth (ros.depth_camera_info_topic)
        self._pending: Deque[_Pending] = collections.deque()
        self.max_pending = max_pending
        self.dropped_waiting = 0

    # ---- inputs -----------------------------------------------------------------------------
    @property
    def intrinsics(self) -> Optional[Intrinsics]:
        """The pinhole camera of the frames handed out (None before any CameraInfo)."""
        return self.camera.intrinsics if self.camera is not None else None

    def set_camera(self, model: CameraModel) -> None:
        self.camera = model
        self.intrinsics_refused = ""

    def set_depth_camera(self, model: CameraModel) -> None:
        """The camera of depth images in their own optical frame: they are registered to colour."""
        self.depth_camera = model

    def set_intrinsics(self, intr: Intrinsics) -> None:
        """A pinhole camera whose images are used as they come."""
        self.set_camera(CameraModel.pinhole(intr))

    def _jumped(self, newest: float, stamp: float) -> bool:
        return stamp < newest - self.cfg.time_jump_threshold

    def add_depth(self, depth: np.ndarray, stamp: float, frame_id: str = "", keep: int = 30) -> None:
        """Depth ``[H, W]`` float32 metres at ``stamp`` s in optical frame ``frame_id`` ("" = unnamed);
        the last ``keep`` are kept for matching."""
        if self._depth_stamps and self._jumped(self._depth_stamps[-1], stamp):
            newest = self._depth_stamps[-1]
            self._depth_stamps, self._depths = [], []
            if self.on_time_jump is not None:
                self.on_time_jump("depth", newest, stamp)
        i = bisect.bisect_left(self._depth_stamps, stamp)
        self._depth_stamps.insert(i, stamp)
        self._depths.insert(i, (depth, frame_id.lstrip("/")))
        if len(self._depths) > keep:
            del self._depth_stamps[0], self._depths[0]

    def add_pose(self, T_parent_child: np.ndarray, stamp: float, parent: Optional[str] = None,
                 child: Optional[str] = None) -> bool:
        """A pose from a PoseStamped / Odometry topic: of frame ``child`` (Odometry.child_frame_id or
        ``ros.pose_frame``; None or "" = the image's optical frame itself) in frame ``parent`` (the
        header's; None or "" = ``ros.world_frame``). Returns True when it restarted the edge's
        history after a backward time jump."""
        T = check_rigid(T_parent_child, f"pose at {stamp:.3f} s")
        self.pose_child = (child or "").lstrip("/") or POSE_TOPIC_FRAME
        return self.tf.set_transform(parent or self.cfg.world_frame, self.pose_child, stamp, T)

    def clear(self) -> None:
        """Forget stored depth and waiting images (a backward clock jump: they belong to the old time)."""
        self._depth_stamps, self._depths = [], []
        self.dropped_waiting += len(self._pending)
        self._pending.clear()
        self._last_pose = None
        self._newest_image = -float("inf")

    def offer(self, image: np.ndarray, stamp: float, frame_id: str, name: str = "") -> Optional[str]:
        """Queue an ``[H, W, 3]`` uint8 image; returns a rejection reason now, or None when queued.
        Without CameraInfo yet the image waits like one waiting for its pose (topics race at start)."""
        problem = self._size_problem(image)
        if problem:
            return problem
        if self._jumped(self._newest_image, stamp):
            newest, self._newest_image = self._newest_image, stamp
            self.dropped_waiting += len(self._pending)
            self._pending.clear()  # they wait for poses and depth that the jump has cleared
            self._last_pose = None
            # Depth and TF of the old time that have not jumped yet (topics race) would otherwise
            # refuse this image as "newer depth arrived" / "older than the TF history".
            horizon = stamp + self.cfg.time_jump_threshold
            keep = bisect.bisect_right(self._depth_stamps, horizon)
            del self._depth_stamps[keep:], self._depths[keep:]
            self.tf.drop_after(horizon)
            if self.on_time_jump is not None:
                self.on_time_jump("image", newest, stamp)
        self._newest_image = max(self._newest_image, stamp)
        if len(self._pending) >= self.max_pending:
            self._pending.popleft()
            self.dropped_waiting += 1
        self._pending.append(_Pending(image, stamp, frame_id, time.monotonic(), name or f"{stamp:.3f}", self.clock()))
        return None

    def _size_problem(self, image: np.ndarray) -> str:
        """Why ``image`` does not fit the CameraInfo ("" when it does, or while none has arrived)."""
        h, w = image.shape[:2]
        if self.camera is None:
            return ""
        k = self.camera.source
        if (w, h) == (k.width, k.height):
            return ""
        return f"image is {w}x{h} but CameraInfo says {k.width}x{k.height}"

    # ---- matching ---------------------------------------------------------------------------
    def _camera_frame(self, p: _Pending) -> str:
        if self.cfg.pose_source != "tf" and self.pose_child == POSE_TOPIC_FRAME:
            return POSE_TOPIC_FRAME  # the pose topic's poses are of the optical frame itself
        return self.cfg.camera_frame or p.frame_id

    def _depth_for(self, stamp: float) -> Tuple[Optional[Tuple[np.ndarray, str]], bool]:
        """(depth, final): the closest depth within max_sync_offset; final=False while one may come."""
        s = self._depth_stamps
        if s:
            i = bisect.bisect_left(s, stamp)
            best = min((j for j in (i - 1, i) if 0 <= j < len(s)), key=lambda j: abs(s[j] - stamp))
            if abs(s[best] - stamp) <= self.cfg.max_sync_offset:
                return self._depths[best], True
            if s[-1] > stamp + self.cfg.max_sync_offset:
                return None, True  # newer depth already arrived: none will match
        return None, False

    def poll(self) -> Tuple[List[Frame], List[Tuple[str, str]]]:
        """Frames now complete, and ``(name, reason)`` of frames given up on.

        Frames are taken oldest first; the first one still waiting (for a pose or depth that may
        come) stops the pass, since newer frames wait for newer data. This keeps a poll cheap when
        poses lag behind images, instead of retrying every waiting frame at every call. A frame
        given up on is named with every check it fails, joined by "; ".
        """
        ready: List[Frame] = []
        rejected: List[Tuple[str, str]] = []
        now = self.clock()
        while self._pending:
            p = self._pending[0]
            expired = now - p.since > self.cfg.tf_timeout
            problems, waiting, (depth, T_img_depth), T = self._check(p)
            if waiting and not problems and not expired:
                break  # what it waits for may still come
            self._pending.popleft()
            if problems or waiting:
                rejected.append((p.name, "; ".join(problems + waiting)))
                continue
            f = Frame(image=p.image, T_world_cam=T, intrinsics=self.intrinsics, depth=depth,
                      stamp=p.stamp, name=p.name, extra={"arrived": p.arrived})
            if self.camera.distortion is not None or T_img_depth is not None:
                # tens of ms per 640x480 frame: deferred to the worker, which skips frames first
                f.extra["prepare"] = functools.partial(_prepare, camera=self.camera, depth_camera=self.depth_camera,
                                                       T_image_depth=T_img_depth)
            ready.append(f)
        return ready, rejected

    def _check(self, p: _Pending):
        """``(problems, waiting, (depth, T_image_depth), T_world_cam)`` of a pending frame: ``problems``
        are final refusals, ``waiting`` what may still arrive (a refusal once the frame has waited too
        long); ``T_image_depth`` is not None when the depth must be registered into the image's frame."""
        problems: List[str] = []
        waiting: List[str] = []
        if self.intrinsics is None:
            why = f" (the last one was refused: {self.intrinsics_refused})" if self.intrinsics_refused else ""
            waiting.append(f"no CameraInfo received yet on '{self.cfg.camera_info_topic}'{why}")
        else:
            problem = self._size_problem(p.image)  # queued before the CameraInfo came
            if problem:
                problems.append(problem)
        depth, T_img_depth = None, None
        if self.cfg.depth_topic:
            match, final = self._depth_for(p.stamp)
            depth, depth_frame = match if match is not None else (None, "")
            image_frame = p.frame_id.lstrip("/")
            if depth is None:
                why = f"no depth image within {self.cfg.max_sync_offset} s of the colour stamp {p.stamp:.3f} s"
                (problems if final else waiting).append(why)
            elif depth_frame and image_frame and depth_frame != image_frame:
                other = f"depth on '{self.cfg.depth_topic}' is in frame '{depth_frame}' but the colour image in " \
                        f"'{image_frame}'"
                dc = self.depth_camera
                if not self.cfg.depth_camera_info_topic:
                    problems.append(f"{other}: {ALIGNED_DEPTH_HINT} (or set ros.depth_camera_info_topic to the "
                                    "depth camera's CameraInfo to register it here)")
                elif dc is None:
                    waiting.append(f"{other} and no depth CameraInfo received yet on "
                                   f"'{self.cfg.depth_camera_info_topic}' to register it")
                elif depth.shape != (dc.source.height, dc.source.width):
                    problems.append(f"depth is {depth.shape[1]}x{depth.shape[0]} but its CameraInfo on "
                                    f"'{self.cfg.depth_camera_info_topic}' says {dc.source.width}x{dc.source.height}")
                else:
                    try:
                        T_img_depth = self.tf.lookup(image_frame, depth_frame, p.stamp)
                    except TransformError as e:
                        pending = e.kind in ("future", "unknown_frame", "not_connected")
                        (waiting if pending else problems).append(f"cannot register depth: {e}")
                if T_img_depth is None:
                    depth = None
            elif depth.shape != p.image.shape[:2]:
                problems.append(f"depth is {depth.shape[1]}x{depth.shape[0]} but the colour image is "
                                f"{p.image.shape[1]}x{p.image.shape[0]}")
        T = None
        try:
            T = check_rigid(self.tf.lookup(self.cfg.world_frame, self._camera_frame(p), p.stamp), f"pose of {p.name}")
        except TransformError as e:
            pending = e.kind in ("future", "unknown_frame", "not_connected")
            why = f"no pose: {e}"
            if self.cfg.pose_source != "tf" and e.kind in ("unknown_frame", "not_connected"):
                child = self.pose_child if self.pose_child != POSE_TOPIC_FRAME else "the image's frame"
                why += (f" (poses on '{self.cfg.pose_topic}' are of '{child}'; the transform from it to the image "
                        f"frame '{self._camera_frame(p)}' comes from /tf_static or /tf, and the pose's frame must "
                        f"connect to ros.world_frame '{self.cfg.world_frame}')")
            (waiting if pending else problems).append(why)
        except PoseError as e:
            problems.append(str(e))
        if T is not None and not problems and not waiting:
            jump = pose_jump_problem(self._last_pose, T, self.limits)
            self._last_pose = T  # a relocalisation costs one frame, not every frame after it
            if jump:
                problems.append(jump)
        return problems, waiting, (depth, T_img_depth), T

    @property
    def waiting(self) -> int:
        return len(self._pending)


def _prepare(frame: Frame, camera: CameraModel, depth_camera: Optional[CameraModel],
             T_image_depth: Optional[np.ndarray]) -> Frame:
    image = camera.rectify(frame.image)
    depth = frame.depth
    if depth is not None and T_image_depth is not None:  # straight into the mapper's pinhole camera
        depth = register_depth(depth_camera.rectify(depth, nearest=True), depth_camera.intrinsics, T_image_depth,
                               camera.intrinsics)
    elif depth is not None:
        depth = camera.rectify(depth, nearest=True)
    return dataclasses.replace(frame, image=image, depth=depth)


def prepare_frame(frame: Frame) -> Frame:
    """``frame`` with its deferred conversions done (undistortion of a raw camera, registration of
    depth from another optical frame); frames without any are returned as they are. The worker
    calls it for the frames it examines, so the callbacks stay cheap."""
    prepare = frame.extra.pop("prepare", None)
    return prepare(frame) if prepare is not None else frame
