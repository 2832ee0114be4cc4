"""Schemes against exact references: the eigenbasis solution, a dense stencil matrix, and
the continuous heat equation."""

from __future__ import annotations

import subprocess
import sys
from functools import reduce

import numpy as np
import pytest
import scipy.linalg

from pipeline.numerics import (
    BOUNDARIES,
    INITIALS,
    SCHEMES,
    Batch,
    Grid,
    amplification_factor,
    continuous_solution,
    discrete_solution,
    equilibrium,
    equilibrium_steps,
    initial_condition,
    integrate,
    laplacian_eigenvalues,
    slowest_mode,
    stability_limit,
)

CELLS = {1: 8, 2: 7, 3: 6}
CHECKPOINTS = (1, 4, 9)


def stencil_matrix_1d(boundary: str, cells: int) -> np.ndarray:
    """``A`` with ``(A u)_j = u_{j-1} - 2 u_j + u_{j+1}``, ghosts by the boundary's rule."""
    matrix = np.zeros((cells, cells))
    for j in range(cells):
        matrix[j, j] -= 2.0
        for neighbour in (j - 1, j + 1):
            if 0 <= neighbour < cells:
                matrix[j, neighbour] += 1.0
            elif boundary == "neumann":  # mirrored ghost: u_ghost = u_j
                matrix[j, j] += 1.0
            elif boundary == "periodic":
                matrix[j, neighbour % cells] += 1.0
            # dirichlet: ghost value is zero
    return matrix


def stencil_matrix(boundary: str, grid: Grid) -> np.ndarray:
    """Kronecker sum of the 1-D matrices (C order: last axis fastest)."""
    one = stencil_matrix_1d(boundary, grid.cells)
    eye = np.eye(grid.cells)
    terms = []
    for axis in range(grid.dims):
        factors = [one if i == axis else eye for i in range(grid.dims)]
        terms.append(reduce(np.kron, factors))
    return sum(terms)


def dense_reference(scheme, boundary, grid, initial, r, checkpoints):
    """Step the flattened field with dense matrices, one step at a time."""
    matrix = stencil_matrix(boundary, grid)
    eye = np.eye(grid.size)
    u = initial.reshape(-1).copy()
    if scheme == "ftcs":
        explicit, implicit = eye + r * matrix, None
    elif scheme == "backward-euler":
        explicit, implicit = eye, eye - r * matrix
    else:
        explicit, implicit = eye + r / 2 * matrix, eye - r / 2 * matrix
    factors = None if implicit is None else scipy.linalg.lu_factor(implicit)
    results, done = {}, 0
    for target in checkpoints:
        for _ in range(target - done):
            u = explicit @ u
            if factors is not None:
                u = scipy.linalg.lu_solve(factors, u)
        done = target
        results[target] = u.reshape(grid.shape).copy()
    return results


def mixed_batch(scheme: str, grid: Grid):
    """Three runs with different D and dt, r spread over the stable range of ``scheme``."""
    limit = stability_limit(scheme, grid.dims) or 2.0
    r = np.array([0.1, 0.55, 1.0]) * limit
    coefficient = np.array([0.5, 1.0, 3.0])
    step_size = r * grid.dx**2 / coefficient
    return coefficient, step_size, r


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_matches_discrete_and_dense_references(scheme, boundary, dims):
    grid = Grid(dims, CELLS[dims], 2.0)
    coefficient, step_size, r = mixed_batch(scheme, grid)
    rng = np.random.default_rng(dims)
    initial = rng.random((3, *grid.shape)) - 0.3
    spread = initial.max() - initial.min()
    dense = [
        dense_reference(scheme, boundary, grid, initial[i], r[i], CHECKPOINTS) for i in range(3)
    ]
    seen = []
    batch = Batch(scheme, boundary, grid, initial, coefficient, step_size)
    for steps, state in integrate(batch, CHECKPOINTS):
        seen.append(steps)
        exact = discrete_solution(batch, steps)
        assert state.shape == (3, *grid.shape)
        assert np.abs(state - exact).max() <= 1e-10 * spread
        for i in range(3):
            assert np.abs(state[i] - dense[i][steps]).max() <= 1e-10 * spread
    assert seen == list(CHECKPOINTS)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_shared_initial_broadcasts_over_batch(scheme):
    grid = Grid(2, 6, 1.0)
    initial = initial_condition("random", grid, seed=3)
    coefficient, step_size, _ = mixed_batch(scheme, grid)
    batch = Batch(scheme, "neumann", grid, initial, coefficient, step_size)
    ((_, state),) = integrate(batch, [5])
    exact = discrete_solution(batch, 5)
    assert state.shape == (3, *grid.shape)
    np.testing.assert_allclose(state, exact, rtol=0, atol=1e-12)


