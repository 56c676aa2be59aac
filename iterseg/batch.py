"""Predict files and folders: inputs on disk -> outputs on disk, one image at a time, and a summary.

Glossary
    inputs   files, folders (their image files, sorted) and glob patterns, as given on the command line
    outputs  per image STEM: mask, probabilities, overlay and report, written atomically (the report
             last, so an existing report means the image is done)
    row      one line of the summary: image, status (done / skipped / failed), reason, cost, seconds
The output folder is the user's data: files named like our outputs inside it are never read as inputs
(so --out may be the input folder), a file we did not write (no report of ours lists it) is never
overwritten, temporary files of killed runs are removed, and the summary keeps a row for every image
ever run into it (summary.py). Many processes may run into one output folder at once (a job array,
``shard``): each image is claimed by one of them (claims.py) and computed once.
Each file is opened once, by engine/source.open_source, which decides whether it is streamed (tiled TIFFs
above STREAM_PIXELS, whole-slide and OME-Zarr images: engine/source.TiffSource) and carries its metadata;
the outputs ask that source. A streamed image's mask is a tiled pyramidal OME-TIFF (the input's
physical pixel size carried over; disk/metadata.py), NGFF labels for an OME-Zarr, and their overlay is at
stage-1 scale; a GeoTIFF's mask is a GeoTIFF with its georeferencing.
Probabilities (OME-TIFF) and contours (GeoJSON) are written only on request, for every image.
"""
import contextlib
import glob
import json
import logging
import os
import time
from pathlib import Path

from .claims import Claims, remove_stale_partials
from .disk.images import check_image_file
from .disk.ngff import NGFF_SUFFIX, is_ngff, write_mask_labels
from .disk.outputs import (
    OUTPUT_TILE,
    PARTIAL,
    default_tint,
    overview,
    write_geojson,
    write_json,
    write_mask,
    write_mask_tiff,
    write_overlay,
    write_probs,
)
from .disk.pyramid import pyramid_tiles, write_mask_pyramid, write_probs_pyramid
from .disk.slide import SLIDE_SUFFIXES
from .engine.loop import bar
from .engine.source import model_mpp, open_source
from .errors import InputError, IterSegError, naming
from .postprocess import mask_options
from .report import result_report
from .summary import SUMMARY_FIELDS, SUMMARY_NAME, Shard, read_summary, summary_row, write_merged
from .timer import Timer, peak_rss_mb

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".btf", ".tf8", ".bmp", ".gif", ".ppm", ".pgm",
                  ".pbm", ".webp", ".jp2", NGFF_SUFFIX) + SLIDE_SUFFIXES
# see output_paths
OUTPUT_ENDINGS = (".mask.png", ".mask.tif", ".mask.zarr", ".overlay.png", ".probs.tif", ".report.json")
MERGE_SECONDS = 1.0  # summary.csv is merged at most this often during a run (and at its end)
WRITING = "writing"  # status of the claim report written before the outputs (see _predict_file)


def is_output_name(path):
    """True for names iterseg writes into an output folder (outputs, summary, temporary files)."""
    name = Path(path).name
    return name.endswith(OUTPUT_ENDINGS) or name == SUMMARY_NAME or bool(PARTIAL.match(name))


def _same_folder(a, b):
    try:
        return b is not None and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _candidates(found, out_dir):
    """Image files among ``found`` (sorted), leaving out what we wrote into ``out_dir`` ourselves."""
    images = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or is_ngff(p)))
    ours = [p for p in images if is_output_name(p) and _same_folder(p.parent, out_dir) or PARTIAL.match(p.name)]
    if ours:
        log.debug("left out %d files named like iterseg outputs in %s", len(ours), out_dir)
    return [p for p in images if p not in ours], len(ours)


def expand_inputs(items, out_dir=None):
    """Image paths from files, folders (non-recursive, sorted) and glob patterns; InputError if an
    item matches nothing. Files of folders and patterns that lie in ``out_dir`` and are named like
    our outputs (``*.mask.png``, ``*.overlay.png``, ``*.probs.tif``, ...) are left out, so that the
    input folder may also be the output folder; files named one by one are always taken."""
    paths = []
    for item in map(str, items):
        path = Path(item)
        if path.is_dir() and not is_ngff(path):
            found, left = _candidates(_listing(path), out_dir)
            if not found:
                raise InputError(f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                                 + (f" but {left} outputs of iterseg" if left else "") + ".")
            paths += found
        elif not path.exists() and glob.has_magic(item):
            found, left = _candidates(map(Path, glob.glob(item)), out_dir)
            if not found:
                raise InputError(f"pattern {item!r} matches no image files"
                                 + (f" but {left} outputs of iterseg" if left else "") + ".")
            paths += found
        else:
            check_image_file(path)
            paths.append(path)
    return check_stems(paths)


