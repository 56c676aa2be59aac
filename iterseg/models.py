"""The U-Net, the model bundle (S1 + S2 + everything needed to use them) and its file format.

Glossary
    x        float32 (N, C, h, w) normalised image batch, h and w multiples of ``size_multiple``
    logits   float32 (N, K, h, w) raw network output; never leaves ``models``/``infer``
A bundle file is ``torch.save`` of a dict holding only tensors, strings and numbers, and is read
with ``torch.load(weights_only=True)``, which refuses anything that would run code when unpickled.
"""
import dataclasses
import json
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import ModelError
from .io import atomic_output
from .quantize import float_state, int8_state
from .runtime import Runner, warn_if_emulated

BUNDLE_FORMAT = "iterseg-bundle"
BUNDLE_VERSION = 1
WEIGHTS_DIR = Path(__file__).parent / "weights"
NORMS = ("batch", "none")
DEFAULT_MODEL = "ph2"  # used when no model is named: the embedded PH2 lesion model


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net: ``depth`` poolings, ``width`` channels at full scale, doubled per level."""
    in_channels: int = 3
    out_channels: int = 1
    depth: int = 4
    width: int = 16
    norm: str = "batch"

    def __post_init__(self):
        for name in ("in_channels", "out_channels", "depth", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "depth" else 1):
                raise ValueError(f"UNetConfig.{name} must be a positive integer, got {value!r}.")
        if self.norm not in NORMS:
            raise ValueError(f"UNetConfig.norm must be one of {NORMS}, got {self.norm!r}.")

    @property
    def size_multiple(self):
        """Input height and width must be multiples of this (2 ** depth)."""
        return 2 ** self.depth

    @property
    def receptive_radius(self):
        """How far (pixels) an output pixel can see: 3x3 convs add 2**level, each 2x2 pool 2**level."""
        encoder = sum(5 * 2 ** level for level in range(self.depth))
        return encoder + 2 * 2 ** self.depth


def _double_conv(cin, cout, norm):
    layers = []
    for c in (cin, cout):
        layers.append(nn.Conv2d(c, cout, 3, padding=1, bias=norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with transposed-convolution upsampling. Returns logits."""

    def __init__(self, config=None, **kwargs):
        super().__init__()
        self.config = config or UNetConfig(**kwargs)
        cfg = self.config
        widths = [cfg.width * 2 ** level for level in range(cfg.depth + 1)]
        self.inc = _double_conv(cfg.in_channels, widths[0], cfg.norm)
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), _double_conv(widths[i], widths[i + 1], cfg.norm))
            for i in range(cfg.depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(cfg.depth)))
        self.fuse = nn.ModuleList(
            _double_conv(2 * widths[i], widths[i], cfg.norm) for i in reversed(range(cfg.depth)))
        self.head = nn.Conv2d(widths[0], cfg.out_channels, 1)

    def forward(self, x):
        """x: (N, in_channels, h, w), h and w multiples of 2 ** depth -> logits (N, out_channels, h, w)."""
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up, fuse in zip(self.up, self.fuse):
            y = fuse(torch.cat([skips.pop(), up(y)], dim=1))
        return self.head(y)


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
    class, for colour masks (default: ``default_palette``).

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

    @property
    def in_channels(self):
        """Image channels the bundle takes (C)."""
        return self.s1.config.in_channels

    @property
    def conditioned(self):
        """True when S2 also takes the stage-1 probabilities of its window."""
        return self.s2.config.in_channels > self.in_channels

    @property
    def s2_mean(self):
        """Normalisation of S2's input channels: the image's, then (0.5, ...) for the S1 channels."""
        return tuple(self.mean) + (0.5,) * (self.s2.config.in_channels - self.in_channels)

    @property
    def s2_std(self):
        return tuple(self.std) + (0.5,) * (self.s2.config.in_channels - self.in_channels)

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
        return dataclasses.replace(self, s2=self.reference, reference=None, int8_ranges=None,
                                   name=f"{self.name} (unconditioned)")

    def networks(self):
        """{"s1": S1, "s2": S2[, "reference": the reference network]}."""
        found = {"s1": self.s1, "s2": self.s2}
        if self.reference is not None:
            found["reference"] = self.reference
        return found

    def runners(self, precision="fp32", compile=False):
        """(S1, S2) prepared to run in ``precision`` (see runtime.py), made once per setting."""
        return self._prepared(precision, compile)[:2]

    def baseline_runner(self, precision="fp32", compile=False):
        """The full-resolution network of the baseline (the reference, else S2), prepared like ``runners``."""
        return self._prepared(precision, compile)[2]

    def _prepared(self, precision, compile):
        key = (precision, bool(compile))
        if precision == "int8" and not self.int8_ranges:
            raise ModelError(f"model {self.name!r} has no int8 calibration; make an int8 bundle with "
                             f"`iterseg quantize --model {self.name} --spec SPEC --data-root DIR --out FILE` "
                             "and predict with that file.")
        with self._runners_lock:
            if key not in self._runners:
                warn_if_emulated(precision)
                ranges = self.int8_ranges or {}
                made = {name: Runner(net, precision, compile, ranges.get(name)) for name, net in self.networks().items()}
                self._runners[key] = (made["s1"], made["s2"], made.get("reference", made["s2"]))
            return self._runners[key]

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
                "int8": bool(self.int8_ranges),
                "baseline": self.baseline_kind, "provenance": self.provenance}


