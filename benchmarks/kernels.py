"""Kernel throughput: cell updates per second per core, next to the machine's limits.

Measured side by side in one invocation:

- stream copy: ``numpy.copyto`` of a 256 MiB array (bytes read + written per second);
- numpy baseline: one 1-D run of 128 cells at a time, one numpy expression per step
  (what a user would write);
- ``pipeline.numerics.integrate`` for each scheme and grid, Neumann walls, on one
  thread (``numba.set_num_threads(1)``) and on all cores (rate divided by the cores);
- the first-passage watch (:class:`pipeline.numerics.passage.FtcsWatch`, which finds
  ``steps_to_equilibrium``/``steps_to_divergence`` while integrating) against the plain
  FTCS kernel on the same batch, alternated run by run, CPU time of one thread: for
  runs below the textbook bound (the maximum principle holds: sparse checks) and for a
  stability sweep across it (r up to 1.5x the bound: windows of 64 steps, replays).

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
from numba import njit

from pipeline.numerics import Batch, Grid, ftcs, initial_condition, integrate, stability_limit
from pipeline.numerics.passage import FirstPassage, FtcsWatch

# (dims, cells, batch, steps): a few thousand 1-D runs; fewer, larger runs in 2-D/3-D
CASES = [
    (1, 128, 4096, 1000),
    (2, 32, 512, 200),
    (2, 64, 128, 200),
    (3, 16, 256, 100),
    (3, 32, 32, 100),
]
SCHEMES = ("ftcs", "backward-euler", "crank-nicolson")


def best_time(function, repeats: int, clock=time.perf_counter) -> float:
    """Fewest seconds of ``clock`` over ``repeats`` calls (``time.process_time`` for one
    thread on a shared machine: time-slicing by other jobs then does not count)."""
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        function()
        best = min(best, clock() - start)
    return best


#: floating-point operations per FTCS cell update, as compiled (no fastmath, so no FMA):
#: 1-D ``u + r ((w - 2 u) + e)``: 2 mul + 3 add; 2-D 2 mul + 5 add; 3-D 2 mul + 7 add
OPS_PER_UPDATE = {1: 5, 2: 7, 3: 9}


@njit(cache=True, nogil=True)
def _mul_add_chains(x, repeats, c):  # pragma: no cover - compiled
    # independent lanes (vectorised across j), each a chain of multiplies and adds:
    # the throughput of separate vector mul/add, which is what the FTCS kernels use
    for _ in range(repeats):
        for j in range(x.shape[0]):
            v = x[j]
            v = v * c + c
            v = v * c + c
            v = v * c + c
            v = v * c + c
            v = v * c + c
            v = v * c + c
            v = v * c + c
            v = v * c + c
            x[j] = v
    return x


def fp_peak(repeats: int) -> float:
    """Measured separate multiply/add throughput of one core (operations/s, one thread).

    An L1-resident array of 512 doubles, 16 operations per element per pass: the
    compute roof of a kernel that does ``n`` such operations per cell update is this
    figure divided by ``n``.
    """
    x = np.full(512, 0.5)
    _mul_add_chains(x, 2, 0.5)
    passes = 20000
    seconds = best_time(lambda: _mul_add_chains(x, passes, 0.5), repeats, time.process_time)
    return x.size * passes * 16 / seconds


def roofs(dims: int, fp_ops_per_s: float, stream_bytes_per_s: float) -> dict:
    """Compute roof and streaming-memory roof of FTCS in ``dims`` dimensions (updates/s).

    ``compute``: :func:`fp_peak` over :data:`OPS_PER_UPDATE`.  ``memory``: the stream
    copy bandwidth over 16 bytes per update (read and write each cell every step, no
    reuse between steps); the kernels beat it because a run stays in L1/L2 for all its
    steps, so the compute roof is the binding one.
    """
    return {"compute": fp_ops_per_s / OPS_PER_UPDATE[dims], "memory": stream_bytes_per_s / 16}


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


def kernel_rate(scheme, dims, cells, batch, steps, repeats, clock=time.perf_counter) -> float:
    grid = Grid(dims, cells, 1.0)
    initial = initial_condition("random", grid)
    limit = 0.5 / dims
    coefficient = np.ones(batch)
    step_size = np.linspace(0.05, 0.95, batch) * limit * grid.dx**2
    runs = Batch(scheme, "neumann", grid, initial, coefficient, step_size)

    def work():
        for _ in integrate(runs, [steps]):
            pass

    # compile / warm the caches on a small batch first
    for _ in integrate(Batch(scheme, "neumann", grid, initial, coefficient[:2], step_size[:2]), [2]):
        pass
    return batch * grid.size * steps / best_time(work, repeats, clock)


#: (dims, cells, batch, steps) of the watch overhead; the 1-D case is the reference sweep's grid
WATCH_CASES = [(1, 128, 1024, 1000), (1, 128, 256, 10000), (2, 32, 256, 200), (3, 16, 64, 100)]


def watch_overhead(dims: int, cells: int, batch: int, steps: int, repeats: int,
                   across_bound: bool = False) -> dict:
    """Plain FTCS kernel vs the first-passage watch on the same batch, side by side.

    Both are timed on one thread in CPU time (robust to other jobs on the machine),
    alternated ``repeats`` times; the best of each is kept.  ``across_bound``: r from
    0.05 to 1.5 times ``1/(2d)`` (a stability sweep) instead of 0.05 to 0.95.
    """
    grid = Grid(dims, cells, 1.0)
    initial = np.random.default_rng(0).random((batch, *grid.shape))
    top = 1.5 if across_bound else 0.95
    r = np.linspace(0.05, top, batch) * stability_limit("ftcs", dims)

    def plain() -> float:
        state = initial.copy()
        start = time.process_time()
        ftcs.advance(state, r, steps, "neumann")
        return time.process_time() - start

    def watched() -> float:
        state = initial.copy()
        watch = FtcsWatch(grid, "neumann", r, state, FirstPassage(1e-3, 1e3), [steps])
        start = time.process_time()
        watch.advance(state, 0, steps)
        return time.process_time() - start

    plain(), watched()  # compile / load
    plain_times, watched_times = [], []
    for _ in range(repeats):
        plain_times.append(plain())
        watched_times.append(watched())
    updates = batch * grid.size * steps
    return {
        "dims": dims, "cells": cells, "batch": batch, "steps": steps,
        "across_bound": across_bound,
        "plain_updates_per_s": updates / min(plain_times),
        "watched_updates_per_s": updates / min(watched_times),
        "overhead": min(watched_times) / min(plain_times) - 1.0,
    }


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
    numba.set_num_threads(1)
    watch = [
        watch_overhead(*case, repeats=3 * repeats, across_bound=across)
        for case in (WATCH_CASES[:1] if options.quick else WATCH_CASES)
        for across in (False, True)
    ]
    numba.set_num_threads(cores)
    print()
    print("first-passage watch vs plain FTCS kernel (1 thread, CPU time, same batch, alternated)")
    for row in watch:
        grid = "x".join([str(row["cells"])] * row["dims"])
        runs = "r up to 1.5x bound" if row["across_bound"] else "r < bound"
        print(
            f"  {grid:>8} batch {row['batch']:>5} steps {row['steps']:>6} {runs:<18} "
            f"plain {row['plain_updates_per_s']:.2e}/s watched {row['watched_updates_per_s']:.2e}/s "
            f"overhead {row['overhead']:+.1%}"
        )
    if options.json:
        os.makedirs(os.path.dirname(os.path.abspath(options.json)), exist_ok=True)
        with open(options.json, "w") as handle:
            json.dump(
                {
                    "cores": cores,
                    "stream_copy_bytes_per_s": bandwidth,
                    "numpy_per_run_updates_per_s": baseline,
                    "kernels": rows,
                    "watch": watch,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
