"""``diffsweep map`` and ``diffsweep recommend`` end to end, through the click group."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from conftest import compute_store, tree_digest
from PIL import Image

from pipeline import maps
from pipeline.cli.main import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: FTCS against Crank–Nicolson, 1-D, step sizes across FTCS's bound dx²/(2D) ≈ 2e-3/D
SCHEMES_SWEEP = """\
name: cli-schemes
description: FTCS vs Crank-Nicolson across the FTCS bound
model: {dims: 1, cells: 16, length: 1.0, boundary: neumann, initial: random, seed: 1}
sweep:
  scheme: [ftcs, crank-nicolson]
  coefficient: {geomspace: [0.25, 1.0], num: 3}
  step_size: {geomspace: [2.0e-4, 2.0e-2], num: 9}
  steps: [100, 1000]
chunks: {coefficient: 1}
"""

#: the CFL number as the step axis, dimension swept: the bound is r* = 1/(2d)
DIMS_SWEEP = """\
name: cli-dims
model: {scheme: ftcs, cells: 8, length: 1.0, boundary: periodic, initial: random, seed: 2}
sweep:
  dims: [1, 2, 3]
  coefficient: [0.1, 1.0]
  cfl: [0.1, 0.15, 0.2, 0.3, 0.45, 0.55]
  steps: [100, 1000]
