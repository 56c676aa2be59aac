"""From probabilities to the mask a user keeps: the probability cut-off (binary models) and the usual
clean-up, removing small connected components and filling holes.

Glossary
    mask     uint8 (H, W) class ids (0/1 for binary)
    cutoff   binary models: a pixel is foreground when its foreground probability is >= cutoff
    min_size connected components (8-connected) of any class but 0 smaller than this many pixels
             become background
    holes    background regions (4-connected) enclosed by one class, not touching the image border;
             filled with that class
The clean-up needs the whole mask in memory: a streamed result (written tile by tile) refuses it.
"""
import cv2
import numpy as np

from .errors import InputError

# The options that make the mask from the probabilities: Segmenter.predict's keywords, the CLI's
# --cutoff, --min-size, --fill-holes (same names), the only ones predict_baseline shares with predict
MASK_OPTIONS = ("cutoff", "min_size", "fill_holes")


def mask_options(options):
    """{name: value} of the mask options (MASK_OPTIONS) given in ``options`` (a dict of keyword
    options; None counts as not given)."""
    return {name: options[name] for name in MASK_OPTIONS if options.get(name) is not None}


def check_mask_options(cutoff=None, min_size=0, fill_holes=False, classes=2, streamed=False):
    """InputError (one line: what is wrong and what to do) for options that cannot apply; returns
    the cut-off to use (0.5 when None)."""
    if cutoff is not None and not (isinstance(cutoff, (int, float)) and 0 < cutoff < 1):
        raise InputError(f"cutoff must be a probability between 0 and 1 (exclusive), got {cutoff!r}.")
    if cutoff is not None and classes > 2 and cutoff != 0.5:
        raise InputError(f"--cutoff (cutoff=) applies to binary models; this model has {classes} classes, whose "
                         "mask is the most probable class: leave it out.")
    if not isinstance(min_size, (int, np.integer)) or isinstance(min_size, bool) or min_size < 0:
        raise InputError(f"min_size must be a whole number of pixels >= 0, got {min_size!r}.")
    if streamed and (min_size or fill_holes):
        raise InputError("--min-size and --fill-holes need the whole mask in memory, which a streamed image never "
                         "has: leave them out, or pass --stream never to read the image whole.")
    return 0.5 if cutoff is None else float(cutoff)


def remove_small(mask, min_size):
    """``mask`` with every connected component (8-connected, per class) under ``min_size`` pixels set
    to 0; returns (mask, how many components were removed)."""
    out, removed = mask.copy(), 0
    for value in np.unique(mask[mask > 0]):
        count, labels, stats, _ = cv2.connectedComponentsWithStats((mask == value).astype(np.uint8), connectivity=8)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < min_size) + 1
        if len(small):
            out[np.isin(labels, small)] = 0
            removed += len(small)
    return out, removed


def fill_holes(mask):
    """``mask`` with background regions (4-connected) that do not touch the border and are enclosed by
    a single class filled with that class; returns (mask, how many holes were filled)."""
    out, filled = mask.copy(), 0
    for value in np.unique(mask[mask > 0]):
        background = (out != value).astype(np.uint8)
        count, labels = cv2.connectedComponents(background, connectivity=4)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        holes = np.setdiff1d(np.arange(1, count), border)
        if len(holes):
            inside = np.isin(labels, holes) & (out == 0)
            out[inside] = value
            filled += len(holes)
    return out, filled


def clean(mask, min_size=0, holes=False):
    """(cleaned mask, notes): small components removed first, then holes filled."""
    notes = []
    if min_size:
        mask, removed = remove_small(mask, min_size)
        notes.append(f"removed {removed} connected components smaller than {min_size} px")
    if holes:
        mask, filled = fill_holes(mask)
        notes.append(f"filled {filled} holes")
    return mask, notes


def finish(result, cutoff=0.5, min_size=0, holes=False):
    """Apply the cut-off and clean-up to ``result`` (engine/loop.Result) in place; records them in
    ``result.options`` and ``result.notes``; returns ``result``."""
    result.cutoff = cutoff
    result.options.update(cutoff=cutoff, min_size=int(min_size), fill_holes=bool(holes))
    if min_size or holes:
        mask, notes = clean(result.mask, min_size, holes)
        result.mask = mask  # replaces the cached property's value
        result.notes.extend(notes)
    return result
