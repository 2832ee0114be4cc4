"""A batch of runs: what every integrator, exact solution and measure of a block takes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import Grid


def batch_state(grid: Grid, initial: np.ndarray, batch: int) -> np.ndarray:
    """A fresh C-contiguous float64 ``(batch, *grid.shape)`` copy of ``initial``.

    ``initial`` is ``grid.shape`` (shared by every run) or ``(batch, *grid.shape)``.
    """
    initial = np.asarray(initial, dtype=float)
    assert initial.shape in (grid.shape, (batch, *grid.shape)), (initial.shape, batch)
    return np.array(np.broadcast_to(initial, (batch, *grid.shape)), dtype=float, order="C")


@dataclass(frozen=True, eq=False)
class Batch:
    """Runs that share a scheme, boundary, grid and initial state, each with its own ``D`` and ``dt``.

    The batch axis comes first in every array that belongs to it; run ``i`` has
    diffusion coefficient ``coefficient[i]`` and time step ``step_size[i]``.

    Parameters
    ----------
    scheme
        A grid scheme of :data:`pipeline.numerics.SCHEMES` (``"ftcs"``,
        ``"backward-euler"``, ``"crank-nicolson"``) or a particle scheme of
        :data:`pipeline.numerics.particles.PARTICLE_SCHEMES` (``"random-walk"``,
        ``"langevin"``); each function says which it accepts.
    boundary
        ``"neumann"``, ``"periodic"`` or ``"dirichlet"``.
    grid
        The grid shared by every run.
    initial
        Initial field, float64: ``grid.shape`` (shared by every run) or
        ``(batch, *grid.shape)``.  The particle schemes take only ``grid.shape``,
        non-negative: the density the particles are drawn from.
    coefficient, step_size
        ``(batch,)`` each, C-contiguous float64: diffusion coefficient ``D`` and time
        step ``dt`` of each run.

    Raises
    ------
    ValueError
        If ``coefficient`` is not one-dimensional, ``step_size`` has another shape, or
        ``initial`` is neither ``grid.shape`` nor ``(batch, *grid.shape)``.

    Notes
    -----
    The arrays are converted (``numpy.asarray``, so not copied when they already are
    float64 and contiguous) but not frozen: a batch is a value only as long as nobody
    writes into them.  Equality is identity.
    """

    scheme: str
    boundary: str
    grid: Grid
    initial: np.ndarray
    coefficient: np.ndarray
    step_size: np.ndarray

    def __post_init__(self) -> None:
        coefficient = np.asarray(self.coefficient, dtype=np.float64)
        step_size = np.asarray(self.step_size, dtype=np.float64)
        initial = np.asarray(self.initial, dtype=np.float64)
        if coefficient.ndim != 1:
            raise ValueError(f"coefficient must be (batch,), not {coefficient.shape}")
        if step_size.shape != coefficient.shape:
            raise ValueError(f"step_size must be {coefficient.shape} like coefficient, not {step_size.shape}")
        fields = (self.grid.shape, (coefficient.shape[0], *self.grid.shape))
        if initial.shape not in fields:
            raise ValueError(f"initial must be {fields[0]} or {fields[1]}, not {initial.shape}")
        object.__setattr__(self, "coefficient", np.ascontiguousarray(coefficient))
        object.__setattr__(self, "step_size", np.ascontiguousarray(step_size))
        object.__setattr__(self, "initial", initial)

    @property
    def size(self) -> int:
        """Number of runs."""
        return int(self.coefficient.shape[0])

    @property
    def cfl(self) -> np.ndarray:
        """``r = D dt / dx**2`` of each run, ``(batch,)`` float64 (the walk's jump probability)."""
        return np.ascontiguousarray(self.coefficient * self.step_size / self.grid.dx**2)

    def states(self) -> np.ndarray:
        """A fresh C-contiguous float64 ``(batch, *grid.shape)`` copy of ``initial``."""
        return batch_state(self.grid, self.initial, self.size)
