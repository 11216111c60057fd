"""The ROS-free parts of issue 15: a bounded request queue that refuses at once, plausibility
limits naming every failed check, rejection counts that expire, map files validated on load, temporary
files cleaned, map file modes."""

import os
import threading
import time

import numpy as np
import pytest
import torch

from gags_ros.core import config as C
from gags_ros.core.frame_sync import FrameAssembler
from gags_ros.core.files import remove_stale_temp_files
from gags_ros.core.io.mapfile import MapFormatError, load_map, save_map
from gags_ros.core.plausibility import depth_in_range, fov_deg, intrinsics_problems, quaternion_problem
from gags_ros.core.rejections import RejectionLog, reason_key
from gags_ros.core.types import Intrinsics
from gags_ros.core.worker import Worker, WorkerBusy


class Idle:
    def add_frame(self, frame):
        pass

    def idle_step(self):
        return False

    def stats(self):
        return {}


def test_requests_beyond_the_queue_are_refused_at_once_and_the_rest_answered():
    w = Worker(Idle, request_capacity=3).start()
    gate = threading.Event()
    try:
        running = w.call_async(lambda p: gate.wait(10))      # occupies the worker
        while w.requests_waiting:                            # until the worker has taken it
            time.sleep(0.001)
        queued = [w.call_async(lambda p, i=i: i) for i in range(3)]
        t0 = time.perf_counter()
        with pytest.raises(WorkerBusy, match="busy: 3 requests are already waiting"):
            w.call_async(lambda p: None)
        assert time.perf_counter() - t0 < 0.05 and w.requests_refused == 1
        gate.set()
        assert running.result(5) is True and [f.result(5) for f in queued] == [0, 1, 2]
        assert w.call(lambda p: "again", timeout=5) == "again"   # room again once served
    finally:
        gate.set()
        w.stop()


def test_stop_answers_queued_requests_and_does_not_wait_for_a_long_step():
    w = Worker(Idle).start()
    gate = threading.Event()
    long_step = w.call_async(lambda p: gate.wait(30))
    while w.requests_waiting:
        time.sleep(0.001)
    queued = w.call_async(lambda p: 1)
    t0 = time.perf_counter()
    assert w.stop(timeout=0.2) is False                      # the step is still running: abandoned
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(RuntimeError, match="shutting down"):
        queued.result(1)
    with pytest.raises(RuntimeError, match="shutting down"):
        w.call_async(lambda p: 2)
    gate.set()
    assert long_step.result(5) is True


def test_failed_requests_are_not_the_workers_error():
    """The stale "NoMapError: no map yet" of the status came from a failed query request."""
    w = Worker(Idle).start()
    try:
        with pytest.raises(LookupError):
            w.call(lambda p: (_ for _ in ()).throw(LookupError("no map yet")), timeout=5)
        assert w.last_error == ""
    finally:
        w.stop()


@pytest.mark.parametrize("fx,ok", [(1e-3, False), (30.0, True), (500.0, True), (1e6, False)])
def test_field_of_view_limits(fx, ok):
    lim = C.LimitsConfig()
    intr = Intrinsics(fx, fx, 320, 240, 640, 480)
    problems = intrinsics_problems(intr, lim)
    assert (problems == []) == ok, problems
    if fx == 1e-3:   # the CameraInfo: both axes named, with the limit
        assert len(problems) == 2 and "horizontal field of view 180 deg" in problems[0]
        assert "limits.max_fov" in problems[0] and "vertical" in problems[1]
    assert fov_deg(320.0, 640) == pytest.approx(90.0)


def test_depth_range():
    lim = C.LimitsConfig()
    d = np.array([[1.5, 1e6, np.nan], [0.001, -1.0, 99.0]], np.float32)
    out = depth_in_range(d.copy(), lim)
    assert out.tolist() == [[1.5, 0.0, 0.0], [0.0, 0.0, 99.0]]
    with pytest.raises(ValueError, match=r"no value in \[limits.min_depth, limits.max_depth\] = \[0.01, 100.0\] m "
                                         r"\(0 non-finite, 4 farther"):
        depth_in_range(np.full((2, 2), 1e6, np.float32), lim)


@pytest.mark.parametrize("q,ok", [((0, 0, 0, 1), True), ((0, 0, 0, 1.004), True), ((0, 0, 0, 2), False),
                                  ((0, 0, 0, 1e-6), False), ((0, 0, 0, 1.006), False), ((0, 0, np.nan, 1), False)])
def test_quaternion_tolerance_is_tf2s(q, ok):
    """tf2 refuses |x^2+y^2+z^2+w^2 - 1| >= 0.01: 1.004^2 - 1 = 0.008 passes, 1.006^2 - 1 = 0.012 not."""
    assert (quaternion_problem(q, 0.01) == "") == ok


def _assembler(**limits):
    cfg = C.GagsConfig()
    for k, v in limits.items():
        C.set_value(cfg, f"limits.{k}", v)
    C.set_value(cfg, "ros.depth_topic", "camera/depth")
    C.set_value(cfg, "ros.tf_timeout", 0.0)
    a = FrameAssembler(cfg.ros, limits=cfg.limits, clock=lambda: 0.0)
    a.set_intrinsics(Intrinsics(30.0, 30.0, 16, 12, 32, 24))
    return a


def _pose(x):
    T = np.eye(4)
    T[0, 3] = x
    return T


