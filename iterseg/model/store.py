"""The bundle file format: writing and reading bundles, and the embedded models by name.

A bundle file is ``torch.save`` of a dict holding only tensors, strings and numbers, and is read
with ``torch.load(weights_only=True)``, which refuses anything that would run code when unpickled.
"""
import dataclasses
import json
import math
import warnings
from pathlib import Path

import torch

from ..disk.outputs import atomic_output
from ..errors import ModelError
from .bundle import Bundle
from .quantize import convolutions, float_state, int8_state
from .unet import UNet, UNetConfig

BUNDLE_FORMAT = "iterseg-bundle"
BUNDLE_VERSION = 1
WEIGHTS_DIR = Path(__file__).parent.parent / "weights"
DEFAULT_MODEL = "ph2"  # used when no model is named: the embedded PH2 lesion model


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
                                         for end, t in zip(("min", "max"), pair, strict=True)}
                                  for name, ranges in bundle.int8_ranges.items()}
    if bundle.int8_ranges and bundle.int8_inputs:  # one table, the networks' rows in networks() order
        payload["int8_inputs"] = torch.cat([bundle.int8_inputs[name].float() for name in bundle.networks()])
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


MAX_DEPTH = 16  # 2 ** 16 pixels a side: more poolings than any image needs


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _architecture(config_dict, state, where):
    """The UNetConfig a bundle declares, checked against the tensors actually in the file BEFORE any
    network is built: what the metadata may ask to allocate is bounded by what the file holds."""
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelError(f"{where}: the weights are not a dict of tensors; re-export the bundle.")
    names = {f.name for f in dataclasses.fields(UNetConfig)}
    if not isinstance(config_dict, dict) or set(config_dict) - names or not all(
            _is_int(config_dict[k]) for k in names - {"norm"} if k in config_dict) or not isinstance(
            config_dict.get("norm", "batch"), str):
        raise ModelError(f"{where}: the architecture in the bundle is invalid (expected integers "
                         f"{', '.join(sorted(names - {'norm'}))} and a norm name, got {str(config_dict)[:120]}); "
                         "re-export the bundle.")
    try:
        config = UNetConfig(**config_dict)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{where}: the architecture in the bundle is invalid ({exc}); re-export the bundle.") from None
    first, head = state.get("inc.0.weight"), state.get("head.weight")
    held = {"depth": len({k.split(".")[1] for k in state if k.startswith("down.")})}
    if first is not None and first.dim() == 4:
        held.update(width=first.shape[0], in_channels=first.shape[1])
    if head is not None and head.dim() == 4:
        held["out_channels"] = head.shape[0]
    wrong = [f"{key} {getattr(config, key)} but the weights hold {value}" for key, value in held.items()
             if getattr(config, key) != value]
    if wrong or len(held) < 4 or config.depth > MAX_DEPTH:
        problem = "; ".join(wrong) or (f"depth {config.depth} > {MAX_DEPTH}" if config.depth > MAX_DEPTH
                                       else "no input or output convolution")
        raise ModelError(f"{where}: the weights do not fit the architecture the bundle declares ({problem}); "
                         "the file was written for another network: re-export it with iterseg.save_bundle.")
    return config


def _build(config_dict, state, where):
    config = _architecture(config_dict, state, where)
    with torch.device("meta"):  # shapes only, nothing allocated
        shapes = UNet(config)
    problem = _mismatch(shapes, state)
    if problem:
        raise ModelError(f"{where}: the weights do not fit the architecture the bundle declares ({problem}); "
                         "the file was written for another network: re-export it with iterseg.save_bundle.")
    for key, value in state.items():
        bad = value.is_floating_point() and not bool(torch.isfinite(value).all())
        if bad or key.endswith("running_var") and bool((value < 0).any()):
            raise ModelError(f"{where}: tensor {key} holds {'NaN or infinite' if bad else 'negative'} values, "
                             "which would make every mask meaningless; re-export or retrain the bundle.")
    model = UNet(config)
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


def _inputs(stored, networks):
    """{network: float32 (n, 2)} from the file's one table (None when it has none): finite (min, max)
    rows, one per convolution (quantize.convolutions) of each network in turn."""
    if stored is None:
        return None
    counts = [len(convolutions(net)) for net in networks.values()]
    if (not isinstance(stored, torch.Tensor) or tuple(stored.shape) != (sum(counts), 2)
            or not torch.isfinite(stored).all()):
        raise ValueError("the int8 input ranges do not fit the networks")
    return dict(zip(networks, stored.float().split(counts), strict=True))


def _meta(payload, path):
    """The bundle's metadata: a JSON object whose values have the types read_bundle needs."""
    text = payload.get("meta")
    if not isinstance(text, str):
        raise ModelError(f"{path}: the bundle has no metadata text; re-export the bundle.")
    meta = json.loads(text)
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: damaged bundle metadata (not a JSON object); re-export the bundle.")
    checks = {"mean": lambda v: isinstance(v, list) and v and all(_is_number(x) for x in v),
              "std": lambda v: isinstance(v, list) and v and all(_is_number(x) and x > 0 for x in v),
              "s1_scale": _is_number,
              "class_names": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
              "name": lambda v: isinstance(v, str), "provenance": lambda v: isinstance(v, dict),
              "palette": lambda v: v is None or isinstance(v, list) and all(
                  isinstance(c, list) and all(_is_int(x) for x in c) for c in v),
              "int8": lambda v: isinstance(v, bool)}
    for key, check in checks.items():
        if key in meta and not check(meta[key]):
            wanted = {"std": "positive finite numbers", "mean": "finite numbers"}.get(key, "another type")
            raise ModelError(f"{path}: damaged bundle metadata ({key} = {str(meta[key])[:60]}; expected {wanted}); "
                             "re-export the bundle.")
    return meta


def read_bundle(path):
    """Load a bundle file written by ``save_bundle``; raises ModelError with what is wrong. Everything
    is validated before use: metadata types, finite mean, positive std, architectures against the
    tensors in the file (before any network is built), finite weights."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; pass an existing bundle file or one of "
                         f"the embedded names: {', '.join(available_models())}.")
    payload = _read_payload(path)
    try:
        meta = _meta(payload, path)
        int8 = bool(meta.get("int8"))
        s1 = _build(meta["s1"], _weights(payload["s1"], int8), f"{path} (S1)")
        s2 = _build(meta["s2"], _weights(payload["s2"], int8), f"{path} (S2)")
        reference = (_build(meta["reference"], _weights(payload.get("reference"), int8), f"{path} (reference)")
                     if meta.get("reference") else None)
        networks = {"s1": s1, "s2": s2, **({"reference": reference} if reference is not None else {})}
        return Bundle(s1=s1, s2=s2, mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                      s1_scale=float(meta["s1_scale"]), class_names=tuple(meta["class_names"]),
                      name=meta.get("name", path.stem), provenance=meta.get("provenance", {}),
                      reference=reference, palette=meta.get("palette"),
                      int8_ranges=_ranges(payload.get("int8_ranges")) if int8 else None,
                      int8_inputs=_inputs(payload.get("int8_inputs"), networks) if int8 else None,
                      window=meta.get("window"), patches=meta.get("patches"),
                      context=meta.get("context"), mpp=meta.get("mpp"))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError, RecursionError) as exc:
        raise ModelError(f"{path}: damaged bundle metadata ({str(exc)[:120] or type(exc).__name__}); "
                         "re-export the bundle.") from None


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
