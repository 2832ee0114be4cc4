"""Kernel throughput: cell updates per second per core, next to the machine's limits.

Measured side by side in one invocation:

- stream copy: ``numpy.copyto`` of a 256 MiB array (bytes read + written per second);
- numpy baseline: one 1-D run of 128 cells at a time, one numpy expression per step
  (what a user would write);
- ``pipeline.numerics.integrate`` for each scheme and grid, Neumann walls, on one
  thread (``numba.set_num_threads(1)``) and on all cores (rate divided by the cores).

FTCS rates are real cell updates.  Backward Euler and Crank–Nicolson are solved exactly
in the eigenbasis, so their cost does not depend on the number of steps: their rate is
*equivalent* cell updates (batch x cells x steps / time) for one checkpoint at the given
step count, and is reported only to show that checkpoint cost.

Usage::

    python benchmarks/kernels.py [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numba
import numpy as np

from pipeline.numerics import Grid, initial_condition, integrate

# (dims, cells, batch, steps): a few thousand 1-D runs; fewer, larger runs in 2-D/3-D
CASES = [
    (1, 128, 4096, 1000),
    (2, 32, 512, 200),
    (2, 64, 128, 200),
    (3, 16, 256, 100),
    (3, 32, 32, 100),
]
SCHEMES = ("ftcs", "backward-euler", "crank-nicolson")


def best_time(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def stream_copy_bandwidth(repeats: int, mebibytes: int = 256) -> float:
    source = np.random.default_rng(0).random(mebibytes * 2**20 // 8)
    target = np.empty_like(source)
    np.copyto(target, source)
    seconds = best_time(lambda: np.copyto(target, source), repeats)
    return 2 * source.nbytes / seconds


def numpy_baseline(runs: int, steps: int, repeats: int) -> float:
    """Cell updates per second of a per-run numpy loop (1-D, 128 cells, Neumann)."""
    grid = Grid(1, 128, 1.0)
    initial = initial_condition("step", grid)
    rates = np.linspace(0.05, 0.5, runs)

    def work():
        for r in rates:
            u = initial.copy()
            for _ in range(steps):
                wall_low = u[0] + r * (u[1] - u[0])
                wall_high = u[-1] + r * (u[-2] - u[-1])
                u[1:-1] += r * (u[2:] - 2 * u[1:-1] + u[:-2])
                u[0], u[-1] = wall_low, wall_high

    return runs * grid.size * steps / best_time(work, repeats)


def kernel_rate(scheme, dims, cells, batch, steps, repeats) -> float:
    grid = Grid(dims, cells, 1.0)
    initial = initial_condition("random", grid)
    limit = 0.5 / dims
    coefficient = np.ones(batch)
    step_size = np.linspace(0.05, 0.95, batch) * limit * grid.dx**2

    def work():
        for _ in integrate(scheme, "neumann", grid, initial, coefficient, step_size, [steps]):
            pass

    # compile / warm the caches on a small batch first
    for _ in integrate(scheme, "neumann", grid, initial, coefficient[:2], step_size[:2], [2]):
        pass
    return batch * grid.size * steps / best_time(work, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    options = parser.parse_args()
    repeats = 2 if options.quick else 3
    scale = 0.2 if options.quick else 1.0
    cores = numba.config.NUMBA_NUM_THREADS

    bandwidth = stream_copy_bandwidth(repeats)
    baseline = numpy_baseline(runs=8, steps=max(10, int(500 * scale)), repeats=repeats)
    rows = []
    for scheme in SCHEMES:
        for dims, cells, batch, steps in CASES:
            steps = max(10, int(steps * scale))
            numba.set_num_threads(1)
            single = kernel_rate(scheme, dims, cells, batch, steps, repeats)
            numba.set_num_threads(cores)
            parallel = kernel_rate(scheme, dims, cells, batch, steps, repeats) / cores
            rows.append(
                {
                    "scheme": scheme,
                    "dims": dims,
                    "cells": cells,
                    "batch": batch,
                    "steps": steps,
                    "updates_per_s_per_core_1_thread": single,
                    "updates_per_s_per_core_all_threads": parallel,
                    "equivalent": scheme != "ftcs",
                }
            )

    print(
        f"machine: {platform.processor() or platform.machine()}, {cores} cores, numba {numba.__version__}"
    )
    print(f"stream copy bandwidth: {bandwidth / 1e9:.1f} GB/s (read + write)")
    print(f"numpy per-run loop (1-D, 128 cells): {baseline:.2e} cell updates/s")
    print()
    header = f"{'scheme':<15} {'grid':>6} {'batch':>6} {'steps':>6} {'1 thread /s':>12} {f'{cores} threads /s/core':>20} {'x numpy':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        grid = "x".join([str(row["cells"])] * row["dims"])
        mark = "*" if row["equivalent"] else ""
        print(
            f"{row['scheme']:<15} {grid:>6} {row['batch']:>6} {row['steps']:>6} "
            f"{row['updates_per_s_per_core_1_thread']:>11.2e}{mark:1} "
            f"{row['updates_per_s_per_core_all_threads']:>19.2e}{mark:1} "
            f"{row['updates_per_s_per_core_1_thread'] / baseline:>8.0f}"
        )
    print("* equivalent cell updates: exact eigenbasis solve, cost independent of steps")
    if options.json:
        os.makedirs(os.path.dirname(os.path.abspath(options.json)), exist_ok=True)
        with open(options.json, "w") as handle:
            json.dump(
                {
                    "cores": cores,
                    "stream_copy_bytes_per_s": bandwidth,
                    "numpy_per_run_updates_per_s": baseline,
                    "kernels": rows,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