def test_ftcs_wall_update_is_the_documented_formula():
    grid = Grid(1, 5, 1.0)
    u0 = np.array([1.0, 0.25, 0.5, 0.0, 2.0])
    coefficient, step_size = np.array([0.3]), np.array([0.01])
    r = coefficient[0] * step_size[0] / grid.dx**2
    ((_, state),) = integrate(Batch("ftcs", "neumann", grid, u0, coefficient, step_size), [1])
    assert state[0, 0] == u0[0] + r * (u0[1] - u0[0])
    assert state[0, -1] == u0[-1] + r * (u0[-2] - u0[-1])


def test_ftcs_divergence_gives_non_finite_values_without_error():
    grid = Grid(1, 16, 1.0)
    initial = initial_condition("random", grid)
    r = np.array([0.4, 1.0])
    ((_, state),) = integrate(Batch("ftcs", "dirichlet", grid, initial, r, np.full(2, grid.dx**2)), [3000])
    assert np.isfinite(state[0]).all()
    assert not np.isfinite(state[1]).all()


# --- continuous solution -------------------------------------------------------------


def single_modes(boundary: str, grid: Grid):
    """A product mode of the boundary's basis and its continuous |κ|²."""
    x = grid.centres
    if boundary == "neumann":
        waves = [1, 2, 3][: grid.dims]
        factors = [np.cos(np.pi * k * x / grid.length) for k in waves]
        kappa2 = sum((np.pi * k / grid.length) ** 2 for k in waves)
    elif boundary == "periodic":
        waves = [1, 2, 1][: grid.dims]
        factors = [np.sin(2 * np.pi * k * x / grid.length) for k in waves]
        kappa2 = sum((2 * np.pi * k / grid.length) ** 2 for k in waves)
    else:
        wall = (grid.cells + 1) * grid.dx
        waves = [1, 2, 1][: grid.dims]
        factors = [np.sin(np.pi * k * (x + grid.dx / 2) / wall) for k in waves]
        kappa2 = sum((np.pi * k / wall) ** 2 for k in waves)
    mode = reduce(np.multiply.outer, factors)
    return mode, kappa2


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_continuous_solution_of_a_single_mode_is_analytic(boundary, dims):
    grid = Grid(dims, 8, 3.0)
    mode, kappa2 = single_modes(boundary, grid)
    coefficient = np.array([0.1, 1.0, 2.5])
    time = np.array([0.0, 0.3, 0.7])
    result = continuous_solution(boundary, grid, mode, coefficient, time)
    for i in range(3):
        expected = np.exp(-coefficient[i] * kappa2 * time[i]) * mode
        np.testing.assert_allclose(result[i], expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_continuous_solution_conserves_mass_only_when_the_boundary_does(boundary):
    grid = Grid(2, 8, 1.0)
    initial = initial_condition("step", grid)
    result = continuous_solution(boundary, grid, initial, np.array([1.0]), 0.01)
    change = abs(result.sum() - initial.sum()) / initial.sum()
    assert (change < 1e-12) == (boundary != "dirichlet")


def convergence_errors(scheme, boundary, cells_list, time, step_of):
    errors = []
    for cells in cells_list:
        grid = Grid(1, cells, 1.0)
        x = grid.centres
        if boundary == "dirichlet":
            wall = (cells + 1) * grid.dx
            initial = np.sin(np.pi * (x + grid.dx / 2) / wall)
        else:
            initial = np.cos(2 * np.pi * x) + 0.5 * np.cos(4 * np.pi * x)
        step_size = step_of(grid.dx)
        steps = round(time / step_size)
        step_size = time / steps
        coefficient = np.array([1.0])
        exact = continuous_solution(boundary, grid, initial, coefficient, time)
        ((_, state),) = integrate(
            Batch(scheme, boundary, grid, initial, coefficient, np.array([step_size])), [steps]
        )
        errors.append(np.sqrt(np.mean((state - exact) ** 2)))
    return np.array(errors)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize(
    ("scheme", "step_of", "order"),
    [
        ("ftcs", lambda dx: 0.25 * dx**2, 2),  # fixed r: error O(dx²)
        ("backward-euler", lambda dx: 0.02 * dx, 1),  # dt ∝ dx: first order in time dominates
        ("crank-nicolson", lambda dx: 0.02 * dx, 2),  # dt ∝ dx: second order in time and space
    ],
)
def test_schemes_converge_to_the_continuous_solution(scheme, boundary, step_of, order):
    errors = convergence_errors(scheme, boundary, [16, 32, 64, 128], 0.02, step_of)
    observed = np.log2(errors[:-1] / errors[1:])
    assert np.all(observed > order - 0.2), observed
    assert np.all(observed < order + 0.35), observed


def test_crank_nicolson_is_second_order_in_time():
    # fixed fine grid, dt halved: error vs the same-grid exact-in-time solution falls 4x
    grid = Grid(1, 32, 1.0)
    initial = initial_condition("gaussian", grid)
    time = 0.01
    # the time-exact solution on this grid: each mode decays as exp(-D λ t / dx²)
    semi = discrete_solution(
        Batch("ftcs", "neumann", grid, initial, np.array([1.0]), np.array([time / 2**20])), 2**20
    )
    errors = []
    for steps in (20, 40, 80):
        runs = Batch("crank-nicolson", "neumann", grid, initial, np.array([1.0]), np.array([time / steps]))
        ((_, state),) = integrate(runs, [steps])
        errors.append(np.abs(state - semi).max())
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all(ratios > 3.6), ratios


# --- theory ---------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_von_neumann_bound_matches_stability_limit(scheme, dims):
    grid = Grid(dims, 8, 1.0)  # even: periodic reaches λ = 4·dims exactly
    eigenvalues = laplacian_eigenvalues("periodic", grid)
    limit = stability_limit(scheme, dims)
    if limit is None:
        for r in (0.1, 1.0, 1e3, 1e9):
            assert np.abs(amplification_factor(scheme, r, eigenvalues)).max() <= 1.0
        return
    assert limit == 1 / (2 * dims)
    assert np.abs(amplification_factor(scheme, limit, eigenvalues)).max() <= 1.0 + 1e-14
    assert np.abs(amplification_factor(scheme, 1.01 * limit, eigenvalues)).max() > 1.0
    for boundary in BOUNDARIES:
        lam = laplacian_eigenvalues(boundary, grid)
        assert np.abs(amplification_factor(scheme, limit, lam)).max() <= 1.0 + 1e-14


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_laplacian_eigenvalues_are_those_of_the_stencil(boundary):
    grid = Grid(2, 5, 1.0)
    dense = np.sort(np.linalg.eigvalsh(-stencil_matrix(boundary, grid)))
    np.testing.assert_allclose(
        np.sort(laplacian_eigenvalues(boundary, grid).ravel()), dense, atol=1e-12
    )


def test_slowest_mode_amplitude_of_pure_modes():
    grid = Grid(1, 16, 2.0)
    x = grid.centres
    eigenvalue, amplitude = slowest_mode("neumann", grid, 3 + np.cos(np.pi * x / grid.length))
    assert eigenvalue == pytest.approx(4 * np.sin(np.pi / 32) ** 2, rel=1e-12)
    assert amplitude == pytest.approx(0.5, rel=1e-12)
    # degenerate eigenspace in 2-D: both cos(pi x/L) and cos(pi y/L) count
    grid2 = Grid(2, 16, 2.0)
    mode = np.cos(np.pi * x / grid.length)
    _, amplitude = slowest_mode("neumann", grid2, mode[:, None] + mode[None, :])
    assert amplitude == pytest.approx(0.5, rel=1e-12)
    # a mode it does not hold contributes nothing
    _, amplitude = slowest_mode("neumann", grid, np.cos(2 * np.pi * x / grid.length))
    assert amplitude < 1e-14
    eigenvalue, _ = slowest_mode("dirichlet", grid2, initial_condition("step", grid2))
    assert eigenvalue == pytest.approx(2 * 4 * np.sin(np.pi / 34) ** 2, rel=1e-12)


@pytest.mark.parametrize("scheme", ["backward-euler", "crank-nicolson", "ftcs"])
def test_equilibrium_steps_predicts_when_the_distance_reaches_tolerance(scheme):
    grid = Grid(1, 32, 1.0)
    initial = initial_condition("step", grid)
    r, tolerance = 0.4, 1e-3
    predicted = equilibrium_steps(scheme, "neumann", grid, initial, r, tolerance)
    assert predicted is not None and predicted > 10
    checkpoints = [predicted // 2, predicted]
    dt = np.array([r * grid.dx**2])
    spread = initial.max() - initial.min()
    target = equilibrium("neumann", initial)
    distance = [
        np.abs(state - target).max() / spread
        for _, state in integrate(
            Batch(scheme, "neumann", grid, initial, np.array([1.0]), dt), checkpoints
        )
    ]
    assert distance[0] > tolerance
    assert distance[1] <= 1.05 * tolerance
    assert equilibrium_steps("ftcs", "neumann", grid, initial, 0.6, tolerance) is None
    many = equilibrium_steps(scheme, "neumann", grid, initial, np.array([0.2, 0.4]), tolerance)
    assert many[1] == predicted and many[0] > predicted


def test_equilibrium_values():
    field = np.arange(6.0).reshape(2, 3)
    assert equilibrium("neumann", field) == 2.5
    assert equilibrium("dirichlet", field) == 0.0
    np.testing.assert_array_equal(equilibrium("periodic", field, dims=1), [1.0, 4.0])


# --- grid and initial conditions ------------------------------------------------------


def test_grid_geometry():
    grid = Grid(3, 4, 2.0)
    assert grid.dx == 0.5
    assert grid.shape == (4, 4, 4)
    assert grid.size == 64
    np.testing.assert_allclose(grid.centres, [0.25, 0.75, 1.25, 1.75])
    assert hash(grid) == hash(Grid(3, 4, 2.0))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_initial_conditions(dims):
    grid = Grid(dims, 10, 4.0)
    step = initial_condition("step", grid)
    assert step.shape == grid.shape and step.dtype == np.float64
    assert step.sum() == 5**dims and step[(0,) * dims] == 1 and step[(5,) * dims] == 0
    gaussian = initial_condition("gaussian", grid)
    x = grid.centres[4]  # 1.8, 0.2 from the centre 2.0
    assert gaussian[(4,) * dims] == pytest.approx(np.exp(-dims * 0.2**2 / (2 * 0.2**2)))
    random = initial_condition("random", grid, seed=7)
    np.testing.assert_array_equal(random, np.random.default_rng(7).random(grid.shape))
    assert x == pytest.approx(1.8)
    assert set(INITIALS) == {"step", "gaussian", "random"}


def test_importing_numerics_pulls_in_no_dask_xarray_or_zarr():
    code = (
        "import pipeline.numerics, sys; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'dask', 'xarray', 'zarr'}); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_numerics_works_without_yaml():
    # numba itself imports yaml when it is installed (for .numba_config.yaml), so
    # instead of inspecting sys.modules, make `import yaml` fail and use the layer.
    code = (
        "import sys; sys.modules['yaml'] = None; "
        "import numpy as np; from pipeline.numerics import Batch, Grid, integrate; "
        "grid = Grid(1, 4, 1.0); "
        "list(integrate(Batch('ftcs', 'neumann', grid, np.ones(4), np.ones(1), np.full(1, 1e-3)), [1]))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_numerics_sources_import_nothing_from_the_upper_layers():
    import ast
    from pathlib import Path

    import pipeline.numerics

    forbidden = {"dask", "xarray", "zarr", "yaml", "distributed", "click"}
    for path in Path(pipeline.numerics.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            assert not {name.split(".")[0] for name in names} & forbidden, (path.name, names)
            assert not any(
                name.startswith("pipeline.") and not name.startswith("pipeline.numerics")
                for name in names
            )
