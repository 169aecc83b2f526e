"""``python -m jdeconv.cli``: the command line (see :mod:`jdeconv.cli`)."""

import sys

from . import main

sys.exit(main())
