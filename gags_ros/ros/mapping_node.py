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
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from gags_ros.msg import MappingStatus, QueryTarget
from gags_ros.srv import LoadMap, Query, SaveMap

from ..core.config import ConfigError, GagsConfig
from ..core.pipeline import GagsPipeline, NoMapError
from ..core.worker import Worker
from .dds import ensure_profile_env
from .params import declare_config

SERVICE_TIMEOUT = 60.0  # s: longest a service waits for the worker (a query normally takes ms)


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

        self.pub_status = self.create_publisher(MappingStatus, self.cfg.ros.status_topic, 10)
        self.status_timer = self.create_timer(self.cfg.ros.status_period, self._publish_status,
                                              callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(f"gags_mapping ready (device {self.cfg.device}, renderer "
                               f"{self.cfg.mapping.renderer}); services under {self.get_namespace()}gags/")

    # ---- helpers ----------------------------------------------------------------------------
    def header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id=self.cfg.ros.world_frame)

    def note(self, message: str, level: str = "info") -> None:
        """Log a message and keep it for the status topic."""
        self.last_message = message
        getattr(self.get_logger(), level)(message)

    def _worker_call(self, fn, timeout: float = SERVICE_TIMEOUT):
        if self.worker.error is not None:
            raise RuntimeError(f"the pipeline failed to start: {self.worker.error}")
        return self.worker.call(fn, timeout=timeout)

    # ---- services ---------------------------------------------------------------------------
    def _on_query(self, request: Query.Request, response: Query.Response) -> Query.Response:
        response.header = self.header()
        text = request.text.strip()
        qcfg = self.cfg.query
        if not text:
            response.success, response.message = False, "empty query text"
            return response
        if len(text) > qcfg.max_text_length:
            response.success = False
            response.message = (f"query text has {len(text)} characters; at most "
                                f"{qcfg.max_text_length} (parameter query.max_text_length)")
            return response
        max_targets = int(request.max_targets) or None
        min_score = float(request.min_score) if request.min_score >= 0 and math.isfinite(request.min_score) \
            else None
        try:
            t0 = time.perf_counter()
            (targets,) = self._worker_call(lambda p: p.query([text], max_targets, min_score))
            ms = 1e3 * (time.perf_counter() - t0)
        except NoMapError as e:
            response.success, response.message = False, str(e)
            return response
        except Exception as e:  # reported to the caller; the node keeps running
            response.success, response.message = False, f"query failed: {type(e).__name__}: {e}"
            self.note(response.message, "error")
            return response
        response.success = True
        response.message = f"{len(targets)} target(s) for '{text}' in {ms:.1f} ms"
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

    def on_query_answered(self, text: str, targets) -> None:
        """Hook for publishers of query results (markers)."""

    def _on_save(self, request: SaveMap.Request, response: SaveMap.Response) -> SaveMap.Response:
        try:
            response.path = str(self._worker_call(lambda p: p.save(request.path or None)))
            response.success, response.message = True, f"map saved to {response.path}"
        except Exception as e:
            response.success, response.message = False, f"save failed: {e}"
        self.note(response.message, "info" if response.success else "error")
        return response

    def _on_load(self, request: LoadMap.Request, response: LoadMap.Response) -> LoadMap.Response:
        try:
            response.gaussians = int(self._worker_call(lambda p: p.load(request.path)))
            response.success, response.message = True, f"loaded {request.path}"
        except Exception as e:
            response.success, response.message = False, f"load failed: {e}"
        self.note(response.message, "info" if response.success else "error")
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            self._worker_call(lambda p: p.reset())
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
                            frames_received=self.worker.frames.received,
                            frames_dropped=self.worker.frames.dropped,
                            frames_rejected=self.frames_rejected,
                            queue_length=len(self.worker.frames),
                            worker_load=float(min(max(load, 0.0), 1.0)))
        return msg

    def _publish_status(self) -> None:
        self.pub_status.publish(self.status_msg())

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
    executor = MultiThreadedExecutor(num_threads=4)
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
