"""Exact references and theory: discrete and continuous solutions, stability, equilibration.

Everything here works in the eigenbasis of :mod:`.spectral`, so it is exact up to the
round-off of one orthonormal transform pair, whatever the number of steps.
"""

from __future__ import annotations

import math

import numpy as np

from . import spectral
from .batch import Batch, batch_state
from .grid import Grid


def _per_run(values: np.ndarray, grid: Grid) -> np.ndarray:
    """``(batch,)`` → ``(batch, 1, ..., 1)`` to broadcast against spectral coefficients."""
    return np.asarray(values, dtype=float).reshape((-1,) + (1,) * grid.dims)


def discrete_solution(batch: Batch, steps: int) -> np.ndarray:
    """The exact state after ``steps`` steps of the batch's scheme, computed in the eigenbasis.

    Each mode of the initial state is multiplied by ``g ** steps`` with ``g`` the
    scheme's amplification factor (:func:`amplification_factor`; FTCS ``1 - r λ``).

    Parameters
    ----------
    batch
        The runs (:class:`Batch`), of a grid scheme.
    steps
        Number of steps, >= 0.

    Returns
    -------
    numpy.ndarray
        ``(batch, *grid.shape)`` float64; unstable runs may hold inf/nan.
    """
    grid = batch.grid
    factor = spectral.amplification_factor(
        batch.scheme, _per_run(batch.cfl, grid), spectral.spectral_eigenvalues(batch.boundary, grid)
    )
    with np.errstate(over="ignore", invalid="ignore"):
        coefficients = spectral.forward(batch.boundary, grid, batch.states()) * factor**steps
        return spectral.inverse(batch.boundary, grid, coefficients)


def continuous_solution(
    boundary: str,
    grid: Grid,
    initial: np.ndarray,
    coefficient: np.ndarray,
    time: np.ndarray | float,
) -> np.ndarray:
    """The exact heat-equation solution ``u_t = D Δu`` of the grid-resolved initial state.

    The initial state is taken to be the finite series in the boundary's basis that
    interpolates the cell values (cosine series for Neumann, Fourier series for
    periodic, sine series for Dirichlet); each term then decays as ``exp(-D |κ|² t)``
    with the continuous wave numbers:

    - Neumann: ``κ = pi k / L`` (walls at the domain faces);
    - periodic: ``κ = 2 pi k / L`` with ``k`` folded to ``|k| <= N / 2``;
    - Dirichlet: ``κ = pi k / L'`` with ``L' = (N + 1) dx``.  The schemes hold the
      *ghost* values at zero, so the discrete problem is a zero-wall problem whose walls
      sit at the ghost centres, half a cell outside the domain; the reference uses the
      same walls, which makes its error against every scheme vanish as dx, dt → 0.

    Parameters
    ----------
    boundary, grid
        As for :class:`Batch`.
    initial
        ``grid.shape`` or ``(batch, *grid.shape)``.
    coefficient
        ``(batch,)`` diffusion coefficients.
    time
        ``(batch,)`` or a scalar: physical time of each run.

    Returns
    -------
    numpy.ndarray
        ``(batch, *grid.shape)`` float64.
    """
    coefficient = np.asarray(coefficient, dtype=float)
    time = np.broadcast_to(np.asarray(time, dtype=float), coefficient.shape)
    state = batch_state(grid, initial, coefficient.shape[0])
    decay = np.exp(
        -_per_run(coefficient * time, grid) * spectral.wave_numbers_squared(boundary, grid)
    )
    return spectral.inverse(boundary, grid, spectral.forward(boundary, grid, state) * decay)


def stability_limit(scheme: str, dims: int) -> float | None:
    """Largest ``r = D dt / dx**2`` for which ``scheme`` is stable (von Neumann).

    Returns ``1 / (2 dims)`` for FTCS and ``None`` (unconditionally stable) for
    backward Euler and Crank–Nicolson.  This is the textbook bound, for the infinite
    grid; :func:`stability_bound` is the bound of the operator on a given grid.
    """
    if scheme == "ftcs":
        return 1.0 / (2 * dims)
    return None


def stability_bound(scheme: str, boundary: str, grid: Grid) -> float | None:
    """Largest ``r = D dt / dx**2`` for which ``scheme`` is stable on this very grid.

    FTCS multiplies the mode of eigenvalue ``λ`` (of ``-Δ·dx²``) by ``1 - r λ`` each
    step, so it is stable exactly while ``r <= 2 / λ_max``, with ``λ_max`` the largest
    eigenvalue of the boundary's basis (:mod:`.spectral`) — in ``d`` dimensions ``d``
    times the 1-D one:

    - periodic, even ``cells``: ``λ_max = 4 d`` (the mode ``(-1)^j``), so the bound is
      the textbook ``1 / (2 d)``;
    - Neumann, and periodic with odd ``cells``: ``λ_max = 4 d cos²(π / (2 cells))``;
    - Dirichlet: ``λ_max = 4 d cos²(π / (2 (cells + 1)))``;

    the last two lie above ``1 / (2 d)``, by about ``π² / (8 d cells²)``.  At the
    bound itself ``|g| = 1``: nothing grows (the run neither decays nor diverges in
    that mode).  Returns ``None`` for backward Euler and Crank–Nicolson, whose
    ``|g| <= 1`` for every ``r``.

    Parameters
    ----------
    scheme, boundary, grid
        As for :class:`Batch`.

    Returns
    -------
    float or None
        ``2 / λ_max`` in CFL units (``D dt / dx²``).
    """
    if scheme != "ftcs":
        return None
    return 2.0 / float(spectral.spectral_eigenvalues(boundary, grid).max())


