"""How a network is run on the CPU: numeric precision and optional ``torch.compile``.

Glossary
    x        float32 (N, C, h, w) normalised image batch
    logits   float32 (N, K, h, w), whatever precision computed them
Precisions
    fp32     the network as trained, float32 throughout (the reference)
    bf16     bfloat16 autocast with channels_last tensors: on CPUs with AVX-512 BF16 or AMX units
             several times faster; probabilities differ from fp32 by a few 1e-3. On CPUs without
             them (AVX2 only) bf16 is emulated and many times SLOWER than fp32.
    int8     an int8 bundle's networks (quantize.py: PT2E quantization, calibrated ranges), always
             compiled by torch.compile, which lowers them to oneDNN int8 kernels; the first call
             of each input shape compiles (tens of seconds on a 2-core CPU)
"""
import copy
import logging

import torch

from ..errors import InputError
from .cpu import PRECISIONS, lacks_bf16_units
from .quantize import int8_network

log = logging.getLogger(__name__)


def warn_if_emulated(precision):
    """Log a warning when bf16 is asked for on a CPU that lacks bf16 units."""
    if precision == "bf16" and lacks_bf16_units():
        log.warning("this CPU has no bf16 units (AVX-512 BF16 or AMX): bf16 is emulated and several times "
                    "slower than fp32; use --precision fp32, or int8 with a bundle from `iterseg quantize`.")


def check_precision(precision):
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    return precision


class Runner:
    """A network prepared for one precision; call it like the network: x -> float32 logits.

    The bf16 runner holds its own channels_last copy of the network, so the float32 network the
    bundle holds is never changed. ``compile`` wraps the network in ``torch.compile`` (inductor):
    every new input shape then costs a compilation of tens of seconds on a 2-core CPU, so it only
    pays for long runs over images of one size (see benchmarks/README.md).
    """

    def __init__(self, model, precision="fp32", compile=False, int8_ranges=None):
        self.config = model.config
        self.precision = check_precision(precision)
        if precision == "bf16":
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        dynamic = False  # float networks: one compilation per input shape
        if precision == "int8":
            # int8 needs the compiler for its kernels; after a second input shape it compiles one
            # graph for all shapes (images of many sizes would otherwise recompile each time)
            model, compile, dynamic = int8_network(model, int8_ranges), True, None
        self.network = torch.compile(model, dynamic=dynamic) if compile else model

    def __call__(self, x):
        if self.precision == "int8":
            return self._int8(x)
        if self.precision == "fp32":
            return self.network(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.network(x.contiguous(memory_format=torch.channels_last)).float()

    def _int8(self, x):
        """The exported int8 graph takes sides of at least two size multiples (torch.export
        specialises a side of one multiple): a one-multiple side is mirrored to two and cropped back."""
        multiple = self.config.size_multiple
        height, width = x.shape[2:]
        pad_h, pad_w = multiple if height == multiple else 0, multiple if width == multiple else 0
        if pad_h or pad_w:
            mode = "reflect" if min(height, width) > 1 else "replicate"
            x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self.network(x)[:, :, :height, :width]
