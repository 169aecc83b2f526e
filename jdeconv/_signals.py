"""Ctrl-C (SIGINT) and SIGTERM in the command line: one line, exit 130/143, nothing half-written.

Why not the usual ``KeyboardInterrupt``: XLA compiles and runs on threads of its own. When
Python unwound the main thread and finalised the interpreter while those threads were
still compiling, the process printed "interrupted." and then died of a segmentation fault
seconds later. And a Python-level handler runs only when the main thread comes back to
Python bytecode, which during a 20 s compilation it does not.

How it works, inside :func:`handling` (the CLI's ``main`` enters it first thing):

1. SIGINT and SIGTERM get a Python handler that does nothing by itself, and
   :func:`signal.set_wakeup_fd` gets a pipe: the C-level handler writes the signal number
   to it the moment the signal arrives.
2. A watcher thread reads the pipe. It gets the GIL even while the main thread compiles
   or trains (JAX releases it around XLA calls), so it reacts at once.
3. It waits for a :func:`commit` section in progress to end: a result whose training is
   done and which is being written is finished rather than thrown away (writing takes
   a fraction of a second). A second signal skips the wait.
4. It removes every file registered with :func:`track` (temporary files of
   :func:`jdeconv._files.atomic_write`, temporary OME-Zarr folders and the CLI's output
   lock files), so nothing
   half-written and no stale lock is left.
5. It prints one line, ``jdeconv: interrupted by SIGINT (Ctrl-C); <status>``, where the
   status (e.g. which files of a batch were finished) comes from the caller, flushes
   stdout and stderr, and leaves with :func:`os._exit` (``128 + signal``): no unwinding,
   no finalisers, no ``atexit`` — nothing that could touch XLA's threads.

Outside :func:`handling` nothing is installed: importing jdeconv never changes how a
program handles signals, and :func:`track`/:func:`commit` cost a set operation and an
uncontended lock. A signal that the parent process set to be ignored (``SIG_IGN``, e.g.
a background job of a shell script) stays ignored.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["handling", "track", "untrack", "commit", "EXIT_CODES"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Exit status per signal: the shell's convention, 128 + the signal number.
EXIT_CODES = {int(s): 128 + int(s) for s in SIGNALS}
_NAMES = {int(signal.SIGINT): "SIGINT (Ctrl-C)", int(signal.SIGTERM): "SIGTERM"}
_STOP = b"\0"  # written by handling() on the way out: signal numbers are never 0

# Reentrant so that a commit section may write files (which take it too); the watcher,
# another thread, waits on it.
_commit_lock = threading.RLock()
_exit_lock = threading.Lock()
_tracked: set[str] = set()


def track(path) -> None:
    """Remove ``path`` if the process is interrupted before :func:`untrack` is called."""
    with _commit_lock:
        _tracked.add(os.fspath(path))


def untrack(path) -> None:
    """Stop tracking ``path`` (it was renamed into place or removed)."""
    with _commit_lock:
        _tracked.discard(os.fspath(path))


@contextlib.contextmanager
def commit() -> Iterator[None]:
    """A section an interrupt waits for (a second signal does not): finishing a result.

    Example:
      >>> with commit():
      ...     pass
    """
    with _commit_lock:
        yield


@contextlib.contextmanager
def handling(status: Callable[[], str] | None = None, *, prog: str = "jdeconv") -> Iterator[None]:
    """Handle SIGINT/SIGTERM as the module docstring says, for the duration of the block.

    Args:
      status: returns the end of the interrupt line (e.g. "nothing was written"); read
        when the signal arrives, so it may describe progress.
      prog: the line's prefix.

    Outside the main thread (where signals cannot be handled) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    handled = [s for s in SIGNALS if previous[s] is not signal.SIG_IGN]
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        old_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # not the main interpreter
        os.close(read_fd)
        os.close(write_fd)
        yield
        return
    watcher = threading.Thread(
        target=_watch, args=(read_fd, status, prog), name="jdeconv-signals", daemon=True
    )
    watcher.start()
    try:
        for s in handled:
            signal.signal(s, _ignore_here)
        yield
    finally:
        for s in handled:
            signal.signal(s, signal.SIG_DFL if previous[s] is None else previous[s])
        signal.set_wakeup_fd(old_wakeup)
        with contextlib.suppress(OSError):
            os.write(write_fd, _STOP)
        watcher.join(timeout=5)
        os.close(write_fd)
        if not watcher.is_alive():
            os.close(read_fd)


def _ignore_here(signum, frame) -> None:
    """The main thread's handler: the watcher thread does the work (module docstring)."""


def _watch(read_fd: int, status, prog: str) -> None:
    waiting = False
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:
            return
        for number in data:
            if number == _STOP[0]:
                return
            if number not in EXIT_CODES:
                continue
            if not waiting:  # wait for a result being written, then leave
                waiting = True
                threading.Thread(
                    target=_leave_after_commit, args=(number, status, prog), daemon=True
                ).start()
            else:  # a second signal: leave now
                _leave(number, status, prog)


def _leave_after_commit(signum: int, status, prog: str) -> None:
    with _commit_lock:
        _leave(signum, status, prog)


def _leave(signum: int, status, prog: str) -> None:
    if not _exit_lock.acquire(blocking=False):
        return  # another thread is already leaving
    for path in list(_tracked):
        with contextlib.suppress(OSError):
            if Path(path).is_dir():  # a store being written (jdeconv.zarr_io)
                shutil.rmtree(path)
            else:
                Path(path).unlink()
    try:
        detail = status() if status is not None else ""
    except Exception:  # the line must be printed whatever the status function does
        detail = ""
    line = f"{prog}: interrupted by {_NAMES.get(signum, f'signal {signum}')}"
    line += f"; {detail}" if detail else "."
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    prefix = "\n" if _progress_bar_on_screen() else ""
    with contextlib.suppress(OSError):
        os.write(2, f"{prefix}{' '.join(line.split())}\n".encode("utf-8", "replace"))
    os._exit(EXIT_CODES.get(signum, 128 + signum))


def _progress_bar_on_screen() -> bool:
    """Whether a tqdm bar is open (its line has no newline yet)."""
    tqdm = sys.modules.get("tqdm.std")
    instances = getattr(getattr(tqdm, "tqdm", None), "_instances", None)
    try:
        return any(not getattr(bar, "disable", True) for bar in list(instances or ()))
    except Exception:
        return False
