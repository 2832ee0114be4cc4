"""From a sweep to blocks of runs, and from blocks to tasks.

A *block* is a rectangle of the parameter grid: one value of every swept model key
(scheme, grid, boundary, initial condition — they change the arrays, so they split
blocks), a range of coefficients, a range of step sizes (or CFL numbers), and every
step count (one trajectory serves every checkpoint, so ``steps`` is never chunked).
One block is one task. :func:`plan` decides the blocks before anything runs and
returns a frozen :class:`Plan`; ``diffsweep plan`` prints exactly the plan that
``diffsweep run`` executes.

Executing a plan means calling :func:`run_block` on each block with a *sink* — a
picklable callable that receives the finished block Dataset (the store layer's
writer). This module knows nothing of zarr; results never travel back to the client,
only a small summary per block.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import xarray as xr

from pipeline.diagnostics import ATTRIBUTES, MEASURES, STATUS_NAMES, measure_trajectory
from pipeline.numerics import Grid, initial_condition, stability_limit
from pipeline.sweep import MODEL_KEYS, Sweep

SPATIAL_DIMS = ("x", "y", "z")

#: distributed's per-task overhead here is ~2 ms; a block of this many seconds keeps it < 1 %
TARGET_BLOCK_SECONDS = 0.5
#: but never below this, so that many blocks can share the workers (overhead < 5 %)
MIN_BLOCK_SECONDS = 0.05
#: and never more memory than this per task
MAX_BLOCK_BYTES = 256 * 2**20
#: rough single-core costs used to size blocks (measured by benchmarks/kernels.py)
EXPLICIT_SECONDS_PER_CELL_UPDATE = 1.0 / 1.5e9
SPECTRAL_SECONDS_PER_CELL = 40e-9

Sink = Callable[["Block", xr.Dataset], Any]


@dataclass(frozen=True)
class Block:
    """One task's piece of the parameter grid.

    Attributes
    ----------
    index
        Position in the block grid, one entry per axis except ``steps``.
    slices
        Positions along every sweep axis (``steps`` included, always whole).
    """

    index: tuple[int, ...]
    slices: tuple[slice, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.slices)

    @property
    def n_runs(self) -> int:
        return math.prod(self.shape[:-1])


@dataclass(frozen=True)
class Plan:
    """The blocks of a sweep and what computing them costs. Immutable; cheap to pickle."""

    sweep: Sweep
    chunks: tuple[int, ...]
    parallelism: int

    # -- shape of the work -------------------------------------------------------------
    @property
    def axis_names(self) -> tuple[str, ...]:
        return tuple(axis.name for axis in self.sweep.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.sweep.shape

    @property
    def block_grid(self) -> tuple[int, ...]:
        """Number of blocks along each axis except ``steps``."""
        return tuple(
            math.ceil(n / c) for n, c in zip(self.shape[:-1], self.chunks[:-1], strict=True)
        )

    @property
    def n_blocks(self) -> int:
        return math.prod(self.block_grid)

    @property
    def n_runs(self) -> int:
        """Trajectories integrated (a run is one trajectory; each has every step count)."""
        return self.sweep.n_runs

    @property
    def n_results(self) -> int:
        return self.sweep.n_results

    def block(self, index: tuple[int, ...]) -> Block:
        slices = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(index, self.chunks[:-1], self.shape[:-1], strict=True)
        )
        return Block(tuple(index), (*slices, slice(0, self.shape[-1])))

    def blocks(self) -> Iterator[Block]:
        for index in itertools.product(*(range(n) for n in self.block_grid)):
            yield self.block(index)

    def key(self, block: Block) -> str:
        """Deterministic task key: same sweep definition, same keys."""
        return f"diffsweep-{self.sweep.sha256[:16]}-block-" + "-".join(map(str, block.index))

    # -- cost ------------------------------------------------------------------------
    @cached_property
    def _groups(self) -> list[tuple[dict[str, Any], int]]:
        """Every combination of swept model values with the number of runs it holds."""
        per_group = math.prod(len(a.values) for a in self.sweep.axes[:-1] if a.name not in MODEL_KEYS)
        return [(model, per_group) for model in model_groups(self.sweep)]

    @property
    def cell_updates(self) -> int:
        """Cells × steps summed over every run (the work an explicit scheme does)."""
        max_steps = int(max(self.sweep.axis("steps").values))
        return sum(n * model["cells"] ** model["dims"] * max_steps for model, n in self._groups)

    @property
    def memory_per_task(self) -> int:
        """Peak bytes one task holds (largest grid in the sweep)."""
        return math.prod(self.chunks[:-1]) * self.sweep.memory_per_run()

    @property
    def core_seconds(self) -> float:
        """Rough single-core compute time, from the kernel rates measured in benchmarks/."""
        return sum(n * seconds_per_run(self.sweep, model) for model, n in self._groups)

    @property
    def store_bytes(self) -> int:
        """Uncompressed size of the results (measures, status, fields, coordinates)."""
        n_checkpoints = self.shape[-1]
        measures = self.n_results * (8 * len(MEASURES) + 1)
        fields = 0
        kept = {"none": 0, "final": 1, "checkpoints": n_checkpoints}[self.sweep.output.fields]
        if kept:
            fields = sum(n * model["cells"] ** model["dims"] * 8 * kept for model, n in self._groups)
        return measures + fields

    @property
    def unstable_fraction(self) -> float:
        """Fraction of runs von Neumann theory predicts unstable (explicit scheme above its bound)."""
        unstable = 0
        for model, n in self._groups:
            limit = stability_limit(model["scheme"], model["dims"])
            if limit is None:
                continue
            r = cfl_values(self.sweep, model)
            unstable += np.count_nonzero(r > limit * (1 + 1e-12)) * (n // r.size)
        return unstable / self.n_runs

    def summary(self) -> dict[str, Any]:
        """The plan as plain values, for printing and for the store's attributes."""
        return {
            "sweep": self.sweep.name,
            "sweep_hash": self.sweep.sha256,
            "axes": dict(zip(self.axis_names, self.shape, strict=True)),
            "chunks": dict(zip(self.axis_names, self.chunks, strict=True)),
            "runs": self.n_runs,
            "results": self.n_results,
            "blocks": self.n_blocks,
            "tasks": self.n_blocks,
            "runs_per_task": math.prod(self.chunks[:-1]),
            "cell_updates": self.cell_updates,
            "estimated_core_seconds": self.core_seconds,
            "memory_per_task_bytes": self.memory_per_task,
            "store_bytes": self.store_bytes,
            "unstable_fraction": self.unstable_fraction,
        }


