"""Particle kernels: particle-steps per second per core, beside the numpy loops a user would write.

Measured side by side in one invocation, each on one thread (``numba.set_num_threads(1)``),
best of a few repeats, through the public drivers (:func:`pipeline.numerics.particles.random_walk`
and :func:`~pipeline.numerics.particles.langevin`: initial placement, every step with its
random numbers, and the closing histogram included):

- the lattice walk and Euler–Maruyama Langevin in 1-D (128 cells) and 3-D (16³), 16 runs
  of 10⁴ particles, reflecting walls (Langevin also periodic and absorbing in 3-D);
- the numpy baseline: one run at a time, one vectorised numpy expression per step over
  that run's particles, ``numpy.random.Generator`` for the randomness (``random`` for the
  walk, ``standard_normal`` for Langevin), reflecting walls with ``numpy.where``.

Rates are given per CPU second of the process (``time.process_time``), which is what one
core delivers even on a shared machine, and per wall second beside it.  Targets: ≥ 2×10⁸
particle-steps/s/core for the 1-D walk and ≥ 1×10⁸ for 3-D Langevin, RNG included.

Usage::

    python benchmarks/particles.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import baseline_kernels
from numba import njit, uint64

from pipeline.numerics import Batch, Grid, initial_condition
from pipeline.numerics.particles import (
    BOUNDARY_CODES,
    TILE,
    _cumulative,
    _langevin_kernel,
    _place,
    langevin,
    random_walk,
)
from pipeline.numerics.philox import key_words, normal_pair, philox4x32, stream_key

#: particle-steps per second per core that the kernels must reach
TARGETS = {("random-walk", 1): 2e8, ("langevin", 3): 1e8}
RUNS, PARTICLES = 16, 10_000
CASES = [  # scheme, dims, cells, boundary, steps
    ("random-walk", 1, 128, "neumann", 4000),
    ("random-walk", 3, 16, "neumann", 1000),
    ("langevin", 1, 128, "neumann", 1000),
    ("langevin", 3, 16, "neumann", 400),
    ("langevin", 3, 16, "periodic", 400),
    ("langevin", 3, 16, "dirichlet", 400),
]
#: jump probability of the walk (per neighbour, times 2 d) and k dt of Langevin
WALK_FILL, DRIFT = 0.8, 0.05


def best(function: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Fewest CPU seconds and fewest wall seconds over ``repeats`` calls."""
    cpu = wall = float("inf")
    for _ in range(repeats):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        function()
        cpu = min(cpu, time.process_time() - start_cpu)
        wall = min(wall, time.perf_counter() - start_wall)
    return cpu, wall


def parameters(scheme: str, dims: int, cells: int, runs: int) -> tuple[Grid, np.ndarray, np.ndarray, np.ndarray]:
    grid = Grid(dims, cells, 1.0)
    coefficient = np.full(runs, 0.1)
    if scheme == "random-walk":
        step_size = np.full(runs, WALK_FILL / (2 * dims) * grid.dx**2 / 0.1)
    else:
        step_size = np.full(runs, 0.25 * grid.dx**2 / 0.1)
    return grid, coefficient, step_size, initial_condition("gaussian", grid)


def kernel(scheme: str, dims: int, cells: int, boundary: str, steps: int, runs: int, particles: int,
           repeats: int) -> dict[str, float]:
    grid, coefficient, step_size, initial = parameters(scheme, dims, cells, runs)
    keys = np.array([stream_key(0, {"run": i}) for i in range(runs)], dtype=np.uint64)
    extra: dict[str, Any] = {} if scheme == "random-walk" else {"confinement": DRIFT / step_size}
    driver = random_walk if scheme == "random-walk" else langevin
    batch = Batch(scheme, boundary, grid, initial, coefficient, step_size)

    def work(count: int = steps) -> None:
        for _ in driver(batch, [count], particles=particles, keys=keys, **extra):
            pass

    work(5)  # compile, or load from the cache
    cpu, wall = best(work, repeats)
    done = runs * particles * steps
    return {"cpu": done / cpu, "wall": done / wall}


