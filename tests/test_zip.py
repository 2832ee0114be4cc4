"""Zipped axes (``zip:``): coefficient and the step axis varied together along ``case``."""

from __future__ import annotations

from pathlib import Path

import json

import numpy as np
import pytest
import xarray as xr
import yaml
import zarr
from click.testing import CliRunner
from conftest import compute_store, fresh_python

from pipeline import maps, runner
from pipeline.cli.main import cli
from pipeline.errors import SweepError
from pipeline.planning import plan as make_plan
from pipeline.sweep import CASE, parse_sweep

COEFFICIENTS = [0.05, 0.2, 0.5, 1.0, 2.0]
#: with dx = 1/16 these are CFL numbers 0.10, 0.31, 0.45, 0.56, 0.92: FTCS in 1-D is stable
#: up to about 1/2, so the zip holds stable and unstable cases
STEP_SIZES = [8.0e-3, 6.0e-3, 3.5e-3, 2.2e-3, 1.8e-3]
CFLS = [0.1, 0.3, 0.45, 0.55, 0.9]


def product_text(step_axis: str) -> str:
    steps = STEP_SIZES if step_axis == "step_size" else CFLS
    return f"""\
name: product
model: {{cells: 16, initial: gaussian}}
sweep:
  scheme: [ftcs, crank-nicolson]
  coefficient: {COEFFICIENTS}
  {step_axis}: {steps}
  steps: [5, 50, 500]
output: {{fields: final}}
units: {{length: m, time: s}}
"""


def zipped_text(step_axis: str) -> str:
    steps = STEP_SIZES if step_axis == "step_size" else CFLS
    return f"""\
name: zipped
model: {{cells: 16, initial: gaussian}}
sweep:
  scheme: [ftcs, crank-nicolson]
  zip:
    coefficient: {COEFFICIENTS}
    {step_axis}: {steps}
  steps: [5, 50, 500]
chunks: {{case: 2}}
output: {{fields: final}}
units: {{length: m, time: s}}
"""


def test_a_zip_is_one_case_dimension_carrying_both_axes() -> None:
    sweep = parse_sweep(zipped_text("step_size"))
    assert sweep.axis_names == ("scheme", CASE, "steps") and sweep.shape == (2, 5, 3)
    assert sweep.zipped_names == ("coefficient", "step_size") and sweep.n_runs == 10
    assert sweep.axis("coefficient").values == tuple(COEFFICIENTS)
    assert sweep.axis(CASE).values == tuple(range(5))
    again = parse_sweep(yaml.safe_dump(sweep.to_dict()))
    assert again == sweep and again.sha256 == sweep.sha256
    assert sweep.sha256 != parse_sweep(product_text("step_size").replace("product", "zipped")).sha256
    # blocks run along case (two cases each, the last one short), one scheme per block
    plan = make_plan(sweep, parallelism=1)
    assert plan.chunks == (1, 2, 3) and plan.block_grid == (2, 3) and plan.runs_per_task == 2
    assert [block.shape for block in plan.blocks()][:3] == [(1, 2, 3), (1, 2, 3), (1, 1, 3)]
    coordinates = {c.name: c.dims for c in plan.layout.coordinates_layout}
    assert coordinates == {
        "scheme": ("scheme",), CASE: (CASE,), "steps": ("steps",), "coefficient": (CASE,),
        "step_size": (CASE,), "cfl": (CASE,), "time": (CASE, "steps"), "x": ("x",),
    }
    # cfl is derived per case, not over a product: D dt / dx^2 with dx = 1/16
    cfl = plan.layout.coordinates()["cfl"].values
    np.testing.assert_allclose(cfl, np.array(COEFFICIENTS) * np.array(STEP_SIZES) * 16**2, rtol=1e-15)
    # theory (FTCS bound 1/2, Crank-Nicolson none): the unstable share counts cases, not a product
    assert plan.unstable_fraction == np.count_nonzero(cfl > 0.5) / 10


def test_an_override_of_a_zipped_axis_is_checked_like_the_file() -> None:
    text = zipped_text("cfl")
    shorter = parse_sweep(text, overrides=["sweep.zip.cfl=[0.1, 0.2, 0.3, 0.4, 0.6]"])
    assert shorter.axis("cfl").values == (0.1, 0.2, 0.3, 0.4, 0.6)
    with pytest.raises(SweepError, match=r"override 'sweep.zip.cfl=\[0.1\]': sweep.zip.cfl: Expected 5 values"):
        parse_sweep(text, overrides=["sweep.zip.cfl=[0.1]"])


@pytest.mark.parametrize("step_axis", ["step_size", "cfl"])
def test_a_zipped_store_holds_the_diagonal_of_the_product_store(tmp_path, step_axis: str) -> None:
    product = xr.open_zarr(compute_store(product_text(step_axis), tmp_path / "product.zarr")).load()
    zipped = xr.open_zarr(compute_store(zipped_text(step_axis), tmp_path / "zipped.zarr")).load()
    diagonal = xr.DataArray(np.arange(len(COEFFICIENTS)), dims=CASE)
    expected = product.isel(coefficient=diagonal, **{step_axis: diagonal})
    assert dict(zipped.sizes) == dict(expected.sizes)
    for name in [*zipped.data_vars, "coefficient", "step_size", "cfl", "time"]:
        got, want = zipped[name], expected[name].transpose(*zipped[name].dims)
        assert got.dims == want.dims, name
        np.testing.assert_array_equal(got.values, want.values, err_msg=name)  # the same runs, bit for bit
        assert got.attrs == want.attrs, name
    assert zipped.status.notnull().all() and (zipped.status == 3).any() and (zipped.status <= 1).any()