def model_values(sweep: Sweep, swept: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model of one block: fixed values from ``sweep.model``, swept ones from ``swept``."""
    values = {key: getattr(sweep.model, key) for key in MODEL_KEYS}
    values.update(swept or {})
    return values


def model_groups(sweep: Sweep) -> list[dict[str, Any]]:
    """The model of every combination of swept model keys (one model when none is swept)."""
    swept = [axis for axis in sweep.axes if axis.name in MODEL_KEYS]
    names = [axis.name for axis in swept]
    return [
        model_values(sweep, dict(zip(names, values, strict=True)))
        for values in itertools.product(*(axis.values for axis in swept))
    ]


def cfl_values(sweep: Sweep, model: dict[str, Any]) -> np.ndarray:
    """r = D·Δt/Δx² over (coefficient, step axis) for one model."""
    coefficient = np.asarray(sweep.axis("coefficient").values, dtype=float)[:, None]
    step = np.asarray(sweep.axis(sweep.step_axis).values, dtype=float)[None, :]
    if sweep.step_axis == "cfl":
        return np.broadcast_to(step, (coefficient.size, step.size))
    dx = model["length"] / model["cells"]
    return coefficient * step / dx**2


def seconds_per_run(sweep: Sweep, model: dict[str, Any]) -> float:
    cells = model["cells"] ** model["dims"]
    steps = sweep.axis("steps").values
    if model["scheme"] == "ftcs":
        return cells * max(steps) * EXPLICIT_SECONDS_PER_CELL_UPDATE
    return cells * (2 * len(steps) + 2) * SPECTRAL_SECONDS_PER_CELL * (1 + math.log2(cells) / 8)


def plan(sweep: Sweep, *, parallelism: int | None = None) -> Plan:
    """Decide the blocks of ``sweep``.

    Explicit ``chunks`` in the sweep win. Otherwise blocks are sized so that one takes
    about :data:`TARGET_BLOCK_SECONDS` (the scheduler's ~2 ms per task stays well under
    5 %), fits :data:`MAX_BLOCK_BYTES`, and there are at least four blocks per worker
    when the sweep is large enough for that. Swept model keys always have chunk 1.

    Parameters
    ----------
    sweep
        A validated sweep.
    parallelism
        Number of workers the blocks will be spread over (default: CPU count).
    """
    parallelism = parallelism or os.cpu_count() or 1
    names = [axis.name for axis in sweep.axes]
    lengths = [len(axis.values) for axis in sweep.axes]
    given = dict(sweep.chunks)
    chunks = dict(zip(names, lengths, strict=True))
    for name in names:
        if name in MODEL_KEYS:
            chunks[name] = 1
    groups = model_groups(sweep)

    step_axis = sweep.step_axis
    n_coef, n_step = chunks["coefficient"], chunks[step_axis]
    if "coefficient" in given or step_axis in given:
        chunks["coefficient"] = given.get("coefficient", n_coef)
        chunks[step_axis] = given.get(step_axis, n_step)
    else:
        per_run = max(seconds_per_run(sweep, m) for m in groups)
        bytes_per_run = sweep.memory_per_run()
        runs = max(1, int(TARGET_BLOCK_SECONDS / per_run))
        total = len(groups) * n_coef * n_step
        balanced = math.ceil(total / (4 * parallelism))
        runs = min(runs, max(balanced, int(MIN_BLOCK_SECONDS / per_run), 1))
        runs = max(1, min(runs, MAX_BLOCK_BYTES // bytes_per_run))
        chunks[step_axis] = min(n_step, runs)
        chunks["coefficient"] = max(1, min(n_coef, runs // chunks[step_axis]))
    return Plan(sweep=sweep, chunks=tuple(chunks[n] for n in names), parallelism=parallelism)


# -- computing one block ----------------------------------------------------------------


def compute_block(plan: Plan, block: Block) -> xr.Dataset:
    """Integrate and measure every run of ``block``; the result is a Dataset block."""
    sweep = plan.sweep
    axes = {axis.name: axis for axis in sweep.axes}
    coords = {
        name: np.asarray(axes[name].values[s], dtype=object if isinstance(axes[name].values[0], str) else None)
        for name, s in zip(plan.axis_names, block.slices, strict=True)
    }
    model = model_values(sweep, {k: coords[k][0] for k in plan.axis_names if k in MODEL_KEYS})
    model = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in model.items()}
    grid = Grid(dims=int(model["dims"]), cells=int(model["cells"]), length=float(model["length"]))
    initial = initial_condition(model["initial"], grid, seed=int(model["seed"]))

    step_axis = sweep.step_axis
    coefficient, step = np.meshgrid(
        coords["coefficient"].astype(float), coords[step_axis].astype(float), indexing="ij"
    )
    step_size = step * grid.dx**2 / coefficient if step_axis == "cfl" else step
    checkpoints = [int(s) for s in coords["steps"]]
    measured = measure_trajectory(
        model["scheme"],
        model["boundary"],
        grid,
        initial,
        coefficient.ravel(),
        step_size.ravel(),
        checkpoints,
        tolerance=sweep.criteria.tolerance,
        divergence=sweep.criteria.divergence,
        keep_fields=sweep.output.fields,
    )
    shape = block.shape
    data_vars = {}
    for name in (*MEASURES, "status"):
        data_vars[name] = (plan.axis_names, measured[name].reshape(shape), ATTRIBUTES[name])
    if "field" in measured:
        field_dims = plan.axis_names if sweep.output.fields == "checkpoints" else plan.axis_names[:-1]
        field_shape = shape if sweep.output.fields == "checkpoints" else shape[:-1]
        data_vars["field"] = (
            (*field_dims, *SPATIAL_DIMS[: grid.dims]),
            measured["field"].reshape(*field_shape, *grid.shape),
            {"long_name": "concentration", "units": "1"},
        )
    return xr.Dataset(data_vars, coords=coords)


def run_block(plan: Plan, block: Block, sink: Sink, threads: int | None = None) -> dict[str, Any]:
    """Compute one block, hand it to ``sink``, and return a small summary (never the data)."""
    if threads is not None:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
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


# -- executors ----------------------------------------------------------------------------


def execute_in_process(
    plan: Plan, blocks: Iterable[Block], sink: Sink, *, progress: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Run blocks one after another in this process: for tests and debugging."""
    summaries = []
    for block in blocks:
        summary = run_block(plan, block, sink)
        summaries.append(summary)
        if progress is not None:
            progress(summary)
    return summaries


def execute_on_dask(
    client: Any,
    plan: Plan,
    blocks: Iterable[Block],
    sink: Sink,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Submit one task per block to a ``distributed.Client`` and wait for all of them.

    Task keys are :meth:`Plan.key`, so resubmitting the same sweep reuses names, and a
    worker lost mid-task makes the scheduler rerun its blocks elsewhere.
    """
    from distributed import as_completed

    plan_future = client.scatter(plan, broadcast=True, hash=False)
    futures = [
        client.submit(run_block, plan_future, block, sink, 1, key=plan.key(block), pure=False, retries=1)
        for block in blocks
    ]
    summaries = []
    try:
        for future in as_completed(futures, loop=client.loop):
            summary = future.result()
            summaries.append(summary)
            if progress is not None:
                progress(summary)
            future.release()
    finally:
        for future in futures:
            future.cancel()
    return summaries
