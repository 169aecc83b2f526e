"""What reaches the terminal: jdeconv's own lines, not other libraries' log output.

Inside :func:`own_lines` (the CLI's ``main``):

- jdeconv's warnings are printed at once as one ``jdeconv: warning: ...`` line each (the
  warning filters, ``-W`` and ``PYTHONWARNINGS``, are left as the user set them);
- other libraries' warnings and log records (JAX's "An NVIDIA GPU may be present...",
  absl, tifffile) are collected instead of printed. On an error path nothing of them is
  shown, so an error stays one line. On success the ones we recognise are printed as our
  own line that says what to do (:data:`TRANSLATIONS`); the rest are dropped;
- ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2, so XLA's C++ INFO and WARNING lines stay off
  the terminal too (a value the user set is kept).

With ``--debug`` nothing is collected: every library logs as it would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from ._common import one_line

_PACKAGE = Path(__file__).resolve().parents[1]

#: Third-party messages worth a line on success: (fragment of the message, our line).
TRANSLATIONS = (
    (
        "An NVIDIA GPU may be present",
        "a GPU seems to be present but this JAX has no GPU support, so jdeconv ran on "
        "the CPU; for speed install it with: pip install -U 'jax[cuda12]'.",
    ),
    (
        "A Google TPU may be present",
        "a TPU seems to be present but this JAX has no TPU support, so jdeconv ran on "
        "the CPU; for speed install it with: pip install -U 'jax[tpu]'.",
    ),
)


def warning_line(message) -> None:
    print(f"jdeconv: warning: {one_line(message)}", file=sys.stderr, flush=True)


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "jdeconv" or record.name.startswith("jdeconv."):
            warning_line(record.getMessage())  # ours (none today), shown at once
            return
        try:
            self.messages.append(record.getMessage())
        except Exception:  # a malformed record must not break the run
            pass


def _is_ours(filename: str) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):
        return False


class Messages:
    """What :func:`own_lines` collected; :meth:`report` prints the translated ones."""

    def __init__(self):
        self.collected: list[str] = []

    def report(self) -> None:
        shown = set()
        for message in self.collected:
            for fragment, line in TRANSLATIONS:
                if fragment in message and line not in shown:
                    shown.add(line)
                    warning_line(line)


@contextlib.contextmanager
def own_lines(*, debug: bool = False) -> Iterator[Messages]:
    """Show jdeconv's warnings as one line each; collect other libraries' output."""
    messages = Messages()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if debug else "2")

    def show(message, category, filename, lineno, file=None, line=None):
        if debug or _is_ours(filename):
            warning_line(message)
        else:
            messages.collected.append(str(message))

    root = logging.getLogger()
    collector = None if debug else _Collector()
    with warnings.catch_warnings():  # restores showwarning on exit
        warnings.showwarning = show
        if collector is not None:
            root.addHandler(collector)
        try:
            yield messages
        finally:
            if collector is not None:
                root.removeHandler(collector)
                messages.collected.extend(collector.messages)
