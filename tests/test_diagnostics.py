"""Measures and stability classes (pipeline.diagnostics) against theory.

The references are independent of the code under test: von Neumann bounds
(r = 1/(2d) for FTCS, unconditional for the implicit schemes), the exact decay of a
single eigenmode, and the continuous slowest-mode decay exp(-D π² t / L²).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.criteria import Criteria
from pipeline.diagnostics import (
    DIVERGENT,
    EQUILIBRIUM,
    MEASURES,
    OSCILLATING,
    TRANSIENT,
    measure_trajectory,
    passage_attributes,
)
from pipeline.numerics import BOUNDARIES, SCHEMES, Batch, Grid, initial_condition, stability_bound

CELLS = {1: 32, 2: 12, 3: 8}


def classify(scheme, boundary, grid, initial, r, checkpoints, **kwargs):
    r = np.asarray(r, dtype=float)
    coefficient = np.ones_like(r)
    step_size = r * grid.dx**2
    return measure_trajectory(
        Batch(scheme, boundary, grid, initial, coefficient, step_size), checkpoints,
        criteria=Criteria(kwargs.pop("tolerance", 1e-3), kwargs.pop("divergence", 1e3)), **kwargs,
    )


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_ftcs_classes_follow_the_von_neumann_bound(dims: int, boundary: str) -> None:
    grid = Grid(dims=dims, cells=CELLS[dims], length=1.0)
    initial = initial_condition("random", grid, seed=1)  # every mode present
    bound = 1.0 / (2 * dims)
    stable = np.array([0.05, 0.5, 0.95]) * bound
    unstable = np.array([1.05, 1.5, 3.0]) * bound
    out = classify("ftcs", boundary, grid, initial, np.concatenate([stable, unstable]), [10, 100, 1000, 3000])
    status = out["status"]
    assert np.isin(status[:3], [EQUILIBRIUM, TRANSIENT]).all(), status
    assert np.isin(status[3:, -1], [OSCILLATING, DIVERGENT]).all(), status


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_backward_euler_is_never_oscillating_or_divergent(dims: int, boundary: str) -> None:
    grid = Grid(dims=dims, cells=CELLS[dims], length=1.0)
    r = np.geomspace(1e-3, 1e6, 10)
    for kind in ("step", "random", "gaussian"):
        out = classify("backward-euler", boundary, grid, initial_condition(kind, grid), r, [1, 2, 10, 100, 1000])
        assert np.isin(out["status"], [EQUILIBRIUM, TRANSIENT]).all(), (kind, out["status"])


CRANK_NICOLSON_RINGING = [
    (dims, boundary)
    for dims in (1, 2, 3)
    for boundary in ("neumann", "periodic", "dirichlet")
    # The centred 1-D step is odd about its jump; under mirrored or periodic walls the
    # Crank-Nicolson wiggles stay inside [0, 1] (no new extremum beyond the bounds), so
    # by the maximum-principle definition it is not oscillating there.
    if (dims, boundary) not in {(1, "neumann"), (1, "periodic")}
]


@pytest.mark.parametrize(("dims", "boundary"), CRANK_NICOLSON_RINGING)
def test_crank_nicolson_rings_on_a_step_at_large_r_but_never_diverges(dims: int, boundary: str) -> None:
    grid = Grid(dims=dims, cells=CELLS[dims], length=1.0)
    r = np.array([5.0, 20.0, 100.0, 1000.0])
    out = classify("crank-nicolson", boundary, grid, initial_condition("step", grid), r, [1, 2, 3, 50, 500])
    assert (out["status"][:, 0] == OSCILLATING).all(), out["status"]
    assert (out["status"] != DIVERGENT).all()
    assert (out["overshoot"][:, 0] > 1e-4).all()


def test_single_mode_measures_are_exact() -> None:
    """u0 = cos(π x / L) is an eigenvector: after n FTCS steps it is g^n u0, g = 1 - r λ."""
    grid = Grid(dims=1, cells=32, length=1.0)
    x = grid.centres
    initial = np.cos(np.pi * x)
    r = np.array([0.1, 0.4])
    eigenvalue = 4 * np.sin(np.pi / (2 * grid.cells)) ** 2
    g = 1 - r * eigenvalue
    checkpoints = [5, 50, 500]
    out = classify("ftcs", "neumann", grid, initial, r, checkpoints)
    initial_range = initial.max() - initial.min()
    coefficient = 1.0
    for i, n in enumerate(checkpoints):
        np.testing.assert_allclose(out["distance"][:, i], np.abs(g**n) * initial.max() / initial_range, rtol=1e-10)
        previous = 0 if i == 0 else checkpoints[i - 1]
        np.testing.assert_allclose(out["growth"][:, i], np.abs(g), rtol=1e-9)
        assert n > previous
        time = n * r * grid.dx**2 / coefficient
        continuous = np.exp(-coefficient * np.pi**2 * time)
        rms_mode = np.sqrt(np.mean(initial**2))
        np.testing.assert_allclose(
            out["error"][:, i], np.abs(g**n - continuous) * rms_mode / initial_range, rtol=1e-6, atol=1e-15
        )
    assert (out["overshoot"] == 0).all()


def test_mass_error_is_round_off_for_conserving_boundaries_and_nan_for_dirichlet() -> None:
    grid = Grid(dims=2, cells=12, length=1.0)
    initial = initial_condition("step", grid)
    for boundary in ("neumann", "periodic"):
        out = classify("ftcs", boundary, grid, initial, [0.05, 0.2, 0.25], [10, 1000])
        assert (out["mass_error"] < 1e-12).all()
    out = classify("ftcs", "dirichlet", grid, initial, [0.2], [10])
    assert np.isnan(out["mass_error"]).all()


@pytest.mark.parametrize("dims", [1, 2])
def test_equilibrium_is_reached_when_the_slowest_continuous_mode_predicts(dims: int) -> None:
    """Neumann step: u0 - 1/2 projects onto cos(π x/L) (per dimension); its amplitude
    decays as exp(-D π² t / L²). Observed first equilibrium time within 10 %."""
    cells, tolerance, r = 32, 1e-3, 0.2 / dims
    grid = Grid(dims=dims, cells=cells, length=1.0)
    initial = initial_condition("step", grid)
    # slowest-mode amplitude, computed from the cosine directly (not from the DCT code)
    mode_1d = np.cos(np.pi * grid.centres)
    step_1d = (grid.centres < 0.5).astype(float) - 0.5
    coefficient_1d = (step_1d @ mode_1d) / (mode_1d @ mode_1d)
    # in d dims the step is a product of 1-D steps; its (1, 0, ...) modes each carry
    # coefficient_1d / 2**(d-1) of the 1-D half-step; their sum peaks at a corner
    amplitude = dims * abs(coefficient_1d) * 0.5 ** (dims - 1) * mode_1d.max()
    predicted_time = np.log(amplitude / tolerance) / np.pi**2
    step_size = r * grid.dx**2
    checkpoints = list(range(20, int(2 * predicted_time / step_size), 20))
    out = classify("ftcs", "neumann", grid, initial, [r], checkpoints, tolerance=tolerance)
    reached = np.flatnonzero(out["status"][0] == EQUILIBRIUM)
    observed_time = checkpoints[reached[0]] * step_size
    assert observed_time == pytest.approx(predicted_time, rel=0.10)
    assert (out["status"][0, reached[0]:] == EQUILIBRIUM).all()


def test_settled_runs_are_not_growing_whatever_their_last_digits_do() -> None:
    """Backward Euler at huge r lands on equilibrium in one step; later checkpoints
    fluctuate at round-off level and must stay 'equilibrium'."""
    grid = Grid(dims=1, cells=64, length=1.0)
    out = classify("backward-euler", "periodic", grid, initial_condition("random", grid), [1e8, 1e12], [1, 10, 100, 1000])
    assert (out["status"] == EQUILIBRIUM).all(), out


def test_non_finite_runs_are_divergent_without_warnings() -> None:
    grid = Grid(dims=1, cells=16, length=1.0)
    out = classify("ftcs", "periodic", grid, initial_condition("random", grid), [10.0], [100, 2000, 5000])
    assert (out["status"][0] == DIVERGENT).all()


def test_fields_are_kept_on_request() -> None:
    grid = Grid(dims=2, cells=8, length=1.0)
    initial = initial_condition("gaussian", grid)
    final = classify("ftcs", "neumann", grid, initial, [0.1, 0.2], [3, 7], keep_fields="final")
    every = classify("ftcs", "neumann", grid, initial, [0.1, 0.2], [3, 7], keep_fields="checkpoints")
    assert final["field"].shape == (2, 8, 8) and every["field"].shape == (2, 2, 8, 8)
    np.testing.assert_array_equal(every["field"][:, -1], final["field"])
    assert "field" not in classify("ftcs", "neumann", grid, initial, [0.1], [3])


# -- classification that depends on the run and the step count only -------------------


@st.composite
def sweeps(draw):
    """A small random sweep: scheme, boundary, dims, initial field, r around the bound."""
    scheme = draw(st.sampled_from(SCHEMES))
    boundary = draw(st.sampled_from(BOUNDARIES))
    dims = draw(st.integers(1, 3))
    grid = Grid(dims, draw(st.integers(3, {1: 16, 2: 7, 3: 4}[dims])), 1.0)
    bound = stability_bound(scheme, boundary, grid)
    batch = draw(st.integers(1, 6))
    if bound is None:
        r = np.exp(draw(st.lists(st.floats(-4.0, 7.0), min_size=batch, max_size=batch)))
    else:
        r = bound * np.array(draw(st.lists(st.floats(0.5, 1.5), min_size=batch, max_size=batch)))
    kind = draw(st.sampled_from(["step", "random", "gaussian"]))
    initial = initial_condition(kind, grid, seed=draw(st.integers(0, 99)))
    return scheme, boundary, grid, initial, r


@settings(deadline=None, max_examples=40)
@given(sweeps(), st.integers(20, 700))
def test_status_at_n_does_not_depend_on_the_other_checkpoints(sweep, n):
    scheme, boundary, grid, initial, r = sweep
    asked = [[n], [n // 10, n], [1, n // 2, n]]
    results = [classify(scheme, boundary, grid, initial, r, checkpoints) for checkpoints in asked]
    reference = results[0]
    for out in results[1:]:
        np.testing.assert_array_equal(out["status"][:, -1], reference["status"][:, 0])
        for name in MEASURES:
            np.testing.assert_array_equal(out[name][:, -1], reference[name][:, 0])
        for name in ("steps_to_equilibrium", "steps_to_divergence"):
            np.testing.assert_array_equal(out[name], reference[name])


@settings(deadline=None, max_examples=40)
@given(sweeps(), st.lists(st.integers(1, 500), min_size=1, max_size=6, unique=True))
def test_first_passages_agree_with_the_status_at_every_checkpoint(sweep, checkpoints):
    """Divergent at n exactly when steps_to_divergence <= n (growth and non-finite values
    never stop); at equilibrium distance at n means steps_to_equilibrium <= n."""
    scheme, boundary, grid, initial, r = sweep
    checkpoints = sorted(checkpoints)
    out = classify(scheme, boundary, grid, initial, r, checkpoints)
    steps = np.array(checkpoints)
    divergent = out["status"] == DIVERGENT
    np.testing.assert_array_equal(divergent, out["steps_to_divergence"][:, None] <= steps)
    settled = out["distance"] <= 1e-3
    assert not (settled & (out["steps_to_equilibrium"][:, None] > steps)).any()
    assert (out["steps_to_equilibrium"] <= steps[-1] + 1).all()
    assert out["steps_to_divergence"].dtype == np.int64


def test_growth_is_measured_over_a_window_set_by_the_step_count_alone():
    """Two modes: cos(π x) decaying slowly and the highest one decaying fast.  Growth at
    n is (‖u_n‖ / ‖u_m‖)^(1/(n-m)) with m the largest power of two not above n/2."""
    grid = Grid(1, 32, 1.0)
    slow = np.cos(np.pi * grid.centres)
    fast = np.cos(np.pi * 31 * grid.centres)
    initial = slow + fast
    r = np.array([0.25])
    lam = 4 * np.sin(np.pi * np.array([1, 31]) / (2 * grid.cells)) ** 2
    g = 1 - r[0] * lam
    amplitude = np.array([np.sqrt(np.sum(slow**2)), np.sqrt(np.sum(fast**2))])
    checkpoints = [1, 3, 6, 100, 1000]
    out = classify("ftcs", "neumann", grid, initial, r, checkpoints)
    for i, n in enumerate(checkpoints):
        m = {1: 0, 3: 1, 6: 2, 100: 32, 1000: 256}[n]
        norm = lambda k: np.sqrt(np.sum((amplitude * g**k) ** 2))  # noqa: E731
        assert out["growth"][0, i] == pytest.approx((norm(n) / norm(m)) ** (1 / (n - m)), rel=1e-9)


def test_passage_attributes_document_the_sentinel():
    attributes = passage_attributes(30000)
    for name in ("steps_to_equilibrium", "steps_to_divergence"):
        assert attributes[name]["not_reached"] == 30001
        assert "30001" in attributes[name]["comment"]
        assert attributes[name]["units"] == "1"
