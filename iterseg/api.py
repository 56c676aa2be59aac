"""The Python API: ``load`` a model, then ``Segmenter.predict`` images (paths, arrays, tensors or
tiled TIFFs streamed region by region). A thin layer over engine/loop.py.

Glossary: see engine/loop.py (Result: mask, probs, windows, scores, macs, seconds, options, notes).
"""
import contextlib
import logging
import os
import warnings
from typing import Any

import numpy as np
import torch

from . import postprocess
from .custom import two_stage_inference  # noqa: F401 -- your own networks, re-exported
from .engine import loop
from .engine.cost import align_up, cost_report, count_macs, runs_whole, stage1_size, whole_input
from .engine.infer import auto_batch_size, planned_windows
from .engine.settings import Settings
from .engine.source import model_mpp, open_source
from .errors import InputError
from .model.runtime import check_backend, check_precision, warm_up_kernels
from .model.store import DEFAULT_MODEL, load_bundle

log = logging.getLogger(__name__)
Result = loop.Result
Image = Any  # a path (str or os.PathLike), an (H, W[, C]) array, a torch tensor, or an engine source


@contextlib.contextmanager
def opened(image: Any, bundle, stream: bool = False, max_pixels: int | None = None, intensity: str = "dtype",
           resolution: str = "model"):
    """The source for ``image`` (see engine/source.open_source), closed afterwards if opened here."""
    source = open_source(image, bundle.in_channels, stream, max_pixels=max_pixels, intensity=intensity,
                         mpp=model_mpp(bundle.mpp, resolution))
    try:
        yield source
    finally:
        if source is not image:
            source.close()


def two_stage(image: Image, bundle, windows: np.ndarray | None = None, stream: bool = False,
              show_progress: bool = False, max_pixels: int | None = None, refiner=loop.refine, intensity: str = "dtype",
              resolution: str = "model", **options) -> Result:
    """Segment ``image`` (path, array, tensor or Source) with ``bundle``: stage 1 everywhere, stage 2
    on the windows that most need it. ``stream``: read a tiled TIFF path region by region.
    max_pixels: refuse image files declaring more pixels (default 100 Mpx read whole, 10 Gpx streamed).
    refiner: what runs stage 2 (engine/loop.two_stage; iterseg/cluster.py fans it out to Dask workers).
    intensity: 'dtype' or 'minmax' (engine/source.unit_range). resolution: see engine/source.model_mpp.
    options: see ``Segmenter.predict``. Returns a Result."""
    settings = Settings.from_options(**options)
    with opened(image, bundle, stream, max_pixels, intensity, resolution) as source:
        return loop.two_stage(source, bundle, settings, windows, show_progress, refiner=refiner)


def baseline(image: Image, bundle, chunk: int | None = None, batch_size: int = 1, max_pixels: int | None = None,
             intensity: str = "dtype", resolution: str = "model", **options) -> Result:
    """The full-resolution model over the whole ``image``; a Result with no windows (ratio 1).
    chunk: run it in square chunks of this side (pixels) with receptive-field context, which leaves the
    output unchanged up to float rounding (default: whole, chunks of 2048 px above 4096 x 4096 pixels).
    ``tile=`` is a deprecated name of ``chunk`` (a tile is a TIFF's storage unit)."""
    chunk = _chunk_option(chunk, options, caller_level=3)
    settings = Settings.from_options(**options)
    with opened(image, bundle, max_pixels=max_pixels, intensity=intensity, resolution=resolution) as source:
        return loop.baseline(source, bundle, settings, chunk, batch_size)


def _chunk_option(chunk, options, caller_level):
    """``chunk``, or the value of the deprecated ``tile`` option taken out of ``options`` (with a
    DeprecationWarning pointing at the user's line, ``caller_level`` frames up); InputError when both
    are given and differ."""
    if "tile" not in options:
        return chunk
    tile = options.pop("tile")
    warnings.warn("the baseline's tile= option is now chunk= (a tile is a TIFF's storage unit); tile= will be "
                  "removed", DeprecationWarning, stacklevel=caller_level)
    if chunk is not None and tile is not None and tile != chunk:
        raise InputError(f"chunk={chunk!r} and its deprecated name tile={tile!r} disagree; pass chunk= only.")
    return tile if chunk is None else chunk


def int8_note(bundle, precision) -> str | None:
    """What to tell the user when an int8 bundle runs in another precision (None otherwise): it
    runs, on its int8 weights dequantized to float, so masks stay right but without int8 speed."""
    if not bundle.int8_ranges or str(precision) == "int8":
        return None
    return (f"int8 bundle {bundle.name!r} run in {precision} on its dequantized weights (no int8 speed-up); "
            "pass --precision int8 (precision='int8') to run it in int8")


def _with_int8_note(result: Result, bundle, options: dict) -> Result:
    note = int8_note(bundle, options.get("precision"))
    ran = result.options
    if ran.get("precision") == "int8" and ran.get("backend") == "torch" and ran.get("backend_reason") != "asked":
        note = f"int8 ran on PyTorch's int8 kernels, not OpenVINO's ({ran.get('backend_reason')})"
    if note and note not in result.notes:
        result.notes.append(note)
    return result


