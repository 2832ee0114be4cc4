"""First passages (pipeline.numerics.passage) against brute force, and the discrete bound.

The references never use the code under test: FTCS is stepped by a plain numpy stencil
written in the kernel's order of operations (so the trajectory is the same bits, and
round-off-seeded instabilities grow identically), the implicit schemes by dense matrices
(LU solve per step); both check every single step with numpy's own max and norm and their
own growth window.  The stability bound is checked against closed forms and against the
eigenvalues of the dense stencil matrix.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from test_numerics_schemes import stencil_matrix

from pipeline.numerics import (
    BOUNDARIES,
    SCHEMES,
    Batch,
    FirstPassage,
    Grid,
    first_passage,
    growth_window_start,
    initial_condition,
    integrate,
    stability_bound,
    stability_limit,
)

GROWTH_TOLERANCE = 1e-9  # the documented constants, restated
ROUNDOFF_FLOOR = 1e-12


def window_start(n: int) -> int:
    """Largest power of two not above n / 2, 0 for n = 1 (written independently)."""
    start = 0
    power = 1
    while 2 * power <= n:
        start = power
        power *= 2
    return start


class Checker:
    """The definitions applied to one trajectory, one step at a time."""

    def __init__(self, boundary: str, u0: np.ndarray, tolerance: float, divergence: float):
        self.equilibrium = u0.mean() if boundary != "dirichlet" else 0.0
        self.scale = (u0.max() - u0.min()) or 1.0
        self.floor = ROUNDOFF_FLOOR * math.sqrt(u0.size) * max(abs(self.equilibrium), self.scale)
        self.tolerance, self.divergence = tolerance, divergence
        self.norms = [np.sqrt(((u0 - self.equilibrium) ** 2).sum())]
        settled = np.abs(u0 - self.equilibrium).max() / self.scale <= tolerance
        self.first_equilibrium = 0 if settled else None
        self.first_divergence = None

    def see(self, n: int, u: np.ndarray) -> None:
        deviation = u - self.equilibrium
        with np.errstate(all="ignore"):
            distance = np.abs(deviation).max() / self.scale
            norm = np.sqrt((deviation**2).sum())
            start = window_start(n)
            growth = (norm / max(self.norms[start], np.finfo(float).tiny)) ** (1.0 / (n - start))
        self.norms.append(norm)
        if self.first_equilibrium is None and distance <= self.tolerance:
            self.first_equilibrium = n
        growing = norm > self.floor and growth > 1 + GROWTH_TOLERANCE
        if self.first_divergence is None and (not distance <= self.divergence or growing):
            self.first_divergence = n

    def result(self, horizon: int) -> tuple[int, int]:
        return (
            horizon + 1 if self.first_equilibrium is None else self.first_equilibrium,
            horizon + 1 if self.first_divergence is None else self.first_divergence,
        )


def ftcs_step(boundary: str, u: np.ndarray, r: float) -> np.ndarray:
    """One FTCS step with the kernel's order of operations, ghosts by numpy.pad."""
    mode = {"neumann": "edge", "periodic": "wrap", "dirichlet": "constant"}[boundary]
    padded = np.pad(u, 1, mode=mode)
    inner = tuple(slice(1, -1) for _ in range(u.ndim))

    def shifted(axis: int, offset: int) -> np.ndarray:
        index = list(inner)
        index[axis] = slice(1 + offset, padded.shape[axis] - 1 + offset)
        return padded[tuple(index)]

    with np.errstate(all="ignore"):
        pairs = [shifted(axis, -1) + shifted(axis, +1) for axis in range(u.ndim)]
        if u.ndim == 1:
            return u + r * (shifted(0, -1) - 2.0 * u + shifted(0, +1))
        total = pairs[0]
        for pair in pairs[1:]:
            total = total + pair
        return u + r * (total - 2.0 * u.ndim * u)


def brute_ftcs(boundary, u0, r, horizon, tolerance, divergence):
    checker = Checker(boundary, u0, tolerance, divergence)
    u = u0.astype(float)
    for n in range(1, horizon + 1):
        u = ftcs_step(boundary, u, r)
        checker.see(n, u)
    return checker.result(horizon)


