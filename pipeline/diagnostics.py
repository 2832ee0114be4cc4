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
* a run *oscillates* when it leaves ``[min u0, max u0]`` by more than
  :data:`OVERSHOOT_TOLERANCE` of the initial range (the discrete maximum principle).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.numerics import Grid, continuous_solution, integrate

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
        "long_name": "departure from [min u0, max u0] relative to the initial range",
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
    initial = np.broadcast_to(np.asarray(initial, dtype=np.float64), (batch, *grid.shape))

    low, high = initial.min(axis=spatial), initial.max(axis=spatial)
    initial_range = np.where(high > low, high - low, 1.0)
    conserving = boundary in ("neumann", "periodic")
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
    with np.errstate(all="ignore"):
        for i, (steps, state) in enumerate(
            integrate(scheme, boundary, grid, initial, coefficient, step_size, checkpoints)
        ):
            deviation = state - equilibrium[expand]
            finite = np.isfinite(state).all(axis=spatial)
            distance = np.abs(deviation).max(axis=spatial) / initial_range
            norm = np.sqrt((deviation**2).sum(axis=spatial))
            overshoot = np.maximum(
                np.maximum(state.max(axis=spatial) - high, low - state.min(axis=spatial)), 0.0
            ) / initial_range
            growth = (norm / np.maximum(previous_norm, np.finfo(float).tiny)) ** (
                1.0 / (steps - previous_steps)
            )
            reference = continuous_solution(boundary, grid, initial, coefficient, steps * step_size)
            error = np.sqrt(((state - reference) ** 2).mean(axis=spatial)) / initial_range
            if conserving:
                mass_error = np.abs(state.sum(axis=spatial) - initial_mass) / np.abs(initial_mass)
            else:
                mass_error = np.full(batch, np.nan)

            growing = (norm > floor) & (growth > 1.0 + GROWTH_TOLERANCE)
            divergent = ~finite | ~(distance <= divergence) | growing
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
