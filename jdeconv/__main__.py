"""``python -m jdeconv``: the command line (see :mod:`jdeconv.cli`)."""

import sys

from .cli import main

sys.exit(main())
