"""The mapping node: camera topics in, Gaussian language map out, queries served.

A thin adapter: callbacks convert messages to :class:`gags_ros.core.types.Frame` and push them into
the worker's bounded buffer; services hand functions to the worker, which runs them between
optimisation steps (:mod:`gags_ros.core.worker`). No torch work runs in a callback.
"""

from __future__ import annotations

import collections
import gc
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Callable, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rclpy._rclpy_pybind11 import RCLError
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future as RclpyFuture
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from gags_ros.msg import ClassifiedObject, MappingStatus, QueryTarget
from gags_ros.srv import ClassifyObjects, ExportMap, LoadMap, Query, RetrieveObjects, SaveMap

from ..core.config import ConfigError, GagsConfig, validate
from ..core.files import remove_stale_temp_files
from ..core.frame_sync import FrameAssembler
from ..core.paths import PathRefused, resolve_map_path
from ..core.pipeline import LANGUAGE_DISABLED, GagsPipeline, NoMapError
from ..core.query import check_query_text
from ..core.rejections import RejectionLog
from ..core.teachers.factory import check_teacher_weights, random_weight_models
from ..core.tf_buffer import TransformBuffer
from ..core.types import PoseError
from ..core.worker import Worker, WorkerBusy
from .conversions import (InputError, camera_model_from_msg, depth_from_msg, image_from_compressed, image_from_msg,
                          labelled_markers, matrix_from_pose, matrix_from_transform, pointcloud2_to_msg, stamp_to_sec,
                          target_markers)
from .dds import ensure_profile_env
from .params import ExplainedParameters, declare_config



def point(x: float, y: float, z: float):
    from geometry_msgs.msg import Point

    return Point(x=float(x), y=float(y), z=float(z))


class NotConfigured(RuntimeError):
    """A service or worker call while the node is unconfigured (lifecycle): no pipeline, no map."""