def _mask_options(bundle, options: dict) -> tuple:
    """(cutoff, min_size, fill_holes) taken out of ``options`` and checked (postprocess.py)."""
    given = postprocess.mask_options(options)
    for name in postprocess.MASK_OPTIONS:
        options.pop(name, None)
    cutoff = postprocess.check_mask_options(**given, classes=bundle.num_classes, streamed=bool(options.get("stream")))
    return cutoff, given.get("min_size", 0), bool(given.get("fill_holes", False))


def warm_up_networks(bundle, s1, s2):
    """Run each network on zeros: stage 1 once on a small input, stage 2 twice on a batch of the
    bundle's windows as the engine runs them by default. The first call of a network, and of each new
    input shape, sets up kernels and memory (OpenVINO: 2-4x a later call; the second call of a shape
    compiles it statically, openvino_backend.py), which then stays out of the first image's timings.
    A compiled int8 network is left alone (each new shape compiles for minutes)."""
    if getattr(s2, "compiled_int8", False):
        return
    side = align_up(bundle.window or 4 * s2.config.size_multiple, s2.config.size_multiple)
    with torch.inference_mode():
        s1(torch.zeros(1, s1.config.in_channels, 4 * s1.config.size_multiple, 4 * s1.config.size_multiple))
        for _ in range(2):
            s2(torch.zeros(auto_batch_size(side, side), s2.config.in_channels, side, side))


WARM_UP_PIXELS = 16 * 2 ** 20  # a model trained on larger images is not rehearsed at load


def warm_up_image(segmenter, s2):
    """Rehearse one prediction at the model's defaults on a blank image of the size it was trained on
    (``Bundle.image_shape``), as inference servers warm a model up (Triton's model_warmup): the first
    call of a stage-1 input shape compiles it (OpenVINO: 0.05-0.3 s) and a process's first image
    page-faults its fresh buffers; both are paid here, so that the first image of that size costs what
    later ones do (HRF 01_h with the hrf model: 1.6-2.5x a later image without this). Images of other
    sizes pay their own first call. Skipped for int8 networks compiled per shape (minutes): ``s2``,
    the segmenter's stage-2 runner, says."""
    bundle = segmenter.bundle
    shape = bundle.image_shape
    if not shape or shape[0] * shape[1] > WARM_UP_PIXELS or getattr(s2, "compiled_int8", False):
        return
    segmenter.predict(np.zeros(shape + (bundle.in_channels,), np.uint8))