"""


compute = compute_store


@pytest.fixture(scope="module")
def schemes_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return compute(SCHEMES_SWEEP, tmp_path_factory.mktemp("schemes") / "schemes.zarr")


@pytest.fixture(scope="module")
def dims_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return compute(DIMS_SWEEP, tmp_path_factory.mktemp("dims") / "dims.zarr")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def assert_png(path: Path, min_width: int = 400, min_height: int = 300) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as image:
        width, height = image.size
    assert min_width <= width <= 4000 and min_height <= height <= 3000, (path, image.size)


def test_map_writes_figures_table_dataset_and_a_self_contained_report(schemes_store: str, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    result = invoke("map", schemes_store, "-o", str(out), "--html")
    assert result.exit_code == 0, result.output
    assert "complete: 6 of 6 blocks" in result.stdout
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"overview.png", "boundary.png"} <= names
    # one map per (scheme, step count)
    assert {f"map_scheme-{s}_steps-{n}.png" for s in ("ftcs", "crank-nicolson") for n in (100, 1000)} <= names
    for png in pngs:
        assert_png(png)

    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("scheme,coefficient,max_stable_step_size")
    assert len(rows) == 1 + 2 * 3
    assert "largest Δt not divergent" in (out / "summary.txt").read_text()

    dataset = xr.open_zarr(out / "maps.zarr")
    assert {"status", "max_stable_step_size", "theory_max_step_size", "steps_to_equilibrium"} <= set(dataset)
    assert dataset.attrs["source_store"] == schemes_store

    page = (out / "report.html").read_text()
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    assert sum(r.startswith("data:image/png;base64,") for r in references) == len(pngs)
    for reference in references:
        if reference.startswith("data:"):
            continue
        assert "://" not in reference and not reference.startswith("/"), reference
        assert (out / reference).exists(), reference
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert "cli-schemes" in page and "Recommendations" in page and "sweep hash" in page


def test_recommend_prints_a_table_and_json_with_null_for_implicit_theory(schemes_store: str) -> None:
    table = invoke("recommend", schemes_store)
    assert table.exit_code == 0, table.output
    assert "largest Δt not divergent" in table.stdout and "none (implicit)" in table.stdout

    result = invoke("recommend", schemes_store, "--json")
    assert result.exit_code == 0, result.output
    assert '"theory_max_step_size": null' in result.stdout
    records = json.loads(result.stdout)
    assert len(records) == 6
    for record in records:
        assert {"scheme", "coefficient", "max_stable_step_size", "theory_max_step_size",
                "min_steps_to_equilibrium", "cheapest", "stable_fraction"} <= set(record)
        if record["scheme"] == "ftcs":
            bound = (1 / 16) ** 2 / (2 * record["coefficient"])
            assert record["theory_max_step_size"] == pytest.approx(bound)
            assert record["max_stable_step_size"] <= bound < record["first_unstable_step_size"]
        else:
            assert record["theory_max_step_size"] is None
        if record["cheapest"] is not None:
            assert set(record["cheapest"]) >= {"step_size", "steps"}


def test_cfl_axis_and_swept_dimension(dims_store: str, tmp_path: Path) -> None:
    out = tmp_path / "dims"
    result = invoke("map", dims_store, "-o", str(out), "--x", "cfl", "--y", "dims", "--facet", "steps")
    assert result.exit_code == 0, result.output
    assert_png(out / "overview.png")
    assert_png(out / "map_coefficient-0.1_steps-1000.png")
    records = json.loads(invoke("recommend", dims_store, "--json").stdout)
    grid = np.array([0.1, 0.15, 0.2, 0.3, 0.45, 0.55])
    assert {(r["dims"], r["coefficient"]) for r in records} == {(d, c) for d in (1, 2, 3) for c in (0.1, 1.0)}
    for record in records:
        limit = 1 / (2 * record["dims"])
        assert record["theory_max_cfl"] == pytest.approx(limit)
        assert record["max_stable_cfl"] == pytest.approx(grid[grid <= limit].max())
        dx = 1 / 8
        assert record["theory_max_step_size"] == pytest.approx(limit * dx**2 / record["coefficient"])


def test_incomplete_store_is_mapped_and_says_how_complete(tmp_path: Path) -> None:
    partial = compute(SCHEMES_SWEEP, tmp_path / "partial.zarr", blocks=2)
    out = tmp_path / "maps"
    result = invoke("map", partial, "-o", str(out), "--facet", "none", "--html")
    assert result.exit_code == 0, result.output
    assert "incomplete store: 2 of 6 blocks" in result.stderr
    assert "not computed" in maps.status_names(maps.open_results(partial)).values
    assert_png(out / "overview.png")
    assert "incomplete" in (out / "summary.txt").read_text()
    assert "incomplete store" in (out / "report.html").read_text()
    recommend = invoke("recommend", partial, "--json")
    assert recommend.exit_code == 0
    assert "incomplete store" in recommend.stderr
    computed = [r["computed_fraction"] for r in json.loads(recommend.stdout)]
    assert computed.count(1.0) == 2 and computed.count(0.0) == 4


def test_bad_store_and_bad_axes_exit_2_with_one_line(schemes_store: str, tmp_path: Path) -> None:
    line = one_line_error(invoke("map", str(tmp_path / "missing.zarr"), "-o", str(tmp_path / "out")))
    assert "no results store" in line
    not_ours = tmp_path / "plain.zarr"
    maps.save_maps(xr.Dataset({"a": ("x", [1.0])}), not_ours)
    assert "not a diffsweep results store" in one_line_error(invoke("recommend", str(not_ours)))
    line = one_line_error(invoke("map", schemes_store, "-o", str(tmp_path / "out"), "--x", "speed"))
    assert "unknown axis 'speed' for --x" in line and "scheme, coefficient, step_size, steps, cfl, time" in line
    line = one_line_error(invoke("map", schemes_store, "-o", str(tmp_path / "out"), "--facet", "coefficient"))
    assert "--facet 'coefficient' is already on the map" in line
    assert not (tmp_path / "out").exists()


def png_text(path: Path) -> dict[str, str]:
    """The title and legend the figure was saved with (PNG text chunks)."""
    with Image.open(path) as image:
        return dict(image.text)


def test_cfl_axis_on_a_step_size_sweep_and_no_facet(schemes_store: str, tmp_path: Path) -> None:
    out = tmp_path / "cfl"
    result = invoke("map", schemes_store, "-o", str(out), "--x", "cfl", "--facet", "none")
    assert result.exit_code == 0, result.output
    maps_written = sorted(p.name for p in out.glob("map_*.png"))
    assert maps_written == ["map_scheme-crank-nicolson.png", "map_scheme-ftcs.png"]  # no facet: one map per scheme
    overview = png_text(out / "overview.png")
    assert "class over all 2 step counts" in overview["Title"] and "showing" not in overview["Title"]
    ftcs = png_text(out / "map_scheme-ftcs.png")
    assert "exact stability bound r* = 2/λ_max" in ftcs["Description"]
    implicit = png_text(out / "map_scheme-crank-nicolson.png")
    # legend entries only for the classes present: Crank–Nicolson is never unstable here
    assert "divergent" not in implicit["Description"] and "not computed" not in implicit["Description"]
    assert "exact stability bound" not in implicit["Description"]


def test_overview_says_when_it_shows_only_some_maps_and_keeps_the_theory(schemes_store: str, tmp_path: Path) -> None:
    out = tmp_path / "by-step-size"
    result = invoke("map", schemes_store, "-o", str(out), "--x", "steps", "--facet", "step_size")
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("map_*.png"))) == 2 * 9
    overview = png_text(out / "overview.png")
    assert "showing 12 of 18 maps" in overview["Title"]
    assert "exact stability bound" in overview["Description"]
    assert "not computed" not in overview["Description"]


def test_incomplete_store_legend_names_the_missing_runs(tmp_path: Path) -> None:
    partial = compute(SCHEMES_SWEEP, tmp_path / "partial.zarr", blocks=2)
    out = tmp_path / "maps"
    assert invoke("map", partial, "-o", str(out)).exit_code == 0
    assert "not computed" in png_text(out / "overview.png")["Description"]


# -- nothing lost: map writes only where nothing else is, and replaces only its own ------------


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` and its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_map_refuses_a_folder_holding_something_else_and_writes_nothing(schemes_store: str, tmp_path: Path) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("months of work")
    before = snapshot(out)
    line = one_line_error(invoke("map", schemes_store, "-o", str(out)))
    assert "is not empty" in line and "--overwrite" in line
    assert snapshot(out) == before


def test_map_never_deletes_a_user_folder_named_maps_zarr(schemes_store: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "maps.zarr").mkdir(parents=True)
    (out / "maps.zarr" / "thesis.txt").write_text("months of work")
    before = snapshot(out)
    assert "is not empty" in one_line_error(invoke("map", schemes_store, "-o", str(out)))
    line = one_line_error(invoke("map", schemes_store, "-o", str(out), "--overwrite"))
    assert "maps.zarr was not written by diffsweep map" in line
    assert snapshot(out) == before


def test_map_never_deletes_the_results_store_it_maps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``diffsweep map maps.zarr -o .`` where the results store itself is called maps.zarr."""
    store = Path(compute(SCHEMES_SWEEP, tmp_path / "maps.zarr"))
    monkeypatch.chdir(tmp_path)
    before = tree_digest(store)
    assert "is not empty" in one_line_error(invoke("map", "maps.zarr", "-o", "."))
    line = one_line_error(invoke("map", "maps.zarr", "-o", ".", "--overwrite"))
    assert "maps.zarr is a diffsweep results store; it is never replaced" in line
    assert tree_digest(store) == before
    line = one_line_error(invoke("map", "maps.zarr", "-o", "maps.zarr", "--overwrite"))
    assert "is a diffsweep results store; choose another folder" in line
    assert tree_digest(store) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.zarr"]


