"""glibc's malloc in a process that runs networks: the one setting iterseg changes, and why. No torch
here, so that it costs nothing to import."""
import ctypes
import os

# glibc's own mmap and trim thresholds once a process has freed a large block (its dynamic maximum)
GLIBC_MMAP_THRESHOLD, GLIBC_TRIM_THRESHOLD = 32 * 2 ** 20, 64 * 2 ** 20
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def undo_malloc_trim_threshold():
    """Give large allocations glibc's own thresholds back where MALLOC_TRIM_THRESHOLD_ is set (Dask sets
    it to 64 KiB in its workers): any such variable freezes glibc's mmap threshold at 128 KiB, so every
    activation above it is mapped and page-faulted afresh (measured: a ph2 2048^2 image 0.36 -> 0.22 s in
    a Dask worker). True when it changed something; no-op without glibc or with MALLOC_MMAP_THRESHOLD_
    set (the user's own choice)."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing was frozen
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD)
                and libc.mallopt(M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD))
