"""From a sweep to blocks of runs: the plan ``diffsweep plan`` prints and ``run`` executes.

A *block* is a rectangle of the parameter grid: one value of every swept model key
(scheme, grid, boundary, initial condition — they change the arrays, so they split
blocks), a range of coefficients, a range of step sizes (or CFL numbers) — or, when
the two are zipped, a range of ``case`` — and every step count (one trajectory serves
every checkpoint, so ``steps`` is never chunked).
One block is one task and one zarr chunk of every variable. :func:`plan` decides the
blocks before anything runs and returns a frozen :class:`Plan`, which also carries the
store's :class:`~pipeline.layout.ResultLayout`.

Examples
--------
>>> from pipeline.sweep import parse_sweep
>>> sweep = parse_sweep('''
... name: tiny
... model: {scheme: ftcs, cells: 16}
... sweep:
...   coefficient: [0.1, 0.2, 0.5, 1.0]
...   step_size: [1.0e-5, 1.0e-4, 1.0e-3]
...   steps: [10, 100]
... chunks: {coefficient: 3, step_size: 2}
... ''')
>>> tiny = plan(sweep, parallelism=1)
>>> tiny.block_grid, tiny.n_blocks, tiny.n_runs
((2, 2), 4, 12)
>>> [block.shape for block in tiny.blocks()]
[(3, 2, 2), (3, 1, 2), (1, 2, 2), (1, 1, 2)]
>>> tiny.block((1, 0)).region(("coefficient", "steps"))
(slice(3, 4, None), slice(0, 2, None))
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from pipeline.layout import ResultLayout, cfl_number, step_size_from_cfl
from pipeline.sweep import MODEL_KEYS, WORKER_BASELINE_BYTES, RunModel, Sweep

__all__ = [
    "MAX_BLOCK_BYTES",
    "MIN_BLOCK_SECONDS",
    "TARGET_BLOCK_SECONDS",
    "WORKER_BASELINE_BYTES",
    "Block",
    "Plan",
    "plan",
    "run_seconds",
    "seconds_per_run",
]

#: distributed's per-task overhead here is ~2 ms; a block of this many seconds keeps it < 1 %
TARGET_BLOCK_SECONDS = 0.5
#: but never below this, so that many blocks can share the workers (overhead < 5 %)
MIN_BLOCK_SECONDS = 0.05
#: and never more memory than this per task
MAX_BLOCK_BYTES = 256 * 2**20
#: rough single-core costs used to size blocks (measured by benchmarks/kernels.py)
EXPLICIT_SECONDS_PER_CELL_UPDATE = 1.0 / 1.5e9
SPECTRAL_SECONDS_PER_CELL = 40e-9
#: particle-steps per second and core per axis (benchmarks/particles.py: walk 1.2e9 in 1-D,
#: 5.5e8 in 3-D; Langevin 3.3e8 in 1-D, 1.1e8 in 3-D), and the histogram per checkpoint
WALK_SECONDS_PER_PARTICLE_STEP_AXIS = 1.0 / 1.5e9
LANGEVIN_SECONDS_PER_PARTICLE_STEP_AXIS = 1.0 / 3.3e8
HISTOGRAM_SECONDS_PER_PARTICLE = 10e-9


@dataclass(frozen=True)
class Block:
    """One task's piece of the parameter grid.

    Attributes
    ----------
    index
        Position in the block grid, one entry per axis except ``steps``.
    slices
        Positions along every sweep axis (``steps`` included, always whole).
    dims
        The axis each of ``slices`` runs along.
    """

    index: tuple[int, ...]
    slices: tuple[slice, ...]
    dims: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """Length of the block along every axis."""
        return tuple(s.stop - s.start for s in self.slices)

    @property
    def n_runs(self) -> int:
        """Trajectories in the block (every axis but ``steps``)."""
        return math.prod(self.shape[:-1])

    def region(self, dims: tuple[str, ...]) -> tuple[slice, ...]:
        """The block's part of an array with dimensions ``dims``: its slice along each axis,
        everything along any other dimension (a field's ``x``, ``y``, ``z``)."""
        slices = dict(zip(self.dims, self.slices, strict=True))
        return tuple(slices.get(dim, slice(None)) for dim in dims)


@dataclass(frozen=True)
class Plan:
    """The blocks of a sweep and what computing them costs. Immutable; cheap to pickle."""

    sweep: Sweep
    chunks: tuple[int, ...]
    parallelism: int

    # -- shape of the work -------------------------------------------------------------
    @property
    def axis_names(self) -> tuple[str, ...]:
        """The sweep axes, in dimension order (``steps`` last)."""
        return self.sweep.axis_names

    @property
    def shape(self) -> tuple[int, ...]:
        """Length of every axis."""
        return self.sweep.shape

    @property
    def block_grid(self) -> tuple[int, ...]:
        """Number of blocks along each axis except ``steps``."""
        return tuple(
            math.ceil(n / c) for n, c in zip(self.shape[:-1], self.chunks[:-1], strict=True)
        )

    @property
    def n_blocks(self) -> int:
        """Number of blocks, which is the number of tasks."""
        return math.prod(self.block_grid)

    @property
    def n_runs(self) -> int:
        """Trajectories integrated (a run is one trajectory; each has every step count)."""
        return self.sweep.n_runs

    @property
    def n_results(self) -> int:
        """Points of the result grid (runs × step counts)."""
        return self.sweep.n_results

    @property
    def runs_per_task(self) -> int:
        """Runs in one full block."""
        return math.prod(self.chunks[:-1])

    def block(self, index: tuple[int, ...]) -> Block:
        """The block at ``index`` of the block grid."""
        slices = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(index, self.chunks[:-1], self.shape[:-1], strict=True)
        )
        return Block(tuple(index), (*slices, slice(0, self.shape[-1])), self.axis_names)

    def blocks(self) -> Iterator[Block]:
        """Every block, in C order of the block grid."""
        for index in itertools.product(*(range(n) for n in self.block_grid)):
            yield self.block(index)

    def key(self, block: Block) -> str:
        """Deterministic task key: same sweep definition, same keys."""
        return f"diffsweep-{self.sweep.sha256[:16]}-block-" + "-".join(map(str, block.index))

    def run_model(self, block: Block) -> RunModel:
        """The model every run of ``block`` shares (swept model keys have blocks of one)."""
        return self.sweep.run_model(
            {name: self.sweep.axis(name).values[s.start] for name, s in zip(block.dims, block.slices, strict=True) if name in MODEL_KEYS}
        )

    @cached_property
    def layout(self) -> ResultLayout:
        """Dimensions, coordinates and variables of the store this plan writes."""
        return ResultLayout.from_plan(self)

    # -- cost ------------------------------------------------------------------------
    @property
    def _runs_per_model(self) -> int:
        """Runs that share one combination of swept model values."""
        return self.sweep.runs_per_model

    @property
    def cell_updates(self) -> int:
        """Cells × steps summed over every run (the work an explicit scheme does)."""
        max_steps = self.sweep.checkpoints[-1]
        return sum(self._runs_per_model * model.cells_total * max_steps for model in self.sweep.run_models())

    @property
    def memory_per_task(self) -> int:
        """Peak bytes one task holds (largest grid in the sweep)."""
        return self.sweep.task_memory(self.runs_per_task)

    @property
    def core_seconds(self) -> float:
        """Rough single-core compute time, from the kernel rates measured in benchmarks/."""
        return sum(self._runs_per_model * seconds_per_run(self.sweep, model) for model in self.sweep.run_models())

    @property
    def store_bytes(self) -> int:
        """Uncompressed size of the results' data variables (measures, status, fields)."""
        return self.layout.nbytes

    @property
    def unstable_fraction(self) -> float:
        """Fraction of runs theory predicts unstable: an explicit scheme above its von Neumann
        bound, a walk past 2 d p = 1, Langevin at k dt >= 2."""
        sweep = self.sweep
        coefficient, step = sweep.coefficient_and_step()
        runs = np.broadcast_shapes(coefficient.shape, step.shape)
        unstable = 0
        for model in sweep.run_models():
            limit = model.stability_limit
            if model.step_size_limit is not None:  # langevin: k dt >= 2 whatever D
                dt = step_size_from_cfl(coefficient, step, model.dx) if sweep.step_axis == "cfl" else step
                over = np.broadcast_to(dt >= model.step_size_limit, runs)
                unstable += int(np.count_nonzero(over))
                continue
            if limit is None:
                continue
            cfl = step if sweep.step_axis == "cfl" else cfl_number(coefficient, step, model.dx)
            unstable += int(np.count_nonzero(np.broadcast_to(cfl > limit * (1 + 1e-12), runs)))
        return unstable / self.n_runs

    def summary(self) -> dict[str, Any]:
        """The plan as plain values, for printing and for the store's attributes;
        ``zipped`` names the axes that vary together along ``case``, if any."""
        zipped = {"zipped": list(self.sweep.zipped_names)} if self.sweep.zipped else {}
        return {
            "sweep": self.sweep.name,
            "sweep_hash": self.sweep.sha256,
            "axes": dict(zip(self.axis_names, self.shape, strict=True)),
            "chunks": dict(zip(self.axis_names, self.chunks, strict=True)),
            "runs": self.n_runs,
            "results": self.n_results,
            "blocks": self.n_blocks,
            "tasks": self.n_blocks,
            "runs_per_task": self.runs_per_task,
            "cell_updates": self.cell_updates,
            "estimated_core_seconds": self.core_seconds,
            "memory_per_task_bytes": self.memory_per_task,
            "store_bytes": self.store_bytes,
            "unstable_fraction": self.unstable_fraction,
            **zipped,
        }


