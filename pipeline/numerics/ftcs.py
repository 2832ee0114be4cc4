"""Compiled FTCS kernels: a batch of runs, each with its own ``r = D dt / dx**2``.

Each kernel copies one run into a scratch field padded with one ghost layer on every
side, takes all the requested steps there (two buffers, swapped each step) and copies
the result back; chunks of runs are spread over threads with ``prange``.  Before each
step the ghosts are refreshed — mirrored for Neumann, wrapped for periodic, zero for
Dirichlet — so the update is the same stencil in every cell and no wall test sits in
the inner loop.  With a mirrored ghost the 1-D wall update is
``u0 + r ((u0 - 2 u0) + u1)``, which is ``u0 + r (u1 - u0)`` bit for bit.

In 2-D and 3-D the inner loop runs over the flattened padded field (a whole 2-D
field, or one plane of a 3-D field) through shifted views, so it is long and unit
stride even on 16-cell grids; it also writes the ghost columns between rows, which
are refreshed before they are read again.  In 3-D the wall planes take their
out-of-domain neighbour plane by index (itself, the opposite plane, or the zero ghost
plane) instead of a copy.

The stepping of one run lives in :func:`_take_steps` (with :func:`_load` and
:func:`_unload` for the padded copy), shared by the plain batch kernel
:func:`_advance` and by the first-passage kernel of :mod:`.passage`, which stops a run
every few steps to measure it: both produce the same trajectory bit for bit.

Layout choice (measured on the 2-core AVX2 build machine, one thread, 4096 runs of
128 cells): this per-run loop reached ~4e9 cell updates/s; transposing tiles of runs
so that the batch is the inner axis reached 4.3e9 with 32-run tiles (scratch then
spills from L1 to L2) and 1.4e9 with 16-run tiles.  The per-run layout is as fast,
simpler, and its scratch stays in L1 for every 1-D size we sweep.  Handling the 1-D
wall cells outside the loop instead of through ghosts measured 3-4x slower.

No ``fastmath``: each run's arithmetic is independent of the rest of the batch and
of the thread count, so a batch reproduces its runs integrated one by one bit for
bit.  Divergent runs overflow to inf/nan; nothing checks for it here.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

NEUMANN, PERIODIC, DIRICHLET = 0, 1, 2
BOUNDARY_CODES = {"neumann": NEUMANN, "periodic": PERIODIC, "dirichlet": DIRICHLET}
RUNS_PER_CHUNK = 8  # runs handled by one thread between scratch allocations


@njit(cache=True, nogil=True)
def padded_size(dims, n):
    """Length of the flat padded scratch field of one run."""
    return (n + 2) ** dims


@njit(cache=True, nogil=True)
def _load(field, a, dims, n):
    """Copy a run's flat ``(n**dims,)`` field into the interior of padded ``a``."""
    row = n + 2
    if dims == 1:
        for j in range(n):
            a[j + 1] = field[j]
    elif dims == 2:
        for i in range(n):
            for j in range(n):
                a[(i + 1) * row + j + 1] = field[i * n + j]
    else:
        plane = row * row
        for i in range(n):
            for j in range(n):
                for k in range(n):
                    a[(i + 1) * plane + (j + 1) * row + k + 1] = field[(i * n + j) * n + k]


@njit(cache=True, nogil=True)
def _unload(a, field, dims, n):
    """Copy the interior of padded ``a`` into a run's flat field (inverse of :func:`_load`)."""
    row = n + 2
    if dims == 1:
        for j in range(n):
            field[j] = a[j + 1]
    elif dims == 2:
        for i in range(n):
            for j in range(n):
                field[i * n + j] = a[(i + 1) * row + j + 1]
    else:
        plane = row * row
        for i in range(n):
            for j in range(n):
                for k in range(n):
                    field[(i * n + j) * n + k] = a[(i + 1) * plane + (j + 1) * row + k + 1]


@njit(cache=True, nogil=True)
def _steps_1d(a, b, rate, steps, boundary, n):
    low = n if boundary == PERIODIC else 1
    high = 1 if boundary == PERIODIC else n
    for _ in range(steps):
        if boundary != DIRICHLET:
            a[0] = a[low]
            a[n + 1] = a[high]
        for j in range(1, n + 1):
            b[j] = a[j] + rate * (a[j - 1] - 2.0 * a[j] + a[j + 1])
        a, b = b, a
    return a, b


