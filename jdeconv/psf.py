"""Point-spread functions: validation, normalisation and models.

A PSF in jdeconv is a real array with an odd size on every axis, its centre in the
middle pixel, non-negative, finite and summing to one. :func:`validate_psf` checks all of
that and says how to fix what is wrong; models (:func:`gaussian_psf`,
:func:`gibson_lanni_psf`) return PSFs that already satisfy it.

"Centred" means the PSF's centre of mass is within half a pixel of the middle pixel on
every axis (:func:`check_psf_layout`). The centre of mass, not the peak: it is the mean
shift the blur applies to an image, so an off-centre PSF shifts the deconvolved image by
that much; and a defocus ring, whose peak is on the ring, has its mass in the middle.
:func:`center_psf` centres a PSF that is off. A PSF with most of its mass in its outermost
pixels is cropped too tight (the blur reaches beyond the array): a warning.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.special

from ._checks import check_finite, check_real_dtype

__all__ = [
    "validate_psf",
    "check_psf_layout",
    "center_psf",
    "gaussian_psf",
    "gibson_lanni_psf",
    "resample_psf",
    "match_psf_to_image",
    "check_psf_sampling",
    "PIXEL_SIZE_RTOL",
]

# Relative tolerance on the sum of a PSF before we call it "not normalised".
_SUM_RTOL = 1e-3
# Largest distance (pixels, per axis) of the centre of mass from the middle pixel. Centred
# PSFs are at 0 (Gaussian, Gibson-Lanni with matched indices, the SSI 2D ring) or within
# 0.02 (the SSI 3D stacks, whose focus is half a plane before the middle); rounding the
# centre of mass to a pixel, as center_psf does, leaves at most 0.5.
CENTRE_TOLERANCE = 0.5
# Fraction of the mass in the outermost one-pixel shell above which a PSF looks cropped
# too tight ("mostly at its border"). Well-cropped PSFs hold far less there: the SSI 2D
# ring 1 %, Gibson-Lanni 17^3 12 % (a widefield PSF has the same energy in every plane),
# a Gaussian of sigma 1 in 9x9 0.1 %; a Gaussian of sigma 1 in 3x3 (25 % of its mass cut
# off) holds 80 %, of sigma 2 in 5x5 52 %.
BORDER_FRACTION = 0.5


def validate_psf(
    psf, *, ndim: int | None = None, normalize: bool = False, check_centre: bool = True
) -> np.ndarray:
    """Check a PSF and return it as a float32 numpy array.

    Args:
      psf: array-like, 2D or 3D, odd size on every axis, centre in the middle.
      ndim: the rank the PSF must have (the image's rank), or None to accept 2 or 3.
      normalize: divide by the sum instead of raising when the sum is not 1.
      check_centre: check the layout a deconvolution needs (:func:`check_psf_layout`):
        an off-centre PSF raises, one cropped too tight warns. A forward operator, which
        may blur with any kernel, passes False.

    Returns:
      The PSF as float32, summing to 1.

    Raises:
      ValueError: naming the problem and the fix, for a wrong rank, even size, NaN/Inf,
        negative values, a zero or non-unit sum (without ``normalize``), a non-numeric
        dtype, or a centre of mass off the middle pixel (with ``check_centre``).

    Warns:
      UserWarning: when most of the mass is in the outermost pixels (with
        ``check_centre``).

    Example:
      >>> psf = validate_psf(2 * gaussian_psf((9, 9), 1.0), normalize=True)
      >>> round(float(psf.sum()), 6)
      1.0
    """
    arr = np.asarray(psf)
    check_real_dtype(arr, "PSF")
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"PSF must be 2D or 3D, got {arr.ndim}D with shape {arr.shape}; squeeze "
            "singleton axes or pick the plane/stack you mean."
        )
    if ndim is not None and arr.ndim != ndim:
        hint = (
            "take the PSF's in-focus plane"
            if arr.ndim > ndim
            else "jdeconv psf --model gibson-lanni --size Z Y X writes one"
        )
        raise ValueError(
            f"PSF rank {arr.ndim} (shape {arr.shape}) does not match the image rank {ndim}; "
            f"use a {ndim}D PSF ({hint})."
        )
    if any(s % 2 == 0 for s in arr.shape):
        raise ValueError(
            f"PSF shape {arr.shape} has an even size; every axis must be odd with the centre "
            "in the middle pixel. Crop or pad it by one pixel (jdeconv.psf.center_psf does "
            "this)."
        )
    arr = arr.astype(np.float64)
    check_finite(arr, "PSF")
    if np.any(arr < 0):
        raise ValueError(
            f"PSF has negative values (min {arr.min():.3g}); clip them to 0 "
            "(np.clip(psf, 0, None)) and renormalise."
        )
    total = arr.sum()
    if total <= 0:
        raise ValueError("PSF sums to zero; it must have positive mass.")
    if abs(total - 1.0) > _SUM_RTOL:
        if not normalize:
            raise ValueError(
                f"PSF sums to {total:.6g}, not 1; divide it by its sum or pass normalize=True."
            )
    arr = arr / total
    if check_centre:
        check_psf_layout(arr)
    return arr.astype(np.float32)


def _centre_of_mass(arr: np.ndarray) -> np.ndarray:
    """Centre of mass per axis, in pixels from index 0 (``arr`` non-negative, sum > 0)."""
    total = arr.sum()
    return np.array(
        [
            float(
                np.dot(arr.sum(axis=tuple(a for a in range(arr.ndim) if a != axis)), np.arange(n))
                / total
            )
            for axis, n in enumerate(arr.shape)
        ]
    )


def check_psf_layout(psf) -> None:
    """Raise if a PSF is off-centre; warn if it looks cropped too tight (module docstring).

    Args:
      psf: a non-negative PSF with odd sizes and a positive sum (as :func:`validate_psf`
        has checked).

    Raises:
      ValueError: the centre of mass is more than :data:`CENTRE_TOLERANCE` (half a pixel)
        from the middle pixel on some axis; the message offers :func:`center_psf`.

    Warns:
      UserWarning: more than :data:`BORDER_FRACTION` of the mass is in the outermost
        one-pixel shell (over the axes longer than 2).

    Example:
      >>> psf = np.zeros((9, 9)); psf[1, 1] = 1.0
      >>> try:
      ...     check_psf_layout(psf)
      ... except ValueError as err:
      ...     print(str(err)[:60])
      PSF is off-centre: its centre of mass is at (1, 1), (-3, -3)
    """
    arr = np.asarray(psf, dtype=np.float64)
    middle = np.array([n // 2 for n in arr.shape])
    com = _centre_of_mass(arr)
    offset = com - middle
    if np.any(np.abs(offset) > CENTRE_TOLERANCE):
        raise ValueError(
            f"PSF is off-centre: its centre of mass is at {_coords(com)}, {_coords(offset)} "
            f"pixels from the middle pixel {_coords(middle)} of its shape {arr.shape} "
            f"(more than {CENTRE_TOLERANCE} on an axis), so the result would be shifted. "
            "Centre it with jdeconv.psf.center_psf(psf) (on the command line: --center-psf)."
        )
    inner = tuple(slice(1, -1) if n > 2 else slice(None) for n in arr.shape)
    if any(n > 2 for n in arr.shape):
        border = 1.0 - arr[inner].sum() / arr.sum()
        if border > BORDER_FRACTION:
            warnings.warn(
                f"the PSF {arr.shape} looks cropped too tight: {border:.0%} of its mass is "
                "in its outermost pixels, so the blur reaches beyond it and the "
                "deconvolution will be incomplete. Use a larger PSF (a wider crop around "
                "the bead, or a larger size of a model PSF).",
                UserWarning,
                stacklevel=3,
            )


def _coords(values) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def center_psf(psf) -> np.ndarray:
    """A copy of ``psf`` shifted so its centre of mass is in the middle pixel.

    The array is zero-padded (never cropped, so no mass is lost) until the centre of mass,
    rounded to a pixel, is the middle of odd sizes on every axis; zero margins that
    padding makes on both sides of an axis are trimmed again. Sizes may change, and even
    sizes become odd. Useful for measured PSFs (beads) that are off-centre. Negative
    values (background subtraction) do not count towards the centre; the result is not
    normalised: pass it to :func:`validate_psf` with ``normalize=True``.

    Raises:
      ValueError: for NaN/Inf or a PSF without positive values.

    Example:
      >>> psf = np.zeros((9, 9)); psf[0:3, 0:3] = 1.0   # mass around (1, 1)
      >>> out = center_psf(psf)
      >>> out.shape, float(out[1, 1])
      ((3, 3), 1.0)
    """
    arr = np.asarray(psf, dtype=np.float64)
    check_finite(arr, "PSF")
    weights = np.clip(arr, 0.0, None)
    if weights.sum() <= 0:
        raise ValueError("PSF has no positive values; it cannot be centred.")
    centre = np.rint(_centre_of_mass(weights)).astype(int)
    pad = []
    for c, n in zip(centre, arr.shape, strict=True):
        half = max(c, n - 1 - c)
        pad.append((half - c, half - (n - 1 - c)))
    arr = np.pad(arr, pad)
    keep = []
    for axis, n in enumerate(arr.shape):
        profile = np.abs(arr).sum(axis=tuple(a for a in range(arr.ndim) if a != axis))
        nonzero = np.flatnonzero(profile)
        margin = min(nonzero[0], n - 1 - nonzero[-1]) if nonzero.size else 0
        keep.append(slice(margin, n - margin))
    return arr[tuple(keep)].copy()


def gaussian_psf(shape, sigma) -> np.ndarray:
    """A normalised, centred Gaussian PSF.

    Args:
      shape: odd size per axis, e.g. ``(17, 17)`` or ``(17, 17, 17)``.
      sigma: standard deviation in pixels, a scalar or one per axis.

    Returns:
      float32 array of ``shape`` summing to 1.

    Example:
      >>> gaussian_psf((9, 9), 1.5).shape
      (9, 9)
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or any(s < 1 or s % 2 == 0 for s in shape):
        raise ValueError(f"Gaussian PSF shape must be 2 or 3 odd sizes, got {shape}.")
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (len(shape),))
    if np.any(~np.isfinite(sig)) or np.any(sig <= 0):
        raise ValueError(f"sigma must be positive and finite, got {sigma}.")
    grids = np.meshgrid(*[np.arange(s) - s // 2 for s in shape], indexing="ij", sparse=True)
    r2 = sum((g / s) ** 2 for g, s in zip(grids, sig, strict=True))
    psf = np.exp(-0.5 * r2)
    return (psf / psf.sum()).astype(np.float32)


def gibson_lanni_psf(
    shape,
    *,
    numerical_aperture: float = 0.8,
    wavelength: float = 0.6,
    magnification: float = 16.0,
    ni: float = 1.33,
    ns: float = 1.33,
    ng: float = 1.5,
    ni0: float = 1.33,
    ng0: float = 1.5,
    tg: float = 170.0,
    tg0: float = 170.0,
    working_distance: float = 3000.0,
    pixel_size_xy: float = 0.406,
    pixel_size_z: float = 0.406,
    defocus: float = 0.0,
    particle_depth: float = 0.0,
    radial_oversampling: int | None = 2,
    normalize: bool = True,
) -> np.ndarray:
    """Scalar Gibson-Lanni widefield PSF of a point source scanned through the focus.

    Implements the scalar diffraction integral of Gibson & Lanni (1991), in the notation of
    Li, Xue & Blu (2017, eqs. 1-3)::

        h(r, z) = | ∫_0^ρmax J0(k·NA'·r·ρ) · exp(i·W(ρ; z)) · ρ dρ |²

        W(ρ; z) = k · [ zp·√(ns² − NA²ρ²)
                        + ti·√(ni² − NA²ρ²) − ti0·√(ni0² − NA²ρ²)
                        + tg·√(ng² − NA²ρ²) − tg0·√(ng0² − NA²ρ²) ]

    with ``k = 2π/wavelength``, ``ρ`` the normalised pupil radius, and a *particle scan*:
    the objective stays focused at depth ``particle_depth`` below the coverslip (immersion
    layer ``ti = working_distance − particle_depth``, ``ti0 = working_distance``) while the
    point source sits at depth ``zp = particle_depth + z``. Rays with ``NA·ρ`` above the
    smallest refractive index are evanescent, so ``ρmax = min(1, min(n)/NA)`` (Li et al.).
    Following Li et al., the back-aperture radius is ``a = zd·NA/√(M² + NA²)`` for an image
    at distance ``zd`` magnified ``M`` times, so the lateral Bessel argument uses
    ``NA' = NA·M/√(M² + NA²)``; this is the only place ``magnification`` enters (it differs
    from NA by NA²/2M², 0.12 % for 16×/0.8). The camera sits at the design tube length, so
    the tube length drops out.

    Li et al. speed the integral up by expanding the pupil phase in a Fourier-Bessel
    series; we integrate directly with Gauss-Legendre quadrature (the node count grows with
    the phase and Bessel oscillation), which is exact to float64 round-off here and cheap
    at PSF sizes.

    With the defaults (water immersion and sample, ``ni = ni0 = ns``, design coverslip
    ``ng = ng0``, ``tg = tg0``), the aberration terms cancel: ``W = k·z·√(ns² − NA²ρ²)``,
    pure defocus, and ``working_distance``, ``tg``, ``particle_depth`` have no effect. The
    in-focus plane is then exactly the Airy pattern ``(2·J1(v)/v)²``, ``v = k·NA'·r``,
    and the stack is mirror-symmetric about ``z = 0``.

    Sampling. Lateral pixel ``(y, x)`` sits at radius ``r = pixel_size_xy·√((y−cy)² +
    (x−cx)²)`` from the middle pixel ``(cy, cx)``. For a 3D ``shape`` plane ``i`` is at
    ``z = defocus + (i − nz//2)·pixel_size_z``; for a 2D ``shape`` the single plane is at
    ``z = defocus``. Positive ``z`` puts the source deeper in the sample, away from the
    objective. By default the radial profile is evaluated at radii spaced
    ``pixel_size_xy / radial_oversampling`` and linearly interpolated to the pixels, as in
    MicroscPSF-Py (the Python port of Li et al.'s code), which the SSI reference PSFs used;
    ``radial_oversampling=None`` evaluates every pixel's radius exactly instead.

    Reproducing the SSI reference PSFs (Kobayashi et al. 2020, royerlab/ssi-code
    ``SimpleMicroscopePSF(M=16, NA=0.8, n=1.33, wd=3000)``, wavelength 0.6 µm,
    ``generate_xyz_psf(dxy=0.406, dz=0.406, xy_size=N, z_size=N)``): those stacks put
    plane ``i`` at ``z = (i − (N−2)/2)·dz``, i.e. the focus falls half a plane *before*
    the middle plane (between planes 7 and 8 of 17, 14 and 15 of 31; plane ``N−1`` is
    the unpaired one, so the argmax, the first of a tie, is plane 7 or 14). Our stacks
    are centred instead (focus on the middle plane, as jdeconv's convolution assumes);
    ``defocus=pixel_size_z / 2`` gives the SSI stacks, and ``defocus=-7.5 * 0.406``
    (−3.045 µm) on a 2D shape gives their 2D kernel ``ssi_2d_17`` (plane 0 of the 17³
    stack: a bright centre inside a dark and a bright ring). With ``radial_oversampling=2``
    they agree to float32 round-off (identical float32 values in our runs: the reference's
    100-term Fourier-Bessel series is accurate to well below that for these parameters).
    With ``radial_oversampling=None`` they differ by 2.0 % (17³), 0.7 % (31³) and 3.1 %
    (2D) of the peak, correlation > 0.998: the error of the reference's linear
    interpolation on the steep central lobe, not of the optics.

    Args:
      shape: ``(ny, nx)`` or ``(nz, ny, nx)``, odd positive sizes.
      numerical_aperture: objective NA.
      wavelength: emission wavelength in vacuum, µm.
      magnification: objective (total) magnification M; sets the back-aperture
        geometry above.
      ni: refractive index of the immersion medium (experimental).
      ns: refractive index of the sample.
      ng: refractive index of the coverslip (experimental).
      ni0: immersion refractive index the objective is designed for.
      ng0: coverslip refractive index the objective is designed for.
      tg: coverslip thickness (experimental), µm.
      tg0: coverslip thickness the objective is designed for, µm.
      working_distance: design thickness of the immersion layer ``ti0``, µm; matters only
        when ``ni != ni0``.
      pixel_size_xy: lateral pixel size in the sample (camera pixel / M), µm.
      pixel_size_z: axial step between planes, µm (3D shapes only).
      defocus: axial position of the middle plane (of the only plane, in 2D) relative to
        the focal plane, µm; positive is deeper into the sample.
      particle_depth: depth below the coverslip of the nominal focal plane (the source at
        ``z = 0``), µm; matters only with refractive-index mismatch, where it sets the
        depth-dependent spherical aberration. ``particle_depth + z`` should be >= 0 for
        the source to be inside the sample.
      radial_oversampling: radial samples per lateral pixel for the interpolated profile
        (2 reproduces MicroscPSF-Py / SSI), or None for exact evaluation at every pixel.
      normalize: scale to sum 1 (the whole stack in 3D, the plane in 2D). Otherwise the
        intensity is relative to the on-axis peak of the in-focus aberration-free PSF
        (Strehl units), so the result is not a valid jdeconv PSF as is.

    Returns:
      float32 array of ``shape``, non-negative, summing to 1 when ``normalize``.

    Raises:
      ValueError: for a shape that is not 2 or 3 odd positive sizes, a non-positive or
        non-finite optical parameter, or ``radial_oversampling`` below 1.

    References:
      S. F. Gibson and F. Lanni, "Experimental test of an analytical model of aberration
      in an oil-immersion objective lens used in three-dimensional light microscopy",
      J. Opt. Soc. Am. A 8(10), 1601-1613 (1991).
      J. Li, F. Xue and T. Blu, "Fast and accurate three-dimensional point spread function
      computation for fluorescence microscopy", J. Opt. Soc. Am. A 34(6), 1029-1034
      (2017).

    Example:
      >>> psf = gibson_lanni_psf((17, 17, 17))
      >>> psf.shape, int(np.argmax(psf.max(axis=(1, 2))))
      ((17, 17, 17), 8)
      >>> ring = gibson_lanni_psf((17, 17), defocus=-3.045)  # SSI's 2D kernel
      >>> bool(ring[8, 9] < ring[8, 10])  # out of focus: a dark ring around the centre
      True
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or any(s < 1 or s % 2 == 0 for s in shape):
        raise ValueError(f"Gibson-Lanni PSF shape must be 2 or 3 odd positive sizes, got {shape}.")
    positive = {
        "numerical_aperture": numerical_aperture,
        "wavelength": wavelength,
        "magnification": magnification,
        "ni": ni,
        "ns": ns,
        "ng": ng,
        "ni0": ni0,
        "ng0": ng0,
        "pixel_size_xy": pixel_size_xy,
        "pixel_size_z": pixel_size_z,
    }
    for name, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value}.")
    others = {
        "tg": tg,
        "tg0": tg0,
        "working_distance": working_distance,
        "defocus": defocus,
        "particle_depth": particle_depth,
    }
    for name, value in others.items():
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}.")
    for name in ("tg", "tg0", "working_distance"):
        if others[name] < 0:
            raise ValueError(f"{name} is a thickness and must be >= 0, got {others[name]}.")
    if radial_oversampling is not None and int(radial_oversampling) < 1:
        raise ValueError(
            f"radial_oversampling must be a positive integer or None, got {radial_oversampling}."
        )

    na = float(numerical_aperture)
    k = 2.0 * np.pi / wavelength
    na_lateral = na * magnification / math.hypot(magnification, na)
    rho_max = min(1.0, min(ni, ns, ng, ni0, ng0) / na)

    if len(shape) == 3:
        nz = shape[0]
        z = defocus + (np.arange(nz) - nz // 2) * float(pixel_size_z)
    else:
        z = np.array([float(defocus)])
    ny, nx = shape[-2:]
    dy, dx = np.meshgrid(np.arange(ny) - ny // 2, np.arange(nx) - nx // 2, indexing="ij")
    # Integer squared distances give exact de-duplication of the radii.
    d2_unique, d2_index = np.unique(dy * dy + dx * dx, return_inverse=True)
    r_pixels = pixel_size_xy * np.sqrt(d2_unique)
    if radial_oversampling is None:
        r_eval = r_pixels
    else:
        step = pixel_size_xy / int(radial_oversampling)
        r_eval = step * np.arange(int(np.ceil(r_pixels[-1] / step)) + 2)

    # Optical path difference, k·W(ρ; z) = k·(z·√(ns² − NA²ρ²) + W0(ρ)), with W0 the
    # z-independent terms: the particle_depth mismatch, immersion and coverslip.
    def path(n, rho):
        return np.sqrt(n * n - (na * rho) ** 2)

    def opd(rho):
        ti0 = working_distance
        ti = working_distance - particle_depth
        w0 = (
            particle_depth * path(ns, rho)
            + ti * path(ni, rho)
            - ti0 * path(ni0, rho)
            + tg * path(ng, rho)
            - tg0 * path(ng0, rho)
        )
        return k * (z[:, None] * path(ns, rho) + w0)

    # Enough Gauss-Legendre nodes for the total oscillation of the integrand (phase span
    # plus Bessel argument, in radians); converges exponentially beyond ~span/2 nodes.
    ends = np.array([0.0, rho_max])
    phase_span = float(np.max(np.abs(np.diff(opd(ends), axis=1))))
    bessel_span = k * na_lateral * float(r_eval[-1]) * rho_max
    n_nodes = int(min(64 + np.ceil(phase_span + bessel_span), 20000))
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    rho = 0.5 * rho_max * (nodes + 1.0)
    weights = 0.5 * rho_max * weights

    pupil = np.exp(1j * opd(rho)) * (weights * rho)  # (nz, n_nodes)
    bessel = scipy.special.j0(k * na_lateral * np.outer(r_eval, rho))  # (nr, n_nodes)
    # Strehl units: the in-focus aberration-free amplitude on axis is ∫ρ dρ = ρmax²/2.
    profile = np.abs(pupil @ bessel.T) ** 2 / (0.5 * rho_max**2) ** 2  # (nz, nr)

    if radial_oversampling is not None:
        profile = np.stack([np.interp(r_pixels, r_eval, p) for p in profile])
    psf = profile[:, d2_index.reshape(ny, nx)]  # (nz, ny, nx)
    if len(shape) == 2:
        psf = psf[0]
    if normalize:
        psf = psf / psf.sum()
    return psf.astype(np.float32)


# ----------------------------------------------------------------------------- sampling

# Relative difference between a PSF's and the image's pixel size below which the PSF is
# used as it is: 1 % changes a 17-pixel PSF's extent by less than 0.1 pixel.
PIXEL_SIZE_RTOL = 0.01


def resample_psf(psf, pixel_size, target_pixel_size, *, max_shape=None) -> np.ndarray:
    """The PSF sampled on another grid: centred, odd-sized, non-negative, summing to 1.

    Each output pixel is the PSF's value at that pixel's centre, interpolated with cubic
    splines (``scipy.ndimage.map_coordinates``, zero outside the given PSF); the middle
    pixel maps onto the middle pixel, so a centred PSF stays centred. The output covers
    the same physical extent as the input (``(n - 1) // 2 * pixel_size`` on each side of
    the centre, rounded down to whole target pixels), cut to ``max_shape`` when given.
    Spline overshoot below zero is clipped and the result renormalised. Point sampling
    matches how model PSFs (:func:`gibson_lanni_psf`) are computed; a measured PSF given
    on a finer grid than the image is assumed to be smooth at the image's pixel size
    (sampled at or above Nyquist), as an optical PSF is.

    Args:
      psf: 2D (YX) or 3D (ZYX) PSF, odd sizes, centre in the middle pixel.
      pixel_size: its pixel size per axis (µm), or one number for every axis.
      target_pixel_size: the image's pixel size per axis (µm), or one number.
      max_shape: largest output shape (e.g. the image's); even sizes are rounded down.

    Returns:
      float32 PSF on the target grid, summing to 1.

    Raises:
      ValueError: for a PSF that is not 2D/3D with odd sizes, or pixel sizes that are not
        positive and finite, or do not have one value per axis.

    Example:
      >>> coarse = gaussian_psf((9, 9), 1.0)        # sigma 1 px at 0.2 µm
      >>> fine = resample_psf(coarse, 0.2, 0.1)     # sigma 2 px at 0.1 µm
      >>> fine.shape
      (17, 17)
      >>> bool(np.abs(fine - gaussian_psf((17, 17), 2.0)).max() < 1e-3)
      True
    """
    import scipy.ndimage

    arr = np.asarray(psf, dtype=np.float64)
    if arr.ndim not in (2, 3) or any(n % 2 == 0 for n in arr.shape):
        raise ValueError(
            f"resample_psf needs a 2D or 3D PSF with odd sizes, got shape {arr.shape}."
        )
    src = _per_axis(pixel_size, arr.ndim, "pixel_size")
    dst = _per_axis(target_pixel_size, arr.ndim, "target_pixel_size")
    limit = (None,) * arr.ndim if max_shape is None else tuple(int(m) for m in max_shape)
    coords = []
    for n, s, d, m in zip(arr.shape, src, dst, limit, strict=True):
        factor = s / d  # target pixels per PSF pixel
        half = int(math.floor((n // 2) * factor + 1e-6))
        if m is not None:
            half = min(half, max((m - 1) // 2, 0))
        coords.append(n // 2 + (np.arange(2 * half + 1) - half) / factor)
    grid = np.meshgrid(*coords, indexing="ij")
    out = scipy.ndimage.map_coordinates(arr, grid, order=3, mode="grid-constant", cval=0.0)
    out = np.clip(out, 0.0, None)
    total = out.sum()
    if not total > 0:
        raise ValueError(
            f"the PSF {arr.shape} resampled from {_coords(src)} to {_coords(dst)} µm has no "
            "positive values; check the pixel sizes."
        )
    return (out / total).astype(np.float32)


def _per_axis(value, ndim: int, name: str) -> tuple[float, ...]:
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.shape != (ndim,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(
            f"{name} must be one positive number or one per axis ({ndim}), got {value!r}."
        )
    return tuple(float(v) for v in values)


def match_psf_to_image(
    psf, image_shape, *, psf_pixel_size=None, pixel_size=None
) -> tuple[np.ndarray, str | None]:
    """The PSF on the image's grid: resampled where both pixel sizes are known and differ.

    The rules (README, "PSF sampling"):

    - on every axis where the PSF's and the image's pixel sizes are both known and differ
      by more than :data:`PIXEL_SIZE_RTOL` (1 %), the PSF is resampled to the image's
      pixel size (:func:`resample_psf`, cut to the image's shape) and renormalised; the
      returned notice says so in one line;
    - where either size is unknown, the PSF is taken to be sampled like the image, and
      :func:`check_psf_sampling` warns when it does not look like it.

    Args:
      psf: 2D/3D PSF of the image's rank, odd sizes, centred.
      image_shape: the image's shape (``(Y, X)`` or ``(Z, Y, X)``).
      psf_pixel_size: the PSF's pixel size per axis in µm (None, or None entries, where
        unknown).
      pixel_size: the image's pixel size per axis in µm (same convention).

    Returns:
      ``(psf, notice)``: the PSF (resampled, or as given) and a one-line notice, or None
      when nothing was changed.

    Example:
      >>> coarse = gibson_lanni_psf((9, 9), pixel_size_xy=0.2)
      >>> psf, notice = match_psf_to_image(coarse, (64, 64), psf_pixel_size=(0.2, 0.2),
      ...                                  pixel_size=(0.1, 0.1))
      >>> psf.shape, notice
      ((17, 17), 'PSF resampled from 0.2 x 0.2 to 0.1 x 0.1 µm pixels (YX): 9x9 -> 17x17.')
    """
    arr = np.asarray(psf)
    ndim = arr.ndim
    src = _sizes_or_none(psf_pixel_size, ndim)
    dst = _sizes_or_none(pixel_size, ndim)
    known = [s is not None and d is not None for s, d in zip(src, dst, strict=True)]
    differ = [
        k and abs(s - d) > PIXEL_SIZE_RTOL * d for k, s, d in zip(known, src, dst, strict=True)
    ]
    if not all(known):
        check_psf_sampling(arr, image_shape, unknown_axes=[not k for k in known])
    if not any(differ):
        return arr, None
    from_sizes = tuple(s if f else 1.0 for s, f in zip(src, differ, strict=True))
    to_sizes = tuple(d if f else 1.0 for d, f in zip(dst, differ, strict=True))
    out = resample_psf(arr, from_sizes, to_sizes, max_shape=image_shape)
    axes = "ZYX"[-ndim:]
    changed = "".join(a for a, f in zip(axes, differ, strict=True) if f)
    cut = ""
    if any(
        o < int(math.floor((n // 2) * s / d + 1e-6)) * 2 + 1
        for o, n, s, d in zip(out.shape, arr.shape, from_sizes, to_sizes, strict=True)
    ):
        cut = " (cut to the image's size)"
    notice = (
        f"PSF resampled from {_sizes_text(src, differ)} to {_sizes_text(dst, differ)} µm "
        f"pixels ({changed}): {'x'.join(map(str, arr.shape))} -> "
        f"{'x'.join(map(str, out.shape))}{cut}."
    )
    return out, notice


def _sizes_or_none(sizes, ndim: int) -> tuple[float | None, ...]:
    if sizes is None:
        return (None,) * ndim
    sizes = tuple(sizes)
    if len(sizes) != ndim:
        raise ValueError(f"pixel sizes {sizes} need one value (or None) per axis ({ndim}).")
    out = []
    for s in sizes:
        value = None if s is None else float(s)
        out.append(value if value is not None and math.isfinite(value) and value > 0 else None)
    return tuple(out)


def _sizes_text(sizes, which) -> str:
    return " x ".join(f"{s:.4g}" for s, w in zip(sizes, which, strict=True) if w)


def check_psf_sampling(psf, image_shape, *, unknown_axes=None) -> None:
    """Warn when a PSF of unknown pixel size does not look sampled like the image.

    Two signs of a PSF recorded or generated on another grid (checked only on the axes
    whose sizes are unknown, ``unknown_axes``; all by default):

    - 3D, axial: the in-focus peak falls to half within fewer than 2 planes (its axial
      FWHM is under 2 planes) while the image has at least 16 planes. A widefield or
      confocal PSF is 2-4 times longer along Z than across, so this usually means the
      PSF's Z step is much coarser than the image's, or the PSF is a single plane
      stacked.
    - lateral: more than 95 % of the in-focus mass in the middle pixel: a PSF narrower
      than a pixel
      (sampled much more coarsely than the image, or the image is undersampled), with
      which deconvolution does almost nothing.

    Example:
      >>> import warnings
      >>> flat = np.zeros((3, 9, 9)); flat[1] = gaussian_psf((9, 9), 1.5)
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     check_psf_sampling(flat, (40, 64, 64))
      >>> "axial" in str(caught[0].message)
      True
    """
    arr = np.asarray(psf, dtype=np.float64)
    unknown = [True] * arr.ndim if unknown_axes is None else list(unknown_axes)
    total = arr.sum()
    if not total > 0:
        return
    hint = (
        "check that the PSF's voxel size matches the image's (give both: psf_pixel_size= "
        "and pixel_size=, or --psf-pixel-size and --pixel-size, and jdeconv resamples the "
        "PSF)"
    )
    if arr.ndim == 3 and unknown[0] and image_shape[0] >= 16:
        peaks = arr.reshape(arr.shape[0], -1).max(axis=1)
        fwhm = int(np.count_nonzero(peaks >= 0.5 * peaks.max()))
        if fwhm < 2:
            warnings.warn(
                f"the 3D PSF {arr.shape} is only {fwhm} plane(s) long at half its peak "
                f"(axial FWHM) for a stack of {image_shape[0]} planes, though a microscope's "
                "PSF is 2-4 times longer along Z than across: "
                f"{hint}, and that it is a real Z stack through the focus.",
                UserWarning,
                stacklevel=3,
            )
    if any(unknown[-2:]):
        centre = arr[tuple(n // 2 for n in arr.shape)]
        in_plane = arr[arr.shape[0] // 2] if arr.ndim == 3 else arr
        if centre > 0.95 * in_plane.sum():
            warnings.warn(
                f"the PSF {arr.shape} holds {centre / in_plane.sum():.0%} of its in-focus "
                "mass in one pixel: it is narrower than a pixel, so deconvolution will do "
                f"little. {hint[0].upper() + hint[1:]}.",
                UserWarning,
                stacklevel=3,
            )
