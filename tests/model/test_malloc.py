"""glibc's malloc in processes that run networks (model/malloc.py)."""
import os
import subprocess
import sys

import pytest

FAULTS = """
import resource, sys
import numpy as np
from iterseg.model.malloc import undo_malloc_trim_threshold
changed = undo_malloc_trim_threshold() if sys.argv[1] == "undo" else False
np.ones(2 ** 21, np.float32)  # an 8 MB block, freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    np.ones(2 ** 21, np.float32)
print(changed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_large_blocks_are_reused_in_processes_with_dasks_malloc_trim_threshold():
    """Dask starts its workers with MALLOC_TRIM_THRESHOLD_ set, which makes glibc map (and page-fault)
    every block above 128 KiB afresh; undo_malloc_trim_threshold, run on each worker, lets freed
    blocks be reused as in a process without the variable."""
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536")
    env.pop("MALLOC_MMAP_THRESHOLD_", None)

    def faults(mode):
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, env=env,
                             check=True).stdout.split()
        return out[0], int(out[1])

    changed, undone = faults("undo")
    _, frozen = faults("keep")
    assert changed == "True" and frozen > 2000 and undone < frozen / 10
