"""Small measured or derived values worth keeping between processes, one JSON file per kind in
$ITERSEG_CACHE (default $XDG_CACHE_HOME/iterseg or ~/.cache/iterseg): the bf16 probe of runtime.py
(probe.json) and the int8 observer map of quantize.py (int8_map.json). Each value is stored under a
key naming everything it depends on (CPU model, torch version, network architecture). A file that
cannot be read or written is ignored: the value is computed again, never wrong, only slower."""
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def cache_dir():
    """$ITERSEG_CACHE, else $XDG_CACHE_HOME/iterseg, else ~/.cache/iterseg."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("ITERSEG_CACHE") or base / "iterseg")


def remembered(file_name, key, compute):
    """The value stored under ``key`` (str) in ``file_name``, or ``compute()`` (JSON-serialisable),
    stored there for the next process."""
    path = cache_dir() / file_name
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if key not in known:
        known[key] = compute()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
            tmp.write_text(json.dumps(known, indent=1))
            os.replace(tmp, path)
        except OSError as error:
            log.info("could not keep %s in %s: %s", key, path, error)
    return known[key]
