"""int8 post-training quantization for x86 CPUs: PyTorch 2 Export quantization (torchao's PT2E flow
with X86InductorQuantizer: uint8 activations per tensor, int8 weights per output channel), lowered
by torch.compile (Inductor) to oneDNN int8 kernels.

Calibrating a bundle (training/calibrate.py) folds batch norm into the convolutions
(``fold_batch_norm``), stores the convolution weights as int8 with a float scale per output channel
(``int8_state``; what an int8 bundle file holds), runs each network on a few training images and
records the range of every activation the quantizer observes (``calibrate``). ``int8_network``
rebuilds the quantized network from the bundle alone: the weight observers see the stored weights,
the activation observers get the recorded ranges. (The quantizer re-quantizes the stored int8
weights with its own per-channel scale, which can move a weight by one step.)

Glossary
    ranges   [(min_val, max_val)] float32 scalar tensors, one pair per activation observer of the
             prepared network, in ``named_modules`` order
    x        float32 (N, C, h, w) normalised batch, h and w multiples of the U-Net's size multiple
"""
import copy
import dataclasses
import functools
import logging
import warnings

import torch
from torch import nn

from ..errors import ModelError
from .cache import remembered
from .cpu import has_vnni

log = logging.getLogger(__name__)
ACTIVATION_EPS = 2 ** -12  # the quantizer's default minimum scale


@functools.lru_cache(maxsize=1)
def _pt2e():
    """torchao's PT2E modules, imported on first use (importing them costs about a second)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for noisy in ("torchao", "torch.utils._pytree"):  # notes on optional CUDA kernels and enum registration
            logging.getLogger(noisy).setLevel(logging.ERROR)
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
        from torchao.quantization.pt2e.observer import MinMaxObserver
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    return MinMaxObserver, prepare_pt2e, convert_pt2e, x86


def quantizer():
    """X86InductorQuantizer with min/max activation observers (their state is two numbers, which
    is what the bundle stores)."""
    observer, _, _, x86 = _pt2e()
    config = x86.get_default_x86_inductor_quantization_config(reduce_range=not has_vnni())
    activation = dataclasses.replace(config.input_activation,
                                     observer_or_fake_quant_ctr=observer.with_args(eps=ACTIVATION_EPS))
    result = x86.X86InductorQuantizer()
    result.set_global(dataclasses.replace(config, input_activation=activation, output_activation=activation))
    return result


# --- batch norm folding -----------------------------------------------------------------------------

def fold_batch_norm(model):
    """A U-Net without batch norm computing the same function as ``model`` (eval mode): each
    convolution's weights and bias absorb the batch norm that follows it."""
    folded = type(model)(dataclasses.replace(model.config, norm="none")).eval()
    state = {}
    for name, module in folded.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        if model.config.norm == "batch" and isinstance(module, nn.Conv2d) and name != "head":
            conv, norm = _conv_and_norm(model, name)
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            state[f"{name}.weight"] = conv.weight * scale[:, None, None, None]
            state[f"{name}.bias"] = norm.bias - norm.running_mean * scale
        else:  # transposed convolutions and the head have no batch norm; "none" networks neither
            original = model.get_submodule(name)
            state[f"{name}.weight"] = original.weight
            state[f"{name}.bias"] = original.bias
    folded.load_state_dict({k: v.detach().clone() for k, v in state.items()})
    return folded


def _conv_and_norm(model, folded_name):
    """The (conv, batch norm) pair of ``model`` that the folded network's conv ``folded_name`` replaces.
    Folded double convs hold [conv, relu, conv, relu]; the originals [conv, bn, relu, conv, bn, relu]."""
    parent, index = folded_name.rsplit(".", 1)
    sequence = model.get_submodule(parent)
    position = {0: 0, 2: 3}[int(index)]
    return sequence[position], sequence[position + 1]


# --- the quantized network ---------------------------------------------------------------------------

