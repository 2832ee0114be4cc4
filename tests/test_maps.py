"""Stability maps and recommendations against theory, on results computed by the real pipeline.

Every store here is made by ``pipeline.runner.run_sweep`` (in process) from a sweep
definition, so the numbers come from the real kernels and the real classification.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import compute_store

from pipeline import maps
from pipeline.errors import MapError, StoreError
from pipeline.numerics import stability_limit

CELLS = {1: 32, 2: 16, 3: 12}
COEFFICIENTS = [0.5, 1.0, 2.0]
#: step counts: fine enough to place equilibrium within one grid value; 3000 steps let
#: any mode amplified 4 % per step blow up
STEPS = [10, 20, 50, 100, 200, 300, 500, 700, 1000, 1500, 2000, 3000]


def step_sizes(dims: int) -> list[float]:
    """A fine geometric step-size axis around every coefficient's bound Δx²/(2dD).

    The coefficients are powers of two apart, and the grid steps by 2^(1/8) with an
    offset of half a step, so each bound sits 4.4 % away from the grid values on either
    side (a grid value a hair above the bound would be stable: the highest mode of a
    finite grid has eigenvalue 4d cos²(π/2N), not 4d).
    """
    dx = 1.0 / CELLS[dims]
    bound = dx**2 / (2 * dims * 1.0)
    return [bound * 2 ** (k / 8 + 1 / 16) for k in range(-14, 12)]


def sweep_text(dims: int, scheme: str = "ftcs", *, name: str | None = None) -> str:
    sizes = ", ".join(repr(s) for s in step_sizes(dims))
    scheme_line = f"scheme: {scheme}" if "[" not in scheme else ""
    sweep_scheme = f"  scheme: {scheme}\n" if "[" in scheme else ""
    return f"""\
name: {name or f"{scheme.strip('[]').replace(', ', '-')}-{dims}d-test"}
model: {{{scheme_line + ", " if scheme_line else ""}dims: {dims}, cells: {CELLS[dims]}, length: 1.0, boundary: neumann, initial: random, seed: 3}}
sweep:
{sweep_scheme}  coefficient: {COEFFICIENTS}
  step_size: [{sizes}]
  steps: {STEPS}