def _listing(folder):
    """The entries of ``folder``, or InputError that says why it cannot be listed."""
    try:
        return list(folder.iterdir())
    except OSError as exc:
        raise InputError(f"cannot list folder {folder} ({exc.strerror or exc}); check its permissions (listing "
                         "needs read and execute permission for you).") from None


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


def output_paths(out_dir, stem, streamed, save_probs, geojson=False, mask_format=None):
    """{kind: path}: mask (``mask_format``, default PNG, pyramidal OME-TIFF when streamed; see
    ``mask_format``), probabilities (OME-TIFF) only when asked for, overlay, the mask's contours
    (STEM.contours.geojson) when asked for, and the report."""
    kinds = [("mask", mask_format or ("tif" if streamed else "png")), ("overlay", "png"), ("report", "json")]
    if save_probs:
        kinds.insert(1, ("probs", "tif"))
    if geojson:
        kinds.insert(-1, ("contours", "geojson"))
    return {kind: out_dir / f"{stem}.{kind}.{ext}" for kind, ext in kinds}


def mask_format(path, streamed, metadata):
    """The mask's file type: 'zarr' (NGFF labels) for an OME-Zarr input, 'tif' for a streamed
    image (pyramidal OME-TIFF) or a GeoTIFF (a GeoTIFF with its tags), else 'png'."""
    if is_ngff(path):
        return "zarr"
    return "tif" if streamed or metadata.geotags else "png"


def class_palette(bundle):
    """The bundle's palette for a multi-class model (K > 2), None for a binary one."""
    return bundle.palette if bundle.s2.config.out_channels > 1 else None


def _predict(segmenter, source, options, baseline, show):
    """The Result of ``source`` (engine/source.Source): two-stage, or the baseline with the mask options."""
    if baseline:
        return segmenter.predict_baseline(source, **mask_options(options))
    streamed = not source.in_memory
    return segmenter.predict(source, stream=streamed, show_progress=show and streamed, **options)


def write_outputs(result, source, outputs, bundle, show, tint=None):
    """Write mask, probabilities (if asked for), overlay, contours (if asked for); returns the
    foreground fraction. A streamed result (``source`` not in memory) is written tile by tile as
    pyramidal OME-TIFFs, its overlay and contours at stage-1 scale. The source's metadata
    (disk/metadata.Metadata) is carried into the TIFFs (pixel size; a GeoTIFF's georeferencing onto
    the mask); tint: overlay colour (default: disk/outputs.default_tint)."""
    palette = class_palette(bundle)
    tint = tint or default_tint(bundle)
    pixel_size = source.metadata.pixel_size
    foreground = write_mask_file(result, source, outputs["mask"], bundle, show)
    if not source.in_memory:
        tiles = pyramid_tiles(*result.shape, OUTPUT_TILE)
        if "probs" in outputs:
            with bar(tiles, "writing probabilities", "tile", show) as progress:
                write_probs_pyramid(outputs["probs"], result, bundle.num_classes, progress.update, pixel_size)
        small_image, small_mask, small_windows = overview(result)
        write_overlay(outputs["overlay"], small_image, small_mask, small_windows, palette, tint)
        if "contours" in outputs:
            scale = (result.shape[0] / small_mask.shape[0], result.shape[1] / small_mask.shape[1])
            write_geojson(outputs["contours"], small_mask, bundle.class_names, scale)
            result.notes.append(f"contours traced on the {small_mask.shape[1]} x {small_mask.shape[0]} overview "
                                "(stage-1 scale), in full-resolution pixel coordinates")
        return foreground
    if "probs" in outputs:
        write_probs(outputs["probs"], result.probs, pixel_size)
    write_overlay(outputs["overlay"], source.pixels, result.mask, result.windows, palette, tint)
    if "contours" in outputs:
        write_geojson(outputs["contours"], result.mask, bundle.class_names)
    return foreground


def write_mask_file(result, source, path, bundle, show):
    """Write the mask at ``path`` in the format its suffix names (see ``mask_format``); returns the
    foreground fraction. NGFF labels and a streamed result's OME-TIFF are written tile by tile."""
    metadata = source.metadata
    if path.suffix == ".zarr":
        return write_mask_labels(path, result.shape, result.mask_at, bundle.class_names, metadata.pixel_size)
    if not source.in_memory:
        with bar(pyramid_tiles(*result.shape, OUTPUT_TILE), "writing mask", "tile", show) as progress:
            return write_mask_pyramid(path, result, bundle.num_classes, progress.update, metadata.pixel_size,
                                      metadata.geotags)
    if path.suffix == ".tif":
        write_mask_tiff(path, result.mask, bundle.num_classes, metadata.pixel_size, metadata.geotags)
    else:
        write_mask(path, result.mask, class_palette(bundle))
    return float((result.mask > 0).mean())


