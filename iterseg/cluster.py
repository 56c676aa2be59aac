"""Many images on a Dask cluster: the images of a folder run as Dask tasks, each one the same
``batch.attempt`` -> ``batch.predict_file`` as local folder mode, so outputs are byte-identical and the
rules (skip, resume, --overwrite, failed images, summary, exit codes) are those of ``batch.FolderRun``.
Local mode and cluster mode differ only in who runs ``predict_file``: this process, or a worker.
This module runs what it is handed (``batch.on_cluster`` hands it the run and ``batch.attempt``)
and imports nothing of batch.py.

Needs the extra ``pip install 'iterseg[dask]'`` (dask + distributed, pure Python).

    from dask.distributed import Client
    import iterseg
    from iterseg import batch
    with Client(n_workers=4, threads_per_worker=1) as client:
        rows = batch.predict_files(iterseg.load("ph2"), batch.expand_inputs(["slides/"]), out, {},
                                   summary_path=out / "summary.csv", client=client)

Who does what
    client   decides skip/run (FolderRun.pending), submits one task per image, takes the results as
             they finish (as_completed), writes summary.csv after each and prints progress. One image
             alone is run here (``FannedOut``), its stage 2 on the workers when its source (opened
             once, by engine/source.open_source) is streamed.
    worker   loads the model once per process (``worker_segmenter``, cached by model + precision),
             runs ``batch.attempt`` on one image and writes its outputs (atomically, report last) into
             the output folder, which must be on a filesystem the workers and the client share.
Faults
    A bad image (IterSegError / OSError) is a "failed" row, never retried. A worker that dies while
    running an image (killed, out of memory) has the image rescheduled on another worker by the
    scheduler, up to its ``distributed.scheduler.allowed-failures`` (set to ``retries`` for the local
    clusters started here); after that the image is a "failed" row (KilledWorker). Any other exception
    raised on a worker is retried ``retries`` times, then propagates (exit 1, as in local mode). A
    rerun redoes what an interrupted one left unfinished: the claim report of an image killed while
    writing marks it not done (batch.done_report).
"""
import contextlib
import functools
import importlib.util
import logging
import math
import threading
from pathlib import Path

import numpy as np

from .engine.refine import Stage2, refine
from .engine.source import TiffSource, model_mpp, open_source
from .errors import InputError, IterSegError

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 2
INSTALL_HINT = "pip install 'iterseg[dask]'"


class WorkerLost(IterSegError):
    """Every worker that ran an image died while running it."""


def require_dask():
    """InputError (one line, exit 2 in the CLI) if dask.distributed is not installed."""
    if importlib.util.find_spec("distributed") is None or importlib.util.find_spec("dask") is None:
        raise InputError(f"--cluster needs Dask, which is not installed: {INSTALL_HINT}")


def parse_cluster(spec):
    """("local", N) for ``local:N``, ("address", spec) for ``tcp://HOST:PORT`` (or tls://, ucx://, inproc://),
    ("file", path) for a scheduler file ``*.json``; InputError otherwise."""
    spec = str(spec)
    if spec.startswith("local:"):
        count = spec.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise InputError(f"--cluster local:N needs a number of workers N >= 1, got {spec!r}.")
        return "local", int(count)
    if "://" in spec:
        return "address", spec
    if spec.endswith(".json"):
        if not Path(spec).is_file():
            raise InputError(f"scheduler file {spec} does not exist; start the scheduler with "
                             f"--scheduler-file {spec} first, or pass --cluster local:N.")
        return "file", spec
    raise InputError(f"--cluster must be local:N, tcp://HOST:PORT or a scheduler file *.json, got {spec!r}.")


