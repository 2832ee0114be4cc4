"""The results store (pipeline.store, pipeline.runner) on real zarr stores."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from conftest import SMALL_SWEEP, tree_digest

from pipeline import runner, store
from pipeline.compute import compute_block
from pipeline.executors import InProcessExecutor
from pipeline.planning import Block, Plan
from pipeline.planning import plan as make_plan
from pipeline.errors import StoreError
from pipeline.sweep import parse_sweep


@pytest.fixture
def plan() -> Plan:
    return make_plan(parse_sweep(SMALL_SWEEP))


def test_template_has_the_documented_layout_and_nothing_computed(tmp_path, plan) -> None:
    url = str(tmp_path / "t.zarr")
    store.create(url, plan)
    ds = xr.open_zarr(url)
    assert dict(ds.sizes) == {"coefficient": 6, "step_size": 8, "steps": 3, "x": 32}
    assert set(ds.data_vars) == {"distance", "mass_error", "overshoot", "growth", "error", "status", "field"}
    assert ds.status.dtype == np.int8 and (ds.status.values == -1).all()
    assert ds.status.attrs["flag_meanings"] == "equilibrium transient oscillating divergent"
    for name in [*ds.data_vars, *ds.coords]:
        assert {"units", "long_name"} <= set(ds[name].attrs), name
    assert ds.attrs["sweep_hash"] == plan.sweep.sha256
    assert ds.attrs["sweep_definition"] == SMALL_SWEEP
    assert ds.attrs["scheme"] == "ftcs" and ds.attrs["cells"] == 32
    assert ds.distance.encoding["chunks"] == (2, 4, 3)
    assert store.completion(url) == (0, 6)


def test_run_fills_every_block_and_derived_coordinates_are_exact(tmp_path, plan) -> None:
    url = str(tmp_path / "r.zarr")
    summary = runner.run_sweep(plan, url)
    assert summary.blocks_computed == 6 and store.completion(url) == (6, 6)
    ds = xr.open_zarr(url).load()
    assert (ds.status >= 0).all()
    dx = 1.0 / 32
    expected_cfl = (ds.coefficient * ds.step_size / dx**2).transpose(*ds.cfl.dims)
    expected_time = (ds.steps * ds.step_size).transpose(*ds.time.dims)
    np.testing.assert_allclose(ds.cfl.values, expected_cfl.values, rtol=1e-15)
    np.testing.assert_allclose(ds.time.values, expected_time.values, rtol=1e-15)
    # the theory: FTCS runs below r = 1/2 never leave the maximum principle, runs above it blow up
    final = ds.status.isel(steps=-1)
    assert ((final <= 1) == (ds.cfl <= 0.5)).all()


def test_misaligned_region_is_refused_naming_region_and_chunks(tmp_path, plan) -> None:
    url = str(tmp_path / "m.zarr")
    store.create(url, plan)
    shifted = Block(index=(0, 0), slices=(slice(1, 3), slice(0, 4), slice(0, 3)), dims=plan.axis_names)
    dataset = compute_block(plan, plan.block((0, 0)))
    with pytest.raises(StoreError, match=r"region \[\(1, 3\).*not aligned with its zarr chunks \(2, 4, 3\)"):
        store.BlockWriter(url)(shifted, dataset)


def test_existing_store_is_refused_without_flags_and_left_untouched(tmp_path, plan) -> None:
    url = tmp_path / "e.zarr"
    runner.run_sweep(plan, str(url))
    before = tree_digest(url)
    with pytest.raises(StoreError, match="already exists; pass resume=True"):
        runner.run_sweep(plan, str(url))
    other = make_plan(parse_sweep(SMALL_SWEEP.replace("num: 8", "num: 9")))
    with pytest.raises(StoreError, match=r"holds another definition of sweep 'small': sweep.step_size: 8 values .* -> 9 values"):
        runner.run_sweep(other, str(url), resume=True)
    assert tree_digest(url) == before


def test_refusals_name_arguments_and_carry_the_builtin_error_meaning(tmp_path, plan) -> None:
    with pytest.raises(FileNotFoundError, match="no results store at") as missing:
        store.read_attributes(str(tmp_path / "missing.zarr"))
    assert isinstance(missing.value, StoreError)
    url = str(tmp_path / "e.zarr")
    runner.run_sweep(plan, url)
    with pytest.raises(FileExistsError) as existing:
        runner.run_sweep(plan, url)
    assert isinstance(existing.value, StoreError) and "--" not in str(existing.value)
    with pytest.raises(StoreError, match="resume=True and overwrite=True contradict each other"):
        runner.run_sweep(plan, url, resume=True, overwrite=True)


def test_overwrite_refuses_a_directory_that_is_not_a_diffsweep_store(tmp_path, plan) -> None:
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    with pytest.raises(StoreError, match=r"not a zarr store|not a diffsweep results store"):
        runner.run_sweep(plan, str(precious), overwrite=True)
    assert (precious / "chapter1.tex").read_text() == "years of work"


def test_resume_computes_only_missing_blocks_and_matches_a_clean_run(tmp_path, plan) -> None:
    clean, partial = str(tmp_path / "clean.zarr"), str(tmp_path / "partial.zarr")
    runner.run_sweep(plan, clean)
    todo = runner.prepare_store(partial, plan)
    sink = store.BlockWriter(partial)
    InProcessExecutor().execute(plan, todo[:4], sink)
    assert store.completion(partial) == (4, 6)
    summary = runner.run_sweep(plan, partial, resume=True)
    assert (summary.blocks_computed, summary.blocks_skipped) == (2, 4)
    xr.testing.assert_identical(xr.open_zarr(clean).load().drop_attrs(), xr.open_zarr(partial).load().drop_attrs())


def test_fsspec_memory_url(plan) -> None:
    url = "memory://diffsweep-test/m.zarr"
    runner.run_sweep(plan, url)
    assert store.completion(url) == (6, 6)
    ds = xr.open_zarr(url)
    assert int((ds.status >= 0).sum()) == 6 * 8 * 3