#: selecting one case of a zipped store by either of its coordinates, in plain xarray
SELECT_IN_FRESH_PROCESS = """
import json, sys
import xarray as xr
ds = xr.open_zarr({path!r})
coefficient, step_size = {coefficient!r}, {step_size!r}
picks = {{
    "swap_dims": ds.swap_dims(case="coefficient").sel(coefficient=coefficient),
    "set_xindex": ds.set_xindex("step_size").sel(step_size=step_size),
    "multiindex": ds.set_xindex(["coefficient", "step_size"]).sel(coefficient=coefficient, step_size=step_size),
    "where": ds.where((ds.step_size == step_size).compute(), drop=True).squeeze("case"),
}}
print(json.dumps({{
    "leaked": sorted(m for m in sys.modules if m == "pipeline" or m.startswith("pipeline.")),
    "dims": list(ds.status.dims),
    "picked": {{name: [pick.status.values.tolist(), float(pick.coefficient), float(pick.step_size)]
               for name, pick in picks.items()}},
}}))
"""


def test_plain_xarray_selects_a_case_by_either_coordinate(tmp_path) -> None:
    text = zipped_text("step_size").replace("  scheme: [ftcs, crank-nicolson]\n", "").replace(
        "{cells: 16,", "{scheme: ftcs, cells: 16,"
    )
    url = compute_store(text, tmp_path / "zipped.zarr")
    raw = np.asarray(zarr.open_group(url, mode="r")["status"][...])  # (case, steps)
    case = 3
    opened = fresh_python(
        SELECT_IN_FRESH_PROCESS.format(path=url, coefficient=COEFFICIENTS[case], step_size=STEP_SIZES[case])
    )
    assert opened.returncode == 0, opened.stderr
    info = json.loads(opened.stdout)
    assert info["leaked"] == [] and info["dims"] == [CASE, "steps"]
    for name, (status, coefficient, step_size) in info["picked"].items():
        assert status == raw[case].tolist(), name
        assert (coefficient, step_size) == (COEFFICIENTS[case], STEP_SIZES[case]), name


def test_a_zipped_store_resumes_to_the_same_store(tmp_path) -> None:
    text = zipped_text("cfl")
    whole = compute_store(text, tmp_path / "whole.zarr")
    partial = compute_store(text, tmp_path / "partial.zarr", blocks=2)
    assert xr.open_zarr(partial).status.isnull().any()
    runner.run_sweep(make_plan(parse_sweep(text), parallelism=1), partial, resume=True)
    xr.testing.assert_identical(xr.open_zarr(whole).load().drop_attrs(), xr.open_zarr(partial).load().drop_attrs())


def test_maps_and_recommend_refuse_a_zipped_store_in_one_line_and_status_reads_it(tmp_path) -> None:
    url = compute_store(zipped_text("step_size"), tmp_path / "zipped.zarr")
    results = maps.open_results(url)
    assert maps.computed_runs(results) == (10, 10)
    assert set(np.unique(maps.status_names(results).values)) <= {"equilibrium", "transient", "oscillating", "divergent"}
    refusal = "these results vary coefficient and step_size together along 'case' (a zip: sweep)"
    with pytest.raises(maps.MapError, match=refusal.replace("(", r"\(").replace(")", r"\)")):
        maps.recommend(results)
    cli_runner = CliRunner()
    out = tmp_path / "maps"
    for args in (["map", url, "-o", str(out)], ["recommend", url, "--json"]):
        result = cli_runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and refusal in lines[0] and "Traceback" not in result.output
    assert not out.exists()
    # refine has no step-size column to search in a zip: one line, exit 2, the store untouched
    from conftest import tree_digest

    before = tree_digest(Path(url))
    result = cli_runner.invoke(cli, ["refine", url])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "zips coefficient and step_size into one dimension 'case'" in lines[0]
    assert tree_digest(Path(url)) == before
    # the categorical plot of a plain open_zarr: every case over the step counts
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure

    from pipeline.plotting import CLASS_COLOURS

    figure = Figure()
    FigureCanvasAgg(figure)
    ftcs = xr.open_zarr(url).status.sel(scheme="ftcs")
    mesh = maps.plot_status(ftcs, x="steps", y="coefficient", ax=figure.add_subplot(), colorbar=False)
    codes = ftcs.transpose(CASE, "steps").values.astype(int)
    expected = np.array([[to_rgba(CLASS_COLOURS[c]) for c in row] for row in codes])
    np.testing.assert_allclose(mesh.to_rgba(mesh.get_array()).reshape(expected.shape), expected, atol=1e-6)
    status = cli_runner.invoke(cli, ["status", url])
    assert status.exit_code == 0 and "6 / 6" in status.output
    plan = cli_runner.invoke(cli, ["plan", "-"], input=zipped_text("step_size"))
    assert "case=5" in plan.output and "(case: coefficient and step_size vary together)" in plan.output
