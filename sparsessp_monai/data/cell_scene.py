"""
The scene of a synthetic cell sample: cells and organelles as float32 (Z, Y, X) density maps.

A scene is drawn once per seed from one ``numpy.random.Generator`` and shared by every structure, so the draws
below happen in a fixed order (cells, nuclei and nucleoli, chromatin, mitochondria, microtubules, actin,
distractors); changing that order changes every generated sample (bump ``GENERATOR_VERSION`` if you must).

* cells: half-ellipsoid domes (random lateral radii, in-plane orientation and height) sitting on a coverslip
  plane, centred on a jittered hexagonal lattice with random drop-outs; overlapping domes are split by a
  Voronoi rule on an approximate signed distance, which gives a packed monolayer with shared walls and gaps;
* per cell: a nucleus (ellipsoid well inside the cell) with nuclear envelope, 1-3 nucleoli and chromatin foci;
  mitochondria as persistent random walks (short puncta and longer tubes) in the cytoplasm; microtubules as stiff
  filaments growing from an MTOC next to the nucleus, sliding around it and stopping at the cortex; actin as a
  cortical shell plus basal stress fibres; plasma membrane as thin shells on free surfaces, shared walls and the
  basal side. Unlabelled lipid droplets and vesicles act as distractors that only show up in transmitted light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .cell_geometry import (
    WALK_STEP,
    box_around,
    box_grid,
    ellipsoid_sdf,
    random_directions,
    random_walks,
    sample_in_mask,
    splat,
)
from .filters import bump

__all__ = ["LINE_WEIGHT", "SCENE_MAPS", "Cell", "Scene", "draw_cells", "draw_scene"]

# SeedSequence key of the scene stream; cell_render uses 1 and 2, synthetic_cells 3 and 4 (independent streams)
_KEY_SCENE = 0

LINE_WEIGHT = 2.0 * math.pi * WALK_STEP
"""Weight of each walk point: after a unit lateral Gaussian blur a line of deposits peaks near 1."""

SCENE_MAPS: tuple[str, ...] = (
    "cell", "nucleus", "envelope", "nucleoli", "chromatin", "membrane", "mito", "microtubules", "actin", "cortex",
    "lipid", "vesicles",
)  # fmt: skip
"""Names of the density maps of a :class:`Scene`."""


@dataclass
class Cell:
    """One dome-shaped cell: base centre (z, y, x), radii (height, a_u, a_v) in its frame rotated by ``theta``
    about z, and its nucleus' centre and radii (filled in by :func:`draw_scene`)."""

    centre: np.ndarray
    radii: np.ndarray
    theta: float
    nuc_centre: np.ndarray = field(default_factory=lambda: np.zeros(3))
    nuc_radii: np.ndarray = field(default_factory=lambda: np.ones(3))


@dataclass
class Scene:
    """A drawn scene: its (Z, Y, X) shape and the float32 density maps named in :data:`SCENE_MAPS`."""

    shape: tuple[int, int, int]
    maps: dict[str, np.ndarray]


