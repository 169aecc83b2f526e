"""The quality benchmark's matrix: PSF families, noise regimes and contents (2D).

A cell is one PSF × one noise regime × one content kind; each content kind has a few
images (a synthetic phantom of ``jdeconv.simulate`` and 256² crops of SSI's ground-truth
images). Every image is min-max normalised to [0, 1] and degraded with
``jdeconv.simulate.degrade(key, gt, psf, normalize=False, **noise)``: 'same' blur with
zero fill (the papers' protocol), Poisson-Gaussian noise ``x + sqrt(alpha x + sigma²)
N(0, 1)``, optional salt-and-pepper, quantisation, clipping to [0, 1].

Not a public module: benchmarks/quality.py imports it from its own folder.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import numpy as np
import skimage.color
import skimage.io

from jdeconv import simulate
from jdeconv.psf import gaussian_psf, gibson_lanni_psf

SSI_PSF_FILE = "psf/ssi_2d_17.npy"
EMISSION_UM = 0.52  # GFP-like emission wavelength of the in-focus widefield models


# --------------------------------------------------------------------------- PSFs


def _widefield_na08() -> np.ndarray:
    # 40×/0.8 water objective (matched media, so an aberration-free in-focus Airy
    # pattern), 0.1 µm pixels: Nyquist is 4 NA / λ ≈ 0.16 µm, so 1.6× oversampled; the
    # OTF is zero beyond 0.62 of the Nyquist frequency. Central lobe ≈ a Gaussian of 1.4 px.
    return gibson_lanni_psf(
        (25, 25),
        numerical_aperture=0.8,
        wavelength=EMISSION_UM,
        magnification=40.0,
        pixel_size_xy=0.1,
    )


def _widefield_na14() -> np.ndarray:
    # 100×/1.4 oil objective, oil-matched sample and coverslip (aberration-free Airy), a
    # 6.5 µm camera pixel: 0.065 µm in the sample (Nyquist 0.093 µm). Central lobe ≈ a
    # Gaussian of 1.3 px.
    return gibson_lanni_psf(
        (25, 25),
        numerical_aperture=1.4,
        wavelength=EMISSION_UM,
        magnification=100.0,
        ni=1.515,
        ni0=1.515,
        ns=1.515,
        ng=1.515,
        ng0=1.515,
        pixel_size_xy=0.065,
    )


def _confocal_na14() -> np.ndarray:
    # An idealised confocal PSF: the 1.4 NA widefield PSF squared (excitation × detection
    # at the same wavelength, pinhole closed to a point), renormalised. √2 narrower
    # central lobe (≈ 0.9 px) and almost no rings.
    psf = _widefield_na14().astype(np.float64) ** 2
    return (psf / psf.sum()).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class PSFSpec:
    name: str
    description: str


PSFS: dict[str, PSFSpec] = {
    spec.name: spec
    for spec in (
        PSFSpec(
            "ssi_ring",
            "SSI's defocus ring (ssi_2d_17.npy: Gibson-Lanni 16×/0.8 water, 0.406 µm "
            "pixels, 3 µm out of focus), 17²",
        ),
        PSFSpec(
            "wf_na08",
            "widefield in focus, Gibson-Lanni 40×/0.8 water, λ 0.52 µm, 0.1 µm pixels "
            "(Airy; central lobe ≈ Gaussian σ 1.4 px), 25²",
        ),
        PSFSpec(
            "wf_na14",
            "widefield in focus, Gibson-Lanni 100×/1.4 oil, λ 0.52 µm, 0.065 µm pixels "
            "(Airy; lobe ≈ σ 1.3 px), 25²",
        ),
        PSFSpec("gauss2", "Gaussian, σ 2 px, 17²"),
        PSFSpec(
            "confocal_na14",
            "confocal-like: the wf_na14 PSF squared and renormalised (point pinhole, one "
            "wavelength; lobe ≈ σ 0.9 px), 25²",
        ),
    )
}


def load_psf(name: str, data: Path) -> np.ndarray:
    """The PSF ``name`` of :data:`PSFS` (float32, sum 1)."""
    if name == "ssi_ring":
        path = data / SSI_PSF_FILE
        if not path.is_file():
            raise SystemExit(f"PSF file not found: {path} (set --data)")
        psf = np.load(path).astype(np.float64)
        return (psf / psf.sum()).astype(np.float32)
    return _psf_model(name)


@functools.cache
def _psf_model(name: str) -> np.ndarray:
    models = {
        "wf_na08": _widefield_na08,
        "wf_na14": _widefield_na14,
        "gauss2": lambda: gaussian_psf((17, 17), 2.0),
        "confocal_na14": _confocal_na14,
    }
    return models[name]()


# --------------------------------------------------------------------------- noise


@dataclasses.dataclass(frozen=True)
class NoiseSpec:
    name: str
    alpha: float
    sigma: float
    salt_pepper: float
    bits: int
    description: str

    def degrade_kwargs(self) -> dict:
        return {
            "alpha": self.alpha,
            "sigma": self.sigma,
            "salt_pepper": self.salt_pepper,
            "bits": self.bits,
        }


# From photon-starved to mild. Input PSNRs (measured per image, in the results) depend
# on the content and on the blur as much as on the noise.
NOISES: dict[str, NoiseSpec] = {
    spec.name: spec
    for spec in (
        NoiseSpec("starved", 0.02, 0.15, 0.0, 10, "photon-starved: α 0.02, σ 0.15"),
        NoiseSpec("paper", 0.001, 0.1, 0.01, 10, "the papers' SSI noise: α 0.001, σ 0.1, 1 % s&p"),
        NoiseSpec("moderate", 0.002, 0.05, 0.0, 10, "moderate: α 0.002, σ 0.05"),
        NoiseSpec("mild", 0.0005, 0.02, 0.0, 12, "mild: α 0.0005, σ 0.02, 12 bits"),
    )
}


# --------------------------------------------------------------------------- contents


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    name: str
    kind: str
    source: str  # "phantom:<function>" or "ssi:<file stem prefix>"


CONTENTS: dict[str, str] = {
    "puncta": "sparse point sources of varied brightness and size",
    "nuclei": "smooth textured blobs",
    "edges": "sharp edges, bars and text-like strokes",
    "filaments": "thin curvilinear structures",
}

IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec("puncta", "puncta", "phantom:puncta_2d"),
    ImageSpec("vesicules", "puncta", "ssi:vesicules"),
    ImageSpec("blobs", "nuclei", "phantom:nuclei_2d"),
    ImageSpec("nuclei", "nuclei", "ssi:nuclei924"),
    ImageSpec("edges", "edges", "phantom:edges_2d"),
    ImageSpec("usaf", "edges", "ssi:usaf"),
    ImageSpec("characters", "edges", "ssi:characters"),
    ImageSpec("filaments", "filaments", "phantom:filaments_2d"),
    ImageSpec("tubules", "filaments", "ssi:tubules"),
)


def _phantom(function: str, key, size: int) -> np.ndarray:
    shape = (size, size)
    # Counts scale with the area so a 64² test image looks like a 256² crop of one.
    area = size * size / 256**2
    if function == "puncta_2d":
        return simulate.puncta_2d(key, shape, count=max(1, round(300 * area)))
    if function == "nuclei_2d":
        return simulate.nuclei_2d(key, shape, count=max(1, round(12 * area)))
    if function == "edges_2d":
        return simulate.edges_2d(key, shape, count=max(2, round(16 * area)))
    if function == "filaments_2d":
        return simulate.filaments_2d(key, shape, count=max(1, round(12 * area)))
    raise ValueError(f"unknown phantom {function!r}")


def _normalize(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float64)
    lo, hi = image.min(), image.max()
    return ((image - lo) / (hi - lo)).astype(np.float32)


def ground_truth(spec: ImageSpec, *, data: Path, size: int, seed: int) -> np.ndarray:
    """The image's ground truth, ``size``², min-max normalised to [0, 1] (float32).

    Phantoms are drawn with ``key = fold_in(key(seed), index in IMAGES)``; SSI images
    are read (RGB to grey), min-max normalised and centre-cropped, then normalised again
    (as paper_2d.py's crops).
    """
    kind, _, name = spec.source.partition(":")
    if kind == "phantom":
        index = [s.name for s in IMAGES].index(spec.name)
        key = jax.random.fold_in(jax.random.key(seed), 1000 + index)
        return _normalize(_phantom(name, key, size))
    files = sorted((data / "ssi2d").glob(f"{name}*.png"))
    if len(files) != 1:
        raise SystemExit(f"expected one image {name}*.png under {data / 'ssi2d'} (set --data)")
    image = skimage.io.imread(files[0])
    if image.ndim == 3:
        image = skimage.color.rgb2gray(image[..., :3])
    image = _normalize(image)
    if min(image.shape) < size:
        raise SystemExit(f"{files[0].name} is smaller than {size}²")
    top, left = ((n - size) // 2 for n in image.shape)
    return _normalize(image[top : top + size, left : left + size])
