"""Integrate a batch of runs through its checkpoints, once, to the largest step count."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from . import ftcs, passage
from .grid import Grid


def batch_state(grid: Grid, initial: np.ndarray, batch: int) -> np.ndarray:
    """A fresh C-contiguous float64 ``(batch, *grid.shape)`` copy of ``initial``.

    ``initial`` is ``grid.shape`` (shared by every run) or ``(batch, *grid.shape)``.
    """
    initial = np.asarray(initial, dtype=float)
    assert initial.shape in (grid.shape, (batch, *grid.shape)), (initial.shape, batch)
    return np.array(np.broadcast_to(initial, (batch, *grid.shape)), dtype=float, order="C")


def cfl_numbers(grid: Grid, coefficient: np.ndarray, step_size: np.ndarray) -> np.ndarray:
    """``r = D dt / dx**2`` of each run, ``(batch,)`` float64."""
    coefficient = np.asarray(coefficient, dtype=float)
    step_size = np.asarray(step_size, dtype=float)
    assert coefficient.ndim == 1 and coefficient.shape == step_size.shape
    return np.ascontiguousarray(coefficient * step_size / grid.dx**2)


def integrate(
    scheme: str,
    boundary: str,
    grid: Grid,
    initial: np.ndarray,
    coefficient: np.ndarray,
    step_size: np.ndarray,
    checkpoints: Sequence[int],
    *,
    first_passage: passage.FirstPassage | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Integrate a batch of runs and yield the state at each checkpoint.

    Every run is integrated once, to ``max(checkpoints)``, and observed on the way.

    Parameters
    ----------
    scheme
        ``"ftcs"``, ``"backward-euler"`` or ``"crank-nicolson"``.
    boundary
        ``"neumann"``, ``"periodic"`` or ``"dirichlet"``.
    grid
        The grid shared by the batch.
    initial
        ``grid.shape`` (shared by every run) or ``(batch, *grid.shape)``.
    coefficient, step_size
        ``(batch,)``: diffusion coefficient ``D`` and time step ``dt`` of each run.
    checkpoints
        Strictly increasing step counts, each >= 1.
    first_passage
        If given, its ``steps_to_equilibrium`` and ``steps_to_divergence`` are filled
        in, exact to the step, when the iterator is exhausted (horizon: the last
        checkpoint); see :mod:`.passage`.  The states are the same bits either way.

    Yields
    ------
    steps : int
        The checkpoint reached.
    state : numpy.ndarray
        ``(batch, *grid.shape)`` float64.  The same array may be overwritten after the
        next ``next()``: copy it if you keep it.

    Notes
    -----
    FTCS runs the compiled stencil (:mod:`.ftcs`).  Backward Euler and Crank–Nicolson
    are solved exactly in the eigenbasis of the boundary (DCT/FFT/DST): the initial
    state is transformed once and, at each checkpoint ``n``, each mode is multiplied
    by ``g ** n`` and the coefficients are transformed back.  Either way the state at
    ``n`` does not depend on the other checkpoints, bit for bit.
    """
    r = cfl_numbers(grid, coefficient, step_size)
    state = batch_state(grid, initial, r.shape[0])
    horizon = max(checkpoints, default=0)
    reached = 0
    if scheme == "ftcs":
        watch = None
        if first_passage is not None:
            watch = passage.FtcsWatch(grid, boundary, r, state, first_passage, checkpoints)
        for steps in checkpoints:
            assert steps > reached, checkpoints
            if watch is None:
                ftcs.advance(state, r, steps - reached, boundary)
            else:
                watch.advance(state, reached, steps)
            reached = steps
            yield steps, state
        if watch is not None:
            watch.finish()
        return
    runs = passage.SpectralRuns(scheme, boundary, grid, state, r)
    for steps in checkpoints:
        assert steps > reached, checkpoints
        reached = steps
        yield steps, runs.state(steps)
    if first_passage is not None:
        passage.spectral_first_passage(runs, first_passage, horizon)
