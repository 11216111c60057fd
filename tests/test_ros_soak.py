"""Bounded soak: about 2 minutes of 640x480 rgb8 at 30 Hz into a real mapping node process.
Memory must stay bounded and no image may be lost before the node's callbacks (the worker's own
bounded buffer may drop frames; those are counted separately)."""

import os

import pytest

from bench.soak import soak

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SECONDS = float(os.environ.get("GAGS_SOAK_SECONDS", "120"))


def test_soak_memory_bounded_and_no_callback_drops(ros_env, monkeypatch):
    for k, v in ros_env.items():
        monkeypatch.setenv(k, v)
    r = soak(SECONDS, rate=30.0, width=640, height=480)
    assert r["published"] >= 0.9 * 30 * SECONDS
    assert r["callback_drops"] == 0, r
    assert r["rejected"] == 0, r
    rss = [m for t, m in r["rss_mb"]]
    # After warm-up (first third), memory may wobble but not grow with the number of frames.
    warm = rss[len(rss) // 3:]
    assert max(warm) - warm[0] < 150.0, r["rss_mb"]
    assert r["callback_ms_mean"] < 30.0, r
