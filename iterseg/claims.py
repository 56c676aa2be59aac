"""Claims: which process segments which image of an output folder, so that many processes (a SLURM
or PBS job array, on one machine or many sharing a filesystem) can run on one folder into one --out
and each image is computed once. No lock: a claim is a file created with O_CREAT | O_EXCL, which
one process alone can create (atomic on local filesystems and on NFS v3 and later).

Glossary
    claim       ``OUT/.STEM.claim`` (generation 0), ``OUT/.STEM.claim.1``, ...: one JSON record
                {"pid", "host", "time"} of the process that segments image STEM; removed when the
                image is done or failed
    stale       a claim whose process is gone: same host and its pid no longer runs, or (any host)
                untouched for STALE_SECONDS; a live process touches its claims every HEARTBEAT_SECONDS
    generation  a stale claim is never deleted by another process (a delete would race with a third
                one taking it): the successor creates the next generation instead, which again one
                process alone can do. The holder removes the whole chain when it is done.
    partial     ``.STEM.KIND.xxxxxxxx.partial.EXT``: a temporary file of disk/outputs.atomic_output
"""
import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

from .disk.outputs import PARTIAL

log = logging.getLogger(__name__)

STALE_SECONDS = 600  # a claim or temporary file untouched this long belongs to a process that is gone
HEARTBEAT_SECONDS = 60
HOST = socket.gethostname()
# atomic_output's temporary files of our outputs: (stem, kind) from ".STEM.KIND.xxxxxxxx.partial.EXT"
OUTPUT_PARTIAL = re.compile(r"^\.(.+)\.(mask|overlay|probs|report|contours)\.[0-9a-f]{8}\.partial(\.[A-Za-z0-9]+)?$")


def claim_path(out_dir, stem, generation=0):
    return Path(out_dir) / (f".{stem}.claim" + (f".{generation}" if generation else ""))


def alive(pid):
    """True if a process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def stale(path, now=None):
    """True if the claim at ``path`` belongs to a process that is gone (see the glossary); False while
    it may be alive, also while it cannot be read yet (being written). FileNotFoundError if there is none."""
    if (now or time.time()) - path.stat().st_mtime > STALE_SECONDS:
        return True
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return False
    pid = record.get("pid") if isinstance(record, dict) else None
    if not isinstance(pid, int) or record.get("host") != HOST:
        return False
    return not alive(pid)


class Claims:
    """The claims of this process in ``out_dir``: ``take(stem)`` (the claim's path, or None when a live
    process holds it), ``release(stem)``; a daemon thread touches the held claims every
    HEARTBEAT_SECONDS so that other hosts can tell them alive. ``close`` releases what is left."""

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)
        self.held = {}  # stem -> generation
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = None

    def take(self, stem):
        """Claim image ``stem``: its claim path, or None when a live process holds it."""
        for generation in itertools.count():
            path = claim_path(self.out_dir, stem, generation)
            try:
                handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    if stale(path):
                        continue
                except FileNotFoundError:  # released meanwhile: the image is done; we check that after
                    return self.take(stem)
                return None
            with os.fdopen(handle, "w", encoding="utf-8") as claim:
                json.dump({"pid": os.getpid(), "host": HOST, "time": time.time()}, claim)
            with self._lock:
                self.held[stem] = generation
            self._start_heartbeat()
            return path

    def release(self, stem):
        """Remove the claim of ``stem`` and the stale generations below it."""
        with self._lock:
            generation = self.held.pop(stem, None)
        if generation is None:
            return
        for older in range(generation + 1):
            with contextlib.suppress(OSError):
                claim_path(self.out_dir, stem, older).unlink()

    def close(self):
        self._stop.set()
        for stem in list(self.held):
            self.release(stem)

    def _start_heartbeat(self):
        if self._beat is None:
            self._beat = threading.Thread(target=self._heartbeat, name="iterseg-claims", daemon=True)
            self._beat.start()

    def _heartbeat(self):
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with self._lock:
                held = list(self.held.items())
            for stem, generation in held:
                with contextlib.suppress(OSError):
                    os.utime(claim_path(self.out_dir, stem, generation))


def claimed_by(out_dir, stem):
    """'live', 'stale' or None (no claim) for image ``stem`` in ``out_dir``: live if any generation is."""
    found = None
    for generation in itertools.count():
        path = claim_path(out_dir, stem, generation)
        try:
            if not stale(path):
                return "live"
        except FileNotFoundError:
            return found
        found = "stale"


def remove_stale_partials(out_dir, age=STALE_SECONDS):
    """Delete temporary files of processes that are gone: at once those of an image whose claim is
    stale (its process died), after ``age`` seconds untouched those of no claim (a process that does
    not claim, e.g. the summary's writer, keeps writing to its own). Returns how many."""
    removed, now, verdicts = 0, time.time(), {}
    try:
        found = [path for path in Path(out_dir).iterdir() if ".partial" in path.name]
    except OSError:
        return 0
    for path in found:
        match = OUTPUT_PARTIAL.match(path.name)
        stem = match.group(1) if match else None
        if stem is not None and stem not in verdicts:
            verdicts[stem] = claimed_by(out_dir, stem)
        verdict = verdicts.get(stem)
        with contextlib.suppress(OSError):
            if verdict == "live" or not (path.is_file() or path.is_dir() and PARTIAL.match(path.name)):
                continue
            if verdict == "stale" or (PARTIAL.match(path.name) and now - path.stat().st_mtime > age):
                if path.is_dir():  # an NGFF mask (.mask.zarr) is written as a folder
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed += 1
    if removed:
        log.info("removed %d temporary files of interrupted runs from %s", removed, out_dir)
    return removed

