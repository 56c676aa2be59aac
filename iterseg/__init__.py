"""iterseg: two-stage segmentation of high-resolution images.

Stage 1 segments the image at 1/8 scale; the least certain windows of its probability map are
refined at full resolution by stage 2 in one batch. See ``pipeline.py`` for the method.
"""
__version__ = "0.1.0"

from .errors import InputError, IterSegError, ModelError
from .models import Bundle, UNet, UNetConfig, available_models, load_bundle, read_bundle, save_bundle
from .pipeline import Result, Segmenter, baseline, load, two_stage
from .stream import TiledResult, two_stage_tiled

__all__ = ["load", "Segmenter", "Result", "two_stage", "baseline", "two_stage_tiled", "TiledResult", "Bundle", "UNet", "UNetConfig",
           "load_bundle", "read_bundle", "save_bundle", "available_models", "IterSegError",
           "InputError", "ModelError", "__version__"]
