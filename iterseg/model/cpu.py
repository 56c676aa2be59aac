"""What the CPU can do, from its /proc/cpuinfo flags: bf16 units (AVX-512 BF16, AMX) and VNNI int8
dot products. Where the flags are unknown (macOS, ARM) every check answers as if nothing were missing.

Also the names of the numeric precisions a network can run in (runtime.py runs them) and what
``auto`` picks from the flags; they live here, in a module that does not import torch, so that the
command line can list them in its help quickly."""
import functools
import os

from ..errors import InputError

CONCRETE_PRECISIONS = ("fp32", "bf16", "int8")  # see runtime.py's docstring for what each means
PRECISIONS = ("auto",) + CONCRETE_PRECISIONS  # what users choose from; auto resolves to fp32 or bf16
BACKENDS = ("auto", "torch", "openvino")  # what runs the networks (runtime.py); auto: the faster, measured
BF16_UNITS = ("avx512_bf16", "amx_bf16")  # x86 flags of CPUs that compute bfloat16 in hardware
VNNI_UNITS = ("avx512_vnni", "avx_vnni")  # x86 flags of CPUs with int8 dot products
# Forces what ``auto`` resolves to (fp32 or bf16) whatever the CPU: CI runs the fast suite both ways
# (`make test-auto`), so that a test that silently assumes one meaning of auto fails on every machine.
AUTO_OVERRIDE = "ITERSEG_AUTO_PRECISION"
AUTO_BACKEND_OVERRIDE = "ITERSEG_AUTO_BACKEND"  # the same for ``--backend auto`` (torch or openvino)


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


@functools.lru_cache(maxsize=1)
def cpu_model():
    """The CPU's model name from /proc/cpuinfo ('unknown' where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            line = next((line for line in info if line.startswith("model name")), "")
    except OSError:
        return "unknown"
    return line.split(":", 1)[1].strip() if ":" in line else "unknown"


def cpu_kind():
    """'amx', 'avx512_bf16', 'avx2' or 'unknown': the CPU kinds whose fastest precision differs."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return "avx2" if "avx2" in flags else "unknown"


def forced_auto(variable=AUTO_OVERRIDE):
    """What $ITERSEG_AUTO_PRECISION forces ``--precision auto`` to ('fp32' or 'bf16'), or with
    ``variable`` AUTO_BACKEND_OVERRIDE what $ITERSEG_AUTO_BACKEND forces ``--backend auto`` to
    ('torch' or 'openvino'); None when unset."""
    allowed, option = (("fp32", "bf16"), "--precision") if variable == AUTO_OVERRIDE else (BACKENDS[1:], "--backend")
    forced = os.environ.get(variable, "").strip()
    if forced and forced not in allowed:
        raise InputError(f"{variable} must be {' or '.join(allowed)}, got {forced!r}; unset it to let "
                         f"{option} auto decide from the CPU.")
    return forced or None


def auto_choice():
    """(precision, reason) that ``auto`` takes from $ITERSEG_AUTO_PRECISION or the flags alone;
    precision 'probe' where the flags do not decide (AVX-512 BF16 without AMX: bf16 is faster on
    some such CPUs, not on all). Never int8 (it needs an int8 bundle) and, unless forced, never bf16
    without bf16 units."""
    forced = forced_auto()
    if forced:
        return forced, f"auto: forced by {AUTO_OVERRIDE}"
    kind = cpu_kind()
    if kind == "amx":
        return "bf16", "auto: AMX bf16 units"
    if kind == "avx512_bf16":
        return "probe", "auto: AVX-512 BF16 without AMX"
    if kind == "avx2":
        return "fp32", "auto: no bf16 units (AVX2)"
    return "fp32", "auto: CPU features unknown" if not cpu_flags() else "auto: no bf16 units"
