"""Properties of the integrator that must hold for any batch (Hypothesis)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.numerics import BOUNDARIES, SCHEMES, Batch, Grid, integrate, stability_limit

FAST = settings(deadline=None, max_examples=25)


@st.composite
def batches(draw, schemes=SCHEMES, boundaries=BOUNDARIES, stable=True):
    """A small grid and a batch of runs with their own field, D and dt."""
    scheme = draw(st.sampled_from(schemes))
    boundary = draw(st.sampled_from(boundaries))
    dims = draw(st.integers(1, 3))
    grid = Grid(
        dims, draw(st.integers(2, {1: 12, 2: 6, 3: 4}[dims])), draw(st.sampled_from([1.0, 2.5]))
    )
    batch = draw(st.integers(1, 11))
    limit = stability_limit(scheme, dims) if stable else None
    upper = limit if limit is not None else 50.0
    r = np.array(draw(st.lists(st.floats(0.0, upper), min_size=batch, max_size=batch)))
    coefficient = np.array(draw(st.lists(st.floats(0.01, 10.0), min_size=batch, max_size=batch)))
    step_size = r * grid.dx**2 / coefficient
    seed = draw(st.integers(0, 2**16))
    initial = np.random.default_rng(seed).random((batch, *grid.shape))
    return Batch(scheme, boundary, grid, initial, coefficient, step_size)


def final(batch, steps):
    ((_, state),) = integrate(batch, [steps])
    return state.copy()


@FAST
@given(batches(), st.integers(1, 30))
def test_a_batch_equals_its_runs_integrated_one_by_one(case, steps):
    together = final(case, steps)
    for i in range(case.size):
        run = replace(
            case, initial=case.initial[i], coefficient=case.coefficient[i : i + 1], step_size=case.step_size[i : i + 1]
        )
        alone = final(run, steps)
        if case.scheme == "ftcs":  # each run's arithmetic is independent of its batch
            np.testing.assert_array_equal(together[i], alone[0])
        else:
            np.testing.assert_allclose(together[i], alone[0], rtol=0, atol=1e-13)


@FAST
@given(batches(), st.lists(st.integers(1, 40), min_size=1, max_size=4, unique=True))
def test_checkpoints_equal_separate_integrations(case, checkpoints):
    checkpoints = sorted(checkpoints)
    seen = [(steps, state.copy()) for steps, state in integrate(case, checkpoints)]
    assert [steps for steps, _ in seen] == checkpoints
    for steps, state in seen:
        separate = final(case, steps)
        if case.scheme == "ftcs":
            np.testing.assert_array_equal(state, separate)
        else:
            np.testing.assert_allclose(state, separate, rtol=0, atol=1e-13)


@FAST
@given(batches(boundaries=("neumann", "periodic")), st.integers(1, 200))
def test_mass_is_conserved_by_stable_runs(case, steps):
    state = final(case, steps)
    axes = tuple(range(1, case.grid.dims + 1))
    mass, mass0 = state.sum(axis=axes), case.initial.sum(axis=axes)
    assert np.all(np.abs(mass - mass0) <= 1e-12 * np.abs(mass0))


@FAST
@given(
    batches(
        schemes=("backward-euler", "crank-nicolson"),
        boundaries=("neumann", "periodic"),
        stable=False,
    )
)
def test_implicit_schemes_conserve_mass_for_any_step_size(case):
    case = replace(case, step_size=case.step_size * 1e4)  # r up to 5e5
    state = final(case, 7)
    axes = tuple(range(1, case.grid.dims + 1))
    mass, mass0 = state.sum(axis=axes), case.initial.sum(axis=axes)
    assert np.all(np.abs(mass - mass0) <= 1e-12 * np.abs(mass0))
    assert np.all(np.isfinite(state))
