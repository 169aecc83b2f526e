"""How benchmarks/convolution.py times compiled functions on a shared machine.

The protocol, for functions that are already jitted and compiled (compile time is
measured and reported by the caller):

1. **Warm-up.** The first call of each function is timed with ``block_until_ready``.
   If it took longer than the time budget, it is that function's only sample
   (``mode="1 call"``).
2. **Batched samples.** Otherwise a second call estimates the time per call, and a
   sample is the mean time per call of enough back-to-back calls to last at least
   ``min_sample`` seconds: a single sub-millisecond call is at the mercy of the
   scheduler. Up to ``repeats`` samples per function fit in the budget.
3. **Rounds with rotation.** Samples are taken in rounds, one of each function per
   round, the order rotated by one every round, so load from other processes hits all
   functions alike and none always follows the same neighbour. A function faster than
   :data:`PRECALL_BELOW_S` gets an untimed call right before each sample: after a slow
   neighbour, caches are cold and XLA's thread pool asleep, which biased the fast
   function timed next by up to 2x.
4. **Medians.** The median sample is the headline number; the minimum is reported too.
   (With one call per sample and the minimum as headline, two separately compiled
   copies of the same program differed by up to 1.7x on the shared 2-core CPU.)
5. **A/B alternation** for a ratio that must be steady to a few percent (``auto`` against
   the method it resolves to): pairs of back-to-back call batches, each at least
   ``half`` seconds, in the order AB, BA, AB, ...; the ratio is the median of the
   per-pair ratios. Both functions of a pair see the same state of the machine, so
   drifts of its speed over seconds cancel and neither always goes first. (Over three
   full runs, the ratio of the medians of step 4 for two identical programs ranged from
   0.80 to 1.15; the A/B ratio from 0.90 to 1.04.)

Every function here takes the clock as ``clock=`` (default :func:`time.perf_counter`)
so the protocol itself is tested with a fake clock, never with wall-clock timings.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import numpy as np

# Calls faster than this get an untimed call right before each sample (step 3).
PRECALL_BELOW_S = 0.05


def timed(
    fn: Callable, args, calls: int = 1, *, clock: Callable[[], float] = time.perf_counter
) -> tuple[float, object]:
    """Seconds per call of ``calls`` back-to-back calls, each one waited for; the output."""
    t0 = clock()
    for _ in range(calls):
        out = fn(*args)
        out.block_until_ready()
    return (clock() - t0) / calls, out


def measure_point(
    compiled: dict,
    args,
    *,
    repeats: int,
    budget: float,
    min_sample: float,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Interleaved, rotated timing of several compiled functions on the same arguments.

    Steps 1-4 of the protocol. Round ``r`` takes one sample of every function of
    ``compiled`` (name -> function), in the order rotated by ``r``.

    Returns:
      Per name: ``times_s`` (the samples), ``min_s``, ``median_s``, ``repeats``,
      ``calls_per_sample``, ``mode`` ("measured" or "1 call") and ``output`` (of the
      first call, as a NumPy array).
    """
    names = list(compiled)
    first, outputs, calls, n_wanted, samples = {}, {}, {}, {}, {}
    for name, fn in compiled.items():
        first[name], outputs[name] = timed(fn, args, clock=clock)  # with first-call overhead
        samples[name] = []
        if first[name] > budget:
            # Slower than the whole budget: this call is the only sample.
            n_wanted[name], calls[name] = 0, 1
            samples[name] = [first[name]]
            continue
        per_call = timed(fn, args, clock=clock)[0] if first[name] < budget / 2 else first[name]
        calls[name] = max(1, math.ceil(min_sample / per_call))
        cost = per_call * (calls[name] + (per_call < PRECALL_BELOW_S))
        n_wanted[name] = max(1, min(repeats, int(budget / cost)))
    for r in range(max(n_wanted.values(), default=0)):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if len(samples[name]) < n_wanted[name]:
                fn = compiled[name]
                if first[name] < PRECALL_BELOW_S:
                    fn(*args).block_until_ready()
                samples[name].append(timed(fn, args, calls[name], clock=clock)[0])
    return {
        name: {
            "times_s": samples[name],
            "min_s": min(samples[name]),
            "median_s": statistics.median(samples[name]),
            "repeats": len(samples[name]),
            "calls_per_sample": calls[name],
            "mode": "1 call" if n_wanted[name] == 0 else "measured",
            "output": np.asarray(outputs[name]),
        }
        for name in names
    }


def ab_ratio(
    fa: Callable,
    fb: Callable,
    args,
    *,
    pairs: int,
    half: float,
    budget: float,
    clock: Callable[[], float] = time.perf_counter,
) -> dict | None:
    """Time of ``fa`` / time of ``fb`` by A/B alternation (step 5).

    One call of each estimates the time per call; each half of a pair is ``calls``
    back-to-back calls lasting at least ``half`` seconds. Up to ``pairs`` pairs within
    ``budget`` seconds.

    Returns:
      ``{"ratio": median of the per-pair ratios, "pairs": pairs run, "calls": calls per
      half}``, or None when fewer than 3 pairs fit in the budget.
    """
    per_call = min(timed(fa, args, clock=clock)[0], timed(fb, args, clock=clock)[0])
    calls = max(1, math.ceil(half / per_call))
    n = min(pairs, int(budget / (2 * calls * per_call)))
    if n < 3:
        return None
    ratios = []
    for i in range(n):
        first, second = (fa, fb) if i % 2 == 0 else (fb, fa)
        t_first = timed(first, args, calls, clock=clock)[0]
        t_second = timed(second, args, calls, clock=clock)[0]
        ratios.append(t_first / t_second if i % 2 == 0 else t_second / t_first)
    return {"ratio": statistics.median(ratios), "pairs": n, "calls": calls}
