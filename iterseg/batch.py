"""Predict files and folders: inputs on disk -> outputs on disk, one image at a time, and a summary.

Glossary
    inputs   files, folders (their image files, sorted) and glob patterns, as given on the command line
    outputs  per image STEM: mask, probabilities, overlay and report, written atomically (the report
             last, so an existing report means the image is done)
    row      one line of the summary: image, status (done / skipped / failed), reason, cost, seconds
Tiled TIFFs above STREAM_PIXELS are streamed (engine/source.TiffSource): their mask is a tiled pyramidal BigTIFF,
their probabilities are written only on request and their overlay is at stage-1 scale.
"""
import contextlib
import csv
import glob
import io
import logging
import os
from pathlib import Path

import tifffile

from .disk.images import check_image_file, quiet_tifffile, read_image
from .disk.outputs import (
    OUTPUT_TILE,
    atomic_output,
    overview,
    write_json,
    write_mask,
    write_mask_pyramid,
    write_overlay,
    write_probs,
    write_probs_pyramid,
)
from .disk.tiff import TiledImage, pyramid_tiles, tiled_reason
from .engine.loop import bar
from .errors import InputError, IterSegError
from .report import result_report
from .timer import Timer, peak_rss_mb

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".btf", ".tf8", ".bmp", ".gif", ".ppm", ".pgm",
                  ".pbm", ".webp", ".jp2")
STREAM_PIXELS = 4096 * 4096  # stream='auto' streams tiled TIFFs larger than this
STREAM_MODES = ("auto", "always", "never")
SUMMARY_FIELDS = ("image", "status", "reason", "windows", "macs_ratio", "foreground_fraction", "seconds",
                  "peak_rss_mb", "streamed")


def expand_inputs(items):
    """Image paths from files, folders (non-recursive, sorted) and glob patterns; InputError if an
    item matches nothing."""
    paths = []
    for item in map(str, items):
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise InputError(f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
            paths += found
        elif not path.exists() and glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"pattern {item!r} matches no image files.")
            paths += found
        else:
            check_image_file(path)
            paths.append(path)
    return check_stems(paths)


def check_stems(paths):
    """``paths`` without repeats; InputError if two different files would write the same outputs."""
    unique = list(dict.fromkeys(paths))
    by_stem = {}
    for path in unique:
        other = by_stem.setdefault(path.stem, path)
        if other != path:
            raise InputError(f"{other} and {path} would both write {path.stem}.*; rename one or run them "
                             "into different --out folders.")
    return unique


def output_folder(path):
    """``path`` created if missing and checked writable, or InputError that says to choose another."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {out} ({exc.strerror}); choose another with --out.") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"output folder {out} is not writable; choose another with --out.")
    return out


@contextlib.contextmanager
def writing_to(out_dir):
    """Turn an operating-system error while writing outputs into an InputError that says what to do."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or out_dir
        raise InputError(f"cannot write {where} ({exc.strerror or exc}); check the free space and "
                         f"permissions of the output folder {out_dir}, or choose another with --out.") from None


def output_paths(out_dir, stem, streamed, save_probs):
    kinds = [("mask", "tif" if streamed else "png"), ("overlay", "png"), ("report", "json")]
    if save_probs or not streamed:
        kinds.insert(1, ("probs", "tif"))
    return {kind: out_dir / f"{stem}.{kind}.{ext}" for kind, ext in kinds}


def stream_decision(path, mode):
    """(stream?, note for the report or None) for ``path`` under ``mode`` (auto / always / never)."""
    if mode == "never":
        return False, None
    reason = tiled_reason(path)
    if reason:
        large = mode == "always" or tiff_pixels(path) > STREAM_PIXELS
        return False, (f"read whole: {reason}" if large else None)
    if mode == "always":
        return True, None
    with TiledImage(path) as source:
        pixels = source.shape[0] * source.shape[1]
    return pixels > STREAM_PIXELS, None


def tiff_pixels(path):
    """Pixels of a TIFF's first image from its header (0 if it is not a readable TIFF)."""
    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            return int(tif.pages[0].imagelength) * int(tif.pages[0].imagewidth)
    except Exception:  # noqa: BLE001 - not a TIFF, or damaged: the reader will say what is wrong
        return 0


def class_palette(bundle):
    """The bundle's palette for a multi-class model (K > 2), None for a binary one."""
    return bundle.palette if bundle.s2.config.out_channels > 1 else None


def _predict(segmenter, path, options, baseline, streamed, show):
    """(Result, the image as read or None when streamed)."""
    if streamed:
        return segmenter.predict(path, stream=True, show_progress=show, **options), None
    image = read_image(path)
    return (segmenter.predict_baseline(image) if baseline else segmenter.predict(image, **options)), image