def brute_implicit(scheme, boundary, grid, u0, r, horizon, tolerance, divergence):
    matrix = stencil_matrix(boundary, grid)
    eye = np.eye(grid.size)
    if scheme == "backward-euler":
        explicit, implicit = eye, eye - r * matrix
    else:
        explicit, implicit = eye + r / 2 * matrix, eye - r / 2 * matrix
    factors = scipy.linalg.lu_factor(implicit)
    checker = Checker(boundary, u0, tolerance, divergence)
    u = u0.reshape(-1).astype(float)
    for n in range(1, horizon + 1):
        u = scipy.linalg.lu_solve(factors, explicit @ u)
        checker.see(n, u.reshape(grid.shape))
    return checker.result(horizon)


def passages(scheme, boundary, grid, initial, r, checkpoints, tolerance=1e-3, divergence=1e3):
    passage = FirstPassage(tolerance=tolerance, divergence=divergence)
    coefficient = np.ones_like(r)
    batch = Batch(scheme, boundary, grid, initial, coefficient, r * grid.dx**2)
    for _ in integrate(batch, checkpoints, first_passage=passage):
        pass
    return passage


def ftcs_rates(boundary: str, grid: Grid) -> np.ndarray:
    """CFL numbers around the textbook and the discrete bound, stable and not."""
    textbook = stability_limit("ftcs", grid.dims)
    bound = stability_bound("ftcs", boundary, grid)
    return np.array(
        [0.3 * textbook, 0.9 * textbook, textbook, (textbook + bound) / 2, bound * (1 - 1e-12),
         bound * 1.002, bound * 1.05, 1.5 * bound, 4.0 * bound]
    )


