"""The options of a two-stage run, their defaults and their validation, in one place.

Every caller (API, CLI, batch, evaluation, benchmarks) builds one ``Settings``; ``Settings.check``
turns every bad value into an InputError that says what is allowed, and ``plan`` resolves the
defaults that depend on the image and the model (window side, score, how many windows).

Glossary
    windows   int64 (N, 4) of (y, x, h, w) in full-resolution pixels
    patches   N_p: how many windows are refined (None: 16 unless a budget or threshold decides)
"""
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import InputError
from ..model.runtime import check_backend
from ..model.runtime import report as runtime_report
from .scores import SCORES, default_score

DEFAULT_PATCHES = 16
TIED = "tied"  # patch_size: the source paper's window side, ceil(max(H, W) / patches), tied to the count
DEFAULT_MAX_OVERLAP = 0.25  # with overlapping grid windows (stride < side), unless max_overlap is given


@dataclass(frozen=True)
class Settings:
    """What a two-stage run may be told; see ``Segmenter.predict`` for each option's meaning."""
    patches: int | None = None
    patch_size: int | str | None = None
    score: str | None = None
    stride: int | None = None
    batch_size: int | None = None
    context: int | None = None
    budget: float | None = None
    budget_gmacs: float | None = None
    rounds: int = 1
    threshold: float | None = None
    max_overlap: float | None = None
    precision: str = "auto"
    compile: bool = False
    backend: str = "auto"

    @classmethod
    def from_options(cls, **options):
        """Settings from keyword options, with a one-line InputError for an unknown name."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}.")
        return cls(**{k: v for k, v in options.items() if v is not None}).check()

    def check(self):
        """This Settings, or InputError naming the first bad value."""
        self.check_values()
        check_backend(self.backend, self.precision, self.compile)  # checks the precision too
        return self

    def check_values(self, spell=str):
        """The window, score and budget options checked (all but precision and backend, which loading a
        model checks): this Settings, or InputError naming the first bad value as ``spell(name)`` spells
        it (the command line passes ``--max-overlap`` for ``max_overlap``; the rule and its words are
        the same)."""
        for name, minimum in (("patches", 0), ("patch_size", 1), ("stride", 1), ("batch_size", 1)):
            if getattr(self, name) is not None and not (name == "patch_size" and self.patch_size == TIED):
                _integer(spell(name), getattr(self, name), minimum)
        if self.context is not None:
            _integer(spell("context"), self.context, 0)
        _integer(spell("rounds"), self.rounds, 1)
        for name in ("budget", "budget_gmacs"):
            if getattr(self, name) is not None:
                _positive_finite(spell(name), getattr(self, name))
        _fraction(spell("threshold"), self.threshold, upper_open=False)
        _fraction(spell("max_overlap"), self.max_overlap, upper_open=True)
        if self.score is not None and self.score not in SCORES:
            raise InputError(f"{spell('score')} must be one of {', '.join(SCORES)}, got {self.score!r}.")
        return self

    @property
    def capped_by_count(self):
        """True when only ``patches`` (explicit or the default) decides how many windows are refined."""
        return self.budget is None and self.budget_gmacs is None and self.threshold is None

    def plan(self, shape, channels, size_multiple, window=None, default_patches=None, default_context=None):
        """The settings resolved for an H x W image and a model with ``channels`` output channels (1 for
        binary, K for K > 2 classes), default window side ``window`` (None: the paper's rule, see
        ``default_window_side``), default window count ``default_patches`` (None: resolve_patches) and
        default context ``default_context`` (None: 0): a Plan."""
        score = self.score or default_score(channels)
        if score == "mean" and channels > 1:
            raise InputError("score 'mean' needs a binary model; use --score uncertainty for multi-class models.")
        patches = self.patches
        if patches is None and self.capped_by_count:
            patches = resolve_patches(default_patches)
        tied = default_window_side(shape, patches or DEFAULT_PATCHES, size_multiple)
        size = tied if self.patch_size == TIED else self.patch_size or window or tied
        stride = self.stride or size
        overlap = self.max_overlap if self.max_overlap is not None else (
            DEFAULT_MAX_OVERLAP if stride < size else None)
        context = self.context if self.context is not None else default_context or 0
        return Plan(settings=replace(self, patches=patches, score=score, context=context), size=size, stride=stride,
                    max_overlap=overlap)

    def report(self):
        return {**{k: v for k, v in asdict(self).items() if k != "compile"},
                **runtime_report(self.precision, self.backend, self.compile)}


@dataclass(frozen=True)
class Plan:
    """Settings resolved for one image: window side, grid step and overlap rule."""
    settings: Settings
    size: int
    stride: int
    max_overlap: float | None

    @property
    def blend(self):
        """Overlapping grid windows: refined windows are blended, not pasted."""
        return self.stride < self.size

    def budget_macs(self, baseline_macs):
        """The tightest of the two budgets in MACs (None: no budget)."""
        s = self.settings
        limits = [v for v in (s.budget * baseline_macs if s.budget is not None else None,
                              s.budget_gmacs * 1e9 if s.budget_gmacs is not None else None) if v is not None]
        return min(limits) if limits else None

    def report(self):
        """JSON-ready options as the report shows them."""
        return {**self.settings.report(), "patch_size": int(self.size), "stride": int(self.stride),
                "max_overlap": self.max_overlap, "blended": self.blend}


def resolve_patches(model_patches=None):
    """The window count refined when none is asked: the model's own (``Bundle.patches``, chosen from
    its sweep), else DEFAULT_PATCHES. The one place this default is decided (plan, flops, model cards)."""
    return DEFAULT_PATCHES if model_patches is None else model_patches


def default_window_side(shape, patches, multiple):
    """ceil(max(H, W) / patches) rounded up to ``multiple``: an N_p x N_p grid on a square image."""
    side = math.ceil(max(shape) / max(patches, 1))
    return -(-side // multiple) * multiple


def check_windows(windows, shape):
    """``windows`` as int64 (N, 4) of equal-sized rectangles inside an H x W image, or InputError."""
    windows = np.asarray(windows)
    if windows.ndim != 2 or windows.shape[1] != 4 or not np.issubdtype(windows.dtype, np.integer):
        raise InputError(f"windows must be an integer array of shape (N, 4) holding (y, x, h, w), "
                         f"got {windows.dtype} {windows.shape}.")
    windows = windows.astype(np.int64)
    if len(windows) == 0:
        return windows
    y, x, h, w = windows.T
    if (h != h[0]).any() or (w != w[0]).any() or h[0] < 1 or w[0] < 1:
        raise InputError("windows must all have the same positive height and width.")
    height, width = shape
    if (y < 0).any() or (x < 0).any() or (y + h > height).any() or (x + w > width).any():
        raise InputError(f"windows must lie inside the {height} x {width} image.")
    return windows


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _integer(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _positive_finite(name, value):
    if not _is_number(value) or not 0 < value < math.inf:
        raise InputError(f"{name} must be a finite number > 0, got {value!r}.")


def _fraction(name, value, upper_open):
    if value is None:
        return
    if not _is_number(value) or not (0 <= value < 1 if upper_open else 0 <= value <= 1):
        raise InputError(f"{name} must be a number >= 0 and {'<' if upper_open else '<='} 1, got {value!r}.")
