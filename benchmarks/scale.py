"""Real data sizes: inference and a short fit from TIFF and OME-Zarr, in memory vs Dask,
and bounded-memory (region) training against whole-array training.

Two parts, each writing benchmarks/results/scale-<tag>.md/.json (and a plot):

- ``--part inference`` (default): synthetic uint16 volumes (3D filament phantoms blurred
  by a 17³ Gaussian PSF, Poisson-like noise; 2D likewise) of 2D 4096² and 3D
  ``Z``×1024×1024 for each ``--z``, written once as TIFF and as OME-Zarr under
  ``--data``. Each case runs in its own process under ``/usr/bin/time -v`` (peak RSS
  of that process: "Maximum resident set size"; psutil sampling of the process tree every
  0.2 s when /usr/bin/time is missing) and reports wall time and voxels/s:
  ``memory`` reads the whole file and calls ``jdeconv.deconvolve`` on the array (float32
  result in memory); ``dask`` opens it lazily (tifffile's Zarr store or the OME-Zarr)
  and streams the lazy result into an OME-Zarr store. The model is a real default fit
  (``Config.default(ndim)``, ``--model-steps`` steps, last step kept) of a central crop
  of the image (2D 512², 3D Z×256²), made once per image in its own process and saved
  under ``--data``/models; ``--network anchor`` (default) zeroes its U-Net head, which is
  the model the default fit returns when it keeps step 0 (its usual outcome on these
  phantoms): inference runs the anchor alone. ``--network unet`` keeps the trained head:
  inference runs the whole U-Net, as for a model whose training beat step 0.
  ``--fit-steps N`` adds a short ``jdeconv.fit`` on the 2D image per source and mode.
- ``--part cli``: the issue's done-when command, ``jdeconv deconvolve stack.ome.zarr
  --psf psf.tif -o out.ome.zarr --steps 20 --no-tta`` on a ``--cli-z``×1024×1024
  uint16 OME-Zarr, under ``/usr/bin/time -v``, then again with ``--workers 2``; checks
  the output's axes and pixel sizes and the largest difference between the two.
- ``--part quality``: the same phantom at 2D 2048² and 3D 32×512×512, fitted with
  the same config and seed twice: whole-array training (``sampling="whole"``) and
  bounded region training (``sampling="regions"``); PSNR of both against the ground
  truth, and their difference.

Expected runtime on a 2-core CPU (scale-cpu.md): with ``--network anchor`` under half a
minute per 2D 4096² case and 0.5–4 minutes per 3D case (16–64 planes), plus a default fit
per image (up to a few minutes); ``--network unet`` is several times slower in 3D (16
planes: ~4 minutes; at 32–64 planes the blocks are mostly overlap: hours); ``--quick``
runs small sizes (2D 1024², 3D 16×512²) in a few minutes.

Example:
  nice -n 10 python benchmarks/scale.py --part inference --z 16 32 --tag cpu
  nice -n 10 python benchmarks/scale.py --part quality --steps 150 --tag cpu-quality
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# --------------------------------------------------------------------------- data


def phantom(shape, seed: int = 0) -> np.ndarray:
    """A [0, 1] filament phantom of ``shape``, built from tiles so that large sizes are
    cheap (the tiles are independent phantoms of at most 512 per axis)."""
    import jax

    from jdeconv.simulate import filaments_2d, filaments_3d

    tile = tuple(min(n, 512 if len(shape) == 2 else 256) for n in shape)
    out = np.zeros(shape, np.float32)
    counts = [math.ceil(n / t) for n, t in zip(shape, tile, strict=True)]
    make = filaments_2d if len(shape) == 2 else filaments_3d
    for i, index in enumerate(np.ndindex(*counts)):
        key = jax.random.fold_in(jax.random.key(seed), i)
        block = np.asarray(make(key, tile), np.float32)
        where = tuple(
            slice(k * t, min((k + 1) * t, n)) for k, t, n in zip(index, tile, shape, strict=True)
        )
        out[where] = block[tuple(slice(0, s.stop - s.start) for s in where)]
    return out


def psf_for(shape) -> np.ndarray:
    """A Gaussian PSF, 17 per axis (in Z at most half the volume's depth, odd, so that
    3D training patches keep an interior)."""
    from jdeconv.psf import gaussian_psf

    if len(shape) == 2:
        return gaussian_psf((17, 17), (2.0, 2.0))
    kz = min(17, (shape[0] // 2) - (1 - (shape[0] // 2) % 2))
    return gaussian_psf((kz, 17, 17), (min(3.0, kz / 4), 1.5, 1.5))


def degraded(clean: np.ndarray, psf: np.ndarray, seed: int = 1) -> np.ndarray:
    """Blurred (slab-wise FFT) and noisy uint16 counts (peak ~2000, offset 100)."""
    from jdeconv.stages import reconvolve

    blurred = reconvolve(clean, psf, padding="reflect")
    rng = np.random.default_rng(seed)
    counts = rng.poisson(np.clip(blurred, 0, None) * 2000.0) + 100 + rng.normal(0, 5, blurred.shape)
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


def make_inputs(data: Path, name: str, shape) -> dict:
    """TIFF and OME-Zarr copies of one noisy phantom (written once, reused)."""
    from jdeconv.io import ImageMetadata, write_image
    from jdeconv.zarr_io import write_ome_zarr

    ndim = len(shape)
    tif, zarr = data / f"{name}.tif", data / f"{name}.ome.zarr"
    psf = psf_for(shape)
    psf_path = data / f"psf-{'x'.join(map(str, psf.shape))}.tif"
    if not psf_path.exists():
        write_image(psf_path, psf)
    if not (tif.exists() and zarr.exists()):
        image = degraded(phantom(shape), psf)
        meta = ImageMetadata(
            "YX" if ndim == 2 else "ZYX", (0.1, 0.1) if ndim == 2 else (0.3, 0.1, 0.1)
        )
        if not tif.exists():
            write_image(tif, image, metadata=meta, dtype="uint16")
        if not zarr.exists():
            write_ome_zarr(zarr, image, metadata=meta, dtype="uint16")
    return {"tiff": tif, "zarr": zarr, "psf": psf_path}


# --------------------------------------------------------------------------- one case


def run_case(spec: dict) -> dict:
    """One case in this process (called through ``--case``): read, deconvolve/fit, write."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    import jdeconv
    from jdeconv.io import read_image
    from jdeconv.model import load_model
    from jdeconv.zarr_io import read_ome_zarr, read_tiff_lazy, write_ome_zarr

    if spec["kind"] == "model":
        return fit_model(spec)
    t0 = time.perf_counter()
    source, mode, path = spec["source"], spec["mode"], spec["path"]
    if source == "tiff":
        image, meta = read_tiff_lazy(path) if mode == "dask" else read_image(path)
    else:
        image, meta = read_ome_zarr(path)
        if mode == "memory":
            image = image.compute()
    read_s = time.perf_counter() - t0
    ndim = image.ndim
    cfg = jdeconv.Config.default(ndim, tta=False)
    out = Path(spec["out"])
    from jdeconv.lazy import block_budget
    from jdeconv.predict import memory_budget

    budget = memory_budget(max_memory=spec.get("max_memory"))
    lazy_budget = block_budget(max_memory=spec.get("max_memory"))
    record = {
        "read_s": read_s,
        "tile_budget_mb": (lazy_budget if mode == "dask" else budget) / 2**20,
    }
    if spec["kind"] == "fit":
        psf, _ = read_image(spec["psf"])
        cfg = cfg.replace(steps=spec["steps"])
        result = jdeconv.fit(
            image,
            psf,
            cfg,
            verbose=False,
            sampling=spec.get("sampling"),
            max_memory=spec.get("max_memory"),
        )
        record.update(
            train_s=result.timings["train"],
            compile_s=result.timings["compile"],
            seconds_per_step=result.timings["seconds_per_step"],
        )
        deconvolved = result.deconvolved
    else:
        model = load_model(spec["model"])
        if spec["network"] == "anchor":
            params = jax.tree.map(lambda a: a, model.params)
            params["head"] = jax.tree.map(jnp.zeros_like, params["head"])
            model = dataclasses.replace(model, params=params)
        record.update(anchor_only=model.anchor_only, tile_context=model.tile_context())
        deconvolved = jdeconv.deconvolve(image, model, max_memory=spec.get("max_memory"))
    if mode == "dask":
        write_ome_zarr(out, deconvolved, metadata=meta)
    else:
        np.asarray(deconvolved).sum()  # the result is in memory: touch it
    record["wall_s"] = time.perf_counter() - t0
    record["voxels"] = int(math.prod(image.shape))
    record["voxels_per_s"] = record["voxels"] / record["wall_s"]
    return record


