"""What every command shares: exit codes, the error types, one-line messages, progress."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class InputError(Exception):
    """Bad usage or bad input: one line on stderr and exit code 2."""


class Failure(Exception):
    """A failure while running whose message says what to do: one line, exit code 1."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def error(message: str) -> None:
    print(f"jdeconv: error: {one_line(message)}", file=sys.stderr, flush=True)


def note(args, message: str) -> None:
    """A progress message on stderr, unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def shape_text(shape) -> str:
    return "x".join(str(n) for n in shape)


class Progress:
    """Which outputs of the command are finished: the end of the interrupt line.

    A command lists its ``(input, output)`` pairs with :meth:`plan` once they are
    checked and calls :meth:`done` when an output is written (inside
    :func:`jdeconv._signals.commit`, so an interrupt sees it either finished or not).

    Example:
      >>> p = Progress()
      >>> p.plan([("a.tif", "a_deconv.tif"), ("b.tif", "b_deconv.tif")])
      >>> p.done("a_deconv.tif")
      >>> p.describe()
      'finished 1 of 2 (a_deconv.tif); not run or not finished: b.tif.'
    """

    def __init__(self):
        self.items: list[tuple[str, str]] = []
        self.finished: list[str] = []

    def plan(self, pairs) -> None:
        self.items = [(str(i), str(o)) for i, o in pairs]
        self.finished = []

    def done(self, output) -> None:
        self.finished.append(str(output))

    def describe(self) -> str:
        if not self.finished:
            return "nothing was written."
        left = [i for i, o in self.items if o not in self.finished]
        text = f"finished {len(self.finished)} of {len(self.items)} ({', '.join(self.finished)})"
        if left:
            text += f"; not run or not finished: {', '.join(left)}"
        return text + "."


#: The running command's progress (one command per process).
progress = Progress()
