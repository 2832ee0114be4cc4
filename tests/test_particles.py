"""Particle schemes and their random numbers, against exact answers.

Statistical tolerances are derived, never tuned:

* counts are tested with Pearson's chi-square against the exact cell probabilities
  (all particles are independent, so the counts of ``R`` runs of ``N`` particles are one
  multinomial sample of ``R N`` draws); the bound is the chi-square quantile with a
  false-alarm probability of :data:`FALSE_ALARM` (cells expecting fewer than 5 counts
  are pooled);
* moments are tested as z-scores against their exact standard errors, or (for per-run
  measured variances) against the standard error estimated from the spread over runs,
  within :data:`Z_BOUND` standard errors.

Each such test is paired with one that shows it can fail: the same statistic against a
slightly wrong answer is far beyond the bound.
"""

from __future__ import annotations

import subprocess
import sys

import numba
import numpy as np
import pytest
from scipy import stats

from pipeline.criteria import Criteria
from pipeline.numerics import Batch, Grid, discrete_solution, initial_condition, philox
from pipeline.numerics.particles import (
    drift_unstable,
    jump_probability,
    langevin,
    random_walk,
    stationary_variance,
    variance_after,
    walk_valid,
)

FALSE_ALARM = 1e-6
Z_BOUND = 4.0
BOUNDARIES = ("neumann", "periodic", "dirichlet")


def keys_for(runs: int, salt: int = 0) -> np.ndarray:
    return np.array([philox.stream_key(salt, {"run": i}) for i in range(runs)], dtype=np.uint64)