@contextlib.contextmanager
def connect(spec, retries=DEFAULT_RETRIES, timeout=30):
    """A ``dask.distributed.Client`` for ``spec`` (see ``parse_cluster``), closed afterwards. ``local:N``
    starts a LocalCluster of N single-threaded worker processes (closed with the client); a worker
    that dies while running an image is tolerated ``retries`` times per image."""
    require_dask()
    import dask
    from distributed import Client, LocalCluster

    kind, value = parse_cluster(spec)
    if kind == "local":
        with dask.config.set({"distributed.scheduler.allowed-failures": retries}), \
                LocalCluster(n_workers=value, threads_per_worker=1, processes=True, dashboard_address=":0",
                             silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(value, timeout=timeout) if kind == "address" else Client(scheduler_file=value, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise InputError(f"cannot reach the Dask scheduler at {spec} ({exc}); start it (dask scheduler) and its "
                         "workers first, or pass --cluster local:N.") from None
    with client:
        yield client


@functools.lru_cache(maxsize=2)
def worker_segmenter(model, precision, compile=False, backend="auto"):
    """The Segmenter of ``model`` (name or bundle path) in ``precision``, loaded once per worker process,
    with glibc's large-allocation thresholds back (model/malloc.py: Dask's
    MALLOC_TRIM_THRESHOLD_ made its workers 1.6x slower per image)."""
    from .api import load
    from .model.malloc import undo_malloc_trim_threshold
    undo_malloc_trim_threshold()
    return load(model, precision=precision, compile=compile, backend=backend)


def preload(model, precision="auto", compile=False, backend="auto"):
    """Load the model on a worker ahead of its first image: ``client.run(preload, *model_spec(segmenter))``."""
    worker_segmenter(model, precision, compile, backend)


def model_spec(segmenter):
    """(model name or path, precision, compile, backend) that a worker loads ``segmenter`` from."""
    if isinstance(segmenter, (str, Path)):
        return str(segmenter), "auto", False, "auto"
    defaults = segmenter.defaults
    return str(segmenter.source), defaults["precision"], defaults["compile"], defaults["backend"]


def image_task(task, model, path, out_dir, options, file_options):
    """One image on a worker: ``task`` (batch.attempt) with the worker's cached Segmenter."""
    return task(worker_segmenter(*model), path, out_dir, options, **file_options)


def run_tasks(client, run, task, model, todo, out_dir, options, file_options, retries, show_progress):
    """One ``image_task`` per image of ``todo`` on ``client``'s workers, each outcome recorded in
    ``run`` (a batch.FolderRun) as it comes. model: ``model_spec`` of the Segmenter."""
    from distributed import as_completed
    from tqdm import tqdm

    count = len(todo)
    futures = client.map(image_task, [task] * count, [model] * count, todo, [out_dir] * count, [options] * count,
                         [file_options] * count, retries=retries, pure=False)
    path_of = {future.key: path for future, path in zip(futures, todo, strict=True)}
    try:
        with tqdm(total=count, desc="images", unit="image", disable=not show_progress, leave=False) as progress:
            for future in as_completed(futures):
                run.record(path_of[future.key], outcome(future))
                progress.update()
    finally:
        client.cancel([future for future in futures if not future.done()])


def outcome(future, tasks="image"):
    """The task's result: ("done", report) / ("failed", exception) for an image; ("failed", WorkerLost)
    for a task whose workers all died."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as exc:
        return "failed", WorkerLost(f"every worker that ran this {tasks} died ({exc}); see the workers' logs "
                                    "(out of memory?)")


# --- one gigapixel image across workers -------------------------------------------------------------
# Glossary (see engine/loop.py): windows int64 (N, 4) of (y, x, h, w); window_probs float32 (K, N, h, w)
# stage-2 probabilities; boxes int64 (N, 4) the network inputs; coarse the stage-1 CoarseMap.

class FannedOut:
    """A Segmenter whose streamed predictions (``predict(path or TiffSource, stream=True)``) run stage 1,
    selection and merging here and stage 2 on ``client``'s workers, in chunks of windows that each
    worker reads from the shared file; everything else is the wrapped ``segmenter``'s, run here.
    ``batch.predict_file`` takes it like a Segmenter, so the outputs are written here, by one
    process, as in local mode."""

    def __init__(self, client, segmenter, retries=DEFAULT_RETRIES):
        self.client, self.retries = client, retries
        self.segmenter = worker_segmenter(*model_spec(segmenter)) if isinstance(segmenter, (str, Path)) else segmenter

    def __getattr__(self, name):
        return getattr(self.segmenter, name)

    def predict(self, image, patches=None, stream=False, **options):
        if not stream:
            return self.segmenter.predict(image, patches, **options)
        return predict_tiled(self.client, self.segmenter, image, patches, retries=self.retries, **options)


def predict_tiled(client, segmenter, path, patches=None, chunk=None, retries=DEFAULT_RETRIES, max_pixels=None,
                  **options):  # path: a tiled TIFF's path, or its open engine/source.TiffSource
    """``Segmenter.predict_tiled`` with stage 2 fanned out to ``client``'s workers: stage 1, the
    selection and the mask options run here (``Segmenter.predict`` with another refiner), each chunk
    of ``chunk`` windows (default: about four chunks per worker) is one task that reads its boxes from
    ``path`` (which the workers must see) and returns their probabilities, merged here. Same windows,
    masks and report options as one process. Returns a Result."""
    tiles = []  # tiles each task read on its worker
    file = path.path if isinstance(path, TiffSource) else path  # the workers open it themselves, seen as here
    seen = {"max_pixels": max_pixels, "intensity": options.get("intensity", "dtype"),
            "mpp": model_mpp(segmenter.bundle.mpp, options.get("resolution", "model"))}
    refiner = functools.partial(_fan_out, client, model_spec(segmenter), str(file), seen, chunk, retries, tiles)
    result = segmenter.predict(path, patches, stream=True, max_pixels=max_pixels, refiner=refiner, **options)
    result.tiles_read = (result.tiles_read or 0) + sum(tiles)  # here (stage 1) and on the workers (stage 2)
    return result


def chunk_size(windows, workers, batch_size=None):
    """Windows per task: about four tasks per worker, a whole number of batches when ``batch_size`` is set."""
    size = max(1, math.ceil(windows / max(1, 4 * workers)))
    return math.ceil(size / batch_size) * batch_size if batch_size else size


def _fan_out(client, model, path, seen, chunk, retries, tiles, stage2, windows, progress=None):
    """An engine/refine.Refiner whose windows are computed on the workers (``stage2``'s runner and
    source stay here); appends to ``tiles`` how many tiles each task read. seen: how the workers open
    ``path`` (``worker_source``'s max_pixels, intensity, mpp), as the source here was."""
    from distributed import as_completed

    size = chunk or chunk_size(len(windows), len(client.scheduler_info()["workers"]), stage2.batch_size)
    pieces = [windows[start:start + size] for start in range(0, len(windows), size)]
    shared = client.scatter(stage2.coarse, broadcast=True) if stage2.bundle.conditioned else None
    futures = [client.submit(refine_task, model, path, seen, shared, piece, stage2.context, stage2.batch_size,
                             pure=False, retries=retries) for piece in pieces]
    sizes = {future.key: len(piece) for future, piece in zip(futures, pieces, strict=True)}
    for future in as_completed(futures):
        if future.status == "error":
            _, lost = outcome(future, tasks="chunk of windows")  # raises the task's own error
            raise lost
        if progress:
            progress(sizes[future.key])
    results = client.gather(futures)
    tiles.extend(read for _, _, read in results)
    return (np.concatenate([probs for probs, _, _ in results], axis=1),
            np.concatenate([boxes for _, boxes, _ in results]))


@functools.lru_cache(maxsize=8)
def worker_source(path, channels, max_pixels, intensity, mpp, stamp, thread):
    """The streamed source of ``path`` opened once per worker thread as the client's was (engine/source.
    open_source: ``max_pixels``, ``intensity``, the model's ``mpp``); a file handle is not shared between
    threads; ``stamp``: size and mtime, so a replaced file is opened again."""
    return open_source(path, channels, stream=True, max_pixels=max_pixels, intensity=intensity, mpp=mpp)


def refine_task(model, path, seen, coarse, windows, context, batch_size):
    """Stage 2 of ``windows`` of the TIFF at ``path`` on a worker: (window_probs, boxes, tiles read);
    seen: see ``_fan_out``."""
    segmenter = worker_segmenter(*model)
    bundle = segmenter.bundle
    info = Path(path).stat()
    source = worker_source(path, bundle.in_channels, seen["max_pixels"], seen["intensity"], seen["mpp"],
                           (info.st_size, info.st_mtime_ns), threading.get_ident())
    s2 = bundle.runners(*model[1:])[1]
    before = source.tiles_read
    window_probs, boxes = refine(Stage2(s2, bundle, source, coarse, context, batch_size), windows)
    return window_probs, boxes, source.tiles_read - before