def prepare(model):
    """The float network exported (batch, height and width dynamic) with quantizer observers inserted."""
    _, prepare_pt2e, _, _ = _pt2e()
    if model.config.norm != "none":
        raise ModelError("int8 needs networks with batch norm folded in (quantize.fold_batch_norm).")
    multiple = model.config.size_multiple
    example = torch.zeros(2, model.config.in_channels, 2 * multiple, 2 * multiple)
    dims = {0: torch.export.Dim("batch", min=1, max=1024),
            2: multiple * torch.export.Dim("rows", min=1, max=65536 // multiple),
            3: multiple * torch.export.Dim("cols", min=1, max=65536 // multiple)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model.eval(), (example,), dynamic_shapes={"x": dims}).module()
        return prepare_pt2e(exported, quantizer())


def activation_observers(prepared):
    """The activation observers of a prepared network (per-tensor: scalar ranges), in a fixed order."""
    return [module for _, module in prepared.named_modules()
            if hasattr(module, "min_val") and getattr(module, "ch_axis", None) is None]


def calibrate(model, batches):
    """Activation ranges after running ``model`` (folded, float) on ``batches`` (x tensors)."""
    prepared = prepare(model)
    with torch.no_grad():
        for x in batches:
            prepared(x)
    return [(o.min_val.detach().clone(), o.max_val.detach().clone()) for o in activation_observers(prepared)]


def convolutions(model):
    """The convolutions (plain and transposed) of ``model`` in ``named_modules`` order: the order of a
    bundle's ``int8_inputs`` rows."""
    return [module for module in model.modules() if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))]


def input_ranges(model, batches):
    """float32 (n, 2): the (min, max) of each convolution's input (``convolutions`` order) over
    ``model`` (folded, float) run on ``batches`` (x tensors): what OpenVINO's int8 graph quantizes
    each convolution's input to (openvino_backend.unet_graph)."""
    found = torch.tensor([[float("inf"), -float("inf")]]).repeat(len(convolutions(model)), 1)  # none seen: not finite

    def record(index):
        def hook(module, args):
            found[index, 0] = torch.minimum(found[index, 0], args[0].min().float())
            found[index, 1] = torch.maximum(found[index, 1], args[0].max().float())
        return hook

    hooks = [conv.register_forward_pre_hook(record(i)) for i, conv in enumerate(convolutions(model))]
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return found


def int8_network(model, ranges):
    """The quantized network of ``model`` (folded, float weights) with the activation observers set
    to ``ranges``: a module x -> float32 logits running int8 convolutions (once compiled)."""
    _, _, convert_pt2e, _ = _pt2e()
    prepared = prepare(model)
    found = activation_observers(prepared)
    if len(found) != len(ranges):
        raise ModelError(f"the bundle's int8 calibration ({len(ranges)} observers) does not fit this network as "
                         f"torch/torchao prepare it ({len(found)}); calibrate again with `iterseg quantize`.")
    multiple = model.config.size_multiple
    with torch.no_grad():  # the weight observers see the weights
        prepared(torch.zeros(1, model.config.in_channels, 2 * multiple, 2 * multiple))
    for observer, (low, high) in zip(found, ranges, strict=True):
        observer.min_val, observer.max_val = low.clone(), high.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_pt2e(prepared)



# --- the same network without compilation (FX graph mode, x86 backend) -------------------------------

def eager_int8_network(model, ranges):
    """``model`` (folded, float weights) quantized for PyTorch's eager x86 int8 kernels (FX graph
    mode quantization): no compilation, so the first call costs what later ones do. The bundle's
    ranges belong to the PT2E observers; each FX observer gets the range of the PT2E observer that
    sees the same tensor (``observer_map``, worked out once per torch version and architecture and
    kept on disk, cache.py). The transposed convolutions, the convolutions feeding them and the 1x1
    head stay float (PT2E has no range for their outputs). ModelError when an FX observer has no
    counterpart (a torch version that quantizes differently) or the calibration does not fit."""
    from torch.ao.quantization.quantize_fx import convert_fx  # noqa: PLC0415 (a second to import)

    fx = _fx_prepared(model)
    observers = _fx_observers(fx)
    key = f"torch {torch.__version__} | {dataclasses.asdict(model.config)}"
    known = remembered("int8_map.json", key, lambda: observer_map(model, fx, observers))
    if known["pt2e_observers"] != len(ranges) or len(known["matches"]) != len(observers):
        raise ModelError(f"the bundle's int8 calibration ({len(ranges)} observers) does not fit this network as "
                         f"torch/torchao prepare it ({known['pt2e_observers']}); calibrate again with "
                         "`iterseg quantize`.")
    for observer, matches in zip(observers, known["matches"], strict=True):
        if matches is None:  # sees no tensor in a forward pass
            continue
        # an FX observer shared by several tensors (a concatenation's inputs and output) gets the
        # union of their ranges; tensors PT2E does not observe (a max pool's output) add nothing
        observer.min_val = torch.stack([ranges[i][0] for i in matches]).min().clone()
        observer.max_val = torch.stack([ranges[i][1] for i in matches]).max().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(fx)


def observer_map(model, fx, observers):
    """{"pt2e_observers": how many activation observers PT2E gives ``model``, "matches": for each FX
    ``observers`` entry the indices of the PT2E observers that see the same tensors (None for one that
    sees none)}, found by running both prepared networks on one random input (about 1.5 s: exporting
    for PT2E is most of it). ModelError when an FX observer has no counterpart."""
    pt2e = prepare(model)
    found = activation_observers(pt2e)
    multiple = model.config.size_multiple
    probe = torch.randn(1, model.config.in_channels, 2 * multiple, 2 * multiple,
                        generator=torch.Generator().manual_seed(0))
    seen_pt2e = [prints[0] for prints in _observed(pt2e, found, probe).values()]
    seen_fx = _observed(fx, observers, probe)
    matches = []
    for observer in observers:
        if observer not in seen_fx:
            matches.append(None)
            continue
        matches.append([i for i, other in enumerate(seen_pt2e) if any(_same(p, other) for p in seen_fx[observer])])
        if not matches[-1]:
            raise ModelError("this torch version quantizes the network differently from the bundle's int8 "
                             "calibration; run int8 compiled (see runtime.py) or calibrate again.")
    for observer in observers:  # what the probe left in them is no range of the bundle's
        observer.reset_min_max_vals()
    return {"pt2e_observers": len(found), "matches": matches}


def _fx_prepared(model):
    """``model`` prepared for FX quantization: min/max activation observers like the PT2E ones,
    per-channel symmetric int8 weights, transposed convolutions and the head left float."""
    from torch.ao.quantization import QConfig, QConfigMapping, default_per_channel_weight_observer  # noqa: PLC0415
    from torch.ao.quantization.observer import MinMaxObserver  # noqa: PLC0415
    from torch.ao.quantization.quantize_fx import prepare_fx  # noqa: PLC0415

    activation = MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=not has_vnni(), eps=ACTIVATION_EPS)
    mapping = (QConfigMapping().set_global(QConfig(activation=activation, weight=default_per_channel_weight_observer))
               .set_object_type(nn.ConvTranspose2d, None).set_module_name("head", None))
    for name in _feeding_transposed(model.config.depth):  # their outputs: PT2E keeps them float, no range
        mapping.set_module_name(name, None)
    example = torch.zeros(1, model.config.in_channels, model.config.size_multiple, model.config.size_multiple)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_fx(copy.deepcopy(model).eval(), mapping, (example,))


