"""The eigenbasis of the discrete Laplacian for each boundary, and the exact solutions in it.

On this grid the 1-D operator ``A`` (``(A u)_j = u_{j-1} - 2 u_j + u_{j+1}`` with ghost
cells) is diagonalised by

- Neumann (mirrored ghosts): DCT-II, modes ``cos(pi k (j + 1/2) / N)``,
  eigenvalues of ``-A``: ``4 sin^2(pi k / (2 N))``, ``k = 0..N-1``;
- periodic: DFT, modes ``exp(2 pi i k j / N)``, eigenvalues ``4 sin^2(pi k / N)``;
- Dirichlet (ghost values held at zero): DST-I, modes ``sin(pi k (j + 1) / (N + 1))``,
  eigenvalues ``4 sin^2(pi k / (2 (N + 1)))``, ``k = 1..N``.

In several dimensions the modes are products and the eigenvalues sums.  All
transforms are orthonormal (``norm="ortho"``) and act on the trailing ``dims`` axes,
so a leading batch axis passes through.
"""

from __future__ import annotations

import numpy as np

from .grid import Grid


def _axes(grid: Grid) -> tuple[int, ...]:
    return tuple(range(-grid.dims, 0))


def forward(boundary: str, grid: Grid, field: np.ndarray) -> np.ndarray:
    """Coefficients of ``field`` (``(..., *grid.shape)``) in the eigenbasis of ``boundary``.

    Periodic fields use the real FFT, so the last spatial axis has ``cells // 2 + 1``
    entries; :func:`spectral_eigenvalues` has the matching shape.
    """
    import scipy.fft  # here: 0.15 s of start-up that only the implicit schemes need

    axes = _axes(grid)
    if boundary == "neumann":
        return scipy.fft.dctn(field, type=2, axes=axes, norm="ortho")
    if boundary == "periodic":
        return scipy.fft.rfftn(field, axes=axes, norm="ortho")
    assert boundary == "dirichlet", boundary
    return scipy.fft.dstn(field, type=1, axes=axes, norm="ortho")


def inverse(boundary: str, grid: Grid, coefficients: np.ndarray) -> np.ndarray:
    """The field whose coefficients are ``coefficients`` (inverse of :func:`forward`)."""
    import scipy.fft

    axes = _axes(grid)
    if boundary == "neumann":
        return scipy.fft.idctn(coefficients, type=2, axes=axes, norm="ortho")
    if boundary == "periodic":
        return scipy.fft.irfftn(coefficients, s=grid.shape, axes=axes, norm="ortho")
    assert boundary == "dirichlet", boundary
    return scipy.fft.idstn(coefficients, type=1, axes=axes, norm="ortho")


def mode_numbers(boundary: str, cells: int, *, real: bool = False) -> np.ndarray:
    """Mode index of each coefficient along one axis, in transform order.

    Periodic indices are folded to ``|k| <= cells / 2``; ``real`` gives the
    ``rfft`` half-spectrum (the last axis of :func:`forward` for periodic fields).
    """
    if boundary == "neumann":
        return np.arange(cells, dtype=float)
    if boundary == "periodic":
        if real:
            return np.arange(cells // 2 + 1, dtype=float)
        return np.fft.fftfreq(cells, 1.0 / cells)
    assert boundary == "dirichlet", boundary
    return np.arange(1, cells + 1, dtype=float)


def _eigenvalues_1d(boundary: str, cells: int, *, real: bool) -> np.ndarray:
    k = mode_numbers(boundary, cells, real=real)
    if boundary == "neumann":
        return 4 * np.sin(np.pi * k / (2 * cells)) ** 2
    if boundary == "periodic":
        return 4 * np.sin(np.pi * k / cells) ** 2
    return 4 * np.sin(np.pi * k / (2 * (cells + 1))) ** 2


def _outer_sum(per_axis: list[np.ndarray]) -> np.ndarray:
    dims = len(per_axis)
    total = np.zeros([len(values) for values in per_axis])
    for axis, values in enumerate(per_axis):
        shape = [1] * dims
        shape[axis] = len(values)
        total = total + values.reshape(shape)
    return total


def spectral_eigenvalues(boundary: str, grid: Grid) -> np.ndarray:
    """Eigenvalues of ``-Δ·dx²`` laid out like the coefficients of :func:`forward`."""
    real_last = boundary == "periodic"
    per_axis = [
        _eigenvalues_1d(boundary, grid.cells, real=real_last and axis == grid.dims - 1)
        for axis in range(grid.dims)
    ]
    return _outer_sum(per_axis)


def laplacian_eigenvalues(boundary: str, grid: Grid) -> np.ndarray:
    """Eigenvalues of the discrete ``-Δ`` in grid units (times ``dx**2``).

    Parameters
    ----------
    boundary
        ``"neumann"``, ``"periodic"`` or ``"dirichlet"``.
    grid
        The grid.

    Returns
    -------
    numpy.ndarray
        Shape ``grid.shape``: the eigenvalue of every mode, in the index order of the
        full (complex) transform of the boundary's basis.  Neumann and periodic have
        the eigenvalue 0 (the constant mode); Dirichlet has none.
    """
    per_axis = [_eigenvalues_1d(boundary, grid.cells, real=False) for _ in range(grid.dims)]
    return _outer_sum(per_axis)


def wave_numbers_squared(boundary: str, grid: Grid) -> np.ndarray:
    """Continuous ``|κ|²`` of each coefficient of :func:`forward` (physical units).

    Neumann ``κ = pi k / L``; periodic ``κ = 2 pi k / L`` with ``|k| <= N/2``;
    Dirichlet ``κ = pi k / L'`` with ``L' = (N + 1) dx`` (walls at the ghost centres).
    """
    if boundary == "neumann":
        scale = np.pi / grid.length
    elif boundary == "periodic":
        scale = 2 * np.pi / grid.length
    else:
        scale = np.pi / ((grid.cells + 1) * grid.dx)
    real_last = boundary == "periodic"
    per_axis = [
        (scale * mode_numbers(boundary, grid.cells, real=real_last and axis == grid.dims - 1)) ** 2
        for axis in range(grid.dims)
    ]
    return _outer_sum(per_axis)


def amplification_factor(
    scheme: str, r: np.ndarray | float, eigenvalue: np.ndarray | float
) -> np.ndarray:
    """Per-step amplification of a mode with ``-Δ·dx²`` eigenvalue ``eigenvalue``.

    Parameters
    ----------
    scheme
        ``"ftcs"``: ``1 - r λ``; ``"backward-euler"``: ``1 / (1 + r λ)``;
        ``"crank-nicolson"``: ``(1 - r λ / 2) / (1 + r λ / 2)``.
    r
        ``D dt / dx**2``; broadcasts against ``eigenvalue``.
    eigenvalue
        Eigenvalue(s) in grid units, see :func:`laplacian_eigenvalues`.

    Returns
    -------
    numpy.ndarray or float
        The factor ``g`` with ``u_k ← g u_k`` each step.
    """
    r = np.asarray(r, dtype=float)
    eigenvalue = np.asarray(eigenvalue, dtype=float)
    if scheme == "ftcs":
        return 1.0 - r * eigenvalue
    if scheme == "backward-euler":
        return 1.0 / (1.0 + r * eigenvalue)
    assert scheme == "crank-nicolson", scheme
    half = 0.5 * r * eigenvalue
    return (1.0 - half) / (1.0 + half)
