"""Users' own networks in the one engine: a coarse and a fine callable presented as a bundle's (S1, S2)
runners, and an image tensor as a source, so that loop.two_stage runs them unchanged
(``iterseg.two_stage_inference`` in custom.py is the public entry point).

Glossary
    x         float32 (N, C, h, w) what a user's network is given: the image's values (a tensor's as
              they are, an array's mapped to [0, 1] by source.unit_range), minus ``mean``, over ``std``
    output    what a user's callable returns for x: (N, K, h, w) logits or probabilities (``outputs``)
    logits    float32 (N, K, h, w) what a runner returns to the engine. Probabilities become logits here
              and only here (``probs_to_logits``), so that the engine's sigmoid (K == 1) / softmax (K > 1)
              gives them back (up to float rounding; clamped to [PROB_FLOOR, 1 - PROB_FLOOR])
    macs      multiply-accumulates counted by fvcore on the module at the padded input shape;
              a plain function cannot be counted (the run's ``macs`` is then None)
"""
import warnings

import numpy as np
import torch

from ..errors import InputError
from .cost import align_up
from .source import ArraySource

OUTPUTS = ("logits", "probs")
PROB_FLOOR = 1e-12
PROBS_SLACK = 1e-3  # probabilities may stray this far outside [0, 1] (float rounding) before it is an error
PROBE_SIDE = 32  # side (rounded up to the size multiple) of the zero input that finds K before the run
# fvcore traces a module on the input shape itself up to this many pixels; above it (a baseline over a
# large image) on a COUNT_SIDE square and scales by pixel count, exact for a fully convolutional network
COUNT_PIXELS = 1024 * 1024
COUNT_SIDE = 1024


def probs_to_logits(probs):
    """(N, K, h, w) probabilities -> float32 logits whose sigmoid (K == 1) or softmax (K > 1) they are."""
    p = probs.double().clamp(PROB_FLOOR, 1 - PROB_FLOOR)
    return (torch.logit(p) if p.shape[1] == 1 else torch.log(p)).float()


