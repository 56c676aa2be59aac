"""How a network is run on the CPU: numeric precision, backend and optional ``torch.compile``.

Glossary
    x        float32 (N, C, h, w) normalised image batch
    logits   float32 (N, K, h, w), whatever precision computed them
Precisions
    auto     the fastest of fp32 and bf16 on this CPU, decided once per process (``resolve``):
             fp32 without bf16 units (AVX2) or where the features are unknown, bf16 with AMX, and
             with AVX-512 BF16 but no AMX whichever a short measured probe finds faster (cached
             on disk per CPU model and torch version). Never int8, never slower than fp32.
    fp32     the network as trained, float32 throughout (the reference), run with batch norm folded
             into the convolutions and channels_last tensors (1.4-1.8x faster than as trained on
             an AVX2 CPU; outputs equal to ~1e-5)
    bf16     bfloat16 autocast with channels_last tensors: on CPUs with AVX-512 BF16 or AMX units
             several times faster; probabilities differ from fp32 by a few 1e-3. On CPUs without
             them (AVX2 only) bf16 is emulated and many times SLOWER than fp32.
    int8     an int8 bundle's networks (quantize.py, calibrated ranges). On OpenVINO (backend
             openvino) int8 convolutions over the calibrated input ranges, the rest in the float
             precision auto resolves to (openvino_backend.unet_graph). On torch, PyTorch's eager
             x86 int8 kernels (FX graph mode): no compilation, the first image costs what later
             ones do; with compile=True (or where this torch quantizes differently from the
             calibration) the PT2E network lowered by torch.compile to oneDNN int8 kernels
             instead: the first call of each input shape then compiles (minutes on a 2-core CPU)
Backends (what runs a network; torch.compile always runs on torch)
    auto     openvino where it is installed and a short measured probe finds it faster than torch
             in the resolved precision on this CPU (cached on disk per CPU model, torch and
             OpenVINO version and precision), else torch. Never slower than torch. For int8 the
             probe weighs OpenVINO's int8 against its float run in the precision auto resolves to
             (int8 is what the user asked for; it must also pay), and an int8 bundle whose
             OpenVINO int8 lost more than INT8_DICE_LIMIT Dice when it was made runs on torch
             (bundle.py); the report's backend_reason says which and why.
    torch    PyTorch's oneDNN kernels (the reference)
    openvino the network compiled by OpenVINO's CPU plugin (openvino_backend.py), one compiled
             model for every input shape; fp32 outputs equal torch's to ~1e-5
"""
import functools
import logging
import threading
import time

import torch

from ..errors import InputError, ModelError
from ..kernels import warm_up
from . import cpu, openvino_backend
from .cache import remembered
from .cpu import BACKENDS, CONCRETE_PRECISIONS, PRECISIONS, lacks_bf16_units
from .quantize import eager_int8_network, fold_batch_norm, input_ranges, int8_network
from .unet import UNet

log = logging.getLogger(__name__)
PROBE_MARGIN = 1.15  # with AVX-512 BF16 but no AMX, bf16 must beat fp32 by this factor to be picked
BACKEND_MARGIN = 1.05  # OpenVINO must beat torch by this factor in the probe to be picked by auto
INT8_DICE_LIMIT = 0.005  # OpenVINO int8 may cost at most this much Dice (measured by `iterseg quantize`)
NO_INT8_INPUTS = ("this int8 bundle has no OpenVINO calibration (made by an older iterseg): run `iterseg quantize` "
                  "again for OpenVINO's int8")
_DECIDING = threading.RLock()  # what auto means is decided (and probed) by one thread at a time


class Choice(str):
    """A concrete precision or backend name ('fp32', 'openvino', ...) that remembers why it was chosen
    (``reason``); it compares, hashes and serialises (JSON, pickle) as the plain name."""

    def __new__(cls, name, reason):
        made = super().__new__(cls, name)
        made.reason = reason
        return made

    def __reduce__(self):
        return Choice, (str(self), self.reason)

    def __deepcopy__(self, memo):
        return self


