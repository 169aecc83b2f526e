"""Deconvolve a 2D image with the Python API: read, fit, write, and reuse the model.

Command:
    python examples/deconvolve_2d.py                          # synthetic data, see below
    python examples/deconvolve_2d.py --image my.tif --psf my_psf.tif --steps 1000
    python examples/deconvolve_2d.py --tiny                   # smoke test (tests use it)

Expected runtime: about 5 minutes on a 2-core laptop CPU with the defaults (500 steps on
a 256x256 image at about 0.4 s per step, as measured for ``jdeconv demo``, plus about a
minute of compilation and inference; early stopping may end it sooner); about a minute
with --tiny, most of it compilation.

Without --image, the example makes its own data: two 256x256 crops of scikit-image's
"camera" picture (shipped with the package, no download), blurred with the SSI
microscope PSF (a ring: Gibson-Lanni, 3.045 µm out of focus) and corrupted with the
papers' noise (``jdeconv.simulate.degrade``). It trains on the first crop, writes the
deconvolved image (float32 TIFF, with pixel sizes), saves the model, and applies the
saved model to the second crop.

Expected result (synthetic data): the deconvolved images score clearly higher PSNR than
the input (on the demo's centre crop of the same picture, with the same degradation and
training settings, it went from 17.3 to 20.0 dB: docs/demo.md), and the reused model
does about as well on the second crop without retraining.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

import jdeconv
from jdeconv.io import ImageMetadata, read_image, write_image
from jdeconv.metrics import psnr, ssim
from jdeconv.psf import gibson_lanni_psf
from jdeconv.simulate import degrade

SSI_PIXEL_SIZE = 0.406  # µm


def synthetic_pair(size: int, seed: int):
    """Two non-overlapping ground-truth crops of skimage's camera, degraded the SSI way."""
    import skimage.data

    camera = skimage.data.camera().astype(np.float64)
    top = camera[:size, :size]
    bottom = camera[-size:, -size:]
    psf = gibson_lanni_psf((17, 17), defocus=-3.045)
    pairs = []
    for i, crop in enumerate((top, bottom)):
        clean = ((crop - crop.min()) / (crop.max() - crop.min())).astype(np.float32)
        noisy = degrade(jax.random.fold_in(jax.random.key(seed), i), clean, psf)
        pairs.append((clean, noisy))
    return pairs, psf


def score(clean, image) -> str:
    if clean is None:
        return ""
    return (
        f"PSNR {psnr(clean, image, data_range=1.0):5.2f} dB, "
        f"SSIM {ssim(clean, image, data_range=1.0):.3f}"
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", help="your own 2D image (TIFF, .npy, PNG)")
    parser.add_argument("--psf", help="its PSF (2D, odd-sized, centred); needed with --image")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="examples_output/deconvolve_2d")
    parser.add_argument("--tiny", action="store_true", help="a few seconds' smoke test")
    args = parser.parse_args(argv)

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.image:
        if not args.psf:
            parser.error("--image needs --psf")
        noisy, meta = read_image(args.image)
        psf, _ = read_image(args.psf)
        pairs = [(None, noisy.astype(np.float32))]
    else:
        size = 48 if args.tiny else 256
        pairs, psf = synthetic_pair(size, args.seed)
        meta = ImageMetadata("YX", (SSI_PIXEL_SIZE, SSI_PIXEL_SIZE))

    overrides = {"steps": args.steps, "seed": args.seed}
    if args.tiny:
        overrides.update(steps=2, patch_size=32, batch_size=2)
    cfg = jdeconv.Config.preset("noise2self", **overrides)

    clean, noisy = pairs[0]
    print(f"training on {noisy.shape} for up to {cfg.steps} steps ({cfg.name} preset)")
    result = jdeconv.fit(noisy, psf, cfg, normalize_psf=True, verbose=not args.tiny)
    t = result.timings
    print(
        f"trained in {t['total']:.1f} s (compile {t['compile']:.1f} s, {t['steps']} steps, "
        f"kept step {result.best_step})"
    )
    print(f"input       {score(clean, noisy)}")
    print(f"deconvolved {score(clean, result.deconvolved)}")
    # The example's own output folder: running it again replaces its results.
    written = write_image(
        out / "deconvolved.tif", result.deconvolved, metadata=meta, overwrite=True
    )
    model_dir = jdeconv.save_model(result.model, out / "model")
    print(f"wrote {written} and the model to {model_dir}")

    scores = {
        "train": psnr(clean, result.deconvolved, data_range=1.0) if clean is not None else None
    }
    if len(pairs) > 1:
        clean2, noisy2 = pairs[1]
        model = jdeconv.load_model(model_dir)
        start = time.perf_counter()
        deconvolved2 = jdeconv.deconvolve(noisy2, model)
        print(f"second image, reused model ({time.perf_counter() - start:.1f} s):")
        print(f"input       {score(clean2, noisy2)}")
        print(f"deconvolved {score(clean2, deconvolved2)}")
        write_image(out / "second_deconvolved.tif", deconvolved2, metadata=meta, overwrite=True)
        scores["reused"] = psnr(clean2, deconvolved2, data_range=1.0)
    return scores


if __name__ == "__main__":
    main()
