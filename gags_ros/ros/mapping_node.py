"""The mapping node: camera topics in, Gaussian language map out, queries served.

A thin adapter: callbacks convert messages to :class:`gags_ros.core.types.Frame` and push them into
the worker's bounded buffer; services hand functions to the worker, which runs them between
optimisation steps (:mod:`gags_ros.core.worker`). No torch work runs in a callback.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Callable, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future as RclpyFuture
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from gags_ros.msg import ClassifiedObject, MappingStatus, QueryTarget
from gags_ros.srv import ClassifyObjects, LoadMap, Query, RetrieveObjects, SaveMap

from ..core.config import ConfigError, GagsConfig
from ..core.frame_sync import FrameAssembler
from ..core.pipeline import GagsPipeline, NoMapError
from ..core.query import check_query_text
from ..core.tf_buffer import TransformBuffer
from ..core.types import PoseError
from ..core.worker import Worker
from .conversions import (InputError, depth_from_msg, image_from_compressed, image_from_msg, intrinsics_from_msg,
                          labelled_markers, matrix_from_pose, matrix_from_transform, pointcloud2_to_msg, stamp_to_sec,
                          target_markers)
from .dds import ensure_profile_env
from .params import declare_config



def point(x: float, y: float, z: float):
    from geometry_msgs.msg import Point

    return Point(x=float(x), y=float(y), z=float(z))


class MappingNode(Node):
    """Node ``gags_mapping``. ``pipeline_factory(cfg)`` builds the pipeline on the worker thread."""

    def __init__(self, pipeline_factory: Optional[Callable[[GagsConfig], object]] = None,
                 node_name: str = "gags_mapping", **kwargs):
        super().__init__(node_name, **kwargs)
        self.cfg = declare_config(self)
        factory = pipeline_factory or (lambda cfg: GagsPipeline(cfg))
        self.worker = Worker(lambda: factory(self.cfg), buffer_size=self.cfg.ros.frame_buffer)
        self.worker.start(wait=False)
        self.frames_rejected = 0
        self.last_message = ""
        self._status_lock = threading.Lock()
        self._last_busy = (time.monotonic(), 0.0)

        services = ReentrantCallbackGroup()
        self.srv_query = self.create_service(Query, "gags/query", self._on_query, callback_group=services)
        self.srv_save = self.create_service(SaveMap, "gags/save_map", self._on_save, callback_group=services)
        self.srv_load = self.create_service(LoadMap, "gags/load_map", self._on_load, callback_group=services)
        self.srv_reset = self.create_service(Trigger, "gags/reset_map", self._on_reset, callback_group=services)
        self.srv_classify = self.create_service(ClassifyObjects, "gags/classify_objects", self._on_classify,
                                                callback_group=services)
        self.srv_retrieve = self.create_service(RetrieveObjects, "gags/retrieve_objects", self._on_retrieve,
                                                callback_group=services)

        self.pub_status = self.create_publisher(MappingStatus, self.cfg.ros.status_topic, 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_markers = self.create_publisher(MarkerArray, self.cfg.ros.marker_topic, latched)
        self.pub_cloud = self.create_publisher(PointCloud2, self.cfg.ros.cloud_topic, latched)
        self.pub_objects = self.create_publisher(MarkerArray, "gags/objects", latched)
        timers = MutuallyExclusiveCallbackGroup()
        self.status_timer = self.create_timer(self.cfg.ros.status_period, self._publish_status, callback_group=timers)
        if self.cfg.ros.cloud_period > 0:
            self.cloud_timer = self.create_timer(self.cfg.ros.cloud_period, self._request_cloud, callback_group=timers)
        self._cloud_pending = False
        self._setup_inputs()
        self.get_logger().info(f"gags_mapping ready (device {self.cfg.device}, renderer "
                               f"{self.cfg.mapping.renderer}); services under {self.get_namespace()}gags/")

    # ---- inputs -----------------------------------------------------------------------------
    def _setup_inputs(self) -> None:
        r = self.cfg.ros
        sensor = QoSProfile(depth=r.qos_depth, history=HistoryPolicy.KEEP_LAST,
                            reliability=ReliabilityPolicy.RELIABLE if r.qos_reliable else ReliabilityPolicy.BEST_EFFORT)
        # Callback groups matter only under a multi-threaded executor (tests embed the node in
        # their own); the shared frame-assembly state is under our lock either way.
        images = aux = ReentrantCallbackGroup()
        self.tf = TransformBuffer(cache_time=max(10.0, 20 * r.tf_timeout))
        self.assembler = FrameAssembler(r, self.tf, max_pending=4 * r.frame_buffer)
        self._lock = threading.Lock()
        self._throttle = {}

        def sub(t, topic, cb, qos=sensor, group=aux):
            return self.create_subscription(t, topic, cb, qos, callback_group=group)

        self.subs = [sub(Image, r.image_topic, self._on_image, group=images),
                     sub(CameraInfo, r.camera_info_topic, self._on_info)]
        if r.compressed_image_topic:
            self.subs.append(sub(CompressedImage, r.compressed_image_topic, self._on_compressed, group=images))
        if r.depth_topic:
            self.subs.append(sub(Image, r.depth_topic, self._on_depth))
        if r.pose_source == "tf":
            tf_qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
            static_qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                                    durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.subs.append(sub(TFMessage, "/tf", lambda m: self._on_tf(m, False), tf_qos))
            self.subs.append(sub(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), static_qos))
        elif r.pose_source == "pose":
            self.subs.append(sub(PoseStamped, r.pose_topic, self._on_pose))
        else:
            self.subs.append(sub(Odometry, r.pose_topic, self._on_pose))
        self.sync_timer = self.create_timer(0.02, self._flush, callback_group=images)
        self.callback_seconds = 0.0
        self.callback_count = 0

    def reject(self, what: str, reason: str) -> None:
        """Count a refused input and log it, at most once per 5 s per reason kind."""
        self.frames_rejected += 1
        key = reason.split(":")[0][:40]
        now = time.monotonic()
        if now - self._throttle.get(key, -1e9) > 5.0:
            self._throttle[key] = now
            self.note(f"rejected {what}: {reason}", "warning")
        else:
            self.last_message = f"rejected {what}: {reason}"

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
            intr = intrinsics_from_msg(msg)
            with self._lock:
                self.assembler.set_intrinsics(intr)
        except InputError as e:
            self.reject("CameraInfo", str(e))

    def _on_depth(self, msg: Image) -> None:
        try:
            depth = depth_from_msg(msg)
            with self._lock:
                self.assembler.add_depth(depth, stamp_to_sec(msg.header.stamp))
        except InputError as e:
            self.reject(f"depth on {self.cfg.ros.depth_topic}", str(e))

    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        for t in msg.transforms:
            what = f"TF {t.header.frame_id} -> {t.child_frame_id}"
            try:
                self.tf.set_transform(t.header.frame_id, t.child_frame_id, stamp_to_sec(t.header.stamp),
                                      matrix_from_transform(t.transform), static=static)
            except ValueError as e:
                self.reject(what, str(e))

    def _on_pose(self, msg) -> None:
        pose = msg.pose.pose if isinstance(msg, Odometry) else msg.pose
        try:
            T = matrix_from_pose(pose)
            with self._lock:
                self.assembler.add_pose(T, stamp_to_sec(msg.header.stamp), msg.header.frame_id or None)
        except (InputError, PoseError, ValueError) as e:
            self.reject(f"pose on {self.cfg.ros.pose_topic}", str(e))

    def _flush(self) -> None:
        with self._lock:
            ready, rejected = self.assembler.poll()
        for name, reason in rejected:
            self.reject(f"frame {name}", reason)
        for f in ready:
            self.worker.submit_frame(f)

    # ---- helpers ----------------------------------------------------------------------------
    def header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id=self.cfg.ros.world_frame)

    def note(self, message: str, level: str = "info") -> None:
        """Log a message and keep it for the status topic."""
        self.last_message = message
        getattr(self.get_logger(), level)(message)

    async def _worker_call(self, fn):
        """Run ``fn(pipeline)`` on the worker and await it without blocking the executor: service
        callbacks are coroutines, so one executor thread keeps serving camera callbacks meanwhile."""
        if self.worker.error is not None:
            raise RuntimeError(f"the pipeline failed to start: {self.worker.error}")
        done = RclpyFuture(executor=self.executor)

        def relay(cf):
            if cf.exception() is not None:
                done.set_exception(cf.exception())
            else:
                done.set_result(cf.result())

        self.worker.call_async(fn).add_done_callback(relay)
        return await done

    async def _serve(self, response, what: str, fn, expected=(NoMapError,)):
        """Run ``fn(pipeline)`` on the worker for a service call. Returns ``(True, result)``, or
        ``(False, None)`` with ``response.success`` / ``message`` set: an ``expected`` error gives its
        own message, any other "<what> failed: <type>: <error>" (logged). The node keeps running."""
        try:
            return True, await self._worker_call(fn)
        except expected as e:
            response.success, response.message = False, str(e)
        except Exception as e:
            response.success, response.message = False, f"{what} failed: {type(e).__name__}: {e}"
            self.note(response.message, "error")
        return False, None

    # ---- services ---------------------------------------------------------------------------
    async def _on_query(self, request: Query.Request, response: Query.Response) -> Query.Response:
        response.header = self.header()
        text = request.text.strip()
        why = check_query_text(text, self.cfg.query.max_text_length)
        if why:
            response.success, response.message = False, why
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
        response.message = f"{len(targets)} target(s) for '{text}' in {ms:.1f} ms" + \
            (f": {answer.reason}" if answer.reason else "")
        for t in targets:
            size = t.box_max - t.box_min
            centre = 0.5 * (t.box_max + t.box_min)
            msg = QueryTarget(label=t.label, score=float(t.score), gaussian_count=int(t.count))
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
        if self._cloud_pending or self.worker.pipeline is None:
            return
        self._cloud_pending = True
        fut = self.worker.call_async(lambda p: p.cloud(self.cfg.ros.cloud_max_points))

        def done(f):
            self._cloud_pending = False
            if f.exception() is None and f.result() is not None and self.context.ok():
                xyz, rgb, rel, cov = f.result()
                self.pub_cloud.publish(pointcloud2_to_msg(xyz, rgb, self.header(), rel, cov))

        fut.add_done_callback(done)

    async def _on_save(self, request: SaveMap.Request, response: SaveMap.Response) -> SaveMap.Response:
        try:
            response.path = str(await self._worker_call(lambda p: p.save(request.path or None)))
            response.success, response.message = True, f"map saved to {response.path}"
        except Exception as e:
            response.success, response.message = False, f"save failed: {e}"
        self.note(response.message, "info" if response.success else "error")
        return response

    async def _on_load(self, request: LoadMap.Request, response: LoadMap.Response) -> LoadMap.Response:
        try:
            response.gaussians = int(await self._worker_call(lambda p: p.load(request.path)))
            response.success, response.message = True, f"loaded {request.path}"
        except Exception as e:
            response.success, response.message = False, f"load failed: {e}"
        self.note(response.message, "info" if response.success else "error")
        return response

    async def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            await self._worker_call(lambda p: p.reset())
            self.worker.frames.clear()
            response.success, response.message = True, "map reset"
        except Exception as e:
            response.success, response.message = False, f"reset failed: {e}"
        self.note(response.message)
        return response

    # ---- status -----------------------------------------------------------------------------
    def status_msg(self) -> MappingStatus:
        s = self.worker.pipeline.stats() if self.worker.pipeline is not None else {}
        now = time.monotonic()
        t_prev, busy_prev = self._last_busy
        load = (self.worker.busy_time - busy_prev) / max(now - t_prev, 1e-6)
        self._last_busy = (now, self.worker.busy_time)
        state = s.get("state", "starting")
        if self.worker.error is not None:
            state = "error"
        msg = MappingStatus(header=self.header(), state=state,
                            message=str(self.worker.error or self.worker.last_error or self.last_message),
                            keyframes=int(s.get("keyframes", 0)), gaussians=int(s.get("gaussians", 0)),
                            mapping_steps=int(s.get("mapping_steps", 0)),
                            language_steps=int(s.get("language_steps", 0)),
                            teacher_keyframes=int(s.get("teacher_keyframes", 0)),
                            loss_rgb=float(s.get("loss_rgb", float("nan"))),
                            loss_language=float(s.get("loss_language", float("nan"))),
                            frames_received=self.callback_count,
                            frames_dropped=self.worker.frames.dropped + self.assembler.dropped_waiting,
                            frames_rejected=self.frames_rejected,
                            queue_length=len(self.worker.frames),
                            worker_load=float(min(max(load, 0.0), 1.0)))
        return msg

    def _publish_status(self) -> None:
        msg = self.status_msg()
        self.pub_status.publish(msg)
        self.pub_diag.publish(self.diagnostics(msg))

    def diagnostics(self, s: MappingStatus) -> DiagnosticArray:
        level = DiagnosticStatus.OK
        summary = f"{s.state}: {s.keyframes} keyframes, {s.gaussians} Gaussians"
        if s.frames_rejected or s.frames_dropped:
            level = DiagnosticStatus.WARN
            summary += f"; {s.frames_rejected} frames rejected, {s.frames_dropped} dropped"
        if s.state == "error":
            level, summary = DiagnosticStatus.ERROR, f"error: {s.message}"
        values = {"keyframes": s.keyframes, "gaussians": s.gaussians, "mapping_steps": s.mapping_steps,
                  "language_steps": s.language_steps, "frames_received": s.frames_received,
                  "frames_dropped": s.frames_dropped, "frames_rejected": s.frames_rejected,
                  "frames_waiting_for_pose": self.assembler.waiting, "queue_length": s.queue_length,
                  "frames_skipped_by_rate": (self.worker.pipeline.stats().get("frames_skipped", 0)
                                             if self.worker.pipeline is not None else 0),
                  "worker_load": f"{s.worker_load:.2f}", "last_message": s.message,
                  "callback_ms_mean": f"{1e3 * self.callback_seconds / max(self.callback_count, 1):.2f}"}
        timings = self.worker.pipeline.stats().get("timings", {}) if self.worker.pipeline is not None else {}
        values.update({k: f"{v:.3f}" for k, v in timings.items()})
        st = DiagnosticStatus(level=level, name="gags_ros: mapping", message=summary, hardware_id=self.get_name(),
                              values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        return DiagnosticArray(header=s.header, status=[st])

    def destroy_node(self):
        if hasattr(self, "worker"):  # absent when the configuration was refused in __init__
            self.worker.stop()
        return super().destroy_node()


def main(args=None) -> int:
    ensure_profile_env()
    rclpy.init(args=args)
    try:
        node = MappingNode()
    except ConfigError as e:
        print(f"gags_mapping: invalid configuration: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    # One thread: rclpy's MultiThreadedExecutor busy-waits on messages whose group is occupied
    # (measured: 5 % of 640x480 images at 30 Hz lost, TF seconds late); services are coroutines.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
