"""Exception types of iterseg. The CLI turns an ``IterSegError`` into one line on stderr and exit code 2."""
import contextlib


class IterSegError(Exception):
    """Base class of the errors iterseg raises on purpose; the message says what to do."""


class InputError(IterSegError, ValueError):
    """An image, path or option that iterseg cannot use."""


class ModelError(IterSegError):
    """A model name or bundle file that cannot be loaded."""


@contextlib.contextmanager
def naming(path):
    """Name ``path`` in an InputError raised inside that does not name it yet (an image read into an
    array, then refused for its values, is refused as that file)."""
    try:
        yield
    except InputError as exc:
        if str(path) in str(exc):
            raise
        raise InputError(f"{path}: {exc}") from exc


def describe(exc, limit=120):
    """The first line of an exception's message (at most ``limit`` characters), or what its type
    means when it has none (a MemoryError), for '... (why)' in a message."""
    text = str(exc).strip().splitlines()
    if text:
        return text[0][:limit]
    return "out of memory" if isinstance(exc, MemoryError) else type(exc).__name__
