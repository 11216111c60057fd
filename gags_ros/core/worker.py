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


class WorkerBusy(RuntimeError):
    """A request refused at once because ``request_capacity`` requests already wait for the worker."""


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
    ``request_capacity``: requests that may wait for the worker; one more is refused at once with
    :class:`WorkerBusy` (a caller gets an answer, never an unbounded wait).
    """

    def __init__(self, pipeline_factory: Callable[[], Pipeline], buffer_size: int = 8,
                 idle_sleep: float = 0.005, name: str = "gags-worker", request_capacity: int = 32):
        if request_capacity < 1:
            raise ValueError(f"request capacity must be >= 1, got {request_capacity}")
        self._factory = pipeline_factory
        self.frames = FrameBuffer(buffer_size)
        self._requests: collections.deque = collections.deque()
        self._requests_lock = threading.Lock()
        self.request_capacity = request_capacity
        self.requests_refused = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._paused = threading.Event()
        self._idle_sleep = idle_sleep
        self.pipeline: Optional[Pipeline] = None
        self.error: Optional[BaseException] = None
        self.last_error: str = ""  # the worker's own work (frames, background steps) that failed last
        self.last_error_time = 0.0  # monotonic seconds of last_error
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

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop after the current step (a chunk of optimisation, a frame, a request); requests still
        queued fail with RuntimeError. Returns False when the step outlasted ``timeout`` seconds:
        the thread is a daemon, so a process that exits then abandons that step."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._fail_queued()
        return not self._thread.is_alive()

    def _fail_queued(self) -> None:
        with self._requests_lock:
            queued, self._requests = list(self._requests), collections.deque()
        for _, fut in queued:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(RuntimeError("the worker is shutting down"))

    def pause(self) -> None:
        """Stop taking frames and background work after the current step; requests are still
        served (a deactivated node keeps answering). Queued frames wait for :meth:`resume`."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit_frame(self, frame: Frame) -> bool:
        """Queue a frame (never blocks). False when an older frame was dropped."""
        ok = self.frames.push(frame)
        self._wake.set()
        return ok

    def call_async(self, fn: Callable[[Pipeline], Any], admit: bool = True) -> Future:
        """Run ``fn(pipeline)`` on the worker between steps; the future holds its result or error.

        With ``admit``, raises :class:`WorkerBusy` when ``request_capacity`` requests already wait
        (internal bounded requests pass ``admit=False``)."""
        fut: Future = Future()
        with self._requests_lock:
            if self._stop.is_set():
                raise RuntimeError("the worker is shutting down")
            waiting = len(self._requests)
            if admit and waiting >= self.request_capacity:
                self.requests_refused += 1
                raise WorkerBusy(f"busy: {waiting} requests are already waiting for the worker "
                                 f"(capacity {self.request_capacity}); try again later")
            self._requests.append((fn, fut))
        self._wake.set()
        return fut

    @property
    def requests_waiting(self) -> int:
        return len(self._requests)

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
            while self._requests and not self._stop.is_set():
                fn, fut = self._requests.popleft()
                if fut.set_running_or_notify_cancel():
                    t0 = time.perf_counter()
                    try:
                        fut.set_result(fn(self.pipeline))
                    except BaseException as e:  # the caller is answered with it; not the worker's error
                        log.debug("request failed: %s", e)
                        fut.set_exception(e)
                    self.busy_time += time.perf_counter() - t0
                did = True
            if self._stop.is_set():
                break
            if self._paused.is_set():  # requests only
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            t0 = time.perf_counter()
            owed = getattr(self.pipeline, "owes_work", None)
            frame = None if (owed is not None and owed()) else self.frames.pop()
            if frame is not None:
                try:
                    self.pipeline.add_frame(frame)
                except Exception as e:  # a bad frame must not stop mapping
                    log.exception("frame %s failed", frame.name)
                    self._note_error(f"frame {frame.name}: {type(e).__name__}: {e}")
                did = True
            elif not self._requests:  # owed work first (frame was held back), else background work
                try:
                    did = bool(self.pipeline.idle_step())
                except Exception as e:
                    log.exception("background step failed")
                    self._note_error(f"{type(e).__name__}: {e}")
                    did = False
            self.busy_time += time.perf_counter() - t0 if did else 0.0
            if not did:
                self._wake.wait(self._idle_sleep if self.frames or self._requests else 0.1)
                self._wake.clear()
        self._fail_queued()

    def _note_error(self, message: str) -> None:
        self.last_error, self.last_error_time = message, time.monotonic()
