"""What the commands share: the parser class, argument types (numbers, sizes, lists) and the
options several commands take (model, window geometry, precision, data spec).

Nothing here imports torch or NumPy: ``iterseg --help`` builds every command's parser, so the
help texts list models and specs from the installed files and precisions from model/cpu.py.
"""
import argparse
import math
from importlib import resources
from pathlib import Path

from ..model.cpu import BACKENDS, PRECISIONS

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"  # the embedded bundles, as model/store.py reads them

EXAMPLES = """examples:
  iterseg predict image.png --patches 16 --out results/
  iterseg predict scans/*.tif --patches 32 --model my_bundle.pt --score uncertainty
  iterseg flops --size 2048x2048 --patches 16
"""


class UsageError(Exception):
    """Raised instead of argparse's print-usage-and-exit, so ``main`` can return 2 with one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def int_at_least(minimum):
    """Parser of an integer >= ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def number(low, high=None):
    """Parser of a number > low, or of one in [low, high] when ``high`` is given."""
    wanted = f"> {low:g}" if high is None else f"between {low:g} and {high:g}"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {wanted}, got {text!r}") from None
        if not math.isfinite(value) or not (value > low if high is None else low <= value <= high):
            raise argparse.ArgumentTypeError(f"expected a number {wanted}, got {text!r}")
        return value
    return parse


positive_float = number(0)
fraction = number(0, 1)


def integer(text):
    """Parser of any integer: the options of a two-stage run are parsed here and their ranges checked
    by the engine's own rules (``check_settings``)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def real(text):
    """Parser of any number; ranges as for ``integer``."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def check_settings(args, names):
    """The two-stage options ``names`` of ``args`` checked by the code the API checks them with
    (engine/settings.Settings.check_values), before any model is loaded or image read: InputError
    (exit 2, one line) with the API's words, the option spelled as on the command line."""
    from ..engine.settings import Settings
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    Settings(**given).check_values(spell=lambda name: "--" + name.replace("_", "-"))


def pixel_count(text):
    """'200e6', '2.5e8' or '400000000' -> a whole number of pixels >= 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a pixel count such as 200e6, got {text!r}") from None
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"expected a pixel count >= 1 such as 200e6, got {text!r}")
    return int(value)


def add_max_pixels(parser):
    """--max-pixels: the header check of every image file (disk/images.py's limits)."""
    parser.add_argument("--max-pixels", type=pixel_count, default=None, metavar="N",
                        help="refuse image files whose header declares more pixels, before decoding them "
                             "(default 100e6 for images decoded whole, 10e9 for tiled TIFFs streamed)")


def size(text):
    """'HEIGHTxWIDTH' -> (height, width)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 2048x2048, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"height and width must be >= 1, got {text!r}")
    return height, width


def patch_list(text):
    """'0,1,4,16' -> [0, 1, 4, 16] (integers >= 0)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,4,16, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got {text!r}")
    return values


def embedded_models():
    """Names of the embedded models for help texts, from the bundle files (model/store.py's
    ``available_models`` gives the same names but imports torch)."""
    return sorted([path.stem for path in WEIGHTS.glob("*.pt")] + ["untrained"])


def shipped_specs():
    """Names of the shipped data specs for help texts (training/data.py's ``builtin_specs`` gives the
    same names but imports NumPy and OpenCV)."""
    return sorted(p.name[:-5] for p in resources.files("iterseg.data_specs").iterdir() if p.name.endswith(".yaml"))


def add_model(parser):
    """--model NAME|FILE; None when not given: ``chosen_model`` then resolves the default."""
    parser.add_argument("--model", default=None,
                        help=f"embedded model name ({', '.join(embedded_models())}) or bundle file (default ph2)")


def chosen_model(args):
    """--model, or model/store.py's DEFAULT_MODEL when it was not given (resolved when the command
    runs, because model/store.py imports torch)."""
    from ..model.store import DEFAULT_MODEL
    return args.model or DEFAULT_MODEL


def patch_size(text):
    """--patch-size: a side in pixels (checked by ``check_settings``) or 'tied' (engine/settings.TIED)."""
    return text if text == "tied" else integer(text)


def add_geometry(parser):
    """The window options of ``predict`` and ``flops`` (their ranges: ``check_settings``), and --model."""
    parser.add_argument("--patches", type=integer, default=None,  # engine/settings.DEFAULT_PATCHES
                        help="number of windows refined at full resolution (0 = stage 1 only; default: the "
                             "model's, chosen from its sweep (`iterseg models`), else 16; with --budget / "
                             "--threshold no cap but theirs)")
    parser.add_argument("--patch-size", type=patch_size, default=None, metavar="PX",
                        help="window side in pixels (default: the model's window side, which `iterseg models` "
                             "shows); 'tied': ceil(max(H, W) / patches) rounded up to the model's size multiple, "
                             "the source paper's rule, which is also the default of a model without a side")
    parser.add_argument("--context", type=integer, default=None, metavar="PX",
                        help="pixels of surrounding image stage 2 sees around each window (default: the "
                             "model's, measured so that refining every window gives the whole-image result; "
                             "`iterseg models` shows it; else 0)")
    add_model(parser)


def add_score(parser):
    """--score; its names are checked by the library (engine/settings.py), which lists the valid ones."""
    parser.add_argument("--score", default=None, metavar="NAME",
                        help="window score, higher = refine first: mean (default for binary models; highest "
                             "where the window's mean probability is near 0.5) or uncertainty (default for "
                             "multi-class models; the window's mean per-pixel uncertainty)")


def add_precision(parser):
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto (default): the fastest of fp32 and bf16 on this CPU (fp32 without bf16 "
                             "units, e.g. AVX2; bf16 with AMX; measured once with AVX-512 BF16), as the report "
                             "says; fp32: the reference; bf16: bfloat16 autocast, several times faster on CPUs "
                             "with AVX-512 BF16/AMX (much slower without), Dice within ~0.002; int8: an int8 "
                             "bundle made by `iterseg quantize`, run by PyTorch's x86 int8 kernels (no compilation)")


def add_backend(parser):
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="what runs the networks: auto (default): OpenVINO where it is installed and a short "
                             "probe (measured once per CPU and kept) finds it faster than PyTorch in the chosen "
                             "precision, else torch, as the report says; torch: PyTorch (the reference; int8 and "
                             "--compile always run on it); openvino: OpenVINO's CPU plugin")


def add_spec(parser):
    parser.add_argument("--spec", required=True,
                        help=f"shipped spec name ({', '.join(shipped_specs())}) or YAML file")
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="folder the spec's paths are relative to (default $ITERSEG_DATA)")
