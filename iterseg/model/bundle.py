"""The model bundle: S1 + S2 (+ the baseline's reference network) and everything needed to use
them (normalisation, stage-1 scale, class names and colours, int8 calibration); file format in store.py."""
import dataclasses
import threading
from dataclasses import dataclass, field

from ..errors import ModelError
from .runtime import (
    INT8_DICE_LIMIT,
    NO_INT8_INPUTS,
    Runner,
    asked_for_openvino,
    check_backend,
    check_precision,
    warn_if_emulated,
)
from .unet import UNet


def default_palette(num_classes):
    """K distinct RGB colours: black and white for a binary model, else the PASCAL VOC palette
    (class 0 black, then the bit-interleaved colours street-scene tools also use)."""
    if num_classes == 2:
        return ((0, 0, 0), (255, 255, 255))
    colours = []
    for index in range(num_classes):
        rgb, value = [0, 0, 0], index
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        colours.append(tuple(rgb))
    return tuple(colours)


@dataclass
class Bundle:
    """Stage-1 and stage-2 networks plus what is needed to feed them.

    mean, std: per input channel, for images scaled to [0, 1] (uint8 / 255, uint16 / 65535).
    s1_scale: stage 1 sees the image resized by this factor. class_names: one per output class
    (two for a binary model, whose network has a single sigmoid output). palette: an RGB triple per
    class, for colour masks (default: ``default_palette``). window: the side (pixels) of the windows
    stage 2 refines unless the caller gives one, so that ``patches`` only counts windows; None keeps
    the source paper's rule, ceil(max(H, W) / patches), which ties the side to the count.
    patches: how many windows ``predict`` refines unless told (None: engine.settings.DEFAULT_PATCHES),
    chosen from the bundle's validation curve (what it measured is in ``provenance["default"]``).
    context: pixels of image stage 2 sees around each window unless told (None: 0), the smallest at
    which stage 2 over every window gives stage 2's whole-image mask (training/defaults.py).
    mpp: micrometres per pixel of the images it was trained on (the data spec's ``mpp``), or None:
    an image file whose metadata says its pixels are finer is then run at this pixel size, on the
    nearest pyramid level (disk/resample.py), as pathology tools do.

    A *conditioned* S2 takes the stage-1 probabilities of its window (K' = S1's output channels,
    mapped to [-1, 1]) as extra input channels after the image's. ``reference`` is then the
    unconditioned full-resolution network the baseline runs; without one, the baseline of a
    conditioned bundle is stage 1 plus S2 over the whole image (see ``baseline_kind``).
    """
    s1: UNet
    s2: UNet
    mean: tuple
    std: tuple
    s1_scale: float = 0.125
    class_names: tuple = ("background", "foreground")
    name: str = "unnamed"
    provenance: dict = field(default_factory=dict)
    reference: UNet | None = None
    palette: tuple | None = None
    int8_ranges: dict | None = None
    int8_inputs: dict | None = None
    window: int | None = None
    patches: int | None = None
    context: int | None = None
    mpp: float | None = None
    _runners: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _runners_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self):
        for network in (self.s1, self.s2, self.reference):
            if network is not None:
                network.eval()
        c = self.in_channels
        if self.s2.config.in_channels not in (c, c + self.s1.config.out_channels):
            raise ModelError(f"bundle {self.name!r}: S2 must take the image's {c} channels, or those plus "
                             f"S1's {self.s1.config.out_channels} output channels (a conditioned S2).")
        if self.reference is not None and self.reference.config.in_channels != c:
            raise ModelError(f"bundle {self.name!r}: the reference network must take the image's {c} channels.")
        if len(self.mean) != c or len(self.std) != c:
            raise ModelError(f"bundle {self.name!r}: mean and std need {c} values each.")
        if not 0 < self.s1_scale <= 1:
            raise ModelError(f"bundle {self.name!r}: s1_scale must be in (0, 1], got {self.s1_scale}.")
        outputs = {net.config.out_channels for net in (self.s1, self.s2, self.reference) if net is not None}
        if len(outputs) != 1 or len(self.class_names) != max(2, outputs.pop()):
            raise ModelError(f"bundle {self.name!r}: class names do not match the networks' outputs.")
        self.palette = tuple(tuple(int(v) for v in colour) for colour in
                             (self.palette or default_palette(len(self.class_names))))
        if len(self.palette) != len(self.class_names) or any(
                len(colour) != 3 or not all(0 <= v <= 255 for v in colour) for colour in self.palette):
            raise ModelError(f"bundle {self.name!r}: the palette needs one RGB triple (0-255) per class.")
        if self.window is not None and (isinstance(self.window, bool) or not isinstance(self.window, int)
                                        or not 1 <= self.window <= 2 ** 16):
            raise ModelError(f"bundle {self.name!r}: window must be a side in pixels (1 to 65536), "
                             f"got {self.window!r}.")
        if self.context is not None and (isinstance(self.context, bool) or not isinstance(self.context, int)
                                         or not 0 <= self.context <= 2 ** 12):
            raise ModelError(f"bundle {self.name!r}: context must be pixels (0 to 4096), got {self.context!r}.")
        if self.mpp is not None and (isinstance(self.mpp, bool) or not isinstance(self.mpp, (int, float))
                                     or not 0 < self.mpp < float("inf")):
            raise ModelError(f"bundle {self.name!r}: mpp must be micrometres per pixel (a positive number), "
                             f"got {self.mpp!r}.")
        if self.patches is not None and (isinstance(self.patches, bool) or not isinstance(self.patches, int)
                                         or not 0 <= self.patches <= 2 ** 20):
            raise ModelError(f"bundle {self.name!r}: patches must be a window count (0 to 1048576), "
                             f"got {self.patches!r}.")

    @property
    def in_channels(self):
        """Image channels the bundle takes (C)."""
        return self.s1.config.in_channels

    @property
    def conditioned(self):
        """True when S2 also takes the stage-1 probabilities of its window."""
        return self.s2.config.in_channels > self.in_channels

    def normalisation(self, config):
        """(mean, std) per input channel of this bundle's network with ``config`` (S1, S2, the reference
        or their runners' ``.config``): the image's own for the image channels, then (0.5, ...) for the
        stage-1 probabilities a conditioned S2 also takes (mapping them to [-1, 1]). The one place the
        full-resolution normalisation is chosen (stage 2, the baseline, int8 calibration)."""
        extra = (0.5,) * (config.in_channels - self.in_channels)
        return tuple(self.mean) + extra, tuple(self.std) + extra

    @property
    def s2_mean(self):
        """Normalisation of S2's input channels (``normalisation`` of S2): the mean."""
        return self.normalisation(self.s2.config)[0]

    @property
    def s2_std(self):
        return self.normalisation(self.s2.config)[1]

    @property
    def baseline_kind(self):
        """What ``baseline`` runs: 's2' (S2 over the whole image; an unconditioned bundle),
        'reference' (the bundle's unconditioned reference network) or 's1+s2' (stage 1, then the
        conditioned S2 over the whole image)."""
        if not self.conditioned:
            return "s2"
        return "reference" if self.reference is not None else "s1+s2"

    def unconditioned(self):
        """The same bundle with the reference network as S2 (what it was before conditioning); a
        bundle that is not conditioned, or has no reference, is returned as it is."""
        if not self.conditioned or self.reference is None:
            return self
        return dataclasses.replace(self, s2=self.reference, reference=None, int8_ranges=None, int8_inputs=None,
                                   name=f"{self.name} (unconditioned)")

    def networks(self):
        """{"s1": S1, "s2": S2[, "reference": the reference network]}."""
        found = {"s1": self.s1, "s2": self.s2}
        if self.reference is not None:
            found["reference"] = self.reference
        return found

    def runners(self, precision="auto", compile=False, backend="auto"):
        """(S1, S2) prepared to run in ``precision`` on ``backend`` (see runtime.py), made once per setting."""
        return self._prepared(precision, compile, backend)[:2]

    def baseline_runner(self, precision="auto", compile=False, backend="auto"):
        """The full-resolution network of the baseline (the reference, else S2), prepared like ``runners``."""
        return self._prepared(precision, compile, backend)[2]

    def _prepared(self, precision, compile, backend):
        precision = check_precision(precision)  # 'auto' -> this CPU's fastest, one runner per concrete name
        int8_blocker = self.openvino_int8_blocker(backend) if precision == "int8" else None
        backend = check_backend(backend, precision, compile, int8_blocker)
        key = (str(precision), bool(compile), str(backend))  # OpenVINO's threads: torch's when first made
        if precision == "int8" and not self.int8_ranges:
            raise ModelError(f"model {self.name!r} has no int8 calibration; make an int8 bundle with "
                             f"`iterseg quantize --model {self.name} --spec SPEC --data-root DIR --out FILE` "
                             "and predict with that file.")
        with self._runners_lock:
            if key not in self._runners:
                warn_if_emulated(precision)
                ranges, inputs = self.int8_ranges or {}, self.int8_inputs or {}
                made = {name: Runner(net, precision, compile, ranges.get(name), backend, inputs.get(name))
                        for name, net in self.networks().items()}
                self._runners[key] = (made["s1"], made["s2"], made.get("reference", made["s2"]))
            return self._runners[key]

    def openvino_int8_blocker(self, backend="auto"):
        """Why this int8 bundle should run on PyTorch's int8 kernels rather than OpenVINO's, or None:
        it has no OpenVINO calibration, or (unless ``backend`` is 'openvino', asked for) its
        OpenVINO int8 lost more than runtime.INT8_DICE_LIMIT Dice (mIoU) in the check `iterseg quantize` ran."""
        if not self.int8_inputs:
            return NO_INT8_INPUTS
        check = self.provenance.get("int8", {}).get("openvino_check") or {}
        loss = check.get("loss")
        if asked_for_openvino(backend) or loss is None or loss <= INT8_DICE_LIMIT:
            return None
        return (f"OpenVINO int8 lost {loss:.4f} {check.get('quality')} against {check.get('against')} on "
                f"{check.get('images')} {check.get('spec')} {check.get('split')} images when it was made "
                f"(limit {INT8_DICE_LIMIT})")

    @property
    def image_shape(self):
        """(H, W) of the median image the bundle was trained on, as training recorded it (None for a
        bundle that does not say)."""
        stages = self.provenance.get("stages", {})
        shape = self.provenance.get("image_shape") or stages.get("s2", {}).get("image_shape") or \
            stages.get("s1", {}).get("image_shape")
        return tuple(int(side) for side in shape) if shape and len(shape) == 2 and min(shape) > 0 else None

    @property
    def num_classes(self):
        """Number of classes K (2 for a binary model)."""
        return len(self.class_names)

    @property
    def untrained(self):
        return bool(self.provenance.get("untrained", False))

    def meta(self):
        """Everything but the weights, as JSON-ready values."""
        reference = None if self.reference is None else dataclasses.asdict(self.reference.config)
        return {"name": self.name, "s1": dataclasses.asdict(self.s1.config),
                "s2": dataclasses.asdict(self.s2.config), "reference": reference, "mean": list(self.mean),
                "std": list(self.std), "s1_scale": self.s1_scale, "class_names": list(self.class_names),
                "palette": [list(colour) for colour in self.palette], "conditioned": self.conditioned,
                "int8": bool(self.int8_ranges), "window": self.window, "patches": self.patches,
                "context": self.context, "mpp": self.mpp,
                "baseline": self.baseline_kind, "provenance": self.provenance}
