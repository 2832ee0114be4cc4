"""Edges in maps, recommendations and the report: refined where refine ran, censoring marked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from conftest import compute_store
from test_refine import discrete_bound

from pipeline import edges, maps, refine, report
from pipeline.cli.main import cli

#: FTCS and Crank–Nicolson; the step sizes cross FTCS's bound for the two larger
#: coefficients only, so the smallest one is censored (stable throughout the sweep)
SWEEP = """\
name: edges
description: FTCS vs Crank-Nicolson, the bound crossed for some coefficients only
model: {dims: 1, cells: 16, length: 1.0, boundary: neumann, initial: step}
sweep:
  scheme: [ftcs, crank-nicolson]
  coefficient: [0.01, 0.5, 1.0]
  step_size: {geomspace: [2.0e-4, 2.0e-2], num: 7}
  steps: [100, 20000]
"""


@pytest.fixture(scope="module")
def unrefined(tmp_path_factory: pytest.TempPathFactory) -> str:
    return compute_store(SWEEP, tmp_path_factory.mktemp("edges") / "plain.zarr")


@pytest.fixture(scope="module")
def refined(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = compute_store(SWEEP, tmp_path_factory.mktemp("edges") / "refined.zarr")
    for edge in ("divergence", "oscillation"):
        refine.refine(refine.prepare(url, refine.Request(edge=edge, rtol=1e-3)))
    return url


def records_of(url: str) -> dict[tuple[str, float], dict]:
    ds = maps.open_results(url)
    found = maps.recommend(ds, edges.open_refinement(url, sweep_hash=ds.attrs["sweep_hash"]))
    return {(r["scheme"], r["coefficient"]): r for r in found}


def test_edges_read_off_the_grid_are_brackets_with_censoring(unrefined: str) -> None:
    records = records_of(unrefined)
    dt = np.geomspace(2e-4, 2e-2, 7)
    bound = discrete_bound("neumann", 1, 16) / 16**2  # Δt* D
    for coefficient in (0.5, 1.0):
        edge = records[("ftcs", coefficient)]["divergence_edge"]
        low, high = edge["bracket"]
        assert not edge["censored"] and not edge["refined"] and edge["steps"] == 20000
        assert low in dt and high in dt and high / low == pytest.approx(dt[1] / dt[0])
        assert low < bound / coefficient < high
        assert edge["step_size"] == low and edge["cfl"] == pytest.approx(low * coefficient * 16**2)
    small = records[("ftcs", 0.01)]["divergence_edge"]
    assert small["censored"] and small["bracket"] == [dt[-1], None] and small["limit"] == "sweep"
    for coefficient in (0.01, 0.5, 1.0):
        implicit = records[("crank-nicolson", coefficient)]
        assert implicit["divergence_edge"]["censored"] and implicit["bound_step_size"] is None
        assert implicit["theory_max_step_size"] is None


def test_refined_edges_replace_the_grid_ones_and_match_the_exact_bound(refined: str) -> None:
    records = records_of(refined)
    bound = discrete_bound("neumann", 1, 16)
    for coefficient in (0.01, 0.5, 1.0):
        record = records[("ftcs", coefficient)]
        edge = record["divergence_edge"]
        assert edge["refined"] and not edge["censored"]
        low, high = edge["bracket_cfl"]
        assert low <= bound <= high <= low * (1 + 1e-3)
        assert record["bound_cfl"] == pytest.approx(bound, rel=1e-12)
        assert record["bound_step_size"] == pytest.approx(bound / 16**2 / coefficient, rel=1e-12)
    for coefficient in (0.01, 0.5, 1.0):
        edge = records[("crank-nicolson", coefficient)]["divergence_edge"]
        # never diverges: censored at the end of refine's search, 10^4 x the sweep
        assert edge["censored"] and edge["limit"] == "search" and edge["bracket"][1] is None
        assert edge["step_size"] == pytest.approx(2e-2 * 1e4)
        # a step turns over (g -> -1) into 1 - step under CN at large r: within bounds, no oscillation
        oscillation = records[("crank-nicolson", coefficient)]["oscillation_edge"]
        assert oscillation["refined"] and oscillation["censored"]


def test_the_text_table_marks_censored_values_and_explains_every_mark(unrefined: str) -> None:
    result = CliRunner().invoke(cli, ["recommend", unrefined])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "≥ 0.02 (edge of sweep)" in text and "none (implicit)" in text and "(grid: <" in text
    table = text.splitlines()[1:8]
    assert not any(re.search(r"(^|\s)-(\s|$)", line) for line in table), table
    for mark in ("grid: < x", "≥ x (edge of sweep/search)", "none (implicit)"):
        assert mark in text
    # the implicit schemes' unstable observations are named as oscillation, never as divergence
    assert "oscillation (the maximum principle broken), never divergence" in text


def test_recommend_json_has_both_edges_with_bracket_and_censored(refined: str) -> None:
    result = CliRunner().invoke(cli, ["recommend", refined, "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert len(records) == 6
    for record in records:
        for name in ("divergence_edge", "oscillation_edge"):
            edge = record[name]
            assert set(edge) >= {"value", "step_size", "bracket", "censored", "refined"}
            assert len(edge["bracket"]) == 2 and isinstance(edge["censored"], bool)
            low, high = edge["bracket"]
            assert edge["value"] == (low if low is not None else high)
            assert edge["censored"] == (low is None or high is None)
        # the keys it has always had are still there
        assert {"max_stable_step_size", "theory_max_step_size", "min_steps_to_equilibrium", "cheapest"} <= set(record)


def test_the_report_states_its_conclusions_in_sentences(refined: str, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    result = CliRunner().invoke(cli, ["map", refined, "-o", str(out), "--html"])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    conclusions = page.split("<h2>Conclusions</h2>")[1].split("<h2>")[0]
    deviation = re.search(r"lies within ([0-9.]+)% of the exact bound", conclusions)
    assert deviation and float(deviation.group(1)) <= 0.1, conclusions
    assert "for all 3 coefficients where it was found" in conclusions
    assert "The implicit schemes never diverged (3 of 3 coefficients)" in conclusions
    assert "Equilibrium (distance ≤ 0.001) is reached within the largest step count (20000)" in conclusions
    assert "Cheapest setting per coefficient" in conclusions


def test_conclusions_count_coefficients_that_never_became_unstable(unrefined: str) -> None:
    records = records_of(unrefined)
    sentences = report.conclusions(list(records.values()), {"tolerance": 1e-3})
    assert any("1 of 3 explicit-scheme coefficients never became unstable within the sweep" in s for s in sentences), sentences
    assert any("read off the swept grid" in s for s in sentences), sentences


def test_edges_dataset_is_over_the_columns_with_both_units(refined: str) -> None:
    ds = maps.open_results(refined)
    table = edges.edges(ds, edges.open_refinement(refined)).compute()
    assert dict(table["divergence_censored"].sizes) == {"scheme": 2, "coefficient": 3, "steps": 2}
    dx2 = (1 / 16) ** 2
    ratio = table["divergence_cfl_low"] / table["divergence_step_size_low"] * dx2 / table["coefficient"]
    np.testing.assert_allclose(ratio.where(table["divergence_step_size_low"].notnull(), 1.0), 1.0, rtol=1e-12)
    # a refine group of another sweep is ignored
    assert edges.open_refinement(refined, sweep_hash="0" * 64) is None
    assert edges.open_refinement(str(Path(refined).parent / "missing.zarr")) is None
    assert isinstance(xr.open_zarr(refined, group="refine"), xr.Dataset)
