"""Computing one block: integrate and measure its runs, hand the Dataset to a sink.

A *sink* is a picklable callable that receives each finished block and its Dataset
(the store layer's :class:`~pipeline.store.BlockWriter`). This module knows nothing of
zarr or of dask; results never travel back to the caller, only a small
:class:`BlockSummary` per block.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any, TypedDict

import numpy as np
import xarray as xr

from pipeline.diagnostics import STATUS_NAMES, measure_trajectory
from pipeline.layout import step_size_from_cfl
from pipeline.numerics import Batch, initial_condition
from pipeline.numerics.philox import stream_key
from pipeline.particle_diagnostics import PARTICLE_MEASURES, measure_particles
from pipeline.planning import Block, Plan
from pipeline.sweep import Criteria, RunModel

__all__ = [
    "BlockFailure",
    "BlockSummary",
    "Progress",
    "Sink",
    "compute_block",
    "describe_error",
    "is_fatal",
    "measure_runs",
    "run_block",
    "stream_keys",
]

#: receives each computed block and its Dataset (the store's writer)
Sink = Callable[[Block, xr.Dataset], Any]


class BlockSummary(TypedDict):
    """What a task reports about its block (never the data)."""

    index: tuple[int, ...]
    runs: int
    status_counts: list[int]
    compute_seconds: float
    write_seconds: float


#: called with each block's summary as the block completes
Progress = Callable[[BlockSummary], None]


class BlockFailure(TypedDict):
    """A block that raised on every attempt: its index, the last error, the attempts made."""

    index: tuple[int, ...]
    error: str
    attempts: int


#: how often a block is tried before it is recorded as failed
ATTEMPTS = 2


#: errors of the storage itself: every block would fail the same way, so they stop the run
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def is_fatal(error: BaseException) -> bool:
    """True for an error no retry or other block can get past (a full or read-only disk)."""
    return isinstance(error, OSError) and error.errno in FATAL_ERRNOS


def describe_error(error: BaseException) -> str:
    """``Type: first line of the message`` (one line, whatever the exception)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def stream_keys(model: RunModel, coefficient: np.ndarray, step_axis: str, step: np.ndarray) -> np.ndarray:
    """The 64-bit random-stream key of every run: its seed and coordinate values.

    Every model key but the seed, the coefficient and the value on the step axis
    (``step_size`` or ``cfl``, as the sweep gives it) identify the run, so the same run
    draws the same numbers in any sweep, block, order or executor.
    """
    identity = {key: value for key, value in model.as_dict().items() if key != "seed"}
    return np.array(
        [
            stream_key(model.seed, {**identity, "coefficient": float(d), step_axis: float(s)})
            for d, s in zip(np.ravel(coefficient), np.ravel(step), strict=True)
        ],
        dtype=np.uint64,
    )


def measure_runs(
    model: RunModel,
    coefficient: np.ndarray,
    step_axis: str,
    step: np.ndarray,
    checkpoints: list[int],
    *,
    criteria: Criteria,
    keep_fields: str = "none",
) -> dict[str, np.ndarray]:
    """Integrate and measure a batch of runs of one model at ``checkpoints``.

    Grid schemes go through :func:`pipeline.diagnostics.measure_trajectory`, particle
    schemes through :func:`pipeline.particle_diagnostics.measure_particles` with each
    run's random stream keyed by its coordinates (:func:`stream_keys`), so a run gives
    the same result whether a block of ``diffsweep run`` or a probe of ``diffsweep
    refine`` computes it.

    Parameters
    ----------
    model
        The model every run shares.
    coefficient, step
        ``(runs,)`` each: the coefficient and the value on the step axis of every run.
    step_axis
        ``"step_size"`` or ``"cfl"``: what ``step`` holds.
    checkpoints
        Strictly increasing step counts.
    criteria
        The sweep's classification thresholds.
    keep_fields
        As for ``measure_trajectory``.
    """
    grid = model.grid
    coefficient = np.asarray(coefficient, dtype=float)
    step = np.asarray(step, dtype=float)
    step_size = step_size_from_cfl(coefficient, step, grid.dx) if step_axis == "cfl" else step
    initial = initial_condition(model.initial, grid, seed=model.seed)
    batch = Batch(model.scheme, model.boundary, grid, initial, coefficient, step_size)
    if model.moves_particles:
        return measure_particles(
            batch,
            list(checkpoints),
            particles=model.particles,
            confinement=model.confinement,
            keys=stream_keys(model, coefficient, step_axis, step),
            criteria=criteria,
            keep_fields=keep_fields,
        )
    return measure_trajectory(
        batch, list(checkpoints), criteria=criteria, keep_fields=keep_fields
    )


def compute_block(plan: Plan, block: Block) -> xr.Dataset:
    """Integrate and measure every run of ``block``; the result has the layout's variables."""
    sweep = plan.sweep
    model = plan.run_model(block)
    coords = plan.layout.axis_coordinates(block)
    coefficient = coords["coefficient"].astype(float)
    step = coords[sweep.step_axis].astype(float)
    if not sweep.zipped:  # every pair of the block's coefficients and steps; zipped: one per case
        coefficient, step = np.meshgrid(coefficient, step, indexing="ij")
    measured = measure_runs(
        model, coefficient.ravel(), sweep.step_axis, step.ravel(), list(sweep.checkpoints),
        criteria=sweep.criteria, keep_fields=sweep.output.fields,
    )
    if not model.moves_particles and sweep.has_particles:  # a grid run in a sweep that also moves particles
        runs, n_checkpoints = measured["status"].shape
        measured.update({name: np.full((runs, n_checkpoints), np.nan) for name in PARTICLE_MEASURES})
        measured["reason"] = np.zeros((runs, n_checkpoints), dtype=np.int8)
    return plan.layout.block_dataset(block, measured)


def run_block(plan: Plan, block: Block, sink: Sink, threads: int | None = None) -> BlockSummary:
    """Compute one block, hand it to ``sink``, and return a small summary (never the data).

    ``threads`` caps numba's threads in this process (one per task on a dask worker).
    """
    if threads is not None:
        import numba

        most = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]  # set at import, untyped
        numba.set_num_threads(max(1, min(threads, most)))
    start = time.perf_counter()
    dataset = compute_block(plan, block)
    computed = time.perf_counter()
    sink(block, dataset)
    finished = time.perf_counter()
    counts = np.bincount(dataset["status"].values.ravel().astype(np.int64), minlength=len(STATUS_NAMES))
    return {
        "index": block.index,
        "runs": block.n_runs,
        "status_counts": counts.tolist(),
        "compute_seconds": computed - start,
        "write_seconds": finished - computed,
    }
