"""Numerics of diffsweep: grids, initial conditions, schemes and exact solutions.

Pure numpy/numba/scipy; knows nothing of dask, xarray, zarr or YAML.  Every function
works on a *batch* of runs at once (:class:`Batch`: a scheme, boundary, grid and initial
state shared by the runs), batch axis first; each run has its own diffusion coefficient
``D`` and step size ``dt`` (``r = D dt / dx**2``).
"""

from __future__ import annotations

from .batch import Batch
from .exact import (
    continuous_solution,
    discrete_solution,
    equilibrium,
    equilibrium_steps,
    slowest_mode,
    stability_bound,
    stability_limit,
)
from .grid import Grid
from .initial import BOUNDARIES, INITIALS, SCHEMES, initial_condition
from .integrate import integrate
from .passage import FirstPassage, first_passage, growth_window_start
from .spectral import amplification_factor, laplacian_eigenvalues

__all__ = [
    "BOUNDARIES",
    "INITIALS",
    "SCHEMES",
    "Batch",
    "FirstPassage",
    "Grid",
    "amplification_factor",
    "continuous_solution",
    "discrete_solution",
    "equilibrium",
    "equilibrium_steps",
    "first_passage",
    "growth_window_start",
    "initial_condition",
    "integrate",
    "laplacian_eigenvalues",
    "slowest_mode",
    "stability_bound",
    "stability_limit",
]
