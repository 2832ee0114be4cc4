"""``pipeline.refine`` on real stores: accuracy against the exact discrete bound, resume, idempotence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import compute_store, tree_digest

from pipeline.criteria import Criteria
from pipeline import refine
from pipeline.errors import RefineError, StoreError
from pipeline.executors import InProcessExecutor
from pipeline.search import FOUND, MAX_EXTENSION, STABLE_THROUGHOUT


def laplacian_1d(boundary: str, cells: int) -> np.ndarray:
    """The 1-D operator u_{j-1} - 2 u_j + u_{j+1} with the ghost cells of ``boundary``, as a dense matrix."""
    matrix = np.zeros((cells, cells))
    for j in range(cells):
        matrix[j, j] = -2.0
        for k in (j - 1, j + 1):
            if 0 <= k < cells:
                matrix[j, k] += 1.0
            elif boundary == "periodic":
                matrix[j, k % cells] += 1.0
            elif boundary == "neumann":  # the mirrored ghost holds the wall cell's own value
                matrix[j, j] += 1.0
            # dirichlet: the ghost holds 0
    return matrix


def discrete_bound(boundary: str, dims: int, cells: int) -> float:
    """2 / λ_max of the dense d-dimensional operator (Kronecker sum), from numpy's eigvalsh."""
    one, eye = laplacian_1d(boundary, cells), np.eye(cells)
    total = np.zeros((cells**dims, cells**dims))
    for axis in range(dims):
        term = np.ones((1, 1))
        for k in range(dims):
            term = np.kron(term, one if k == axis else eye)
        total += term
    return float(2.0 / np.linalg.eigvalsh(-total).max())


def test_dense_bound_differs_from_the_textbook_one_on_small_grids() -> None:
    # the reason to test against 2/λ_max: on small grids it is not 1/(2d)
    assert discrete_bound("neumann", 1, 14) == pytest.approx(0.506348, abs=1e-6)
    assert discrete_bound("periodic", 2, 6) == pytest.approx(0.25, abs=1e-12)
    assert discrete_bound("dirichlet", 3, 6) == pytest.approx(0.175349, abs=1e-6)


def sweep_text(dims: int, cells: int, boundary: str, steps: list[int], *, initial: str = "step", scheme: str = "ftcs",
               cfl: str = "{geomspace: [0.05, 0.15], num: 3}", coefficient: str = "[1.0]") -> str:
    return f"""\
name: refine-test
model: {{scheme: {scheme}, dims: {dims}, cells: {cells}, boundary: {boundary}, initial: {initial}}}
sweep:
  coefficient: {coefficient}
  cfl: {cfl}
  steps: {steps}
"""


# -- accuracy ---------------------------------------------------------------------------------

#: grids on which the step initial condition has a component on the highest mode (for
#: periodic walls that needs cells/2 odd; see test_a_mode_absent_by_symmetry_...)
ACCURACY_CASES = [
    (dims, cells, boundary)
    for dims, cells in ((1, 14), (2, 6), (3, 6))
    for boundary in ("neumann", "periodic", "dirichlet")
]


@pytest.mark.parametrize(("dims", "cells", "boundary"), ACCURACY_CASES, ids=lambda v: str(v))
def test_refined_divergence_edge_is_the_exact_discrete_bound(tmp_path: Path, dims: int, cells: int, boundary: str) -> None:
    rtol = 1e-3
    bound = discrete_bound(boundary, dims, cells)
    url = compute_store(sweep_text(dims, cells, boundary, [100_000]), tmp_path / "s.zarr")
    refinement = refine.prepare(url, refine.Request(rtol=rtol))
    refine.refine(refinement)
    ds = xr.open_zarr(url, group="refine").load()
    low = float(ds.divergence_bracket_low.item())
    high = float(ds.divergence_bracket_high.item())
    assert int(ds.divergence_censored.item()) == FOUND
    assert low <= bound <= high, (low, bound, high)
    assert high <= low * (1 + rtol)
    assert abs(float(ds.divergence_edge.item()) / bound - 1) <= rtol


