"""3D quality: RL, RL-TV and Tikhonov oracles, ground-truth-free rules and jdeconv's default.

Issue 10's item 4 at CPU size: three ``jdeconv.simulate``
phantoms (filaments, puncta, nuclei; 32×96×96, the shape of ``paper_3d.py``'s volume) ×
the papers' 17³ and 31³ Gibson-Lanni PSFs (``../shared/data/psf``) × two noise regimes
(``paper``: α 0.001, σ 0.1, 10 bits, as Papkov et al.'s 3D protocol without
salt-and-pepper; ``mild``: α 0.0005, σ 0.02, 12 bits), blurred with zero fill and clipped
to [0, 1] (``jdeconv.simulate.degrade``). Methods are ``quality.classical``'s: the
oracles choose with the ground truth; ``tik_nn_l1`` (non-negative Tikhonov with the ℓ1
weight of ``choose_sparsity``) is the default's anchor (its step 0) in 2D and 3D.
``--fit N`` adds ``jdeconv.fit(noisy, psf)`` (the default config) on N volumes spread
over the selection (``--set key=value`` overrides its config). Development data only
(phantoms), so tuning here is allowed; nothing was tuned yet.

Usage (from the repository root)::

    python benchmarks/quality3d.py --tag classical-3d     # 12 volumes, ~10 min on 2 cores
    python benchmarks/quality3d.py --fit 4 --tag default-3d  # plus 4 default fits (~1 h)
    python benchmarks/quality3d.py --fit 12 --tag default-3d-all --resume --cpu-devices 2
        # every volume, the fits data-parallel on the CPU split into 2 JAX devices (as the
        # command line trains by default); cut off, the same command again keeps the
        # finished volumes and runs the rest

Writes ``quality3d-<tag>.md`` and ``.json`` to ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import independent as IND  # noqa: E402

from jdeconv import simulate  # noqa: E402
from jdeconv.simulate import degrade  # noqa: E402

NAME = "quality3d"
SHAPE = (32, 96, 96)
PHANTOMS = {
    "filaments": lambda key, shape: simulate.filaments_3d(key, shape, count=12),
    "puncta": lambda key, shape: simulate.puncta_3d(key, shape, count=100),
    "nuclei": lambda key, shape: simulate.nuclei_3d(key, shape, count=4, radius_range=(6.0, 12.0)),
}
PSFS = {"gl_3d_17": "psf/gl_3d_17.npy", "gl_3d_31": "psf/gl_3d_31.npy"}
NOISES = {
    "paper": dict(alpha=0.001, sigma=0.1, salt_pepper=0.0, bits=10),
    "mild": dict(alpha=0.0005, sigma=0.02, salt_pepper=0.0, bits=12),
}


def ground_truth(name: str, shape, seed: int) -> np.ndarray:
    key = jax.random.fold_in(jax.random.key(seed), 2000 + list(PHANTOMS).index(name))
    volume = np.asarray(PHANTOMS[name](key, tuple(shape)), np.float64)
    return ((volume - volume.min()) / (volume.max() - volume.min())).astype(np.float32)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=C.DEFAULT_DATA, help="shared data folder")
    p.add_argument("--shape", type=int, nargs=3, default=SHAPE, help="volume Z Y X")
    p.add_argument("--phantoms", nargs="+", choices=list(PHANTOMS), help="only these")
    p.add_argument("--psfs", nargs="+", choices=list(PSFS), help="only these PSFs")
    p.add_argument("--noises", nargs="+", choices=list(NOISES), help="only these regimes")
    IND.add_fit_option(p)
    C.add_scoring_options(p, name=NAME, border=4, unit="voxels", infer_repeats=False)
    args = p.parse_args(argv)
    args.cases = IND.select(
        PSFS,
        NOISES,
        PHANTOMS,
        only_psfs=args.psfs,
        only_noises=args.noises,
        only_images=args.phantoms,
    )
    IND.parse_fit_options(args)
    for psf in {c[0] for c in args.cases}:
        if not (args.data / PSFS[psf]).is_file():
            raise SystemExit(f"{args.data / PSFS[psf]} not found: set --data to the shared data")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    stem = C.output_stem(args.out, NAME, args.tag)
    result = IND.new_result(
        NAME,
        args,
        shape=list(args.shape),
        images={
            k: "jdeconv.simulate phantom" for k in PHANTOMS if any(c[2] == k for c in args.cases)
        },
        psfs={k: v for k, v in PSFS.items() if any(c[0] == k for c in args.cases)},
        noises={k: v for k, v in NOISES.items() if any(c[1] == k for c in args.cases)},
        fit_cases=sorted("/".join(c) for c in args.fit_cases),
        overrides=args.config_overrides,
    )
    IND.run_all(
        args.cases,
        lambda case: run_case(case, args),
        result,
        stem,
        resume=args.resume,
        title="Quality, 3D (classical methods): phantoms × Gibson-Lanni PSFs × noise",
        script="quality3d.py",
    )
    return result


def run_case(case, args) -> dict:
    psf_name, noise_name, phantom = case
    t0 = time.perf_counter()
    psf = np.load(args.data / PSFS[psf_name]).astype(np.float32)
    gt = ground_truth(phantom, args.shape, args.seed)
    key = jax.random.fold_in(jax.random.key(args.seed), args.cases.index(case) + 1)
    noisy = np.asarray(degrade(key, gt, psf, normalize=False, **NOISES[noise_name]), np.float32)
    entry = IND.classical_entry(case, noisy, psf, gt, args)
    IND.fit_default(entry, case, noisy, psf, gt, args)
    entry["seconds"] = time.perf_counter() - t0
    return entry


if __name__ == "__main__":
    main()
