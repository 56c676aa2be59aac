"""The ``iterseg`` command: ``predict``, ``flops``, ``models``, ``train``, ``evaluate``, ``quantize``.

``main(argv) -> int`` parses, runs one command (one module each, ``add_parser`` + ``run``), prints;
exit codes: 0 ok, 2 bad input or usage (one line on stderr saying what is wrong and what to do),
1 internal error, 130 interrupted (Ctrl-C or SIGTERM). Building the parser imports neither torch
nor NumPy (each command imports the library in its ``run``), so ``--help`` and ``--version`` are fast.
"""
import argparse
import logging
import signal
import sys
import threading
import traceback

from .. import __version__
from ..errors import IterSegError
from . import evaluate, flops, models, predict, quantize, train
from .options import EXAMPLES, Parser, UsageError

log = logging.getLogger("iterseg")

COMMANDS = (predict, flops, models, train, evaluate, quantize)  # in the order --help lists them


def build_parser():
    parser = Parser(prog="iterseg", description="Two-stage segmentation of high-resolution images.",
                    epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"iterseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(subparsers).set_defaults(run=command.run)
    return parser


def main(argv=None):
    """Run the command line with ``argv`` (default sys.argv[1:]); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    configure_logging(debug, quiet="--quiet" in argv)
    restore = _terminate_as_interrupt()
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except (UsageError, IterSegError) as exc:
        if debug:
            traceback.print_exc()
        print(f"iterseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("iterseg: interrupted; finished outputs are kept, none is half-written.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into exit code 1
        if debug:
            traceback.print_exc()
        print(f"iterseg: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
              "traceback and report it)", file=sys.stderr)
        return 1
    finally:
        restore()


class _Formatter(logging.Formatter):
    def format(self, record):
        return f"iterseg: {record.levelname.lower()}: {record.getMessage()}"


def configure_logging(debug=False, quiet=False):
    """Log records of the ``iterseg`` loggers go to stderr as 'iterseg: level: message': warnings
    and errors by default, errors only with --quiet, everything with --debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO)
    log.propagate = False


def _terminate_as_interrupt():
    """Make SIGTERM (a scheduler stopping the job) unwind like Ctrl-C, so the temporary files of
    unfinished outputs are removed; returns the function that restores the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def run():
    """Console-script entry point."""
    sys.exit(main())