FTCS_CASES = [(1, 16, 1500), (2, 6, 500), (3, 4, 250)]


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize(("dims", "cells", "horizon"), FTCS_CASES)
def test_ftcs_first_passages_equal_brute_force_stepping(dims, cells, horizon, boundary):
    grid = Grid(dims, cells, 1.0)
    r = ftcs_rates(boundary, grid)
    seen_equilibrium = seen_divergence = 0
    for kind in ("step", "random", "gaussian"):
        u0 = initial_condition(kind, grid, seed=dims)
        got = passages("ftcs", boundary, grid, u0, r, [3, horizon // 3, horizon])
        for i, rate in enumerate(r):
            expected = brute_ftcs(boundary, u0, rate, horizon, 1e-3, 1e3)
            assert (got.steps_to_equilibrium[i], got.steps_to_divergence[i]) == expected, (kind, rate)
            seen_equilibrium += expected[0] <= horizon
            seen_divergence += expected[1] <= horizon
    # the comparison covered both passages, not only the sentinel
    assert seen_equilibrium >= 5 and seen_divergence >= 5


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("dims", [1, 2])
def test_ftcs_divergence_threshold_passages_equal_brute_force(dims, boundary):
    """A small ``divergence`` (1.5): the threshold is met by ringing, before growth shows."""
    grid = Grid(dims, {1: 12, 2: 5}[dims], 1.0)
    r = ftcs_rates(boundary, grid)
    u0 = initial_condition("step", grid) + 0.25
    got = passages("ftcs", boundary, grid, u0, r, [40, 300], divergence=1.5)
    expected = [brute_ftcs(boundary, u0, rate, 300, 1e-3, 1.5) for rate in r]
    assert list(zip(got.steps_to_equilibrium, got.steps_to_divergence, strict=True)) == expected


IMPLICIT_RATES = np.array([0.05, 0.3, 0.5, 0.9, 1.5, 5.0])


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("scheme", ["backward-euler", "crank-nicolson"])
@pytest.mark.parametrize(("dims", "cells"), [(1, 12), (2, 5)])
def test_implicit_first_passages_equal_dense_stepping(dims, cells, scheme, boundary):
    grid = Grid(dims, cells, 1.0)
    horizon = 600
    for kind in ("step", "random"):
        u0 = initial_condition(kind, grid, seed=4)
        for divergence in (1e3, 1.02):
            got = passages(scheme, boundary, grid, u0, IMPLICIT_RATES, [5, horizon],
                           divergence=divergence)
            expected = [
                brute_implicit(scheme, boundary, grid, u0, rate, horizon, 1e-3, divergence)
                for rate in IMPLICIT_RATES
            ]
            assert list(zip(got.steps_to_equilibrium, got.steps_to_divergence, strict=True)) == expected, (
                kind, divergence)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("dims", [1, 2])
def test_crank_nicolson_rings_at_large_steps_and_its_passages_are_still_exact(dims, boundary):
    """Above r = 1/d the distance of Crank–Nicolson is not monotone (the highest modes
    decay slowest, flipping sign every step): the search looks at the steps in order.
    The dense reference is ill-conditioned at these r, so only the equilibrium passage
    and the threshold passage of a small ``divergence`` are compared (the dense solver's
    mass drift would count as growth above the round-off floor)."""
    grid = Grid(dims, {1: 16, 2: 6}[dims], 1.0)
    r = np.array([3.0, 30.0, 300.0])
    horizon = 400
    u0 = initial_condition("step", grid) + 0.1
    got = passages("crank-nicolson", boundary, grid, u0, r, [horizon], divergence=1.01)
    late = 0
    for i, rate in enumerate(r):
        equilibrium, divergence = brute_implicit(
            "crank-nicolson", boundary, grid, u0, rate, horizon, 1e-3, 1.01)
        assert got.steps_to_equilibrium[i] == equilibrium, rate
        if divergence <= 3:  # before any drift: the threshold met by the first overshoot
            assert got.steps_to_divergence[i] == divergence, rate
        late += 20 < equilibrium <= horizon
    assert late >= 1  # slow, ringing decay was covered


def test_watching_does_not_change_the_trajectory():
    grid = Grid(2, 7, 1.0)
    initial = initial_condition("random", grid, seed=5)
    r = ftcs_rates("neumann", grid)
    batch = Batch("ftcs", "neumann", grid, initial, np.ones_like(r), r * grid.dx**2)
    plain = [s.copy() for _, s in integrate(batch, [10, 200])]
    watched = [s.copy() for _, s in integrate(batch, [10, 200], first_passage=FirstPassage(1e-3, 1e3))]
    for a, b in zip(plain, watched, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_sentinel_is_the_horizon_plus_one():
    grid = Grid(1, 16, 1.0)
    initial = initial_condition("step", grid)
    r = np.array([1e-4, 0.45, 1.0])  # too slow to settle, settles, diverges
    result = first_passage(Batch("ftcs", "neumann", grid, initial, r, r * 0 + grid.dx**2), 700,
                           tolerance=1e-3, divergence=1e3)
    assert result.not_reached == 701
    assert result.steps_to_equilibrium.dtype == np.int64
    assert result.steps_to_equilibrium.tolist()[0] == 701
    assert result.steps_to_equilibrium[1] <= 700 and result.steps_to_divergence[1] == 701
    assert result.steps_to_equilibrium[2] == 701 and result.steps_to_divergence[2] <= 700


def test_a_field_at_equilibrium_passes_at_step_zero():
    grid = Grid(2, 5, 1.0)
    for scheme in SCHEMES:
        batch = Batch(scheme, "periodic", grid, np.full(grid.shape, 3.0), np.ones(2), np.full(2, 0.01))
        result = first_passage(batch, 50, tolerance=1e-3, divergence=1e3)
        assert result.steps_to_equilibrium.tolist() == [0, 0]
        assert result.steps_to_divergence.tolist() == [51, 51]


@st.composite
def watched_batches(draw):
    scheme = draw(st.sampled_from(SCHEMES))
    boundary = draw(st.sampled_from(BOUNDARIES))
    dims = draw(st.integers(1, 2))
    grid = Grid(dims, draw(st.integers(3, {1: 12, 2: 6}[dims])), 1.0)
    bound = stability_bound(scheme, boundary, grid) or 1.0
    batch = draw(st.integers(1, 5))
    r = np.array(draw(st.lists(st.floats(0.05, 2.0), min_size=batch, max_size=batch))) * bound
    initial = np.random.default_rng(draw(st.integers(0, 2**16))).random((batch, *grid.shape))
    horizon = draw(st.integers(1, 400))
    return scheme, boundary, grid, initial, r, horizon


@settings(deadline=None, max_examples=30)
@given(watched_batches(), st.data())
def test_passages_depend_on_neither_the_checkpoints_nor_the_batch(case, data):
    scheme, boundary, grid, initial, r, horizon = case
    reference = passages(scheme, boundary, grid, initial, r, [horizon])
    middle = sorted(({1, horizon // 2, horizon} - {0}) | set(data.draw(st.lists(st.integers(1, horizon)))))
    other = passages(scheme, boundary, grid, initial, r, middle)
    np.testing.assert_array_equal(reference.steps_to_equilibrium, other.steps_to_equilibrium)
    np.testing.assert_array_equal(reference.steps_to_divergence, other.steps_to_divergence)
    for i in range(len(r)):
        alone = passages(scheme, boundary, grid, initial[i], r[i : i + 1], [horizon])
        assert alone.steps_to_equilibrium[0] == reference.steps_to_equilibrium[i]
        assert alone.steps_to_divergence[0] == reference.steps_to_divergence[i]


def test_growth_window_start_is_half_a_power_of_two():
    for n in range(1, 5000):
        start = growth_window_start(n)
        assert start == window_start(n)
        assert start <= n / 2 and n - start >= n / 2
        assert start == 0 or (start & (start - 1)) == 0
    with pytest.raises(ValueError, match="steps must be >= 1"):
        growth_window_start(0)


# -- the stability bound of the discrete operator ------------------------------------------


BOUND_GRIDS = [(1, c) for c in (5, 6, 7, 8, 33)] + [(2, c) for c in (5, 6, 7, 8, 20)] + [
    (3, c) for c in (5, 6, 7, 8)
]


@pytest.mark.parametrize(("dims", "cells"), BOUND_GRIDS)
def test_stability_bound_matches_closed_forms_and_the_dense_operator(dims, cells):
    closed = {
        "periodic": 1 / (2 * dims) if cells % 2 == 0 else 1 / (2 * dims * math.cos(math.pi / (2 * cells)) ** 2),
        "neumann": 1 / (2 * dims * math.cos(math.pi / (2 * cells)) ** 2),
        "dirichlet": 1 / (2 * dims * math.cos(math.pi / (2 * (cells + 1))) ** 2),
    }
    for boundary in BOUNDARIES:
        grid = Grid(dims, cells, 2.0)
        bound = stability_bound("ftcs", boundary, grid)
        assert bound == pytest.approx(closed[boundary], rel=1e-12)
        largest = np.linalg.eigvalsh(-stencil_matrix(boundary, grid)).max()
        assert bound == pytest.approx(2 / largest, rel=1e-12)
        assert bound >= stability_limit("ftcs", dims)
    for scheme in ("backward-euler", "crank-nicolson"):
        assert stability_bound(scheme, "neumann", Grid(dims, cells, 1.0)) is None


@pytest.mark.parametrize("boundary", ["neumann", "dirichlet"])
def test_runs_between_the_textbook_and_the_discrete_bound_do_not_diverge(boundary):
    """r in (1/2, 2/λ_max): unstable by the textbook, stable on this grid."""
    grid = Grid(1, 8, 1.0)
    bound = stability_bound("ftcs", boundary, grid)
    r = np.array([0.5 + 0.4 * (bound - 0.5), 0.5 + 0.9 * (bound - 0.5), bound * 1.01])
    batch = Batch("ftcs", boundary, grid, initial_condition("random", grid, seed=9), r, r * 0 + grid.dx**2)
    result = first_passage(batch, 20000, tolerance=1e-3, divergence=1e3)
    assert result.steps_to_divergence[:2].tolist() == [20001, 20001]
    assert result.steps_to_divergence[2] <= 20000