class Segmenter:
    """A loaded bundle with the methods of the public contract (see DESIGN.md)."""

    def __init__(self, bundle, source: str | None = None, precision: str = "auto", compile: bool = False,
                 backend: str = "auto", warm_up: bool = True):
        self.bundle = bundle
        self.source = str(source) if source is not None else bundle.name
        precision = check_precision(precision)
        self.defaults = {"precision": precision, "compile": bool(compile),
                         "backend": check_backend(backend, precision, compile)}
        note = int8_note(bundle, self.defaults["precision"])
        if note:
            log.warning("%s.", note)
        # what every process pays once is paid here, not inside the first image's timings: the numba
        # kernels, the networks prepared for the precision and backend (int8: about 0.5 s per network;
        # OpenVINO: 0.05-0.3 s per network) and fvcore's count of each architecture
        warm_up_kernels()
        runners = bundle.runners(self.defaults["precision"], self.defaults["compile"], self.defaults["backend"])
        warm_up_networks(bundle, *runners)
        for network in bundle.networks().values():
            count_macs(network.config, 1, 1)
        if warm_up:
            warm_up_image(self, runners[1])

    def __repr__(self):
        return (f"Segmenter({self.source!r}, classes={list(self.bundle.class_names)}, "
                f"precision={self.defaults['precision']!r}, backend={self.defaults['backend']!r})")

    def card(self) -> dict:
        """The model card (iterseg/cards.py, as `iterseg models` prints it): task, input, image size
        trained on, training data and licence, test Dice, cost at the default setting, file size."""
        from .cards import model_card
        from .model.store import WEIGHTS_DIR
        path = self.source if os.path.isfile(self.source) else WEIGHTS_DIR / f"{self.source}.pt"
        return model_card(self.bundle, path)

    def predict(self, image: Image, patches: int | None = None, **options) -> Result:
        """Two-stage segmentation of ``image`` (path, (H, W[, C]) array or tensor): a Result.

        patches: how many windows (default: the model's, chosen from its sweep (`iterseg models`), else
        16; with a budget or threshold no cap but theirs; 0 = stage 1 only). patch_size: window side
        (default: the model's, else ceil(max(H, W) / patches) rounded up to the size multiple).
        score: 'mean' | 'uncertainty' (higher = refine first). stride: grid step
        (default the side; below it grid windows overlap, at most ``max_overlap`` (default 0.25) of a
        window's area is shared, and overlapping results are blended). budget / budget_gmacs: at most
        this fraction of the baseline's MACs / this many GMACs in all. rounds: choose the windows in R
        rounds, re-scoring the merged map after each. threshold: refine only windows scoring above it.
        context: pixels of image stage 2 sees around each window (default: the model's, ``Bundle.context``,
        else 0). windows: refine exactly these.
        batch_size: windows per network call. precision, backend, compile: see model/runtime.py.
        stream: read a tiled TIFF path region by region (see ``predict_tiled``). max_pixels: refuse
        image files whose header declares more pixels (default 100 Mpx read whole, 10 Gpx streamed).
        intensity: 'dtype' (default) maps stored values to [0, 1] by dtype (uint8 / 255, uint16 / 65535,
        other integers / their dtype's maximum, floats as given), 'minmax' by each image's own range.
        resolution: 'model' (default) runs an image file whose metadata gives finer pixels than the
        model was trained at (``Bundle.mpp``; e.g. a 40x slide for a 20x model) at the model's pixel
        size, on the file's nearest pyramid level, and says so in the notes; 'native' runs level 0.
        cutoff: binary models' mask is foreground probability >= cutoff (default 0.5); min_size: remove
        connected components under this many pixels; fill_holes: fill enclosed background (both need
        the mask in memory: not with stream=True). See iterseg/postprocess.py."""
        options = {**self.defaults, **options}
        mask_options = _mask_options(self.bundle, options)
        result = two_stage(image, self.bundle, patches=patches, **options)
        return _with_int8_note(postprocess.finish(result, *mask_options), self.bundle, options)

    def predict_tiled(self, path: str | os.PathLike, patches: int | None = None, show_progress: bool = False,
                      **options) -> Result:
        """``predict`` of a tiled (Big)TIFF read region by region, in memory that grows with the refined
        area, not the image; use ``result.mask_at`` / ``probs_at`` rather than the whole map."""
        return self.predict(path, patches, stream=True, show_progress=show_progress, **options)

    def predict_baseline(self, image: Image, **options) -> Result:
        """The full-resolution model over the whole image; options: chunk (square pieces of this side,
        in pixels, run one at a time with receptive-field context: the same output in less memory;
        ``tile`` is its deprecated name), batch_size, precision, and the mask options of ``predict``
        (cutoff, min_size, fill_holes)."""
        options = {**self.defaults, **options}
        options["chunk"] = _chunk_option(options.get("chunk"), options, caller_level=3)
        mask_options = _mask_options(self.bundle, options)
        return _with_int8_note(postprocess.finish(baseline(image, self.bundle, **options), *mask_options),
                               self.bundle, options)

    def macs(self, height: int, width: int, patches: int | None = None, patch_size: int | str | None = None,
             context: int | None = None) -> dict:
        """The cost report for an H x W image without running anything (``planned_macs``)."""
        return planned_macs(self.bundle, height, width, patches, patch_size, context)


def planned_macs(bundle, height: int, width: int, patches: int | None = None, patch_size: int | str | None = None,
                 context: int | None = None) -> dict:
    """The cost report of ``bundle`` for an H x W image without running or preparing its networks
    (windows of the default grid; patches and context: the model's defaults unless given)."""
    return planned_cost(bundle, height, width, patches, patch_size, context)[1]


def planned_cost(bundle, height: int, width: int, patches: int | None = None, patch_size: int | str | None = None,
                 context: int | None = None) -> tuple:
    """(the engine/settings.Plan of a run of ``bundle`` on an H x W image, its cost report), without
    running or preparing the networks: ``planned_macs``, with the window count the plan resolved."""
    s1, s2 = bundle.s1.config, bundle.s2.config
    shape = (height, width)
    # the plan does not depend on what runs the networks: backend torch spares the backend probe
    plan = Settings.from_options(patches=patches, patch_size=patch_size, context=context, backend="torch").plan(
        shape, s2.out_channels, s2.size_multiple, bundle.window, bundle.patches, bundle.context)
    grid, _, window_macs = planned_windows(plan, s2, shape)
    windows = min(plan.settings.patches, len(grid))
    stage2 = (count_macs(s2, *whole_input(s2, shape)) if runs_whole(s2, shape, windows, window_macs)
              else windows * window_macs)
    return plan, cost_report(bundle, shape, count_macs(s1, *stage1_size(shape, bundle.s1_scale)), stage2_macs=stage2)


def load(name_or_path: str | os.PathLike = DEFAULT_MODEL, precision: str = "auto", compile: bool = False,
         backend: str = "auto", warm_up: bool = True) -> Segmenter:
    """A Segmenter for an embedded model name (default 'ph2') or a bundle file path, running its
    networks in ``precision`` ('auto': the fastest for this CPU, 'fp32', 'bf16' or 'int8') on
    ``backend`` ('auto': OpenVINO where installed and measured faster, else 'torch'; or 'openvino'),
    optionally through torch.compile (torch only). warm_up: rehearse a prediction at the size the
    model was trained on (``warm_up_image``), so that the first image of that size runs as fast as
    later ones; False where only one image follows (the CLI), for which it would be spent twice."""
    return Segmenter(load_bundle(name_or_path), source=name_or_path, precision=precision, compile=compile,
                     backend=backend, warm_up=warm_up)
