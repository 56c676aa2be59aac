"""Measuring a run: wall-clock seconds per named step, and the process's peak memory."""
import contextlib
import resource
import time


class Timer:
    """Collects named wall-clock durations: ``with timer("stage1"): ...``."""

    def __init__(self):
        self.seconds = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def total(self):
        self.seconds["total"] = time.perf_counter() - self._start
        return self.seconds


def peak_rss_mb():
    """Peak resident memory of this process so far, in MB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
