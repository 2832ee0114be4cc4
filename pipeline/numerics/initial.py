"""Initial conditions and the names of everything a run can be configured with."""

from __future__ import annotations

import numpy as np

from .grid import Grid

SCHEMES = ("ftcs", "backward-euler", "crank-nicolson")
BOUNDARIES = ("neumann", "periodic", "dirichlet")
INITIALS = ("step", "gaussian", "random")


def initial_condition(kind: str, grid: Grid, seed: int = 0) -> np.ndarray:
    """Sample an initial condition at the cell centres.

    Parameters
    ----------
    kind
        ``"step"``: 1 where every coordinate is below ``length / 2``, else 0;
        ``"gaussian"``: ``exp(-|x - c|**2 / (2 (length / 20)**2))`` with ``c`` the
        domain centre; ``"random"``: uniform on [0, 1) from ``seed``.
    grid
        The grid to sample on.
    seed
        Seed of :func:`numpy.random.default_rng` (``"random"`` only).

    Returns
    -------
    numpy.ndarray
        Array of shape ``grid.shape``, float64.
    """
    assert kind in INITIALS, kind
    if kind == "random":
        return np.random.default_rng(seed).random(grid.shape)
    axes = np.meshgrid(*([grid.centres] * grid.dims), indexing="ij", sparse=True)
    half = grid.length / 2
    if kind == "step":
        field = np.ones(grid.shape)
        for coordinate in axes:
            field = field * (coordinate < half)
        return field
    width = grid.length / 20
    squared = sum(((coordinate - half) ** 2 for coordinate in axes), np.zeros(grid.shape))
    return np.exp(-squared / (2 * width**2))
