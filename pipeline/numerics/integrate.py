"""Integrate a batch of runs through its checkpoints, once, to the largest step count."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from . import ftcs, passage
from .batch import Batch


def integrate(
    batch: Batch,
    checkpoints: Sequence[int],
    *,
    first_passage: passage.FirstPassage | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Integrate a batch of runs and yield the state at each checkpoint.

    Every run is integrated once, to ``max(checkpoints)``, and observed on the way.

    Parameters
    ----------
    batch
        The runs (:class:`Batch`); its scheme is ``"ftcs"``, ``"backward-euler"`` or
        ``"crank-nicolson"``.
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
    r = batch.cfl
    state = batch.states()
    horizon = max(checkpoints, default=0)
    reached = 0
    if batch.scheme == "ftcs":
        watch = None
        if first_passage is not None:
            watch = passage.FtcsWatch(batch.grid, batch.boundary, r, state, first_passage, checkpoints)
        for steps in checkpoints:
            assert steps > reached, checkpoints
            if watch is None:
                ftcs.advance(state, r, steps - reached, batch.boundary)
            else:
                watch.advance(state, reached, steps)
            reached = steps
            yield steps, state
        if watch is not None:
            watch.finish()
        return
    runs = passage.SpectralRuns(batch.scheme, batch.boundary, batch.grid, state, r)
    for steps in checkpoints:
        assert steps > reached, checkpoints
        reached = steps
        yield steps, runs.state(steps)
    if first_passage is not None:
        passage.spectral_first_passage(runs, first_passage, horizon)
