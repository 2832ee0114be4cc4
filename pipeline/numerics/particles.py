"""Particle schemes: the lattice random walk and Euler–Maruyama Langevin dynamics.

Both integrate a batch of runs (batch axis first) on the cell-centred grid of the grid
schemes and report, at every checkpoint, the *histogram* of particle positions on the
grid, normalised like the field: each particle carries the mass ``sum(u0) / particles``,
so a histogram value is a concentration comparable cell by cell with FTCS.

Initial positions are drawn independently from ``u0`` as a density (``u0 >= 0``): a cell
with probability ``u0[c] / sum(u0)``, then (Langevin) a uniform point inside it.  The
expected initial histogram is therefore ``u0`` exactly.

``random-walk``
    Each step every particle jumps to each of its ``2 d`` neighbouring cells with
    probability ``p = D dt / dx**2`` and stays with ``1 - 2 d p``.  Walls: ``neumann``
    refuses a jump through the wall (the particle stays), ``periodic`` wraps (positions
    are kept unwrapped, so the variance measures the displacement), and ``dirichlet``
    absorbs the particle (it leaves the histogram).  The one-particle
    transition matrix is the FTCS matrix with ``r = p`` (zero ghosts for dirichlet), so
    the expected histogram after ``n`` steps is the FTCS field exactly.  The walk exists
    only while ``2 d p <= 1``; runs beyond are *invalid*: they are not simulated, their
    concentration is NaN and :attr:`Snapshot.invalid` is set — probabilities are never
    clipped.  A move is decided by comparing a 32-bit random word with multiples of
    ``floor(p 2**32)``, so the walk's jump probability is ``p`` rounded down to a
    multiple of ``2**-32``.
``langevin``
    Euler–Maruyama in the continuous box ``[0, length]**d``::

        x <- x - dt k (x - x0) + sqrt(2 D dt) xi,        xi ~ N(0, 1) per axis,

    with harmonic confinement ``k >= 0`` centred at ``x0 = length / 2``.  Walls:
    ``neumann`` reflects (folds the position back into the box, as many times as needed),
    ``periodic`` wraps (positions are kept *unwrapped* so that the variance measures the
    displacement; the force uses the wrapped position), ``dirichlet`` absorbs a particle
    found outside ``[0, length]`` after a step (crossings within a step are not
    detected, the usual O(sqrt(dt)) bias of discretely monitored absorption; the walls
    are the box faces, not the ghost-cell centres of the grid schemes).  The drift map
    ``x - x0 -> (1 - k dt)(x - x0)`` amplifies when ``|1 - k dt| >= 1``, i.e. ``k dt >= 2``
    for ``k > 0``: in free space the variance then grows without bound.  In a box the
    walls keep positions finite, so such runs are marked divergent from that criterion
    (:func:`drift_unstable`), as well as any run with a non-finite position.  Below it the
    stationary variance per axis in free space is ``D / (k (1 - k dt / 2))``
    (:func:`stationary_variance`), larger than the exact ``D / k``.

Randomness comes from :mod:`.philox` with one 64-bit key per run (:func:`.philox.stream_key`
of the seed and the run's coordinates): the numbers a particle draws at a step depend on
(key, particle, step) only, so every run's result is bit-identical however the runs are
batched, ordered or threaded, and whichever checkpoints it passes on the way.  Particle
``i`` is placed with counters ``(0, i, PLACEMENT << 8, 0)`` and ``(1, i, ...)``; walk step
``s`` uses word ``s % 4`` of counter ``(s // 4, i, WALK << 8, 0)``; Langevin steps
``4 q .. 4 q + 3`` along axis ``a`` use the four normals of counter
``(q, i, NOISE << 8 | a, 0)`` (the high 32 bits of ``q`` go in the last word).

The kernels loop over runs (``prange``), tiles of :data:`TILE` particles, steps, and the
particles of the tile (innermost, vectorised); a tile stays in L1 for all the steps
between two checkpoints.  Nothing runs in Python per step.  Positions are kept in cell
units (walk: integer cell indices; Langevin: ``x / dx`` in ``[0, cells]``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from numba import njit, prange, uint64

from .batch import Batch
from .grid import Grid
from .philox import (
    NOISE,
    PLACEMENT,
    WALK,
    key_words,
    normal_pair,
    philox4x32,
    uniform53,
)

PARTICLE_SCHEMES = ("random-walk", "langevin")
NEUMANN, PERIODIC, DIRICHLET = 0, 1, 2
BOUNDARY_CODES = {"neumann": NEUMANN, "periodic": PERIODIC, "dirichlet": DIRICHLET}
#: particles of one run advanced together between checkpoints (positions stay in L1)
TILE = 512
_TWO_TO_32 = 2.0**32
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


@dataclass(frozen=True)
class Snapshot:
    """The particles of a batch of runs at one checkpoint.

    Attributes
    ----------
    concentration
        ``(batch, *grid.shape)`` float64: particles per cell times ``sum(u0) / particles``;
        NaN for invalid runs.
    survivors
        ``(batch,)`` int64: particles still in the domain (all of them unless absorbed).
    mean, variance
        ``(batch, dims)`` float64: sample mean and unbiased sample variance (``n - 1``
        denominator) of the surviving particles' positions along each axis, in length
        units; periodic positions are unwrapped, walk positions are cell centres.  NaN
        with fewer than two survivors, a non-finite position, or for invalid runs.
    invalid
        ``(batch,)`` bool: the lattice walk's ``2 d p > 1`` (never for Langevin).
    divergent
        ``(batch,)`` bool: Langevin runs whose drift is unstable (:func:`drift_unstable`)
        or with a non-finite position (never for the walk).
    """

    concentration: np.ndarray
    survivors: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    invalid: np.ndarray
    divergent: np.ndarray


# -- theory ------------------------------------------------------------------------------


def jump_probability(grid: Grid, coefficient: np.ndarray, step_size: np.ndarray) -> np.ndarray:
    """``p = D dt / dx**2``, the walk's probability of a jump to each neighbour, ``(batch,)``."""
    coefficient = np.asarray(coefficient, dtype=float)
    step_size = np.asarray(step_size, dtype=float)
    return coefficient * step_size / grid.dx**2


