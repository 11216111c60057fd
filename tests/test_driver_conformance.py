"""Driver conformance (issue 21): a fake RGB-D driver written from the ROS standards
(bench/conformance_driver.py) against the mapping node started as the README says (gags-launch
with the driver's topics), geometry only. Every case gives either a map within tolerance of the true
surfaces (median <= 1.5 mm, p90 <= 3 mm) or every frame refused with a reason naming the problem:
no case may be silently wrong. One node per configuration, reused across its cases (map reset
between them, stamps 100 s apart)."""

from __future__ import annotations

import pytest

from bench.conformance_driver import CASES, GROUPS, Case, Driver, base_pose, params_file, run_case, verdict
from rosutil import stop

pytestmark = pytest.mark.ros
RESULTS = []


def _start(group: str, tmp_path_factory, env):
    import rclpy

    from gags_ros.ros.dds import ensure_profile_env
    from gags_ros.ros.launcher import specs_from_args, start

    d = tmp_path_factory.mktemp(f"conformance_{group}")
    args = [f"{k}:={v}" for k, v in GROUPS[group].items()] + [f"params_file:={params_file(d / 'params.yaml')}"]
    ensure_profile_env()
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    drv = Driver(group, ctx)
    # /tf_static is latched (transient local): published before the node exists, it must still arrive
    drv.publish_statics(Case("", group), base_pose(0, 1))
    (proc,) = start(specs_from_args(args), env)
    drv.proc = proc
    return drv, ctx


@pytest.fixture(scope="module")
def drivers(tmp_path_factory, ros_env):
    started = {}

    def get(group):
        if group not in started:
            for g in list(started):  # one node at a time: the CPU is small
                _stop(*started.pop(g))
            started[group] = _start(group, tmp_path_factory, ros_env)
            started[group][0].ready()
        return started[group][0]

    yield get
    for g in list(started):
        _stop(*started.pop(g))
    print("\nconformance:\n" + "\n".join(f"  {c:40s} {v}" for c, v in RESULTS))


def _stop(drv, ctx):
    import rclpy

    drv.node.destroy_node()
    rclpy.try_shutdown(context=ctx)
    stop(drv.proc, 15)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_maps_right_or_refuses_naming_the_problem(drivers, case):
    drv = drivers(case.group)
    assert drv.proc.poll() is None, "the mapping node died"
    r = run_case(drv, case)
    ok, why = verdict(case, r)
    RESULTS.append((case.name, why))
    assert ok, f"{case.name}: {why}; status messages {r['messages']}"
    if case.tf == "late":
        assert r["refused"] >= 1 and all("no pose" in x for x in r["reasons"]), r
    if case.healthy_tail:  # every real start refuses frames before TF; a healthy stream is OK again
        assert r["level"] == 0 and not r["recent_rejections"], (r["level"], r["diagnostics"])
    if case.time_jump:  # the frames after the jump are mapped, and the jump was reported once
        assert r["refused"] == 0 and r["keyframes"] >= 3, r
        assert any("went back" in m for m in r["messages"]), r["messages"]