def fit_model(spec: dict) -> dict:
    """The default fit of a central crop of ``spec["path"]`` (a TIFF), saved to
    ``spec["out"]``: the model the inference cases load. ``fit``'s stages without its
    inference of the crop (with a trained U-Net at 64 planes that alone takes many
    minutes on 2 cores)."""
    import jdeconv
    from jdeconv import stages
    from jdeconv.io import read_image
    from jdeconv.zarr_io import read_tiff_lazy

    image, _ = read_tiff_lazy(spec["path"])
    psf, _ = read_image(spec["psf"])
    crop = tuple(
        slice(max((n - c) // 2, 0), max((n - c) // 2, 0) + min(c, n))
        for n, c in zip(image.shape, spec["crop"], strict=True)
    )
    ndim = image.ndim
    cfg = jdeconv.Config.default(ndim, steps=spec["steps"], tta=False, restore_best=False)
    t0 = time.perf_counter()
    prepared = stages.prepare(np.asarray(image[crop]), psf, cfg)
    trained = stages.train(prepared, verbose=False)
    model = jdeconv.FittedModel(trained.params, prepared.cfg, prepared.ndim, prepared.psf)
    jdeconv.save_model(model, spec["out"])
    return {"fit_s": time.perf_counter() - t0, "crop": [s.stop - s.start for s in crop]}


def model_for(data: Path, name: str, files: dict, shape, steps: int) -> Path:
    """The saved default model of image ``name`` (fitted once, in its own process)."""
    folder = data / "models" / f"{name}-steps{steps}"
    if not (folder / "config.json").exists():
        crop = (512, 512) if len(shape) == 2 else (shape[0], 256, 256)
        spec = dict(
            kind="model", path=str(files["tiff"]), psf=str(files["psf"]), crop=crop,
            steps=steps, out=str(folder),
        )  # fmt: skip
        print(f"model for {name}: default fit, {steps} steps, crop {crop} ...", flush=True)
        rec = measure(spec)
        print(f"  {rec['fit_s']:.1f} s", flush=True)
    return folder


def measure(spec: dict) -> dict:
    """Run one case in a child process; peak RSS from /usr/bin/time -v (or psutil)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", json.dumps(spec)]
    timer = shutil.which("time") and Path("/usr/bin/time").exists()
    if timer:
        cmd = ["/usr/bin/time", "-v", *cmd]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampled = _sample_tree(proc.pid) if not timer else None
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"case {spec} failed ({proc.returncode}):\n{stderr[-3000:]}")
    record = json.loads(stdout.strip().splitlines()[-1])
    if timer:
        for line in stderr.splitlines():
            if "Maximum resident set size" in line:
                record["peak_rss_mb"] = int(line.split(":")[1]) / 1024
        record["rss_method"] = "/usr/bin/time -v (Maximum resident set size)"
    else:
        record["peak_rss_mb"] = sampled() / 2**20
        record["rss_method"] = "psutil, process tree sampled every 0.2 s"
    return record


def _sample_tree(pid: int):
    import psutil

    peak = [0]

    def watch():
        try:
            root = psutil.Process(pid)
            while root.is_running() and root.status() != psutil.STATUS_ZOMBIE:
                total = 0
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], total)
                time.sleep(0.2)
        except psutil.Error:
            pass

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return lambda: (thread.join(timeout=1), peak[0])[1]


# --------------------------------------------------------------------------- parts


def inference_part(args) -> dict:
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    shapes = [("2d", (args.size_2d, args.size_2d))] + [
        (f"3d-z{z}", (z, args.yx, args.yx)) for z in args.z
    ]
    rows = []
    work = Path(tempfile.mkdtemp(dir=data, prefix="out-"))
    try:
        for name, shape in shapes:
            stem = f"scale-{name}-{'x'.join(map(str, shape))}"
            files = make_inputs(data, stem, shape)
            model = model_for(data, stem, files, shape, args.model_steps)
            for source, mode in _combos(args):
                spec = dict(
                    max_memory=args.max_memory,
                    kind="inference",
                    model=str(model),
                    network=args.network,
                    source=source,
                    mode=mode,
                    path=str(files[source]),
                    out=str(work / f"{name}-{source}-{mode}.ome.zarr"),
                )
                print(f"inference {name} {shape} {source} {mode} ...", flush=True)
                rec = measure(spec)
                rows.append(
                    {
                        "case": "inference",
                        "network": args.network,
                        "image": name,
                        "shape": shape,
                        "source": source,
                        "mode": mode,
                        **rec,
                    }
                )
                print(
                    f"  {rec['wall_s']:.1f} s, {rec['voxels_per_s'] / 1e6:.3f} Mvox/s, "
                    f"peak RSS {rec['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
                shutil.rmtree(work / f"{name}-{source}-{mode}.ome.zarr", ignore_errors=True)
            if args.fit_steps and name == "2d":
                for source, mode, sampling in (
                    ("tiff", "memory", "whole"),
                    ("tiff", "memory", "regions"),
                ):
                    spec = dict(
                        max_memory=args.max_memory,
                        kind="fit",
                        source=source,
                        mode=mode,
                        path=str(files[source]),
                        psf=str(files["psf"]),
                        steps=args.fit_steps,
                        sampling=sampling,
                        out=str(work / "fit.ome.zarr"),
                    )
                    print(f"fit {name} {source} {mode} {sampling} ...", flush=True)
                    rec = measure(spec)
                    rows.append(
                        {
                            "case": f"fit ({sampling or 'regions, lazy'})",
                            "image": name,
                            "shape": shape,
                            "source": source,
                            "mode": mode,
                            **rec,
                        }
                    )
                    print(
                        f"  {rec['wall_s']:.1f} s, peak RSS {rec['peak_rss_mb']:.0f} MB", flush=True
                    )
                    shutil.rmtree(work / "fit.ome.zarr", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"rows": rows}


def _combos(args):
    if args.combos:
        return [tuple(c.split(":")) for c in args.combos]
    return [(source, mode) for source in args.sources for mode in args.modes]


def quality_part(args) -> dict:
    import jdeconv
    from jdeconv.metrics import psnr

    rows = []
    for shape in ((args.quality_2d,) * 2, (args.quality_z, args.quality_yx, args.quality_yx)):
        ndim = len(shape)
        clean = phantom(shape, seed=3)
        psf = psf_for(shape)
        noisy = degraded(clean, psf, seed=4)
        steps = args.steps if ndim == 2 else args.steps_3d
        cfg = jdeconv.Config.default(ndim, steps=steps, tta=False, seed=args.seed)
        truth = clean / clean.max()
        scores = {}
        for sampling in ("whole", "regions"):
            print(f"quality {shape} {sampling} ({steps} steps) ...", flush=True)
            t0 = time.perf_counter()
            result = jdeconv.fit(noisy, psf, cfg, verbose=False, sampling=sampling)
            seconds = time.perf_counter() - t0
            # Affine-free scoring: the phantom's scale is known (counts = 2000·blurred + 100).
            estimate = (np.asarray(result.deconvolved, np.float64) - 100.0) / 2000.0 / clean.max()
            scores[sampling] = {
                "psnr": psnr(truth, estimate, data_range=1.0),
                "seconds": seconds,
                "final_loss": result.history["loss"][-1],
            }
            print(f"  PSNR {scores[sampling]['psnr']:.3f} dB in {seconds:.0f} s", flush=True)
        input_psnr = psnr(
            truth, (noisy.astype(np.float64) - 100.0) / 2000.0 / clean.max(), data_range=1.0
        )
        rows.append(
            {
                "shape": shape,
                "steps": steps,
                "input_psnr": input_psnr,
                **{f"{k}_{m}": v[m] for k, v in scores.items() for m in v},
                "difference_db": scores["regions"]["psnr"] - scores["whole"]["psnr"],
            }
        )
    return {"rows": rows}


def cli_part(args) -> dict:
    """The issue's done-when command on an OME-Zarr volume, locally and with --workers 2."""
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    shape = (args.cli_z, args.yx, args.yx)
    files = make_inputs(data, f"scale-3d-z{shape[0]}-{'x'.join(map(str, shape))}", shape)
    rows, outputs = [], {}
    for workers in (None, 2):
        out = data / f"cli-{'local' if workers is None else f'workers{workers}'}.ome.zarr"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "jdeconv", "deconvolve", str(files["zarr"]), "--psf",
               str(files["psf"]), "-o", str(out), "--steps", str(args.cli_steps), "--no-tta",
               *args.cli_extra]  # fmt: skip
        if workers:
            cmd += ["--workers", str(workers)]
        print("running", " ".join(cmd[1:]), flush=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd} failed:\n{proc.stderr[-3000:]}")
        rss = next(
            int(line.split(":")[1]) / 1024
            for line in proc.stderr.splitlines()
            if "Maximum resident set size" in line
        )
        outputs[workers] = out
        rows.append(
            {
                "command": "jdeconv " + " ".join(cmd[3:]),
                "workers": workers,
                "wall_s": wall,
                "peak_rss_mb": rss,
                "stdout": proc.stdout.strip(),
            }
        )
        print(f"  {wall:.0f} s, peak RSS {rss:.0f} MB", flush=True)
    from jdeconv.zarr_io import read_ome_zarr

    _, source_meta = read_ome_zarr(files["zarr"])
    local, meta = read_ome_zarr(outputs[None])
    distributed, _ = read_ome_zarr(outputs[2])
    diff = float(abs(local.astype("float64") - distributed.astype("float64")).max().compute())
    checks = {
        "shape": list(local.shape),
        "input_axes": source_meta.axes,
        "output_axes": meta.axes,
        "input_pixel_size": list(source_meta.pixel_size),
        "output_pixel_size": list(meta.pixel_size),
        "max_abs_diff_workers2_vs_local": diff,
    }
    for out in outputs.values():
        shutil.rmtree(out, ignore_errors=True)
    return {"rows": rows, "checks": checks}


# --------------------------------------------------------------------------- report


def report(args, part: dict, info: dict) -> None:
    import _common as common

    stem = common.output_stem(Path(args.out), "scale", args.tag)
    lines = [f"# Scale: {args.part}", "", *common.machine_lines(info)]
    if args.part == "inference":
        method = part["rows"][0]["rss_method"] if part["rows"] else ""
        lines += [
            f"- Peak RSS: {method}, of the process that read, deconvolved and wrote one image "
            "(a fresh Python process per row, so JAX's own memory is included).",
            "- memory: whole file read, `deconvolve` on the array, float32 result in memory. "
            "dask: read lazily (tifffile Zarr store / OME-Zarr), lazy `deconvolve`, streamed "
            "into an OME-Zarr store. No TTA, default memory budget.",
            "- The model: the default fit of a central crop of the image "
            f"({args.model_steps} steps, the last kept); network `anchor`: its U-Net head "
            "zeroed, i.e. the model the default fit returns when it keeps step 0, and "
            "inference runs the anchor alone; `unet`: the trained head, the whole U-Net runs.",
            "",
        ]
        header = [
            "case", "network", "image", "shape", "source", "mode", "tile budget MB", "wall s",
            "Mvoxel/s", "peak RSS MB",
        ]  # fmt: skip
        body = [
            [
                r["case"],
                r.get("network", "fit"),
                r["image"],
                "×".join(map(str, r["shape"])),
                r["source"],
                r["mode"],
                f"{r['tile_budget_mb']:.0f}",
                f"{r['wall_s']:.1f}",
                f"{r['voxels_per_s'] / 1e6:.3f}",
                f"{r['peak_rss_mb']:.0f}",
            ]
            for r in part["rows"]
        ]
        lines += common.table(header, body, "llllllrrrr")
        _plot(part["rows"], stem.with_suffix(".png"), common)
        lines += ["", f"![peak memory and time against volume size]({stem.name}.png)"]
    elif args.part == "cli":
        c = part["checks"]
        lines += [
            "- Peak RSS: `/usr/bin/time -v` (Maximum resident set size) of the `jdeconv` "
            "process; with `--workers` the worker processes are separate (not included).",
            f"- Output: shape {c['shape']}, axes {c['output_axes']} (input {c['input_axes']}), "
            f"pixel sizes {c['output_pixel_size']} µm (input {c['input_pixel_size']}); "
            f"`--workers 2` vs local: max abs difference {c['max_abs_diff_workers2_vs_local']:g}.",
            "",
        ]
        body = [
            [f"`{r['command']}`", f"{r['wall_s']:.0f}", f"{r['peak_rss_mb']:.0f}"]
            for r in part["rows"]
        ]
        lines += common.table(["command", "wall s", "peak RSS MB"], body, "lrr")
        lines += ["", "What each run printed last (timings, losses, the step kept):", ""]
        lines += [f"- {r['stdout'].splitlines()[-1]}" for r in part["rows"] if r["stdout"]]
    else:
        lines += [
            '- Same phantom, PSF, config and seed; `sampling="whole"` holds the standardised '
            'image; `sampling="regions"` reads a bounded set of regions (jdeconv.sampling). '
            "PSNR against the ground truth, data range 1, output mapped back with the known "
            "gain and offset of the simulated counts.",
            "",
        ]
        header = [
            "image",
            "steps",
            "input PSNR",
            "whole PSNR",
            "regions PSNR",
            "regions − whole dB",
            "whole s",
            "regions s",
        ]
        body = [
            [
                "×".join(map(str, r["shape"])),
                str(r["steps"]),
                f"{r['input_psnr']:.2f}",
                f"{r['whole_psnr']:.3f}",
                f"{r['regions_psnr']:.3f}",
                f"{r['difference_db']:+.3f}",
                f"{r['whole_seconds']:.0f}",
                f"{r['regions_seconds']:.0f}",
            ]
            for r in part["rows"]
        ]
        lines += common.table(header, body, "lrrrrrrr")
    common.atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    common.write_json(stem.with_suffix(".json"), {"machine": info, "args": vars(args), **part})
    print(f"wrote {stem}.md/.json")


def _plot(rows, path: Path, common) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(10, 4))
    series = sorted({(r["source"], r["mode"]) for r in rows if r["case"] == "inference"})
    for source, mode in series:
        pts = sorted(
            (r["voxels"], r["peak_rss_mb"], r["wall_s"])
            for r in rows
            if r["case"] == "inference"
            and r["source"] == source
            and r["mode"] == mode
            and len(r["shape"]) == 3
        )
        if not pts:
            continue
        v, m, t = (np.array(c) for c in zip(*pts, strict=True))
        ax_mem.plot(v / 1e6, m, "o-", label=f"{source}, {mode}")
        ax_time.plot(v / 1e6, t, "o-", label=f"{source}, {mode}")
    ax_mem.set(xlabel="3D volume (Mvoxel)", ylabel="peak RSS (MB)", title="memory")
    ax_time.set(xlabel="3D volume (Mvoxel)", ylabel="wall time (s)", title="time")
    ax_mem.set_ylim(bottom=0)
    ax_time.set_ylim(bottom=0)
    ax_mem.legend()
    common.save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--part", choices=("inference", "quality", "cli"), default="inference")
    p.add_argument("--cli-z", type=int, default=64, help="cli: volume depth (Z×YX×YX)")
    p.add_argument("--cli-steps", type=int, default=20, help="cli: --steps")
    p.add_argument(
        "--cli-extra", nargs="*", default=[], help="cli: more options, e.g. --max-memory=1GB"
    )
    p.add_argument(
        "--data",
        default=str(Path(tempfile.gettempdir()) / "jdeconv-scale"),
        help="folder for the generated inputs (reused)",
    )
    p.add_argument("--z", type=int, nargs="+", default=[16, 32, 64], help="3D depths (Z×YX×YX)")
    p.add_argument("--yx", type=int, default=1024)
    p.add_argument("--size-2d", type=int, default=4096)
    p.add_argument("--sources", nargs="+", choices=("tiff", "zarr"), default=["tiff", "zarr"])
    p.add_argument("--modes", nargs="+", choices=("memory", "dask"), default=["memory", "dask"])
    p.add_argument(
        "--combos",
        nargs="+",
        choices=("tiff:memory", "tiff:dask", "zarr:memory", "zarr:dask"),
        help="source:mode pairs instead of every --sources × --modes",
    )
    p.add_argument("--max-memory", help="inference tile budget (default: jdeconv's)")
    p.add_argument("--fit-steps", type=int, default=0, help="also a short fit of the 2D image")
    p.add_argument(
        "--network",
        choices=("anchor", "unet"),
        default="anchor",
        help="inference: the fitted model's anchor alone (step 0) or its whole U-Net",
    )
    p.add_argument("--model-steps", type=int, default=10, help="inference: steps of the model")
    p.add_argument("--steps", type=int, default=150, help="quality: 2D steps")
    p.add_argument("--steps-3d", type=int, default=60, help="quality: 3D steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality-2d", type=int, default=2048)
    p.add_argument("--quality-z", type=int, default=32)
    p.add_argument("--quality-yx", type=int, default=512)
    p.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--tag", default="cpu")
    args = p.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    if args.quick:
        args.size_2d, args.yx, args.z = 1024, 512, [16]
        args.quality_2d, args.quality_z, args.quality_yx = 512, 16, 128
        args.steps, args.steps_3d = min(args.steps, 30), min(args.steps_3d, 10)
    sys.path.insert(0, str(HERE))
    import _common as common

    info = common.machine_info()
    part = {"inference": inference_part, "quality": quality_part, "cli": cli_part}[args.part](args)
    report(args, part, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
