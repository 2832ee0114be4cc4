"""The result layout (pipeline.layout): template, blocks and writer regions agree by construction."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_cases import sweep_texts

from pipeline import runner, store
from pipeline.compute import compute_block
from pipeline.diagnostics import MEASURES
from pipeline.executors import InProcessExecutor
from pipeline.layout import VariableLayout
from pipeline.numerics import Batch, Grid, discrete_solution, initial_condition
from pipeline.planning import plan as make_plan
from pipeline.sweep import parse_sweep

#: every kind of layout in one small sweep: a swept string axis, CFL numbers, checkpoint fields
CHECKPOINT_FIELDS = """\
name: layout
model: {dims: 2, cells: 6, boundary: periodic, initial: random, seed: 4}
sweep:
  scheme: [ftcs, crank-nicolson]
  coefficient: [0.1, 0.4, 1.0]
  cfl: [0.05, 0.2, 0.3, 0.6]
  steps: [1, 3, 20]
chunks: {coefficient: 2, cfl: 3}
output: {fields: checkpoints}
"""

#: swept grid sizes: the derived step size depends on cells and length as well
SWEPT_GRID = """\
name: grids
model: {scheme: backward-euler, dims: 1}
sweep:
  cells: [8, 12]
  length: [1.0, 3.0]
  coefficient: [0.1, 2.0]
  cfl: [0.1, 0.7, 5.0]
  steps: [2, 7]
"""


@settings(deadline=None, max_examples=40)
@given(text=sweep_texts(), parallelism=st.integers(1, 8))
def test_every_block_region_is_chunk_aligned_and_the_regions_tile_every_variable(text: str, parallelism: int) -> None:
    plan = make_plan(parse_sweep(text), parallelism=parallelism)
    layout = plan.layout
    assert tuple(layout.sizes)[: len(plan.axis_names)] == plan.axis_names
    for variable in layout.variables:
        assert variable.shape == tuple(layout.sizes[d] for d in variable.dims)
        covered = np.zeros(variable.shape, dtype=np.int64)
        for block in plan.blocks():
            region = block.region(variable.dims)
            store.check_aligned(variable.name, region, variable.chunks, variable.shape)
            covered[region] += 1
            assert covered[region].shape == layout.block_shape(variable, block)
        # a variable without steps (a stored final field) is written once per block all the same
        assert (covered == 1).all(), variable.name


def test_template_is_the_layout(tmp_path) -> None:
    for text in (CHECKPOINT_FIELDS, SWEPT_GRID):
        plan = make_plan(parse_sweep(text), parallelism=2)
        layout = plan.layout
        dataset, encoding = store.template(plan)
        assert list(dataset.data_vars) == [v.name for v in layout.variables]
        for v in layout.variables:
            assert dataset[v.name].dims == v.dims and dataset[v.name].shape == v.shape
            assert dataset[v.name].dtype == np.dtype(v.dtype) and dataset[v.name].data.chunksize == v.chunks
            assert encoding[v.name]["chunks"] == v.chunks
        for c in layout.coordinates_layout:
            assert dataset[c.name].dims == c.dims and dataset[c.name].attrs == c.attrs
        assert dict(dataset.sizes) == dict(layout.sizes)
        assert plan.store_bytes == sum(dataset[v].nbytes for v in dataset.data_vars)


def test_computed_blocks_have_the_layouts_dims_shapes_and_dtypes() -> None:
    plan = make_plan(parse_sweep(CHECKPOINT_FIELDS), parallelism=1)
    layout = plan.layout
    assert layout.variable("field").dims == ("scheme", "coefficient", "cfl", "steps", "x", "y")
    assert layout.sizes == {"scheme": 2, "coefficient": 3, "cfl": 4, "steps": 3, "x": 6, "y": 6}
    for block in plan.blocks():
        dataset = compute_block(plan, block)
        for v in layout.variables:
            assert dataset[v.name].dims == v.dims
            assert dataset[v.name].shape == layout.block_shape(v, block)
            assert dataset[v.name].dtype == np.dtype(v.dtype)
        # the coordinates of the block are the sweep's values at the block's positions
        assert list(dataset.scheme.values) == [("ftcs", "crank-nicolson")[block.slices[0].start]]
        assert dataset.coefficient.values.tolist() == [0.1, 0.4, 1.0][block.slices[1]]


def test_derived_step_sizes_depend_on_every_swept_grid_key(tmp_path) -> None:
    """dt = r dx^2 / D with dx = length / cells, over (cells, length, coefficient, cfl)."""
    plan = make_plan(parse_sweep(SWEPT_GRID), parallelism=1)
    url = str(tmp_path / "grids.zarr")
    runner.run_sweep(plan, url, executor=InProcessExecutor())
    ds = xr.open_zarr(url).load()
    assert ds.step_size.dims == ("cells", "length", "coefficient", "cfl")
    cells = np.array([8, 12])[:, None, None, None]
    length = np.array([1.0, 3.0])[None, :, None, None]
    coefficient = np.array([0.1, 2.0])[None, None, :, None]
    cfl = np.array([0.1, 0.7, 5.0])[None, None, None, :]
    np.testing.assert_allclose(ds.step_size.values, cfl * (length / cells) ** 2 / coefficient, rtol=1e-15)
    assert ds.time.dims == ("cells", "length", "coefficient", "cfl", "steps")
    np.testing.assert_allclose(ds.time.values, ds.step_size.values[..., None] * np.array([2, 7]), rtol=1e-15)
    # backward Euler is unconditionally stable: nothing diverges, however large r is
    assert int((ds.status == 3).sum()) == 0 and int((ds.status < 0).sum()) == 0


LENGTHS = """\
name: lengths
model: {scheme: backward-euler, dims: 1, cells: 8}
sweep:
  length: [1.0, 3.0]
  coefficient: [0.1, 2.0]
  cfl: [0.1, 0.7, 5.0]
  steps: [2, 7]
