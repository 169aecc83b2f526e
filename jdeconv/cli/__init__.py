"""The ``jdeconv`` command line: deconvolve, predict, psf, simulate and demo.

Run ``jdeconv --help`` or ``jdeconv COMMAND --help``. Exit codes: 0 success, 1 a failure
while running (e.g. a write error or a bug; ``--debug`` shows the traceback), 2 bad usage
or bad input. Bad input is reported as one line on stderr naming the file and the
problem, without a traceback.

The heavy imports (JAX, Flax, matplotlib) happen inside the commands so that ``--help``
and usage errors answer at once.

Layout: :mod:`.parser` builds the parser from one module per command (``deconvolve``,
``predict``, ``psf``, ``simulate``, ``demo``; each has ``add_parser`` and ``run``);
``_options`` holds the shared options, ``_files`` reading and writing, ``_psf`` the PSF
of ``--psf``/``--psf-model``, ``_common`` exit codes and messages.
"""

from __future__ import annotations

import os
import sys
import traceback

from ._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, InputError, error, warnings_as_lines
from .parser import build_parser

__all__ = ["main", "build_parser", "InputError"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits for --help (0) and usage errors (2)
        return _exit_code(stop.code)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug = getattr(args, "debug", False) or bool(os.environ.get("JDECONV_DEBUG"))
    with warnings_as_lines():
        try:
            return args.run(args)
        except InputError as err:
            error(str(err))
            return EXIT_USAGE
        except KeyboardInterrupt:
            error("interrupted.")
            return 130
        except Exception as err:  # a failure while running: summarise, traceback on request
            if debug:
                traceback.print_exc()
            hint = "" if debug else " (run with --debug for the traceback)"
            error(f"failed: {type(err).__name__}: {err}{hint}")
            return EXIT_FAILURE


def _exit_code(code) -> int:
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_USAGE
