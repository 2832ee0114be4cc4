"""The results store (pipeline.store, pipeline.runner) on real zarr stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import SMALL_SWEEP, compute_store, fresh_python, tree_digest

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
    assert set(ds.data_vars) == {
        "distance", "mass_error", "overshoot", "growth", "error", "status", "field",
        "steps_to_equilibrium", "steps_to_divergence",
    }  # fmt: skip
    # nothing computed: every status is masked by its CF _FillValue (-1)
    assert ds.status.isnull().all() and ds.status.encoding["_FillValue"] == -1
    assert ds.status.encoding["dtype"] == np.int8
    for name in ("steps_to_equilibrium", "steps_to_divergence"):  # per run: no steps dimension, masked too
        assert ds[name].dims == ("coefficient", "step_size") and ds[name].encoding["dtype"] == np.int64
        assert ds[name].isnull().all() and ds[name].encoding["_FillValue"] == -1
        assert ds[name].attrs["not_reached"] == 1001
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


#: what an analyst does with a store in a process that never imported diffsweep
PLAIN_XARRAY_STATUS = """
import json, xarray as xr
ds = xr.open_zarr({path!r})
raw = xr.open_zarr({path!r}, mask_and_scale=False)
print(json.dumps({{
    "dtype": str(ds.status.dtype),
    "stable": int((ds.status <= 1).sum()),
    "computed": int(ds.status.notnull().sum()),
    "raw_dtype": str(raw.status.dtype),
    "raw_missing": int((raw.status == -1).sum()),
    "ints": ds.status.fillna(-1).astype("int8").values.ravel().tolist(),
    "flag_values": ds.status.attrs["flag_values"],
    "flag_meanings": ds.status.attrs["flag_meanings"],
}}))
"""


def test_plain_xarray_masks_runs_not_computed_so_status_counts_only_computed_runs(tmp_path) -> None:
    url = compute_store(SMALL_SWEEP, tmp_path / "half.zarr", blocks=2)  # 2 of 6 blocks, as an interrupted run
    raw = np.asarray(zarr.open_group(url, mode="r")["status"][...])  # the bytes on disk, no decoding
    assert raw.dtype == np.int8 and (raw == -1).any() and (raw >= 0).any()
    opened = fresh_python(PLAIN_XARRAY_STATUS.format(path=url))
    assert opened.returncode == 0, opened.stderr
    info = json.loads(opened.stdout)
    assert info["dtype"] == "float32"  # xarray's decoding of int8 with a _FillValue: NaN where masked
    assert info["stable"] == np.count_nonzero((raw >= 0) & (raw <= 1))  # not the -1s as well
    assert info["computed"] == np.count_nonzero(raw >= 0)
    assert info["raw_dtype"] == "int8" and info["raw_missing"] == np.count_nonzero(raw == -1)
    assert info["ints"] == raw.ravel().tolist()  # the README's idiom gets the ints back
    # flag_values: the JSON of zarr attributes has no int8, so they come back as plain ints
    assert info["flag_values"] == [0, 1, 2, 3]
    assert info["flag_meanings"].split() == ["equilibrium", "transient", "oscillating", "divergent"]


def test_status_flags_are_typed_like_the_variable_and_understood_by_cf_xarray(tmp_path, plan) -> None:
    import cf_xarray  # noqa: F401  (the .cf accessor; in the [test] extra)
    status = plan.layout.variable("status")
    flags = status.attrs["flag_values"]
    assert isinstance(flags, np.ndarray) and flags.dtype == np.dtype(status.dtype)
    assert len(flags) == len(status.attrs["flag_meanings"].split())
    assert status.fill_value not in flags  # the _FillValue is not a class
    url = compute_store(SMALL_SWEEP, tmp_path / "full.zarr")
    raw = np.asarray(zarr.open_group(url, mode="r")["status"][...])
    ds = xr.open_zarr(url)
    assert ds.status.cf.is_flag_variable
    for code, name in enumerate(["equilibrium", "transient", "oscillating", "divergent"]):
        assert int((ds.status.cf == name).sum()) == np.count_nonzero(raw == code), name
    # re-encoded to netCDF the variable is a byte again, with its _FillValue
    ds.status.to_netcdf(tmp_path / "status.nc", engine="scipy")
    import scipy.io

    with scipy.io.netcdf_file(tmp_path / "status.nc", mmap=False) as nc:
        variable = nc.variables["status"]
        assert variable.typecode() == "b" and int(variable._FillValue) == -1
        np.testing.assert_array_equal(variable.data, raw)


#: a physical study: lengths in millimetres, times in seconds, a swept string axis, CFL numbers, fields
PHYSICAL_SWEEP = """\
name: physical
model: {dims: 2, cells: 8, length: 2.0}
sweep:
  scheme: [ftcs, crank-nicolson]
  coefficient: [1.0e-3, 4.0e-3]
  cfl: [0.1, 0.3]
  steps: [5, 20]
output: {fields: final}
units: {length: mm, time: s}
"""


@pytest.mark.parametrize("with_units", [True, False], ids=["mm-s", "nondimensional"])
def test_pint_reads_every_units_attribute_of_a_store_opened_by_plain_xarray(tmp_path, with_units) -> None:
    import cf_xarray.units  # UDUNITS-style unit strings ("mm2 s-1") for pint
    import pint_xarray  # noqa: F401  (the .pint accessor)

    text = PHYSICAL_SWEEP if with_units else PHYSICAL_SWEEP.replace("units: {length: mm, time: s}\n", "")
    url = compute_store(text, tmp_path / "units.zarr")
    ds = xr.open_zarr(url)
    registry = cf_xarray.units.units
    quantified = ds.pint.quantify(unit_registry=registry)  # raises on any unit pint cannot parse
    length, time = (registry.mm, registry.s) if with_units else (registry.dimensionless,) * 2
    expected = {
        "coefficient": length**2 / time, "step_size": time, "time": time, "x": length, "y": length,
        "cfl": registry.dimensionless, "steps": registry.dimensionless, "status": registry.dimensionless,
    }
    for name in [*ds.data_vars, *ds.coords]:
        units = registry.Unit(ds[name].attrs["units"])
        assert units == expected.get(str(name), registry.dimensionless), (name, units)
    # the units are consistent: D dt / dx^2 is the stored (dimensionless) CFL number
    dx = quantified.x[1] - quantified.x[0]
    cfl = (quantified.coefficient * quantified.step_size / dx**2).pint.to("dimensionless").pint.dequantify()
    expected_cfl = ds.cfl.broadcast_like(ds.step_size).transpose(*ds.step_size.dims)
    np.testing.assert_allclose(cfl.transpose(*ds.step_size.dims).values, expected_cfl.values, rtol=1e-12)
    # and so do the maps computed from it (step sizes in the store's time unit)
    from pipeline import maps

    summary = maps.maps_dataset(maps.open_results(url))
    summary.pint.quantify(unit_registry=registry)
    assert registry.Unit(summary.max_stable_step_size.attrs["units"]) == time
    assert registry.Unit(summary.theory_max_step_size.attrs["units"]) == time
    assert registry.Unit(summary.coefficient.attrs["units"]) == length**2 / time
