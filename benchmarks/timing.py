"""Timing helpers shared by the speed suites: warm-up, then the median of interleaved runs."""
import os
import platform
import statistics
import time

import torch

from iterseg.model.cpu import BF16_UNITS, VNNI_UNITS, cpu_flags


def cpu_name():
    """The CPU model from /proc/cpuinfo where there is one, else the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


SPEED_FLAGS = {"avx512f", *BF16_UNITS, "amx_int8", *VNNI_UNITS}  # the features that decide bf16 and int8 speed


def machine():
    """What the numbers were measured on, recorded with every result."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_flags": sorted(cpu_flags() & SPEED_FLAGS), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def interleaved_medians(functions, rounds=5, warmup=1):
    """Median wall-clock seconds of each callable in ``functions`` (name -> fn), running them in
    turn each round so that both see the same machine load; ratios of the medians are comparable."""
    for _ in range(warmup):
        for fn in functions.values():
            fn()
    samples = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}