def numpy_walk(grid: Grid, probability: float, initial: np.ndarray, steps: int, particles: int, seed: int) -> np.ndarray:
    """The lattice walk as a user would write it: numpy over the particles, Python over steps."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(initial.size, size=particles, p=(initial / initial.sum()).ravel())
    position = np.stack(np.unravel_index(cells, grid.shape), axis=1)
    rows = np.arange(particles)
    for _ in range(steps):
        u = rng.random(particles)
        direction = np.minimum((u / probability).astype(np.int64), 2 * grid.dims)
        moves = direction < 2 * grid.dims
        axis = np.where(moves, direction // 2, 0)
        step = np.where(moves, 2 * (direction % 2) - 1, 0)
        moved = position[rows, axis] + step
        inside = (moved >= 0) & (moved < grid.cells)
        position[rows, axis] = np.where(inside, moved, position[rows, axis])
    return np.bincount(np.ravel_multi_index(position.T, grid.shape), minlength=grid.size)


def numpy_langevin(grid: Grid, coefficient: float, step_size: float, confinement: float, initial: np.ndarray,
                   steps: int, particles: int, seed: int) -> np.ndarray:
    """Euler–Maruyama as a user would write it, with reflecting walls."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(initial.size, size=particles, p=(initial / initial.sum()).ravel())
    x = (np.stack(np.unravel_index(cells, grid.shape), axis=1) + rng.random((particles, grid.dims))) * grid.dx
    centre, sigma, length = grid.length / 2, np.sqrt(2 * coefficient * step_size), grid.length
    for _ in range(steps):
        x += -step_size * confinement * (x - centre) + sigma * rng.standard_normal(x.shape)
        x = np.where(x < 0, -x, x)
        x = np.where(x > length, 2 * length - x, x)
    index = np.minimum((x / grid.dx).astype(np.int64), grid.cells - 1)
    return np.bincount(np.ravel_multi_index(index.T, grid.shape), minlength=grid.size)


def baseline(scheme: str, dims: int, cells: int, steps: int, runs: int, particles: int, repeats: int) -> dict[str, float]:
    grid, coefficient, step_size, initial = parameters(scheme, dims, cells, runs)

    def work() -> None:
        for run in range(runs):
            if scheme == "random-walk":
                numpy_walk(grid, coefficient[run] * step_size[run] / grid.dx**2, initial, steps, particles, run)
            else:
                numpy_langevin(grid, coefficient[run], step_size[run], DRIFT / step_size[run], initial, steps,
                               particles, run)

    cpu, wall = best(work, repeats)
    done = runs * particles * steps
    return {"cpu": done / cpu, "wall": done / wall}


@njit(cache=True, nogil=True, error_model="numpy")  # numpy: a division raises nothing, so it vectorises
def _normals_of_tiles(quads, key):  # pragma: no cover - compiled
    # the Langevin kernel's random part alone: a tile's Philox words, then its normals
    k0, k1 = key_words(key)
    words = np.empty((4, TILE), dtype=np.uint64)
    normals = np.empty((4, TILE))
    w0, w1, w2, w3 = words[0], words[1], words[2], words[3]
    z0, z1, z2, z3 = normals[0], normals[1], normals[2], normals[3]
    total = 0.0
    for quad in range(quads):
        c0 = uint64(quad)
        for j in range(TILE):
            w0[j], w1[j], w2[j], w3[j] = philox4x32(c0, uint64(j) & uint64(0xFFFFFFFF),
                                                    uint64(2 << 8), uint64(0), k0, k1)
        for j in range(TILE):
            z0[j], z1[j] = normal_pair(w0[j], w1[j])
        for j in range(TILE):
            z2[j], z3[j] = normal_pair(w2[j], w3[j])
        total += z0[0] + z3[TILE - 1]
    return total


def normal_rate(repeats: int, quads: int = 4000) -> float:
    """Standard normals per CPU second from Philox4x32-10 + Box–Muller, as the Langevin
    kernel draws them (one thread): the roof of a ``d``-dimensional Langevin step, which
    needs ``d`` of them per particle, is this over ``d``."""
    key = np.uint64(stream_key(0, {"run": 0}))
    _normals_of_tiles(2, key)
    cpu, _ = best(lambda: _normals_of_tiles(quads, key), repeats)
    return 4 * TILE * quads / cpu