def walk_valid(dims: int, probability: np.ndarray) -> np.ndarray:
    """Whether a walk with jump probability ``p`` exists: ``0 <= p`` and ``2 dims p <= 1``.

    The comparison is exact (no rounding of ``2 dims p``): in 3-D ``6 p <= 1`` is
    evaluated as ``2 p <= 1 - 4 p``, where every operation is exact for ``p`` near the
    limit, so the largest valid float is the one just below 1/6.
    """
    probability = np.asarray(probability, dtype=float)
    if dims in (1, 2):  # 2 p and 4 p are exact
        within = 2 * dims * probability <= 1.0
    else:
        assert dims == 3, dims
        quadruple = 4 * probability  # exact; 1 - quadruple is exact for quadruple in [1/2, 1]
        within = (probability <= 0.125) | (
            (quadruple <= 1.0) & (2 * probability <= 1.0 - np.minimum(quadruple, 1.0))
        )
    return (probability >= 0) & within


def drift_unstable(confinement: np.ndarray | float, step_size: np.ndarray | float) -> np.ndarray:
    """Whether the Euler–Maruyama drift map amplifies: ``k > 0`` and ``|1 - k dt| >= 1``.

    ``k = 0`` (free diffusion) has factor 1 and is not unstable.
    """
    confinement = np.asarray(confinement, dtype=float)
    factor = 1.0 - confinement * np.asarray(step_size, dtype=float)
    return (confinement > 0) & (np.abs(factor) >= 1.0)


