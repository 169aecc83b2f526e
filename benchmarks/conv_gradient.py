"""Where a convolution's training time goes on this machine: forward, input gradient and
kernel gradient of one 3×3 (2D) or 3×3×3 (3D) convolution, in XLA and in PyTorch.

The layers are those of the default networks' first levels (batch × patch of
``Config.default``'s CPU sizes; the 3D ones both passes, so twice the batch). 2D: XLA's
``lax.conv_general_dilated`` (NHWC) against ``torch.nn.functional.conv2d`` and
``torch.nn.grad.conv2d_input``/``conv2d_weight``; 3D: jdeconv's stacked 3D convolution
(the three z-shifted slabs on the channel axis, one 2D convolution: ``unet._StackedConv3d``)
and XLA's native 3D convolution, forward and backward (``value_and_grad`` of a sum of
squares), against ``torch.nn.functional.conv3d`` with ``backward``. Median of
``--repeats`` calls after one warm-up call each, ``block_until_ready`` for XLA.

Usage (one thread each, as in the committed results; PyTorch is optional, the ``peers``
extra)::

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        python benchmarks/conv_gradient.py --threads 1
    python benchmarks/conv_gradient.py --quick          # seconds (tests)

Writes ``conv_gradient-<device>[-quick].md`` and ``.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402  (first: puts this checkout on sys.path before jdeconv)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jdeconv.unet import _StackedConv3d  # noqa: E402

try:
    import torch
except ImportError:  # optional
    torch = None

NAME = "conv_gradient"
# (batch, side, channels in, channels out): 2D 16 × 64² patches, both passes (32), the
# first level's convolutions and the decoder's (2× channels in); a deeper level.
LAYERS_2D = [(32, 64, 16, 16), (32, 64, 32, 16), (32, 32, 32, 32)]
# (batch, depth, side, channels in, channels out): 3D 2 × 32×48×48, both passes (4).
LAYERS_3D = [(4, 32, 48, 16, 16), (4, 32, 48, 32, 16), (4, 16, 24, 32, 32)]
QUICK_2D = [(2, 16, 4, 4)]
QUICK_3D = [(2, 8, 12, 4, 4)]


def _median_s(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # warm-up (compilation for XLA)
    return float(np.median(C._time_call(fn, repeats)))


def xla_2d(layer, repeats: int) -> dict:
    n, side, cin, cout = layer
    x = jax.random.normal(jax.random.key(0), (n, side, side, cin))
    k = jax.random.normal(jax.random.key(1), (3, 3, cin, cout)) * 0.1
    g = jax.random.normal(jax.random.key(2), (n, side, side, cout))

    def conv(x, k):
        return jax.lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    forward = jax.jit(conv)
    dx = jax.jit(lambda x, k, g: jax.vjp(conv, x, k)[1](g)[0])
    dk = jax.jit(lambda x, k, g: jax.vjp(conv, x, k)[1](g)[1])
    return {
        "forward_s": _median_s(lambda: forward(x, k), repeats),
        "input_grad_s": _median_s(lambda: dx(x, k, g), repeats),
        "kernel_grad_s": _median_s(lambda: dk(x, k, g), repeats),
    }


def torch_2d(layer, repeats: int) -> dict:
    n, side, cin, cout = layer
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, cin, side, side, generator=gen)
    k = torch.randn(cout, cin, 3, 3, generator=gen) * 0.1
    g = torch.randn(n, cout, side, side, generator=gen)
    f = torch.nn.functional
    with torch.no_grad():
        return {
            "forward_s": _median_s(lambda: f.conv2d(x, k, padding=1), repeats),
            "input_grad_s": _median_s(
                lambda: torch.nn.grad.conv2d_input(x.shape, k, g, padding=1), repeats
            ),
            "kernel_grad_s": _median_s(
                lambda: torch.nn.grad.conv2d_weight(x, k.shape, g, padding=1), repeats
            ),
        }


def xla_3d(layer, repeats: int) -> dict:
    from flax import nnx

    n, depth, side, cin, cout = layer
    x = jax.random.normal(jax.random.key(0), (n, depth, side, side, cin))
    graphdef, state = nnx.split(_StackedConv3d(cin, cout, rngs=nnx.Rngs(0)))
    kernel = state["kernel"].get_value()  # DHWIO, as XLA's native 3D convolution takes

    def stacked(x, state):
        return nnx.merge(graphdef, state)(x)

    def native(x, kernel):
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1, 1), "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
        )

    out = {}
    for name, conv, params in (("stacked", stacked, state), ("native", native, kernel)):
        step = jax.jit(jax.value_and_grad(lambda x, p, c=conv: jnp.sum(c(x, p) ** 2), (0, 1)))
        out[f"{name}_fwd_bwd_s"] = _median_s(lambda s=step, p=params: s(x, p), repeats)
    return out


def torch_3d(layer, repeats: int) -> dict:
    n, depth, side, cin, cout = layer
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, cin, depth, side, side, generator=gen, requires_grad=True)
    k = (torch.randn(cout, cin, 3, 3, 3, generator=gen) * 0.1).requires_grad_(True)

    def step():
        x.grad = k.grad = None
        loss = (torch.nn.functional.conv3d(x, k, padding=1) ** 2).sum()
        loss.backward()
        return loss

    return {"fwd_bwd_s": _median_s(step, repeats)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=C.DEFAULT_OUT)
    p.add_argument("--repeats", type=int, default=7, help="timed calls per measurement")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny layers (tests)")
    p.add_argument("--note", default="", help="free text for the results header")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if torch is not None and args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    rows2, rows3 = [], []
    for layer in QUICK_2D if args.quick else LAYERS_2D:
        rec = {"layer": list(layer), "xla": xla_2d(layer, repeats)}
        rec["torch"] = torch_2d(layer, repeats) if torch is not None else None
        print("2D", layer, rec, flush=True)
        rows2.append(rec)
    for layer in QUICK_3D if args.quick else LAYERS_3D:
        rec = {"layer": list(layer), "xla": xla_3d(layer, repeats)}
        rec["torch"] = torch_3d(layer, repeats) if torch is not None else None
        print("3D", layer, rec, flush=True)
        rows3.append(rec)
    result = {
        "benchmark": NAME,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": C.machine_info(),
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "quick": args.quick,
        "repeats": repeats,
        "note": args.note,
        "layers_2d": rows2,
        "layers_3d": rows3,
    }
    tag = "-".join(x for x in (result["machine"]["platform"], "quick" if args.quick else "") if x)
    stem = C.output_stem(args.out, NAME, tag)
    C.write_results(stem, result, markdown(result))
    return result


def _ms(value) -> str:
    return "–" if value is None else f"{1e3 * value:.1f}"


def markdown(result: dict) -> str:
    torch_text = (
        "not installed"
        if result["torch"] is None
        else f"{result['torch']}, torch threads: {result['torch_threads']}"
    )
    lines = [
        "# One convolution's forward and gradients, XLA and PyTorch "
        f"({result['machine']['platform']})",
        "",
        "Generated by `benchmarks/conv_gradient.py`; every number in the `.json`. Milliseconds, "
        f"median of {result['repeats']} calls after a warm-up call.",
        "",
        *C.machine_lines(result["machine"]),
        f"- PyTorch: {torch_text}; XLA_FLAGS `{result['machine']['xla_flags'] or '(none)'}`",
        *([f"- note: {result['note']}"] if result["note"] else []),
        "",
        "## 2D, 3×3 (batch, side, channels in → out)",
        "",
    ]
    rows = []
    for r in result["layers_2d"]:
        x, t = r["xla"], r["torch"] or {}
        rows.append(
            [
                "{} × {}², {} → {}".format(*r["layer"]),
                _ms(x["forward_s"]),
                _ms(x["input_grad_s"]),
                _ms(x["kernel_grad_s"]),
                f"{x['kernel_grad_s'] / x['forward_s']:.1f}",
                _ms(t.get("forward_s")),
                _ms(t.get("input_grad_s")),
                _ms(t.get("kernel_grad_s")),
                "–" if not t else f"{t['kernel_grad_s'] / t['forward_s']:.1f}",
            ]
        )
    lines += C.table(
        [
            "layer",
            "XLA forward",
            "XLA input grad",
            "XLA kernel grad",
            "XLA kernel grad / forward",
            "PyTorch forward",
            "PyTorch input grad",
            "PyTorch kernel grad",
            "PyTorch kernel grad / forward",
        ],
        rows,
    )
    lines += ["", "## 3D, 3×3×3, forward + backward (batch, depth × side², channels in → out)", ""]
    rows = []
    for r in result["layers_3d"]:
        x, t = r["xla"], r["torch"] or {}
        torch_s = t.get("fwd_bwd_s")
        rows.append(
            [
                "{} × {}×{}², {} → {}".format(*r["layer"]),
                _ms(x["stacked_fwd_bwd_s"]),
                _ms(x["native_fwd_bwd_s"]),
                _ms(torch_s),
                "–" if torch_s is None else f"{x['stacked_fwd_bwd_s'] / torch_s:.2f}",
            ]
        )
    lines += C.table(
        ["layer", "jdeconv stacked", "XLA native 3D", "PyTorch Conv3d", "stacked / PyTorch"],
        rows,
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
