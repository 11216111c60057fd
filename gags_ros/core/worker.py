"""The one worker thread that owns the models and the map.

Camera callbacks only push frames into a bounded :class:`FrameBuffer` (O(1), never blocks; when full
the oldest frame is dropped and counted). Services hand a function to :meth:`Worker.call`; the
worker runs it between optimisation steps, so queries are answered while mapping goes on and no
torch work ever runs in a ROS callback (nerfstudio's viewer does the same with a lock between
training steps).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Optional, Protocol

from .types import Frame

log = logging.getLogger("gags_ros.worker")


class Pipeline(Protocol):
    """What the worker drives (``gags_ros.core.pipeline.GagsPipeline`` in production).

    ``add_frame`` should be short (keyframe test, seeding, teacher); the optimisation a keyframe
    calls for is owed work (``owes_work``) that ``idle_step`` pays in short chunks, so requests are
    served between chunks and owed work goes before the next frame.
    """

    def add_frame(self, frame: Frame) -> None: ...

    def idle_step(self) -> bool:
        """Do one short chunk of owed or background work; False when there is none."""
        ...

    def owes_work(self) -> bool:
        """True while work owed to the last keyframes remains (done before the next frame)."""
        ...

    def stats(self) -> dict: ...


class FrameBuffer:
    """Bounded FIFO of frames; pushing into a full buffer drops the oldest frame and counts it."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"frame buffer capacity must be >= 1, got {capacity}")
        self._q: collections.deque = collections.deque()
        self.capacity = capacity
        self._lock = threading.Lock()
        self.received = 0
        self.dropped = 0

    def push(self, frame: Frame) -> bool:
        """Add ``frame``; return False when an older frame had to be dropped to make room."""
        with self._lock:
            self.received += 1
            dropped = len(self._q) >= self.capacity
            if dropped:
                self._q.popleft()
                self.dropped += 1
            self._q.append(frame)
            return not dropped

    def pop(self) -> Optional[Frame]:
        with self._lock:
            return self._q.popleft() if self._q else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._q)

    def clear(self) -> None:
        with self._lock:
            self._q.clear()


class Worker:
    """Runs ``pipeline`` on one thread: requests first, then frames, then idle work.

    ``pipeline_factory`` is called on the worker thread, so models are created where they are used.
    """

    def __init__(self, pipeline_factory: Callable[[], Pipeline], buffer_size: int = 8,
                 idle_sleep: float = 0.005, name: str = "gags-worker"):
        self._factory = pipeline_factory
        self.frames = FrameBuffer(buffer_size)
        self._requests: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._idle_sleep = idle_sleep
        self.pipeline: Optional[Pipeline] = None
        self.error: Optional[BaseException] = None
        self.last_error: str = ""
        self.busy_time = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ---- called from any thread -------------------------------------------------------------
    def start(self, wait: bool = True, timeout: float = 600.0) -> "Worker":
        self._thread.start()
        if wait and not self._ready.wait(timeout):
            raise TimeoutError("worker did not start in time")
        if self.error is not None:
            raise RuntimeError(f"pipeline could not be created: {self.error}") from self.error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit_frame(self, frame: Frame) -> bool:
        """Queue a frame (never blocks). False when an older frame was dropped."""
        ok = self.frames.push(frame)
        self._wake.set()
        return ok

    def call_async(self, fn: Callable[[Pipeline], Any]) -> Future:
        """Run ``fn(pipeline)`` on the worker between steps; the future holds its result or error."""
        fut: Future = Future()
        self._requests.append((fn, fut))
        self._wake.set()
        return fut

    def call(self, fn: Callable[[Pipeline], Any], timeout: Optional[float] = None) -> Any:
        return self.call_async(fn).result(timeout)

    # ---- the worker thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.pipeline = self._factory()
        except BaseException as e:  # reported by start() and status
            log.exception("pipeline construction failed")
            self.error = e
            self._ready.set()
            return
        self._ready.set()
        while not self._stop.is_set():
            did = False
            while self._requests:
                fn, fut = self._requests.popleft()
                if fut.set_running_or_notify_cancel():
                    t0 = time.perf_counter()
                    try:
                        fut.set_result(fn(self.pipeline))
                    except BaseException as e:  # the caller sees it; the worker keeps running
                        log.debug("request failed: %s", e)
                        self.last_error = f"{type(e).__name__}: {e}"
                        fut.set_exception(e)
                    self.busy_time += time.perf_counter() - t0
                did = True
            t0 = time.perf_counter()
            owed = getattr(self.pipeline, "owes_work", None)
            frame = None if (owed is not None and owed()) else self.frames.pop()
            if frame is not None:
                try:
                    self.pipeline.add_frame(frame)
                except Exception as e:  # a bad frame must not stop mapping
                    log.exception("frame %s failed", frame.name)
                    self.last_error = f"frame {frame.name}: {type(e).__name__}: {e}"
                did = True
            elif not self._requests:  # owed work first (frame was held back), else background work
                try:
                    did = bool(self.pipeline.idle_step())
                except Exception as e:
                    log.exception("background step failed")
                    self.last_error = f"{type(e).__name__}: {e}"
                    did = False
            self.busy_time += time.perf_counter() - t0 if did else 0.0
            if not did:
                self._wake.wait(self._idle_sleep if self.frames or self._requests else 0.1)
                self._wake.clear()
