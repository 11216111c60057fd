"""The one worker thread (gags_ros/core/worker.py) on its own, with a scripted pipeline: which thread
runs what, in which order (requests, then owed work, then frames), what a failure leaves behind,
the request bound and shutting down. Every ordering is forced with events, never with sleeps."""

import threading
from types import SimpleNamespace

import pytest

from gags_ros.core.worker import FrameBuffer, Worker, WorkerBusy

WAIT = 10.0   # seconds; only reached when the worker is broken


class Script:
    """A pipeline that logs what the worker asks of it. A frame named ``kf*`` owes ``owed`` idle
    steps (a keyframe's optimisation); a frame named ``bad*`` raises."""

    def __init__(self, owed: int = 0):
        self.log = []
        self.threads = set()
        self.owed_per_keyframe = owed
        self._owed = 0
        self.idle_done = threading.Event()

    def _note(self, what):
        self.threads.add(threading.get_ident())
        self.log.append(what)

    def add_frame(self, frame):
        self._note(("frame", frame.name))
        if frame.name.startswith("bad"):
            raise ValueError("broken frame")
        if frame.name.startswith("kf"):
            self._owed = self.owed_per_keyframe

    def owes_work(self):
        return self._owed > 0

    def idle_step(self):
        if self._owed == 0:
            self.idle_done.set()
            return False
        self._owed -= 1
        self._note(("idle", self._owed))
        return True

    def stats(self):
        return {}


def frame(name):
    return SimpleNamespace(name=name)


def started(owed=0, **kw):
    script = Script(owed)
    w = Worker(lambda: script, **kw).start(timeout=WAIT)
    return w, script


def hold(w):
    """Occupy the worker with a request until the returned event is set; returns (future, release)."""
    entered, release = threading.Event(), threading.Event()

    def blocker(p):
        entered.set()
        assert release.wait(WAIT)
        return "held"

    fut = w.call_async(blocker)
    assert entered.wait(WAIT)
    return fut, release


def frames_then_idle(w, s, *names):
    """Queue frames ``names`` while the worker is held, let it go, wait until it is idle again
    (every frame taken, nothing owed) and return the pipeline's log."""
    held, release = hold(w)
    s.idle_done.clear()                              # the worker is held: no idle step runs now
    for n in names:
        w.submit_frame(frame(n))
    release.set()
    assert held.result(WAIT) == "held"
    assert s.idle_done.wait(WAIT)
    return w.call(lambda p: list(p.log), timeout=WAIT)


def test_frame_buffer_drops_the_oldest_and_counts():
    b = FrameBuffer(2)
    assert b.push(frame("a")) and b.push(frame("b"))
    assert not b.push(frame("c"))
    assert (b.received, b.dropped, len(b)) == (3, 1, 2)
    assert [b.pop().name, b.pop().name, b.pop()] == ["b", "c", None]
    with pytest.raises(ValueError):
        FrameBuffer(0)


def test_pipeline_is_built_and_used_on_the_worker_thread_only():
    built_on = []

    def factory():
        built_on.append(threading.get_ident())
        return Script()

    w = Worker(factory).start(timeout=WAIT)
    try:
        assert w.call(lambda p: threading.get_ident(), timeout=WAIT) == built_on[0] == w._thread.ident
        assert built_on[0] != threading.get_ident()
    finally:
        assert w.stop(WAIT)


def test_a_failing_factory_is_reported_by_start():
    def factory():
        raise OSError("no checkpoint at /nowhere/sam.pth")

    w = Worker(factory)
    with pytest.raises(RuntimeError, match="no checkpoint at /nowhere/sam.pth"):
        w.start(timeout=WAIT)
    assert isinstance(w.error, OSError)
    w._thread.join(WAIT)
    assert not w.alive


def test_requests_go_before_waiting_frames():
    w, s = started()
    try:
        held, release = hold(w)
        s.idle_done.clear()                          # the worker is held: no idle step runs now
        w.submit_frame(frame("f1"))
        second = w.call_async(lambda p: p.log.append(("request", 2)))
        release.set()
        assert held.result(WAIT) == "held"
        assert s.idle_done.wait(WAIT)                # idle again: the request and the frame are done
        assert w.call(lambda p: list(p.log), timeout=WAIT) == [("request", 2), ("frame", "f1")]
        assert second.done()
    finally:
        assert w.stop(WAIT)


def test_owed_work_is_paid_before_the_next_frame():
    w, s = started(owed=3)
    try:
        assert frames_then_idle(w, s, "kf1", "kf2") == [("frame", "kf1"), ("idle", 2), ("idle", 1), ("idle", 0),
                       ("frame", "kf2"), ("idle", 2), ("idle", 1), ("idle", 0)]
        assert len(s.threads) == 1
    finally:
        assert w.stop(WAIT)


def test_a_bad_frame_is_noted_and_mapping_goes_on():
    w, s = started()
    try:
        assert frames_then_idle(w, s, "bad1", "f2") == [("frame", "bad1"), ("frame", "f2")]
        assert w.alive and w.error is None
        assert "frame bad1" in w.last_error and "broken frame" in w.last_error
    finally:
        assert w.stop(WAIT)


def test_a_failing_request_answers_its_caller_only():
    w, _ = started()
    try:
        with pytest.raises(KeyError, match="no such map"):
            w.call(lambda p: (_ for _ in ()).throw(KeyError("no such map")), timeout=WAIT)
        assert w.call(lambda p: 42, timeout=WAIT) == 42
        assert w.last_error == ""                    # a request's error is not the worker's
    finally:
        assert w.stop(WAIT)


def test_requests_beyond_the_capacity_are_refused_at_once():
    w, _ = started(request_capacity=2)
    try:
        held, release = hold(w)                      # running: no longer waiting
        waiting = [w.call_async(lambda p, i=i: i) for i in range(2)]
        with pytest.raises(WorkerBusy, match="2 requests are already waiting"):
            w.call_async(lambda p: -1)
        assert w.requests_refused == 1
        internal = w.call_async(lambda p: "internal", admit=False)   # bounded internal requests pass
        release.set()
        assert [f.result(WAIT) for f in waiting] == [0, 1]
        assert internal.result(WAIT) == "internal"
    finally:
        assert w.stop(WAIT)


def test_stop_fails_what_still_waits_and_refuses_new_requests():
    w, s = started()
    held, release = hold(w)
    queued = w.call_async(lambda p: "never")
    stopper = threading.Thread(target=w.stop, args=(WAIT,))
    stopper.start()
    assert w._stop.wait(WAIT)                        # stop requested while the held request runs
    release.set()
    stopper.join(WAIT)
    assert held.result(WAIT) == "held"               # the running step finishes
    with pytest.raises(RuntimeError, match="shutting down"):
        queued.result(WAIT)
    with pytest.raises(RuntimeError, match="shutting down"):
        w.call_async(lambda p: None)
    assert not w.alive