criteria: {{tolerance: 1.0e-3, divergence: 1.0e3}}
"""


def run(text: str, path: Path, *, blocks: int | None = None) -> xr.Dataset:
    """Compute ``text`` into a store at ``path`` (only the first ``blocks`` blocks if given)."""
    return maps.open_results(compute_store(text, path, blocks=blocks))


@pytest.fixture(scope="module", params=[1, 2, 3], ids=["1d", "2d", "3d"])
def ftcs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    dims = request.param
    return run(sweep_text(dims), tmp_path_factory.mktemp(f"ftcs{dims}") / "results.zarr")


@pytest.fixture(scope="module")
def implicit(tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    text = sweep_text(1, "[backward-euler, crank-nicolson]")
    return run(text, tmp_path_factory.mktemp("implicit") / "results.zarr")


def test_ftcs_max_stable_step_size_is_the_largest_grid_value_below_the_bound(ftcs: xr.Dataset) -> None:
    dims = int(ftcs.attrs["dims"])
    dx = 1.0 / CELLS[dims]
    grid = np.array(step_sizes(dims))
    records = maps.recommend(ftcs)
    assert [r["coefficient"] for r in records] == COEFFICIENTS
    for record in records:
        bound = dx**2 / (2 * dims * record["coefficient"])
        assert record["theory_max_step_size"] == pytest.approx(bound, rel=1e-12)
        assert record["theory_max_cfl"] == pytest.approx(stability_limit("ftcs", dims))
        assert record["max_stable_step_size"] == pytest.approx(grid[grid <= bound].max(), rel=1e-12)
        assert record["first_unstable_step_size"] == pytest.approx(grid[grid > bound].min(), rel=1e-12)
        assert record["max_stable_cfl"] <= stability_limit("ftcs", dims)
        assert 0 < record["stable_fraction"] < 1
        assert record["computed_fraction"] == 1.0
    boundary = maps.stability_boundary(ftcs).compute()
    assert (boundary["stable_above_boundary"] == 0).all()


def test_min_steps_to_equilibrium_agrees_with_the_slowest_mode_prediction(ftcs: xr.Dataset) -> None:
    grid = np.array(STEPS, dtype=float)

    def index(value: float) -> int:
        return len(grid) if not np.isfinite(value) else int(np.searchsorted(grid, value, side="left"))

    for record in maps.recommend(ftcs):
        assert record["cheapest"] is not None, record
        assert record["cheapest"]["steps"] == record["min_steps_to_equilibrium"]
        assert record["cheapest"]["step_size"] == record["max_stable_step_size"]  # fewest steps at the largest stable Δt
        observed, predicted = record["min_steps_to_equilibrium"], record["predicted_steps_to_equilibrium"]
        assert abs(index(observed) - index(predicted)) <= 1, (observed, predicted)

    # and the whole equilibration boundary, wherever the prediction falls on the grid
    equilibration = maps.equilibration_boundary(ftcs).compute()
    predicted = equilibration["predicted_steps_on_grid"].values
    observed = equilibration["steps_to_equilibrium"].values
    stable = equilibration["stable"].values == 1
    checked = stable & np.isfinite(predicted)
    assert checked.sum() >= 10
    for o, p in zip(observed[checked], predicted[checked], strict=True):
        assert abs(index(o) - index(p)) <= 1, (o, p)


def test_implicit_schemes_report_every_step_size_stable(implicit: xr.Dataset) -> None:
    largest = max(step_sizes(1))
    records = maps.recommend(implicit)
    assert {r["scheme"] for r in records} == {"backward-euler", "crank-nicolson"}
    assert len(records) == 2 * len(COEFFICIENTS)
    for record in records:
        assert record["theory_max_step_size"] is None
        assert record["theory_max_cfl"] is None
        assert record["max_stable_step_size"] == pytest.approx(largest)
        assert record["first_unstable_step_size"] is None
        assert record["stable_fraction"] == 1.0
        assert record["cheapest"]["step_size"] == pytest.approx(largest)


def test_stability_map_orders_axes_and_names_classes(ftcs: xr.Dataset) -> None:
    status = maps.stability_map(ftcs)
    assert status.dims == ("steps", "coefficient", "step_size")
    assert status.attrs["map_x"] == "step_size"
    names = maps.status_names(ftcs).compute()
    assert set(np.unique(names.values)) <= {"equilibrium", "transient", "oscillating", "divergent"}
    assert (names.values == "divergent").any() and (names.values == "equilibrium").any()
    swapped = maps.stability_map(ftcs, x="coefficient", y="steps", facet="step_size")
    assert swapped.dims == ("step_size", "steps", "coefficient")


def test_model_value_reads_attributes_and_coordinates(implicit: xr.Dataset) -> None:
    assert maps.model_value(implicit, "dims") == 1
    assert maps.model_value(implicit, "boundary") == "neumann"
    assert list(maps.model_value(implicit, "scheme").values) == ["backward-euler", "crank-nicolson"]


def test_maps_dataset_round_trips(implicit: xr.Dataset, tmp_path: Path) -> None:
    dataset = maps.maps_dataset(implicit)
    for name in ("status", "max_stable_step_size", "theory_max_step_size", "steps_to_equilibrium",
                 "predicted_steps_to_equilibrium", "cheapest_step_size", "min_steps_to_equilibrium"):
        assert name in dataset
    assert dataset.attrs["sweep_hash"] == implicit.attrs["sweep_hash"]
    maps.save_maps(dataset, tmp_path / "maps.zarr")
    reopened = xr.open_zarr(tmp_path / "maps.zarr").load()
    xr.testing.assert_identical(reopened, dataset)


def test_incomplete_store_maps_what_exists(tmp_path: Path) -> None:
    text = sweep_text(1).replace("criteria:", "chunks: {coefficient: 1}\ncriteria:")
    results = run(text, tmp_path / "partial.zarr", blocks=1)
    computed, total = maps.computed_runs(results)
    assert 0 < computed < total
    records = maps.recommend(results)
    assert records[0]["computed_fraction"] == 1.0 and records[0]["max_stable_step_size"] is not None
    assert all(r["computed_fraction"] == 0.0 and r["max_stable_step_size"] is None for r in records[1:])
    assert (maps.maps_dataset(results)["status"] == -1).any()


def test_status_fill_value_decoded_as_nan_is_not_computed(implicit: xr.Dataset) -> None:
    status = implicit["status"].astype(float).where(implicit["coefficient"] != 2.0)
    decoded = implicit.assign(status=status)
    assert maps.computed_runs(decoded) == (2 * len(step_sizes(1)) * 2, 2 * len(step_sizes(1)) * 3)
    assert (maps.status_names(decoded).sel(coefficient=2.0) == "not computed").all()


def test_open_results_refuses_what_is_not_a_results_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no results store"):
        maps.open_results(str(tmp_path / "missing.zarr"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    with pytest.raises(StoreError):
        maps.open_results(str(tmp_path / "plain"))
    maps.save_maps(xr.Dataset({"a": ("x", [1.0, 2.0])}), tmp_path / "other.zarr")
    with pytest.raises(StoreError, match="not a diffsweep results store"):
        maps.open_results(str(tmp_path / "other.zarr"))


def test_unknown_axis_is_refused(implicit: xr.Dataset) -> None:
    with pytest.raises(MapError, match=r"unknown axis 'speed' for --x; the axes of this sweep are scheme, "):
        maps.resolve_axes(implicit, x="speed")
    with pytest.raises(MapError, match="both 'coefficient'"):
        maps.resolve_axes(implicit, x="coefficient", y="coefficient")
    assert maps.resolve_axes(implicit) == ("step_size", "coefficient", "steps")
    assert maps.resolve_axes(implicit, x="coefficient") == ("coefficient", "step_size", "steps")