def write_outputs(result, image, outputs, bundle, show):
    """Write mask, probabilities (if asked for), overlay; returns the foreground fraction. A streamed
    result (``image`` None) is written tile by tile as pyramidal TIFFs, its overlay at stage-1 scale."""
    palette = class_palette(bundle)
    if image is None:
        tiles = pyramid_tiles(*result.shape, OUTPUT_TILE)
        with bar(tiles, "writing mask", "tile", show) as progress:
            foreground = write_mask_pyramid(outputs["mask"], result, bundle.num_classes, progress.update)
        if "probs" in outputs:
            with bar(tiles, "writing probabilities", "tile", show) as progress:
                write_probs_pyramid(outputs["probs"], result, bundle.num_classes, progress.update)
        write_overlay(outputs["overlay"], *overview(result), palette=palette)
        return foreground
    write_mask(outputs["mask"], result.mask, palette)
    if "probs" in outputs:
        write_probs(outputs["probs"], result.probs)
    write_overlay(outputs["overlay"], image, result.mask, result.windows, palette)
    return float((result.mask > 0).mean())


def predict_file(segmenter, path, out_dir, options, baseline=False, stream="auto", save_probs=False,
                 show_progress=False):
    """Segment one file and write its outputs (the report last); returns the report dict."""
    out_dir = output_folder(out_dir)
    with writing_to(out_dir):
        return _predict_file(segmenter, Path(path), out_dir, options, baseline, stream, save_probs, show_progress)


def _predict_file(segmenter, path, out_dir, options, baseline, stream, save_probs, show_progress):
    streamed, note = (False, None) if baseline else stream_decision(path, stream)
    log.debug("%s: %s%s", path, "streamed" if streamed else "read whole", f" ({note})" if note else "")
    outputs = output_paths(out_dir, Path(path).stem, streamed, save_probs)
    result, image = _predict(segmenter, path, options, baseline, streamed, show_progress)
    timer = Timer()
    with timer("write"):
        foreground = write_outputs(result, image, outputs, segmenter.bundle, show_progress)
    if note:
        result.notes.append(note)
    report = result_report(result, path, result_shape(result, image), model_info(segmenter), outputs, foreground)
    report["seconds_writing"] = round(timer.seconds["write"], 4)
    report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if result.tiles_read is not None:
        report["tiles_read"] = result.tiles_read
    write_json(outputs["report"], report)
    return report


def result_shape(result, image):
    """(H, W[, C]) of the image as stored."""
    if image is not None:
        return image.shape
    channels = result.view.shape[2:] if result.view is not None else ()
    return tuple(result.shape) + tuple(channels)


def model_info(segmenter):
    bundle = segmenter.bundle
    return {"name": bundle.name, "source": segmenter.source, "classes": list(bundle.class_names),
            "s1_scale": bundle.s1_scale, "untrained": bundle.untrained, "conditioned_s2": bundle.conditioned,
            "baseline": bundle.baseline_kind}


def summary_row(path, status, reason="", report=None):
    row = {"image": str(path), "status": status, "reason": reason}
    if report:
        row.update(windows=len(report["windows"]), macs_ratio=round(report["macs"]["ratio"], 6),
                   foreground_fraction=round(report["foreground_fraction"], 6),
                   seconds=report["seconds"]["total"], peak_rss_mb=report["peak_rss_mb"],
                   streamed=bool(report["options"].get("streamed", False)))
    return row


def write_summary(path, rows):
    """The summary rows as CSV, written atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(path) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")


def predict_files(segmenter, paths, out_dir, options, overwrite=False, summary_path=None, on_done=None,
                  on_error=None, **file_options):
    """Run ``predict_file`` over ``paths``: skip images whose report exists (unless ``overwrite``),
    carry on past an image that fails with a bad-input error, and rewrite the summary CSV after every
    image, so an interrupted run keeps everything it finished. on_done(report) and
    on_error(path, exception) are told of each image. Returns the summary rows."""
    rows = []
    for path in paths:
        report_path = out_dir / f"{path.stem}.report.json"
        if report_path.exists() and not overwrite:
            log.debug("%s: skipped, %s exists", path, report_path)
            rows.append(summary_row(path, "skipped", f"{report_path.name} exists (use --overwrite to redo it)"))
        else:
            try:
                report = predict_file(segmenter, path, out_dir, options, **file_options)
                rows.append(summary_row(path, "done", "", report))
                if on_done:
                    on_done(report)
            except (IterSegError, OSError) as exc:
                rows.append(summary_row(path, "failed", str(exc)))
                if on_error:
                    on_error(path, exc)
        if summary_path:
            write_summary(summary_path, rows)
    return rows
