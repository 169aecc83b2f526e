"""Atomic file writes and output locks: the one way jdeconv writes a file.

- :func:`atomic_write` writes a temporary file beside the target and moves it into
  place: a reader never sees half a file, and an error or an interrupt leaves no
  temporary file (it is registered with :mod:`jdeconv._signals`). With
  ``overwrite=False`` the move is an *exclusive* hard link (``os.link`` fails if the
  target exists), so of two writers of one new file exactly one succeeds and the other
  gets ``FileExistsError`` — no result is replaced silently. On file systems without
  hard links it falls back to a check and a rename (a narrow race remains there).
- :func:`acquire_lock` claims an output for one process before any work starts: it
  creates ``<output>.lock`` with ``O_CREAT | O_EXCL`` (atomic on local file systems and
  NFSv3+) holding ``"<pid> <host>"``. A second process that wants the same output finds
  the lock and is refused at once, instead of both training and one result being lost.
  Creating the lock also proves the folder is writable. A lock whose process is gone
  (same host, pid not running: a crash or ``kill -9``) is stale and taken over.
  :func:`release_lock` removes it; so does an interrupt.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import _signals

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "acquire_lock",
    "release_lock",
    "lock_path",
    "LockedError",
]

# errno values of file systems that cannot hard-link (FAT/exFAT, some network shares).
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[str], object], *, overwrite: bool = True) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it there.

    A reader never sees half a file and a failure (or Ctrl-C) leaves the old file, if
    any, untouched: the data are flushed to disk (fsync) before the move makes them
    visible, and the temporary file is removed on any error. The file gets the
    permissions a plain ``open()`` would give it (``mkstemp`` makes it private).

    Args:
      path: the file to write.
      write: writes the content to the temporary path it is given.
      overwrite: replace an existing ``path`` (``os.replace``); if False, the move is an
        exclusive link and an existing ``path`` raises ``FileExistsError``.

    Raises:
      FileExistsError: ``overwrite`` is False and ``path`` exists (also when another
        process created it while ``write`` ran).

    Example:
      >>> import tempfile, pathlib
      >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
      >>> atomic_write(p, lambda tmp: pathlib.Path(tmp).write_text("hi"))
      >>> p.read_text()
      'hi'
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise _exists(path)
    with _signals.commit():  # no interrupt between creating and registering it
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        _signals.track(tmp)
    os.close(fd)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_current_umask())
        with _signals.commit():
            if overwrite:
                os.replace(tmp, path)
            else:
                _link_exclusive(tmp, path)
            _signals.untrack(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        _signals.untrack(tmp)
        raise


def _exists(path: Path) -> FileExistsError:
    return FileExistsError(
        errno.EEXIST,
        f"{path} already exists and was not replaced; pass overwrite=True to replace it "
        "or choose another name",
        str(path),
    )


def _link_exclusive(tmp: str, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError as err:
        if err.errno not in _NO_LINKS:
            raise
        if os.path.lexists(path):  # no hard links here: check, then rename
            raise _exists(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write_bytes(path, data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`).

    Example:
      >>> import tempfile, pathlib
      >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
      >>> atomic_write_bytes(p, b"x")
    """
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), overwrite=overwrite)


def atomic_write_text(path, text: str, *, overwrite: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`).

    Example:
      >>> import tempfile, pathlib
      >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.md"
      >>> atomic_write_text(p, "# title")
    """
    atomic_write(
        path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=overwrite
    )


# --------------------------------------------------------------------------- locks


class LockedError(FileExistsError):
    """Another process holds the lock of an output (``holder``: its "pid host", or "")."""

    def __init__(self, target: Path, lock: Path, holder: str):
        self.target, self.lock, self.holder = target, lock, holder
        who = f"process {holder.split()[0]}" if holder else "another process"
        where = f" on {holder.split()[1]}" if len(holder.split()) > 1 else ""
        super().__init__(
            errno.EEXIST,
            f"{target} is being written by {who}{where} (lock file {lock}); wait for it to "
            f"finish or choose another output. If no such process runs, delete {lock}",
            str(lock),
        )


def lock_path(target) -> Path:
    """The lock file of ``target``: ``<target>.lock`` beside it."""
    target = Path(target)
    return target.with_name(target.name + ".lock")


def acquire_lock(target) -> Path:
    """Claim ``target`` for this process (module docstring); return the lock file.

    Raises:
      LockedError: another live process holds the lock.
      OSError: the folder does not exist or is not writable (e.g. ``PermissionError``).

    Example:
      >>> import tempfile, pathlib
      >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.tif"
      >>> lock = acquire_lock(target)
      >>> lock.name
      'out.tif.lock'
      >>> release_lock(lock)
    """
    target = Path(target)
    lock = lock_path(target)
    for attempt in range(2):
        try:
            with _signals.commit():  # no interrupt between creating and registering it
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                _signals.track(lock)
        except FileExistsError:
            holder = _holder(lock)
            if attempt == 0 and _is_stale(holder):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            raise LockedError(target, lock, holder) from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        return lock
    raise LockedError(target, lock, _holder(lock))


def release_lock(lock) -> None:
    """Remove a lock made by :func:`acquire_lock` (missing is fine)."""
    with _signals.commit():
        with contextlib.suppress(FileNotFoundError):
            Path(lock).unlink()
        _signals.untrack(lock)


def _holder(lock: Path) -> str:
    try:
        return lock.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _is_stale(holder: str) -> bool:
    """A lock is stale when it names a process of this host that no longer runs."""
    parts = holder.split()
    if len(parts) != 2 or not parts[0].isdigit() or parts[1] != socket.gethostname():
        return False  # being written, or another host: we cannot tell, so it holds
    pid = int(parts[0])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: it exists
        return False
    return False
