"""Timing a run: named steps add up, the total covers them, and the peak memory is known."""
import subprocess
import sys
import time

import pytest

from iterseg.timer import Timer


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


def test_peak_memory_is_in_megabytes_and_follows_what_the_process_touches():
    """In a fresh process: touching N MB above the process's resident size makes the peak that size + N.
    (A child inherits its parent's peak, so N is chosen above it.)"""
    code = ("import numpy as np; from iterseg.timer import peak_rss_mb; "
            "import os; page = os.sysconf('SC_PAGE_SIZE'); "
            "resident = int(open('/proc/self/statm').read().split()[1]) * page / 2 ** 20; "
            "n = int(peak_rss_mb()) + 200; block = np.ones(n * 2 ** 20, dtype=np.uint8); "
            "print(resident + n, peak_rss_mb())")
    expected, peak = map(float, subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                               text=True).stdout.split())
    assert abs(peak - expected) < 20