def warn_if_emulated(precision):
    """Log a warning when bf16 is asked for on a CPU that lacks bf16 units."""
    if precision == "bf16" and lacks_bf16_units():
        log.warning("this CPU has no bf16 units (AVX-512 BF16 or AMX): bf16 is emulated and several times "
                    "slower than fp32; use --precision auto or fp32, or int8 with a bundle from `iterseg quantize`.")


def check_precision(precision):
    """``precision`` as a concrete name (a Choice: 'auto' resolved for this CPU), or InputError."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(CONCRETE_PRECISIONS)}, got {precision!r}; "
                         "or auto (the default) to let iterseg pick the fastest for this CPU.")
    return resolve(precision)


def resolve(precision):
    """'auto' -> the precision this CPU runs fastest (decided once per process); a concrete name ->
    itself, with reason 'asked' unless it already carries one."""
    if precision == "auto":
        with _DECIDING:  # threads sharing a Segmenter must not each run the probe and decide apart
            return _auto(cpu.cpu_flags(), cpu.forced_auto())
    return precision if isinstance(precision, Choice) else Choice(precision, "asked")


def report(precision, backend="torch", compile=False):
    """{"precision", "precision_reason", "backend", "backend_reason"}: what ran and why, for a run's report."""
    chosen = resolve(precision)
    runs_on = check_backend(backend, chosen, compile)
    return {"precision": str(chosen), "precision_reason": chosen.reason, "backend": str(runs_on),
            "backend_reason": runs_on.reason}


def ran_on(runner):
    """{"backend", "backend_reason"} of what ``runner`` actually runs on (a bundle's int8 may run on
    torch where the settings alone would say openvino), or {} for a user's network run as given."""
    backend = getattr(runner, "backend", None)
    return {"backend": str(backend), "backend_reason": backend.reason} if isinstance(backend, Choice) else {}


@functools.lru_cache(maxsize=8)
def _auto(flags, forced):
    """What ``auto`` means on a CPU with these flags, or as forced (the arguments only key the cache)."""
    choice, reason = cpu.auto_choice()
    if choice != "probe":
        return Choice(choice, reason)
    speedup = bf16_speedup()
    choice = "bf16" if speedup >= PROBE_MARGIN else "fp32"
    return Choice(choice, f"{reason}: bf16 measured {speedup:.2f}x fp32")


# --- the backend ------------------------------------------------------------------------------------

