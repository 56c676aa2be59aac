"""``python -m iterseg`` is the ``iterseg`` command."""
from .cli import run

run()
