"""iterseg: two-stage segmentation of high-resolution images.

Stage 1 segments the whole image at low resolution; the windows of its probability map that most
need it are refined at full resolution by stage 2, in batches, and merged back; fvcore counts what
both stages cost against the full-resolution baseline. The method lives in ``iterseg/engine/``,
one file per step; ``api.py`` is the public entry point.

Names used everywhere: *window* = a square region stage 2 refines, its side *patch_size* (in every
option: CLI, API, bundle defaults) and its count *patches* (N_p) = how many windows are refined;
*tile* = the storage unit of a TIFF, nothing else; *chunk* = a square piece of the baseline's or of
stage 1's input run on its own (with receptive-field context); *classes* = the number of classes K
(2 for a binary model); *channels* = a network's output channels (1 for a binary model, K above 2);
*source* = where pixels come from; *coarse map* = stage-1 probabilities; *score* = how much a window
needs refining (higher = more); *budget* = MACs allowed; *baseline* = the full-resolution network
over the whole image; *intensity* = how stored values map to [0, 1] (by dtype, or 'minmax': each
image's own range).

The public names are imported on first use, so that ``iterseg --help`` answers without loading torch.
"""
import importlib

__version__ = "0.2.0"

_PUBLIC = {
    "load": "api", "Segmenter": "api", "Result": "api", "two_stage": "api", "baseline": "api",
    "two_stage_inference": "api",
    "Bundle": "model.bundle", "UNet": "model.unet", "UNetConfig": "model.unet",
    "load_bundle": "model.store", "read_bundle": "model.store", "save_bundle": "model.store",
    "available_models": "model.store",
    "IterSegError": "errors", "InputError": "errors", "ModelError": "errors",
}
__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    try:  # a subpackage or module (iterseg.api, iterseg.engine, ...), imported on first use
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'iterseg' has no attribute {name!r}")


def __dir__():
    return __all__
