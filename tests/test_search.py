"""The search arithmetic of ``diffsweep refine`` (pipeline.search) on predicates with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.search import (
    FOUND,
    MAX_EXTENSION,
    NOT_SEARCHED,
    STABLE_THROUGHOUT,
    UNSTABLE_THROUGHOUT,
    CheapestSearch,
    EdgeSearch,
    ProbeTask,
    SearchRange,
    evaluate,
    is_geometric,
    probe_tasks,
    rounds_to_converge,
)
from pipeline.sweep import Criteria, RunModel


def run_edge_search(values: np.ndarray, thresholds: np.ndarray, rtol: float) -> tuple[EdgeSearch, int]:
    """Search columns whose runs are past the edge above ``thresholds`` (predicate ``x > t``)."""
    beyond = values[None, :] > thresholds[:, None]
    edges = EdgeSearch.from_sweep(values, beyond, rtol=rtol)
    rounds = 0
    while edges.open().any():
        probe = edges.probes()
        edges.update(probe > thresholds)
        rounds += 1
        assert rounds < 200
    return edges, rounds


@st.composite
def swept_axes(draw) -> np.ndarray:
    low = draw(st.floats(1e-8, 1e3))
    ratio = draw(st.floats(1.5, 1e4))
    num = draw(st.integers(1, 40))
    form = draw(st.sampled_from(["geomspace", "linspace"]))
    return getattr(np, form)(low, low * ratio, num)


@settings(max_examples=200, deadline=None)
@given(
    values=swept_axes(),
    shares=st.lists(st.floats(-0.99, 1.99), min_size=1, max_size=8),
    rtol=st.sampled_from([1e-1, 1e-2, 1e-3, 1e-6]),
)
def test_edge_search_brackets_every_threshold_to_rtol_with_the_predicted_runs(values, shares, rtol) -> None:
    # thresholds inside, below and above the swept range (share of the log of the search range)
    lowest, highest = values.min() / MAX_EXTENSION, values.max() * MAX_EXTENSION
    span = math.log(highest / lowest)
    thresholds = lowest * np.exp(np.clip(np.array(shares), 0.001, 0.999) * span) * np.where(np.array(shares) < 0, 1e-30, 1.0)
    thresholds = np.where(np.array(shares) > 1, highest * 10, thresholds)
    start = EdgeSearch.from_sweep(values, values[None, :] > thresholds[:, None], rtol=rtol)
    fewest, most = start.rounds_left()
    edges, _ = run_edge_search(values, thresholds, rtol)

    outcome = edges.outcome()
    inside = (thresholds >= lowest) & (thresholds < highest)
    assert (outcome[inside] == FOUND).all()
    found = outcome == FOUND
    assert (edges.low[found] <= thresholds[found]).all() and (thresholds[found] < edges.high[found]).all()
    assert (edges.high[found] <= edges.low[found] * (1 + rtol)).all()
    np.testing.assert_array_equal(edges.edge[found], edges.low[found])
    # censored columns: stable up to the top of the search range, or unstable at its bottom
    assert (outcome[thresholds >= highest] == STABLE_THROUGHOUT).all()
    assert (outcome[thresholds < lowest] == UNSTABLE_THROUGHOUT).all()
    assert np.isnan(edges.edge[~found]).all()
    # the estimate: bounds, exact for columns a geometric sweep brackets
    assert (fewest <= edges.runs).all() and (edges.runs <= most).all()
    if start.search.geometric:
        bracketed = ~np.isnan(start.low) & ~np.isnan(start.high)
        np.testing.assert_array_equal(edges.runs[bracketed], fewest[bracketed])


def test_geometric_axes_are_bisected_at_the_geometric_midpoint() -> None:
    values = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    edges = EdgeSearch.from_sweep(values, values[None, :] > 5.0, rtol=1e-3)
    assert edges.search.geometric and (edges.low[0], edges.high[0]) == (4.0, 8.0)
    assert edges.probes()[0] == pytest.approx(math.sqrt(32.0))
    linear = EdgeSearch.from_sweep(np.linspace(1.0, 9.0, 5), np.linspace(1.0, 9.0, 5)[None, :] > 4.0, rtol=1e-3)
    assert not linear.search.geometric and linear.probes()[0] == pytest.approx(4.0)


def test_columns_stable_or_unstable_throughout_are_extended_by_doubling_and_halving() -> None:
    values = np.array([1.0, 2.0])
    edges = EdgeSearch.from_sweep(values, np.array([[False, False], [True, True]]), rtol=0.5)
    np.testing.assert_array_equal(edges.probes(), [4.0, 0.5])
    edges.update(np.array([False, True]))
    np.testing.assert_array_equal(edges.probes(), [8.0, 0.25])


def test_a_non_monotone_column_is_bracketed_at_its_first_change() -> None:
    values = np.arange(1.0, 7.0)
    edges = EdgeSearch.from_sweep(values, np.array([[False, False, True, False, True, True]]), rtol=0.1)
    assert (edges.low[0], edges.high[0]) == (2.0, 3.0)


def test_rounds_to_converge_counts_halvings_of_the_log_width() -> None:
    assert rounds_to_converge(np.array([1.0]), np.array([1.0005]), 1e-3, geometric=True)[0] == 0
    assert rounds_to_converge(np.array([1.0]), np.array([2.0]), 1e-3, geometric=True)[0] == math.ceil(
        math.log2(math.log(2.0) / math.log1p(1e-3))
    )
    assert rounds_to_converge(np.array([1.0]), np.array([2.0]), 1e-3, geometric=False)[0] == 10


def test_is_geometric() -> None:
    assert is_geometric(np.geomspace(0.1, 10, 5))
    assert not is_geometric(np.linspace(0.1, 10, 5))
    assert not is_geometric([1.0, 2.0]) and not is_geometric([1.0, 2.0, 4.5])


# -- cheapest ---------------------------------------------------------------------------------


def run_cheapest(values: np.ndarray, cost, rtol: float) -> CheapestSearch:
    search = CheapestSearch.from_sweep(values, cost(values[None, :]), rtol=rtol)
    for _ in range(300):
        if not search.open().any():
            return search
        probe = search.probes()
        search.update(cost(probe))
    raise AssertionError("did not converge")


@settings(max_examples=100, deadline=None)
@given(
    minimum=st.floats(1e-5, 1e-1),
    curvature=st.floats(1e2, 1e6),
    lower=st.floats(0.01, 10.0),
    num=st.integers(2, 30),
    rtol=st.sampled_from([1e-2, 1e-3]),
)
def test_golden_section_finds_an_interior_minimum(minimum, curvature, lower, num, rtol) -> None:
    # steps(x) = ceil(c (x/m + m/x)): the Crank–Nicolson shape, minimum at m (value 2c)
    def cost(x):
        return np.where(np.isnan(x), -1, np.ceil(curvature * (x / minimum + minimum / x))).astype(np.int64)

    values = np.geomspace(minimum * lower / 3, minimum * lower * 3, num)
    search = run_cheapest(values, cost, rtol)
    assert search.outcome()[0] == FOUND
    assert search.low[0] <= search.best[0] <= search.high[0] <= search.low[0] * (1 + rtol)
    # the step count found is the least over the whole range, up to what a bracket of
    # width rtol around the minimum can cost (c rtol^2) and the rounding
    dense = cost(np.geomspace(values.min() / 2, values.max() * 2, 20001)).min()
    assert dense >= math.ceil(2 * curvature) - 1
    assert search.best_steps[0] <= dense + math.ceil(curvature * rtol**2) + 1


def test_cheapest_of_an_explicit_scheme_sits_just_below_its_edge() -> None:
    # steps fall like 1/x up to the stability edge, beyond which equilibrium is never reached
    edge = 0.0123

    def cost(x):
        with np.errstate(invalid="ignore"):
            return np.where(x < edge, np.ceil(50.0 / x), -1).astype(np.int64)

    values = np.linspace(1e-4, 2e-3, 8)  # the whole sweep below the edge: extended upward
    search = run_cheapest(values, cost, 1e-3)
    assert search.outcome()[0] == FOUND
    assert edge / (1 + 2e-3) <= search.best[0] < edge
    assert search.runs[0] > 0


def test_a_column_never_at_equilibrium_is_not_searched() -> None:
    values = np.array([1.0, 2.0, 3.0])
    search = CheapestSearch.from_sweep(values, np.array([[-1, -1, -1], [5, 4, -1]]), rtol=1e-3)
    np.testing.assert_array_equal(search.outcome(), [STABLE_THROUGHOUT, NOT_SEARCHED])
    assert (search.low[1], search.best[1], search.high[1]) == (1.0, 2.0, 3.0)


def test_ties_go_to_the_larger_value() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0])
    search = CheapestSearch.from_sweep(values, np.array([[9, 5, 5, 7]]), rtol=1e-3)
    assert search.best[0] == 3.0 and (search.low[0], search.high[0]) == (2.0, 4.0)


# -- probe tasks ----------------------------------------------------------------------------


def test_a_round_of_small_probes_is_batched_into_few_tasks_by_model_and_step_count() -> None:
    one = RunModel("ftcs", 1, 16, 1.0, "neumann", "step", 0)
    two = RunModel("ftcs", 2, 8, 1.0, "neumann", "step", 0)
    probes = [(one, 100, c, 1.0, 0.1 + c / 1000) for c in range(50)] + [(two, 100, 50 + c, 1.0, 0.1) for c in range(30)]
    probes += [(one, 1000, 80 + c, 1.0, 0.2) for c in range(20)]
    tasks, members = probe_tasks(probes, criteria=Criteria(), step_axis="cfl", parallelism=1)
    assert len(tasks) == 3
    assert sorted(np.concatenate(members).tolist()) == list(range(100))
    for task, which in zip(tasks, members, strict=True):
        assert task.n_runs == which.size
    # long runs on many workers: spread out, at least four tasks per worker when there are enough
    long = [(one, 10**6, c, 1.0, 0.1) for c in range(50)]
    tasks, _ = probe_tasks(long, criteria=Criteria(), step_axis="cfl", parallelism=4)
    assert len(tasks) >= 4 and max(task.n_runs for task in tasks) < 50


def test_a_probe_is_classified_at_its_step_count_whatever_it_is_batched_with() -> None:
    model = RunModel("ftcs", 1, 16, 1.0, "neumann", "step", 0)
    cfl = np.array([0.3, 0.45, 0.6, 0.51])
    alone = [evaluate(ProbeTask(model, Criteria(), "cfl", 2000, np.ones(1), cfl[i : i + 1]))["status"][0] for i in range(4)]
    together = evaluate(ProbeTask(model, Criteria(), "cfl", 2000, np.ones(4), cfl))["status"]
    np.testing.assert_array_equal(alone, together)
    # cfl and step size describe the same run: dt = r dx^2 / D
    step_size = evaluate(ProbeTask(model, Criteria(), "step_size", 2000, np.full(4, 2.0), cfl * (1 / 16) ** 2 / 2.0))["status"]
    np.testing.assert_array_equal(step_size, together)
    assert together[0] != 3 and together[2] == 3  # r = 0.3 stable, r = 0.6 > 1/2 divergent