def done_report(path, out_dir):
    """The report of ``path`` in ``out_dir`` if the image is done, else None (no report, or only the
    claim written before the outputs, left by a run killed while writing them)."""
    done = _done(path, out_dir)
    return done[0] if done else None


def _done(path, out_dir):
    """(report path, its dict or None when unreadable) if ``path`` is done in ``out_dir``, else None;
    the report is read once."""
    report = Path(out_dir) / f"{Path(path).stem}.report.json"
    if not report.exists():
        return None
    found = _read_report(report)
    return (report, found) if found is None or found.get("status") != WRITING else None


def _read_report(path):
    """The report dict at ``path``, or None if it is missing or not a report of ours."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and isinstance(report.get("outputs"), dict) else None


def check_ours(outputs):
    """InputError if a file ``outputs`` would replace exists and is not ours: only files that an
    existing report of ours lists are; anything else (the user's ``scan.mask.png`` beside ``scan.png``,
    leftovers of a killed run) is never overwritten."""
    present = [path for path in outputs.values() if path.exists()]
    if not present:
        return
    report = _read_report(outputs["report"]) or {}
    listed = {Path(p).name for p in report.get("outputs", {}).values() if isinstance(p, str)}
    foreign = [p for p in present if p.name not in listed and not (p == outputs["report"] and report)]
    if foreign:
        raise InputError(f"{foreign[0]} exists and was not written by iterseg for this image (no report of ours "
                         "lists it); nothing was overwritten: move it away, or choose another --out.")


def predict_file(segmenter, path, out_dir, options, baseline=False, stream="auto", save_probs=False,
                 show_progress=False, max_pixels=None, geojson=False, overlay_colour=None):
    """Segment one file and write its outputs (the report last); returns the report dict. Refuses
    (InputError) to replace files that are not ours; max_pixels: see disk/images.check_pixels.
    geojson: also write the mask's contours; overlay_colour: (r, g, b) of the overlay's tint."""
    out_dir = output_folder(out_dir)
    with naming(path), writing_to(out_dir):
        return _predict_file(segmenter, Path(path), out_dir, options, baseline, stream, save_probs, show_progress,
                             max_pixels, {"geojson": geojson, "tint": overlay_colour})


def _predict_file(segmenter, path, out_dir, options, baseline, stream, save_probs, show_progress, max_pixels,
                  writing=None):
    writing = writing or {}
    mpp = model_mpp(segmenter.bundle.mpp, options.get("resolution", "model"))
    with contextlib.closing(open_source(path, segmenter.bundle.in_channels, "never" if baseline else stream,
                                        max_pixels=max_pixels, intensity=options.get("intensity", "dtype"),
                                        mpp=mpp)) as source:
        streamed = not source.in_memory
        log.debug("%s: %s", path, "streamed" if streamed else "read whole")
        outputs = output_paths(out_dir, Path(path).stem, streamed, save_probs, writing.get("geojson", False),
                               mask_format(path, streamed, source.metadata))
        check_ours(outputs)
        result = _predict(segmenter, source, options, baseline, show_progress)
        # the claim: a report listing the outputs before they are written, so that a run killed while
        # writing them leaves files a rerun knows as ours (and redoes), not foreign ones it must refuse
        write_json(outputs["report"], {"image": str(path), "status": WRITING,
                                       "outputs": {k: str(v) for k, v in outputs.items()}})
        timer = Timer()
        with timer("write"):
            foreground = write_outputs(result, source, outputs, segmenter.bundle, show_progress, writing.get("tint"))
    report = result_report(result, path, source.stored_shape, model_info(segmenter), outputs, foreground)
    report["image"].update(source.metadata.report())
    report["seconds_writing"] = round(timer.seconds["write"], 4)
    report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if result.tiles_read is not None:
        report["tiles_read"] = result.tiles_read
    write_json(outputs["report"], report)
    return report


def model_info(segmenter):
    bundle = segmenter.bundle
    return {"name": bundle.name, "source": segmenter.source, "classes": list(bundle.class_names),
            "s1_scale": bundle.s1_scale, "mpp": bundle.mpp, "untrained": bundle.untrained,
            "conditioned_s2": bundle.conditioned, "baseline": bundle.baseline_kind}


def _skipped_row(path, report_path, report, previous):
    """The summary row of an image skipped because its report exists: with the numbers of that
    ``report`` (or of the earlier summary's row when the report could not be read)."""
    reason = f"{report_path.name} exists (use --overwrite to redo it)"
    with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):  # another version's report
        if report is not None:
            return summary_row(path, "skipped", reason, report)
    old = previous.get(str(path), {})
    return {**{k: v for k, v in old.items() if k in SUMMARY_FIELDS}, **summary_row(path, "skipped", reason)}


