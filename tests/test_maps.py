"""Stability maps and recommendations against theory, on results computed by the real pipeline.

Every store here is made by ``pipeline.runner.run_sweep`` (in process) from a sweep
definition, so the numbers come from the real kernels and the real classification.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import compute_store

from pipeline import maps
from pipeline.errors import MapError, StoreError
from pipeline.numerics import stability_limit
from pipeline.sweep import RunModel

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


def test_run_model_reads_attributes_and_selected_coordinates(implicit: xr.Dataset) -> None:
    model = maps.run_model(implicit.sel(scheme="crank-nicolson"))
    assert model == RunModel(scheme="crank-nicolson", dims=1, cells=CELLS[1], length=1.0,
                             boundary="neumann", initial="random", seed=3)
    assert model.dx == 1.0 / CELLS[1] and model.stability_limit is None
    with pytest.raises(MapError, match="select one value of scheme first") as caught:
        maps.run_model(implicit)
    assert isinstance(caught.value, ValueError)


def test_maps_dataset_round_trips(implicit: xr.Dataset, tmp_path: Path) -> None:
    dataset = maps.maps_dataset(implicit)
    for name in ("status", "max_stable_step_size", "theory_max_step_size", "steps_to_equilibrium",
                 "predicted_steps_to_equilibrium", "cheapest_step_size", "min_steps_to_equilibrium"):
        assert name in dataset
    assert dataset.attrs["sweep_hash"] == implicit.attrs["sweep_hash"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the suite ignores zarr's consolidated-metadata note; save_maps must too
        maps.save_maps(dataset, tmp_path / "maps.zarr")
    reopened = xr.open_zarr(tmp_path / "maps.zarr").load()
    xr.testing.assert_identical(reopened, dataset)


def test_a_sweep_over_cells_gets_maps_and_recommendations_per_grid(tmp_path: Path) -> None:
    # the von Neumann bound on r depends on the scheme and dims only; on dt, on dx too
    text = sweep_text(1).replace(f"cells: {CELLS[1]}, ", "").replace("sweep:\n", "sweep:\n  cells: [8, 16]\n")
    results = run(text, tmp_path / "cells.zarr")
    assert "cells" in results["status"].dims
    assert float(maps.theory_max_cfl(results)) == 0.5
    dataset = maps.maps_dataset(results)
    for cells in (8, 16):
        expected = 0.5 * (1.0 / cells) ** 2 / np.asarray(COEFFICIENTS)
        np.testing.assert_allclose(dataset["theory_max_step_size"].sel(cells=cells).values, expected, rtol=1e-12)
    records = maps.recommend(results)
    assert {(r["cells"], r["coefficient"]) for r in records} == {(c, d) for c in (8, 16) for d in COEFFICIENTS}
    for record in records:
        assert record["theory_max_cfl"] == 0.5
        assert record["theory_max_step_size"] == pytest.approx(0.5 / record["cells"] ** 2 / record["coefficient"], rel=1e-12)


def test_incomplete_store_maps_what_exists(tmp_path: Path) -> None:
    text = sweep_text(1).replace("criteria:", "chunks: {coefficient: 1}\nunits: {length: m, time: s}\ncriteria:")
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


def test_unknown_axis_is_refused_in_terms_of_the_arguments(implicit: xr.Dataset) -> None:
    with pytest.raises(maps.AxisError, match=r"unknown axis 'speed' for `x`; the axes of this sweep are scheme, ") as caught:
        maps.resolve_axes(implicit, x="speed")
    assert caught.value.naming(lambda name: "--" + name).startswith("unknown axis 'speed' for --x;")
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, MapError)
    with pytest.raises(maps.AxisError, match="`x` and `y` are both 'coefficient'"):
        maps.resolve_axes(implicit, x="coefficient", y="coefficient")
    with pytest.raises(maps.AxisError, match="`x` 'cfl' and `y` 'step_size' both run along 'step_size'"):
        maps.resolve_axes(implicit, x="cfl", y="step_size")
    with pytest.raises(maps.AxisError, match="unknown axis 'cfl' for `facet`; the sweep axes are"):
        maps.resolve_axes(implicit, facet="cfl")
    default = maps.resolve_axes(implicit)
    assert (default.x, default.y, default.facet, default.panels) == ("step_size", "coefficient", "steps", ("scheme",))
    swapped = maps.resolve_axes(implicit, x="coefficient")
    assert (swapped.x, swapped.y, swapped.facet) == ("coefficient", "step_size", "steps")


# -- the public API's own examples ------------------------------------------------------------


@pytest.mark.parametrize("module", ["pipeline.maps", "pipeline.plotting", "pipeline.report", "pipeline.outputs"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    failed, attempted = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert attempted > 0 and failed == 0


# -- axes, summaries and the cheapest setting ------------------------------------------------


def test_any_stored_coordinate_is_an_axis(ftcs: xr.Dataset) -> None:
    axes = maps.resolve_axes(ftcs, x="cfl")
    assert (axes.x, axes.x_dim, axes.y, axes.y_dim, axes.facet) == ("cfl", "step_size", "coefficient", "coefficient", "steps")
    status = maps.stability_map(ftcs, x="cfl", facet="steps")
    assert status.dims == ("steps", "coefficient", "step_size")
    assert status["cfl"].dims == ("coefficient", "step_size")  # drawn on its 2-D grid
    time = maps.resolve_axes(ftcs, x="step_size", y="time")
    assert (time.y_dim, time.facet, time.panels) == ("steps", "coefficient", ())


def test_setting_status_is_the_worst_unstable_class_else_the_last(ftcs: xr.Dataset) -> None:
    status = ftcs["status"].transpose("coefficient", "step_size", "steps").values
    summary = maps.setting_status(ftcs).transpose("coefficient", "step_size").values
    for index in np.ndindex(summary.shape):
        classes = list(status[index])
        unstable = [c for c in classes if c >= 2]
        assert summary[index] == (max(unstable) if unstable else classes[-1]), (index, classes)
    assert {0, 3} <= set(np.unique(summary))  # both outcomes occur, so the check above means something
    flat = maps.stability_map(ftcs, facet=None)
    assert flat.dims == ("coefficient", "step_size")


def test_cheapest_setting_is_the_fewest_steps_then_the_largest_step_size(ftcs: xr.Dataset) -> None:
    """Against a direct search over the stored classes and exact first passages, one
    coefficient at a time; the exact step lies after the last checkpoint not at equilibrium
    and at or before the first one at equilibrium."""
    status = ftcs["status"].transpose("coefficient", "step_size", "steps").values
    first = ftcs["steps_to_equilibrium"].transpose("coefficient", "step_size").values
    sizes = ftcs["step_size"].values
    cheapest = maps.cheapest_setting(ftcs).compute()
    for i, coefficient in enumerate(ftcs["coefficient"].values):
        candidates = []
        for j, size in enumerate(sizes):
            classes = status[i, j]
            if (classes >= 0).all() and (classes <= 1).all() and (classes == 0).any():
                on_grid = int(np.argmax(classes == 0))
                assert (STEPS[on_grid - 1] if on_grid else 0) < first[i, j] <= STEPS[on_grid]
                candidates.append((int(first[i, j]), -size))
        steps, negative_size = min(candidates)
        here = cheapest.sel(coefficient=coefficient)
        assert int(here["min_steps_to_equilibrium"]) == steps
        assert float(here["cheapest_step_size"]) == -negative_size
        dx = 1.0 / CELLS[int(ftcs.attrs["dims"])]
        assert float(here["cheapest_cfl"]) == pytest.approx(coefficient * -negative_size / dx**2)


# -- the categorical plot helper on plain xarray data ------------------------------------------


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure()
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def test_plot_status_colours_every_cell_by_its_class_on_a_plain_open_zarr(tmp_path: Path) -> None:
    from matplotlib.colors import to_rgba

    from pipeline.plotting import CLASS_COLOURS

    text = sweep_text(1).replace("criteria:", "chunks: {coefficient: 1}\nunits: {length: m, time: s}\ncriteria:")
    store = compute_store(text, tmp_path / "partial.zarr", blocks=2)
    plain = xr.open_zarr(store)  # no diffsweep in between: int8 with -1, or NaN through a _FillValue
    status = plain.status.sel(steps=1000)
    figure, ax = _figure()
    mesh = maps.plot_status(status, ax=ax)
    codes = status.transpose("coefficient", "step_size").values.astype(float)
    codes = np.where(np.isnan(codes), -1, codes).astype(int)
    expected = np.array([[to_rgba(CLASS_COLOURS[c]) for c in row] for row in codes])
    drawn = mesh.to_rgba(mesh.get_array()).reshape(expected.shape)
    np.testing.assert_allclose(drawn, expected, atol=1e-6)
    # the same classes decoded through a _FillValue (float, NaN where not computed)
    decoded = maps.plot_status(status.where(status >= 0), ax=_figure()[1], colorbar=False)
    np.testing.assert_allclose(decoded.to_rgba(decoded.get_array()).reshape(expected.shape), expected, atol=1e-6)
    names = [label.get_text() for label in figure.axes[-1].get_yticklabels()]
    present = {-1: "not computed", 0: "equilibrium", 1: "transient", 2: "oscillating", 3: "divergent"}
    assert names == [present[c] for c in (0, 1, 2, 3, -1) if c in codes]
    assert "not computed" in names and "oscillating" not in names
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "step size Δt [s]"
    assert ax.get_ylabel() == "diffusion coefficient D [m2 s-1]"  # the sweep's units: block
    with pytest.raises(ValueError, match="two dimensions"):
        maps.plot_status(plain.status, ax=ax)  # three dimensions


def test_plot_status_draws_a_derived_coordinate_on_its_2d_grid(ftcs: xr.Dataset) -> None:
    _, ax = _figure()
    mesh = maps.plot_status(ftcs.status.sel(steps=3000), x="cfl", y="coefficient", ax=ax, colorbar=False)
    corners = mesh.get_coordinates()  # (ny + 1, nx + 1, 2) cell corners
    x_corners = corners[..., 0]
    # each row of cells (one coefficient) is shifted along the CFL axis by its coefficient
    ratio = x_corners[-1, 0] / x_corners[0, 0]
    assert ratio > 3 and ax.get_xscale() == "log"
    assert ax.get_xlabel() == "CFL number r = D·Δt/Δx²"  # units "1" left out


def _bound_points(ax) -> np.ndarray:
    """Vertices of the first contour drawn on ``ax``: the bound (the equilibrium line comes second)."""
    from matplotlib.contour import ContourSet

    bound = next(c for c in ax.get_children() if isinstance(c, ContourSet))
    return np.concatenate([p.vertices for p in bound.get_paths()])


def test_theory_line_sits_on_the_von_neumann_bound_whatever_the_axes(ftcs: xr.Dataset, tmp_path: Path) -> None:
    """The drawn bound satisfies D·Δt/Δx² = 1/(2d) (independent of the code's own formula)."""
    from pipeline import plotting

    dims = int(ftcs.attrs["dims"])
    dx = 1.0 / CELLS[dims]
    ds = ftcs.copy()
    for name in ds.coords:
        ds[name] = ds[name].compute()
    cases = {
        ("step_size", "coefficient"): lambda x, y: y * x / dx**2,
        ("cfl", "coefficient"): lambda x, y: x,
        ("coefficient", "step_size"): lambda x, y: x * y / dx**2,
    }
    for (x, y), cfl in cases.items():
        axes = maps.resolve_axes(ds, x=x, y=y, facet="steps")
        selection = {"steps": len(STEPS) - 1}
        _, ax = _figure()
        lines = plotting._draw(ax, ds, axes, ds.status.isel(selection), selection, [0, 1, 2, 3])
        assert plotting.BOUND_LABEL in lines, (x, y)
        points = _bound_points(ax)
        assert len(points) >= 10
        np.testing.assert_allclose(cfl(points[:, 0], points[:, 1]), 1 / (2 * dims), rtol=0.02, err_msg=f"{x}, {y}")


# -- colours that stay apart ------------------------------------------------------------------

#: Machado, Oliveira & Fernandes (2009) simulation matrices at full severity, on linear RGB
CVD = {
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]),
}