def test_a_mode_absent_by_symmetry_is_seeded_by_round_off_only(tmp_path: Path) -> None:
    """The step on a periodic grid of 16 cells has no checkerboard component (by symmetry),
    and FTCS keeps it (almost) exactly zero: the edge measured then lies between 2/λ_max and
    the bound of the next mode the field holds; a random field holds every mode and finds 2/λ_max."""
    bound = discrete_bound("periodic", 1, 16)
    next_bound = 2.0 / (4 * np.sin(7 * np.pi / 16) ** 2)
    edges = {}
    for initial in ("step", "random"):
        url = compute_store(sweep_text(1, 16, "periodic", [100_000], initial=initial), tmp_path / f"{initial}.zarr")
        refinement = refine.prepare(url, refine.Request(rtol=1e-4))
        refine.refine(refinement)
        edges[initial] = (refinement.search.low[0], refinement.search.high[0])
    assert edges["random"][0] <= bound <= edges["random"][1]
    assert bound < edges["step"][0] and edges["step"][1] <= next_bound


def test_oscillation_edge_lies_between_the_maximum_principle_and_the_divergence_edge(tmp_path: Path) -> None:
    # FTCS with r <= 1/(2d) is a convex combination of neighbours: it cannot overshoot
    url = compute_store(sweep_text(2, 6, "neumann", [1000, 100_000], cfl="[0.1, 0.2, 0.3]"), tmp_path / "s.zarr")
    for edge in ("oscillation", "divergence"):
        refine.refine(refine.prepare(url, refine.Request(edge=edge, rtol=1e-3)))
    ds = xr.open_zarr(url, group="refine").load()
    assert (ds.oscillation_censored == FOUND).all() and (ds.divergence_censored == FOUND).all()
    assert (ds.oscillation_bracket_high > 0.25).all()
    assert (ds.oscillation_bracket_low <= ds.divergence_bracket_high).all()


def test_step_size_and_cfl_sweeps_find_the_same_edge(tmp_path: Path) -> None:
    coefficients = [0.5, 2.0]
    dx = 1.0 / 14
    cfl = compute_store(sweep_text(1, 14, "neumann", [20_000], coefficient=str(coefficients)), tmp_path / "cfl.zarr")
    step_text = sweep_text(1, 14, "neumann", [20_000], coefficient=str(coefficients)).replace(
        "cfl: {geomspace: [0.05, 0.15], num: 3}", f"step_size: [{0.3 * dx**2 / 2.0}, {0.3 * dx**2 / 0.5}]"
    )
    step = compute_store(step_text, tmp_path / "step.zarr")
    for url in (cfl, step):
        refine.refine(refine.prepare(url, refine.Request(rtol=1e-3)))
    by_cfl = xr.open_zarr(cfl, group="refine").divergence_edge.values[:, 0]
    by_step = xr.open_zarr(step, group="refine").divergence_edge.values[:, 0] * np.array(coefficients) / dx**2
    np.testing.assert_allclose(by_step, by_cfl, rtol=2e-3)


def test_implicit_schemes_never_diverge_so_their_edge_is_censored_at_the_search_range(tmp_path: Path) -> None:
    text = sweep_text(1, 16, "neumann", [10, 1000], scheme="crank-nicolson", cfl="[0.5, 5.0]", initial="gaussian")
    url = compute_store(text, tmp_path / "s.zarr")
    summary = refine.refine(refine.prepare(url, refine.Request()))
    ds = xr.open_zarr(url, group="refine").load()
    assert (ds.divergence_censored == STABLE_THROUGHOUT).all()
    np.testing.assert_allclose(ds.divergence_bracket_low, 5.0 * MAX_EXTENSION)
    assert ds.divergence_bracket_high.isnull().all() and ds.divergence_edge.isnull().all()
    assert summary.outcomes["stable throughout (censored)"] == 2
    # oscillation does happen: at large r Crank–Nicolson turns a narrow peak over
    # (g -> -1), taking the field below its initial minimum
    refine.refine(refine.prepare(url, refine.Request(edge="oscillation")))
    ds = xr.open_zarr(url, group="refine").load()
    assert (ds.oscillation_censored == FOUND).all()
    assert (ds.oscillation_bracket_high > 0.5).all()


# -- the store: layout, idempotence, resume --------------------------------------------------

SMALL = sweep_text(1, 16, "neumann", [100, 3000], coefficient="{geomspace: [0.1, 1.0], num: 3}", cfl="{geomspace: [0.1, 0.8], num: 4}")


