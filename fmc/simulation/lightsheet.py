"""Physics of one light-sheet view, and of a multi-view fusion built from several such views.

A view looks at the specimen from one side: light travels into the tissue along the study's
degradation axes, so the side facing the optics is bright and sharp and the far side dim, blurred
and hazy. A fusion is the same simulation run from the opposite side and blended with weights that
favour each view where it is good (docs/references.md §6.1-6.3, after Preibisch's multiview
simulator). The input view enters the fusion with its very noise, so where the input is good the
target *is* the input: that is what makes the challenge's N_SSIM hard.

Simplification (and why it is harmless): attenuation is applied after the blur instead of before
(``A·(PSF ⊛ F)`` for ``PSF ⊛ (A·F)``); ``A`` varies over tens of µm, the PSF over one or two, so
the two differ by far less than the noise.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fmc.core.grids import block_mean, coarse_shape, resize_linear
from fmc.simulation.specimen import Specimen


@dataclass(frozen=True)
class OpticsParams:
    """Parameters of one view (lengths in µm; source: docs/references.md §6).

    Attributes
    ----------
    attenuation_length_um : float
        1/e length of light in tissue of unit density (Beer-Lambert, scattering + absorption);
        §6.3 suggests 1/e at 50-150 µm. Both the illumination and the detection path lose light.
    fluorophore_absorption : float
        Extra attenuation per unit fluorophore density relative to plain tissue: dense labelled
        structures cast shadows (Preibisch's δ·v term, OPTiSPIM's stripes).
    psf_sigma_um : (float, float)
        Gaussian PSF σ on the near side, axial then lateral. Axial: a sheet FWHM of ~3 µm
        (§6.1, 2-6 µm) gives σ ≈ 1.3 µm; lateral: FWHM ≈ 0.51 λ/NA ≈ 0.5 µm at NA 0.5,
        σ ≈ 0.22 µm. The PSF is elongated ~5× axially, like Preibisch's measured ones (~4.3×).
    blur_growth_um : float
        ℓ in σ(d) = σ0 (1 + d/ℓ): scattering widens the PSF with the depth d travelled in tissue
        (§6.3 suggests ℓ ≈ 50-100 µm).
    max_blur_factor : float
        Cap on σ(d)/σ0 (the deepest tissue is then uniformly smeared).
    haze_fraction : float
        Fraction of the detected light scattered into a broad halo at large depth; it grows as
        1 - exp(-d/haze_length_um) (§6.1: scattering adds a diffuse background).
    haze_length_um, haze_sigma_um : float
        Depth scale of the haze and width of its halo.
    photons : float
        Expected photo-electrons for a bright structure (density 1) at the surface on the near
        side. §6.2 (Preibisch) uses an SNR of ~25 at the mean, i.e. ~600 e-; dimmer live-imaging
        settings are typical, so the default is lower.
    background_photons : float
        Photo-electrons per voxel from stray light and the medium's autofluorescence.
    read_noise_e : float
        Camera read noise, Gaussian σ in e- (sCMOS: 1-2 e-).
    offset_adu : float
        Camera offset added to every pixel (~100 ADU is common) [typical-camera assumption].
    gain_adu_per_e : float
        ADU per photo-electron.
    """

    attenuation_length_um: float = 80.0
    fluorophore_absorption: float = 1.0
    psf_sigma_um: tuple[float, float] = (1.3, 0.22)
    blur_growth_um: float = 60.0
    max_blur_factor: float = 4.0
    haze_fraction: float = 0.35
    haze_length_um: float = 60.0
    haze_sigma_um: float = 6.0
    photons: float = 60.0
    background_photons: float = 2.0
    read_noise_e: float = 1.6
    offset_adu: float = 100.0
    gain_adu_per_e: float = 1.0


@dataclass(frozen=True)
class FusionParams:
    """How the views are combined.

    Attributes
    ----------
    blend_width : float
        Width of the cosine transition between two views, as a fraction of the specimen's
        extent along the blending coordinate (Preibisch blends over ~40 px past the middle).
    deconvolve : float
        Strength of an optional light sharpening of the fused volume (unsharp mask, 0 = off).
        Off by default: it would break "the target contains the input where the input is good".
    """

    blend_width: float = 0.2
    deconvolve: float = 0.0


# ----------------------------------------------------------------------------------------------
# Directions
# ----------------------------------------------------------------------------------------------
SLAB = 8  # z-planes processed at a time: bounded temporaries, and the unit of the noise streams
THREADS = 2  # numpy and scipy release the GIL in bulk work; slabs are independent


def _slabs(depth: int, reverse: bool = False) -> list[tuple[int, int]]:
    slabs = [(z, min(z + SLAB, depth)) for z in range(0, depth, SLAB)]
    return slabs[::-1] if reverse else slabs


def _integrate(values: np.ndarray, carry: np.ndarray, axes, flip: bool, spacing_zyx):
    """Path integral of ``values`` (per µm) from the entry side, for one z-slab.

    Light enters from the low side of each degradation axis (the high side when ``flip``); the
    integral is averaged over the axes. ``carry`` holds the integral reached at the slab's entry
    face along Z, so slabs visited in the light's order give the whole-volume integral.
    Returns the slab's integral and the new carry.
    """
    total = np.zeros(values.shape, dtype=np.float32)
    new_carry = carry
    for axis in axes:
        source = np.flip(values, axis=axis) if flip else values
        integral = np.cumsum(source, axis=axis, dtype=np.float32)
        if flip:
            integral = np.flip(integral, axis=axis)
        integral *= np.float32(spacing_zyx[axis])
        if axis == 0:
            integral += carry
            new_carry = integral[:1].copy() if flip else integral[-1:].copy()
        total += integral
    total /= np.float32(len(axes))
    return total, new_carry


def blend_coordinate(tissue: np.ndarray, axes) -> np.ndarray:
    """Position from the near side (0) to the far side (1) of the specimen along ``axes``.

    Each axis is normalised by the specimen's bounding box, so that the middle of the blend lies
    in the middle of the embryo, not of the volume; several axes are averaged (study 3).
    """
    total = np.zeros((1, 1, 1), dtype=np.float32)
    for axis in axes:
        profile = tissue.max(axis=tuple(a for a in range(3) if a != axis))
        inside = np.flatnonzero(profile > 0.5)
        lo, hi = (inside[0], inside[-1]) if inside.size else (0, tissue.shape[axis] - 1)
        coordinate = (np.arange(tissue.shape[axis], dtype=np.float32) - lo) / max(hi - lo, 1)
        shape = [1, 1, 1]
        shape[axis] = -1
        total = total + coordinate.reshape(shape)
    return total / np.float32(len(axes))


def view_weight(coordinate: np.ndarray, width: float) -> np.ndarray:
    """Cosine blending weight of the near view: 1 up to ``0.5 - width/2``, 0 past ``0.5 +
    width/2`` (the far view gets 1 minus it)."""
    t = np.clip((coordinate - (0.5 - width / 2)) / max(width, 1e-6), 0, 1)
    return (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# One view
# ----------------------------------------------------------------------------------------------
def blur_levels(fluorescence, spacing_zyx, optics: OpticsParams, levels: int = 3):
    """The object blurred by the near-side PSF scaled by factors 1 .. max_blur_factor.

    A depth-dependent blur is then a per-voxel linear blend of these few volumes (instead of a
    spatially varying convolution), shared by all views.
    """
    factors = np.linspace(1.0, optics.max_blur_factor, levels)
    sigma0 = np.array([optics.psf_sigma_um[0], optics.psf_sigma_um[1], optics.psf_sigma_um[1]])

    def blur(factor):
        return ndimage.gaussian_filter(fluorescence, factor * sigma0 / np.asarray(spacing_zyx),
                                       output=np.float32, truncate=3.0)

    with ThreadPoolExecutor(THREADS) as pool:
        return factors, list(pool.map(blur, factors))


def _blurred_at_depth(levels, depth: np.ndarray, optics: OpticsParams, z0: int, z1: int):
    """Blend the pre-blurred levels bracketing σ(d)/σ0 = 1 + d/ℓ (linear hat weights)."""
    factors, volumes = levels
    factor = depth / np.float32(optics.blur_growth_um)
    factor += 1
    np.minimum(factor, np.float32(optics.max_blur_factor), out=factor)
    step = np.float32(factors[1] - factors[0]) if len(factors) > 1 else np.float32(1)
    signal = np.zeros_like(factor)
    for level_factor, volume in zip(factors, volumes, strict=True):
        hat = factor - np.float32(level_factor)
        np.abs(hat, out=hat)
        hat /= -step
        hat += 1
        np.maximum(hat, 0, out=hat)
        hat *= volume[z0:z1]
        signal += hat
    return signal


def expected_signal(specimen: Specimen, levels, spacing_zyx, axes, flip: bool,
                    optics: OpticsParams):
    """Noise-free image of one view (in units of the object's density), before the camera.

    Parameters
    ----------
    specimen : Specimen
    levels : (factors, volumes)
        Output of :func:`blur_levels`.
    spacing_zyx : tuple of 3 floats
    axes : tuple of int
        Degradation axes; light enters from the low side (or the high side when ``flip``).
    flip : bool
    optics : OpticsParams

    Returns
    -------
    signal : numpy.ndarray (float32)
        Attenuated, depth-blurred image without its haze.
    haze : numpy.ndarray (float16)
        Fraction of each voxel's light scattered into the halo (grows with depth).
    halo_coarse : numpy.ndarray
        The broad halo on a coarse grid (see :func:`add_haze`).
    """
    shape = specimen.fluorescence.shape
    signal = np.empty(shape, dtype=np.float32)
    haze = np.empty(shape, dtype=np.float16)
    carry_tau = np.zeros((1,) + shape[1:], dtype=np.float32)
    carry_depth = np.zeros_like(carry_tau)
    absorption = np.float32(optics.fluorophore_absorption)
    inverse_length = np.float32(1.0 / optics.attenuation_length_um)
    # Slabs in the order the light meets them along Z (matters only if Z is a degradation axis).
    for z0, z1 in _slabs(shape[0], reverse=flip and 0 in axes):
        tissue = specimen.tissue[z0:z1]
        # Beer-Lambert: tissue and dense fluorophores absorb/scatter on the way in and out.
        density = specimen.fluorescence[z0:z1] * absorption
        density += tissue
        density *= inverse_length
        optical_depth, carry_tau = _integrate(density, carry_tau, axes, flip, spacing_zyx)
        depth, carry_depth = _integrate(tissue, carry_depth, axes, flip, spacing_zyx)  # µm
        block = _blurred_at_depth(levels, depth, optics, z0, z1)
        np.negative(optical_depth, out=optical_depth)
        np.exp(optical_depth, out=optical_depth)
        block *= optical_depth
        signal[z0:z1] = block
        depth /= np.float32(-optics.haze_length_um)
        np.exp(depth, out=depth)
        haze[z0:z1] = np.float32(optics.haze_fraction) * (1 - depth)
    # Scattered haze: a broad halo of the detected light; it varies over tens of µm, so it is
    # computed on a coarse grid.
    coarse = coarse_shape(shape, spacing_zyx, optics.haze_sigma_um / 3)
    step_um = np.asarray(shape) * np.asarray(spacing_zyx) / np.asarray(coarse)
    halo = ndimage.gaussian_filter(block_mean(signal, coarse), optics.haze_sigma_um / step_um,
                                   mode="nearest")
    # Interpolate Y and X now (small: coarse Z rows), Z slab by slab later.
    halo = resize_linear(halo, (coarse[0],) + shape[1:])
    return signal, haze, halo


def _halo_slab(halo_rows: np.ndarray, depth: int, z0: int, z1: int) -> np.ndarray:
    """Rows z0..z1 of the halo, interpolated along Z from its coarse rows."""
    n_in = halo_rows.shape[0]
    position = np.clip((np.arange(z0, z1) + 0.5) * n_in / depth - 0.5, 0, n_in - 1)
    lo = np.floor(position).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (position - lo).astype(np.float32)[:, None, None]
    return halo_rows[lo] * (1 - frac) + halo_rows[hi] * frac


def camera(simulated, rng: np.random.Generator, optics: OpticsParams,
           photons: float | None = None, needed=None) -> np.ndarray:
    """Haze, photon shot noise, read noise, offset and gain: uint16 counts of one view.

    Parameters
    ----------
    simulated : ndarray or (signal, haze, halo)
        A plain expected image, or the output of :func:`expected_signal`.
    rng : numpy.random.Generator
        One independent stream is spawned per z-slab, so the result does not depend on the
        number of threads.
    photons : float, optional
        Photo-electrons for density 1 (default ``optics.photons``).
    needed : callable (z0, z1) -> bool, optional
        Slabs for which it returns False are left at 0 (not used by the caller).

    Notes
    -----
    Shot noise is Poisson. Drawing Poisson variates for 10^8 voxels is slow, so voxels expecting
    more than 30 e- use the Gaussian of equal mean and variance (indistinguishable there);
    dimmer ones use the exact Poisson law.
    """
    photons = optics.photons if photons is None else photons
    signal, haze, halo = simulated if isinstance(simulated, tuple) else (simulated, None, None)
    out = np.zeros(signal.shape, dtype=np.uint16)
    slabs = _slabs(signal.shape[0])
    streams = rng.spawn(len(slabs))

    def expose(task):
        (z0, z1), stream = task
        if needed is not None and not needed(z0, z1):
            return
        lam = signal[z0:z1].copy()
        if haze is not None:
            spread = _halo_slab(halo, signal.shape[0], z0, z1)
            spread -= lam
            spread *= haze[z0:z1]
            lam += spread
        lam *= np.float32(photons)
        lam += np.float32(optics.background_photons)
        np.maximum(lam, 0, out=lam)
        counts = stream.standard_normal(lam.shape, dtype=np.float32)
        counts *= np.sqrt(lam)
        counts += lam
        dim = lam < 30
        counts[dim] = stream.poisson(lam[dim])
        read = stream.standard_normal(lam.shape, dtype=np.float32)
        read *= np.float32(optics.read_noise_e)
        counts += read
        counts *= np.float32(optics.gain_adu_per_e)
        counts += np.float32(optics.offset_adu)
        np.rint(counts, out=counts)
        np.clip(counts, 0, 65535, out=counts)
        out[z0:z1] = counts

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(expose, zip(slabs, streams, strict=True)))
    return out


# ----------------------------------------------------------------------------------------------
# Pair
# ----------------------------------------------------------------------------------------------
def simulate_pair(specimen: Specimen, spacing_zyx, axes, rng: np.random.Generator,
                  optics: OpticsParams | None = None, fusion: FusionParams | None = None,
                  target: str = "fusion") -> tuple[np.ndarray, np.ndarray]:
    """One (single view, target) pair, both uint16 ZYX.

    Parameters
    ----------
    specimen : Specimen
    spacing_zyx : tuple of 3 floats
        Voxel size in µm.
    axes : tuple of int
        Degradation axes (0=Z, 1=Y, 2=X); the input view enters from their low side.
    rng : numpy.random.Generator
    optics : OpticsParams, optional
    fusion : FusionParams, optional
    target : {'fusion', 'clean'}
        'fusion' (default, the challenge's setting): the input view and the view from the
        opposite side, cosine-blended; the input's own noise is kept where its weight is 1.
        'clean': an easier target for denoising experiments, the object seen through the
        near-side PSF with no attenuation, no haze and 20× the photons.

    Returns
    -------
    view, target : numpy.ndarray (uint16)
    """
    optics = optics or OpticsParams()
    fusion = fusion or FusionParams()
    levels = blur_levels(specimen.fluorescence, spacing_zyx, optics)
    view = camera(expected_signal(specimen, levels, spacing_zyx, axes, False, optics), rng, optics)
    if target == "clean":
        clean = camera(levels[1][0], rng, optics, photons=20 * optics.photons)
        return view, clean
    if target != "fusion":
        raise ValueError(f"unknown target mode {target!r}: 'fusion' or 'clean'")

    weight = view_weight(blend_coordinate(specimen.tissue, axes), fusion.blend_width)
    weight = np.broadcast_to(weight, view.shape)
    simulated = expected_signal(specimen, levels, spacing_zyx, axes, True, optics)
    del levels
    # The opposite view is only exposed where it enters the blend.
    other = camera(simulated, rng, optics, needed=lambda z0, z1: bool((weight[z0:z1] < 1).any()))
    del simulated
    # Same frame, same grid: registration is exact by construction. Blend as floats, round once;
    # where the input's weight is 1 the result is the input's own counts, noise included.
    fused = np.empty(view.shape, dtype=np.uint16)
    for z0, z1 in _slabs(view.shape[0]):
        block = view[z0:z1].astype(np.float32)
        block -= other[z0:z1]
        block *= weight[z0:z1]
        block += other[z0:z1]
        np.rint(block, out=block)
        fused[z0:z1] = np.clip(block, 0, 65535)
    if fusion.deconvolve > 0:
        fused = _sharpen(fused.astype(np.float32), spacing_zyx, optics, fusion.deconvolve)
        fused = np.clip(np.rint(fused), 0, 65535).astype(np.uint16)
    return view, fused


def _sharpen(volume: np.ndarray, spacing_zyx, optics: OpticsParams, amount: float) -> np.ndarray:
    """Unsharp mask with the near-side PSF: a one-step stand-in for a light deconvolution."""
    sigma0 = np.array([optics.psf_sigma_um[0], optics.psf_sigma_um[1], optics.psf_sigma_um[1]])
    blurred = ndimage.gaussian_filter(volume, sigma0 / np.asarray(spacing_zyx), truncate=3.0)
    volume += np.float32(amount) * (volume - blurred)
    return volume