def save_bundle(bundle, path, half=True):
    """Write ``bundle`` to ``path`` (weights as float16 when ``half``; batch-norm counters kept as is;
    an int8 bundle's convolution weights as int8, see quantize.int8_state)."""
    def tensors(model):
        state = model.state_dict()
        if bundle.int8_ranges:
            return {k: v.contiguous() for k, v in int8_state(state).items()}
        return {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in state.items()}
    payload = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "meta": json.dumps(bundle.meta()),
               "s1": tensors(bundle.s1), "s2": tensors(bundle.s2)}
    if bundle.reference is not None:
        payload["reference"] = tensors(bundle.reference)
    if bundle.int8_ranges:
        payload["int8_ranges"] = {name: {f"{i}.{end}": t.float().contiguous() for i, pair in enumerate(ranges)
                                         for end, t in zip(("min", "max"), pair)}
                                  for name, ranges in bundle.int8_ranges.items()}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def _read_payload(path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's notes on foreign pickle protocols
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or unsafe files
        if "Weights only load failed" in str(exc):
            raise ModelError(f"refused to load {path}: it holds pickled Python objects, which could run code "
                             "when loaded (nothing was run); iterseg reads only bundles of plain tensors, "
                             "written by iterseg.save_bundle.") from None
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path} is not a readable iterseg model bundle ({first_line[:200]}); "
                         "pass a file written by iterseg.save_bundle or an embedded model name.") from None
    if not isinstance(payload, dict) or payload.get("format") != BUNDLE_FORMAT:
        raise ModelError(f"{path} is not an iterseg model bundle (no '{BUNDLE_FORMAT}' header).")
    if payload.get("version") != BUNDLE_VERSION:
        raise ModelError(f"{path} has bundle version {payload.get('version')}; this iterseg reads "
                         f"version {BUNDLE_VERSION}. Upgrade iterseg or re-export the bundle.")
    return payload


def _mismatch(model, state):
    """What differs between a network's parameters and a state dict, in a few words (or None)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = [f"{len(keys)} {what} (e.g. {keys[0]})" for keys, what in
             ((missing, "tensors missing"), (unexpected, "unexpected tensors"), (reshaped, "of another shape"))
             if keys]
    return ", ".join(parts) or None


def _build(config_dict, state, where):
    try:
        model = UNet(UNetConfig(**config_dict))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{where}: the architecture in the bundle is invalid ({exc}); re-export the bundle.") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{where}: the weights are not a dict of tensors; re-export the bundle.")
    problem = _mismatch(model, state)
    if problem:
        raise ModelError(f"{where}: the weights do not fit the architecture the bundle declares ({problem}); "
                         "the file was written for another network: re-export it with iterseg.save_bundle.")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model


def _weights(state, int8):
    """A stored state dict as float tensors (an int8 bundle's int8 weights times their scales)."""
    if not int8 or not isinstance(state, dict):
        return state
    return float_state(state)


def _ranges(stored):
    """{network: [(min, max)]} from the file's {network: {"<i>.min": t, "<i>.max": t}}."""
    if not isinstance(stored, dict):
        raise KeyError("int8_ranges")
    return {name: [(values[f"{i}.min"], values[f"{i}.max"]) for i in range(len(values) // 2)]
            for name, values in stored.items()}


def read_bundle(path):
    """Load a bundle file written by ``save_bundle``; raises ModelError with what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; pass an existing bundle file or one of "
                         f"the embedded names: {', '.join(available_models())}.")
    payload = _read_payload(path)
    try:
        meta = json.loads(payload["meta"])
        int8 = bool(meta.get("int8"))
        s1 = _build(meta["s1"], _weights(payload["s1"], int8), f"{path} (S1)")
        s2 = _build(meta["s2"], _weights(payload["s2"], int8), f"{path} (S2)")
        reference = (_build(meta["reference"], _weights(payload.get("reference"), int8), f"{path} (reference)")
                     if meta.get("reference") else None)
        return Bundle(s1=s1, s2=s2, mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                      s1_scale=float(meta["s1_scale"]), class_names=tuple(meta["class_names"]),
                      name=meta.get("name", path.stem), provenance=meta.get("provenance", {}),
                      reference=reference, palette=meta.get("palette"),
                      int8_ranges=_ranges(payload.get("int8_ranges")) if int8 else None)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: damaged bundle metadata ({exc!r}); re-export the bundle.") from None


def untrained_bundle(config=None, seed=0):
    """A bundle with random weights (fixed seed): for testing the engine, its masks mean nothing."""
    config = config or UNetConfig()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        s1, s2 = UNet(config), UNet(config)
    mean, std = (0.5,) * config.in_channels, (0.25,) * config.in_channels
    names = ("background", "foreground") if config.out_channels == 1 else tuple(
        f"class{i}" for i in range(config.out_channels))
    return Bundle(s1=s1, s2=s2, mean=mean, std=std, class_names=names, name="untrained",
                  provenance={"untrained": True, "note": f"random weights, seed {seed}"})


def available_models():
    """Names accepted by ``load_bundle``: the embedded bundle files plus 'untrained'."""
    return sorted([p.stem for p in WEIGHTS_DIR.glob("*.pt")] + ["untrained"])


def load_bundle(name_or_path):
    """An embedded model by name ('untrained', ...) or a bundle file by path."""
    text = str(name_or_path)
    if text == "untrained":
        return untrained_bundle()
    embedded = WEIGHTS_DIR / f"{text}.pt"
    if embedded.is_file():
        return read_bundle(embedded)
    if Path(text).suffix or "/" in text or Path(text).exists():
        return read_bundle(Path(text))
    raise ModelError(f"unknown model {text!r}; valid names: {', '.join(available_models())}, "
                     "or a path to a bundle file.")
