"""Block planning and block computation (pipeline.planning, pipeline.compute)."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from conftest import SMALL_SWEEP
from plan_cases import sweep_texts
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from pipeline import planning
from pipeline.compute import compute_block
from pipeline.errors import SweepError
from pipeline.numerics import Batch, Grid, discrete_solution, initial_condition
from pipeline.sweep import DEFAULT_MEMORY_LIMIT, WORKER_BASELINE_BYTES, parse_sweep


def test_keys_are_identical_across_builds_and_change_with_the_sweep() -> None:
    first = planning.plan(parse_sweep(SMALL_SWEEP), parallelism=2)
    second = planning.plan(parse_sweep("# a comment changes nothing\n" + SMALL_SWEEP), parallelism=2)
    keys = [first.key(b) for b in first.blocks()]
    assert keys == [second.key(b) for b in second.blocks()]
    assert len(set(keys)) == len(keys) == first.n_blocks == 6
    other = planning.plan(parse_sweep(SMALL_SWEEP.replace("num: 6", "num: 5")), parallelism=2)
    assert not set(keys) & {other.key(b) for b in other.blocks()}


def test_swept_model_keys_split_blocks_and_automatic_blocks_are_bounded() -> None:
    text = """
name: auto
model: {scheme: ftcs, dims: [1, 2, 3], cells: 16}
sweep:
  coefficient: {geomspace: [0.01, 1.0], num: 40}
  cfl: {linspace: [0.05, 0.6], num: 50}
  steps: [10, 100, 1000]
"""
    plan = planning.plan(parse_sweep(text), parallelism=2)
    assert plan.axis_names == ("dims", "coefficient", "cfl", "steps")
    assert plan.chunks[0] == 1 and plan.chunks[-1] == 3
    assert plan.memory_per_task <= planning.MAX_BLOCK_BYTES
    assert plan.n_blocks >= 4 * 2  # enough blocks to balance two workers
    # the largest (3-D) block still takes long enough that 2 ms of scheduling is < 5 %
    runs = plan.chunks[1] * plan.chunks[2]
    model = plan.sweep.run_model({"dims": 3})
    assert runs * planning.seconds_per_run(plan.sweep, model) >= 0.002 / 0.05


def test_unstable_fraction_is_the_share_of_runs_above_the_von_neumann_bound() -> None:
    plan = planning.plan(parse_sweep(SMALL_SWEEP))
    dx = 1.0 / 32
    coefficient = np.geomspace(0.01, 1.0, 6)[:, None]
    step_size = np.linspace(1e-5, 1.2e-3, 8)[None, :]
    expected = np.mean(coefficient * step_size / dx**2 > 0.5)
    assert plan.unstable_fraction == pytest.approx(expected)
    assert 0 < expected < 1


def test_block_fields_are_the_exact_discrete_solution_of_their_own_runs() -> None:
    """Each (coefficient, step size) lands at its own coordinates: checked against the
    spectral solution of that single run, so a transposed or shuffled batch fails."""
    sweep = parse_sweep(SMALL_SWEEP)
    plan = planning.plan(sweep)
    block = plan.block((1, 1))
    dataset = compute_block(plan, block)
    grid = Grid(dims=1, cells=32, length=1.0)
    u0 = initial_condition("step", grid)
    for i, j in itertools.product(range(2), range(4)):
        run = dataset.isel(coefficient=i, step_size=j)
        coefficient, step_size = float(run.coefficient), float(run.step_size)
        exact = discrete_solution(
            Batch("ftcs", "neumann", grid, u0, np.array([coefficient]), np.array([step_size])), 1000
        )[0]
        if np.isfinite(exact).all() and np.abs(exact).max() < 1e6:
            np.testing.assert_allclose(run.field.values, exact, atol=1e-10)
    assert dataset.status.dtype == np.int8
    assert dataset.sizes == {"coefficient": 2, "step_size": 4, "steps": 3, "x": 32}


# -- the planner's guarantees, over generated sweeps ----------------------------------------

PLANS = settings(deadline=None, max_examples=60)


@PLANS
@given(text=sweep_texts(), parallelism=st.integers(1, 16))
def test_blocks_tile_the_grid_exactly_once(text: str, parallelism: int) -> None:
    plan = planning.plan(parse_sweep(text), parallelism=parallelism)
    for name, size in plan.sweep.chunks:  # explicit chunks are the blocks; steps is never chunked
        assert plan.chunks[plan.axis_names.index(name)] == size
    assert plan.chunks[-1] == plan.shape[-1]
    covered = np.zeros(plan.shape, dtype=np.int64)
    blocks = list(plan.blocks())
    for block in blocks:
        assert block.dims == plan.axis_names and block.slices[-1] == slice(0, plan.shape[-1])
        assert all(0 <= s.start < s.stop <= n for s, n in zip(block.slices, plan.shape, strict=True))
        covered[block.slices] += 1
    assert (covered == 1).all()
    assert len(blocks) == plan.n_blocks == len({block.index for block in blocks})
    assert sum(block.n_runs for block in blocks) == plan.n_runs
    # a swept model key never shares a block: every block has a single model
    for name in plan.sweep.swept_model_keys:
        assert all(block.shape[plan.axis_names.index(name)] == 1 for block in blocks)


#: a sweep whose blocks the memory bound decides: 21 MB per run, cheap enough in time for ~70
MEMORY_BOUND = """\
name: memory-bound
model: {scheme: ftcs, dims: 3, cells: 64}
sweep:
  coefficient: {geomspace: [0.01, 1.0], num: 40}
  step_size: {linspace: [1.0e-6, 1.0e-4], num: 40}
  steps: [1, 2, 5, 10]
