"""Seconds per train step, compile time and memory of the default 2D and 3D configs.

Cases (each one jitted train step, exactly as ``jdeconv.fit`` builds it):
- ``2d-default``: the default 2D preset and network on 256² with the SSI 17×17 PSF;
- ``3d-default``: the default 3D preset on 64×128×128 with the 17³ Gibson-Lanni PSF, with
  the U-Net's 3×3×3 convolutions "stacked" (our default) and "native" (XLA's 3D conv);
- ``3d-psf17-{fft,direct}``, ``3d-psf31-{fft,direct}``: the forward model by FFT or by
  direct convolution inside the whole train step (Papkov et al. report FFT training
  speed-ups of 2.3× at 17³ and 14× at 31³). A direct step that would take longer than
  ``--max-call`` seconds is not run: its time is extrapolated from the direct forward+
  backward convolution cost measured on a small kernel, and marked "~".

Method: ahead-of-time compile (reported separately), one warm-up call, then the minimum
and median of ``--repeats`` calls with ``block_until_ready``. Memory: XLA's buffer
assignment for the compiled step (arguments + outputs + temporaries, from
``compiled.memory_analysis()``) and the process's peak resident memory.

With ``--torch`` (the ``peers`` extra), the run also times our PyTorch reference of the
default 2D and 3D steps (``torch_reference.py``: the same network, loss, patches and
batch, ``torch.set_num_threads`` = the usable cores or ``--threads``) against jdeconv's
step in the same process, by ``torch_reference.time_case`` (rotating rounds and A/B
pairs), and adds that table with the ratio jdeconv/PyTorch (issue 15's target ≤ 0.7).

Command (CPU, about 10 minutes; 15 with ``--torch``): ``python benchmarks/train_step.py
--torch``; quick check: ``python benchmarks/train_step.py --quick`` (under a minute).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _common import (  # noqa: E402
    DEFAULT_DATA,
    DEFAULT_OUT,
    add_cpu_devices_option,
    apply_cpu_devices,
    machine_info,
    machine_lines,
    table,
    write_results,
)
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jdeconv import Config  # noqa: E402
from jdeconv.devices import training_devices, usable_cores  # noqa: E402
from jdeconv.forward import make_forward  # noqa: E402
from jdeconv.losses import make_loss  # noqa: E402
from jdeconv.psf import gaussian_psf  # noqa: E402
from jdeconv.train import batch_mesh, init_state, make_optimizer, make_train_step  # noqa: E402
from jdeconv.unet import init_unet  # noqa: E402

REFERENCE_PSFS = ("ssi_2d_17.npy", "gl_3d_17.npy", "gl_3d_31.npy")  # in <data>/psf


def build_step(cfg: Config, psf: np.ndarray, image_shape, *, method: str, conv3d="stacked"):
    ndim = len(image_shape)
    unet_cfg = cfg.unet(ndim)
    if conv3d is not None:
        unet_cfg = dataclasses.replace(unet_cfg, conv3d=conv3d)
    graphdef, params = init_unet(cfg.seed, unet_cfg)  # as jdeconv.fit does
    tx = make_optimizer(cfg)
    g = make_forward(psf, cfg.patch_shape(ndim), method=method, padding=cfg.padding)
    loss = make_loss(cfg.loss, defaults={"lower": -3.0, "upper": 3.0})
    mesh = batch_mesh(cfg.batch_size, devices=training_devices(cfg.batch_size))
    step = make_train_step(
        graphdef,
        loss,
        tx,
        batch_size=cfg.batch_size,
        masks=cfg.masks,
        crop_border=cfg.crop_border,
        mesh=mesh,
    )
    state = init_state(params, tx)
    image = jax.random.normal(jax.random.key(1), image_shape, jnp.float32)
    key = jax.random.key(0)
    if mesh is not None:  # data parallel over the devices, everything else replicated
        key, state, image, g = jax.device_put((key, state, image, g), NamedSharding(mesh, P()))
    return (lambda state: (key, state, image, g)), step, state


def time_case(name, cfg, psf, image_shape, *, method, conv3d, repeats, max_call):
    args, step, state = build_step(cfg, psf, image_shape, method=method, conv3d=conv3d)
    t0 = time.perf_counter()
    compiled = step.lower(*args(state)).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    xla_bytes = None
    if mem is not None:
        xla_bytes = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
    t0 = time.perf_counter()
    state, _ = compiled(*args(state))
    jax.block_until_ready(state.params)
    first = time.perf_counter() - t0
    times = [first]
    if first < max_call:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            state, _ = compiled(*args(state))
            jax.block_until_ready(state.params)
            times.append(time.perf_counter() - t0)
    rec = {
        "case": name,
        "preset": cfg.name,
        "image": list(image_shape),
        "patch": list(cfg.patch_shape(len(image_shape))),
        "batch": cfg.batch_size,
        "psf": list(psf.shape),
        "method": method,
        "conv3d": conv3d if len(image_shape) == 3 else None,
        "compile_s": compile_s,
        "step_min_s": min(times),
        "step_median_s": float(np.median(times)),
        "repeats": len(times),
        "xla_memory_mb": None if xla_bytes is None else xla_bytes / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "extrapolated": False,
    }
    print(
        f"{name:22s} compile {compile_s:6.1f}s  step min {rec['step_min_s']:.3f}s "
        f"median {rec['step_median_s']:.3f}s  xla {rec['xla_memory_mb'] or 0:.0f} MB",
        flush=True,
    )
    return rec


def direct_conv_cost(shape, k: int, batch: int) -> float:
    """Seconds for forward+backward of a direct k³ blur over ``batch`` patches (measured)."""
    psf = gaussian_psf((k,) * len(shape), k / 4)
    g = jax.vmap(make_forward(psf, shape, method="direct"))
    w = jax.random.normal(jax.random.key(0), (batch, *shape))
    f = jax.jit(jax.grad(lambda x, w: jnp.sum(g(x) * w))).lower(w, w).compile()
    jax.block_until_ready(f(w, w))
    t0 = time.perf_counter()
    jax.block_until_ready(f(w, w))
    return time.perf_counter() - t0


def psf_method_cases(cfg3: Config, shape3, psfs: dict, *, repeats: int, max_call: float):
    """The whole 3D train step with the forward model by FFT and by direct convolution.

    ``psfs`` maps a label (the kernel size) to a PSF. A direct step predicted slower than
    ``max_call`` seconds is not run: its time is the FFT step plus the direct blur's
    forward+backward cost, measured on a 5³ kernel over the same patches and scaled by
    kernel volume (flagged ``extrapolated``).
    """
    run = dict(repeats=repeats, max_call=max_call)
    # Cost of the direct blur alone (forward+backward over the batch, both passes) on a 5³
    # kernel: the same for every PSF, so measured once.
    passes = 2 * cfg3.batch_size
    small_cost = direct_conv_cost(cfg3.patch_shape(3), 5, passes)
    records = []
    for k, psf in psfs.items():
        fft = time_case(f"3d-psf{k}-fft", cfg3, psf, shape3, method="fft", conv3d="stacked", **run)
        records.append(fft)
        estimate = fft["step_min_s"] + small_cost * (psf.shape[0] / 5) ** 3
        if estimate <= max_call:
            rec = time_case(
                f"3d-psf{k}-direct", cfg3, psf, shape3, method="direct", conv3d="stacked", **run
            )
        else:
            rec = {
                **fft,
                "case": f"3d-psf{k}-direct",
                "method": "direct",
                "compile_s": None,
                "step_min_s": estimate,
                "step_median_s": estimate,
                "repeats": 0,
                "xla_memory_mb": None,
                "extrapolated": True,
                "extrapolation": f"fft step + direct 5^3 blur fwd+bwd ({small_cost:.2f} s "
                f"for {passes} patches) x ({psf.shape[0]}/5)^3",
            }
            print(f"{rec['case']:22s} ~{estimate:.1f}s per step (extrapolated)", flush=True)
        rec["fft_speedup"] = rec["step_min_s"] / fft["step_min_s"]
        rec["volume_estimate_s"] = estimate  # also where measured: checks the scaling
        records.append(rec)
    return records


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-call", type=float, default=120.0, help="longest direct step to run (s)")
    p.add_argument("--quick", action="store_true", help="tiny shapes, for tests")
    p.add_argument(
        "--torch",
        action="store_true",
        help="also time the PyTorch reference of the default steps in this run (peers extra)",
    )
    p.add_argument("--threads", type=int, help="with --torch: torch threads (default: all)")
    add_cpu_devices_option(p, results="results go to train_step-cpu-devicesN when N > 1")
    p.add_argument("--note", default="", help="free text for the results header")
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    missing = [str(f) for n in REFERENCE_PSFS if not (f := args.data / "psf" / n).is_file()]
    if missing and not args.quick:
        p.error(f"reference PSF(s) not found: {', '.join(missing)}; pass --data DIR")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    apply_cpu_devices(args)  # before JAX starts its CPU backend
    device = jax.devices()[0].platform
    if not args.quick:  # the quick mode generates its PSFs and needs no data
        psf2, psf17, psf31 = (np.load(args.data / "psf" / name) for name in REFERENCE_PSFS)
    cfg2 = Config.default(2)
    cfg3 = Config.default(3)
    shape2, shape3 = (256, 256), (64, 128, 128)
    repeats = args.repeats
    if args.quick:
        small = dict(batch_size=2, patch_size=16, patch_size_z=16, base_channels=8, depth=2)
        cfg2, cfg3 = cfg2.replace(**small), cfg3.replace(**small)
        shape2, shape3 = (64, 64), (32, 48, 48)
        psf2, psf17, psf31 = gaussian_psf((9, 9), 2.0), gaussian_psf((5,) * 3, 1.0), None
        repeats = 2
    # FFT vs direct inside the whole step, labelled by kernel size (quick: the 5³ Gaussian).
    method_psfs = {psf.shape[0]: psf for psf in (psf17, psf31) if psf is not None}
    run = dict(repeats=repeats, max_call=args.max_call)
    records = [
        time_case("2d-default", cfg2, psf2, shape2, method="fft", conv3d=None, **run),
        time_case("3d-default", cfg3, psf17, shape3, method="fft", conv3d="stacked", **run),
        time_case("3d-native-conv", cfg3, psf17, shape3, method="fft", conv3d="native", **run),
    ]
    records += psf_method_cases(cfg3, shape3, method_psfs, **run)
    beside = torch_side_by_side(args) if args.torch else None
    result = {
        "benchmark": "train_step",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "quick": args.quick,
        "note": args.note,
        "devices": len(training_devices(cfg2.batch_size)),
        "machine": machine_info(),
        "records": records,
        **(beside or {}),
    }
    suffix = ("-quick" if args.quick else "") + (
        f"-devices{args.cpu_devices}" if args.cpu_devices > 1 else ""
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"train_step-{device}{suffix}"
    write_results(stem, result, markdown(result))
    return result


def torch_side_by_side(args) -> dict:
    """The default 2D and 3D steps of jdeconv and of the PyTorch reference, timed side
    by side by ``torch_reference.time_case`` (its cases: ``Config.default``'s sizes)."""
    import torch_reference as R

    R.require_torch()
    R.torch.set_num_threads(args.threads or usable_cores())
    quick = ["--quick", "--budget", "5", "--pairs", "2", "--min-sample", "0.05"]
    targs = R.parse_args(["--data", str(args.data), "--no-quality", *(quick if args.quick else [])])
    return {
        "torch": R.torch.__version__,
        "torch_threads": R.torch.get_num_threads(),
        "torch_records": [R.time_case(*case, targs) for case in R.case_settings(targs)],
    }


def markdown(result: dict) -> str:
    def num(v, fmt="{:.3f}"):
        return "n/a" if v is None else fmt.format(v)

    rows = []
    for r in result["records"]:
        step = ("~" if r["extrapolated"] else "") + num(r["step_min_s"])
        rows.append(
            [
                r["case"],
                r["preset"],
                "×".join(map(str, r["image"])),
                f"{r['batch']}×" + "×".join(map(str, r["patch"])),
                "×".join(map(str, r["psf"])),
                r["method"],
                r["conv3d"] or "",
                num(r["compile_s"], "{:.1f}"),
                step,
                num(r["step_median_s"]),
                num(r["xla_memory_mb"], "{:.0f}"),
                num(r.get("fft_speedup"), "{:.1f}×"),
            ]
        )
    lines = [
        f"# Train step timings ({result['device']})",
        "",
        *machine_lines(result["machine"]),
        *([f"- note: {result['note']}"] if result["note"] else []),
        *(
            [
                f"- jdeconv trains data-parallel on {result['devices']} CPU devices "
                "(`--cpu-devices`, `jdeconv.use_cpu_devices`): the batch sharded, one "
                "compiled step; PyTorch as before"
            ]
            if result.get("devices", 1) > 1
            else []
        ),
        "",
        *table(
            [
                "case",
                "preset",
                "image",
                "batch×patch",
                "PSF",
                "forward",
                "3D conv",
                "compile s",
                "step min s",
                "step median s",
                "XLA MB",
                "direct/FFT",
            ],
            rows,
        ),
        "",
        "`~`: extrapolated, not run (see the JSON for how). XLA MB: arguments + outputs + "
        "temporaries of the compiled step.",
    ]
    if result.get("torch_records"):
        import torch_reference as R

        lines += R.step_table(result["torch_records"])
        lines += [
            "",
            f"PyTorch {result['torch']}, torch threads: {result['torch_threads']}; jdeconv's step "
            "timed again here beside it (the rows above are its own run, one after the "
            "other). The default network is the same in both; the default fit's anchor "
            "(`NetworkConfig.anchor`, filled in by `fit`) is in neither.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