@njit(cache=True, nogil=True)
def _steps_2d(a, b, rate, steps, boundary, n):
    row = n + 2
    low = n if boundary == PERIODIC else 1
    high = 1 if boundary == PERIODIC else n
    # one flat loop from cell (1, 1) to (n, n); it also writes the column ghosts
    # between rows, which are refreshed before they are read again
    first = row + 1
    length = (n - 1) * row + n
    for _ in range(steps):
        if boundary != DIRICHLET:
            for q in range(row):
                a[q] = a[low * row + q]
                a[(n + 1) * row + q] = a[high * row + q]
        for i in range(1, n + 1):
            if boundary == DIRICHLET:
                a[i * row] = 0.0
                a[i * row + n + 1] = 0.0
            else:
                a[i * row] = a[i * row + low]
                a[i * row + n + 1] = a[i * row + high]
        mid = a[first : first + length]
        west = a[first - 1 : first - 1 + length]
        east = a[first + 1 : first + 1 + length]
        north = a[first - row : first - row + length]
        south = a[first + row : first + row + length]
        out = b[first : first + length]
        for p in range(length):
            out[p] = mid[p] + rate * ((north[p] + south[p]) + (west[p] + east[p]) - 4.0 * mid[p])
        a, b = b, a
    return a, b


@njit(cache=True, nogil=True)
def _steps_3d(a, b, rate, steps, boundary, n):
    row = n + 2
    plane = row * row
    low = n if boundary == PERIODIC else 1
    high = 1 if boundary == PERIODIC else n
    # per plane i, one flat loop from (i, 1, 1) to (i, n, n); it also writes the
    # k-ghosts between rows, which are refreshed before they are read again
    length = (n - 1) * row + n
    for _ in range(steps):
        if boundary != DIRICHLET:
            # ghost rows as contiguous copies; ghost planes are not needed (below)
            for i in range(1, n + 1):
                for q in range(row):
                    a[i * plane + q] = a[i * plane + low * row + q]
                    a[i * plane + (n + 1) * row + q] = a[i * plane + high * row + q]
        for i in range(1, n + 1):
            for j in range(1, n + 1):
                line = i * plane + j * row
                if boundary == DIRICHLET:
                    a[line] = 0.0
                    a[line + n + 1] = 0.0
                else:
                    a[line] = a[line + low]
                    a[line + n + 1] = a[line + high]
        for i in range(1, n + 1):
            # the neighbour planes of the wall planes are picked, not copied: Neumann
            # the plane itself, periodic the opposite one, Dirichlet the ghost plane,
            # which is never written and stays zero
            i_below = i - 1 if i > 1 or boundary == DIRICHLET else low
            i_above = i + 1 if i < n or boundary == DIRICHLET else high
            first = i * plane + row + 1
            shift_below = (i_below - i) * plane
            shift_above = (i_above - i) * plane
            mid = a[first : first + length]
            west = a[first - 1 : first - 1 + length]
            east = a[first + 1 : first + 1 + length]
            north = a[first - row : first - row + length]
            south = a[first + row : first + row + length]
            below = a[first + shift_below : first + shift_below + length]
            above = a[first + shift_above : first + shift_above + length]
            out = b[first : first + length]
            for p in range(length):
                out[p] = mid[p] + rate * (
                    (below[p] + above[p]) + (north[p] + south[p]) + (west[p] + east[p]) - 6.0 * mid[p]
                )
        a, b = b, a
    return a, b


@njit(cache=True, nogil=True)
def _take_steps(a, b, rate, steps, boundary, dims, n):
    """Take ``steps`` steps of one run held in padded ``a``; ``b`` is scratch.

    The result is always left in ``a`` (copied over after an odd number of steps), so
    that callers never juggle the two buffers: a caller whose buffers stay put lets
    the compiler see that they never overlap.
    """
    if dims == 1:
        current, _ = _steps_1d(a, b, rate, steps, boundary, n)
    elif dims == 2:
        current, _ = _steps_2d(a, b, rate, steps, boundary, n)
    else:
        current, _ = _steps_3d(a, b, rate, steps, boundary, n)
    if steps % 2 == 1:
        a[:] = current


@njit(cache=True, nogil=True, parallel=True)
def _advance(flat, r, steps, boundary, dims, n):
    batch = flat.shape[0]
    size = padded_size(dims, n)
    for chunk in prange((batch + RUNS_PER_CHUNK - 1) // RUNS_PER_CHUNK):
        a = np.zeros(size)
        b = np.zeros(size)
        for run in range(chunk * RUNS_PER_CHUNK, min(batch, (chunk + 1) * RUNS_PER_CHUNK)):
            _load(flat[run], a, dims, n)
            _take_steps(a, b, r[run], steps, boundary, dims, n)
            _unload(a, flat[run], dims, n)


def advance(state: np.ndarray, r: np.ndarray, steps: int, boundary: str) -> None:
    """Advance ``state`` by ``steps`` FTCS steps, in place.

    Parameters
    ----------
    state
        ``(batch, *shape)``, C-contiguous float64, overwritten.
    r
        ``(batch,)`` float64, ``D dt / dx**2`` of each run.
    steps
        Number of steps (0 does nothing).
    boundary
        ``"neumann"``, ``"periodic"`` or ``"dirichlet"``.
    """
    if steps <= 0 or state.shape[0] == 0:
        return
    flat = state.reshape(state.shape[0], -1)
    _advance(flat, r, int(steps), BOUNDARY_CODES[boundary], state.ndim - 1, state.shape[1])
