"""Collection rules for the whole repository (tests/ and the doctests of jdeconv/).

The napari plugin imports napari, magicgui and Qt, which only the optional extra
``jdeconv[napari]`` installs: without them its module is not collected (its tests in
tests/test_napari.py skip themselves with the reason).
"""

import importlib.util

collect_ignore = []
if any(importlib.util.find_spec(name) is None for name in ("napari", "magicgui", "qtpy")):
    collect_ignore.append("jdeconv/_napari.py")