def test_map_again_needs_overwrite_and_then_replaces_only_its_own(schemes_store: str, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    assert invoke("map", schemes_store, "-o", str(out)).exit_code == 0
    first = snapshot(out)
    line = one_line_error(invoke("map", schemes_store, "-o", str(out)))
    assert "already holds" in line and "written by diffsweep map earlier; pass --overwrite" in line
    assert snapshot(out) == first
    (out / "notes.txt").write_text("mine")
    result = invoke("map", schemes_store, "-o", str(out), "--overwrite", "--facet", "none")
    assert result.exit_code == 0, result.output
    after = {p.name for p in out.iterdir()}
    assert "notes.txt" in after and (out / "notes.txt").read_text() == "mine"
    # the maps of the first run's facets were ours: replaced by this run's
    assert not any("steps-" in name for name in after)
    assert {"map_scheme-ftcs.png", "map_scheme-crank-nicolson.png", "maps.zarr", "summary.csv"} <= after
    assert xr.open_zarr(out / "maps.zarr").attrs["source_store"] == schemes_store


def test_overwrite_refuses_what_the_user_changed_since(schemes_store: str, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    assert invoke("map", schemes_store, "-o", str(out)).exit_code == 0
    (out / "summary.csv").write_text("my own table")
    (out / "maps.zarr" / "notes.txt").write_text("added inside the maps store")
    before = snapshot(out)
    line = one_line_error(invoke("map", schemes_store, "-o", str(out), "--overwrite"))
    assert "has changed since; move it away (nothing was written)" in line
    assert snapshot(out) == before


def test_an_interrupted_map_is_still_recognised_as_its_own(
    schemes_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import report

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "maps"
    with monkeypatch.context() as patch:
        patch.setattr(report, "write_text", interrupted)  # after the figures and summary.csv
        assert invoke("map", schemes_store, "-o", str(out)).exit_code == 130
    assert (out / "summary.csv").exists() and not (out / "maps.zarr").exists()
    assert "already holds" in one_line_error(invoke("map", schemes_store, "-o", str(out)))
    result = invoke("map", schemes_store, "-o", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "maps.zarr").exists() and (out / "summary.txt").exists()
