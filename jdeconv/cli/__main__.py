"""``python -m jdeconv.cli``: the command line (see :mod:`jdeconv.cli`)."""

import sys

from . import main

if __name__ == "__main__":  # not on import (pytest --doctest-modules imports every module)
    sys.exit(main())
