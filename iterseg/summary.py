"""``OUT/summary.csv``: one row per image of an output folder, whichever process ran it. Many
processes may write into one folder at once (a job array): each appends its rows to its own shard
and merges all shards into summary.csv, renamed into place whole; no lock.

Glossary
    row     {field: value} of SUMMARY_FIELDS: image, status (done / skipped / failed), reason, cost, seconds
    shard   ``OUT/.summary/HOST.PID.xxxxxxxx.jsonl``: the rows of one process, one JSON object a line
            with the time it was recorded; only that process appends to it and nothing rewrites it
    merge   per image, the latest row of all shards (an earlier summary.csv counts as older than any
            shard), except that a "skipped" row never hides the "done" row of the run that did the
            work. After writing it, a process merges again and rewrites while a row came in meanwhile,
            so the last process to finish leaves every row of every process in summary.csv.
"""
import csv
import io
import json
import math
import os
import time
import uuid
from pathlib import Path

from .claims import HOST
from .disk.outputs import atomic_output

SUMMARY_FIELDS = ("image", "status", "reason", "windows", "macs_ratio", "foreground_fraction", "seconds",
                  "peak_rss_mb", "streamed")
SUMMARY_NAME = "summary.csv"
SHARDS = ".summary"
MERGE_TRIES = 5


def summary_row(path, status, reason="", report=None):
    row = {"image": str(path), "status": status, "reason": reason}
    if report:
        row.update(windows=len(report["windows"]), macs_ratio=round(report["macs"]["ratio"], 6),
                   foreground_fraction=round(report["foreground_fraction"], 6),
                   seconds=report["seconds"]["total"], peak_rss_mb=report["peak_rss_mb"],
                   streamed=bool(report["options"].get("streamed", False)))
    return row


def write_summary(path, rows):
    """The summary rows as CSV, written atomically (file names that are not valid UTF-8 keep their bytes)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(path) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8", errors="surrogateescape")


def read_summary(path):
    """{image: row} of an earlier summary CSV ({} if there is none or it cannot be read)."""
    try:
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            return {row["image"]: row for row in csv.DictReader(handle) if row.get("image")}
    except (OSError, csv.Error, KeyError, UnicodeError):
        return {}


class Shard:
    """This process's rows for the summary in ``folder``: ``append(rows)`` adds them, with the time, to
    its own file."""

    def __init__(self, folder):
        self.path = Path(folder) / SHARDS / f"{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.jsonl"

    def append(self, rows):
        self.path.parent.mkdir(exist_ok=True)
        lines = "".join(json.dumps({"time": time.time(), **row}) + "\n" for row in rows)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(lines)


def shard_rows(folder):
    """Every row of every shard in ``folder``, oldest first (a half-written last line is left out)."""
    rows = []
    for path in sorted((Path(folder) / SHARDS).glob("*.jsonl")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("image"), str) and isinstance(row.get("time"), float):
                rows.append(row)
    return sorted(rows, key=lambda row: row["time"])


def merged(summary_path):
    """The rows summary.csv should hold (see the glossary), sorted by image, values as strings."""
    rows = {image: {**row, "time": -math.inf} for image, row in read_summary(summary_path).items()}
    for row in shard_rows(Path(summary_path).parent):
        current = rows.get(row["image"])
        if not (row["status"] == "skipped" and current and current.get("status") == "done"):
            rows[row["image"]] = row
    return [{field: _text(rows[image].get(field)) for field in SUMMARY_FIELDS} for image in sorted(rows)]


def _text(value):
    return "" if value is None else str(value)


def write_merged(summary_path):
    """Merge the shards into ``summary_path`` until a merge after writing finds no new row (at most
    MERGE_TRIES times); returns the rows written. OSError if it cannot be written."""
    rows = merged(summary_path)
    for _ in range(MERGE_TRIES):
        write_summary(summary_path, rows)
        again = merged(summary_path)
        if again == rows:
            break
        rows = again
    return rows