def test_every_failing_check_of_a_frame_is_named():
    a = _assembler()
    a.add_depth(np.ones((10, 10), np.float32), 1.0)           # wrong size
    a.tf.set_transform("map", "cam", 5.0, np.eye(4))          # only a later pose: 1.0 is in the past
    assert a.offer(np.zeros((24, 32, 3), np.uint8), 1.0, "cam") is None
    a.set_intrinsics(Intrinsics(30.0, 30.0, 16, 12, 64, 48))  # and now the size is wrong too
    a.clock = lambda: 1.0
    ready, rejected = a.poll()
    (name, reason) = rejected[0]
    assert not ready and "image is 32x24 but CameraInfo says 64x48" in reason
    assert "depth is 10x10 but the colour image is 32x24" in reason and "no pose" in reason


def test_pose_jump_between_frames_is_refused_once():
    a = _assembler(max_pose_jump=1.0)
    frames = []
    for t, x in [(1.0, 0.0), (2.0, 0.3), (3.0, 200e3), (4.0, 200e3 + 0.2)]:
        a.tf.set_transform("map", "cam", t, _pose(x))
        a.add_depth(np.ones((24, 32), np.float32), t)
        a.offer(np.zeros((24, 32, 3), np.uint8), t, "cam")
        ready, rejected = a.poll()
        frames.append((len(ready), [r for _, r in rejected]))
    assert frames[0][0] == frames[1][0] == 1
    assert frames[2][0] == 0 and "camera moved 2e+05 m since the previous frame (limits.max_pose_jump = 1.0 m)" \
        in frames[2][1][0]
    assert frames[3][0] == 1     # a relocalisation costs one frame, not every later one


def test_rejection_log_counts_per_reason_and_expires():
    now = [100.0]
    log = RejectionLog(clock=lambda: now[0])
    log.add("frame", "camera moved 3.2 m since the previous frame; no pose: x")
    now[0] += 5
    log.add("frame", "camera moved 7 m since the previous frame")
    log.add("CameraInfo", "CameraInfo has invalid camera matrix k=[0.0, 1.0]")
    assert log.total == 3 and log.by_kind == {"frame": 2, "CameraInfo": 1}
    assert log.by_reason[reason_key("camera moved 1 m since the previous frame")] == 2
    assert log.by_reason["no pose: x"] == 1 and "CameraInfo has invalid camera matrix k=[...]" in log.by_reason
    assert set(log.recent(30.0)) == {"frame", "CameraInfo"}
    now[0] += 31
    assert log.recent(30.0) == {} and log.total == 3          # reasons expire, counts stay


def test_rejection_log_is_bounded():
    log = RejectionLog(max_reasons=4)
    for i in range(100):
        log.add(f"kind{i}", f"reason {chr(65 + i % 26)}{chr(65 + i // 26)}")
    assert len(log.by_reason) <= 5 and len(log.by_kind) <= 5 and log.total == 100


# ---- map files -----------------------------------------------------------------------------------

def _tiny_map(n=20):
    from gags_ros.core.gaussians import GaussianMap

    g = GaussianMap.from_points(torch.rand(n, 3), torch.rand(n, 3), 0.01)
    g.params["features"] = torch.nn.Parameter(torch.randn(n, 16))
    return g


def _corrupt(path, fn):
    data = torch.load(path, weights_only=True)
    fn(data)
    torch.save(data, path)


@pytest.mark.parametrize("bad,expected", [
    (lambda d: d["params"]["means"].fill_(float("nan")), ["'means': 60 of 60 values are not finite"]),
    (lambda d: d["params"].__setitem__("scales", torch.zeros(19, 3)), ["'scales' has 19 rows but 'means' has 20"]),
    (lambda d: d["params"].__setitem__("quats", torch.zeros(20, 4)), ["'quats': 20 zero quaternions"]),
    (lambda d: d["params"].__setitem__("sh0", torch.zeros(20, 3)), ["'sh0' has shape [20, 3], expected [N, 1, 3]"]),
    (lambda d: d["metadata"].__setitem__("gaussians", 7), ["metadata says 7 Gaussians but 'means' has 20"]),
    (lambda d: (d["params"]["opacities"].fill_(float("inf")), d["params"]["features"].fill_(float("nan"))),
     ["'opacities': 20 of 20", "'features': 320 of 320"]),
])
def test_map_files_are_validated_on_load(tmp_path, bad, expected):
    path = save_map(tmp_path / "m.gags", _tiny_map(), None, C.GagsConfig())
    _corrupt(path, bad)
    with pytest.raises(MapFormatError) as e:
        load_map(path)
    for text in expected:
        assert text in str(e.value)


def test_temp_files_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".m.gags.{dead.pid}.abcd1234.tmp"
    old_style = tmp_path / ".m.gags.k2j3h4g5.tmp"            # written before the pid was in the name
    live = tmp_path / f".m.gags.{os.getppid()}.zzzz9999.tmp"
    other = tmp_path / "notes.tmp"
    for p in (stale, old_style, live, other):
        p.write_bytes(b"x" * 10)
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted([stale, old_style])
    assert live.exists() and other.exists()
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_map_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        p = save_map(tmp_path / "a.gags", _tiny_map(), None, C.GagsConfig())
        assert p.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        p = save_map(tmp_path / "b.gags", _tiny_map(), None, C.GagsConfig())
        assert p.stat().st_mode & 0o777 == 0o600                  # the umask is respected
        cfg = C.GagsConfig()
        C.set_value(cfg, "ros.map_file_mode", "0640")
        p = save_map(tmp_path / "c.gags", _tiny_map(), None, cfg)
        assert p.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    with pytest.raises(C.ConfigError, match="map_file_mode"):
        C.set_value(C.GagsConfig(), "ros.map_file_mode", "rwxr--r--")
