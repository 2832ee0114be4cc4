"""Per-run measures of particle runs, meaning what they mean for fields, with sampling noise.

The particle schemes (:mod:`pipeline.numerics.particles`) report a histogram per
checkpoint, normalised like the field (each particle carries ``sum(u0) / particles``).
The measures of :mod:`pipeline.diagnostics` are taken of that histogram, with these
differences, all because a histogram of ``N`` particles is noisy:

* the equilibrium ``u_eq`` is the mean of ``u0`` (neumann/periodic) or 0 (dirichlet), as
  for fields — except ``langevin`` with confinement ``k > 0``, whose equilibrium is the
  Boltzmann density of the exact dynamics, ``exp(-k |x - x0|**2 / (2 D))`` in the box,
  integrated over each cell and scaled to the initial mass (0 for dirichlet walls);
* ``noise_floor`` (a new variable) is the distance a histogram of exactly the right
  density still shows: ``z s / range(u0)`` with ``s = m sqrt(N p (1 - p))`` the
  standard deviation of the fullest cell's count times the particle mass ``m`` (``p``
  that cell's probability, the larger of ``max u0`` and ``max u_eq`` over the mass) and
  ``z`` the normal quantile that all ``K`` cells stay inside with probability
  ``1 - 10**-6`` (two-sided ``1 - 10**-6 / (2 K)``, Bonferroni), and never less than one
  particle, ``m / range``;
* ``status`` is *equilibrium* when ``distance <= max(tolerance, noise_floor)`` (a tolerance
  below the noise cannot be met by any number of steps), *oscillating* only when the
  overshoot exceeds the noise floor — except for confined Langevin, where no maximum
  principle holds (particles gather in the well) and *oscillating* means that the drift
  carries every particle past the centre each step, ``1 < k dt < 2`` (the particle
  picture of overshooting the target, which checkpoints of a histogram cannot see), and
  growth over the window ``[m, n]`` (``m`` the largest power of two not above ``n / 2``,
  as for the grid schemes, so the class at ``n`` does not depend on the other
  checkpoints) counts only when
  ``||h - u_eq||`` rose by more than noise can make it, twice ``3 m sqrt(N)`` (the
  multinomial noise ``h - E h`` has RMS norm below ``m sqrt(N)``, and moves the norm by
  at most its own norm);
* *divergent* runs carry a ``reason``: 1 ``invalid`` (a walk with ``2 d p > 1``: not
  simulated, every measure NaN), 2 ``unstable-drift`` (Langevin with ``|1 - k dt| >= 1``),
  3 ``non-finite`` (a position overflowed), 4 ``grown`` (distance past ``divergence`` or
  growing); 0 ``none`` for every run that is not divergent;
* ``error`` is the RMS difference to the continuous heat-equation solution (free
  particles: walk, or Langevin with ``k = 0``); NaN with confinement, where no heat
  equation applies;
* ``variance`` (a new variable) is the sample variance of the particles' positions per
  axis, averaged over the axes (periodic positions unwrapped), and ``variance_bias``
  (Langevin only) its relative departure from the exact continuous value at the same
  time in free space, ``v(t) = v0 exp(-2 k t) + D / k (1 - exp(-2 k t))`` (``v0 + 2 D t``
  for ``k = 0``); at stationarity Euler–Maruyama's is ``k dt / (2 - k dt)``.  It is only
  meaningful while the walls are far from the particles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from pipeline.criteria import Criteria
from pipeline.diagnostics import (
    DIVERGENT,
    EQUILIBRIUM,
    GROWTH_TOLERANCE,
    MEASURES,
    OSCILLATING,
    TRANSIENT,
)
from pipeline.numerics import Batch, Grid, continuous_solution
from pipeline.numerics.particles import drift_unstable, langevin, random_walk
from pipeline.numerics.passage import growth_window_start

__all__ = [
    "PARTICLE_ATTRIBUTES",
    "PARTICLE_MEASURES",
    "REASON_NAMES",
    "boltzmann",
    "measure_particles",
    "noise_floor",
]

#: float64 measures only particle runs have (NaN for grid runs)
PARTICLE_MEASURES = ("noise_floor", "variance", "variance_bias")
#: why a run is divergent (``reason``, int8)
REASON_NAMES = ("none", "invalid", "unstable-drift", "non-finite", "grown")
NONE, INVALID, UNSTABLE_DRIFT, NON_FINITE, GROWN = range(len(REASON_NAMES))
#: probability that an exactly equilibrated histogram exceeds the noise floor somewhere:
#: small enough that a sweep of 10**5 results sees no false alarm in all likelihood
NOISE_FALSE_ALARM = 1e-6
#: growth counts only above this many times ``m sqrt(N)`` (the multinomial noise's norm bound)
NOISE_NORM_FACTOR = 3.0

PARTICLE_ATTRIBUTES: dict[str, dict[str, str]] = {
    "noise_floor": {
        "long_name": "distance an exact histogram of this many particles exceeds with probability 1e-6, relative to the initial range",
        "units": "1",
    },
    "variance": {
        "long_name": "sample variance of particle positions per axis, averaged over the axes",
        "units": "length^2",
    },
    "variance_bias": {
        "long_name": "relative departure of the variance from the exact continuous value in free space (langevin)",
        "units": "1",
    },
    "reason": {
        "long_name": "why a run is divergent",
        "units": "1",
        "flag_values": " ".join(str(i) for i in range(len(REASON_NAMES))),
        "flag_meanings": " ".join(REASON_NAMES),
    },
}


def boltzmann(grid: Grid, coefficient: np.ndarray, confinement: float, mass: float) -> np.ndarray:
    """Cell masses of the equilibrium of confined diffusion in the box, ``(batch, *shape)``.

    The density ``exp(-k |x - x0|**2 / (2 D))`` restricted to ``[0, length]**d`` (the
    equilibrium with reflecting or periodic walls), integrated over each cell exactly
    (normal distribution functions) and scaled to ``mass``.
    """
    from scipy import special  # here: only confined particle runs need it

    coefficient = np.asarray(coefficient, dtype=float)
    spread = np.sqrt(coefficient / confinement)[:, None]  # (batch, 1)
    faces = np.arange(grid.cells + 1) * grid.dx - grid.length / 2
    cumulative = special.ndtr(faces[None, :] / spread)
    per_axis = np.diff(cumulative, axis=1)
    per_axis /= per_axis.sum(axis=1, keepdims=True)
    density = per_axis
    for _ in range(grid.dims - 1):
        density = density[..., None] * per_axis.reshape((per_axis.shape[0],) + (1,) * (density.ndim - 1) + (-1,))
    return mass * density


def noise_floor(peak_probability: np.ndarray, particles: int, cells: int, mass: float, initial_range: float) -> np.ndarray:
    """The distance a histogram drawn from exactly the right density still shows.

    ``max(z m sqrt(N p (1 - p)), m) / range`` with ``p`` the largest cell probability,
    ``m = mass / N`` and ``z`` the two-sided normal quantile at ``NOISE_FALSE_ALARM / cells``.
    """
    p = np.clip(np.asarray(peak_probability, dtype=float), 0.0, 1.0)
    m = mass / particles
    z = NormalDist().inv_cdf(1 - NOISE_FALSE_ALARM / (2 * cells))
    return np.maximum(z * m * np.sqrt(particles * p * (1 - p)), m) / initial_range


def _initial_variance(grid: Grid, initial: np.ndarray) -> np.ndarray:
    """Per-axis variance of positions drawn from ``initial`` (a cell, then uniform in it)."""
    variances = []
    for axis in range(grid.dims):
        others = tuple(a for a in range(grid.dims) if a != axis)
        weights = initial.sum(axis=others) if others else initial
        weights = weights / weights.sum()
        centres = grid.centres
        mean = (weights * centres).sum()
        variances.append((weights * (centres**2 + grid.dx**2 / 12)).sum() - mean**2)
    return np.array(variances)


def _observed_passages(
    status: np.ndarray, reason: np.ndarray, settled: np.ndarray, checkpoints: Sequence[int]
) -> dict[str, np.ndarray]:
    """First passages of particle runs, as far as the checkpoints show them.

    A histogram is formed only at the checkpoints, so the passage of a particle run is the
    first checkpoint at which it is seen (distance within ``max(tolerance, noise_floor)``;
    divergent), an upper bound on the step it happened; ``largest checkpoint + 1`` where
    it is not seen. Runs that are invalid or whose drift is unstable are divergent by
    definition from the first step: 1.
    """
    steps = np.asarray(checkpoints, dtype=np.int64)
    not_reached = int(steps[-1]) + 1

    def first(seen: np.ndarray) -> np.ndarray:
        return np.where(seen.any(axis=1), steps[seen.argmax(axis=1)], not_reached).astype(np.int64)

    divergence = first(status == DIVERGENT)
    from_start = ((reason == INVALID) | (reason == UNSTABLE_DRIFT)).any(axis=1)
    return {
        "steps_to_equilibrium": first(settled),
        "steps_to_divergence": np.where(from_start, 1, divergence).astype(np.int64),
    }


def measure_particles(
    batch: Batch,
    checkpoints: Sequence[int],
    *,
    criteria: Criteria = Criteria(),
    keep_fields: str = "none",
    particles: int,
    confinement: float,
    keys: np.ndarray,
) -> dict[str, np.ndarray]:
    """Run a batch of particle runs once and measure it at every checkpoint.

    Parameters
    ----------
    batch
        The runs (:class:`~pipeline.numerics.Batch`): scheme ``"random-walk"`` or
        ``"langevin"``, initial field ``grid.shape``, non-negative (the density the
        particles are drawn from).
    checkpoints, criteria, keep_fields
        As for :func:`pipeline.diagnostics.measure_trajectory`.
    particles
        Particles per run.
    confinement
        ``k`` of the harmonic confinement (``langevin``; 0 for the walk).
    keys
        ``(batch,)`` 64-bit keys of the runs' random streams.

    Returns
    -------
    dict
        Each name of :data:`~pipeline.diagnostics.MEASURES` and :data:`PARTICLE_MEASURES`
        → ``(batch, n_checkpoints)`` float64 (``noise_floor`` too, for a uniform layout),
        ``"status"`` and ``"reason"`` → ``(batch, n_checkpoints)`` int8,
        ``"steps_to_equilibrium"`` and ``"steps_to_divergence"`` → ``(batch,)`` int64 as
        far as the checkpoints show them (:func:`_observed_passages`), and the histogram
        as ``"field"`` when kept, like ``measure_trajectory``.
    """
    scheme, boundary, grid, initial = batch.scheme, batch.boundary, batch.grid, batch.initial
    coefficient, step_size = batch.coefficient, batch.step_size
    runs, n = batch.size, len(checkpoints)
    tolerance, divergence = criteria.tolerance, criteria.divergence
    spatial = tuple(range(1, grid.dims + 1))

    low, high = float(initial.min()), float(initial.max())
    initial_range = high - low if high > low else 1.0
    mass = float(initial.sum())
    conserving = boundary != "dirichlet"
    confined = scheme == "langevin" and confinement > 0
    if not conserving:
        equilibrium = np.zeros((runs, *grid.shape))
    elif confined:
        equilibrium = boltzmann(grid, coefficient, confinement, mass)
    else:
        equilibrium = np.full((runs, *grid.shape), initial.mean())
    peak = np.maximum(high, equilibrium.max(axis=spatial))
    lowest = np.minimum(low, equilibrium.min(axis=spatial))
    if not conserving:
        lowest = np.minimum(lowest, 0.0)
    floor = noise_floor(peak / mass, particles, grid.size, mass, initial_range)
    norm_floor = NOISE_NORM_FACTOR * mass / particles * math.sqrt(particles)

    out: dict[str, np.ndarray] = {name: np.full((runs, n), np.nan) for name in (*MEASURES, *PARTICLE_MEASURES)}
    out["noise_floor"][:] = floor[:, None]
    status = np.empty((runs, n), dtype=np.int8)
    reason = np.zeros((runs, n), dtype=np.int8)
    fields = np.empty((runs, n, *grid.shape)) if keep_fields == "checkpoints" else None
    distance_ok = np.zeros((runs, n), dtype=bool)

    overshooting = np.zeros(runs, dtype=bool)
    checkpoints = [int(steps) for steps in checkpoints]
    position = {steps: i for i, steps in enumerate(checkpoints)}
    # growth at n is measured over [m(n), n] as for the grid schemes, so the status at n
    # does not depend on the other checkpoints; the streams are counter-based, so
    # stopping at the window starts too changes no particle's path
    window_starts = {growth_window_start(steps) for steps in checkpoints}
    stops = sorted(set(checkpoints) | (window_starts - {0}))
    if scheme == "random-walk":
        snapshots = random_walk(batch, stops, particles=particles, keys=keys)
        unstable = np.zeros(runs, dtype=bool)
    else:
        snapshots = langevin(batch, stops, particles=particles, keys=keys, confinement=confinement)
        unstable = drift_unstable(confinement, step_size)
        if confined:
            overshooting = (confinement * step_size > 1) & ~unstable
    initial_variance = _initial_variance(grid, initial)
    norms_at = {0: np.sqrt(((initial[None] - equilibrium) ** 2).sum(axis=spatial))}
    histogram = np.broadcast_to(initial, (runs, *grid.shape))
    with np.errstate(all="ignore"):
        for steps, snapshot in snapshots:
            histogram = snapshot.concentration
            deviation = histogram - equilibrium
            norm = np.sqrt((deviation**2).sum(axis=spatial))
            if steps in window_starts:
                norms_at[steps] = norm
            if steps not in position:
                continue
            i = position[steps]
            window_start = growth_window_start(steps)
            window_norm = norms_at[window_start]
            distance = np.abs(deviation).max(axis=spatial) / initial_range
            overshoot = np.maximum(
                np.maximum(histogram.max(axis=spatial) - peak, lowest - histogram.min(axis=spatial)), 0.0
            ) / initial_range
            growth = (norm / np.maximum(window_norm, np.finfo(float).tiny)) ** (1.0 / (steps - window_start))
            time = steps * step_size
            if confined:
                error = np.full(runs, np.nan)
            else:
                reference = continuous_solution(boundary, grid, initial, coefficient, time)
                error = np.sqrt(((histogram - reference) ** 2).mean(axis=spatial)) / initial_range
            mass_error = np.abs(histogram.sum(axis=spatial) - mass) / mass if conserving else np.full(runs, np.nan)

            # noise moves each norm by at most about norm_floor (triangle inequality), so an
            # increase counts only beyond what noise at both ends can make
            growing = (norm - window_norm > 2 * norm_floor) & (growth > 1.0 + GROWTH_TOLERANCE)
            code = np.select(
                [snapshot.invalid, unstable, snapshot.divergent, ~(distance <= divergence) | growing],
                [INVALID, UNSTABLE_DRIFT, NON_FINITE, GROWN],
                NONE,
            )
            divergent = code != NONE
            oscillating = ~divergent & (overshooting if confined else overshoot > floor)
            within = distance <= np.maximum(tolerance, floor)
            distance_ok[:, i] = within
            settled = ~divergent & ~oscillating & within
            status[:, i] = np.select(
                [divergent, oscillating, settled], [DIVERGENT, OSCILLATING, EQUILIBRIUM], TRANSIENT
            )
            reason[:, i] = code
            for name, value in zip(MEASURES, (distance, mass_error, overshoot, growth, error), strict=True):
                out[name][:, i] = np.where(snapshot.invalid, np.nan, value)
            out["variance"][:, i] = snapshot.variance.mean(axis=1)
            if scheme == "langevin":
                decay = np.exp(-2 * confinement * time)[:, None]
                exact = (
                    initial_variance[None, :] * decay + (coefficient / confinement)[:, None] * (1 - decay)
                    if confinement > 0
                    else initial_variance[None, :] + (2 * coefficient * time)[:, None]
                )
                out["variance_bias"][:, i] = (snapshot.variance / exact - 1).mean(axis=1)
            out["noise_floor"][snapshot.invalid, i] = np.nan
            if fields is not None:
                fields[:, i] = histogram

    out["status"] = status
    out["reason"] = reason
    out.update(_observed_passages(status, reason, distance_ok, checkpoints))
    if keep_fields == "final":
        out["field"] = np.array(histogram, copy=True)
    elif fields is not None:
        out["field"] = fields
    return out
