"""The ``jdeconv`` command line: deconvolve, predict, psf, simulate and demo.

Run ``jdeconv --help`` or ``jdeconv COMMAND --help``. Exit codes: 0 success, 1 a failure
while running (e.g. a write error, training that diverged, or a bug; ``--debug`` shows
the traceback), 2 bad usage or bad input, 130 interrupted by Ctrl-C (SIGINT), 143 by
SIGTERM. Bad input, failures and interrupts are reported as one line on stderr naming
the file and the problem, without a traceback; other libraries' log output is kept off
the terminal (:mod:`._logging`).

Interrupts are handled from the first moment (:mod:`jdeconv._signals`): this module
imports nothing heavy, and ``main`` installs the handler before it imports anything
else. JAX, Flax and matplotlib are imported inside the commands, so ``--help`` and usage
errors answer at once.

Layout: :mod:`.parser` builds the parser from one module per command (``deconvolve``,
``predict``, ``psf``, ``simulate``, ``demo``; each has ``add_parser`` and ``run``);
``_options`` holds the shared options, ``_files`` reading, output checks, locks and
writing, ``_psf`` the PSF of ``--psf``/``--psf-model``, ``_common`` exit codes and
messages, ``_logging`` what reaches the terminal.
"""

from __future__ import annotations

import os
import sys
import traceback

from .. import _signals
from ._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Failure, InputError, error, progress

__all__ = ["main", "build_parser", "InputError"]


def build_parser():
    """The argument parser of ``jdeconv`` (see :mod:`.parser`)."""
    from .parser import build_parser as build

    return build()


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code.

    A SIGINT or SIGTERM does not return: the process prints one line and exits with
    130 or 143 (:mod:`jdeconv._signals`).
    """
    progress.plan([])
    with _signals.handling(progress.describe):
        return _main(argv, own_process=argv is None)


def _main(argv, own_process: bool = False) -> int:
    from ._logging import own_lines

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits for --help (0) and usage errors (2)
        return _exit_code(stop.code)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug = getattr(args, "debug", False) or bool(os.environ.get("JDECONV_DEBUG"))
    with own_lines(debug=debug) as messages:
        try:
            _split_cpu(getattr(args, "cpu_devices", None), own_process)
            code = args.run(args)
        except InputError as err:
            error(str(err))
            return EXIT_USAGE
        except Failure as err:
            if debug:
                traceback.print_exc()
            error(str(err))
            return EXIT_FAILURE
        except KeyboardInterrupt:  # raised by a caller's own handler, e.g. in a notebook
            error("interrupted.")
            return 130
        except Exception as err:  # a failure while running: summarise, traceback on request
            if debug:
                traceback.print_exc()
            hint = "" if debug else " (run with --debug for the traceback)"
            error(f"failed: {type(err).__name__}: {err}{hint}")
            return EXIT_FAILURE
    if code == EXIT_OK:
        messages.report()
    return code


def _split_cpu(n, own_process: bool) -> None:
    """``--cpu-devices``: split the CPU before JAX starts (jdeconv.devices). "auto" acts
    only when the command line runs as its own process (``main()`` from the console
    script or ``python -m jdeconv``): ``main(argv)`` called from Python leaves the
    caller's JAX as it is. An explicit count that cannot be applied is refused."""
    if n is None or (n == "auto" and not own_process):
        return
    from jax._src import xla_bridge

    from ..devices import use_cpu_devices

    if n == "auto" and xla_bridge.backends_are_initialized():
        return
    try:
        use_cpu_devices(n=n)
    except RuntimeError as err:
        raise InputError(f"--cpu-devices {n}: {err}") from err


def _exit_code(code) -> int:
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_USAGE
