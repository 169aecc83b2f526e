"""Atomic file writes: the one way jdeconv writes a file (images, models, results)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it.

    A reader never sees half a file and a failure (or Ctrl-C) leaves the old file, if
    any, untouched: the data are flushed to disk (fsync) before the rename makes them
    visible, and the temporary file is removed on any error. The file gets the
    permissions a plain ``open()`` would give it (``mkstemp`` makes it private).

    Example:
      >>> import tempfile, pathlib
      >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
      >>> atomic_write(p, lambda tmp: pathlib.Path(tmp).write_text("hi"))
      >>> p.read_text()
      'hi'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`).

    Example:
      >>> import tempfile, pathlib
      >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
      >>> atomic_write_bytes(p, b"x")
    """
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`).

    Example:
      >>> import tempfile, pathlib
      >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.md"
      >>> atomic_write_text(p, "# title")
    """
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
