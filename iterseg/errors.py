"""Exception types of iterseg. The CLI turns an ``IterSegError`` into one line on stderr and exit code 2."""


class IterSegError(Exception):
    """Base class of the errors iterseg raises on purpose; the message says what to do."""


class InputError(IterSegError, ValueError):
    """An image, path or option that iterseg cannot use."""


class ModelError(IterSegError):
    """A model name or bundle file that cannot be loaded."""