def langevin_side_by_side(steps: int, runs: int, particles: int, repeats: int,
                          boundary: str = "neumann") -> dict[str, float]:
    """3-D Langevin kernel alone (no placement, no histogram), current against the frozen
    baseline (:mod:`baseline_kernels`), alternated, CPU time of one thread; both must
    give the same bits."""
    grid, coefficient, step_size, initial = parameters("langevin", 3, 16, runs)
    keys = np.array([stream_key(0, {"run": i}) for i in range(runs)], dtype=np.uint64)
    start = np.empty((runs, 3, particles))
    alive = np.empty((runs, particles), dtype=np.bool_)
    _place(start, alive, _cumulative(initial.ravel()), grid.cells, keys, True)
    drift = np.full(runs, DRIFT)
    noise = np.sqrt(2.0 * coefficient * step_size) / grid.dx
    kernels = {"current": _langevin_kernel(3, BOUNDARY_CODES[boundary]),
               "baseline": baseline_kernels.langevin_kernel(3, BOUNDARY_CODES[boundary])}
    finals = {}
    for name, kernel in kernels.items():
        positions, living = start.copy(), alive.copy()
        kernel(positions, living, drift, noise, keys, 0, steps, float(grid.cells))
        finals[name] = positions
    assert np.array_equal(finals["current"], finals["baseline"]), "kernels disagree"
    cpu = {name: float("inf") for name in kernels}
    for _ in range(repeats):
        for name, kernel in kernels.items():
            positions, living = start.copy(), alive.copy()
            begin = time.process_time()
            kernel(positions, living, drift, noise, keys, 0, steps, float(grid.cells))
            cpu[name] = min(cpu[name], time.process_time() - begin)
    done = runs * particles * steps
    return {name: done / seconds for name, seconds in cpu.items()}


def measure(quick: bool = False) -> dict[str, Any]:
    repeats = 2 if quick else 3
    scale = 0.05 if quick else 1.0
    runs, particles = (2, 2000) if quick else (RUNS, PARTICLES)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    rows = []
    try:
        for scheme, dims, cells, boundary, steps in CASES:
            steps = max(8, int(steps * scale))
            ours = kernel(scheme, dims, cells, boundary, steps, runs, particles, repeats)
            base_steps = max(4, steps // 10)  # the numpy loop is slow: fewer steps, same rate
            theirs = None
            if boundary == "neumann":
                theirs = baseline(scheme, dims, cells, base_steps, 2 if quick else 4, particles, repeats)
            target = TARGETS.get((scheme, dims))
            rows.append({
                "scheme": scheme, "dims": dims, "cells": cells, "boundary": boundary, "steps": steps,
                "runs": runs, "particles": particles,
                "rate_cpu": ours["cpu"], "rate_wall": ours["wall"],
                "numpy_rate_cpu": theirs["cpu"] if theirs else None,
                "target": target, "met": None if target is None else ours["cpu"] >= target,
            })
        normals = normal_rate(repeats, 200 if quick else 4000)
        side = langevin_side_by_side(max(8, int(400 * scale)), runs, particles, 2 * repeats + 1)
    finally:
        numba.set_num_threads(threads)
    return {
        "normals_per_s": normals,
        "langevin_3d_kernel": side,
        "quick": quick,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load": list(os.getloadavg()),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "rows": rows,
    }


def print_table(results: dict[str, Any]) -> None:
    print(f"machine: {results['machine']}, {results['cpus']} CPUs, numba {results['numba']}, numpy {results['numpy']}, "
          f"load {results['load'][0]:.2f}; one thread; particle-steps per second per core (CPU time)")
    header = f"{'kernel':<34} {'per core':>10} {'wall':>10} {'numpy':>10} {'x numpy':>8}  target"
    print(header)
    print("-" * len(header))
    for row in results["rows"]:
        grid = "x".join([str(row["cells"])] * row["dims"])
        label = f"{row['scheme']} {row['dims']}-D {grid} {row['boundary']}"
        numpy_rate = row["numpy_rate_cpu"]
        versus = f"{row['rate_cpu'] / numpy_rate:>7.0f}x" if numpy_rate else f"{'':>8}"
        numpy_text = f"{numpy_rate:>10.2e}" if numpy_rate else f"{'':>10}"
        target = "" if row["target"] is None else f"{row['target']:.0e}: " + ("met" if row["met"] else "NOT met")
        print(f"{label:<34} {row['rate_cpu']:>10.2e} {row['rate_wall']:>10.2e} {numpy_text} {versus}  {target}")
    side, normals = results["langevin_3d_kernel"], results["normals_per_s"]
    print(f"3-D Langevin kernel alone (neumann, alternated): current {side['current']:.2e}, "
          f"baseline {side['baseline']:.2e} particle-steps/s/core; roof (3 Philox + Box-Muller "
          f"normals per particle-step, {normals:.2e} normals/s) {normals / 3:.2e}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps: checks that everything runs (seconds)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    options = parser.parse_args(argv)
    results = measure(options.quick)
    print_table(results)
    if options.json:
        Path(options.json).parent.mkdir(parents=True, exist_ok=True)
        Path(options.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