def _feeding_transposed(depth):
    """Names of the convolutions whose output goes into a transposed convolution: the last of the
    bottleneck (``up.0``'s input) and the last of each fuse block but the final one."""
    return [f"down.{depth - 1}.1.2"] + [f"fuse.{i}.2" for i in range(depth - 1)]


def _fx_observers(prepared):
    return [m for _, m in prepared.named_modules() if hasattr(m, "min_val") and getattr(m, "ch_axis", None) is None]


def _observed(prepared, observers, x):
    """{observer: [(shape, sum, sum of squares) of each tensor it saw]} for one run on ``x``."""
    seen = {}

    def record(observer, args, output):
        seen.setdefault(observer, []).append(_fingerprint(args[0]))  # returns None: the output stays

    hooks = [o.register_forward_hook(record) for o in observers]
    with torch.no_grad():
        prepared(x)
    for hook in hooks:
        hook.remove()
    return {o: seen[o] for o in observers if o in seen}


def _fingerprint(t):
    t = t.detach().double()
    return tuple(t.shape), float(t.sum()), float((t * t).sum())


def _same(a, b):
    return a[0] == b[0] and all(abs(x - y) <= 1e-4 * (1 + abs(y)) for x, y in zip(a[1:], b[1:], strict=True))


# --- int8 weights on disk ----------------------------------------------------------------------------

def weight_scale(weight):
    """Per-output-channel symmetric scale onto [-127, 127]: the largest weight maps to exactly 127
    steps, so storing stored weights again gives the same int8 values (the round trip is stable)."""
    amax = weight.abs().flatten(1).amax(dim=1)
    return torch.clamp(amax / 127, min=ACTIVATION_EPS).float()


def int8_state(state):
    """How an int8 bundle stores a network: every convolution weight (not the transposed ones, which
    the quantizer leaves in float) as int8 values plus a float32 '<name>.int8_scale' per output
    channel; the other tensors as float16."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.ndim == 4 and not key.startswith("up."):
            scale = weight_scale(value.float())
            steps = torch.round(value.float() / scale[:, None, None, None])
            out[key] = torch.clamp(steps, -127, 127).to(torch.int8)
            out[key + ".int8_scale"] = scale
        else:
            out[key] = value.half() if value.is_floating_point() else value
    return out


def float_state(state):
    """Inverse of ``int8_state``: int8 weights times their scales, as float32."""
    out = {}
    for key, value in state.items():
        if key.endswith(".int8_scale"):
            continue
        scale = state.get(key + ".int8_scale")
        out[key] = value.float() * scale[:, None, None, None] if scale is not None else (
            value.float() if value.is_floating_point() else value)
    return out


def as_stored(model):
    """``model`` with the weights an int8 bundle file will hold (``float_state(int8_state(...))``):
    calibrating this copy makes the network loaded from the file exactly the calibrated one."""
    stored = type(model)(model.config).eval()
    stored.load_state_dict(float_state(int8_state(model.state_dict())))
    return stored
