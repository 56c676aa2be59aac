"""Timing a run: named steps add up, the total covers them, and the peak memory is known."""
import time

import pytest

from iterseg.timer import Timer, peak_rss_mb


def test_named_steps_add_up_and_the_total_covers_them():
    timer = Timer()
    for _ in range(2):
        with timer("stage1"):
            time.sleep(0.01)
    with pytest.raises(RuntimeError), timer("stage2"):
        raise RuntimeError("a failing step is timed too")
    seconds = timer.total()
    assert set(seconds) == {"stage1", "stage2", "total"} and seconds["stage1"] >= 0.02
    assert seconds["total"] >= seconds["stage1"] + seconds["stage2"]


def test_peak_memory_in_megabytes():
    assert 10 < peak_rss_mb() < 1e6