class MappingNode(ExplainedParameters, LifecycleNode):
    """Node ``gags_mapping``, a managed (lifecycle) node. ``pipeline_factory(cfg)`` builds the pipeline
    on the worker thread (default: :class:`GagsPipeline`).

    unconfigured: parameters declared, status / diagnostics and services up (services answer that
    the node is unconfigured). configure: parameters validated, weights checked, the worker started
    and the pipeline (models) built, waited for. activate: camera / TF subscriptions, the map cloud
    timer, the worker maps. deactivate: subscriptions gone and the worker paused (no frames, no
    optimisation); the map is kept and every service still answers. cleanup: the worker stopped and
    the pipeline, its models and map freed (CUDA cache emptied). shutdown: the same from any state.
    With ``ros.autostart`` (default) the node configures and activates itself at start.
    """

    def __init__(self, pipeline_factory: Optional[Callable[[GagsConfig], object]] = None,
                 node_name: str = "gags_mapping", **kwargs):
        super().__init__(node_name, **kwargs)
        self.cfg = declare_config(self, on_change=self._on_parameter_changed)
        self._pipeline_factory = pipeline_factory
        self.weights_error = ""
        self.worker: Optional[Worker] = None
        self.lifecycle_state = "unconfigured"
        self._mapping = False  # active: subscribed, the worker mapping, the cloud timer running
        self.transitions: collections.deque = collections.deque(maxlen=8)  # (wall time, text), newest last
        self.lifecycle_error = ""  # why the last transition failed ("" when it succeeded)
        self.rejections = RejectionLog()
        self.last_message = ""
        self._last_message_time = -math.inf
        self._throttle = {}
        self._status_lock = threading.Lock()
        self._last_busy = (time.monotonic(), 0.0)
        self._dropped_seen = (0, -math.inf)  # (frames dropped so far, monotonic time the count last grew)
        # "<service> <outcome>" -> requests answered so (result; invalid: bad text; refused: e.g. no map
        # yet; busy; failed): beside a client's own count it tells a request lost on the way in from
        # an answer lost on the way out.
        self.requests_answered: collections.Counter = collections.Counter()
        self.messages_lost = {}  # topic -> messages DDS reports lost before they reached a callback
        self._lost_time = -math.inf
        self.callback_seconds = 0.0
        self.callback_count = 0
        self.subs = []
        self.sync_timer = None
        self._lock = threading.Lock()
        self._new_frame_state()

        services = ReentrantCallbackGroup()
        # Reliable keep-last of ros.service_qos_depth: a burst of requests from every client is
        # taken (and queued or refused as busy) instead of being overwritten in the DDS history.
        qos = QoSProfile(depth=self.cfg.ros.service_qos_depth, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

        def service(srv_type, name, cb):
            return self.create_service(srv_type, name, cb, qos_profile=qos, callback_group=services)

        self.srv_query = service(Query, "gags/query", self._on_query)
        self.srv_save = service(SaveMap, "gags/save_map", self._on_save)
        self.srv_load = service(LoadMap, "gags/load_map", self._on_load)
        self.srv_reset = service(Trigger, "gags/reset_map", self._on_reset)
        self.srv_classify = service(ClassifyObjects, "gags/classify_objects", self._on_classify)
        self.srv_retrieve = service(RetrieveObjects, "gags/retrieve_objects", self._on_retrieve)
        self.srv_export = service(ExportMap, "gags/export", self._on_export)

        self.pub_status = self.create_publisher(MappingStatus, self.cfg.ros.status_topic, 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_markers = self.create_publisher(MarkerArray, self.cfg.ros.marker_topic, latched)
        self.pub_cloud = self.create_publisher(PointCloud2, self.cfg.ros.cloud_topic, latched)
        self.pub_objects = self.create_publisher(MarkerArray, "gags/objects", latched)
        timers = MutuallyExclusiveCallbackGroup()
        # Steady timers: status, diagnostics and the cloud keep their period under use_sim_time
        # (a paused or finished bag stops /clock, not the node's reports).
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.status_timer = self.create_timer(self.cfg.ros.status_period, self._publish_status, callback_group=timers,
                                              clock=self._steady)
        # always created (cancelled while ros.cloud_period is 0 or the node is not active): the
        # period may change at run time
        self.cloud_timer = self.create_timer(self.cfg.ros.cloud_period or 1.0, self._request_cloud,
                                             callback_group=timers, clock=self._steady)
        self._apply_periods()
        self._cloud_pending = False
        # A simulated clock (use_sim_time) that jumps back clears TF and the frame stores, as tf2 does.
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None,
                          min_backward=Duration(nanoseconds=-int(self.cfg.ros.time_jump_threshold * 1e9)),
                          on_clock_change=False),
            post_callback=lambda jump: self._on_time_jump("clock", math.nan, jump.delta.nanoseconds * 1e-9))
        self.get_logger().info("gags_mapping up, unconfigured" + (": configuring (ros.autostart)" if
                                                                  self.cfg.ros.autostart else ""))
        if self.cfg.ros.autostart and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # ---- lifecycle ----------------------------------------------------------------------------
    def _transition(self, name: str, state: str, work: Callable[[], str]) -> TransitionCallbackReturn:
        """Run transition ``name`` (its ``work()`` returns what to note); on success the node is in
        ``state``. Any exception fails it (FAILURE: the node stays where it was), noted as an error
        in the log, status and diagnostics with its reason; rclpy itself would swallow it."""
        t0 = time.monotonic()
        try:
            what = work()
        except Exception as e:
            self.lifecycle_error = f"{name} failed: {type(e).__name__}: {e}"
            self.transitions.append((time.time(), self.lifecycle_error))
            self.note(f"lifecycle: {self.lifecycle_error}", "error")
            self._publish_status()
            return TransitionCallbackReturn.FAILURE
        self.lifecycle_state, self.lifecycle_error = state, ""
        text = f"{name}: {state} in {time.monotonic() - t0:.2f} s" + (f" ({what})" if what else "")
        self.transitions.append((time.time(), text))
        self.note(f"lifecycle: {text}")
        self._publish_status()  # the transition shows at once, not at the next period
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state) -> TransitionCallbackReturn:
        return self._transition("configure", "inactive", self._configure)

    def on_activate(self, state) -> TransitionCallbackReturn:
        return self._transition("activate", "active", self._activate)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        return self._transition("deactivate", "inactive", self._deactivate)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        return self._transition("cleanup", "unconfigured", self._cleanup)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        return self._transition("shutdown", "finalized", self._shutdown)

    def on_error(self, state) -> TransitionCallbackReturn:
        self.note(f"lifecycle: error processing from {state.label}; worker stopped, node unconfigured", "error")
        self._shutdown()
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> str:
        validate(self.cfg)  # run-time changes were checked one by one; the cross-field rules here
        factory = self._pipeline_factory
        # The real teacher: missing weights are found now, not at a keyframe; geometry maps without them.
        self.weights_error = self._check_weights() if factory is None else ""
        factory = factory or (lambda cfg: GagsPipeline(cfg, language_error=self.weights_error))
        removed = remove_stale_temp_files(os.path.expanduser(self.cfg.save_dir))
        if removed:
            self.get_logger().info(f"removed {len(removed)} temporary file(s) left by an interrupted save: "
                                   + ", ".join(str(p) for p in removed))
        self._new_frame_state()
        worker = Worker(lambda: factory(self.cfg), buffer_size=self.cfg.ros.frame_buffer,
                        request_capacity=self.cfg.ros.request_queue)
        worker.pause()  # maps once active
        try:
            worker.start(wait=True)   # the models are loaded when configure succeeds
        except Exception:
            worker.stop(self.cfg.ros.shutdown_timeout)
            raise
        self.worker = worker
        return "pipeline and models built" + ("; geometry only: teacher weights missing (see status)"
                                              if self.weights_error else "")

    def _activate(self) -> str:
        if self.worker is None:
            raise NotConfigured("no worker")
        self._subscribe()
        self.worker.resume()
        self._mapping = True
        self._apply_periods()
        self.get_logger().info(f"gags_mapping ready (device {self.cfg.device}, renderer "
                               f"{self.cfg.mapping.renderer}); services under {self.get_namespace()}gags/")
        return f"subscribed to {len(self.subs)} topics"

    def _deactivate(self) -> str:
        self._mapping = False
        self._unsubscribe()
        with self._lock:
            self.assembler.clear()  # frames still waiting for a pose are not taken any more
        if self.worker is not None:
            self.worker.pause()
        self.cloud_timer.cancel()
        return "frames ignored, map kept, services answered"

    def _cleanup(self) -> str:
        stopped = self._stop_worker()
        return "worker stopped, map and models freed" + ("" if stopped else " (its last step abandoned)")

    def _shutdown(self) -> str:
        self._mapping = False
        self._unsubscribe()
        self.cloud_timer.cancel()
        self._stop_worker()
        return ""

    def _stop_worker(self) -> bool:
        """Stop the worker (at most ``ros.shutdown_timeout`` s) and drop it with the pipeline, its
        models and map; empty the CUDA cache. False when its step was still running."""
        worker, self.worker = self.worker, None
        stopped = True
        if worker is not None:
            stopped = worker.stop(self.cfg.ros.shutdown_timeout)
            if stopped:
                worker.pipeline = None  # the worker thread has ended: nothing else holds it
            del worker
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    torch.cuda.empty_cache()
            except ImportError:
                pass
        with self._lock:
            self._new_frame_state()
        return stopped

    # ---- inputs -----------------------------------------------------------------------------
    def _new_frame_state(self) -> None:
        """A fresh TF buffer and frame assembler (at configure and cleanup)."""
        r = self.cfg.ros
        self.tf = TransformBuffer(cache_time=max(10.0, 20 * r.tf_timeout), jump_threshold=r.time_jump_threshold)
        self.assembler = FrameAssembler(r, self.tf, max_pending=4 * r.frame_buffer, limits=self.cfg.limits,
                                        on_time_jump=self._on_time_jump, clock=self._wait_clock)
        self._camera_matrix = ""

    def _wait_clock(self) -> float:
        """Seconds of the clock that times a frame's wait for its pose (ros.tf_timeout): the
        simulated one under use_sim_time (bag time), else monotonic."""
        clock = self.get_clock()
        if getattr(clock, "ros_time_is_active", False):
            return clock.now().nanoseconds * 1e-9
        return time.monotonic()

    def _unsubscribe(self) -> None:
        for s in self.subs:
            self.destroy_subscription(s)
        self.subs = []
        if self.sync_timer is not None:
            self.destroy_timer(self.sync_timer)
            self.sync_timer = None

    def _subscribe(self) -> None:
        r = self.cfg.ros
        sensor = QoSProfile(depth=r.qos_depth, history=HistoryPolicy.KEEP_LAST,
                            reliability=ReliabilityPolicy.RELIABLE if r.qos_reliable else ReliabilityPolicy.BEST_EFFORT)
        # Callback groups matter only under a multi-threaded executor (tests embed the node in
        # their own); the shared frame-assembly state is under our lock either way.
        images = aux = ReentrantCallbackGroup()

        def sub(t, topic, cb, qos=sensor, group=aux):
            events = SubscriptionEventCallbacks(message_lost=lambda info, topic=topic: self._on_lost(topic, info))
            return self.create_subscription(t, topic, cb, qos, callback_group=group, event_callbacks=events)

        self.subs = [sub(Image, r.image_topic, self._on_image, group=images),
                     sub(CameraInfo, r.camera_info_topic, self._on_info)]
        if r.compressed_image_topic:
            self.subs.append(sub(CompressedImage, r.compressed_image_topic, self._on_compressed, group=images))
        if r.depth_topic:
            self.subs.append(sub(Image, r.depth_topic, self._on_depth))
        if r.depth_topic and r.depth_camera_info_topic:
            self.subs.append(sub(CameraInfo, r.depth_camera_info_topic, self._on_depth_info))
        # TF in every mode: with a pose topic it gives the transform from the frame the poses are of
        # (e.g. base_link) to the image's optical frame, and the pose's frame to the world frame.
        tf_qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        static_qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.subs.append(sub(TFMessage, "/tf", lambda m: self._on_tf(m, False), tf_qos))
        self.subs.append(sub(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), static_qos))
        if r.pose_source == "pose":
            self.subs.append(sub(PoseStamped, r.pose_topic, self._on_pose))
        elif r.pose_source == "odometry":
            self.subs.append(sub(Odometry, r.pose_topic, self._on_pose))
        self.sync_timer = self.create_timer(0.02, self._flush, callback_group=images, clock=self._steady)

    @property
    def frames_rejected(self) -> int:
        return self.rejections.total

    def _on_lost(self, topic: str, info) -> None:
        """DDS lost messages of ``topic`` before any callback saw them (QoS event)."""
        self.messages_lost[topic] = self.messages_lost.get(topic, 0) + int(info.total_count_change)
        self._lost_time = time.monotonic()
        self.note(f"{info.total_count_change} message(s) on '{topic}' lost before the callbacks "
                  f"({self.messages_lost[topic]} in all)", "warning", throttle_key="lost " + topic)

    def reject(self, what: str, reason: str) -> None:
        """Count a refused input by its kind (first word of ``what``) and reason, log it at most once
        per 5 s per kind of reason."""
        self.rejections.add(what.split()[0] if what.strip() else "input", reason)
        self.note(f"rejected {what}: {reason}", "warning", throttle_key=reason.split(":")[0][:40])

    def _offer(self, image, header: Header) -> None:
        t0 = time.perf_counter()
        with self._lock:
            reason = self.assembler.offer(image, stamp_to_sec(header.stamp), header.frame_id)
        if reason is not None:
            self.reject(f"image {stamp_to_sec(header.stamp):.3f}", reason)
        self._flush()
        self.callback_seconds += time.perf_counter() - t0

    def _on_image(self, msg: Image) -> None:
        self._on_any_image(msg, image_from_msg, self.cfg.ros.image_topic)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._on_any_image(msg, image_from_compressed, self.cfg.ros.compressed_image_topic)

    def _on_any_image(self, msg, convert, topic: str) -> None:
        self.callback_count += 1
        t0 = time.perf_counter()
        try:
            image = convert(msg)
        except InputError as e:
            self.reject(f"image on {topic}", str(e))
            return
        finally:
            self.callback_seconds += time.perf_counter() - t0
        self._offer(image, msg.header)

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            topic = self.cfg.ros.compressed_image_topic or self.subs[0].topic_name
            model = camera_model_from_msg(msg, self.cfg.limits, self.cfg.ros.camera_model, topic)
            with self._lock:
                self.assembler.set_camera(model)
            described = f"{model.matrix} {model.distortion.model if model.distortion else ''}"
            if described != self._camera_matrix:  # once per change, not per message
                self._camera_matrix = described
                i = model.intrinsics
                self.note(f"camera from CameraInfo ({self.cfg.ros.camera_model}: {model.matrix}"
                          f"{', ' + model.distortion.model + ' undistorted' if model.distortion else ''}): "
                          f"{i.width}x{i.height}, fx {i.fx:.2f}, fy {i.fy:.2f}, principal point ({i.cx - 0.5:.2f}, "
                          f"{i.cy - 0.5:.2f}) px in the ROS convention")
        except InputError as e:
            with self._lock:
                self.assembler.intrinsics_refused = str(e)
            self.reject("CameraInfo", str(e))

    def _on_depth_info(self, msg: CameraInfo) -> None:
        try:
            model = camera_model_from_msg(msg, self.cfg.limits, "auto", self.cfg.ros.depth_topic)
            with self._lock:
                self.assembler.set_depth_camera(model)
        except InputError as e:
            self.reject(f"depth CameraInfo on {self.cfg.ros.depth_camera_info_topic}", str(e))

    def _on_depth(self, msg: Image) -> None:
        try:
            depth = depth_from_msg(msg, self.cfg.limits)
            with self._lock:
                self.assembler.add_depth(depth, stamp_to_sec(msg.header.stamp), msg.header.frame_id)
        except InputError as e:
            self.reject(f"depth on {self.cfg.ros.depth_topic}", str(e))

    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        for t in msg.transforms:
            what = f"TF {t.header.frame_id} -> {t.child_frame_id}"
            if not static and t.child_frame_id.lstrip("/") == self.assembler.pose_child:
                continue  # the pose topic gives this edge (e.g. odom -> base_link of the Odometry)
            try:
                stamp = stamp_to_sec(t.header.stamp)
                if self.tf.set_transform(t.header.frame_id, t.child_frame_id, stamp,
                                         matrix_from_transform(t.transform, self.cfg.limits.quaternion_tolerance),
                                         static=static):
                    self._on_time_jump(what, math.nan, stamp)
            except ValueError as e:
                self.reject(what, str(e))

    def _on_pose(self, msg) -> None:
        odometry = isinstance(msg, Odometry)
        pose = msg.pose.pose if odometry else msg.pose
        child = (msg.child_frame_id if odometry else "") or self.cfg.ros.pose_frame
        try:
            T = matrix_from_pose(pose, self.cfg.limits.quaternion_tolerance)
            stamp = stamp_to_sec(msg.header.stamp)
            with self._lock:
                jumped = self.assembler.add_pose(T, stamp, msg.header.frame_id or None, child or None)
            if jumped:
                self._on_time_jump(f"pose on {self.cfg.ros.pose_topic}", math.nan, stamp)
        except (InputError, PoseError, ValueError) as e:
            self.reject(f"pose on {self.cfg.ros.pose_topic}", str(e))

    def _on_time_jump(self, stream: str, newest: float, stamp: float) -> None:
        """Time went back on ``stream`` from ``newest`` (nan: not known) to ``stamp`` s (for the clock:
        ``stamp`` is the jump, negative). The stream's store was cleared already; the simulated clock
        clears TF and the frame stores here. Logged at most every 5 s; the map is reset on an image or
        clock jump if ``ros.time_jump_resets_map``."""
        if stream == "clock":
            with self._lock:
                self.tf.clear()
                self.assembler.clear()
            what = f"the clock jumped back by {-stamp:.3f} s"
        elif math.isnan(newest):
            what = f"{stream} went back in time to {stamp:.3f} s"
        else:
            what = f"{stream} stamps went back from {newest:.3f} to {stamp:.3f} s"
        # The image stream (or the clock) decides about the map, once per jump.
        mapped = stream in ("image", "clock")
        reset = self.cfg.ros.time_jump_resets_map and mapped
        self.note(f"{what} (a bag loop or a simulator reset?): TF and frame history cleared"
                  + ("" if not mapped else ", mapping goes on with a new map (ros.time_jump_resets_map)" if reset
                     else ", mapping goes on with the map kept"),
                  "warning", throttle_key="time jump")
        worker = self.worker
        if reset and worker is not None:
            try:
                worker.call_async(lambda p: p.reset(), admit=False)
            except RuntimeError:  # shutting down
                pass
            worker.frames.clear()

    def _flush(self) -> None:
        with self._lock:
            ready, rejected = self.assembler.poll()
        for name, reason in rejected:
            self.reject(f"frame {name}", reason)
        worker = self.worker
        for f in ready:
            if worker is not None:
                worker.submit_frame(f)

    # ---- helpers ----------------------------------------------------------------------------
    def header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id=self.cfg.ros.world_frame)

    def note(self, message: str, level: str = "info", throttle_key: str = "") -> None:
        """Log a message at ``level`` (info, warning or error) and keep it for the status topic (for
        ``ros.message_expiry`` seconds). With ``throttle_key``, logged at most once per 5 s per key."""
        now = time.monotonic()
        self.last_message, self._last_message_time = message, now
        if throttle_key:
            if now - self._throttle.get(throttle_key, -math.inf) <= 5.0:
                return
            self._throttle[throttle_key] = now
        log = self.get_logger()
        # One call site per severity: rclpy keys its logging context by the calling line and raises
        # "Logger severity cannot be changed between calls" when one line logs at two severities.
        if level == "error":
            log.error(message)
        elif level == "warning":
            log.warning(message)
        else:
            log.info(message)

    def _check_weights(self) -> str:
        """Why the configured teacher weights cannot be loaded (logged once, as an error), or ""."""
        try:
            check_teacher_weights(self.cfg)
            return ""
        except ConfigError as e:
            why = f"{LANGUAGE_DISABLED}{e}"
            self.get_logger().error(why)
            return why

    def teacher_error(self) -> str:
        """Why the map has no language (teacher weights missing), or ""."""
        if self.weights_error or self.pipeline is None:
            return self.weights_error
        return getattr(self.pipeline, "language_error", "")

    def _on_parameter_changed(self, cfg: GagsConfig, name: str) -> None:
        """A parameter accepted at run time: the config is already updated (the worker reads it at its
        next use); periods also move their timers."""
        if name in ("ros.status_period", "ros.cloud_period"):
            self._apply_periods()

    @property
    def pipeline(self):
        """The worker's pipeline (None while unconfigured or still being built)."""
        return self.worker.pipeline if self.worker is not None else None

    def _apply_periods(self) -> None:
        r = self.cfg.ros
        self.status_timer.timer_period_ns = int(r.status_period * 1e9)
        if r.cloud_period > 0 and self._mapping:
            self.cloud_timer.timer_period_ns = int(r.cloud_period * 1e9)
            self.cloud_timer.reset()
        else:
            self.cloud_timer.cancel()

    async def _worker_call(self, fn):
        """Run ``fn(pipeline)`` on the worker and await it without blocking the executor: service
        callbacks are coroutines, so one executor thread keeps serving camera callbacks meanwhile."""
        worker = self.worker
        if worker is None:
            raise NotConfigured(f"the node is {self.lifecycle_state} (lifecycle): no map until it is configured "
                                f"(ros2 lifecycle set {self.get_fully_qualified_name()} configure)"
                                + (f"; {self.lifecycle_error}" if self.lifecycle_error else ""))
        done = RclpyFuture(executor=self.executor)

        def relay(cf):
            if cf.exception() is not None:
                done.set_exception(cf.exception())
            else:
                done.set_result(cf.result())

        worker.call_async(fn).add_done_callback(relay)
        return await done

    async def _serve(self, response, what: str, fn, expected=(NoMapError,)):
        """Run ``fn(pipeline)`` on the worker for a service call. Returns ``(True, result)``, or
        ``(False, None)`` with ``response.success`` / ``message`` set: an ``expected`` error gives its
        own message, any other "<what> failed: <type>: <error>" (logged). The node keeps running."""
        try:
            result = await self._worker_call(fn)
            self.requests_answered[f"{what} result"] += 1
            return True, result
        except WorkerBusy as e:
            response.success, response.message = False, str(e)
            self.requests_answered[f"{what} busy"] += 1
        except (NotConfigured,) + tuple(expected) as e:
            response.success, response.message = False, str(e)
            self.requests_answered[f"{what} refused"] += 1
        except Exception as e:
            response.success, response.message = False, f"{what} failed: {type(e).__name__}: {e}"
            self.requests_answered[f"{what} failed"] += 1
            self.note(response.message, "error")
        return False, None

    # ---- services ---------------------------------------------------------------------------
    async def _on_query(self, request: Query.Request, response: Query.Response) -> Query.Response:
        response.header = self.header()
        text = request.text.strip()
        why = check_query_text(text, self.cfg.query.max_text_length)
        if why:
            response.success, response.message = False, why
            self.requests_answered["query invalid"] += 1
            return response
        max_targets = int(request.max_targets) or None
        min_score = float(request.min_score) if request.min_score >= 0 and math.isfinite(request.min_score) \
            else None
        t0 = time.perf_counter()
        ok, answers = await self._serve(response, "query", lambda p: p.query([text], max_targets, min_score))
        if not ok:
            return response
        ms = 1e3 * (time.perf_counter() - t0)
        (answer,) = answers
        targets = answer.targets
        response.success = True
        if not targets and answer.reason.startswith("not found"):   # absent: say so first
            response.message = f"{answer.reason} ('{text}', {ms:.1f} ms)"
        else:
            response.message = f"{len(targets)} target(s) for '{text}' in {ms:.1f} ms" + \
                (f": {answer.reason}" if answer.reason else "")
        for t in targets:
            size = t.box_max - t.box_min
            centre = 0.5 * (t.box_max + t.box_min)
            msg = QueryTarget(label=t.label, score=float(t.score), confidence=float(t.confidence),
                              gaussian_count=int(t.count))
            msg.position = point(*t.centroid)
            msg.box_center = point(*centre)
            msg.box_size.x, msg.box_size.y, msg.box_size.z = (float(v) for v in size)
            response.targets.append(msg)
        self.on_query_answered(text, targets)
        return response

    async def _on_classify(self, request: ClassifyObjects.Request, response: ClassifyObjects.Response):
        response.header = self.header()
        ok, result = await self._serve(response, "classification", lambda p: p.classify_objects(
            list(request.vocabulary), request.source or "clusters", request.query_text, int(request.top_k)),
            expected=(NoMapError, ValueError))
        if not ok:
            return response
        objects, labelled, ms = result
        for o, lab in zip(objects, labelled):
            response.objects.append(self._object_msg(o, lab["labels"], lab["scores"]))
        response.encode_ms_per_object = float(ms)
        response.success, response.message = True, f"{len(objects)} object(s) classified"
        self.pub_objects.publish(labelled_markers(labelled, self.header()))
        return response

    async def _on_retrieve(self, request: RetrieveObjects.Request, response: RetrieveObjects.Response):
        response.header = self.header()
        text = request.text.strip()
        why = check_query_text(text, self.cfg.query.max_text_length)
        if why:
            response.success, response.message = False, why
            self.requests_answered["retrieval invalid"] += 1
            return response
        min_score = float(request.min_score) if request.min_score >= 0 else None
        ok, hits = await self._serve(response, "retrieval", lambda p: p.retrieve_objects(
            text, int(request.max_results) or 5, min_score), expected=(NoMapError, ValueError))
        if not ok:
            return response
        response.objects = [self._object_msg(o, [text], [sc]) for o, sc in hits]
        response.success, response.message = True, f"{len(hits)} object(s) for '{text}'"
        return response

    @staticmethod
    def _object_msg(o, labels, scores) -> ClassifiedObject:
        size = o.box_max - o.box_min
        m = ClassifiedObject(gaussian_count=int(len(o.indices)), source=str(o.source),
                             labels=[str(x) for x in labels], scores=[float(x) for x in scores])
        m.position = point(*o.centroid)
        m.size.x, m.size.y, m.size.z = (float(v) for v in size)
        return m

    def on_query_answered(self, text: str, targets) -> None:
        """Publish the targets as markers (latched) and the map cloud with this query's relevancy."""
        self.pub_markers.publish(target_markers(targets, self.header(), text))
        self._request_cloud()

    def _request_cloud(self) -> None:
        worker = self.worker
        if self._cloud_pending or worker is None or worker.pipeline is None:
            return
        self._cloud_pending = True
        try:  # at most one pending (_cloud_pending): not counted against the request queue
            fut = worker.call_async(lambda p: p.cloud(self.cfg.ros.cloud_max_points), admit=False)
        except RuntimeError:  # shutting down
            self._cloud_pending = False
            return

        def done(f):
            self._cloud_pending = False
            if f.exception() is None and f.result() is not None and self.context.ok():
                xyz, rgb, rel, cov = f.result()
                if rel is None:  # no query yet: unknown (-1), so the layout (and RViz's relevancy display) holds
                    rel = np.full(len(xyz), -1.0, np.float32)
                self.pub_cloud.publish(pointcloud2_to_msg(xyz, rgb, self.header(), rel, cov))

        fut.add_done_callback(done)

    def _map_path(self, requested: str, for_write: bool, default_suffix: str = ".gags") -> str:
        """The confined file a save / load / export request names (:class:`PathRefused` otherwise)."""
        return str(resolve_map_path(requested, self.cfg.save_dir, for_write=for_write,
                                    allow_any_path=self.cfg.allow_any_path, default_suffix=default_suffix))

    async def _map_service(self, response, what: str, work, done):
        """Save, load, reset: ``done(await work())`` gives the success message; any error (a refused
        path, the worker's) fails the call with "<what> failed: <error>". Noted either way."""
        try:
            response.success, response.message = True, done(await work())
        except Exception as e:
            response.success, response.message = False, f"{what} failed: {e}"
        self.note(response.message, "info" if response.success else "error")
        return response

    def _file_work(self, requested: str, for_write: bool, fn):
        """The work of a map-file service: the confined path of ``requested``, then
        ``fn(pipeline, path)`` on the worker; returns ``(path, result)``."""
        async def work():
            path = self._map_path(requested, for_write=for_write)
            return path, await self._worker_call(lambda p: fn(p, path))
        return work

    async def _on_save(self, request: SaveMap.Request, response: SaveMap.Response) -> SaveMap.Response:
        def done(out):
            response.path = str(out[1])
            return f"map saved to {response.path}"
        return await self._map_service(response, "save", self._file_work(request.path, True, lambda p, f: p.save(f)),
                                       done)

    async def _on_export(self, request: ExportMap.Request, response: ExportMap.Response) -> ExportMap.Response:
        try:
            path = self._map_path(request.path, for_write=True, default_suffix=".ply")
        except PathRefused as e:
            response.success, response.message = False, f"export refused: {e}"
            self.requests_answered["export invalid"] += 1
            return response
        vocabulary = [str(v) for v in request.vocabulary]
        ok, out = await self._serve(response, "export", lambda p: p.export(path, vocabulary),
                                    expected=(NoMapError, ValueError))
        if ok:
            response.path, response.gaussians, response.labelled = out["path"], out["gaussians"], out["labelled"]
            response.success = True
            response.message = (f"{out['gaussians']} Gaussians exported to {out['path']}"
                                + (f", {out['labelled']} labelled" if vocabulary else ""))
        self.note(response.message, "info" if response.success else "warning")
        return response

    async def _on_load(self, request: LoadMap.Request, response: LoadMap.Response) -> LoadMap.Response:
        def done(out):
            response.gaussians = int(out[1])
            return f"loaded {out[0]}"
        return await self._map_service(response, "load", self._file_work(request.path, False, lambda p, f: p.load(f)),
                                       done)

    async def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        async def work():
            await self._worker_call(lambda p: p.reset())
            if self.worker is not None:
                self.worker.frames.clear()

        return await self._map_service(response, "reset", work, lambda _: "map reset")

    # ---- status -----------------------------------------------------------------------------
    def current_message(self) -> str:
        """What status.message shows: a failed lifecycle transition (until one succeeds), else the
        newest worker error or node event of the last ``ros.message_expiry`` seconds, else that there
        was none."""
        if self.lifecycle_error:
            return f"lifecycle: {self.lifecycle_error}"
        now, expiry = time.monotonic(), self.cfg.ros.message_expiry
        worker = self.worker
        events = [(self._last_message_time, self.last_message)]
        if worker is not None:
            events.append((worker.last_error_time, worker.last_error))
        fresh = [(t, m) for t, m in events if m and now - t <= expiry]
        return max(fresh)[1] if fresh else f"no errors or rejections in the last {expiry:g} s"

    def status_msg(self) -> MappingStatus:
        worker, pipeline = self.worker, self.pipeline
        s = pipeline.stats() if pipeline is not None else {}
        now = time.monotonic()
        t_prev, busy_prev = self._last_busy
        busy = worker.busy_time if worker is not None else 0.0
        load = max(busy - busy_prev, 0.0) / max(now - t_prev, 1e-6)
        self._last_busy = (now, busy)
        # the pipeline's state while active; else the lifecycle state (unconfigured, inactive, ...)
        state = s.get("state", "starting") if self.lifecycle_state == "active" else self.lifecycle_state
        if self.lifecycle_error:
            state = "error"
        dropped = (worker.frames.dropped if worker is not None else 0) + self.assembler.dropped_waiting
        if dropped > self._dropped_seen[0]:
            self._dropped_seen = (dropped, now)
        message = self.current_message()
        missing = self.teacher_error()
        if missing:  # on every report, first: the map has no semantics until the weights are there
            message = f"ERROR: {missing}; {message}"
        untrained = random_weight_models(self.cfg)
        if untrained:  # on every report: answers of an untrained teacher mean nothing
            note = f"RANDOM WEIGHTS (teacher.allow_random_weights): {' and '.join(untrained)} untrained"
            message = f"{note}; {message}" if message else note
        msg = MappingStatus(header=self.header(), state=state, message=message,
                            keyframes=int(s.get("keyframes", 0)), gaussians=int(s.get("gaussians", 0)),
                            mapping_steps=int(s.get("mapping_steps", 0)),
                            language_steps=int(s.get("language_steps", 0)),
                            teacher_keyframes=int(s.get("teacher_keyframes", 0)),
                            loss_rgb=float(s.get("loss_rgb", float("nan"))),
                            loss_language=float(s.get("loss_language", float("nan"))),
                            frames_received=self.callback_count,
                            frames_dropped=dropped,
                            frames_rejected=self.frames_rejected,
                            queue_length=len(worker.frames) if worker is not None else 0,
                            worker_load=float(min(max(load, 0.0), 1.0)))
        return msg

    def _publish_status(self) -> None:
        msg = self.status_msg()
        self.pub_status.publish(msg)
        self.pub_diag.publish(self.diagnostics(msg))

    def diagnostics(self, s: MappingStatus) -> DiagnosticArray:
        """OK, or WARN while rejections, drops or losses happened within ``ros.message_expiry`` s (old
        ones expire; their counts stay in the values), ERROR when a lifecycle transition (e.g. configure:
        the pipeline could not be built) failed; the lifecycle state and last transitions are values."""
        expiry = self.cfg.ros.message_expiry
        now = time.monotonic()
        recent = self.rejections.recent(expiry)
        recent_counts = self.rejections.recent_counts(expiry)
        level = DiagnosticStatus.OK
        summary = f"{s.state}: {s.keyframes} keyframes, {s.gaussians} Gaussians"
        problems = []
        if recent:
            problems.append("rejected " + ", ".join(f"{k} ({recent_counts.get(k, 1)})" for k in sorted(recent)))
        if now - self._dropped_seen[1] <= expiry:
            problems.append(f"{s.frames_dropped} frames dropped")
        if now - self._lost_time <= expiry:
            problems.append(f"{sum(self.messages_lost.values())} messages lost before the callbacks")
        if problems:
            level = DiagnosticStatus.WARN
            summary += f"; in the last {expiry:g} s: " + "; ".join(problems)
        if s.state == "error":
            level, summary = DiagnosticStatus.ERROR, f"error: {s.message}"
        elif self.teacher_error():
            level, summary = DiagnosticStatus.ERROR, f"{summary}; ERROR: {self.teacher_error()}"
        elif s.message.startswith("RANDOM WEIGHTS"):
            level, summary = DiagnosticStatus.WARN, f"{summary}; {s.message}"
        worker, pipeline = self.worker, self.pipeline
        values = {"lifecycle_state": self.lifecycle_state, "keyframes": s.keyframes, "gaussians": s.gaussians, "mapping_steps": s.mapping_steps,
                  "language_steps": s.language_steps, "frames_received": s.frames_received,
                  "frames_dropped": s.frames_dropped, "frames_rejected": s.frames_rejected,
                  "frames_waiting_for_pose": self.assembler.waiting, "queue_length": s.queue_length,
                  "frames_skipped_by_rate": pipeline.stats().get("frames_skipped", 0) if pipeline is not None else 0,
                  "requests_waiting": worker.requests_waiting if worker is not None else 0,
                  "requests_refused_busy": worker.requests_refused if worker is not None else 0,
                  "worker_load": f"{s.worker_load:.2f}", "last_message": s.message,
                  "callback_ms_mean": f"{1e3 * self.callback_seconds / max(self.callback_count, 1):.2f}"}
        values.update({f"requests_answered {k}": n for k, n in sorted(self.requests_answered.items())})
        values.update({f"messages_lost_before_callbacks {t}": n for t, n in self.messages_lost.items()})
        values.update({f"last_rejection {k}": f"{r} ({age:.0f} s ago)" for k, (r, age) in sorted(recent.items())})
        values.update({f"recent_rejections {k}": n for k, n in sorted(recent_counts.items())})
        values.update({f"rejections {k}": n for k, n in sorted(self.rejections.by_kind.items())})
        values.update({f"rejection_reason {k}": n for k, n in sorted(self.rejections.by_reason.items())})
        values.update({f"lifecycle_transition {i}": f"{time.strftime('%H:%M:%S', time.gmtime(t))} UTC {text}"
                       for i, (t, text) in enumerate(reversed(self.transitions))})  # 0 = newest
        timings = pipeline.stats().get("timings", {}) if pipeline is not None else {}
        values.update({k: f"{v:.3f}" for k, v in timings.items()})
        st = DiagnosticStatus(level=level, name="gags_ros: mapping", message=summary, hardware_id=self.get_name(),
                              values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        return DiagnosticArray(header=s.header, status=[st])

    def destroy_node(self) -> bool:
        """Stop the worker (waiting at most ``ros.shutdown_timeout`` s for its current step) and the
        node. Returns False when the worker's step was still running: the caller should then exit
        the process, which abandons it (the worker thread is a daemon)."""
        stopped = True
        if getattr(self, "worker", None) is not None:  # absent when the configuration was refused in __init__
            stopped = self._stop_worker()
        super().destroy_node()
        return stopped


def main(args=None) -> int:
    """Run the node until SIGINT / SIGTERM / shutdown, then exit the process (this does not return):
    within about ``ros.shutdown_timeout`` seconds even while the worker is in a long step (a teacher
    call, a save), which is then abandoned (a save's temporary file is removed at the next start).
    Exit status 2 for an invalid configuration."""
    ensure_profile_env()
    rclpy.init(args=args)
    node, stopped, code = None, True, 0
    try:
        node = MappingNode()
        # One thread: rclpy's MultiThreadedExecutor busy-waits on messages whose group is occupied
        # (measured: 5 % of 640x480 images at 30 Hz lost, TF seconds late); services are coroutines.
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except ConfigError as e:
        print(f"gags_mapping: invalid configuration: {e}", file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # SIGINT shut the context down while the executor was between its checks: rclpy then fails
        # to build the next wait set on the invalid context instead of raising
        # ExternalShutdownException (seen under load in tests/test_ros_launch.py).
        if rclpy.ok():
            raise
    finally:
        # Ctrl-C in a terminal reaches launch and the node alike, and launch forwards it once more:
        # a second SIGINT must not interrupt the bounded shutdown below with a KeyboardInterrupt.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            stopped = node.destroy_node()
        rclpy.try_shutdown()
    if not stopped:
        print("gags_mapping: abandoned the worker's unfinished step to shut down in time", file=sys.stderr)
    # Everything is stopped and flushed: leave now. The interpreter's own finalization takes 1.2 s
    # more with torch loaded (measured on a 2-core CPU), and a daemon worker thread inside a long
    # torch call could delay it further; launch escalates to SIGTERM after 5 s.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