class CountingExecutor(InProcessExecutor):
    """In process, counting the batches (rounds) and tasks it is given."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def map(self, function, items, *, name):  # type: ignore[no-untyped-def]
        self.batches.append(len(items))
        return super().map(function, items, name=name)


def test_each_round_is_one_batch_of_few_tasks_and_the_estimate_holds(tmp_path: Path) -> None:
    url = compute_store(SMALL, tmp_path / "s.zarr")
    refinement = refine.prepare(url, refine.Request())
    cost = refine.estimate(refinement)
    executor = CountingExecutor()
    summary = refine.refine(refinement, executor=executor)
    assert len(executor.batches) == summary.rounds
    assert max(executor.batches) <= 2  # 6 columns of tiny runs: one task per step count
    assert cost.rounds[0] <= summary.rounds <= cost.rounds[1]
    assert cost.runs[0] <= summary.runs <= cost.runs[1]
    assert cost.dense_runs > 20 * summary.runs


def test_the_refine_group_opens_with_plain_xarray_and_says_what_it_holds(tmp_path: Path) -> None:
    url = compute_store(SMALL, tmp_path / "s.zarr")
    refine.refine(refine.prepare(url, refine.Request()))
    ds = xr.open_zarr(url, group="refine")
    assert dict(ds.sizes) == {"coefficient": 3, "steps": 2}
    assert set(ds.data_vars) == set(refine.variables(refine.Request(), "cfl"))
    for name in ds.data_vars:
        assert {"long_name", "units"} <= set(ds[name].attrs)
    assert ds.divergence_censored.attrs["flag_meanings"].split()[1] == "edge_found"
    assert ds.attrs["sweep_hash"] == xr.open_zarr(url).attrs["sweep_hash"]
    assert ds.attrs["divergence_rtol"] == 1e-3 and ds.attrs["divergence_complete"] == 1
    assert ds.attrs["divergence_runs"] == int(ds.divergence_runs.sum())
    # the results themselves are untouched and still open as before
    assert "status" in xr.open_zarr(url).data_vars


def test_the_refine_group_speaks_the_sweeps_units(tmp_path: Path) -> None:
    # a dimensional study: the group's coordinates and step-size variables read as the root's do
    text = (sweep_text(1, 16, "neumann", [100, 3000], coefficient="[0.5, 1.0]")
            .replace("  cfl: {geomspace: [0.05, 0.15], num: 3}", "  step_size: {geomspace: [1.0e-4, 1.0e-2], num: 5}")
            + "units: {length: m, time: s}\n")
    url = compute_store(text, tmp_path / "units.zarr")
    refine.refine(refine.prepare(url, refine.Request()))
    refine.refine(refine.prepare(url, refine.Request(target="cheapest")))
    root, group = xr.open_zarr(url), xr.open_zarr(url, group="refine")
    for name in ("coefficient", "steps"):
        assert group[name].attrs == root[name].attrs
    assert group["coefficient"].attrs["units"] == "m2 s-1"
    for name in ("divergence_edge", "divergence_bracket_low", "divergence_bracket_high",
                 "cheapest_value", "cheapest_bracket_low", "cheapest_bracket_high"):
        assert group[name].attrs["units"] == "s", name
    assert group["divergence_runs"].attrs["units"] == "1"


def test_a_second_refine_does_nothing_and_writes_nothing(tmp_path: Path) -> None:
    url = compute_store(SMALL, tmp_path / "s.zarr")
    refine.refine(refine.prepare(url, refine.Request()))
    before = tree_digest(Path(url))
    again = refine.prepare(url, refine.Request())
    assert refine.estimate(again).open_columns == 0
    summary = refine.refine(again)
    assert summary.nothing_to_do and summary.runs == 0
    # a looser tolerance is already met too
    assert refine.refine(refine.prepare(url, refine.Request(rtol=1e-2))).nothing_to_do
    assert tree_digest(Path(url)) == before


def test_an_interrupted_refine_resumes_to_the_same_answer(tmp_path: Path) -> None:
    whole = compute_store(SMALL, tmp_path / "whole.zarr")
    parts = compute_store(SMALL, tmp_path / "parts.zarr")
    refine.refine(refine.prepare(whole, refine.Request()))
    first = refine.refine(refine.prepare(parts, refine.Request()), max_rounds=3)
    assert first.rounds == 3 and xr.open_zarr(parts, group="refine").attrs["divergence_complete"] == 0
    resumed = refine.prepare(parts, refine.Request())
    assert resumed.resumed
    rest = refine.refine(resumed)
    a, b = (xr.open_zarr(url, group="refine").load() for url in (whole, parts))
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    assert first.runs + rest.runs == int(a.divergence_runs.sum())
    assert b.attrs["divergence_rounds"] == a.attrs["divergence_rounds"]


def test_a_tighter_tolerance_continues_from_the_stored_brackets(tmp_path: Path) -> None:
    url = compute_store(SMALL, tmp_path / "s.zarr")
    refine.refine(refine.prepare(url, refine.Request(rtol=1e-2)))
    coarse = xr.open_zarr(url, group="refine").load()
    refinement = refine.prepare(url, refine.Request(rtol=1e-4))
    cost = refine.estimate(refinement)
    finer = refine.refine(refinement)
    fine = xr.open_zarr(url, group="refine").load()
    # log2(log(1.01) / log(1.0001)) ≈ 6.6: at most seven more halvings per column, as estimated
    assert cost.runs[0] == cost.runs[1] == finer.runs <= 7 * 6
    assert (fine.divergence_bracket_low >= coarse.divergence_bracket_low).all()
    assert (fine.divergence_bracket_high <= coarse.divergence_bracket_high).all()
    assert fine.attrs["divergence_rtol"] == 1e-4


def test_two_edges_live_side_by_side_in_one_group(tmp_path: Path) -> None:
    url = compute_store(SMALL, tmp_path / "s.zarr")
    refine.refine(refine.prepare(url, refine.Request(edge="divergence")))
    divergence = xr.open_zarr(url, group="refine").divergence_edge.load()
    refine.refine(refine.prepare(url, refine.Request(edge="oscillation")))
    ds = xr.open_zarr(url, group="refine").load()
    assert {"divergence_edge", "oscillation_edge"} <= set(ds.data_vars)
    xr.testing.assert_identical(ds.divergence_edge, divergence)


# -- refusals: nothing written ----------------------------------------------------------------


def test_refusals_name_the_problem_and_leave_the_store_untouched(tmp_path: Path) -> None:
    url = compute_store(SMALL, tmp_path / "s.zarr")
    before = tree_digest(Path(url))
    with pytest.raises(RefineError, match="axis 'step_size' is not swept"):
        refine.prepare(url, refine.Request(axis="step_size"))
    for rtol in (0.0, 1.0, -1e-3, float("nan"), 2.0):
        with pytest.raises(RefineError, match="0 < rtol < 1"):
            refine.prepare(url, refine.Request(rtol=rtol))
    with pytest.raises(StoreError, match="no results store"):
        refine.prepare(str(tmp_path / "missing.zarr"), refine.Request())
    incomplete = compute_store(SMALL, tmp_path / "incomplete.zarr", blocks=0)
    with pytest.raises(StoreError, match=r"only 0 of 1 blocks are stored; finish it first \(running the same sweep again with resume=True\)"):
        refine.prepare(incomplete, refine.Request())
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(str(foreign), mode="w").attrs["hello"] = "world"
    with pytest.raises(StoreError, match="not a diffsweep results store"):
        refine.prepare(str(foreign), refine.Request())
    assert tree_digest(Path(url)) == before


def test_a_refine_group_written_by_someone_else_is_refused(tmp_path: Path) -> None:
    url = compute_store(SMALL, tmp_path / "s.zarr")
    zarr.open_group(url, mode="r+").create_group("refine").attrs["mine"] = True
    before = tree_digest(Path(url))
    with pytest.raises(StoreError, match="'refine' group was not written by diffsweep refine"):
        refine.prepare(url, refine.Request())
    assert tree_digest(Path(url)) == before


# -- the cheapest setting ---------------------------------------------------------------------


def dense_steps_to_equilibrium(scheme: str, cfl: np.ndarray, steps: int) -> np.ndarray:
    """Exact first steps at equilibrium on a dense grid of CFL numbers (never: a huge number),
    from the first-passage measurement itself, for runs at equilibrium at ``steps``."""
    from pipeline.diagnostics import EQUILIBRIUM, measure_trajectory
    from pipeline.numerics import Batch, Grid, initial_condition

    grid = Grid(1, 16, 1.0)
    measured = measure_trajectory(
        Batch(scheme, "neumann", grid, initial_condition("step", grid), np.ones(cfl.size), cfl * grid.dx**2),
        [steps], criteria=Criteria(tolerance=1e-3, divergence=1e3),
    )
    settled = (measured["status"][:, 0] == EQUILIBRIUM) & (measured["steps_to_equilibrium"] <= steps)
    return np.where(settled, measured["steps_to_equilibrium"], 10**12)


@pytest.mark.parametrize(
    ("scheme", "cfl", "horizon"),
    [
        ("ftcs", "{geomspace: [0.05, 0.4], num: 4}", 3000),
        ("crank-nicolson", "{geomspace: [0.1, 100.0], num: 7}", 3000),
        # no swept value reaches equilibrium within 500 steps (0.1 and 0.245 are too slow,
        # 0.6 diverges): the search must look between the last stable and the first unstable
        ("ftcs", "{geomspace: [0.1, 0.6], num: 3}", 500),
    ],
)
def test_the_cheapest_setting_reaches_equilibrium_in_the_fewest_steps(tmp_path: Path, scheme: str, cfl: str, horizon: int) -> None:
    url = compute_store(sweep_text(1, 16, "neumann", [100, horizon], scheme=scheme, cfl=cfl), tmp_path / "s.zarr")
    if horizon == 500:  # the premise: nothing swept is at equilibrium
        assert (xr.open_zarr(url).status.values != 0).all()
    refinement = refine.prepare(url, refine.Request(target="cheapest", rtol=1e-3))
    summary = refine.refine(refinement)
    ds = xr.open_zarr(url, group="refine").load()
    assert dict(ds.sizes) == {"coefficient": 1} and int(ds.cheapest_censored.item()) == FOUND
    best, steps = float(ds.cheapest_value.item()), int(ds.cheapest_steps_to_equilibrium.item())
    low, high = float(ds.cheapest_bracket_low.item()), float(ds.cheapest_bracket_high.item())
    assert low <= best <= high <= low * (1 + 1e-3)
    # against a dense scan of the exact first passages around the swept range
    dense = np.geomspace(0.01, 500.0 if scheme == "crank-nicolson" else 0.6, 4001)
    scanned = dense_steps_to_equilibrium(scheme, dense, horizon)
    assert steps == dense_steps_to_equilibrium(scheme, np.array([best]), horizon)[0]
    assert steps <= scanned.min(), (steps, scanned.min(), dense[scanned.argmin()])
    if scheme == "ftcs":  # just below the stability edge
        assert 0.45 < best <= discrete_bound("neumann", 1, 16)
    else:  # Crank–Nicolson: in the interior, where slow smooth modes and ringing high modes balance
        assert 0.1 < best < 100.0
    assert summary.runs == int(ds.cheapest_runs.sum())
    # a second call does nothing
    assert refine.refine(refine.prepare(url, refine.Request(target="cheapest", rtol=1e-3))).nothing_to_do
    if horizon == 500:
        assert steps <= horizon


# -- particle schemes -------------------------------------------------------------------------


def test_refined_edges_of_the_particle_schemes_are_their_exact_validity_bounds(tmp_path: Path) -> None:
    """The lattice walk exists while its jump probability 2·d·p <= 1 (p = D·Δt/Δx², the
    CFL number), and Euler–Maruyama in a harmonic well of stiffness k is stable while
    k·Δt < 2: both edges are exact, whatever the particles' noise, and refine finds them
    from sweeps that lie entirely on the valid side (so it must extend them outward)."""
    rtol = 1e-3
    walk = """\
name: walk-edge
model: {scheme: random-walk, dims: 1, cells: 16, boundary: neumann, initial: step, particles: 200}
sweep:
  coefficient: [0.1, 1.0]
  cfl: [0.1, 0.2, 0.3]
  steps: [10]
"""
    langevin = """\
name: langevin-edge
model: {scheme: langevin, dims: 1, cells: 16, boundary: neumann, initial: step, particles: 200, confinement: 20.0}
sweep:
  coefficient: [0.1, 1.0]
  step_size: [0.01, 0.02, 0.04]
  steps: [10]
"""
    for name, text, exact in (("walk", walk, 0.5), ("langevin", langevin, 2.0 / 20.0)):
        url = compute_store(text, tmp_path / f"{name}.zarr")
        refine.refine(refine.prepare(url, refine.Request(rtol=rtol)))
        ds = xr.open_zarr(url, group="refine").load()
        assert (ds.divergence_censored == FOUND).all(), name
        low, high = ds.divergence_bracket_low.values, ds.divergence_bracket_high.values
        assert (low <= exact).all() and (exact <= high).all(), (name, low, high)
        assert (high <= low * (1 + rtol)).all(), name