def seconds_per_run(sweep: Sweep, model: RunModel) -> float:
    """Rough single-core seconds of one run of ``model`` to the sweep's last step count."""
    return run_seconds(model, sweep.checkpoints[-1], len(sweep.checkpoints))


def run_seconds(model: RunModel, steps: int, n_checkpoints: int = 1) -> float:
    """Rough single-core seconds of one run of ``model`` to ``steps``, measured at ``n_checkpoints``
    step counts (from the kernel rates measured in benchmarks/)."""
    cells = model.cells_total
    if model.moves_particles:
        per_step = (
            WALK_SECONDS_PER_PARTICLE_STEP_AXIS
            if model.scheme == "random-walk"
            else LANGEVIN_SECONDS_PER_PARTICLE_STEP_AXIS
        )
        return model.particles * (model.dims * steps * per_step + n_checkpoints * HISTOGRAM_SECONDS_PER_PARTICLE)
    if model.scheme == "ftcs":
        return cells * steps * EXPLICIT_SECONDS_PER_CELL_UPDATE
    return cells * (2 * n_checkpoints + 2) * SPECTRAL_SECONDS_PER_CELL * (1 + math.log2(cells) / 8)


def plan(sweep: Sweep, *, parallelism: int | None = None, memory_limit: int | None = None) -> Plan:
    """Decide the blocks of ``sweep``.

    Explicit ``chunks`` in the sweep win. Otherwise blocks are sized so that one takes
    about :data:`TARGET_BLOCK_SECONDS` (the scheduler's ~2 ms per task stays well under
    5 %), fits :data:`MAX_BLOCK_BYTES` and what ``memory_limit`` leaves a task, and there
    are at least four blocks per worker when the sweep is large enough for that. Swept
    model keys always have chunk 1.

    Parameters
    ----------
    sweep
        A validated sweep.
    parallelism
        Number of workers the blocks will be spread over (default: CPU count).
    memory_limit
        Memory of one worker (one task at a time): a block needs at most this less
        :data:`WORKER_BASELINE_BYTES`. A single run always makes a block (the parser
        refuses a run that cannot fit).
    """
    parallelism = parallelism or os.cpu_count() or 1
    run_dims = sweep.run_dims  # (coefficient, step axis), or (case,) when zipped
    if any(name in dict(sweep.chunks) for name in run_dims):  # the sweep's own chunks
        return Plan(sweep=sweep, chunks=sweep.chunk_shape, parallelism=parallelism)
    names = sweep.axis_names
    chunks = dict(zip(names, sweep.shape, strict=True))
    for name in sweep.swept_model_keys:
        chunks[name] = 1
    models = sweep.run_models()
    per_run = max(seconds_per_run(sweep, model) for model in models)
    runs = max(1, int(TARGET_BLOCK_SECONDS / per_run))
    total = len(models) * sweep.runs_per_model
    balanced = math.ceil(total / (4 * parallelism))
    runs = min(runs, max(balanced, int(MIN_BLOCK_SECONDS / per_run), 1))
    budget = MAX_BLOCK_BYTES
    if memory_limit is not None:
        budget = min(budget, memory_limit - WORKER_BASELINE_BYTES)
    runs = max(1, min(runs, budget // sweep.memory_per_run()))
    # fill the innermost run dimension first (the step axis, or the cases)
    for name in reversed(run_dims):
        chunks[name] = max(1, min(chunks[name], runs))
        runs //= chunks[name]
    return Plan(sweep=sweep, chunks=tuple(chunks[n] for n in names), parallelism=parallelism)
