"""Add your own loss term (total variation) and train with it, composed by name.

Command:
    python examples/custom_loss.py                  # 128x128 image, 300 steps
    python examples/custom_loss.py --tv-weight 0.05
    python examples/custom_loss.py --tiny           # smoke test (the tests use it)

Expected runtime: about 5 minutes on a 2-core laptop CPU with the defaults (the TV term
needs the unmasked pass as well as the blind-spot's masked one, so a step costs about
twice a ``noise2self`` step, ~0.4 s on such a machine); about a minute with --tiny, most
of it compilation.

A loss term in jdeconv is a pure function of :class:`jdeconv.losses.Passes` (the
standardised ``image``, the blind-spot ``mask`` and the network's outputs on one patch)
returning a scalar. ``register_loss`` gives it a name and declares which passes it reads;
``Config(loss_weights={...})`` then mixes it with the built-in terms. Here: the
blind-spot loss of Noise2Self through the PSF (``bsp``, Kobayashi et al. 2020) plus an
anisotropic total-variation penalty on the deconvolved image, a classical edge-preserving
smoothness prior.

Expected result: training prints the ``bsp`` and ``tv`` terms separately (they are in
``result.history``) and the PSNR of input and result against the ground truth. Run it
with ``--tv-weight 0`` (plain blind-spot training, but with both passes) and with larger
weights to see the trade-off: the more weight, the smoother and more piecewise-constant
the result.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import jdeconv
from jdeconv.losses import Passes, register_loss
from jdeconv.metrics import psnr
from jdeconv.psf import gibson_lanni_psf
from jdeconv.simulate import degrade


def total_variation(p: Passes) -> jax.Array:
    """Mean absolute finite difference of the deconvolved patch along each axis (L1 TV)."""
    x = p.deconvolved
    return sum(jnp.mean(jnp.abs(jnp.diff(x, axis=axis))) for axis in range(x.ndim))


# overwrite=True so that running this file twice in one session (e.g. in a notebook or
# the tests) replaces the term instead of raising.
register_loss("tv", total_variation, needs=("unmasked",), overwrite=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tv-weight", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a few seconds' smoke test")
    args = parser.parse_args(argv)

    import skimage.data

    size = 48 if args.tiny else 128
    crop = skimage.data.camera()[160 : 160 + size, 200 : 200 + size].astype(np.float64)
    clean = ((crop - crop.min()) / (crop.max() - crop.min())).astype(np.float32)
    psf = gibson_lanni_psf((17, 17), defocus=-3.045)
    noisy = degrade(jax.random.key(args.seed), clean, psf)

    cfg = jdeconv.Config(
        loss_weights={"bsp": 1.0, "tv": args.tv_weight},
        steps=2 if args.tiny else args.steps,
        seed=args.seed,
        patch_size=32 if args.tiny else 64,
        batch_size=2 if args.tiny else 16,
    )
    print(f"loss: {dict(cfg.loss_weights)}")
    result = jdeconv.fit(noisy, psf, cfg, verbose=not args.tiny)
    history = result.history
    print(
        f"final terms: bsp {history['bsp'][-1]:.4g}, tv {history['tv'][-1]:.4g} "
        f"(total {history['loss'][-1]:.4g}); kept step {result.best_step}"
    )
    scores = {
        "input": psnr(clean, noisy, data_range=1.0),
        "deconvolved": psnr(clean, result.deconvolved, data_range=1.0),
    }
    print(f"PSNR: input {scores['input']:.2f} dB, deconvolved {scores['deconvolved']:.2f} dB")
    return {**scores, "history": history}


if __name__ == "__main__":
    main()
