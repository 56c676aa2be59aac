"""The OpenVINO backend: a bundle's U-Net, or a user's torch module, run by OpenVINO's CPU plugin
instead of PyTorch.

A bundle's graph is built directly from the network's layers with OpenVINO's operator set (no
tracing: a few milliseconds, where ``ov.convert_model`` traces for a second or more per network); a
user's module of unknown layers is converted by ``ov.convert_model``. Both on one dynamic input
shape, so that images and windows of any size share one compiled model. Compiled models are not
kept on disk (OpenVINO's CACHE_DIR): with it, processes started together (a job array on a first
run) read each other's half-written blobs and died of SIGBUS, a blob of the whole network per shape
filled 7 GB in a day of runs, and a network compiles in 0.05-0.3 s anyway.

Glossary
    x        float32 (N, C, h, w) normalised image batch, h and w multiples of the size multiple; the
             compiled model takes it as (N, h, w, C), the memory order of the engine's batches
             (channels_last), so that no copy is made to feed it
    logits   float32 (N, K, h, w), computed in f32 or bf16 (``INFERENCE_PRECISION_HINT``), or by int8
             convolutions for an int8 bundle (``unet_graph``'s ``int8_inputs``)
"""
import collections
import threading
import warnings

import numpy as np
import torch
from torch import nn

from ..errors import ModelError

HINTS = {"fp32": "f32", "bf16": "bf16"}  # iterseg's precision names -> OpenVINO's inference precision