output: {fields: checkpoints}
"""


#: explicit chunks beside a swept model key: each task has one scheme, so 40 runs of 18 MiB
#: fit the 2 GiB limit (the parser once counted all three schemes into one task and refused)
SWEPT_MODEL_CHUNKS = """\
name: generated
model: {dims: 3, cells: 64}
sweep:
  scheme: [ftcs, crank-nicolson, backward-euler]
  coefficient: {geomspace: [0.01, 1.0], num: 15}
  step_size: {linspace: [1.0e-6, 1.0e-4], num: 27}
  steps: [1, 2, 5]
output: {fields: checkpoints}
chunks: {coefficient: 5, step_size: 8}
"""


@PLANS
@given(text=sweep_texts(), parallelism=st.integers(1, 16))
@example(text=MEMORY_BOUND, parallelism=1)
@example(text=SWEPT_MODEL_CHUNKS, parallelism=1)
def test_every_automatic_block_fits_the_memory_bound(text: str, parallelism: int) -> None:
    sweep = parse_sweep(text)
    plan = planning.plan(sweep, parallelism=parallelism)
    per_run = sweep.memory_per_run()
    largest = max(block.n_runs for block in plan.blocks())
    assert largest == plan.runs_per_task
    if sweep.chunks:  # explicit blocks: the parser held them to its memory limit, task as planned
        assert largest * per_run <= DEFAULT_MEMORY_LIMIT
        assert sweep.runs_per_task == largest
    else:  # automatic blocks: within MAX_BLOCK_BYTES, unless a single run is larger
        assert largest * per_run <= planning.MAX_BLOCK_BYTES or largest == 1
    assert plan.memory_per_task == largest * per_run


@PLANS
@given(text=sweep_texts(), parallelism=st.integers(1, 16),
       limit=st.floats(20, 36).map(lambda power: WORKER_BASELINE_BYTES + int(2**power)))  # +1 MiB to +64 GiB
@example(text=MEMORY_BOUND, parallelism=1, limit=WORKER_BASELINE_BYTES + 2**20)
@example(text=SWEPT_MODEL_CHUNKS, parallelism=1, limit=WORKER_BASELINE_BYTES + 2**20)
@example(text=SWEPT_MODEL_CHUNKS, parallelism=4, limit=WORKER_BASELINE_BYTES + 64 * 2**20)
def test_every_block_fits_the_memory_limit_less_the_baseline_or_the_sweep_is_refused(
    text: str, parallelism: int, limit: int
) -> None:
    # what `diffsweep run --memory-limit` does: the parser checks one run (and explicit
    # chunks) against the limit less the worker's baseline, then the planner sizes blocks
    free = limit - WORKER_BASELINE_BYTES
    unchecked = parse_sweep(text)
    per_run = unchecked.memory_per_run()
    too_big = per_run > free or (bool(unchecked.chunks) and unchecked.memory_per_task() > free)
    try:
        sweep = parse_sweep(text, memory_limit=limit, worker_baseline=WORKER_BASELINE_BYTES)
    except SweepError as error:
        event("refused: one run or an explicit task does not fit")
        assert too_big, error
        assert "needs about" in str(error) and "a dask worker uses itself" in str(error), error
        return
    assert not too_big
    plan = planning.plan(sweep, parallelism=parallelism, memory_limit=limit)
    event("planned: more than one block" if plan.n_blocks > 1 else "planned: one block")
    assert all(sweep.task_memory(block.n_runs) <= free for block in plan.blocks())
    assert plan.memory_per_task <= free


@PLANS
@given(text=sweep_texts(), parallelism=st.integers(1, 16))
def test_keys_are_stable_across_rebuilds_and_pickling(text: str, parallelism: int) -> None:
    plan = planning.plan(parse_sweep(text), parallelism=parallelism)
    keys = [plan.key(block) for block in plan.blocks()]
    assert len(set(keys)) == len(keys)
    # the same definition written differently, planned again, and a plan shipped to a worker
    rewritten = planning.plan(parse_sweep("# reformatted\n" + text.replace(": ", ":  ")), parallelism=parallelism)
    shipped = pickle.loads(pickle.dumps(plan))
    for other in (rewritten, shipped):
        assert [other.key(block) for block in other.blocks()] == keys
