"""What every command shares: exit codes, the bad-input error, one-line messages."""

from __future__ import annotations

import contextlib
import sys
import warnings

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class InputError(Exception):
    """Bad usage or bad input: one line on stderr and exit code 2."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def error(message: str) -> None:
    print(f"jdeconv: error: {one_line(message)}", file=sys.stderr, flush=True)


def note(args, message: str) -> None:
    """A progress message on stderr, unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def warnings_as_lines():
    """Show warnings as one ``jdeconv: warning:`` line instead of a source dump.

    The warning filters (``-W``, ``PYTHONWARNINGS``) are left as the user set them.
    """

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"jdeconv: warning: {one_line(message)}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():  # restores showwarning on exit
        warnings.showwarning = show
        yield


def shape_text(shape) -> str:
    return "x".join(str(n) for n in shape)