output: {fields: final}
"""


def test_stored_fields_with_a_swept_length_have_no_cell_centre_coordinate(tmp_path) -> None:
    plan = make_plan(parse_sweep(LENGTHS), parallelism=1)
    assert "x" not in [c.name for c in plan.layout.coordinates_layout]
    url = str(tmp_path / "lengths.zarr")
    runner.run_sweep(plan, url, executor=InProcessExecutor())
    ds = xr.open_zarr(url)
    assert ds.field.dims == ("length", "coefficient", "cfl", "x") and "x" not in ds.coords
    for length in (1.0, 3.0):  # each length's field is the exact solution on its own grid
        grid = Grid(dims=1, cells=8, length=length)
        run = ds.sel(length=length).isel(coefficient=1, cfl=1)
        exact = discrete_solution(
            Batch(
                "backward-euler", "neumann", grid, initial_condition("step", grid),
                np.array([2.0]), np.array([float(run.step_size)]),
            ),
            7,
        )[0]
        np.testing.assert_allclose(run.field.values, exact, atol=1e-12)
    fixed = make_plan(parse_sweep(LENGTHS.replace("  length: [1.0, 3.0]\n", "")))
    np.testing.assert_allclose(fixed.layout.coordinates()["x"].values, (np.arange(8) + 0.5) / 8)


def test_a_variable_without_steps_needs_one_entry_in_the_layout(tmp_path) -> None:
    """A per-run variable (dims: every axis but steps) flows from the layout into the
    template, the block Dataset and the writer's region without touching them."""
    plan = make_plan(parse_sweep(CHECKPOINT_FIELDS), parallelism=1)
    layout = plan.layout
    runs = layout.variable("status")
    per_run = VariableLayout(
        "first_status", runs.dims[:-1], runs.shape[:-1], runs.chunks[:-1], "int8", -1,
        {"long_name": "status at the first checkpoint", "units": "1"},
    )
    computed = {block.index: compute_block(plan, block) for block in plan.blocks()}
    extended = dataclasses.replace(layout, variables=(*layout.variables, per_run))
    plan.__dict__["layout"] = extended  # what from_plan would return with the new entry
    url = str(tmp_path / "extended.zarr")
    store.create(url, plan)
    writer = store.BlockWriter(url)
    for block in plan.blocks():
        dataset = computed[block.index]
        # back to the diagnostics' form: the block's runs flattened into the first dimension
        arrays = {name: dataset[name].values.reshape(block.n_runs, *dataset[name].shape[len(block.shape) - 1 :]) for name in dataset.data_vars}
        arrays["first_status"] = arrays["status"][:, 0]
        writer(block, extended.block_dataset(block, arrays))
    ds = xr.open_zarr(url).load()
    assert ds.first_status.dims == ("scheme", "coefficient", "cfl")
    xr.testing.assert_equal(ds.first_status, ds.status.isel(steps=0, drop=True).drop_vars("time"))
    assert ds.first_status.encoding["chunks"] == (1, 2, 3)
    assert set(MEASURES) <= set(ds.data_vars) and math.prod(ds.first_status.shape) == 24


def test_variable_lookup_names_what_exists() -> None:
    layout = make_plan(parse_sweep(SWEPT_GRID)).layout
    with pytest.raises(KeyError, match="no variable 'field'.*distance, mass_error"):
        layout.variable("field")
    with pytest.raises(KeyError, match="no coordinate 'x'"):
        layout.coordinate("x")
