"""``jdeconv demo``: the method's story on a test image, in minutes on a CPU.

1. Take a test image shipped with scikit-image (``camera``, loaded offline) or a synthetic
   filament image, centre-crop it and min-max normalise it to [0, 1]: the ground truth.
2. Degrade it as the SSI and Papkov et al. benchmarks do: blur with the SSI microscope PSF
   (Gibson-Lanni, 16x/0.8 NA water, 0.406 µm pixels, 17x17, the plane 3.045 µm out of
   focus: a ring, :func:`jdeconv.psf.gibson_lanni_psf`), Poisson-Gaussian noise
   (alpha 0.001, sigma 0.1), 1 % salt-and-pepper, 10-bit quantisation, clip
   (:func:`jdeconv.simulate.degrade`).
3. Deconvolve with Richardson-Lucy at several iteration counts and keep the best by PSNR
   against the ground truth: an oracle choice a user cannot make, so a strong baseline.
4. Deconvolve with :func:`jdeconv.fit` (default settings, or ``steps``), which never sees
   the ground truth.
5. Score all against the ground truth (PSNR and SSIM with data_range 1, over the whole
   image), write a comparison figure, a Markdown table and the images as TIFF.
"""

from __future__ import annotations

import functools
import platform
import time
from pathlib import Path

import numpy as np

from .devices import on_devices_text

__all__ = ["run_demo", "demo_image", "SSI_DEFOCUS", "RL_ITERATIONS"]

# The SSI 2D kernel: plane 0 of their 17³ stack, 7.5 planes of 0.406 µm before focus.
SSI_DEFOCUS = -7.5 * 0.406
RL_ITERATIONS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)