def stationary_variance(
    coefficient: np.ndarray | float, confinement: np.ndarray | float, step_size: np.ndarray | float
) -> np.ndarray:
    """Stationary per-axis variance of Euler–Maruyama in a harmonic well, in free space.

    The recursion ``v <- (1 - k dt)**2 v + 2 D dt`` has the fixed point
    ``2 D dt / (1 - (1 - k dt)**2) = D / (k (1 - k dt / 2))``; ``inf`` where the drift is
    unstable or ``k = 0`` (no stationary state).
    """
    coefficient = np.asarray(coefficient, dtype=float)
    confinement = np.asarray(confinement, dtype=float)
    step_size = np.asarray(step_size, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = coefficient / (confinement * (1.0 - confinement * step_size / 2.0))
    return np.where(drift_unstable(confinement, step_size) | (confinement <= 0), np.inf, value)


def variance_after(
    coefficient: np.ndarray | float,
    confinement: np.ndarray | float,
    step_size: np.ndarray | float,
    steps: int,
    initial_variance: np.ndarray | float,
) -> np.ndarray:
    """Per-axis variance after ``steps`` Euler–Maruyama steps in free space.

    ``v_n = g**(2n) v_0 + 2 D dt (1 - g**(2n)) / (1 - g**2)`` with ``g = 1 - k dt``
    (``v_0 + 2 D dt n`` when ``g**2 = 1``), for independent initial positions of variance
    ``v_0``.
    """
    coefficient = np.asarray(coefficient, dtype=float)
    step_size = np.asarray(step_size, dtype=float)
    g2 = (1.0 - np.asarray(confinement, dtype=float) * step_size) ** 2
    growth = g2**steps
    with np.errstate(divide="ignore", invalid="ignore"):
        noise = np.where(
            g2 == 1.0,
            2.0 * coefficient * step_size * steps,
            2.0 * coefficient * step_size * (1.0 - growth) / (1.0 - g2),
        )
    return growth * np.asarray(initial_variance, dtype=float) + noise


# -- kernels -------------------------------------------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def _cumulative(weights):  # pragma: no cover - compiled
    cumulative = np.cumsum(weights)
    return cumulative / cumulative[-1]


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _place(positions, alive, cumulative, cells, keys, continuous):  # pragma: no cover - compiled
    """Draw every particle's initial position: a cell from ``cumulative``, then a point in it."""
    batch, dims, particles = positions.shape
    for run in prange(batch):
        k0, k1 = key_words(keys[run])
        for i in range(particles):
            w0, w1, w2, w3 = philox4x32(
                uint64(0), uint64(i), uint64(PLACEMENT << 8), uint64(0), k0, k1
            )
            u = uniform53(w0, w1)
            # first cell whose cumulative weight exceeds u (u < 1 = cumulative[-1])
            low, high = 0, cumulative.shape[0] - 1
            while low < high:
                middle = (low + high) // 2
                if cumulative[middle] > u:
                    high = middle
                else:
                    low = middle + 1
            flat = low
            v0, v1, v2, v3 = philox4x32(
                uint64(1), uint64(i), uint64(PLACEMENT << 8), uint64(0), k0, k1
            )
            offsets = (uniform53(w2, w3), uniform53(v0, v1), uniform53(v2, v3))
            for axis in range(dims - 1, -1, -1):
                cell = flat % cells
                flat //= cells
                if continuous:
                    positions[run, axis, i] = cell + offsets[axis]
                else:
                    positions[run, axis, i] = cell
            alive[run, i] = True


@njit(inline="always")
def _particle_word(index):  # pragma: no cover - compiled
    """A particle index as Philox counter word ``c1``, masked to its 32 bits.

    Particle counts stay below ``2**32`` (:func:`_check`), so the mask changes no value;
    it tells the compiler that the word's high half is zero, so that every Philox
    product is a 32 x 32 -> 64 bit ``vpmuludq`` instead of a full 64-bit multiply
    (measured 2-5 % on 3-D Langevin, one thread).
    """
    return uint64(index) & _LOW32


@njit(inline="always")
def _along(position, word, below, unit, cells, boundary):  # pragma: no cover - compiled
    # direction 2a (towards 0) owns [below, below + unit), direction 2a + 1 the next
    # interval; whatever is left of [0, 2**32) past the last direction means staying
    middle = below + unit
    above = middle + unit
    step = np.int32((word >= middle) & (word < above)) - np.int32(
        (word >= below) & (word < middle)
    )
    moved = position + step
    inside = (moved >= 0) & (moved < cells)
    if boundary == NEUMANN:
        return (moved if inside else position), inside
    return moved, inside


@njit(inline="always")
def _move(p0, p1, p2, living, word, unit, cells, dims, boundary):  # pragma: no cover - compiled
    p0, inside = _along(p0, word, uint64(0), unit, cells, boundary)
    if dims >= 2:
        p1, inside1 = _along(p1, word, uint64(2) * unit, unit, cells, boundary)
        inside = inside & inside1
    if dims >= 3:
        p2, inside2 = _along(p2, word, uint64(4) * unit, unit, cells, boundary)
        inside = inside & inside2
    if boundary == DIRICHLET:
        living = living & inside
    return p0, p1, p2, living


@cache
def _walk_kernel(dims: int, boundary: int) -> Any:
    """The compiled walk for one dimension and wall.

    ``dims`` and ``boundary`` are compile-time constants of the closure, so the axis and
    wall branches fold away.  The particle loop runs over tile-sized slices indexed from
    zero, the form LLVM vectorises (an offset index into the whole array defeats it).
    """

    @njit(cache=True, nogil=True, parallel=True, error_model="numpy")
    def walk(positions, alive, thresholds, keys, active, start, stop, cells):  # pragma: no cover
        batch, _, particles = positions.shape
        c2 = uint64(WALK << 8)
        for run in prange(batch):
            if not active[run]:
                continue
            k0, k1 = key_words(keys[run])
            unit = thresholds[run]
            for first in range(0, particles, TILE):
                last = min(first + TILE, particles)
                x0 = positions[run, 0, first:last]
                x1 = positions[run, min(1, dims - 1), first:last]
                x2 = positions[run, dims - 1, first:last]
                living = alive[run, first:last]
                for quad in range(start // 4, (stop + 3) // 4):
                    c0 = uint64(quad) & _LOW32
                    c3 = uint64(quad) >> _SHIFT32
                    lowest = max(start - 4 * quad, 0)
                    highest = min(stop - 4 * quad, 4)
                    if lowest == 0 and highest == 4:
                        for j in range(last - first):
                            w0, w1, w2, w3 = philox4x32(c0, _particle_word(first + j), c2, c3, k0, k1)
                            p0, p1, p2, lives = x0[j], x1[j], x2[j], living[j]
                            p0, p1, p2, lives = _move(
                                p0, p1, p2, lives, w0, unit, cells, dims, boundary
                            )
                            p0, p1, p2, lives = _move(
                                p0, p1, p2, lives, w1, unit, cells, dims, boundary
                            )
                            p0, p1, p2, lives = _move(
                                p0, p1, p2, lives, w2, unit, cells, dims, boundary
                            )
                            p0, p1, p2, lives = _move(
                                p0, p1, p2, lives, w3, unit, cells, dims, boundary
                            )
                            x0[j] = p0
                            if dims >= 2:
                                x1[j] = p1
                            if dims >= 3:
                                x2[j] = p2
                            if boundary == DIRICHLET:
                                living[j] = lives
                    else:  # the quads cut by ``start`` or ``stop``
                        for j in range(last - first):
                            words = philox4x32(c0, _particle_word(first + j), c2, c3, k0, k1)
                            p0, p1, p2, lives = x0[j], x1[j], x2[j], living[j]
                            for w in range(lowest, highest):
                                p0, p1, p2, lives = _move(
                                    p0, p1, p2, lives, words[w], unit, cells, dims, boundary
                                )
                            x0[j] = p0
                            if dims >= 2:
                                x1[j] = p1
                            if dims >= 3:
                                x2[j] = p2
                            living[j] = lives

    return walk


#: the largest |normal| :func:`.philox.normal_pair` can return, sqrt(-2 ln 2**-33), rounded up
NORMAL_BOUND = 6.767


@njit(inline="always")
def _advance(p, lives, z, a, sigma, length, inverse_length, boundary, once):  # pragma: no cover
    """One Euler–Maruyama step of one coordinate (cell units), walls applied.

    ``once`` (reflecting walls only) says a single reflection is always enough, which
    holds when the drift cannot leave the box (``0 <= k dt <= 2``) and the noise is
    shorter than the box (``NORMAL_BOUND sigma <= length``); otherwise the position is
    folded back as many times as needed.
    """
    centre = 0.5 * length
    if boundary == PERIODIC:
        # the force sees the wrapped position; a floor from a product instead of a
        # quotient (no division in the loop) may be one off, so correct it
        wrapped = p - length * np.floor(p * inverse_length)
        wrapped = wrapped + length if wrapped < 0.0 else wrapped
        wrapped = wrapped - length if wrapped >= length else wrapped
        p = p - a * (wrapped - centre) + sigma * z
    else:
        p = p - a * (p - centre) + sigma * z
    if boundary == NEUMANN:
        if once:
            p = -p if p < 0.0 else p
            p = 2.0 * length - p if p > length else p
        else:
            # fold onto [0, 2 length), then mirror the upper half
            span = 2.0 * length
            folded = p - span * np.floor(p * (0.5 * inverse_length))
            folded = folded + span if folded < 0.0 else folded
            folded = folded - span if folded >= span else folded
            p = folded if folded <= length else span - folded
    if boundary == DIRICHLET:
        lives = lives & (p >= 0.0) & (p <= length)
    return p, lives


@cache
def _langevin_kernel(dims: int, boundary: int) -> Any:
    """The compiled Euler–Maruyama loop for one dimension and wall (see :func:`_walk_kernel`).

    The axes are independent (separable potential, walls per axis), so each axis is
    advanced on its own through a quad of four steps, the four normals of one Philox
    call; absorption is the same whichever axis is done first.
    """

    @njit(cache=True, nogil=True, parallel=True, error_model="numpy")
    def langevin(positions, alive, drift, noise, keys, start, stop, length):  # pragma: no cover
        batch, _, particles = positions.shape
        inverse_length = 1.0 / length
        for run in prange(batch):
            k0, k1 = key_words(keys[run])
            a = drift[run]
            sigma = noise[run]
            once = 0.0 <= a <= 2.0 and NORMAL_BOUND * sigma <= length
            # a tile's random words, then its normals, then each step, are loops of their
            # own: short loop bodies vectorise without spilling, and the four dependent
            # steps of a particle are spread over independent iterations
            words = np.empty((4, TILE), dtype=np.uint64)
            normals = np.empty((4, TILE))
            for first in range(0, particles, TILE):
                count = min(TILE, particles - first)
                living = alive[run, first : first + count]
                w0 = words[0, :count]
                w1 = words[1, :count]
                w2 = words[2, :count]
                w3 = words[3, :count]
                z0 = normals[0, :count]
                z1 = normals[1, :count]
                z2 = normals[2, :count]
                z3 = normals[3, :count]
                for axis in range(dims):
                    x = positions[run, axis, first : first + count]
                    c2 = uint64((NOISE << 8) | axis)
                    for quad in range(start // 4, (stop + 3) // 4):
                        c0 = uint64(quad) & _LOW32
                        c3 = uint64(quad) >> _SHIFT32
                        for j in range(count):
                            w0[j], w1[j], w2[j], w3[j] = philox4x32(
                                c0, _particle_word(first + j), c2, c3, k0, k1
                            )
                        for j in range(count):
                            z0[j], z1[j] = normal_pair(w0[j], w1[j])
                        for j in range(count):
                            z2[j], z3[j] = normal_pair(w2[j], w3[j])
                        for w in range(max(start - 4 * quad, 0), min(stop - 4 * quad, 4)):
                            z = normals[w, :count]
                            if once:  # two copies of the loop, each with a constant ``once``
                                for j in range(count):
                                    x[j], lives = _advance(
                                        x[j], living[j], z[j], a, sigma, length, inverse_length,
                                        boundary, True,
                                    )
                                    if boundary == DIRICHLET:
                                        living[j] = lives
                            else:
                                for j in range(count):
                                    x[j], lives = _advance(
                                        x[j], living[j], z[j], a, sigma, length, inverse_length,
                                        boundary, False,
                                    )
                                    if boundary == DIRICHLET:
                                        living[j] = lives

    return langevin


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _histogram(positions, alive, active, cells, dx, periodic, continuous, mass):  # pragma: no cover
    """Concentration, survivors and per-axis mean/variance of every run of the batch.

    Positions are in cell units: walk positions are cell indices (centre ``(x + 1/2) dx``),
    Langevin positions ``x / dx`` in the box ``[0, cells]``.
    """
    batch, dims, particles = positions.shape
    size = cells**dims
    concentration = np.zeros((batch, size))
    survivors = np.zeros(batch, dtype=np.int64)
    mean = np.full((batch, dims), np.nan)
    variance = np.full((batch, dims), np.nan)
    finite = np.ones(batch, dtype=np.bool_)
    offset = 0.0 if continuous else 0.5
    for run in prange(batch):
        if not active[run]:
            concentration[run, :] = np.nan
            continue
        counts = np.zeros(size, dtype=np.int64)
        total = np.zeros(dims)
        for i in range(particles):
            if not alive[run, i]:
                continue
            flat = 0
            for axis in range(dims):
                p = positions[run, axis, i]
                if not np.isfinite(p):
                    finite[run] = False
                    flat = -1
                    break
                total[axis] += p
                if periodic:
                    p = p - cells * np.floor(p / cells)
                cell = min(max(int(np.floor(p)), 0), cells - 1)
                flat = flat * cells + cell
            if flat < 0:
                continue
            counts[flat] += 1
            survivors[run] += 1
        concentration[run, :] = counts * mass
        if survivors[run] < 2 or not finite[run]:
            continue
        for axis in range(dims):
            centre = total[axis] / survivors[run]
            squares = 0.0
            for i in range(particles):
                if alive[run, i]:
                    deviation = positions[run, axis, i] - centre
                    squares += deviation * deviation
            mean[run, axis] = (centre + offset) * dx
            variance[run, axis] = squares / (survivors[run] - 1) * dx * dx
    return concentration, survivors, mean, variance, finite


# -- drivers ---------------------------------------------------------------------------------


def _check(batch: Batch, scheme: str, keys: np.ndarray, particles: int) -> np.ndarray:
    """The runs' keys as contiguous ``uint64``, once the batch is checked fit for ``scheme``."""
    assert batch.scheme == scheme, (batch.scheme, scheme)
    initial = batch.initial
    assert initial.shape == batch.grid.shape, (initial.shape, batch.grid.shape)
    assert np.all(initial >= 0) and initial.sum() > 0, "u0 must be a density (>= 0, not all 0)"
    keys = np.ascontiguousarray(keys, dtype=np.uint64)
    assert keys.shape == (batch.size,), (keys.shape, batch.size)
    assert 0 < particles < 2**32, particles
    return keys


def _checkpoints(checkpoints: Sequence[int]) -> list[int]:
    steps = [int(s) for s in checkpoints]
    assert steps and steps[0] >= 1 and all(b > a for a, b in itertools.pairwise(steps)), steps
    return steps


def _observe(
    batch: Batch,
    checkpoints: Sequence[int],
    particles: int,
    keys: np.ndarray,
    continuous: bool,
    advance: Callable[[np.ndarray, np.ndarray, int, int], None],
    active: np.ndarray,
    invalid: np.ndarray,
    unstable: np.ndarray,
) -> Iterator[tuple[int, Snapshot]]:
    """Place the particles, ``advance(positions, alive, start, stop)`` them from checkpoint
    to checkpoint, and yield a :class:`Snapshot` of the ``active`` runs at each.

    Positions are ``int32`` cell indices (the walk) or ``float64`` cell units
    (``continuous``, Langevin); ``invalid`` and ``unstable`` are the runs' fixed flags,
    a snapshot's ``divergent`` is ``unstable`` or a non-finite position.
    """
    grid, runs, initial = batch.grid, batch.size, batch.initial
    positions = np.empty((runs, grid.dims, particles), dtype=np.float64 if continuous else np.int32)
    alive = np.empty((runs, particles), dtype=np.bool_)
    _place(positions, alive, _cumulative(initial.ravel()), grid.cells, keys, continuous)
    mass = float(initial.sum()) / particles
    reached = 0
    for steps in _checkpoints(checkpoints):
        advance(positions, alive, reached, steps)
        reached = steps
        concentration, survivors, mean, variance, finite = _histogram(
            positions, alive, active, grid.cells, grid.dx, batch.boundary == "periodic", continuous, mass
        )
        yield steps, Snapshot(
            concentration=concentration.reshape((runs, *grid.shape)),
            survivors=survivors,
            mean=mean,
            variance=variance,
            invalid=invalid.copy(),
            divergent=unstable | ~finite,
        )


def random_walk(
    batch: Batch, checkpoints: Sequence[int], *, particles: int, keys: np.ndarray
) -> Iterator[tuple[int, Snapshot]]:
    """Run the lattice random walk for a batch of runs and yield each checkpoint.

    Parameters
    ----------
    batch
        The runs (:class:`~pipeline.numerics.Batch`); its scheme must be
        ``"random-walk"`` and its initial field ``grid.shape``, non-negative (the
        density the particles are drawn from).  Boundaries: ``"neumann"`` (jumps
        through a wall refused), ``"periodic"`` or ``"dirichlet"`` (absorbing).  Each
        run jumps with probability ``p = D dt / dx**2`` (:attr:`Batch.cfl`).
    checkpoints
        Strictly increasing step counts, each >= 1.
    particles
        Particles per run.
    keys
        ``(batch,)`` 64-bit keys of the runs' random streams (:func:`.philox.stream_key`).

    Yields
    ------
    steps : int
        The checkpoint reached.
    snapshot : Snapshot
        Fresh arrays (safe to keep).
    """
    keys = _check(batch, "random-walk", keys, particles)
    grid = batch.grid
    checkpoints = _checkpoints(checkpoints)
    assert checkpoints[-1] < 2**31, "unwrapped int32 cell indices"
    probability = jump_probability(grid, batch.coefficient, batch.step_size)
    valid = walk_valid(grid.dims, probability)
    # floor(p 2**32), at most 2**32 / (2 d): the 2 d thresholds fit in 64 bits, never clipped
    thresholds = np.where(valid, np.floor(np.where(valid, probability, 0.0) * _TWO_TO_32), 0)
    thresholds = np.ascontiguousarray(thresholds.astype(np.uint64))
    kernel = _walk_kernel(grid.dims, BOUNDARY_CODES[batch.boundary])

    def advance(positions: np.ndarray, alive: np.ndarray, start: int, stop: int) -> None:
        kernel(positions, alive, thresholds, keys, valid, start, stop, grid.cells)

    never = np.zeros(batch.size, dtype=bool)  # integer positions are finite: no walk diverges
    yield from _observe(batch, checkpoints, particles, keys, False, advance, valid, ~valid, never)


def langevin(
    batch: Batch,
    checkpoints: Sequence[int],
    *,
    particles: int,
    keys: np.ndarray,
    confinement: np.ndarray | float = 0.0,
) -> Iterator[tuple[int, Snapshot]]:
    """Run Euler–Maruyama Brownian dynamics for a batch of runs and yield each checkpoint.

    Parameters
    ----------
    batch
        The runs (:class:`~pipeline.numerics.Batch`); its scheme must be ``"langevin"``
        and its initial field as for :func:`random_walk`.  Boundaries: ``"neumann"``
        (reflecting), ``"periodic"`` or ``"dirichlet"`` (absorbing).
    checkpoints, particles, keys
        As for :func:`random_walk`.
    confinement
        ``k >= 0`` of the harmonic potential ``k/2 |x - x0|**2`` centred in the box, a
        scalar or ``(batch,)``.

    Yields
    ------
    steps : int
        The checkpoint reached.
    snapshot : Snapshot
        Fresh arrays; ``divergent`` marks unstable drift or non-finite positions.
    """
    keys = _check(batch, "langevin", keys, particles)
    grid, runs, step_size = batch.grid, batch.size, batch.step_size
    confinement = np.broadcast_to(np.asarray(confinement, dtype=float), (runs,))
    assert np.all(confinement >= 0), confinement
    # positions are kept in cell units (x / dx): the box is [0, cells], the centre cells / 2
    drift = np.ascontiguousarray(confinement * step_size)
    noise = np.ascontiguousarray(np.sqrt(2.0 * batch.coefficient * step_size) / grid.dx)
    kernel = _langevin_kernel(grid.dims, BOUNDARY_CODES[batch.boundary])

    def advance(positions: np.ndarray, alive: np.ndarray, start: int, stop: int) -> None:
        kernel(positions, alive, drift, noise, keys, start, stop, float(grid.cells))

    every, never = np.ones(runs, dtype=bool), np.zeros(runs, dtype=bool)
    unstable = drift_unstable(confinement, step_size)
    yield from _observe(batch, checkpoints, particles, keys, True, advance, every, never, unstable)
