"""Per-run measures and the stability classification, at every checkpoint.

Pure numpy over a batch of trajectories (batch axis first). Definitions follow
DESIGN.md; where it leaves a constant open, the choice is made here and documented
in the README:

* deviations are measured from the equilibrium state ``u_eq`` (the mean of the initial
  field for neumann/periodic, zero for dirichlet) and made relative to the initial
  range ``max u0 - min u0``;
* ``error`` is the RMS difference to the continuous heat-equation solution at the same
  time, relative to the initial range;
* a run *diverges* when it is non-finite, when its deviation passes ``divergence``
  times the initial range, or when ``‖u - u_eq‖₂`` grows between checkpoints by more
  than :data:`GROWTH_TOLERANCE` per step while above the round-off floor
  (:data:`ROUNDOFF_FLOOR` times the largest magnitude, per cell);
* a run *oscillates* when it leaves the bounds of the discrete maximum principle by
  more than :data:`OVERSHOOT_TOLERANCE` of the initial range: ``[min u0, max u0]``,
  widened to include the wall value 0 for dirichlet (a field draining through zero
  walls falls below ``min u0`` legitimately).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.numerics import Grid, integrate, spectral

STATUS_NAMES = ("equilibrium", "transient", "oscillating", "divergent")
EQUILIBRIUM, TRANSIENT, OSCILLATING, DIVERGENT = range(4)
#: status value of a run that has not been computed (never written by this module)
NOT_COMPUTED = -1

MEASURES = ("distance", "mass_error", "overshoot", "growth", "error")

#: relative departure from [min u0, max u0] still counted as round-off
OVERSHOOT_TOLERANCE = 1e-9
#: per-step growth factor of ‖u - u_eq‖₂ above 1 that counts as growing
GROWTH_TOLERANCE = 1e-9
#: per-cell round-off floor of ‖u - u_eq‖₂, relative to the field's magnitude
ROUNDOFF_FLOOR = 1e-12

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
        "long_name": "per-step growth factor of ||u - u_eq||_2 since the previous checkpoint",
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


def measure_trajectory(
    scheme: str,
    boundary: str,
    grid: Grid,
    initial: np.ndarray,
    coefficient: np.ndarray,
    step_size: np.ndarray,
    checkpoints: Sequence[int],
    *,
    tolerance: float,
    divergence: float,
    keep_fields: str = "none",
) -> dict[str, np.ndarray]:
    """Integrate a batch of runs once and measure it at every checkpoint.

    Parameters
    ----------
    scheme, boundary
        Names from :data:`pipeline.numerics.SCHEMES` and ``BOUNDARIES``.
    grid
        The spatial grid shared by the batch.
    initial
        Initial field, ``grid.shape`` (shared) or ``(batch, *grid.shape)``.
    coefficient, step_size
        Diffusion coefficient and time step of each run, shape ``(batch,)``.
    checkpoints
        Strictly increasing step counts at which to measure.
    tolerance
        A run is at equilibrium when ``distance <= tolerance``.
    divergence
        A run diverges when ``distance > divergence``.
    keep_fields
        ``"none"``, ``"final"`` (state at the last checkpoint) or ``"checkpoints"``.

    Returns
    -------
    dict
        Each name of :data:`MEASURES` → ``(batch, n_checkpoints)`` float64, ``"status"`` →
        ``(batch, n_checkpoints)`` int8 and, when kept, ``"field"`` →
        ``(batch, *grid.shape)`` or ``(batch, n_checkpoints, *grid.shape)``.
    """
    coefficient = np.asarray(coefficient, dtype=np.float64)
    step_size = np.asarray(step_size, dtype=np.float64)
    batch = coefficient.shape[0]
    spatial = tuple(range(1, grid.dims + 1))
    given = np.asarray(initial, dtype=np.float64)
    initial = np.broadcast_to(given, (batch, *grid.shape))

    low, high = initial.min(axis=spatial), initial.max(axis=spatial)
    initial_range = np.where(high > low, high - low, 1.0)
    conserving = boundary in ("neumann", "periodic")
    if not conserving:  # the zero walls take part in the maximum principle
        low, high = np.minimum(low, 0.0), np.maximum(high, 0.0)
    initial_mass = initial.sum(axis=spatial)
    equilibrium = initial.mean(axis=spatial) if conserving else np.zeros(batch)
    expand = (slice(None),) + (None,) * grid.dims
    floor = ROUNDOFF_FLOOR * np.sqrt(grid.size) * np.maximum(np.abs(equilibrium), initial_range)

    n = len(checkpoints)
    out = {name: np.empty((batch, n)) for name in MEASURES}
    status = np.empty((batch, n), dtype=np.int8)
    fields = None
    if keep_fields == "checkpoints":
        fields = np.empty((batch, n, *grid.shape))

    previous_norm = np.sqrt(((initial - equilibrium[expand]) ** 2).sum(axis=spatial))
    previous_steps = 0
    state = initial
    # The continuous reference (:func:`pipeline.numerics.continuous_solution`) computed
    # here without its per-checkpoint forward transform: the initial field's spectrum is
    # taken once (once per block for a shared initial field, not once per run and
    # checkpoint) and only decayed and transformed back at each checkpoint.
    spectrum = spectral.forward(boundary, grid, given if given.shape == grid.shape else initial)
    wave_numbers = spectral.wave_numbers_squared(boundary, grid)
    scratch = np.empty((batch, *grid.shape))  # reused temporaries for the fields below
    squares = np.empty((batch, *grid.shape))
    with np.errstate(all="ignore"):
        for i, (steps, state) in enumerate(
            integrate(scheme, boundary, grid, initial, coefficient, step_size, checkpoints)
        ):
            deviation = np.subtract(state, equilibrium[expand], out=scratch)
            norm = np.sqrt(np.square(deviation, out=squares).sum(axis=spatial))
            distance = np.abs(deviation, out=deviation).max(axis=spatial) / initial_range
            # a run with a non-finite value has a NaN or infinite distance, so the
            # ``distance <= divergence`` test below also classifies it as divergent
            overshoot = np.maximum(
                np.maximum(state.max(axis=spatial) - high, low - state.min(axis=spatial)), 0.0
            ) / initial_range
            growth = (norm / np.maximum(previous_norm, np.finfo(float).tiny)) ** (
                1.0 / (steps - previous_steps)
            )
            decay = np.exp(-(coefficient * (steps * step_size))[expand] * wave_numbers)
            reference = spectral.inverse(boundary, grid, spectrum * decay)
            difference = np.subtract(state, reference, out=scratch)
            error = np.sqrt(np.square(difference, out=difference).mean(axis=spatial)) / initial_range
            if conserving:
                mass_error = np.abs(state.sum(axis=spatial) - initial_mass) / np.abs(initial_mass)
            else:
                mass_error = np.full(batch, np.nan)

            growing = (norm > floor) & (growth > 1.0 + GROWTH_TOLERANCE)
            divergent = ~(distance <= divergence) | growing
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
            previous_norm, previous_steps = norm, steps

    out["status"] = status
    if keep_fields == "final":
        out["field"] = np.array(state, copy=True)
    elif fields is not None:
        out["field"] = fields
    return out
