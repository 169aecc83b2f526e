"""Which devices train: the CPU split into several JAX devices, and the training mesh.

On a CPU, XLA runs one jitted training step on all cores, but its convolutions and their
gradients scale poorly across threads. Split into several JAX devices
(:func:`use_cpu_devices`), the CPU runs data-parallel training instead (the batch of
patches sharded over the devices, :func:`jdeconv.train.batch_mesh`), each device's share
at the same time: on our 2-core machine the default 2D step took 0.23 s on two devices
against 0.36 s on one, and the 3D step 1.01 s against 2.21 s
(benchmarks/results/train_step-cpu-devices2.md and train_step-cpu.md, each timed beside
the same PyTorch reference). Everything else (choosing the anchor's weights, validation,
inference) runs on the first device, as before.

The device count is fixed when JAX starts its CPU backend, so the split must come first:
the command line does it by default (``--cpu-devices``); from Python call
``jdeconv.use_cpu_devices()`` right after the imports, before any JAX computation.
Accelerators (GPUs, TPUs) are unaffected: when one is present, training runs there.
"""

from __future__ import annotations

import os

__all__ = ["use_cpu_devices", "usable_cores", "training_devices"]

#: ``use_cpu_devices(n="auto")`` splits into at most this many devices: the speed-up was
#: measured on 2 cores only (4 devices on those 2 cores: 0.37 s per 2D step, slower than 2).
MAX_AUTO_DEVICES = 2


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count``
    where there is none).

    Example:
      >>> usable_cores() >= 1
      True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def use_cpu_devices(*, n: int | str = "auto") -> int:
    """Split the CPU into ``n`` JAX devices, so that training shards its batch over them.

    Call it before any JAX computation (right after the imports); JAX fixes the device
    count when its CPU backend starts.

    Args:
      n: the number of CPU devices, or "auto": the usable cores, at most
        ``MAX_AUTO_DEVICES`` (1 on a one-core machine, where nothing changes).

    Returns:
      The number of CPU devices JAX will have.

    Raises:
      ValueError: ``n`` is not a positive integer or "auto".
      RuntimeError: JAX has already started with a different number of CPU devices;
        names the fix (call this first, or set ``JAX_NUM_CPU_DEVICES`` before starting).

    Example:
      >>> use_cpu_devices(n=0)
      Traceback (most recent call last):
      ...
      ValueError: n must be a positive integer or 'auto', got 0.
    """
    if n == "auto":
        n = min(usable_cores(), MAX_AUTO_DEVICES)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer or 'auto', got {n!r}.")
    import jax
    from jax._src import xla_bridge  # the one way to ask without starting a backend

    if xla_bridge.backends_are_initialized():
        have = len(jax.devices("cpu"))
        if have != n:
            raise RuntimeError(
                f"JAX has already started with {have} CPU device(s), so it cannot be split "
                f"into {n}: call jdeconv.use_cpu_devices() before any JAX computation (right "
                f"after the imports), or set the environment variable JAX_NUM_CPU_DEVICES={n} "
                "before starting Python."
            )
        return n
    jax.config.update("jax_num_cpu_devices", n)
    return n


def training_devices(batch_size: int) -> list:
    """The devices a batch of ``batch_size`` patches trains on: all of ``jax.devices()``,
    except that CPU devices (a split of one CPU, :func:`use_cpu_devices`) are cut to the
    most that divide the batch, since their number is only a speed choice. Accelerators
    are all used; :func:`jdeconv.train.batch_mesh` rejects a batch they do not divide.

    Example:
      >>> len(training_devices(1))
      1
    """
    import jax

    devices = jax.devices()
    if devices[0].platform == "cpu":
        count = max(k for k in range(1, len(devices) + 1) if batch_size % k == 0)
        devices = devices[:count]
    return devices


def on_devices_text(timings: dict) -> str:
    """ " on N devices" for a progress or summary line when a fit trained on more than one
    device (``FitResult.timings["devices"]``), else "".

    Example:
      >>> on_devices_text({"devices": 2}), on_devices_text({"devices": 1})
      (' on 2 devices', '')
    """
    devices = timings.get("devices", 1)
    return f" on {devices} devices" if devices > 1 else ""