def shard_of(paths, shard):
    """The part ``shard`` = (I, N) of ``paths`` (1 <= I <= N): every N-th path from the I-th, so N
    processes given the same paths and shards 1/N ... N/N each take their own and together all."""
    index, count = shard
    return list(paths)[index - 1::count]


def predict_files(segmenter, paths, out_dir, options, overwrite=False, summary_path=None, on_done=None,
                  on_error=None, client=None, **file_options):
    """Run ``predict_file`` over ``paths``: skip images whose report exists (unless ``overwrite``) and
    images another live process has claimed (claims.py: many processes may run on one folder into one
    output folder), carry on past an image that fails with a bad-input error, and after every image
    add its row to the summary CSV (summary.py: one row per image, whichever process ran it; merged
    at most every MERGE_SECONDS and at the end, also of an interrupted run), so an interrupted run
    keeps everything it finished; a summary that cannot be written does not stop the
    run (logged; InputError at the end). on_done(report) and on_error(path, exception) are told of
    each image. client: a ``dask.distributed.Client`` to run the images on its workers instead of
    here (``on_cluster``; same rules, same outputs). Returns the rows of the images this process ran
    or skipped, in the order of ``paths`` (images claimed by another live process have none)."""
    with FolderRun(paths, out_dir, overwrite, summary_path, on_done, on_error) as run:
        if client is not None:
            on_cluster(client, run, segmenter, out_dir, options, **file_options)
        else:
            for path in run.pending():
                run.record(path, attempt(segmenter, path, out_dir, options, **file_options))
        return run.finish()


def on_cluster(client, run, segmenter, out_dir, options, retries=None, show_progress=False, **file_options):
    """The images ``run`` (a FolderRun) has pending, run on ``client``'s workers (iterseg/cluster.py):
    one ``attempt`` task per image, or, for one image alone, its attempt here with the windows of a
    streamed source fanned out to them (cluster.FannedOut), its outputs written here. segmenter: a
    Segmenter loaded from a bundle path or embedded name
    (each worker loads it again, once), or that name or path; the output folder and the paths must be
    valid on the workers. retries: automatic retries of a task that raised something other than a
    bad-input error (default cluster.DEFAULT_RETRIES); show_progress: a bar of images here."""
    from . import cluster
    retries = cluster.DEFAULT_RETRIES if retries is None else retries
    todo = list(run.pending())
    if len(todo) == 1:  # one image: run here, its stage 2 fanned out to the workers when its source is streamed
        fanned = cluster.FannedOut(client, segmenter, retries=retries)
        run.record(todo[0], attempt(fanned, todo[0], out_dir, options, show_progress=show_progress, **file_options))
        return
    cluster.run_tasks(client, run, attempt, cluster.model_spec(segmenter), todo, out_dir, options,
                      {**file_options, "show_progress": False}, retries, show_progress)


def attempt(segmenter, path, out_dir, options, **file_options):
    """``predict_file`` with a bad input turned into an outcome: ("done", report) or ("failed", the
    IterSegError or OSError). Anything else (a bug) propagates. Local and cluster mode both call this
    (cluster.image_task on the workers)."""
    try:
        return "done", predict_file(segmenter, path, out_dir, options, **file_options)
    except (IterSegError, OSError) as exc:
        return "failed", exc


def skip_row(path, out_dir, overwrite, previous):
    """The one skip/run decision: the "skipped" row of ``path`` if its report exists and not
    ``overwrite`` (numbers from that report, else from ``previous`` summary rows), None to run it."""
    done = None if overwrite else _done(path, out_dir)
    if done is None:
        return None
    log.debug("%s: skipped, %s exists", path, done[0])
    return _skipped_row(path, *done, previous)


