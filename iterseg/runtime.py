"""How a network is run on the CPU: numeric precision and optional ``torch.compile``.

Glossary
    x        float32 (N, C, h, w) normalised image batch
    logits   float32 (N, K, h, w), whatever precision computed them
Precisions
    fp32     the network as trained, float32 throughout (the reference)
    bf16     bfloat16 autocast with channels_last tensors: on CPUs with AVX-512 BF16 or AMX units
             several times faster; probabilities differ from fp32 by a few 1e-3
"""
import copy

import torch

from .errors import InputError

PRECISIONS = ("fp32", "bf16")


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

    def __init__(self, model, precision="fp32", compile=False):
        self.config = model.config
        self.precision = check_precision(precision)
        if precision == "bf16":
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        self.network = torch.compile(model, dynamic=False) if compile else model

    def __call__(self, x):
        if self.precision == "fp32":
            return self.network(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.network(x.contiguous(memory_format=torch.channels_last)).float()