def pearson(counts: np.ndarray, probabilities: np.ndarray) -> tuple[float, int]:
    """Pearson's statistic of ``counts`` (one multinomial sample) and its degrees of freedom.

    Categories expecting fewer than 5 counts are pooled into one.
    """
    counts = np.asarray(counts, dtype=float).ravel()
    probabilities = np.asarray(probabilities, dtype=float).ravel()
    assert np.isclose(probabilities.sum(), 1.0, rtol=0, atol=1e-9), probabilities.sum()
    total = counts.sum()
    expected = total * probabilities
    small = expected < 5
    if small.any():
        counts = np.append(counts[~small], counts[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    keep = expected > 0
    assert counts[~keep].sum() == 0, "counts where the exact probability is zero"
    statistic = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    return statistic, int(keep.sum()) - 1


def chi_square_bound(dof: int) -> float:
    return float(stats.chi2.isf(FALSE_ALARM, dof))


# -- the generator ----------------------------------------------------------------------


def test_philox_known_answers() -> None:
    """Random123's published known-answer vectors for Philox4x32-10 (kat_vectors)."""
    counters = np.array(
        [
            [0, 0, 0, 0],
            [0xFFFFFFFF] * 4,
            [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
        ]
    )
    keys = [0, 0xFFFFFFFF_FFFFFFFF, (0x299F31D0 << 32) | 0xA4093822]  # (k1 << 32) | k0
    expected = [
        [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8],
        [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD],
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
    ]
    for counter, key, answer in zip(counters, keys, expected, strict=True):
        np.testing.assert_array_equal(philox.random_words(counter[None, :], key)[0], answer)


def test_uniforms_pass_chi_square_and_a_skewed_sample_does_not() -> None:
    n, bins = 2_000_000, 1000
    u = philox.uniforms(n, philox.stream_key(1, {}))
    assert 0.0 <= u.min() and u.max() < 1.0
    statistic, dof = pearson(np.bincount((u * bins).astype(int), minlength=bins), np.full(bins, 1 / bins))
    assert statistic < chi_square_bound(dof)
    skewed, dof = pearson(np.bincount((u**1.03 * bins).astype(int), minlength=bins), np.full(bins, 1 / bins))
    assert skewed > chi_square_bound(dof)


def test_random_words_are_uniform_in_every_byte_and_counter_direction() -> None:
    """Each output byte is uniform whether the particle or the step counter varies."""
    n = 200_000
    index = np.arange(n)
    for varying in (0, 1):  # c0 (step) or c1 (particle)
        counters = np.zeros((n, 4), dtype=np.uint64)
        counters[:, varying] = index
        words = philox.random_words(counters, 12345)
        for word in words.T:
            for shift in (0, 8, 16, 24):
                byte = (word >> np.uint64(shift)) & np.uint64(0xFF)
                statistic, dof = pearson(np.bincount(byte.astype(np.int64), minlength=256), np.full(256, 1 / 256))
                assert statistic < chi_square_bound(dof), (varying, shift)


def test_compiled_log_sin_cos_are_within_an_ulp_of_numpy() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([np.exp(rng.uniform(-700, 0, 100_000)), rng.uniform(0, 1, 100_000), [1.0, 0.5, 2**-33]])
    logs = philox.elementary("log", values)[:, 0]
    reference = np.log(values)
    nonzero = reference != 0
    assert np.all(np.abs(logs - reference)[nonzero] <= np.spacing(np.abs(reference[nonzero])))
    assert logs[~nonzero].tolist() == [0.0]
    angles = rng.uniform(-np.pi / 4, np.pi / 4, 200_000)
    sine, cosine = philox.elementary("sincos", angles).T
    assert np.all(np.abs(sine - np.sin(angles)) <= np.spacing(np.abs(np.sin(angles))))
    assert np.all(np.abs(cosine - np.cos(angles)) <= np.spacing(np.cos(angles)))


def test_normals_have_the_moments_and_distribution_of_a_standard_normal() -> None:
    z = philox.normals(250_000, philox.stream_key(2, {}))
    n = z.size
    # exact standard errors of the sample moments of N(0, 1)
    assert abs(z.mean()) / np.sqrt(1 / n) < Z_BOUND
    assert abs(z.var() - 1) / np.sqrt(2 / n) < Z_BOUND
    assert abs((z**3).mean()) / np.sqrt(15 / n) < Z_BOUND
    assert abs((z**4).mean() - 3) / np.sqrt(96 / n) < Z_BOUND
    assert stats.kstest(z, "norm").pvalue > FALSE_ALARM
    # the pairs are independent: the correlation of the two normals of a pair
    pairs = z.reshape(-1, 2)
    assert abs((pairs[:, 0] * pairs[:, 1]).mean()) / np.sqrt(1 / pairs.shape[0]) < Z_BOUND
    # the test can fail: a 1 % wider normal is far outside
    assert stats.kstest(z * 1.01, "norm").pvalue < FALSE_ALARM


def test_stream_keys_depend_on_values_only_and_agree_across_processes() -> None:
    key = philox.stream_key(3, {"coefficient": 0.1, "step_size": 1e-3, "scheme": "langevin"})
    assert key == philox.stream_key(3, {"scheme": "langevin", "step_size": 1e-3, "coefficient": 0.1})
    assert key == philox.stream_key(3, {"coefficient": np.float64(0.1), "step_size": 1e-3, "scheme": "langevin"})
    assert 0 <= key < 2**64
    others = {
        philox.stream_key(4, {"coefficient": 0.1, "step_size": 1e-3, "scheme": "langevin"}),
        philox.stream_key(3, {"coefficient": np.nextafter(0.1, 1), "step_size": 1e-3, "scheme": "langevin"}),
        philox.stream_key(3, {"coefficient": 0.1, "step_size": 1e-3, "scheme": "random-walk"}),
        philox.stream_key(3, {"coefficient": 0.1, "step_size": 1e-3}),
    }
    assert key not in others and len(others) == 4
    code = (
        "from pipeline.numerics import philox;"
        "print(philox.stream_key(3, {'coefficient': 0.1, 'step_size': 1e-3, 'scheme': 'langevin'}))"
    )
    for hash_seed in ("1",):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**__import__("os").environ, "PYTHONHASHSEED": hash_seed},
        )
        assert int(out.stdout) == key
    with pytest.raises(TypeError, match="coefficient"):
        philox.stream_key(0, {"coefficient": [1.0]})


# -- theory ----------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_walk_is_valid_exactly_up_to_two_d_p_equal_one(dims: int) -> None:
    limit = 1.0 / (2 * dims)
    assert walk_valid(dims, np.array([0.0, limit / 2, limit])).all()
    assert not walk_valid(dims, np.array([np.nextafter(limit, 1.0), 2 * limit, -1e-300])).any()


def test_drift_is_unstable_exactly_from_k_dt_two() -> None:
    step_size = np.array([0.5, 1.0, np.nextafter(1.0, 0.0), np.nextafter(1.0, 2.0), 3.0])
    np.testing.assert_array_equal(drift_unstable(2.0, step_size), [False, True, False, True, True])
    assert not drift_unstable(0.0, 10.0)  # free diffusion has no drift to amplify


def test_stationary_variance_is_the_fixed_point_of_the_variance_recursion() -> None:
    coefficient, confinement = 0.3, 2.0
    for step_size in (0.01, 0.5, 0.99):
        fixed = stationary_variance(coefficient, confinement, step_size)
        g = 1 - confinement * step_size
        assert np.isclose(g**2 * fixed + 2 * coefficient * step_size, fixed, rtol=1e-13)
        assert np.isclose(variance_after(coefficient, confinement, step_size, 10_000, 5.0), fixed, rtol=1e-12)
    assert np.isinf(stationary_variance(coefficient, confinement, 1.0))
    assert np.isinf(stationary_variance(coefficient, 0.0, 0.1))


# -- reproducibility ----------------------------------------------------------------------


def snapshots(scheme: str, boundary: str, grid: Grid, coefficient, step_size, keys, checkpoints, **kw):
    run = random_walk if scheme == "random-walk" else langevin
    initial = initial_condition("gaussian", grid)
    return list(run(Batch(scheme, boundary, grid, initial, coefficient, step_size), checkpoints, keys=keys, **kw))


@pytest.mark.parametrize("scheme", ["random-walk", "langevin"])
def test_runs_are_bit_identical_however_they_are_batched_ordered_or_threaded(scheme: str) -> None:
    grid = Grid(2, 8, 1.0)
    runs = 6
    coefficient = np.linspace(0.05, 0.4, runs)
    step_size = np.full(runs, grid.dx**2 * 0.5)  # p = D / 2: the last two runs are invalid walks
    extra = {"confinement": np.linspace(0.0, 3.0, runs)} if scheme == "langevin" else {}
    keys = keys_for(runs)
    checkpoints = [3, 10, 17]
    batch = snapshots(scheme, "dirichlet", grid, coefficient, step_size, keys, checkpoints, particles=1000, **extra)

    def one(i: int, checkpoints=checkpoints, threads: int | None = None):
        per_run = {k: v[i : i + 1] for k, v in extra.items()}
        return snapshots(scheme, "dirichlet", grid, coefficient[i : i + 1], step_size[i : i + 1], keys[i : i + 1], checkpoints, particles=1000, **per_run)

    def same(a, b) -> None:
        for name in ("concentration", "survivors", "mean", "variance", "invalid", "divergent"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)

    for i in range(runs):
        for (steps, whole), (steps_one, alone) in zip(batch, one(i), strict=True):
            assert steps == steps_one
            same(whole.__class__(**{n: getattr(whole, n)[i : i + 1] for n in whole.__dataclass_fields__}), alone)
    order = np.array([4, 1, 5, 0, 3, 2])
    shuffled = snapshots(
        scheme, "dirichlet", grid, coefficient[order], step_size[order], keys[order], checkpoints,
        particles=1000, **{k: v[order] for k, v in extra.items()},
    )
    for (_, whole), (_, permuted) in zip(batch, shuffled, strict=True):
        same(whole.__class__(**{n: getattr(whole, n)[order] for n in whole.__dataclass_fields__}), permuted)
    # the state at 17 steps does not depend on the checkpoints passed on the way
    (_, direct), = one(2, checkpoints=[17])
    same(batch[-1][1].__class__(**{n: getattr(batch[-1][1], n)[2:3] for n in direct.__dataclass_fields__}), direct)
    # nor on the number of threads
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = snapshots(scheme, "dirichlet", grid, coefficient, step_size, keys, checkpoints, particles=1000, **extra)
    finally:
        numba.set_num_threads(threads)
    for (_, a), (_, b) in zip(batch, single, strict=True):
        same(a, b)
    # and different keys do give different runs
    assert not np.array_equal(batch[-1][1].concentration[0], snapshots(
        scheme, "dirichlet", grid, coefficient, step_size, keys_for(runs, salt=1), checkpoints,
        particles=1000, **extra)[-1][1].concentration[0])


def test_invalid_walks_are_reported_not_clipped() -> None:
    grid = Grid(1, 8, 1.0)
    limit_step = grid.dx**2 / 2  # p = 1/2 exactly with D = 1
    step_size = np.array([limit_step, np.nextafter(limit_step, 1.0), 2 * limit_step])
    (_, snapshot), = snapshots("random-walk", "neumann", grid, np.ones(3), step_size, keys_for(3), [5], particles=100)
    np.testing.assert_array_equal(snapshot.invalid, [False, True, True])
    assert np.isfinite(snapshot.concentration[0]).all()
    assert np.isnan(snapshot.concentration[1:]).all() and np.isnan(snapshot.variance[1:]).all()


# -- the lattice walk is FTCS in the mean ---------------------------------------------------


def walk_counts(boundary: str, grid: Grid, probability: float, steps: list[int], runs: int, particles: int, initial: str = "step"):
    """Total counts per cell over ``runs`` runs, and the number absorbed, at each checkpoint."""
    u0 = initial_condition(initial, grid)
    step_size = np.full(runs, probability * grid.dx**2)
    out = []
    mass = u0.sum() / particles
    batch = Batch("random-walk", boundary, grid, u0, np.ones(runs), step_size)
    for _, snapshot in random_walk(batch, steps, particles=particles, keys=keys_for(runs)):
        counts = np.rint(snapshot.concentration / mass).astype(np.int64)
        np.testing.assert_array_equal(counts.reshape(runs, -1).sum(axis=1), snapshot.survivors)
        out.append((counts.sum(axis=0), runs * particles - int(snapshot.survivors.sum())))
    return u0, out


def ftcs_probabilities(boundary: str, grid: Grid, u0: np.ndarray, probability: float, steps: int) -> np.ndarray:
    """The walk's exact cell probabilities: FTCS of ``u0 / sum(u0)`` with the walk's own ``r``,
    ``floor(p 2**32) / 2**32`` (the jump probability its 32-bit comparisons realise)."""
    r = np.floor(probability * 2.0**32) / 2.0**32
    field = discrete_solution(Batch("ftcs", boundary, grid, u0, np.array([r]), np.array([grid.dx**2])), steps)[0]
    return field / u0.sum()


@pytest.mark.parametrize(
    ("dims", "cells", "boundary", "probability"),
    [
        (1, 16, "neumann", 0.3),
        (1, 16, "periodic", 0.3),
        (1, 16, "dirichlet", 0.3),
        (1, 16, "neumann", 0.5),  # exactly at the validity limit: every particle moves
        (2, 8, "neumann", 0.2),
        (2, 8, "dirichlet", 0.25),
        (3, 8, "periodic", 1 / 6),
        (3, 8, "dirichlet", 0.1),
    ],
)
def test_walk_histogram_is_ftcs_in_the_mean(dims: int, cells: int, boundary: str, probability: float) -> None:
    grid = Grid(dims, cells, 1.0)  # dx a power of two: p = D dt / dx**2 is exactly `probability`
    assert jump_probability(grid, np.ones(1), np.array([probability * grid.dx**2]))[0] == probability
    steps = [1, 4, 15]
    u0, measured = walk_counts(boundary, grid, probability, steps, runs=16, particles=4000)
    for n, (counts, absorbed) in zip(steps, measured, strict=True):
        exact = ftcs_probabilities(boundary, grid, u0, probability, n)
        if boundary == "dirichlet":  # the absorbed particles are one more category
            counts, exact = np.append(counts, absorbed), np.append(exact, 1 - exact.sum())
        else:
            assert absorbed == 0
        statistic, dof = pearson(counts, exact)
        assert statistic < chi_square_bound(dof), (n, statistic, dof)


def test_walk_histogram_test_detects_a_wrong_p() -> None:
    """The same sample as above against FTCS with p 20 % too large fails the bound."""
    grid = Grid(1, 16, 1.0)
    u0, measured = walk_counts("neumann", grid, 0.3, [1, 4, 15], runs=16, particles=4000)
    for n, (counts, _) in zip([1, 4, 15], measured, strict=True):
        statistic, dof = pearson(counts, ftcs_probabilities("neumann", grid, u0, 0.3 * 1.2, n))
        assert statistic > chi_square_bound(dof)


def test_absorbed_fraction_is_the_ftcs_mass_loss() -> None:
    grid = Grid(1, 8, 1.0)
    runs, particles, steps = 32, 5000, [10, 60]
    u0, measured = walk_counts("dirichlet", grid, 0.4, steps, runs, particles, initial="gaussian")
    for n, (_, absorbed) in zip(steps, measured, strict=True):
        lost = 1 - ftcs_probabilities("dirichlet", grid, u0, 0.4, n).sum()
        total = runs * particles
        z = (absorbed / total - lost) / np.sqrt(lost * (1 - lost) / total)
        assert abs(z) < Z_BOUND and absorbed > 0


@pytest.mark.parametrize("scheme", ["random-walk", "langevin"])
@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
def test_mass_is_exact_with_reflecting_and_periodic_walls(scheme: str, boundary: str) -> None:
    grid = Grid(2, 8, 2.0)
    u0 = initial_condition("random", grid, seed=4)
    runs = 3
    step_size = np.full(runs, 0.2 * grid.dx**2)
    run = random_walk if scheme == "random-walk" else langevin
    batch = Batch(scheme, boundary, grid, u0, np.ones(runs), step_size)
    for _, snapshot in run(batch, [7, 50], particles=777, keys=keys_for(runs)):
        np.testing.assert_array_equal(snapshot.survivors, 777)
        mass = snapshot.concentration.reshape(runs, -1).sum(axis=1)
        np.testing.assert_allclose(mass, u0.sum(), rtol=1e-13)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_walk_variance_grows_as_two_d_t_per_axis(dims: int) -> None:
    """With periodic walls and unwrapped positions the walk is free: every axis gains 2 p dx² = 2 D dt per step."""
    grid = Grid(dims, 8, 1.0)
    u0 = initial_condition("gaussian", grid)
    runs, particles, probability = 24, 5000, 0.4 / (2 * dims)
    weights = u0.sum(axis=tuple(range(1, dims))) if dims > 1 else u0
    weights = weights / weights.sum()
    centres = grid.centres
    initial = (weights * centres**2).sum() - (weights * centres).sum() ** 2
    step_size = np.full(runs, probability * grid.dx**2)
    r = np.floor(probability * 2.0**32) / 2.0**32
    batch = Batch("random-walk", "periodic", grid, u0, np.ones(runs), step_size)
    for steps, snapshot in random_walk(batch, [20, 200], particles=particles, keys=keys_for(runs)):
        expected = initial + 2 * r * grid.dx**2 * steps
        measured = snapshot.variance  # (runs, dims)
        standard_error = measured.std(axis=0, ddof=1) / np.sqrt(runs)
        assert np.all(np.abs(measured.mean(axis=0) - expected) < Z_BOUND * standard_error), (steps, measured.mean(0), expected)


# -- Langevin ------------------------------------------------------------------------------


def reflected_transition(cells: int, spread: float, boundary: str) -> np.ndarray:
    """``K[c, c']``: probability that a point uniform in cell ``c`` is in cell ``c'`` after a
    Brownian displacement of standard deviation ``spread`` (cell units), reflected at 0 and
    ``cells`` (method of images) or wrapped (periodic).

    For a source uniform on ``[0, 1)`` the chance to land in ``[m, m + 1)`` is
    ``s (G((m+1)/s) - 2 G(m/s) + G((m-1)/s))`` with ``G(z) = z Φ(z) + φ(z)``, the
    antiderivative of the normal distribution function.
    """

    def shift(m):
        z = np.asarray(m, dtype=float) / spread
        g = lambda x: x * stats.norm.cdf(x) + stats.norm.pdf(x)  # noqa: E731
        return spread * (g(z + 1 / spread) - 2 * g(z) + g(z - 1 / spread))

    source = np.arange(cells)[:, None]
    target = np.arange(cells)[None, :]
    images = range(-int(10 * spread / cells) - 2, int(10 * spread / cells) + 3)
    kernel = np.zeros((cells, cells))
    for m in images:
        if boundary == "periodic":
            kernel += shift(target - source + m * cells)
        else:
            kernel += shift(target - source + 2 * m * cells) + shift(target + source + 1 + 2 * m * cells)
    return kernel


@pytest.mark.parametrize(
    ("dims", "boundary", "cfl"),
    [
        (1, "neumann", 0.3),
        (1, "neumann", 3.0),  # steps of 2.4 cells in an 8-cell box: several reflections
        (1, "periodic", 0.3),
        (2, "neumann", 0.3),
        (3, "periodic", 0.3),
    ],
)
def test_free_langevin_histogram_is_reflected_brownian_motion(dims: int, boundary: str, cfl: float) -> None:
    """With k = 0, Gaussian increments folded back into the box are reflected Brownian motion
    exactly, so the histogram's mean is the cell-averaged image solution."""
    grid = Grid(dims, 8, 1.0)
    u0 = initial_condition("step", grid)
    runs, particles, coefficient = 16, 4000, 0.05
    step_size = np.full(runs, cfl * grid.dx**2 / coefficient)
    checkpoints = [1, 6, 40]
    mass = u0.sum() / particles
    batch = Batch("langevin", boundary, grid, u0, np.full(runs, coefficient), step_size)
    for steps, snapshot in langevin(batch, checkpoints, particles=particles, keys=keys_for(runs)):
        counts = np.rint(snapshot.concentration / mass).astype(np.int64).sum(axis=0)
        spread = np.sqrt(2 * coefficient * step_size[0] * steps) / grid.dx
        kernel = reflected_transition(grid.cells, spread, boundary)
        exact = u0 / u0.sum()
        for axis in range(dims):
            exact = np.moveaxis(np.tensordot(exact, kernel, axes=([axis], [0])), -1, axis)
        statistic, dof = pearson(counts, exact)
        assert statistic < chi_square_bound(dof), (steps, statistic, dof)
        if steps == checkpoints[1]:  # and a 10 % error in the spread is detected
            wrong = u0 / u0.sum()
            kernel = reflected_transition(grid.cells, 1.1 * spread, boundary)
            for axis in range(dims):
                wrong = np.moveaxis(np.tensordot(wrong, kernel, axes=([axis], [0])), -1, axis)
            assert pearson(counts, wrong)[0] > chi_square_bound(dof)


@pytest.mark.parametrize("dims", [1, 3])
def test_free_langevin_variance_grows_as_two_d_t(dims: int) -> None:
    grid = Grid(dims, 8, 1.0)
    u0 = initial_condition("gaussian", grid)
    weights = u0.sum(axis=tuple(range(1, dims))) if dims > 1 else u0
    weights = weights / weights.sum()
    centres = grid.centres
    # particles start uniform inside their cell: each cell adds dx**2 / 12
    initial = (weights * (centres**2 + grid.dx**2 / 12)).sum() - (weights * centres).sum() ** 2
    runs, particles, coefficient = 24, 4000, 0.01
    step_size = np.full(runs, 0.02)
    batch = Batch("langevin", "periodic", grid, u0, np.full(runs, coefficient), step_size)
    for steps, snapshot in langevin(batch, [5, 100], particles=particles, keys=keys_for(runs)):
        expected = initial + 2 * coefficient * step_size[0] * steps
        standard_error = snapshot.variance.std(axis=0, ddof=1) / np.sqrt(runs)
        assert np.all(np.abs(snapshot.variance.mean(axis=0) - expected) < Z_BOUND * standard_error)


@pytest.mark.parametrize(
    ("drift", "boundary"),
    [(0.1, "neumann"), (0.6, "neumann"), (1.2, "neumann"), (1.9, "neumann"), (1.2, "periodic"), (1.2, "dirichlet")],
)
def test_stationary_variance_is_the_biased_euler_maruyama_value(drift: float, boundary: str) -> None:
    """Within Z_BOUND standard errors of D / (k (1 - k dt / 2)), and clearly not D / k."""
    coefficient, confinement = 0.01, 1.0
    step_size = drift / confinement
    exact = float(stationary_variance(coefficient, confinement, step_size))
    # a box of 40 stationary standard deviations: the walls are never reached
    grid = Grid(2, 8, 40 * np.sqrt(exact))
    runs, particles = 24, 4000
    steps = 400  # (1 - k dt)**(2 n) <= 0.9**800: the initial spread is forgotten
    u0 = initial_condition("gaussian", grid)
    (_, snapshot), = langevin(
        Batch("langevin", boundary, grid, u0, np.full(runs, coefficient), np.full(runs, step_size)), [steps],
        particles=particles, keys=keys_for(runs), confinement=confinement,
    )
    assert not snapshot.divergent.any()
    np.testing.assert_array_equal(snapshot.survivors, particles)
    measured = snapshot.variance.mean(axis=0)
    # stationary positions are exactly Gaussian: the unbiased sample variance of n of them
    # has standard error sigma**2 sqrt(2 / (n - 1)), here averaged over the runs
    standard_error = exact * np.sqrt(2 / (particles - 1) / runs)
    assert np.all(np.abs(measured - exact) < Z_BOUND * standard_error), (measured, exact, standard_error)
    continuous = coefficient / confinement
    assert np.all(np.abs(measured - continuous) > 2 * Z_BOUND * standard_error)


def test_langevin_diverges_for_k_dt_above_two_and_not_below() -> None:
    """Measured in a box far wider than the spread, where the variance follows the free-space
    recursion exactly: below k dt = 2 it settles, above it grows by (1 - k dt)**2 per step.
    Both are flagged by the drift criterion, and only the unstable ones."""
    coefficient, confinement = 1e-4, 1.0
    drifts = np.array([1.8, 1.95, 2.05, 2.2])
    runs_each = 24
    step_size = np.repeat(drifts, runs_each) / confinement
    runs = step_size.size
    grid = Grid(1, 1024, 1e4)
    u0 = np.zeros(grid.shape)
    u0[512] = 1.0  # uniform in one cell next to the centre: variance dx**2 / 12
    checkpoints = [10, 30]
    measured = {}
    for steps, snapshot in langevin(
        Batch("langevin", "neumann", grid, u0, np.full(runs, coefficient), step_size), checkpoints,
        particles=2000, keys=keys_for(runs), confinement=confinement,
    ):
        np.testing.assert_array_equal(snapshot.divergent, step_size * confinement >= 2)
        variance = snapshot.variance[:, 0].reshape(drifts.size, runs_each)
        expected = variance_after(coefficient, confinement, drifts / confinement, steps, grid.dx**2 / 12)
        standard_error = variance.std(axis=1, ddof=1) / np.sqrt(runs_each)
        assert np.all(np.abs(variance.mean(axis=1) - expected) < Z_BOUND * standard_error), steps
        measured[steps] = variance.mean(axis=1)
    np.testing.assert_array_equal(measured[30] > measured[10], drifts > 2)


@pytest.mark.benchmark
def test_particle_benchmark_quick_prints_its_table(tmp_path) -> None:
    """Smoke test of benchmarks/particles.py: never a timed assertion (the machine is shared)."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    output = tmp_path / "particles.json"
    completed = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "particles.py"), "--quick", "--json", str(output)],
        cwd=root, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    for line in ("random-walk 1-D 128 neumann", "langevin 3-D 16x16x16 neumann", "2e+08:", "1e+08:"):
        assert line in completed.stdout, completed.stdout
    results = json.loads(output.read_text())
    assert results["quick"] is True and len(results["rows"]) == 6
    assert all(row["rate_cpu"] > 0 for row in results["rows"])


@pytest.mark.parametrize("scheme", ["random-walk", "langevin"])
@pytest.mark.parametrize("n", [37, 300])
def test_particle_status_at_n_does_not_depend_on_the_other_checkpoints(scheme: str, n: int) -> None:
    """As for the grid schemes: growth at n is measured over [m(n), n], and the streams are
    counter-based, so asking for other step counts beside n changes nothing at n."""
    from pipeline.particle_diagnostics import measure_particles

    grid = Grid(dims=1, cells=16, length=1.0)
    runs = 6
    coefficient = np.full(runs, 0.5)
    # CFL numbers on both sides of the walk's validity bound 1/2 (Langevin: k dt from 0.06 to 1.8)
    step_size = np.array([0.05, 0.2, 0.45, 0.5, 0.55, 0.9]) * grid.dx**2 / coefficient
    options = {"particles": 300, "confinement": 4000.0 if scheme == "langevin" else 0.0,
               "keys": keys_for(runs), "criteria": Criteria(tolerance=1e-3, divergence=1e3)}
    initial = initial_condition("step", grid)
    asked = [[n], [n // 10, n], [1, n // 2, n]]
    results = [
        measure_particles(Batch(scheme, "neumann", grid, initial, coefficient, step_size), steps, **options)
        for steps in asked
    ]
    reference = results[0]
    for out in results[1:]:
        for name in ("status", "reason", "distance", "overshoot", "growth", "mass_error", "variance"):
            np.testing.assert_array_equal(out[name][:, -1], reference[name][:, 0], err_msg=name)