def equilibrium(
    boundary: str, initial: np.ndarray, dims: int | None = None
) -> np.ndarray | float:
    """The equilibrium value of ``initial``: its mean (Neumann, periodic) or 0 (Dirichlet).

    Parameters
    ----------
    boundary
        The boundary condition.
    initial
        A field, or a batch of fields.
    dims
        Number of trailing spatial axes; ``None`` averages over all axes.  With a batch
        give ``dims`` to get one value per run.
    """
    initial = np.asarray(initial, dtype=float)
    axes = None if dims is None else tuple(range(-dims, 0))
    mean = initial.mean(axis=axes)
    if boundary == "dirichlet":
        return np.zeros_like(mean) if np.ndim(mean) else 0.0
    return mean


def slowest_mode(
    boundary: str, grid: Grid, initial: np.ndarray
) -> tuple[float, float | np.ndarray]:
    """The slowest-decaying nonzero mode of the Laplacian and how much of it ``initial`` holds.

    Parameters
    ----------
    boundary, grid
        As for :class:`Batch`.
    initial
        ``grid.shape``, or ``(batch, *grid.shape)``.

    Returns
    -------
    eigenvalue : float
        The smallest nonzero eigenvalue of ``-Δ`` in grid units (times ``dx**2``).
    amplitude : float or numpy.ndarray
        ``max |P (u0 - u_eq)| / (max u0 - min u0)`` with ``P`` the projection on the
        whole (possibly degenerate) eigenspace of that eigenvalue; one per run for a
        batch.  A constant field has amplitude 0.
    """
    initial = np.asarray(initial, dtype=float)
    eigenvalues = spectral.spectral_eigenvalues(boundary, grid)
    eigenvalue = float(eigenvalues[eigenvalues > 0].min())
    in_space = np.isclose(eigenvalues, eigenvalue, rtol=1e-9, atol=0.0)
    projection = spectral.inverse(
        boundary, grid, spectral.forward(boundary, grid, initial) * in_space
    )
    axes = tuple(range(-grid.dims, 0))
    peak = np.abs(projection).max(axis=axes)
    spread = initial.max(axis=axes) - initial.min(axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        amplitude = np.where(spread > 0, peak / np.where(spread > 0, spread, 1.0), 0.0)
    return eigenvalue, (float(amplitude) if amplitude.ndim == 0 else amplitude)


def equilibrium_steps(
    scheme: str,
    boundary: str,
    grid: Grid,
    initial: np.ndarray,
    r: float | np.ndarray,
    tolerance: float,
) -> int | np.ndarray | None:
    """Predicted number of steps until ``initial`` is within ``tolerance`` of equilibrium.

    From the slowest mode (:func:`slowest_mode`): ``ceil(ln(amplitude / tolerance) /
    -ln|g|)`` with ``g`` the scheme's amplification factor of that mode, 0 when the
    amplitude is already within tolerance.

    Parameters
    ----------
    scheme, boundary, grid
        As for :class:`Batch`.
    initial
        ``grid.shape``.
    r
        ``D dt / dx**2``, a scalar or an array.
    tolerance
        The equilibrium tolerance (relative to the initial range, like ``distance``).

    Returns
    -------
    int or None, or numpy.ndarray
        For a scalar ``r``: the step count, or ``None`` if the run never equilibrates
        (some mode is amplified, ``max |g| > 1``, or ``r = 0``).  For an array ``r``:
        float64 counts of the same shape, NaN where it never equilibrates.

    Notes
    -----
    Only the slowest Laplacian mode is considered.  An initial condition with no
    component in it (e.g. a centred Gaussian under Neumann, whose projection on
    ``cos(pi x / L)`` vanishes) gets a prediction of 0 here although its higher modes
    take time to decay; and for Crank–Nicolson at large ``r`` the highest modes
    (``g → -1``) can decay more slowly than the slowest Laplacian mode.
    """
    scalar = np.ndim(r) == 0
    r = np.asarray(r, dtype=float)
    eigenvalue, amplitude = slowest_mode(boundary, grid, initial)
    eigenvalues = spectral.laplacian_eigenvalues(boundary, grid)
    nonzero = eigenvalues[eigenvalues > 0]
    largest = float(nonzero.max())
    g_slowest = np.abs(spectral.amplification_factor(scheme, r, eigenvalue))
    g_largest = np.abs(spectral.amplification_factor(scheme, r, largest))
    # every stable scheme's |g| is largest at one end of the spectrum (monotone in λ)
    never = (np.maximum(g_slowest, g_largest) > 1.0) | (g_slowest >= 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        count = np.ceil(np.log(amplitude / tolerance) / -np.log(g_slowest))
    count = np.where(amplitude <= tolerance, 0.0, count)
    count = np.where(never, np.nan, count)
    if scalar:
        value = float(count)
        return None if math.isnan(value) else int(value)
    return count
