"""Particle schemes in sweeps: the model keys, the store's variables, reproducibility across
blocks and executors, and the maps and recommendations.

The kernels themselves are held to exact answers in ``test_particles.py``; here the
classification in the store is checked against the same theory: a walk is invalid
exactly where ``2 d p > 1``, Langevin diverges exactly where ``k dt >= 2`` and overshoots
exactly where ``1 < k dt < 2``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from conftest import compute_store, diffsweep

from pipeline.cli.main import cli
from pipeline.numerics.particles import walk_valid
from pipeline.particle_diagnostics import REASON_NAMES
from pipeline.sweep import PARTICLE_SCHEMES, RunModel, parse_sweep

PARTICLE_SWEEP = """\
name: particles-small
model: {{dims: 1, cells: 16, boundary: neumann, initial: step, particles: 2000, confinement: 20.0}}
sweep:
  scheme: [ftcs, random-walk, langevin]
  coefficient: [0.02, 0.05]
  step_size: [1.0e-4, 5.0e-4, 2.0e-3, 5.0e-3, 0.01, 0.02, 0.04, 0.075, 0.1, 0.2]
  steps: [10, 200]
chunks: {chunks}
"""
CONFINEMENT = 20.0


def reason_code(name: str) -> int:
    return REASON_NAMES.index(name)


def same(a: xr.DataArray, b: xr.DataArray) -> bool:
    """Whether two boolean arrays agree everywhere (whatever their names and coordinates)."""
    a, b = xr.broadcast(a.reset_coords(drop=True), b.reset_coords(drop=True))
    return bool(np.array_equal(a.transpose(*b.dims).values, b.values))


@pytest.fixture(scope="module")
def particle_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    text = PARTICLE_SWEEP.format(chunks="{coefficient: 1, step_size: 4}")
    return compute_store(text, tmp_path_factory.mktemp("particles") / "p.zarr")


def test_particle_keys_are_model_keys_with_defaults() -> None:
    sweep = parse_sweep(PARTICLE_SWEEP.format(chunks="{}"))
    assert sweep.has_particles
    (model,) = sweep.run_models()[1:2]
    assert (model.scheme, model.particles, model.confinement) == ("random-walk", 2000, 20.0)
    assert set(PARTICLE_SCHEMES) < set(sweep.axis("scheme").values)
    walk = RunModel("random-walk", 2, 16, 1.0, "neumann", "step", 0)
    assert walk.particles == 10_000 and walk.confinement == 0.0 and walk.stability_limit == 0.25
    langevin = RunModel("langevin", 2, 16, 1.0, "neumann", "step", 0, 100, 4.0)
    assert langevin.stability_limit is None and langevin.step_size_limit == 0.5
    assert RunModel.from_mapping({**walk.as_dict(), "particles": 7}).particles == 7
    # a grid sweep's definition, and so its hash, does not mention the particle keys
    grid = parse_sweep("name: g\nmodel: {cells: 8}\nsweep: {coefficient: [1.0], cfl: [0.1], steps: [1]}\n")
    assert not grid.has_particles
    assert "particles" not in grid.canonical_json() and "confinement" not in grid.canonical_json()
    assert parse_sweep(json.dumps(grid.to_dict())) == grid


def test_particle_sweep_memory_counts_the_particles() -> None:
    few = parse_sweep(PARTICLE_SWEEP.format(chunks="{}"))
    many = parse_sweep(PARTICLE_SWEEP.format(chunks="{}").replace("particles: 2000", "particles: 2000000"))
    grown = many.memory_per_run() - few.memory_per_run()
    assert grown == (2_000_000 - 2000) * (8 * 1 + 1)


def test_store_classifies_particle_runs_by_their_theory(particle_store: str) -> None:
    ds = xr.open_zarr(particle_store)
    for name in ("noise_floor", "variance", "variance_bias", "reason"):
        assert name in ds and ds[name].attrs["long_name"]
    assert ds["reason"].attrs["flag_meanings"] == " ".join(REASON_NAMES)
    assert ds.attrs["particles"] == 2000 and ds.attrs["confinement"] == CONFINEMENT
    step_size = ds["step_size"]
    status, reason = ds["status"].load(), ds["reason"].load()

    walk = ds.sel(scheme="random-walk")
    valid = xr.apply_ufunc(lambda r: walk_valid(1, r), walk["cfl"])
    invalid = ~valid.broadcast_like(walk["status"])
    assert bool(invalid.any()) and bool(valid.any())
    assert same(reason.sel(scheme="random-walk") == reason_code("invalid"), invalid)
    assert bool((status.sel(scheme="random-walk").where(invalid) == 3).sum() == invalid.sum())
    assert bool(walk["distance"].where(invalid).isnull().all())
    assert float(walk["mass_error"].where(~invalid).max()) < 1e-13

    langevin = ds.sel(scheme="langevin")
    drift = (CONFINEMENT * step_size).broadcast_like(langevin["status"])
    unstable = drift >= 2
    assert bool(unstable.any())
    assert same(reason.sel(scheme="langevin") == reason_code("unstable-drift"), unstable)
    overshooting = (drift > 1) & ~unstable
    assert bool(overshooting.any())
    assert same(status.sel(scheme="langevin") == 2, overshooting)  # oscillating exactly there
    assert float(langevin["mass_error"].max()) < 1e-13

    ftcs = ds.sel(scheme="ftcs")
    assert bool((reason.sel(scheme="ftcs") == 0).all())
    assert bool(ftcs["noise_floor"].isnull().all() and ftcs["variance"].isnull().all())


def test_first_passages_of_a_mixed_sweep_are_filled_for_every_scheme(particle_store: str) -> None:
    """Grid runs hold exact first passages; particle runs the first step count at which the
    passage is seen (histograms exist only there), invalid walks and unstable drift 1."""
    ds = xr.open_zarr(particle_store).load()
    steps = [10, 200]
    for name in ("steps_to_equilibrium", "steps_to_divergence"):
        variable = ds[name]
        assert "steps" not in variable.dims and variable.encoding["dtype"] == np.int64
        assert variable.attrs["not_reached"] == 201 and "particle runs" in variable.attrs["comment"]
        assert bool(variable.notnull().all())  # every run computed: no -1 (the _FillValue, NaN here) left
        particle = variable.sel(scheme=["random-walk", "langevin"])
        assert set(np.unique(particle.values)) <= {1, 10, 200, 201}
    reason = ds["reason"]
    from_start = ((reason == reason_code("invalid")) | (reason == reason_code("unstable-drift"))).any("steps")
    assert bool(from_start.any())
    assert bool((ds["steps_to_divergence"].where(from_start) == 1).where(from_start, True).all())
    for scheme in ("random-walk", "langevin", "ftcs"):
        run = ds.sel(scheme=scheme)
        for n in steps:  # divergent at n exactly when the passage is at or before n
            assert same(run["status"].sel(steps=n) == 3, run["steps_to_divergence"] <= n), (scheme, n)
    # particle runs: the passage is the first step count whose histogram is within the tolerance
    # (or the noise floor, when that is larger)
    tolerance = float(ds.attrs["tolerance"])
    for scheme in ("random-walk", "langevin"):
        run = ds.sel(scheme=scheme)
        within = run["distance"] <= np.maximum(tolerance, run["noise_floor"])
        for n in steps:
            seen_by_n = within.sel(steps=[m for m in steps if m <= n]).any("steps")
            assert same(run["steps_to_equilibrium"] <= n, seen_by_n), (scheme, n)


def test_langevin_stationary_variance_bias_in_the_store(particle_store: str) -> None:
    """At 200 steps (k t >= 4 from dt = 0.001) the stored bias is Euler–Maruyama's, k dt / (2 - k dt),
    within 4 standard errors of a variance of 2000 Gaussian positions."""
    ds = xr.open_zarr(particle_store).sel(scheme="langevin", steps=200)
    drift = CONFINEMENT * ds["step_size"]
    settled = (CONFINEMENT * ds["time"] >= 4) & (drift < 1.9)
    bias = ds["variance_bias"].where(settled)
    theory = drift / (2 - drift)
    standard_error = np.sqrt(2 / (2000 - 1)) * (1 + theory)
    assert int(settled.sum()) >= 4
    assert bool((np.abs(bias - theory) < 4 * standard_error).where(settled, True).all())
    assert float(theory.where(settled).max()) > 10 * float(standard_error.where(settled).max())


def test_particle_runs_do_not_depend_on_blocks_or_on_the_sweep_around_them(
    particle_store: str, tmp_path: Path
) -> None:
    """Other chunks, and another sweep holding some of the same runs: bit-identical results."""
    other = compute_store(PARTICLE_SWEEP.format(chunks="{coefficient: 2, step_size: 3}"), tmp_path / "b.zarr")
    subset = PARTICLE_SWEEP.format(chunks="{}").replace("coefficient: [0.02, 0.05]", "coefficient: [0.05]")
    part = compute_store(subset.replace("steps: [10, 200]", "steps: [200]"), tmp_path / "c.zarr")
    a, b, c = (xr.open_zarr(path).load() for path in (particle_store, other, part))
    names = ("distance", "overshoot", "variance", "variance_bias", "noise_floor", "status", "reason")
    for name in names:
        xr.testing.assert_identical(a[name], b[name])
        xr.testing.assert_equal(a[name].sel(coefficient=[0.05], steps=[200]), c[name])


@pytest.mark.slow
def test_particle_sweep_on_dask_workers_equals_in_process(particle_store: str, tmp_path: Path) -> None:
    sweep = tmp_path / "p.yaml"
    sweep.write_text(PARTICLE_SWEEP.format(chunks="{coefficient: 1, step_size: 2}"))
    result = diffsweep("run", str(sweep), "-o", str(tmp_path / "dask.zarr"), "--workers", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    a, b = xr.open_zarr(particle_store).load(), xr.open_zarr(tmp_path / "dask.zarr").load()
    for name in ("distance", "variance", "status", "reason"):
        xr.testing.assert_identical(a[name], b[name])


def test_map_and_recommend_draw_and_report_the_particle_bounds(particle_store: str, tmp_path: Path) -> None:
    runner = CliRunner()
    mapped = runner.invoke(cli, ["map", particle_store, "-o", str(tmp_path / "maps")])
    assert mapped.exit_code == 0, mapped.output
    assert (tmp_path / "maps" / "overview.png").exists()
    recommended = runner.invoke(cli, ["recommend", particle_store, "--json"])
    assert recommended.exit_code == 0, recommended.output
    rows = {(row["scheme"], row["coefficient"]): row for row in json.loads(recommended.output)}
    for coefficient in (0.02, 0.05):
        walk, langevin = rows[("random-walk", coefficient)], rows[("langevin", coefficient)]
        assert walk["theory_max_cfl"] == 0.5
        assert langevin["theory_max_step_size"] == pytest.approx(2 / CONFINEMENT, rel=1e-12)
        # the largest stable (monotone, bounded) step keeps the drift from overshooting
        assert langevin["max_stable_step_size"] * CONFINEMENT <= 1
        assert langevin["first_unstable_step_size"] * CONFINEMENT > 1