def check_backend(backend, precision="auto", compile=False, int8_blocker=None):
    """``backend`` as a concrete Choice ('torch' or 'openvino', with its reason) for networks run in
    ``precision`` (resolved here) with or without torch.compile, or InputError. int8_blocker: why the
    bundle's int8 should not run on OpenVINO (bundle.py), or None. A Choice already made (a
    Segmenter's default) stands unless this precision, compile or int8_blocker rules OpenVINO out;
    an auto Choice made for floats is made again for int8."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if backend == "torch":
        return backend if isinstance(backend, Choice) else Choice("torch", "asked")
    precision = check_precision(precision)
    blocker = openvino_blocker(precision, compile) or (int8_blocker if precision == "int8" else None)
    auto_made = isinstance(backend, Choice) and backend.reason.startswith("auto")
    asked = asked_for_openvino(backend)
    if blocker and asked:
        raise InputError(f"the openvino backend cannot run this: {blocker}; use --backend torch or auto.")
    if blocker:
        return Choice("torch", f"auto: {blocker}")
    if isinstance(backend, Choice) and not (auto_made and precision == "int8"):
        return backend
    if asked:
        return Choice("openvino", "asked")
    with _DECIDING:
        return _auto_backend(str(precision), cpu.forced_auto(cpu.AUTO_BACKEND_OVERRIDE))


def asked_for_openvino(backend):
    """True when the user asked for OpenVINO (not when ``auto`` chose it)."""
    return backend == "openvino" and not (isinstance(backend, Choice) and backend.reason.startswith("auto"))


def openvino_blocker(precision, compile):
    """Why OpenVINO cannot run networks in ``precision`` (concrete) with ``compile``, or None."""
    if compile:
        return "torch.compile was asked for"
    if not openvino_backend.installed():
        return "the openvino package is not installed (pip install openvino)"
    return None


@functools.lru_cache(maxsize=8)
def _auto_backend(precision, forced):
    """What ``--backend auto`` means for float networks in ``precision`` (the arguments key the cache)."""
    if forced:
        return Choice(forced, f"auto: forced by {cpu.AUTO_BACKEND_OVERRIDE}")
    if precision == "int8":
        speedup, floats = openvino_int8_speedup(), str(resolve("auto"))
        if speedup >= BACKEND_MARGIN:
            return Choice("openvino", f"auto: OpenVINO int8 measured {speedup:.2f}x OpenVINO {floats} on this CPU")
        return Choice("torch", f"auto: OpenVINO int8 measured only {speedup:.2f}x OpenVINO {floats} on this CPU, "
                               "so int8 runs on PyTorch's kernels")
    speedup = openvino_speedup(precision)
    choice = "openvino" if speedup >= BACKEND_MARGIN else "torch"
    return Choice(choice, f"auto: OpenVINO measured {speedup:.2f}x torch in {precision}")


def openvino_speedup(precision):
    """torch time / OpenVINO time of a small U-Net in ``precision`` on this CPU, from the disk cache
    (keyed by CPU model, torch and OpenVINO versions and precision) or measured now (about a second)."""
    key = (f"{cpu.cpu_model()} | torch {torch.__version__} | openvino {openvino_backend.version()} | "
           f"{precision}")
    return float(remembered("probe.json", key, lambda: measure_openvino_speedup(precision)))


def measure_openvino_speedup(precision, repeats=3, side=128):
    """torch seconds / OpenVINO seconds (best of ``repeats``) of a width-8 U-Net of random weights on
    2 x 3 x side x side inputs (about 0.5 GMAC per pass at the default side)."""
    torch.manual_seed(0)
    net = UNet(width=8).eval()
    x = torch.randn(2, 3, side, side)
    on_torch, on_openvino = Runner(net, precision), Runner(net, precision, backend="openvino")
    with torch.inference_mode():
        return best_seconds(lambda: on_torch(x), repeats) / best_seconds(lambda: on_openvino(x), repeats)


def openvino_int8_speedup():
    """OpenVINO float time (in the precision auto resolves to) / OpenVINO int8 time of a small U-Net
    on this CPU, from the disk cache (keyed by CPU model, OpenVINO version and that precision) or
    measured now (about two seconds)."""
    floats = str(resolve("auto"))
    key = f"{cpu.cpu_model()} | openvino {openvino_backend.version()} | int8 against {floats}"
    return float(remembered("probe.json", key, lambda: measure_openvino_int8_speedup(floats)))


def measure_openvino_int8_speedup(floats, repeats=3, side=128):
    """OpenVINO ``floats`` seconds / OpenVINO int8 seconds (best of ``repeats``) of a width-16 U-Net of
    random weights, calibrated on its own input, on 4 x 3 x side x side inputs (about 4 GMAC per pass)."""
    torch.manual_seed(0)
    net = fold_batch_norm(UNet(width=16).eval())
    x = torch.randn(4, 3, side, side)
    inputs = input_ranges(net, [x])
    on_float = Runner(net, floats, backend=Choice("openvino", "probe"))
    on_int8 = Runner(net, "int8", backend=Choice("openvino", "probe"), int8_inputs=inputs)
    with torch.inference_mode():
        return best_seconds(lambda: on_float(x), repeats) / best_seconds(lambda: on_int8(x), repeats)


def best_seconds(run, repeats):
    """The shortest of ``repeats`` timed calls of ``run()``, after one untimed warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


# --- the precision probe ----------------------------------------------------------------------------

def bf16_speedup():
    """fp32 time / bf16 time of a small conv net on this CPU, from the disk cache (cache.py; keyed by
    CPU model and torch version) or measured now (a few hundred ms) and kept."""
    key = f"{cpu.cpu_model()} | torch {torch.__version__}"
    return float(remembered("probe.json", key, measure_bf16_speedup))


