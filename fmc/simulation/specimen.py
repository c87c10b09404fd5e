"""An embryo-like specimen on the voxel grid of a study: envelope, cells, nuclei or membranes.

The specimen is the *fluorophore density* that a perfect microscope would record (arbitrary units,
bright structures ~1), plus a *tissue* map (1 inside the embryo, 0 in the medium) that the optics
use for attenuation and scattering. Everything is laid out in micrometres and converted to voxels
with the spacing, so cells keep a realistic size (5-15 µm, docs/references.md §6.3) whatever the
study's anisotropy.

Smooth fields (envelope distance, Voronoi boundary distance, texture) are computed on a coarse
grid and interpolated linearly: they vary over micrometres, and this keeps a 222×731×860 volume
fast. Sharp profiles (membrane cross-section, nucleus edge) are applied on the fine grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from fmc.core.errors import FmcConfigError
from fmc.core.grids import coarse_coordinates_um, coarse_shape, resize_linear


@dataclass(frozen=True)
class SpecimenParams:
    """Geometry of the synthetic embryo (all lengths in µm).

    Attributes
    ----------
    cell_diameter_um : (float, float)
        Range of the mean cell diameter, drawn once per specimen; cells vary ±30 % around it
        (blastomeres and early embryonic cells are 5-15 µm, docs/references.md §6.3).
    envelope_fill : float
        Envelope semi-axes as a fraction of the half field of view: the embryo fills most of
        the volume and leaves a dark margin of medium, as in the challenge recordings.
    surface_wobble : float
        Relative amplitude of the low-order shape deviations of the envelope.
    nucleus_to_cell : (float, float)
        Nucleus diameter as a fraction of its cell's (range).
    membrane_thickness_um : float
        FWHM of a membrane's cross-section before optics (a labelled bilayer pair plus cortex is
        well below the lateral resolution; 0.5 µm keeps it thin but sampled).
    cytoplasm_level : dict
        Diffuse signal inside cells relative to the structures (unbound / cytoplasmic label).
    coarse_um : float
        Grid step of the smooth fields.
    """

    cell_diameter_um: tuple[float, float] = (7.0, 12.0)
    envelope_fill: float = 0.86
    surface_wobble: float = 0.06
    nucleus_to_cell: tuple[float, float] = (0.5, 0.7)
    membrane_thickness_um: float = 0.5
    cytoplasm_nucleus: float = 0.04
    cytoplasm_membrane: float = 0.08
    coarse_um: float = 1.0


@dataclass
class Specimen:
    """A rendered specimen: ``fluorescence`` and ``tissue`` (float32, ZYX), ``cells`` (count)."""

    fluorescence: np.ndarray
    tissue: np.ndarray
    cells: int


def _smooth_noise(rng, shape, sigma_vox) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length ``sigma_vox`` (voxels)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox,
                                    mode="wrap")
    return field / max(float(field.std()), 1e-6)


# ----------------------------------------------------------------------------------------------
# Envelope and cells
# ----------------------------------------------------------------------------------------------
def _envelope(rng, extent_um, params: SpecimenParams):
    """Centre, semi-axes and wobble of the embryo: an ellipsoid with low-order bumps."""
    centre = extent_um / 2 + rng.uniform(-0.03, 0.03, 3) * extent_um
    semi = extent_um / 2 * params.envelope_fill * rng.uniform(0.92, 1.0, 3)
    # A few random cosine modes of the direction give a lumpy, egg-like outline.
    modes = rng.standard_normal((4, 3))
    phases = rng.uniform(0, 2 * np.pi, 4)
    amps = params.surface_wobble * rng.uniform(0.3, 1.0, 4) / 2
    return centre, semi, (modes, phases, amps)


def _envelope_sdf(points_um: np.ndarray, centre, semi, wobble) -> np.ndarray:
    """Approximate signed distance (µm, negative inside) of points (..., 3) to the envelope."""
    modes, phases, amps = wobble
    rel = (points_um - centre) / semi
    rho = np.sqrt(np.sum(rel * rel, axis=-1))
    direction = rel / np.maximum(rho, 1e-6)[..., None]
    bump = np.zeros_like(rho)
    for mode, phase, amp in zip(modes, phases, amps, strict=True):
        bump += amp * np.cos(direction @ mode + phase)
    # Distance along the radius, scaled by the local semi-axis: exact for a sphere, close enough
    # for the mildly elongated envelope (its only use is the tissue mask and the outer membrane).
    radius = np.sqrt(np.sum((direction * semi) ** 2, axis=-1))
    return ((rho - (1 + bump)) * radius).astype(np.float32)


def _cell_seeds(rng, extent_um, centre, semi, wobble, diameter) -> np.ndarray:
    """Cell centres: a jittered cubic lattice with pitch ``diameter`` kept inside the envelope."""
    axes = [np.arange(diameter / 2, e, diameter) for e in extent_um]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    grid = grid + rng.uniform(-0.5, 0.5, 3) * diameter  # random lattice phase
    grid = grid + rng.normal(0, 0.22 * diameter, grid.shape)
    inside = _envelope_sdf(grid, centre, semi, wobble) < -0.35 * diameter
    return grid[inside]


def render_specimen(shape, spacing_zyx, content: str, rng: np.random.Generator,
                    params: SpecimenParams | None = None) -> Specimen:
    """Render one embryo-like specimen.

    Parameters
    ----------
    shape : tuple of 3 ints
        ZYX size in voxels.
    spacing_zyx : tuple of 3 floats
        Voxel size in µm.
    content : {'nucleus', 'membrane'}
        Nuclei as textured ellipsoids, or membranes as the boundaries of a Voronoi tessellation
        of the cell centres (plus the embryo's outer surface).
    rng : numpy.random.Generator
        Source of all randomness (deterministic for a given seed).
    params : SpecimenParams, optional
        Geometry; defaults to :class:`SpecimenParams`.

    Returns
    -------
    Specimen

    Raises
    ------
    FmcConfigError
        If the field of view cannot hold a few cells or a cell spans less than two voxels.
    """
    params = params or SpecimenParams()
    spacing = np.asarray(spacing_zyx, dtype=float)
    extent = np.asarray(shape) * spacing
    diameter = float(rng.uniform(*params.cell_diameter_um))
    _check_size(shape, spacing, extent, params)

    centre, semi, wobble = _envelope(rng, extent, params)
    seeds = _cell_seeds(rng, extent, centre, semi, wobble, diameter)
    if len(seeds) < 2:
        raise FmcConfigError(f"shape {list(shape)} at spacing {list(spacing_zyx)} µm holds "
                             f"fewer than 2 cells of {diameter:.0f} µm; use a larger shape")

    coarse = coarse_shape(shape, spacing, params.coarse_um)
    axes = coarse_coordinates_um(shape, coarse, spacing)
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    sdf_coarse = _envelope_sdf(points, centre, semi, wobble)
    # Tissue: a soft 1 µm edge, so that the mask is not aliased at coarse Z steps.
    tissue = resize_linear(np.clip(0.5 - sdf_coarse / 1.0, 0, 1), shape)

    if content == "nucleus":
        fluorescence = tissue * np.float32(params.cytoplasm_nucleus)
        _draw_nuclei(fluorescence, seeds, diameter, spacing, rng, params)
    else:
        fluorescence = _membranes(shape, spacing, coarse, points, sdf_coarse, seeds, rng, params)
        fluorescence += tissue * np.float32(params.cytoplasm_membrane)
    return Specimen(fluorescence=fluorescence, tissue=tissue, cells=len(seeds))


def _check_size(shape, spacing, extent, params: SpecimenParams) -> None:
    """A clear error for a volume too small to hold an embryo with cells."""
    small = params.cell_diameter_um[0]
    if min(shape) < 8 or np.any(extent < 2.5 * small):
        raise FmcConfigError(
            f"shape {list(shape)} at spacing {list(np.round(spacing, 3))} µm is a field of view of "
            f"{' × '.join(f'{e:.0f}' for e in extent)} µm: too small for an embryo with cells of "
            f"{small:.0f}-{params.cell_diameter_um[1]:.0f} µm; each axis needs >= 8 voxels and "
            f">= {2.5 * small:.0f} µm")


# ----------------------------------------------------------------------------------------------
# Nuclei
# ----------------------------------------------------------------------------------------------
def _draw_nuclei(volume, seeds, diameter, spacing, rng, params: SpecimenParams) -> None:
    """Add one textured ellipsoidal nucleus per cell into ``volume`` (in place)."""
    # Edge softness: at least half a voxel of the coarsest axis so no nucleus vanishes between
    # thick planes, at most the fluorescence boundary of chromatin (~0.3 µm).
    edge = max(0.3, 0.35 * float(np.sqrt(np.mean(spacing ** 2))))
    for seed in seeds:
        size = diameter * rng.uniform(0.8, 1.2) * rng.uniform(*params.nucleus_to_cell)
        semi = size / 2 * rng.uniform(0.85, 1.15, 3)
        brightness = rng.uniform(0.55, 1.0)
        mitotic = rng.random() < 0.04  # condensed chromatin: small and bright
        if mitotic:
            semi, brightness = semi * 0.6, 1.6
        centre = seed + rng.normal(0, 0.08 * diameter, 3)
        # Random orientation: rotate the ellipsoid's axes.
        rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        reach = semi.max() + 2 * edge
        lo = np.maximum(np.floor((centre - reach) / spacing).astype(int), 0)
        hi = np.minimum(np.ceil((centre + reach) / spacing).astype(int) + 1, volume.shape)
        if np.any(hi <= lo):
            continue
        grids = np.meshgrid(*[np.arange(a, b) * s - c for a, b, s, c in
                              zip(lo, hi, spacing, centre, strict=True)], indexing="ij")
        local = np.stack(grids, axis=-1) @ rotation
        rho = np.sqrt(np.sum((local / semi) ** 2, axis=-1))
        inside = np.clip(0.5 - (rho - 1) * semi.mean() / edge, 0, 1).astype(np.float32)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        texture = _chromatin(rng, inside.shape, spacing, local, semi, mitotic)
        volume[box] += brightness * inside * texture


def _chromatin(rng, shape, spacing, local, semi, mitotic) -> np.ndarray:
    """Chromatin texture: ~1 µm grain around 1, plus one or two darker nucleoli."""
    grain_vox = np.maximum(0.6 / spacing, 0.3)
    texture = 1 + (0.12 if mitotic else 0.22) * _smooth_noise(rng, shape, grain_vox)
    if not mitotic:
        for _ in range(rng.integers(1, 3)):
            where = rng.uniform(-0.4, 0.4, 3) * semi
            radius = rng.uniform(0.8, 1.4)
            d2 = np.sum((local - where) ** 2, axis=-1) / radius ** 2
            texture *= 1 - 0.45 * np.exp(-d2)
    return np.clip(texture, 0.2, None).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Membranes
# ----------------------------------------------------------------------------------------------
def _membranes(shape, spacing, coarse, points, sdf_coarse, seeds, rng,
               params: SpecimenParams) -> np.ndarray:
    """Membrane density: a thin sheet on every Voronoi face between cells and on the surface."""
    distances, nearest = cKDTree(seeds).query(points.reshape(-1, 3), k=2, workers=-1)
    # Half the gap between the two nearest-centre distances is ~the distance to the face between
    # the two cells; the outer surface is a face too.
    face = 0.5 * (distances[:, 1] - distances[:, 0]).reshape(coarse).astype(np.float32)
    face = np.minimum(face, np.abs(sdf_coarse))
    # Per-cell label level and a punctate texture (vesicles, uneven labelling) along faces.
    level = rng.uniform(0.6, 1.0, len(seeds)).astype(np.float32)
    amplitude = 0.5 * (level[nearest[:, 0]] + level[nearest[:, 1]]).reshape(coarse)
    amplitude *= np.clip(1 + 0.25 * _smooth_noise(rng, coarse, 1.0), 0.3, None)
    amplitude *= sdf_coarse < 0.5  # no membrane in the medium
    # Sampling width: a sheet thinner than a voxel would vanish between thick Z planes; widen it
    # by the voxel footprint along the sheet's normal and lower its peak (area density is kept).
    sigma = params.membrane_thickness_um / 2.355
    normal = np.stack(np.gradient(face, *[np.diff(a[:2])[0] for a in
                                          _axes_from_points(points)]), axis=0)
    normal /= np.maximum(np.sqrt(np.sum(normal ** 2, axis=0)), 1e-6)
    footprint = np.sum((normal * spacing[:, None, None, None]) ** 2, axis=0) / 12
    width = np.sqrt(sigma ** 2 + footprint).astype(np.float32)
    amplitude *= sigma / width

    face_f = resize_linear(face, shape)
    width_f = resize_linear(width, shape)
    face_f /= width_f
    del width_f
    np.square(face_f, out=face_f)
    face_f *= -0.5
    np.exp(face_f, out=face_f)
    face_f *= resize_linear(amplitude.astype(np.float32), shape)
    return face_f


def _axes_from_points(points: np.ndarray) -> list[np.ndarray]:
    """The 1D coordinate axes of a meshgrid stack (..., 3)."""
    return [points[:, 0, 0, 0], points[0, :, 0, 1], points[0, 0, :, 2]]
