"""What ``diffsweep refine`` saves: locating every coefficient's stability edge by bisection
versus a dense grid of the same resolution, both run on the same dask cluster in one invocation.

The study: explicit FTCS, 1-D, 16 cells, Neumann walls, step initial condition, 64
coefficients (geomspace 0.01 … 1), classified at 1000 steps (small, so that the dense
side takes a minute, not an hour).  The step sizes span every coefficient's edge: from
half the largest coefficient's bound Δt* = r*·Δx²/D to twice the smallest's (a factor
400), where r* = 2/λ_max is the exact bound of the discrete operator.

- **refine**: ``diffsweep run`` of a coarse sweep (8 step sizes, geometric) followed by
  ``diffsweep refine`` to rtol 1e-3 (one batch of tasks per round);
- **dense**: ``diffsweep run`` of the same coefficients with step sizes spaced by a factor
  1 + rtol over the same range, which brackets every edge as tightly.

Both go through the library on one LocalCluster (2 worker processes x 1 thread on
127.0.0.1), cluster start-up excluded on both sides; runs are counted exactly, wall
time is measured.  Both answers are checked against r* and against each other.

Usage::

    python benchmarks/refine.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.numerics import Grid, laplacian_eigenvalues


def study_yaml(name: str, coefficients: int, step_sizes: int, cells: int, steps: int, low: float, high: float) -> str:
    return f"""\
name: {name}
model: {{scheme: ftcs, dims: 1, cells: {cells}, boundary: neumann, initial: step}}
sweep:
  coefficient: {{geomspace: [0.01, 1.0], num: {coefficients}}}
  step_size: {{geomspace: [{low!r}, {high!r}], num: {step_sizes}}}
  steps: [{steps}]