def demo_image(name: str, size: int, *, seed: int = 0) -> np.ndarray:
    """A ``size`` x ``size`` float32 ground truth in [0, 1]: "camera" or "filaments"."""
    if name == "camera":
        import skimage.data

        full = skimage.data.camera()  # shipped inside scikit-image: no download
        if size > min(full.shape):
            raise ValueError(f"size {size} is larger than the camera image {full.shape}.")
        y0, x0 = ((n - size) // 2 for n in full.shape)
        crop = full[y0 : y0 + size, x0 : x0 + size].astype(np.float64)
    elif name == "filaments":
        import jax

        from .simulate import filaments_2d

        count = max(4, round(20 * (size / 256) ** 2))
        crop = filaments_2d(jax.random.key(seed), (size, size), count=count).astype(np.float64)
    else:
        raise ValueError(f"unknown test image {name!r}; use 'camera' or 'filaments'.")
    crop = (crop - crop.min()) / (crop.max() - crop.min())
    return crop.astype(np.float32)


def run_demo(
    directory,
    *,
    size: int = 256,
    steps: int | None = None,
    image: str = "camera",
    seed: int = 0,
    quick: bool = False,
    verbose: bool = True,
) -> dict:
    """Run the demo and write its files into ``directory`` (which must exist).

    Args:
      directory: output folder for ``demo.png``, ``demo.md`` and the TIFF images.
      size: crop side in pixels.
      steps: training steps; None uses :func:`jdeconv.fit`'s defaults (``cfg=None``).
      image: "camera" or "filaments".
      seed: seeds the noise and the training.
      quick: smaller training patches and batches for a run of seconds (tests).
      verbose: progress bar and printed table.

    Returns:
      ``{"rows": [...], "best_rl_iterations": n, "rl_psnr": {n: dB}, "files": [...]}``.
    """
    import jax

    from . import regularized
    from .api import fit
    from .classic import richardson_lucy_path
    from .config import Config
    from .io import ImageMetadata, write_image
    from .metrics import psnr, ssim
    from .psf import gibson_lanni_psf
    from .simulate import degrade

    directory = Path(directory)
    say = print if verbose else (lambda *a, **k: None)
    clean = demo_image(image, size, seed=seed)
    psf = gibson_lanni_psf((17, 17), defocus=SSI_DEFOCUS)
    noisy = degrade(jax.random.key(seed), clean, psf)
    say(
        f"Ground truth: {image} {size}x{size}, in [0, 1]. Degraded with the SSI ring PSF "
        "(Gibson-Lanni, 17x17, 3.045 µm out of focus) and the papers' noise."
    )

    def scores(estimate):
        return psnr(clean, estimate, data_range=1.0), ssim(clean, estimate, data_range=1.0)

    t0 = time.perf_counter()
    path = richardson_lucy_path(noisy, psf, iterations=RL_ITERATIONS, padding="zero")
    rl_seconds = time.perf_counter() - t0
    rl_psnr = {n: psnr(clean, est, data_range=1.0) for n, est in path.items()}
    best_n = max(rl_psnr, key=rl_psnr.get)
    say(
        f"Richardson-Lucy: best at {best_n} iterations ({rl_psnr[best_n]:.2f} dB) of "
        f"{list(RL_ITERATIONS)}, chosen with the ground truth."
    )

    if steps is None and not quick:
        cfg = None  # fit's defaults
    else:
        extra = {"patch_size": 32, "batch_size": 4} if quick else {}
        cfg = Config.default(2, seed=seed, **({"steps": steps} if steps else {}), **extra)
    preset = (cfg or Config.default(2)).name
    say(f"jdeconv: fitting the {preset} preset to the noisy image (no ground truth) ...")
    result = fit(noisy, psf, cfg, verbose=verbose)
    t = result.timings

    rows = [
        ("input (noisy, blurred)", "", *scores(noisy), None),
        ("Richardson-Lucy (oracle)", f"n={best_n}", *scores(path[best_n]), rl_seconds),
        (
            f"jdeconv ({result.model.config.name})",
            f"{t['steps']} steps, kept step {result.best_step}",
            *scores(result.deconvolved),
            t["total"],
        ),
    ]
    # The ground-truth-free classical solutions a user can run in a second (jdeconv's 2D
    # default starts from the third and keeps it unless training does significantly better).
    for label, how, solve in (
        ("Tikhonov-Laplacian (Wiener)", "weight by GCV", regularized.tikhonov),
        (
            "non-negative Tikhonov-Laplacian",
            "weight by GCV",
            regularized.nonnegative_tikhonov,
        ),
        (
            "non-negative sparse Tikhonov-Laplacian",
            "GCV, choose_sparsity",
            functools.partial(regularized.nonnegative_tikhonov, sparsity="auto"),
        ),
    ):
        t0 = time.perf_counter()
        estimate = solve(noisy, psf)
        rows.append((label, how, *scores(estimate), time.perf_counter() - t0))

    meta = ImageMetadata("YX", (0.406, 0.406))
    images = {
        "ground_truth.tif": clean,
        "noisy.tif": noisy,
        "psf.tif": psf,
        "richardson_lucy.tif": path[best_n],
        "jdeconv.tif": result.deconvolved,
    }
    files = []
    for name, array in images.items():  # a demo run again replaces its own results
        files.append(write_image(directory / name, array, metadata=meta, overwrite=True))
    files.append(_figure(directory / "demo.png", clean, noisy, path[best_n], result, rows, best_n))
    table = _table(rows, image=image, size=size, cfg=result.model.config, timings=t, seed=seed)
    table += "\n" + _rl_table(rl_psnr, best_n)
    (directory / "demo.md").write_text(table)
    files.append(directory / "demo.md")

    say("")
    say(table)
    say("Files: " + ", ".join(str(f) for f in files))
    say(
        f"Try the command line on the same data:\n  jdeconv deconvolve {directory}/noisy.tif "
        f"--psf {directory}/psf.tif -o {directory}/noisy_deconv.tif"
    )
    return {
        "rows": rows,
        "best_rl_iterations": best_n,
        "rl_psnr": rl_psnr,
        "files": files,
    }


def _figure(path: Path, clean, noisy, rl, result, rows, best_n) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    panels = [
        ("ground truth", clean),
        (f"input: {rows[0][2]:.2f} dB", noisy),
        (f"Richardson-Lucy n={best_n}: {rows[1][2]:.2f} dB", rl),
        (f"jdeconv: {rows[2][2]:.2f} dB", result.deconvolved),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4), constrained_layout=True)
    for ax, (title, image) in zip(axes, panels, strict=True):
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    inset = axes[1].inset_axes([0.72, 0.72, 0.27, 0.27])
    inset.imshow(result.model.psf, cmap="magma", interpolation="nearest")
    inset.set_xticks([])
    inset.set_yticks([])
    inset.text(
        0.5,
        0.03,
        "PSF",
        color="white",
        fontsize=8,
        ha="center",
        va="bottom",
        transform=inset.transAxes,
    )
    fig.suptitle("PSNR against the ground truth (data range 1)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table(rows, *, image, size, cfg, timings, seed) -> str:
    import jax

    device = jax.devices()[0]
    lines = [
        f"# jdeconv demo: {image} {size}x{size}",
        "",
        "SSI degradation (min-max to [0, 1]; Gibson-Lanni 17x17 PSF 3.045 µm out of focus, "
        "zero-fill blur; alpha 0.001, sigma 0.1; 1 % salt-and-pepper; 10 bits; clip), "
        f"seed {seed}. Metrics over the whole image against the ground truth, data range 1. "
        "Richardson-Lucy uses zero padding (as the degradation) and its iteration count is "
        f"chosen with the ground truth; jdeconv uses {cfg.padding} padding and never sees "
        "the ground truth.",
        "",
        "| method | setting | PSNR (dB) | SSIM | time (s) |",
        "|---|---|---|---|---|",
    ]
    for method, setting, p, s, seconds in rows:
        when = "" if seconds is None else f"{seconds:.1f}"
        lines.append(f"| {method} | {setting} | {p:.2f} | {s:.3f} | {when} |")
    lines += [
        "",
        f"jdeconv: preset {cfg.name}, loss {dict(cfg.loss_weights)}, {cfg.base_channels} base "
        f"channels, depth {cfg.depth}, patch {cfg.patch_size}, batch {cfg.batch_size}, "
        f"learning rate {cfg.learning_rate}, TTA {cfg.tta}. Time: compile "
        f"{timings['compile']:.1f} s, training {timings['train']:.1f} s "
        f"({timings['seconds_per_step']:.3f} s/step{on_devices_text(timings)}), inference "
        f"{timings['inference']:.1f} s.",
        f"Device: {device.platform} ({device.device_kind}), JAX {jax.__version__}, "
        f"{platform.processor() or platform.machine()}.",
        "",
    ]
    return "\n".join(lines)


def _rl_table(rl_psnr: dict, best_n: int) -> str:
    header = "| RL iterations | " + " | ".join(str(n) for n in rl_psnr) + " |"
    rule = "|---" * (len(rl_psnr) + 1) + "|"
    values = "| PSNR (dB) | " + " | ".join(
        f"**{v:.2f}**" if n == best_n else f"{v:.2f}" for n, v in rl_psnr.items()
    )
    return "\n".join([header, rule, values + " |", ""])
