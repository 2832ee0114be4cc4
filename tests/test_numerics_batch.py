"""The batch value object: what it accepts, refuses and derives."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.numerics import Batch, Grid
from pipeline.numerics.particles import langevin, random_walk

GRID = Grid(2, 4, 1.0)  # dx = 1/4: D dt / dx**2 below is exact in binary


def test_arrays_become_contiguous_float64_and_cfl_is_d_dt_over_dx_squared() -> None:
    coefficient = np.arange(6)[::2]  # int, strided
    step_size = np.array([[1, 2], [3, 4], [5, 6]])[:, 1]  # int, strided
    batch = Batch("ftcs", "neumann", GRID, np.ones(GRID.shape, dtype=np.float32), coefficient, step_size)
    for values in (batch.coefficient, batch.step_size, batch.initial):
        assert values.dtype == np.float64
    assert batch.coefficient.flags.c_contiguous and batch.step_size.flags.c_contiguous
    assert batch.size == 3
    np.testing.assert_array_equal(batch.cfl, [0 * 2 * 16, 2 * 4 * 16, 4 * 6 * 16])


def test_states_is_a_fresh_batch_of_the_initial_field() -> None:
    initial = np.arange(16.0).reshape(GRID.shape)
    batch = Batch("ftcs", "periodic", GRID, initial, np.ones(2), np.full(2, 0.01))
    states = batch.states()
    assert states.shape == (2, *GRID.shape) and states.flags.c_contiguous
    states[0] = -1.0
    np.testing.assert_array_equal(batch.initial, initial)
    np.testing.assert_array_equal(batch.states()[0], initial)
    per_run = np.stack([initial, 2 * initial])
    np.testing.assert_array_equal(Batch("ftcs", "periodic", GRID, per_run, np.ones(2), np.ones(2)).states(), per_run)


@pytest.mark.parametrize(
    ("initial", "coefficient", "step_size", "named"),
    [
        (np.ones((4, 4)), np.ones((2, 1)), np.ones((2, 1)), "coefficient"),
        (np.ones((4, 4)), np.float64(1.0), np.float64(1.0), "coefficient"),
        (np.ones((4, 4)), np.ones(2), np.ones(3), "step_size"),
        (np.ones((4, 4)), np.ones(2), np.float64(0.1), "step_size"),
        (np.ones(16), np.ones(2), np.ones(2), "initial"),
        (np.ones((3, 4, 4)), np.ones(2), np.ones(2), "initial"),
    ],
)
def test_mismatched_shapes_are_refused_naming_the_field(initial, coefficient, step_size, named) -> None:
    with pytest.raises(ValueError, match=f"^{named} must be"):
        Batch("ftcs", "neumann", GRID, initial, coefficient, step_size)


def test_a_batch_is_frozen() -> None:
    batch = Batch("ftcs", "neumann", GRID, np.ones(GRID.shape), np.ones(1), np.ones(1))
    with pytest.raises(AttributeError):
        batch.scheme = "crank-nicolson"  # type: ignore[misc]


def test_particle_drivers_refuse_a_batch_of_another_scheme() -> None:
    keys = np.arange(1, 3, dtype=np.uint64)
    grid_batch = Batch("ftcs", "neumann", GRID, np.ones(GRID.shape), np.ones(2), np.full(2, 0.01))
    with pytest.raises(AssertionError, match="ftcs"):
        next(random_walk(grid_batch, [1], particles=10, keys=keys))
    with pytest.raises(AssertionError, match="random-walk"):
        next(langevin(Batch("random-walk", "neumann", GRID, np.ones(GRID.shape), np.ones(2), np.ones(2)),
                      [1], particles=10, keys=keys))
