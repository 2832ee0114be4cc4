"""Per-run measures and the stability classification, at every checkpoint.

Pure numpy over a batch of trajectories (batch axis first). Definitions follow
the README's diagnostics section; where it leaves a constant open, the choice is
made here:

* deviations are measured from the equilibrium state ``u_eq`` (the mean of the initial
  field for neumann/periodic, zero for dirichlet) and made relative to the initial
  range ``max u0 - min u0``;
* ``error`` is the RMS difference to the continuous heat-equation solution at the same
  time, relative to the initial range;
* ``growth`` at step count ``n`` is the per-step growth factor of ``‖u - u_eq‖₂``
  over the window ``[m, n]``, ``m`` the largest power of two not above ``n / 2``
  (:func:`pipeline.numerics.passage.growth_window_start`): a function of the run and
  ``n`` alone, never of the other checkpoints, and never decreasing with ``n``
  (the reasons are in :mod:`pipeline.numerics.passage`);
* a run *diverges* when it is non-finite, when its deviation passes ``divergence``
  times the initial range, or when it grows: ``growth`` above 1 +
  :data:`GROWTH_TOLERANCE` while ``‖u - u_eq‖₂`` is above the round-off floor
  (:data:`ROUNDOFF_FLOOR` times the largest magnitude, per cell);
* a run *oscillates* when it leaves the bounds of the discrete maximum principle by
  more than :data:`OVERSHOOT_TOLERANCE` of the initial range: ``[min u0, max u0]``,
  widened to include the wall value 0 for dirichlet (a field draining through zero
  walls falls below ``min u0`` legitimately);
* per run, ``steps_to_equilibrium`` and ``steps_to_divergence`` are the first step at
  which ``distance <= tolerance``, and at which the run is divergent, exact to the
  step; ``largest checkpoint + 1`` where that does not happen within the largest
  checkpoint (see :mod:`pipeline.numerics.passage`).

Because the status at ``n`` depends on the run and ``n`` only, the status of a run
can be read off its first passages: divergent at ``n`` if and only if
``steps_to_divergence <= n`` (growth and non-finite values never stop once they
start).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.criteria import Criteria
from pipeline.numerics import Batch, integrate, spectral
from pipeline.numerics.passage import (
    GROWTH_TOLERANCE,
    ROUNDOFF_FLOOR,
    FirstPassage,
    deviations,
    growth_factor,
    growth_window_start,
    is_growing,
    reference_scales,
)

STATUS_NAMES = ("equilibrium", "transient", "oscillating", "divergent")
EQUILIBRIUM, TRANSIENT, OSCILLATING, DIVERGENT = range(4)
#: status value of a run that has not been computed (never written by this module)
NOT_COMPUTED = -1
#: status value of a run whose block raised an error twice (written by the store layer)
FAILED = -2

MEASURES = ("distance", "mass_error", "overshoot", "growth", "error")
#: per-run first passages (int64, no steps dimension)
PASSAGES = ("steps_to_equilibrium", "steps_to_divergence")

#: relative departure from [min u0, max u0] still counted as round-off
OVERSHOOT_TOLERANCE = 1e-9

__all__ = [
    "ATTRIBUTES",
    "DIVERGENT",
    "EQUILIBRIUM",
    "GROWTH_TOLERANCE",
    "MEASURES",
    "NOT_COMPUTED",
    "OSCILLATING",
    "OVERSHOOT_TOLERANCE",
    "PASSAGES",
    "ROUNDOFF_FLOOR",
    "STATUS_NAMES",
    "TRANSIENT",
    "measure_trajectory",
    "passage_attributes",
]

ATTRIBUTES: dict[str, dict[str, str]] = {
    "distance": {
        "long_name": "distance from equilibrium: max |u - u_eq| / (max u0 - min u0)",
        "units": "1",
    },
    "mass_error": {
        "long_name": "relative change of total mass |sum u - sum u0| / |sum u0| (NaN for dirichlet)",
        "units": "1",
    },
    "overshoot": {
        "long_name": "departure from [min u0, max u0] (with 0 for dirichlet) relative to the initial range",
        "units": "1",
    },
    "growth": {
        "long_name": "per-step growth factor of ||u - u_eq||_2 from step m to this step count n, "
        "m the largest power of two not above n/2 (m = 0 for n = 1)",
        "units": "1",
    },
    "error": {
        "long_name": "RMS difference to the continuous heat-equation solution, relative to the initial range",
        "units": "1",
    },
    "status": {
        "long_name": "stability class",
        "units": "1",
        "flag_values": "0 1 2 3",
        "flag_meanings": " ".join(STATUS_NAMES),
    },
}


def passage_attributes(largest_steps: int, particles: bool = False) -> dict[str, dict[str, object]]:
    """Attributes of the first-passage variables of a sweep whose largest step count is
    ``largest_steps``: ``long_name``, ``units`` and the sentinel ``largest_steps + 1``
    (``not_reached``) with a sentence saying what it means; with ``particles``, a
    sentence saying that particle runs are seen at the step counts only."""
    sentinel = int(largest_steps) + 1
    meaning = (
        f"{sentinel} (the largest step count + 1) means not within {largest_steps} steps: "
        "right-censored, so 'value <= n' is true exactly for the runs that got there by step n"
    )
    if particles:
        meaning += (
            "; particle runs (random-walk, langevin) are observed at the swept step counts only: "
            "their value is the first step count at which it was seen, an upper bound (exact for grid schemes)"
        )
    return {
        "steps_to_equilibrium": {
            "long_name": "first step at which distance <= tolerance (exact)",
            "units": "1",
            "not_reached": sentinel,
            "comment": meaning,
        },
        "steps_to_divergence": {
            "long_name": "first step at which the run is divergent: non-finite, distance > divergence, "
            "or growing (exact)",
            "units": "1",
            "not_reached": sentinel,
            "comment": meaning,
        },
    }


def measure_trajectory(
    batch: Batch,
    checkpoints: Sequence[int],
    *,
    criteria: Criteria = Criteria(),
    keep_fields: str = "none",
) -> dict[str, np.ndarray]:
    """Integrate a batch of runs once and measure it at every checkpoint.

    Parameters
    ----------
    batch
        The runs (:class:`~pipeline.numerics.Batch`), of a grid scheme
        (:data:`pipeline.numerics.SCHEMES`).
    checkpoints
        Strictly increasing step counts at which to measure.
    criteria
        The thresholds: a run is at equilibrium when ``distance <= criteria.tolerance``
        and diverges when ``distance > criteria.divergence``.
    keep_fields
        ``"none"``, ``"final"`` (state at the last checkpoint) or ``"checkpoints"``.

    Returns
    -------
    dict
        Each name of :data:`MEASURES` → ``(batch, n_checkpoints)`` float64, ``"status"`` →
        ``(batch, n_checkpoints)`` int8, each name of :data:`PASSAGES` → ``(batch,)``
        int64 (``max(checkpoints) + 1`` where not reached) and, when kept, ``"field"`` →
        ``(batch, *grid.shape)`` or ``(batch, n_checkpoints, *grid.shape)``.
    """
    grid, boundary, runs = batch.grid, batch.boundary, batch.size
    tolerance, divergence = criteria.tolerance, criteria.divergence
    coefficient, step_size = batch.coefficient, batch.step_size
    spatial = tuple(range(1, grid.dims + 1))
    given = batch.initial
    initial = np.broadcast_to(given, (runs, *grid.shape))

    equilibrium, initial_range, floor = reference_scales(boundary, grid, initial)
    low, high = initial.min(axis=spatial), initial.max(axis=spatial)
    conserving = boundary in ("neumann", "periodic")
    if not conserving:  # the zero walls take part in the maximum principle
        low, high = np.minimum(low, 0.0), np.maximum(high, 0.0)
    initial_mass = initial.sum(axis=spatial)
    expand = (slice(None),) + (None,) * grid.dims

    checkpoints = [int(steps) for steps in checkpoints]
    position = {steps: i for i, steps in enumerate(checkpoints)}
    # the growth window of each checkpoint starts at a step of its own, visited too
    window_starts = {growth_window_start(steps) for steps in checkpoints}
    stops = sorted(set(checkpoints) | (window_starts - {0}))
    norms_at = {0: deviations(initial, equilibrium)[1]}

    n = len(checkpoints)
    out: dict[str, np.ndarray] = {name: np.empty((runs, n)) for name in MEASURES}
    status = np.empty((runs, n), dtype=np.int8)
    fields = None
    if keep_fields == "checkpoints":
        fields = np.empty((runs, n, *grid.shape))

    passage = FirstPassage(tolerance=tolerance, divergence=divergence)
    state = initial
    # The continuous reference (:func:`pipeline.numerics.continuous_solution`) computed
    # here without its per-checkpoint forward transform: the initial field's spectrum is
    # taken once (once per block for a shared initial field, not once per run and
    # checkpoint) and only decayed and transformed back at each checkpoint.
    spectrum = spectral.forward(boundary, grid, given if given.shape == grid.shape else initial)
    wave_numbers = spectral.wave_numbers_squared(boundary, grid)
    with np.errstate(all="ignore"):
        for steps, state in integrate(batch, stops, first_passage=passage):
            peak, norm = deviations(state, equilibrium)
            if steps in window_starts:
                norms_at[steps] = norm
            if steps not in position:
                continue
            i = position[steps]
            # a run with a non-finite value has a NaN or infinite distance, so the
            # ``distance <= divergence`` test below also classifies it as divergent
            distance = peak / initial_range
            overshoot = np.maximum(
                np.maximum(state.max(axis=spatial) - high, low - state.min(axis=spatial)), 0.0
            ) / initial_range
            growth = growth_factor(norm, norms_at[growth_window_start(steps)], steps)
            decay = np.exp(-(coefficient * (steps * step_size))[expand] * wave_numbers)
            reference = spectral.inverse(boundary, grid, spectrum * decay)
            error = np.sqrt(np.square(state - reference).mean(axis=spatial)) / initial_range
            if conserving:
                mass_error = np.abs(state.sum(axis=spatial) - initial_mass) / np.abs(initial_mass)
            else:
                mass_error = np.full(runs, np.nan)

            divergent = ~(distance <= divergence) | is_growing(growth, norm, floor)
            oscillating = ~divergent & (overshoot > OVERSHOOT_TOLERANCE)
            settled = ~divergent & ~oscillating & (distance <= tolerance)
            status[:, i] = np.select(
                [divergent, oscillating, settled], [DIVERGENT, OSCILLATING, EQUILIBRIUM], TRANSIENT
            )
            for name, value in zip(
                MEASURES, (distance, mass_error, overshoot, growth, error), strict=True
            ):
                out[name][:, i] = value
            if fields is not None:
                fields[:, i] = state

    out["status"] = status
    out["steps_to_equilibrium"] = passage.steps_to_equilibrium
    out["steps_to_divergence"] = passage.steps_to_divergence
    if keep_fields == "final":
        out["field"] = np.array(state, copy=True)
    elif fields is not None:
        out["field"] = fields
    return out
