"""What the CPU can do, from its /proc/cpuinfo flags: bf16 units (AVX-512 BF16, AMX) and VNNI int8
dot products. Where the flags are unknown (macOS, ARM) every check answers as if nothing were missing.

Also the names of the numeric precisions a network can run in (runtime.py runs them); they live here,
in a module that does not import torch, so that the command line can list them in its help quickly."""
import functools

PRECISIONS = ("fp32", "bf16", "int8")  # see runtime.py's docstring for what each means
BF16_UNITS = ("avx512_bf16", "amx_bf16")  # x86 flags of CPUs that compute bfloat16 in hardware
VNNI_UNITS = ("avx512_vnni", "avx_vnni")  # x86 flags of CPUs with int8 dot products


@functools.lru_cache(maxsize=1)
def cpu_flags():
    """The CPU's feature flags as /proc/cpuinfo names them (frozenset); empty where there is no such
    file or no x86 ``flags`` line (macOS, ARM), i.e. where the features are unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            line = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.split(":", 1)[1].split()) if ":" in line else frozenset()


def has_vnni():
    """True when the CPU has VNNI int8 dot products; without them the int8 quantizer keeps
    activations to 7 bits (``reduce_range``) so that u8 x s8 multiply-adds cannot saturate."""
    return any(flag in cpu_flags() for flag in VNNI_UNITS)


def lacks_bf16_units():
    """True on an x86 CPU known to have no bf16 units, where bf16 autocast is emulated several
    times slower than fp32 (measured 6-9x on an AVX2 EPYC); False where they exist or are unknown."""
    flags = cpu_flags()
    return bool(flags) and not any(flag in flags for flag in BF16_UNITS)