def measure_bf16_speedup(repeats=3, side=96):
    """fp32 seconds / bf16 seconds (best of ``repeats``) of three 3x3 convolutions, 32 channels, on
    4 x side x side channels_last inputs (about 1 GMAC per pass at the default side: a few hundred
    ms in all where bf16 runs in hardware)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU())
                                for _ in range(3)]).eval().to(memory_format=torch.channels_last)
    x = torch.randn(4, 32, side, side).contiguous(memory_format=torch.channels_last)

    def best(bf16):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return best_seconds(lambda: net(x), repeats)  # the warm-up lets oneDNN pick its kernels

    return best(False) / best(True)


# --- threads ----------------------------------------------------------------------------------------

def warm_up_kernels():
    """Load the numba kernels (``kernels.warm_up``) and keep torch's thread count. The first parallel
    kernel of a process starts numba's OpenMP threads and sets OpenMP's thread count, which torch
    shares, to numba's (NUMBA_NUM_THREADS, the CPU count): without this, ``torch.set_num_threads(1)``
    or OMP_NUM_THREADS=1 (as Dask gives its workers) silently became all cores after loading a model."""
    threads = torch.get_num_threads()
    warm_up()
    torch.set_num_threads(threads)


# --- running a network ------------------------------------------------------------------------------

class Runner:
    """A network prepared for one precision and backend; call it like the network: x -> float32 logits.

    fp32 and bf16 runners hold their own copy of the network with batch norm folded into the
    convolutions (on torch in channels_last; on OpenVINO compiled by it, backend 'openvino'), so
    the network the bundle holds is never changed. ``compile``
    wraps the network in ``torch.compile`` (inductor): every new input shape then costs a compilation
    of tens of seconds on a 2-core CPU, so it only pays for long runs over images of one size (see
    benchmarks/README.md).
    """

    def __init__(self, model, precision="fp32", compile=False, int8_ranges=None, backend="torch", int8_inputs=None):
        self.config = model.config
        self.precision = check_precision(precision)
        self.backend = check_backend(backend, self.precision, compile,
                                     NO_INT8_INPUTS if int8_inputs is None else None)
        dynamic = False  # float networks: one compilation per input shape
        self.compiled_int8 = False
        if self.precision == "int8" and self.backend == "openvino":
            graph = openvino_backend.unet_graph(fold_batch_norm(model), int8_inputs)
            self.network = openvino_backend.OpenVinoNetwork(graph, resolve("auto"), torch.get_num_threads())
            return
        if self.precision == "int8":
            model, compile, dynamic = self._int8_network(model, int8_ranges, compile)
        elif self.backend == "openvino":
            graph = openvino_backend.unet_graph(fold_batch_norm(model))
            self.network = openvino_backend.OpenVinoNetwork(graph, self.precision, torch.get_num_threads())
            return
        else:
            model = fold_batch_norm(model).to(memory_format=torch.channels_last)
        self.network = torch.compile(model, dynamic=dynamic) if compile else model

    def release_memory(self):
        """Give back what the network keeps between calls (OpenVINO's activation buffers; torch keeps none)."""
        if self.backend == "openvino":
            self.network.release_memory()

    def __call__(self, x):
        if self.backend == "openvino":
            return self.network(x)
        if self.precision == "int8":
            return self._int8(x)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.network(x).float().contiguous()

    def _int8_network(self, model, ranges, compile):
        """(network, compile, dynamic) for int8: PyTorch's eager x86 int8 kernels (no compilation)
        unless ``compile`` is asked or this torch quantizes differently from the calibration; else
        PT2E lowered by torch.compile, which after a second input shape compiles one graph for
        all shapes (images of many sizes would otherwise recompile each time)."""
        if not compile:
            try:
                return eager_int8_network(model, ranges), False, False
            except ModelError as error:
                log.warning("%s Compiling int8 instead (minutes on the first image).", error)
        self.compiled_int8 = True
        return int8_network(model, ranges), True, None

    def _int8(self, x):
        """The exported int8 graph takes sides of at least two size multiples (torch.export
        specialises a side of one multiple): a one-multiple side is mirrored to two and cropped back."""
        if not self.compiled_int8:
            return self.network(x)
        multiple = self.config.size_multiple
        height, width = x.shape[2:]
        pad_h, pad_w = multiple if height == multiple else 0, multiple if width == multiple else 0
        if pad_h or pad_w:
            mode = "reflect" if min(height, width) > 1 else "replicate"
            x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self.network(x)[:, :, :height, :width]