def installed():
    """True when the ``openvino`` package can be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def version():
    import openvino
    return openvino.__version__


def unet_graph(folded, int8_inputs=None):
    """An ``openvino.Model`` computing ``folded`` (a model/unet.UNet with batch norm folded into its
    convolutions, model/quantize.fold_batch_norm): input "x" (N, h, w, C) float32 of any N, h, w
    (multiples of the size multiple) -> logits (N, K, h, w).

    int8_inputs: float32 (n, 2), the calibrated (min, max) of each convolution's input (plain and
    transposed; quantize.input_ranges, in ``quantize.convolutions`` order), or None for a float
    graph. With them each tensor a convolution reads passes one FakeQuantize of 256 levels
    (``activation_bounds``; a skip's covers both its readers, and the other half of its
    concatenation gets the same, so that OpenVINO fuses each into the convolution that makes the
    tensor), and the weights one of 255 symmetric levels per output channel: OpenVINO's CPU plugin
    then runs every convolution in int8."""
    import openvino as ov
    from openvino import opset13 as ops

    from .quantize import convolutions, weight_scale
    quantized, fed_quantized = {}, set()
    if int8_inputs is not None:
        convs = convolutions(folded)
        if tuple(int8_inputs.shape) != (len(convs), 2):
            raise ModelError(f"the bundle's int8 input ranges ({tuple(int8_inputs.shape)}) do not fit its network "
                             f"({len(convs)} convolutions); calibrate again with `iterseg quantize`.")
        quantized = {id(conv): pair.tolist() for conv, pair in zip(convs, int8_inputs, strict=True)}  # calibrated

    def fake_quantize(node, low, high, levels):
        low, high = ops.constant(np.float32(low)), ops.constant(np.float32(high))
        return ops.fake_quantize(node, low, high, low, high, levels)

    def weights(module):
        if id(module) not in quantized:
            return constant(module.weight)
        weight = module.weight.detach().float()
        if isinstance(module, nn.ConvTranspose2d):  # (C_in, C_out, kh, kw): output channels on axis 1
            bound = (127 * weight_scale(weight.transpose(0, 1))).numpy().reshape(1, -1, 1, 1)
        else:
            bound = (127 * weight_scale(weight)).numpy().reshape(-1, 1, 1, 1)
        return fake_quantize(constant(weight), -bound, bound, 255)

    def quantized_input(node, module):
        if id(module) in quantized and id(module) not in fed_quantized:
            return fake_quantize(node, *activation_bounds(*quantized[id(module)]), 256)
        return node

    def layer(node, module):
        if isinstance(module, nn.Sequential):
            for inner in module:
                node = layer(node, inner)
            return node
        if isinstance(module, nn.ReLU):
            return ops.relu(node)
        if isinstance(module, nn.MaxPool2d):
            return ops.max_pool(node, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]).output(0)
        if isinstance(module, nn.Conv2d):
            pad = module.padding[0]
            conv = ops.convolution(quantized_input(node, module), weights(module), [1, 1], [pad, pad], [pad, pad],
                                   [1, 1])
            return with_bias(conv, module)
        if isinstance(module, nn.ConvTranspose2d):  # weight (C_in, C_out, 2, 2), as OpenVINO takes it
            conv = ops.convolution_backprop_data(quantized_input(node, module), weights(module), strides=[2, 2],
                                                 pads_begin=[0, 0], pads_end=[0, 0], dilations=[1, 1])
            return with_bias(conv, module)
        raise TypeError(f"no OpenVINO operator for {type(module).__name__}")

    def constant(tensor):
        return ops.constant(tensor.detach().float().numpy().astype(np.float32))

    def with_bias(node, module):
        if module.bias is None:
            return node
        return ops.add(node, constant(module.bias.reshape(1, -1, 1, 1)))

    def shared(level):
        """Bounds of skip ``level``, quantized once for both its readers (the next level's first
        convolution, through a max pool, and the concatenation of its fuse block, whose other part
        gets the same bounds so that the concatenation stays int8), or None for a float graph."""
        readers = [folded.down[level][1][0], folded.fuse[len(folded.fuse) - 1 - level][0]]
        if not quantized:
            return None
        fed_quantized.update(id(reader) for reader in readers)
        pairs = [quantized[id(reader)] for reader in readers]
        return activation_bounds(min(low for low, _ in pairs), max(high for _, high in pairs))

    def quantized_to(node, bounds):
        return node if bounds is None else fake_quantize(node, *bounds, 256)

    x = ops.parameter(ov.PartialShape([-1, -1, -1, folded.config.in_channels]), np.float32, name="x")
    skips = [layer(ops.transpose(x, ops.constant(np.array([0, 3, 1, 2], np.int64))), folded.inc)]
    bounds = []
    for level, down in enumerate(folded.down):
        bounds.append(shared(level))
        skips[-1] = quantized_to(skips[-1], bounds[-1])
        skips.append(layer(skips[-1], down))
    y = skips.pop()
    for up, fuse in zip(folded.up, folded.fuse, strict=True):
        y = layer(ops.concat([skips.pop(), quantized_to(layer(y, up), bounds.pop())], 1), fuse)
    return ov.Model([layer(y, folded.head)], [x], "unet")


def activation_bounds(low, high):
    """(low, high) of a 256-level FakeQuantize covering the calibrated [low, high] with 0 on a level (a
    convolution's zero padding stays zero): unsigned [0, 255 s] for a range without negatives (after
    a ReLU), else signed symmetric [-128 s, 127 s], the zero-point-free forms int8 kernels run fastest."""
    low, high = float(low), max(float(high), 0.0)
    if low >= 0:
        step = max(high / 255, 2 ** -12)
        return 0.0, 255 * step
    step = max(max(-low, high) / 127, 2 ** -12)
    return -128 * step, 127 * step


def converted_module(module, in_channels):
    """A user's torch ``module`` (N, C, h, w) -> (N, K, h, w) as an ``openvino.Model`` on one dynamic
    input shape (N, C, h, w), traced by ``ov.convert_model`` on a small zero input."""
    import openvino as ov
    example = torch.zeros(1, in_channels, 32, 32)
    with warnings.catch_warnings():  # the converter traces with torch.jit.trace, deprecated in torch 2.x
        warnings.simplefilter("ignore", DeprecationWarning)
        return ov.convert_model(module, example_input=example, input=[ov.PartialShape([-1, in_channels, -1, -1])])


class OpenVinoNetwork:
    """An ``openvino.Model`` (``unet_graph``: input (N, h, w, C), ``channels_last``; or
    ``converted_module``: input (N, C, h, w)) compiled for the CPU in ``precision`` ('fp32' or 'bf16')
    on ``threads`` threads; call it like the network: x (N, C, h, w) torch tensor -> float32 output
    (torch tensor).

    One model compiled for every shape (dynamic) runs a shape the first time; an input shape met a
    second time gets a model compiled for that shape alone (static: 5-30 % faster; compiled once, in
    0.05-0.3 s), for up to STATIC_SHAPES shapes, the most recent
    kept. So a folder of same-sized images, and the batches of windows, run static from their second
    use on; a shape seen once never pays for a compilation.

    Memory: OpenVINO keeps a model's activation buffers between calls (torch frees them): about 330 MB
    for a 1232^2 input of a width-16 U-Net, and the dynamic model and a static copy would each hold
    theirs. An input of more than LARGE_PIXELS pixels (N * h * w: whole images, stage-1 chunks of a
    slide) therefore runs on a model compiled for its shape at first sight (the dynamic model ran a
    2048^2 image at 0.76x the static one's speed), and only the latest such model is kept;
    ``release_memory`` gives every model's buffers back (the engine calls it after stage 1 and at the
    end of a streamed image, where memory must follow the refined area). Each calling thread gets its
    own inference requests; calls of the dynamic and the large model are serialised with
    ``release_memory``, so a Segmenter shared by threads stays correct."""

    STATIC_SHAPES = 8
    LARGE_PIXELS = 2 ** 20

    def __init__(self, graph, precision, threads, channels_last=True):
        import openvino as ov
        self.core = ov.Core()
        self.config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "INFERENCE_NUM_THREADS": int(threads),
                       "PERFORMANCE_HINT": "LATENCY"}
        self.graph = graph
        self.compiled = self.core.compile_model(graph, "CPU", self.config)
        self.channels_last = channels_last
        self._static = collections.OrderedDict()  # fed shape -> compiled model, or None once seen
        self._lock = threading.Lock()
        self._dynamic_lock = threading.Lock()  # release_memory needs the dynamic model's requests idle
        self._large = None  # (shape, model compiled for it): the latest large input's
        self._local = threading.local()

    def __call__(self, x):
        fed = np.ascontiguousarray((x.permute(0, 2, 3, 1) if self.channels_last else x).numpy(), dtype=np.float32)
        if fed.shape[0] * fed.shape[1] * fed.shape[2] > self.LARGE_PIXELS:
            with self._dynamic_lock:
                return self._infer(self._large_model(fed.shape), fed)
        compiled = self._model_for(fed.shape)
        if compiled is not self.compiled:
            return self._infer(compiled, fed)
        with self._dynamic_lock:
            return self._infer(compiled, fed)

    def _large_model(self, shape):
        """The model compiled for this large input ``shape``, replacing the previous one (its buffers go)."""
        if self._large is None or self._large[0] != shape:
            self._large = None
            graph = self.graph.clone()
            graph.reshape({0: list(shape)})
            self._large = (shape, self.core.compile_model(graph, "CPU", self.config))
        return self._large[1]

    def release_memory(self):
        """Give back the activation buffers every compiled model keeps between calls (the dynamic and the
        large model's once no call is running; a static model's call running in another thread keeps its own)."""
        with self._dynamic_lock:
            self.compiled.release_memory()
            if self._large is not None:
                self._large[1].release_memory()
        with self._lock:
            static = [model for model in self._static.values() if model is not None]
        for model in static:
            try:
                model.release_memory()
            except RuntimeError:  # a request of it is running in another thread: it keeps its buffers
                pass

    def _infer(self, compiled, fed):
        request = self._request(compiled)
        request.infer({0: fed}, share_inputs=True)  # read in place: ``fed`` outlives this synchronous call
        return torch.from_numpy(request.get_output_tensor(0).data.copy())  # the request reuses its buffer

    def _model_for(self, shape):
        """The compiled model that runs inputs of ``shape``: static from the second time on."""
        with self._lock:
            if shape not in self._static:
                self._static[shape] = None  # seen once: the dynamic model runs it
                self._forget_oldest()
                return self.compiled
            self._static.move_to_end(shape)
            if self._static[shape] is None:
                graph = self.graph.clone()
                graph.reshape({0: list(shape)})
                self._static[shape] = self.core.compile_model(graph, "CPU", self.config)
                self._forget_oldest()
            return self._static[shape]

    def _forget_oldest(self):
        """Keep at most 4 * STATIC_SHAPES shapes in mind and STATIC_SHAPES compiled, the most recent."""
        while len(self._static) > 4 * self.STATIC_SHAPES:
            self._static.popitem(last=False)
        compiled = [shape for shape, model in self._static.items() if model is not None]
        for shape in compiled[:max(0, len(compiled) - self.STATIC_SHAPES)]:
            self._static[shape] = None

    def _request(self, compiled):
        """This thread's inference request of ``compiled``."""
        requests = getattr(self._local, "requests", None)
        if requests is None or len(requests) > 2 * self.STATIC_SHAPES:  # let forgotten models go
            requests = self._local.requests = {}
        key = id(compiled)
        if key not in requests or requests[key][0] is not compiled:
            requests[key] = (compiled, compiled.create_infer_request())
        return requests[key][1]