def draw_cells(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[list[Cell], float]:
    """Cells on a jittered hexagonal lattice with random drop-outs (never none in the field).

    Returns:
        ``(cells, z_sub)``: the cells and the z of the coverslip plane they sit on.
    """
    nz, ny, nx = shape
    z_sub = max(1.0, 0.12 * nz)
    top_margin = max(1.0, 0.06 * nz)
    # hiPSC monolayers are ~10 um tall; taller stacks get medium above the cells rather than taller cells
    max_height = max(2.0, min(36.0, nz - 1 - z_sub - top_margin))
    # ~5.8 um lateral radius for hiPSC-like cells, shrunk only when the field is too small to hold a few cells
    r_lat = max(3.0, min(20.0, 0.3 * min(ny, nx)))
    spacing = 1.7 * r_lat
    row_step = spacing * math.sqrt(3.0) / 2.0
    cells: list[Cell] = []
    y0 = -0.5 * row_step
    row = 0
    while y0 < ny + 0.5 * row_step:
        x0 = -0.5 * spacing + (0.5 * spacing if row % 2 else 0.0)
        while x0 < nx + 0.5 * spacing:
            cy = y0 + rng.uniform(-0.2, 0.2) * spacing
            cx = x0 + rng.uniform(-0.2, 0.2) * spacing
            a_u = r_lat * rng.uniform(0.85, 1.25)
            a_v = r_lat * rng.uniform(0.75, 1.05)
            height = max_height * rng.uniform(0.7, 1.0)
            theta = rng.uniform(0.0, math.pi)
            keep = rng.uniform() > 0.12
            if keep:
                cells.append(Cell(np.array([z_sub, cy, cx]), np.array([height, a_u, a_v]), theta))
            x0 += spacing
        y0 += row_step
        row += 1
    inside = [c for c in cells if 0 <= c.centre[1] < ny and 0 <= c.centre[2] < nx]
    if not inside:
        # the drop-out must never leave an empty field
        centre, radii = np.array([z_sub, ny / 2.0, nx / 2.0]), np.array([max_height * 0.85, r_lat, r_lat * 0.9])
        cells.append(Cell(centre, radii, 0.0))
    return cells, z_sub


def _split_domes(cells: list[Cell], shape: tuple[int, int, int], z_sub: float) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi split of overlapping domes: the owner label (-1 = medium) of every voxel and the signed distance to
    the nearest cell boundary (free surface, shared wall or coverslip), positive inside."""
    big = np.float32(1e3)
    f1 = np.full(shape, big, dtype=np.float32)
    f2 = np.full(shape, big, dtype=np.float32)
    label = np.full(shape, -1, dtype=np.int32)
    # the two nearest surfaces are tracked: half their difference is the distance to a shared wall
    for i, cell in enumerate(cells):
        ext = np.array([cell.radii[0] + 3.0, *(np.full(2, cell.radii[1:].max() * 1.1 + 3.0))])
        box = box_around(cell.centre, ext, shape)
        if box is None:
            continue
        f = ellipsoid_sdf(box, cell.centre, cell.radii, cell.theta)
        s1, s2, lab = f1[box], f2[box], label[box]
        closer = f < s1
        s2[...] = np.where(closer, s1, np.minimum(s2, f))
        s1[...] = np.where(closer, f, s1)
        lab[closer] = i
    zc = np.arange(shape[0], dtype=np.float32)[:, None, None] - np.float32(z_sub)
    sd = np.minimum(np.minimum(-f1, np.float32(0.5) * (f2 - f1)), zc)
    return label, sd


def _draw_nucleoli(rng: np.random.Generator, cell: Cell, nucleus: np.ndarray, nucleoli: np.ndarray) -> None:
    """Add 1-3 two-lobed nucleoli of ``cell`` to ``nucleoli`` (in place), kept inside the nucleus drawn so far."""
    shape = nucleus.shape
    nuc_radii = cell.nuc_radii
    for _ in range(int(rng.integers(1, 4))):
        # keep nucleoli away from the envelope, as in real nuclei
        rel = rng.uniform(-0.4, 0.4, size=3) * nuc_radii
        c_no = cell.nuc_centre + rel
        rho = float(rng.uniform(1.3, 2.8)) * max(0.5, min(1.0, nuc_radii[1:].min() / 10.0))
        for _lobe in range(2):
            c_lobe = c_no + rng.uniform(-0.6, 0.6, size=3) * rho
            lbox = box_around(c_lobe, np.full(3, rho + 2.0), shape)
            if lbox is None:
                continue
            z, y, x = box_grid(lbox)
            dist = np.sqrt(
                np.square(z - np.float32(c_lobe[0]))
                + np.square(y - np.float32(c_lobe[1]))
                + np.square(x - np.float32(c_lobe[2]))
            )
            blob = np.clip(np.float32(rho + 0.5) - dist, 0.0, 1.0) * np.clip(nucleus[lbox] * 2 - 1, 0.0, 1.0)
            np.maximum(nucleoli[lbox], blob, out=nucleoli[lbox])


def _draw_nuclei(
    rng: np.random.Generator, cells: list[Cell], z_sub: float, label: np.ndarray, sd: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nucleus, nuclear envelope and nucleoli maps; sets every cell's ``nuc_centre`` / ``nuc_radii``."""
    shape = sd.shape
    nucleus = np.zeros(shape, dtype=np.float32)
    envelope = np.zeros(shape, dtype=np.float32)
    nucleoli = np.zeros(shape, dtype=np.float32)
    for i, cell in enumerate(cells):
        h = cell.radii[0]
        offset = rng.uniform(-0.08, 0.08, size=2) * cell.radii[1:]
        nz_c = z_sub + 0.42 * h
        nuc_radii = np.array(
            [max(1.0, min(0.3 * h, 0.42 * h - 1.5)), *(cell.radii[1:] * rng.uniform(0.48, 0.6, size=2))]
        )
        cell.nuc_centre = np.array([nz_c, cell.centre[1] + offset[0], cell.centre[2] + offset[1]])
        cell.nuc_radii = nuc_radii
        theta_n = cell.theta + rng.uniform(-0.3, 0.3)
        box = box_around(cell.nuc_centre, nuc_radii.max() + 3.0, shape)
        if box is None:
            continue
        fn = ellipsoid_sdf(box, cell.nuc_centre, nuc_radii, theta_n)
        own = (label[box] == i).astype(np.float32) * np.clip(sd[box] - np.float32(1.0), 0.0, 1.0)
        np.maximum(nucleus[box], np.clip(np.float32(0.5) - fn, 0.0, 1.0) * own, out=nucleus[box])
        np.maximum(envelope[box], bump(fn, 1.0) * own, out=envelope[box])
        _draw_nucleoli(rng, cell, nucleus, nucleoli)
    return nucleus, envelope, nucleoli


def _draw_chromatin(rng: np.random.Generator, nucleus: np.ndarray, nucleoli: np.ndarray) -> np.ndarray:
    """Chromatin foci: random bright points in the nucleus outside the nucleoli."""
    count = max(1, int(np.count_nonzero(nucleus > 0.5)) // 30)
    pts = sample_in_mask(rng, (nucleus > 0.5) & (nucleoli < 0.3), count)
    return splat(nucleus.shape, pts, rng.uniform(2.0, 6.0, size=len(pts)))


def _draw_mitochondria(rng: np.random.Generator, cyto_ok: np.ndarray) -> np.ndarray:
    """Mitochondria in the cytoplasm: ~35 % puncta, the rest tubes of 1.5-6 um."""
    n_mito = int(np.count_nonzero(cyto_ok)) // 110
    starts = sample_in_mask(rng, cyto_ok, n_mito)
    lengths = np.where(rng.uniform(size=len(starts)) < 0.35, rng.integers(1, 4, size=len(starts)), 0)
    lengths = np.where(lengths == 0, rng.integers(10, 42, size=len(starts)), lengths)
    mito_pts = random_walks(rng, starts, random_directions(rng, len(starts), 0.5), lengths, cyto_ok, 0.25, 0.6)
    return splat(cyto_ok.shape, mito_pts, LINE_WEIGHT)


def _mtoc_origins(
    rng: np.random.Generator, cells: list[Cell], label: np.ndarray, cyto_ok: np.ndarray, per_cell: int = 32
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Filament origins: per cell, the first cytoplasmic spot beside or above its nucleus, ``per_cell`` points."""
    shape = np.asarray(label.shape)
    starts, centres = [], []
    for i, cell in enumerate(cells):
        nc, nr = cell.nuc_centre, cell.nuc_radii
        phi = rng.uniform(0, 2 * math.pi)
        lateral = (nr[1:].max() + 2.0) * np.array([math.sin(phi), math.cos(phi)])
        candidates = [
            nc + np.array([0.0, *lateral]),
            nc + np.array([0.0, *-lateral]),
            nc + np.array([nr[0] + 1.5, 0.0, 0.0]),
        ]
        for cand in candidates:
            idx = tuple(np.clip(np.rint(cand).astype(int), 0, shape - 1))
            if np.all(cand >= 0) and np.all(cand <= shape - 1) and label[idx] == i and cyto_ok[idx]:
                # a slightly spread origin avoids a single saturated voxel where all filaments meet
                starts.append(cand + rng.uniform(-1.0, 1.0, size=(per_cell, 3)))
                centres.append(np.repeat(nc[None], per_cell, axis=0))
                break
    return starts, centres


def _draw_microtubules(
    rng: np.random.Generator,
    cells: list[Cell],
    label: np.ndarray,
    sd: np.ndarray,
    cyto_ok: np.ndarray,
    nucleus: np.ndarray,
) -> np.ndarray:
    """Microtubules: stiff filaments from an MTOC beside the nucleus, wrapping around it, ending at the cortex."""
    nuc_mask = nucleus > 0.3
    mt_starts, mt_centres = _mtoc_origins(rng, cells, label, cyto_ok)
    if not mt_starts:
        return splat(sd.shape, np.zeros((0, 3)), LINE_WEIGHT)
    s = np.concatenate(mt_starts)
    mt_pts = random_walks(
        rng,
        s,
        random_directions(rng, len(s), 0.4),
        np.full(len(s), 160),
        sd > 1.0,
        0.04,
        0.9,
        slide_around=nuc_mask,
        slide_centres=np.concatenate(mt_centres),
    )
    return splat(sd.shape, mt_pts, LINE_WEIGHT)


def _draw_actin(
    rng: np.random.Generator, cells: list[Cell], z_sub: float, sd: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Actin: a cortical shell just inside the membrane plus straight stress fibres along the cell base.

    Returns:
        ``(actin, cortex)``.
    """
    shape = np.asarray(sd.shape)
    cortex = bump(sd - np.float32(1.3), 1.2) * (sd > 0)
    fibre_z = z_sub + 1.0
    fib_starts, fib_dirs = [], []
    base_ok = sd > 0.6
    for cell in cells:
        for _ in range(int(rng.integers(2, 6))):
            off = rng.uniform(-0.5, 0.5, size=2) * cell.radii[1:]
            p = np.array([fibre_z, cell.centre[1] + off[0], cell.centre[2] + off[1]])
            ang = cell.theta + rng.normal(0.0, 0.25)
            d = np.array([0.0, math.sin(ang), math.cos(ang)])
            # each fibre grows both ways from its seed point
            fib_starts += [p, p]
            fib_dirs += [d, -d]
    if fib_starts:
        fs = np.asarray(fib_starts)
        idx = tuple(np.clip(np.rint(fs).astype(int), 0, shape - 1).T)
        ok = base_ok[idx] & np.all((fs >= 0) & (fs <= shape - 1), axis=1)
        fib_pts = random_walks(rng, fs[ok], np.asarray(fib_dirs)[ok], np.full(int(ok.sum()), 200), base_ok, 0.0, 1.0)
    else:
        fib_pts = np.zeros((0, 3))
    actin = np.float32(0.6) * cortex + splat(sd.shape, fib_pts, LINE_WEIGHT)
    return actin, cortex


def _draw_distractors(rng: np.random.Generator, cyto_ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unlabelled lipid droplets and vesicles, only visible in transmitted light. Returns ``(lipid, vesicles)``."""
    cyto_voxels = int(np.count_nonzero(cyto_ok))
    lipid = splat(cyto_ok.shape, sample_in_mask(rng, cyto_ok, max(1, cyto_voxels // 6000)), 12.0)
    vesicles = splat(cyto_ok.shape, sample_in_mask(rng, cyto_ok, cyto_voxels // 400), 4.0)
    return lipid, vesicles


def draw_scene(seed: int, shape: tuple[int, int, int]) -> Scene:
    """Draw the scene of ``seed``: every density map of :data:`SCENE_MAPS` as float32 of ``shape`` (Z, Y, X)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KEY_SCENE]))
    cells, z_sub = draw_cells(rng, shape)
    label, sd = _split_domes(cells, shape, z_sub)
    nucleus, envelope, nucleoli = _draw_nuclei(rng, cells, z_sub, label, sd)
    cyto_ok = (sd > 0.8) & (nucleus < 0.05) & (envelope < 0.05)
    chromatin = _draw_chromatin(rng, nucleus, nucleoli)
    mito = _draw_mitochondria(rng, cyto_ok)
    microtubules = _draw_microtubules(rng, cells, label, sd, cyto_ok, nucleus)
    actin, cortex = _draw_actin(rng, cells, z_sub, sd)
    lipid, vesicles = _draw_distractors(rng, cyto_ok)
    maps = {
        "cell": np.clip(sd + np.float32(0.5), 0.0, 1.0),
        "nucleus": nucleus,
        "envelope": envelope,
        "nucleoli": nucleoli,
        "chromatin": chromatin,
        "membrane": bump(sd, 1.2),
        "mito": mito,
        "microtubules": microtubules,
        "actin": actin,
        "cortex": cortex,
        "lipid": lipid,
        "vesicles": vesicles,
    }
    return Scene(shape=shape, maps=maps)
