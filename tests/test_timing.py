"""The one stage timer (gags_ros/core/timing.py)."""

import time

from gags_ros.core.timing import StageTimer


def test_stages_accumulate_and_laps_split_the_time():
    t = StageTimer("cpu", sync=True)
    assert not t.sync                                 # nothing to synchronise on the CPU
    for _ in range(2):
        with t("decode"):
            time.sleep(0.01)
    with t("targets"):
        pass
    assert set(t.seconds) == {"decode", "targets"}
    assert t.seconds["decode"] >= 0.02 and t.seconds["targets"] >= 0.0
    first = t.lap()
    time.sleep(0.01)
    second = t.lap()
    assert first >= 0.02 and second >= 0.01          # lower bounds only: a loaded machine adds time
