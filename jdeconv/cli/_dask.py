"""``--workers N`` and ``--scheduler ADDRESS``: a dask.distributed client for one command.

While the command runs, the client is dask's default scheduler: the statistics, the
training regions, the inference blocks and the OME-Zarr write of lazy (OME-Zarr) inputs
run on its workers, and the model is sent to each worker once
(:mod:`jdeconv.lazy`). Without either option dask's threads in this process do the work.
"""

from __future__ import annotations

import contextlib
import logging

from ._common import InputError


@contextlib.contextmanager
def scheduler(args):
    """The client of ``--workers``/``--scheduler`` for the ``with`` block, or nothing."""
    workers = getattr(args, "workers", None)
    address = getattr(args, "scheduler", None)
    if workers is None and address is None:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise InputError(
            "--workers/--scheduler need dask.distributed: pip install 'jdeconv[zarr]'."
        ) from err
    # distributed logs its start and stop at INFO on stderr: keep the terminal to ours.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        if address is not None:
            try:
                client = stack.enter_context(Client(address, timeout="30s"))
            except OSError as err:
                raise InputError(
                    f"--scheduler {address}: cannot connect ({err}); is the scheduler running?"
                ) from err
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
            )
            client = stack.enter_context(Client(cluster))
        yield client


def max_memory(args):
    """``--max-memory`` as bytes (None if not given), or InputError."""
    text = getattr(args, "max_memory", None)
    if text is None:
        return None
    from ..predict import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as err:
        raise InputError(f"--max-memory: {err}") from err