def first_line(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


class NetworkConfig:
    """What the engine reads of a runner's ``config`` (model/unet.UNetConfig's names), for a user's network.

    width 0: stage 1 always runs whole (s1_chunk), since a user's network has no known receptive radius."""
    width = 0
    receptive_radius = 0

    def __init__(self, in_channels, size_multiple, module):
        self.in_channels = in_channels
        self.size_multiple = size_multiple
        self.out_channels = None  # K, set by Network.probe
        self.module = module
        self.scaled = set()  # input shapes whose count was scaled from a COUNT_SIDE square
        self._unsupported = set()
        self._counts = {}

    @property
    def countable(self):
        return self.module is not None

    def count_macs(self, height, width):
        """MACs of one pass on an input padded from height x width (engine/cost.count_macs calls this).
        A plain function: the padded pixel count, a stand-in the caller replaces by None."""
        height, width = align_up(height, self.size_multiple), align_up(width, self.size_multiple)
        if not self.countable:
            return height * width
        if height * width <= COUNT_PIXELS:
            return self._fvcore(height, width)
        side_h, side_w = min(height, align_up(COUNT_SIDE, self.size_multiple)), min(width, align_up(
            COUNT_SIDE, self.size_multiple))
        self.scaled.add((height, width))
        return self._fvcore(side_h, side_w) * (height * width) // (side_h * side_w)

    def uncounted_ops(self):
        """Operators fvcore saw in the module but did not count."""
        return sorted(self._unsupported)

    def _fvcore(self, height, width):
        if (height, width) not in self._counts:
            self._counts[height, width] = self._trace(height, width)
        return self._counts[height, width]

    def _trace(self, height, width):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore.nn imports torch.jit.script; tracing warns
            from fvcore.nn import FlopCountAnalysis
            parameter = next(self.module.parameters(), None)
            device = parameter.device if parameter is not None else "cpu"
            x = torch.zeros(1, self.in_channels, height, width, device=device)
            with torch.inference_mode():
                analysis = FlopCountAnalysis(self.module, x)
                analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                total = int(analysis.total())
                self._unsupported.update(analysis.unsupported_ops())
        return total


class Network:
    """A user's network as a runner (model/runtime.Runner's interface): ``config`` and x -> logits.
    role: 'coarse' or 'fine', for messages; outputs: 'logits' or 'probs' (what ``function`` returns);
    count: let fvcore count a module's MACs (``config.countable``)."""

    def __init__(self, role, function, outputs, in_channels, size_multiple, count=True):
        if not callable(function):
            raise InputError(f"{role} must be a torch module or a function of a (N, C, h, w) tensor, "
                             f"got {type(function).__name__}.")
        if outputs not in OUTPUTS:
            raise InputError(f"outputs must be 'logits' or 'probs' (or a pair of them: coarse, fine), "
                             f"got {outputs!r}.")
        self.role, self.function, self.outputs = role, function, outputs
        module = function if isinstance(function, torch.nn.Module) else None
        parameter = next(module.parameters(), None) if module is not None else None
        self.device = parameter.device if parameter is not None else None
        self.module = module
        self.config = NetworkConfig(in_channels, size_multiple, module if count else None)

    def run_on_openvino(self, precision):
        """From now on, run the module through OpenVINO (model/openvino_backend.py) in ``precision``;
        fvcore still counts the module. InputError for a plain function or a module off the CPU."""
        from ..model import openvino_backend
        if self.module is None or (self.device is not None and self.device.type != "cpu"):
            raise InputError(f"backend 'openvino' needs the {self.role} network as a torch module on the CPU; "
                             "pass backend='torch' to run it as given.")
        try:
            graph = openvino_backend.converted_module(self.module, self.config.in_channels)
        except Exception as exc:  # OpenVINO's converter meets what it cannot convert
            raise InputError(f"OpenVINO could not convert the {self.role} network ({first_line(exc)}); pass "
                             "backend='torch' to run it as given.") from exc
        self.function = openvino_backend.OpenVinoNetwork(graph, precision, torch.get_num_threads(),
                                                         channels_last=False)
        self.device = None

    def release_memory(self):
        """Give back what OpenVINO keeps between calls of a converted module (nothing otherwise)."""
        if hasattr(self.function, "release_memory"):
            self.function.release_memory()

    @property
    def training(self):
        """True for a torch module left in training mode (batch norm, dropout behave differently)."""
        return self.module is not None and self.module.training

    def probe(self):
        """Run once on a zero input of side PROBE_SIDE (rounded up to the size multiple): sets and returns K."""
        side = align_up(PROBE_SIDE, self.config.size_multiple)
        with torch.inference_mode():
            return self(torch.zeros(1, self.config.in_channels, side, side)).shape[1]

    def __call__(self, x):
        """float32 logits (N, K, h, w) of ``x`` (N, C, h, w), on the CPU; InputError on a bad output."""
        try:
            output = self.function(x if self.device is None else x.to(self.device))
        except Exception as exc:  # the user's code: say which network and input, keep the cause chained
            raise InputError(f"the {self.role} network failed on an input of shape {tuple(x.shape)} "
                             f"({first_line(exc)}); if it needs sides divisible by a number, pass "
                             "size_multiple=.") from exc
        return self.to_logits(self.check(x, output))

    def check(self, x, output):
        """``output`` as a float32 CPU tensor, or InputError saying what shape was expected or that it is
        not finite."""
        if not isinstance(output, torch.Tensor):
            raise InputError(f"the {self.role} network must return a torch tensor, got {type(output).__name__}.")
        channels = self.config.out_channels
        expected = f"(N, K, h, w) = ({x.shape[0]}, {channels or 'K'}, {x.shape[2]}, {x.shape[3]})"
        if (output.ndim != 4 or output.shape[0] != x.shape[0] or tuple(output.shape[2:]) != tuple(x.shape[2:])
                or output.shape[1] < 1 or (channels is not None and output.shape[1] != channels)):
            raise InputError(f"the {self.role} network returned shape {tuple(output.shape)} for an input of shape "
                             f"{tuple(x.shape)}; it must return {expected}.")
        if self.config.out_channels is None:
            self.config.out_channels = int(output.shape[1])
        output = output.detach().float().cpu().as_subclass(torch.Tensor)  # a MONAI MetaTensor as plain
        if not torch.isfinite(output).all():
            raise InputError(f"the {self.role} network returned NaN or infinite values for an input of shape "
                             f"{tuple(x.shape)}; check its weights and that the input is scaled as it expects.")
        return output

    def to_logits(self, output):
        if self.outputs == "logits":
            return output
        low, high = float(output.min()), float(output.max())
        if low < -PROBS_SLACK or high > 1 + PROBS_SLACK:
            raise InputError(f"the {self.role} network returned values in [{low:.3g}, {high:.3g}] with "
                             "outputs='probs'; probabilities lie in [0, 1]: pass outputs='logits'.")
        return probs_to_logits(output)


class Networks:
    """A coarse and a fine Network with what is needed to feed them, read by the engine as a
    model/bundle.Bundle (S1 = coarse at ``s1_scale``, S2 = fine on windows, baseline = fine over the image)."""
    name = "own networks"
    window = None
    patches = None
    context = None
    reference = None
    conditioned = False
    baseline_kind = "s2"

    def __init__(self, coarse, fine, mean, std, s1_scale):
        self.s1, self.s2 = coarse, fine
        self.mean = self.s2_mean = tuple(mean)
        self.std = self.s2_std = tuple(std)
        self.s1_scale = s1_scale
        self.provenance = {}

    @property
    def in_channels(self):
        return self.s1.config.in_channels

    def normalisation(self, config=None):
        """(mean, std) of both networks' inputs (as Bundle.normalisation; a user's fine network is never
        conditioned)."""
        return self.mean, self.std

    @property
    def countable(self):
        """True when both networks are torch modules, whose MACs fvcore counts."""
        return self.s1.config.countable and self.s2.config.countable

    def compile_for(self, backend, precision):
        """Run both networks on ``backend`` ('torch': as given; 'openvino' or 'auto', see
        model/runtime.check_backend) in ``precision``: the runtime report of OpenVINO (precision,
        backend and why), or None where the networks run as given."""
        from ..model.runtime import check_backend, check_precision, report
        if backend == "torch":
            return None
        precision = check_precision(precision)
        chosen = check_backend(backend, precision)
        if chosen == "torch":
            return None
        for network in (self.s1, self.s2):
            network.run_on_openvino(precision)
        return report(precision, chosen)

    def runners(self, precision=None, compile=False, backend=None):
        """(coarse, fine) as they are: a user's networks run as given (no precision, backend or compile)."""
        return self.s1, self.s2

    def probe(self):
        """K of both networks (one zero-input pass each), or InputError when they disagree."""
        coarse, fine = self.s1.probe(), self.s2.probe()
        if coarse != fine:
            raise InputError(f"the coarse network returns {coarse} channels but the fine one {fine}; "
                             "both must return the same K (1 for binary, else one per class).")
        return fine


class TensorSource(ArraySource):
    """An image whose values the networks take as they are (a user's tensor): no [0, 1] mapping and
    no channel fitting, unlike ArraySource; ``image`` float32 (H, W, C)."""

    def __init__(self, image):
        self.pixels = np.ascontiguousarray(image, dtype=np.float32)
        self.shape = self.pixels.shape[:2]
        self.stored_shape = self.pixels.shape
        self.channels = self.pixels.shape[2]
        self.notes = []

    def to_unit(self, pixels):
        return np.ascontiguousarray(pixels, dtype=np.float32)