"""


def dense_edges(url: str) -> tuple[np.ndarray, np.ndarray]:
    """Per coefficient: (last non-divergent, first divergent) step size of a dense store."""
    import xarray as xr

    status = xr.open_zarr(url)["status"].isel(steps=-1).sortby("step_size").load()
    values = status.step_size.values
    divergent = status.values == 3
    first = np.where(divergent.any(axis=1), divergent.argmax(axis=1), values.size)
    padded = np.concatenate([[np.nan], values, [np.nan]])
    return padded[first], padded[first + 1]


#: the step sizes reach this factor beyond the edges of the largest and smallest coefficients
MARGIN = 2.0


def bench_refine(quick: bool = False, workers: int = 2) -> dict:
    """Run both sides on one cluster and return the figures."""
    from distributed import Client, LocalCluster

    from pipeline import refine, runner
    from pipeline.executors import DaskExecutor
    from pipeline.planning import plan as make_plan
    from pipeline.sweep import parse_sweep

    if quick:
        coefficients, cells, steps, rtol, coarse_num = 8, 16, 500, 1e-2, 6
    else:
        coefficients, cells, steps, rtol, coarse_num = 64, 16, 1000, 1e-3, 8
    grid = Grid(1, cells, 1.0)
    bound = 2.0 / float(laplacian_eigenvalues("neumann", grid).max())  # r* of the discrete operator
    low = bound * grid.dx**2 / 1.0 / MARGIN  # below the largest coefficient's Δt*
    high = bound * grid.dx**2 / 0.01 * MARGIN  # above the smallest's
    dense_num = math.ceil(math.log(high / low) / math.log1p(rtol)) + 1
    coarse = study_yaml("edges-coarse", coefficients, coarse_num, cells, steps, low, high)
    dense = study_yaml("edges-dense", coefficients, dense_num, cells, steps, low, high)
    coefficient = np.geomspace(0.01, 1.0, coefficients)
    exact = bound * grid.dx**2 / coefficient

    with tempfile.TemporaryDirectory(prefix="diffsweep-refine-bench-") as tmp, LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster, Client(cluster) as client:
        executor = DaskExecutor(client)
        # warm-up, untimed: kernels compiled or loaded and the store modules imported in
        # every worker, by a tiny sweep and refine through the same path as both sides
        warm = str(Path(tmp) / "warm.zarr")
        runner.run_sweep(make_plan(parse_sweep(study_yaml("warm", 2, 3, cells, 10, low, high)), parallelism=workers),
                         warm, executor=executor)
        refine.refine(refine.prepare(warm, refine.Request(rtol=0.5)), executor=executor)
        coarse_url, dense_url = str(Path(tmp) / "coarse.zarr"), str(Path(tmp) / "dense.zarr")

        start = time.perf_counter()
        coarse_plan = make_plan(parse_sweep(coarse), parallelism=workers)
        runner.run_sweep(coarse_plan, coarse_url, executor=executor)
        coarse_seconds = time.perf_counter() - start
        refinement = refine.prepare(coarse_url, refine.Request(rtol=rtol))
        estimate = refine.estimate(refinement)
        summary = refine.refine(refinement, executor=executor)
        refine_seconds = time.perf_counter() - start
        low_edge, high_edge = refinement.search.low, refinement.search.high

        start = time.perf_counter()
        dense_plan = make_plan(parse_sweep(dense), parallelism=workers)
        runner.run_sweep(dense_plan, dense_url, executor=executor)
        dense_seconds = time.perf_counter() - start
        dense_low, dense_high = dense_edges(dense_url)

    refine_runs = coarse_plan.n_runs + summary.runs
    deviation = np.maximum(np.abs(low_edge / exact - 1), np.abs(high_edge / exact - 1))
    dense_deviation = np.maximum(np.abs(dense_low / exact - 1), np.abs(dense_high / exact - 1))
    return {
        "quick": quick,
        "workers": workers,
        "study": {"coefficients": coefficients, "cells": cells, "steps": steps, "rtol": rtol,
                  "step_size_range": [low, high], "discrete_bound_cfl": bound},
        "refine": {
            "coarse_runs": coarse_plan.n_runs, "probe_runs": summary.runs, "runs": refine_runs,
            "rounds": summary.rounds, "estimated_runs": list(estimate.runs), "estimated_rounds": list(estimate.rounds),
            "run_seconds": coarse_seconds, "seconds": refine_seconds,
            "max_relative_deviation_from_bound": float(deviation.max()),
            "max_bracket_width": float((high_edge / low_edge - 1).max()),
            "bound_inside_bracket": int(((low_edge <= exact) & (exact <= high_edge)).sum()),
        },
        "dense": {
            "step_sizes": dense_num, "runs": dense_plan.n_runs, "seconds": dense_seconds,
            "max_relative_deviation_from_bound": float(dense_deviation.max()),
            "bound_inside_bracket": int(((dense_low <= exact) & (exact <= dense_high)).sum()),
        },
        "brackets_overlap": int(((low_edge <= dense_high) & (dense_low <= high_edge)).sum()),
        "runs_ratio": dense_plan.n_runs / refine_runs,
        "wall_ratio": dense_seconds / refine_seconds,
    }


#: the grids of the accuracy study: the step initial condition holds the highest mode on each
ACCURACY_CASES = [(dims, cells, boundary) for dims, cells in ((1, 14), (2, 6), (3, 6)) for boundary in ("neumann", "periodic", "dirichlet")]
#: step counts tried, in order, until the refined edge lies within rtol of the bound
STEP_LADDER = (100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000)


def bench_accuracy(quick: bool = False, rtol: float = 1e-3) -> dict:
    """Per grid: the refined divergence edge against the exact bound 2/λ_max at each step count
    of :data:`STEP_LADDER`, and the smallest step count from which it stays within ``rtol``."""
    from pipeline import refine, runner
    from pipeline.numerics import stability_bound
    from pipeline.planning import plan as make_plan
    from pipeline.sweep import parse_sweep

    cases = ACCURACY_CASES[:2] if quick else ACCURACY_CASES
    ladder = STEP_LADDER[:4] if quick else STEP_LADDER
    out = []
    with tempfile.TemporaryDirectory(prefix="diffsweep-accuracy-") as tmp:
        for dims, cells, boundary in cases:
            bound = stability_bound("ftcs", boundary, Grid(dims, cells, 1.0))
            text = f"""\
name: accuracy
model: {{scheme: ftcs, dims: {dims}, cells: {cells}, boundary: {boundary}, initial: step}}
sweep:
  coefficient: [1.0]
  cfl: {{geomspace: [0.05, 0.15], num: 3}}
  steps: {list(ladder)}