class FolderRun:
    """The bookkeeping of one folder run, whoever runs the images (this process, or a cluster's
    workers): which images to run (``pending``: not done, and claimed here), one row per image
    (``record``, which adds it to the summary, releases the claim and tells on_done / on_error), and
    the end (``finish``). A context manager: leaving it releases the claims still held."""

    def __init__(self, paths, out_dir, overwrite=False, summary_path=None, on_done=None, on_error=None):
        self.paths, self.out_dir, self.overwrite = list(paths), Path(out_dir), overwrite
        self.summary_path, self.on_done, self.on_error = summary_path, on_done, on_error
        self.order = {path: index for index, path in enumerate(self.paths)}
        output_folder(out_dir)  # claims are made in it before any image is run
        remove_stale_partials(out_dir)
        self.claims = Claims(out_dir)
        self.shard = Shard(Path(summary_path).parent) if summary_path else None  # beside the summary it feeds
        self.previous = read_summary(summary_path) if summary_path else {}
        self.started = time.time()
        self.rows, self.unwritten, self.summary_failure = {}, [], None
        self.unmerged, self.next_merge = False, 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Release the claims still held; after an interrupt, merge what the summary lacks."""
        self.claims.close()
        if self.unmerged:
            with contextlib.suppress(OSError):
                write_merged(self.summary_path)

    def pending(self):
        """The paths to run, in order, each claimed (a generator: skipped images are recorded as it
        reaches them, and written with the next image's row or at the end, as are images done by another
        process since: a task of an interrupted run may finish one after its client has gone; images
        claimed by another live process are left to it)."""
        for path in self.paths:
            row = skip_row(path, self.out_dir, self.overwrite, self.previous)
            if row is not None:
                self._add_skipped(path, row)
            elif self._claim(path):
                yield path

    def _add_skipped(self, path, row):
        self.rows[self.order[path]] = row
        self.unwritten.append(row)

    def _claim(self, path):
        """True if ``path`` is now claimed here and still to do (not done by another process meanwhile;
        with overwrite: not redone by one since this run started)."""
        stem = Path(path).stem
        if self.claims.take(stem) is None:
            log.debug("%s: claimed by another process, left to it", path)
            return False
        report = _done(path, self.out_dir)
        if report and (not self.overwrite or _mtime(report[0]) >= self.started):
            log.debug("%s: done by another process meanwhile", path)
            self.claims.release(stem)
            self._add_skipped(path, _skipped_row(path, *report, self.previous))  # its runner may be gone
            return False
        return True

    def record(self, path, outcome):
        """Record an outcome of ``attempt`` (("done", report) or ("failed", exception)) for ``path``."""
        status, value = outcome
        reason = "" if status == "done" else str(value)
        row = summary_row(path, status, reason, value if status == "done" else None)
        self.rows[self.order[path]] = row
        self.unwritten.append(row)
        self._write()
        self.claims.release(Path(path).stem)
        if status == "done" and self.on_done:
            self.on_done(value)
        elif status == "failed" and self.on_error:
            self.on_error(path, value)

    def _write(self, final=False):
        """Add the rows recorded since the last write to this process's shard, and merge the summary
        when ``final`` or when the last merge is old enough: MERGE_SECONDS, and 20 times what it took
        (a merge reads every row of the folder), so merging takes at most 5 % of the run."""
        rows, self.unwritten = self.unwritten, []
        if not self.summary_path:
            return
        try:
            self.shard.append(rows)
            self.unmerged = True
            if final or time.monotonic() >= self.next_merge:
                start = time.monotonic()
                write_merged(self.summary_path)
                self.unmerged, self.next_merge = False, time.monotonic() + max(MERGE_SECONDS,
                                                                                20 * (time.monotonic() - start))
        except OSError as exc:
            if self.summary_failure is None:
                log.error("cannot write the summary %s (%s); carrying on with the images", self.summary_path,
                          exc.strerror or exc)
            self.summary_failure = exc.strerror or str(exc)

    def ordered(self):
        """The rows recorded so far, in the order of the paths."""
        return [self.rows[index] for index in sorted(self.rows)]

    def finish(self):
        """This run's rows; InputError, saying what was written, if the summary could not be."""
        if self.unwritten or self.unmerged or self.summary_failure:
            self._write(final=True)
        if self.summary_failure:
            counts = count_rows(self.ordered())
            raise InputError(f"cannot write the summary {self.summary_path} ({self.summary_failure}); of "
                             f"{len(self.rows)} images {counts['done']} were written, {counts['failed']} failed "
                             f"and {counts['skipped']} were done before: free space or remove what is in the "
                             "summary's place, then rerun to finish.")
        return self.ordered()


def count_rows(rows):
    """{status: how many rows have it} for done, skipped and failed."""
    return {status: sum(row["status"] == status for row in rows) for status in ("done", "skipped", "failed")}


def _mtime(path):
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0