def _linear_rgb(colour: str) -> np.ndarray:
    from matplotlib.colors import to_rgb

    c = np.array(to_rgb(colour))
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _lab(linear: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of a linear sRGB colour."""
    to_xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = to_xyz @ np.clip(linear, 0, 1) / (to_xyz @ np.ones(3))
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_class_colours_stay_apart_in_greyscale_and_for_colour_blind_readers() -> None:
    from itertools import combinations

    from pipeline.plotting import CLASS_COLOURS

    lab = {code: _lab(_linear_rgb(colour)) for code, colour in CLASS_COLOURS.items()}
    # greyscale keeps only the lightness: every pair of classes at least 15 L* apart
    for a, b in combinations(lab, 2):
        assert abs(lab[a][0] - lab[b][0]) >= 15, (a, b, lab[a][0], lab[b][0])
    # red-green colour blindness: every pair still 30 ΔE*ab apart once simulated
    for name, matrix in CVD.items():
        seen = {code: _lab(matrix @ _linear_rgb(colour)) for code, colour in CLASS_COLOURS.items()}
        for a, b in combinations(seen, 2):
            assert np.linalg.norm(seen[a] - seen[b]) >= 30, (name, a, b)
    # and the stable classes are the cool ones, the unstable ones warm (blue above red)
    for code in (0, 1):
        assert lab[code][2] < 0  # b* < 0: blue
    for code in (2, 3):
        assert lab[code][1] > 0  # a* > 0: red/orange


def test_save_maps_replaces_only_a_maps_dataset(implicit: xr.Dataset, tmp_path: Path) -> None:
    dataset = maps.maps_dataset(implicit)
    target = tmp_path / "maps.zarr"
    maps.save_maps(dataset, target)
    with pytest.raises(StoreError, match="already exists; pass overwrite=True"):
        maps.save_maps(dataset, target)
    maps.save_maps(dataset.assign_attrs(note="second"), target, overwrite=True)
    assert xr.open_zarr(target).attrs["note"] == "second"

    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "thesis.txt").write_text("months of work")
    with pytest.raises(StoreError, match="not a diffsweep maps dataset; it is never replaced"):
        maps.save_maps(dataset, folder, overwrite=True)
    assert (folder / "thesis.txt").read_text() == "months of work"

    results = tmp_path / "results.zarr"
    compute_store(sweep_text(1), results)
    with pytest.raises(StoreError, match="is a diffsweep results store; it is never replaced"):
        maps.save_maps(dataset, results, overwrite=True)
    assert maps.open_results(str(results)).attrs["sweep_hash"]