"""
            url = str(Path(tmp) / f"{dims}-{cells}-{boundary}.zarr")
            runner.run_sweep(make_plan(parse_sweep(text), parallelism=1), url)
            refinement = refine.prepare(url, refine.Request(rtol=rtol))
            refine.refine(refinement)
            low, high = refinement.search.low, refinement.search.high
            deviation = np.maximum(np.abs(low / bound - 1), np.abs(high / bound - 1))
            within = deviation <= rtol
            # the smallest step count from which every larger one is within rtol
            threshold = next((ladder[i] for i in range(len(ladder)) if within[i:].all()), None)
            out.append({
                "dims": dims, "cells": cells, "boundary": boundary, "bound_cfl": bound,
                "steps": list(ladder), "relative_deviation": deviation.tolist(),
                "bound_inside_bracket": ((low <= bound) & (bound <= high)).tolist(),
                "threshold_steps": threshold,
            })
    return {"rtol": rtol, "cases": out}


def _warm() -> float:
    from pipeline.numerics import Batch, Grid, initial_condition, integrate

    start = time.perf_counter()
    grid = Grid(1, 16, 1.0)
    for _ in integrate(Batch("ftcs", "neumann", grid, initial_condition("step", grid), np.ones(2), np.full(2, 1e-4)), [2]):
        pass
    return time.perf_counter() - start


def rows(r: dict) -> list[tuple[str, str, str]]:
    """(label, value, note) rows for the benchmark table."""
    s, a, b = r["study"], r["refine"], r["dense"]
    n = s["coefficients"]
    return [
        (f"refine: {n} FTCS edges to rtol {s['rtol']:g} ({s['steps']} steps)", f"{a['runs']:,} runs",
         f"{a['coarse_runs']} swept + {a['probe_runs']} probes in {a['rounds']} rounds; {a['seconds']:.1f} s wall "
         f"(estimate {a['estimated_runs'][0]}-{a['estimated_runs'][1]} probes)"),
        (f"dense grid, {b['step_sizes']:,} step sizes x {n} coefficients", f"{b['runs']:,} runs", f"{b['seconds']:.1f} s wall"),
        ("runs: dense / refine", f"{r['runs_ratio']:,.0f}x", f"target 20x: {'met' if r['runs_ratio'] >= 20 else 'NOT met'}"),
        ("wall time: dense / refine", f"{r['wall_ratio']:,.1f}x", f"{r['workers']} workers, cluster start-up excluded"),
        ("refined edge vs exact discrete bound 2/λ_max", f"{a['max_relative_deviation_from_bound']:.1e}",
         f"max relative deviation; bound inside the bracket for {a['bound_inside_bracket']}/{n}; "
         f"dense grid {b['max_relative_deviation_from_bound']:.1e}, brackets overlap {r['brackets_overlap']}/{n}"),
    ]


def accuracy_rows(r: dict) -> list[tuple[str, str, str]]:
    """(label, value, note) rows: per grid, the step count from which the edge is within rtol."""
    out = []
    for case in r["cases"]:
        grid = "x".join([str(case["cells"])] * case["dims"])
        worst = max(case["relative_deviation"][-1:])
        threshold = case["threshold_steps"]
        out.append((
            f"edge vs 2/λ_max, FTCS {grid} {case['boundary']}",
            "-" if threshold is None else f">= {threshold:,} steps",
            f"within rtol {r['rtol']:g} from there; deviation {worst:.1e} at {case['steps'][-1]:,} steps "
            f"(bound {case['bound_cfl']:.6f}); by step count: "
            + " ".join(f"{n}:{d:.0e}" for n, d in zip(case["steps"], case["relative_deviation"], strict=True)),
        ))
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--skip-accuracy", action="store_true", help="only the cost comparison")
    options = parser.parse_args(argv)
    workers = 2 if (os.cpu_count() or 1) >= 2 else 1
    results = bench_refine(options.quick, workers)
    if not options.skip_accuracy:
        results["accuracy"] = bench_accuracy(options.quick)
    for label, value, note in rows(results) + (accuracy_rows(results["accuracy"]) if "accuracy" in results else []):
        print(f"{label:<58} {value:>14}  {note}")
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
