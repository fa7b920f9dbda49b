"""What every fastrnn console script shares: one error type, one exit mechanism, flag checks.

A bad invocation ends in one line on stderr, ``fastrnn-X: error: ...``, naming the
flag or file and what was expected, never in a traceback:

- exit status 2 (usage): a flag value out of range, an input file that is missing
  or unreadable (a truncated checkpoint, a non-HDF5 ``.h5``), an output location
  that cannot be written (checked before any work starts);
- exit status 1 (runtime): a failure while the work runs (training diverged, the
  disk filled up while writing a checkpoint, a distributed rank died);
- exit status 130: Ctrl-C.

``run_main(prog, parser, run, argv)`` parses the arguments with a ``Parser`` (an
``argparse.ArgumentParser`` whose errors are that one line), calls ``run(args)`` and
turns the known exceptions into the line and the status. The ``*_arg`` helpers are
argparse ``type=`` functions; ``check_writable_dir`` / ``check_writable_file`` probe
an output location by creating (and removing) a file in it.
"""
import argparse
import contextlib
import logging
import math
import os
import sys
import tempfile

__all__ = ["CliError", "Parser", "run_main", "error_line", "positive_int", "non_negative_int",
           "int_at_least", "positive_float", "non_negative_float", "unit_interval",
           "open_unit_interval", "strict_unit_interval", "check_threads", "check_writable_dir",
           "check_writable_file", "describe_os_error"]

USAGE, RUNTIME, INTERRUPTED = 2, 1, 130


class CliError(Exception):
    """A user-facing error: printed as one line; ``status`` 2 (usage) or 1 (runtime)."""

    def __init__(self, message, status=USAGE):
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line ``fastrnn-X: error: ...`` (exit 2).

    A script's top-level parser also has ``--version`` (``fastrnn-X <version>``,
    from ``fastrnn.__version__``); subcommand parsers ('fastrnn-data synth') do not.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if " " not in self.prog:
            from fastrnn import __version__
            self.add_argument("--version", action="version", version=f"{self.prog} {__version__}",
                              help="print the program's name and fastrnn's version, then exit")

    def error(self, message):
        # Subcommand parsers are called 'fastrnn-data synth'; the line names the script.
        sys.stderr.write(error_line(self.prog.split()[0], f"{message} (see --help)") + "\n")
        sys.exit(USAGE)


def error_line(prog, message):
    """``prog: error: message`` on one line (newlines inside the message become '; ')."""
    text = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return f"{prog}: error: {text}"


def run_main(prog, parser, run, argv=None):
    """Parse argv, return run(args) (an exit status); known errors become one line."""
    args = parser.parse_args(argv)
    try:
        status = run(args)
        return 0 if status is None else status
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except CliError as err:
        print(error_line(prog, err), file=sys.stderr)
        return err.status
    except OSError as err:      # the disk filled up, a file vanished, ... while working
        print(error_line(prog, describe_os_error(err)), file=sys.stderr)
        return RUNTIME
    except (FloatingPointError, RuntimeError, ValueError, MemoryError) as err:
        # TrainingDiverged, DistributedError and the library's own argument checks
        print(error_line(prog, err), file=sys.stderr)
        return RUNTIME


def describe_os_error(err, what=None):
    """'what FILE: reason' for an OSError, naming the file when it knows one."""
    reason = err.strerror or str(err) or type(err).__name__
    name = err.filename if err.filename is not None else None
    where = " ".join(str(p) for p in (what, name) if p)
    return f"{where}: {reason}" if where else reason


# ------------------------------------------------------------- argparse types

def _number(text, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        return None
    if kind is float and not math.isfinite(value):
        return None
    return value


def _typed(kind, accept, expected):
    def check(text):
        value = _number(text, kind)
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    check.__name__ = expected   # argparse names the type in some messages
    return check


positive_int = _typed(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _typed(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _typed(float, lambda v: v > 0, "a finite number > 0")
non_negative_float = _typed(float, lambda v: v >= 0, "a finite number >= 0")
unit_interval = _typed(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
open_unit_interval = _typed(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
strict_unit_interval = _typed(float, lambda v: 0 < v < 1, "a number in (0, 1)")


def int_at_least(minimum):
    """The argparse type of an integer >= ``minimum`` (``positive_int`` is the case ``minimum=1``)."""
    return _typed(int, lambda v: v >= minimum, f"an integer >= {minimum}")


def check_threads(n, flag="--threads"):
    """Validate a thread count (fastrnn.threads.check_num_threads when it exists)."""
    from fastrnn import threads
    check = getattr(threads, "check_num_threads", None)
    try:
        if check is not None:   # may clamp (with a warning) or return nothing
            checked = check(n, flag)
            return n if checked is None else checked
        if n < 1:
            raise ValueError(f"{flag} must be an integer number of threads >= 1, got {n}")
        return n
    except (TypeError, ValueError) as err:
        raise CliError(str(err)) from None


# ---------------------------------------------------------- output locations

def _existing_ancestor(path):
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _probe(folder):
    """Create and remove a file in an existing folder (os.access lies for root)."""
    fd, probe = tempfile.mkstemp(prefix=".fastrnn-write-probe-", dir=folder)
    os.close(fd)
    os.unlink(probe)


def check_writable_dir(path, flag):
    """The folder ``path`` exists and is writable, or can be created: else CliError (usage)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise CliError(f"{flag} {path}: expected a folder, but {path} is a file")
    ancestor = _existing_ancestor(path)
    if not os.path.isdir(ancestor):
        raise CliError(f"{flag} {path}: {ancestor} is a file, not a folder")
    try:
        _probe(ancestor)
    except OSError as err:
        raise CliError(f"{flag} {path}: folder {ancestor} is not writable "
                       f"({err.strerror or err})") from None
    return path


def check_writable_file(path, flag):
    """The file ``path`` can be written (created or replaced): else CliError (usage)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise CliError(f"{flag} {path}: expected a file name, but it is a folder")
    try:
        check_writable_dir(os.path.dirname(path), flag)
    except CliError as err:
        raise CliError(f"{flag} {path}: cannot write this file: {str(err).split(': ', 1)[1]}") \
            from None
    if os.path.exists(path):
        try:
            with open(path, "r+b"):
                pass
        except OSError as err:
            raise CliError(f"{flag} {path}: cannot write this file ({err.strerror or err})") \
                from None
    return path


def as_usage_error(fn, *args):
    """``fn(*args)``, its ValueError (a library's check of what the user gave) a CliError."""
    try:
        return fn(*args)
    except ValueError as err:
        raise CliError(str(err)) from None


def write_json(path, doc):
    """Write a JSON document atomically (a half-written report never replaces a whole one)."""
    from fastrnn import _io
    _io.write_json(path, doc, indent=2)


class _ProgressLineHandler(logging.Handler):
    """Prints a library's log lines to stdout without breaking a tqdm progress bar."""

    def emit(self, record):
        from tqdm import tqdm
        tqdm.write(self.format(record), file=sys.stdout)
        sys.stdout.flush()   # progress stays visible when stdout is a file


@contextlib.contextmanager
def printing_log(name, level=logging.INFO):
    """Within the block, print the ``name`` logger's records of ``level`` and above."""
    logger = logging.getLogger(name)
    handler = _ProgressLineHandler(level)
    previous = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]
