"""The argument parser of ``jdeconv``: one sub-command per module of this package."""

from __future__ import annotations

import argparse

from .. import __version__
from . import deconvolve, demo, predict, psf, simulate
from ._options import Formatter, Parser

# The order of the commands in ``jdeconv --help``.
COMMANDS = (deconvolve, predict, psf, simulate, demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``jdeconv`` (one sub-command per task)."""
    parser = Parser(
        prog="jdeconv",
        description=(
            "Self-supervised single-image deconvolution (Noise2Self / Noise2Same through the "
            "PSF) in JAX."
        ),
        epilog=(
            "Exit codes: 0 success, 1 failure while running, 2 bad usage or bad input.\n"
            "Start with: jdeconv demo --quick"
        ),
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"jdeconv {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser
