"""diffsweep performance benchmark: one table, every figure measured side by side.

Sections (all in one invocation, so that they share the machine's load):

1. kernels — cell updates/s per core of ``pipeline.numerics.integrate`` (one thread, CPU
   time), each beside its roofs: the measured vector multiply/add throughput over the
   operations per update (compute) and the stream-copy bandwidth over 16 bytes per update
   (memory, no reuse), next to a per-run numpy loop (``benchmarks/kernels.py``);
   implicit schemes as the cost of one checkpoint relative to one FTCS step; the FTCS
   kernel with the first-passage watch on against the plain kernel, side by side
   (target: at most 15 % slower).
1b. particles — the lattice walk and Langevin kernels in particle-steps/s per core
   (``benchmarks/particles.py``), the 3-D Langevin kernel beside the frozen baseline of
   ``benchmarks/baseline_kernels.py`` and beside its roof, the rate of Philox + Box–Muller
   normals it needs (three per particle-step).
2. start-up — the small sweep a laptop user runs first (10 240 results) through the whole
   CLI, with the local cluster's default workers, threads, processes and ``--in-process``.
   End to end — ``diffsweep run`` (the real CLI in a subprocess, LocalCluster start-up
   included) on the reference sweep, against the baseline a user would write: one
   ``dask.delayed`` task per (coefficient, step size, steps) result with a numpy loop,
   on a LocalCluster of the same size (2 workers x 1 thread), measured on a fixed random
   subsample of the reference sweep's results.  Both rates count *results* — one
   (coefficient, step size, steps) triple each; diffsweep integrates each trajectory once
   and measures it at every step count, the baseline integrates every triple from zero.
   The end-to-end speed-ups compare wall times with both sides' start-up included: the
   baseline's is its cluster start plus its first kernel call, then N / its rate (targets:
   >= 150x on the small sweep, >= 300x on the reference sweep).
3. overheads — the scheduler's share from the store's own timings (the last entry of
   its ``run_history``: ``seconds``, ``compute_seconds``, ``write_seconds``), numba compile time in a fresh process
   with and without the on-disk cache, the first-call cost in each dask worker, and the
   store's write throughput.
4. scaling — runs/s and peak memory of the whole CLI process tree (psutil RSS, sampled)
   at 1x, 4x, 16x a base sweep, and 1 vs 2 workers, on the 16x sweep (seconds) and on a
   150 000-run sweep that takes over a minute on one worker (target: >= 1.7x).
5. the million-run sweep through ``diffsweep run`` (``--skip-million`` to skip): wall time
   (target <= 170 s), the consolidated store's files (<= 200), a fresh plain-xarray read
   of one whole variable (<= 2 s), and peak memory against the 150 000-run sweep.
6. refine — ``diffsweep refine`` locating the divergence edge of a 64-coefficient FTCS
   sweep to rtol 1e-3 against a dense grid of the same resolution, runs spent and wall
   time side by side on one LocalCluster (``benchmarks/refine.py``; target: 20x fewer
   runs; ``--skip-refine`` to skip). ``python benchmarks/refine.py`` alone adds the
   accuracy study (the step count from which the edge is within rtol of 2/λ_max).

The reference sweep: 1-D FTCS, 128 cells, Neumann walls, step initial condition,
100 coefficients (geomspace 1e-3..1) x 100 CFL numbers (linspace 0.005..0.495: every run
below the stability bound 1/2), checkpoints 1000, 2000, ..., 10000 steps: 10^4
trajectories, 10^5 results.

Usage::

    python benchmarks/run.py [--quick] [--json PATH] [--skip-million] [--skip-refine]
                              [--only kernels,particles,startup,cli,refine]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numba
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernels
import particles
from sweeps import sweep_yaml
import refine as refine_bench
import store_layout

from pipeline.numerics import Batch, Grid, initial_condition, integrate

HERE = Path(__file__).resolve().parent


# -- machine ------------------------------------------------------------------------------


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- 1. kernels ---------------------------------------------------------------------------

FTCS_CASES = [(1, 128, 4096, 1000), (2, 32, 512, 200), (2, 64, 128, 200), (3, 16, 256, 100), (3, 32, 32, 100)]
QUICK_CASES = [(1, 128, 256, 50)]


def checkpoint_seconds(scheme: str, dims: int, cells: int, batch: int, repeats: int) -> float:
    """Seconds for one checkpoint of one step (a whole transform pair for implicit schemes)."""
    grid = Grid(dims, cells, 1.0)
    initial = initial_condition("random", grid)
    coefficient = np.ones(batch)
    step_size = np.full(batch, 0.4 / dims * grid.dx**2)
    runs = Batch(scheme, "neumann", grid, initial, coefficient, step_size)

    def work():
        for _ in integrate(runs, [1]):
            pass

    work()
    return kernels.best_time(work, repeats)


def sweep_seconds(scheme: str, batch: int, checkpoints: list[int], repeats: int) -> float:
    """Seconds to integrate a 1-D 128-cell batch through ``checkpoints`` (no diagnostics)."""
    grid = Grid(1, 128, 1.0)
    initial = initial_condition("step", grid)
    coefficient = np.ones(batch)
    step_size = np.linspace(0.005, 0.495, batch) * grid.dx**2
    runs = Batch(scheme, "neumann", grid, initial, coefficient, step_size)

    def work():
        for _ in integrate(runs, checkpoints):
            pass

    work()
    return kernels.best_time(work, repeats)


def bench_kernels(quick: bool) -> dict:
    repeats = 2 if quick else 5
    numba.set_num_threads(1)
    cases = QUICK_CASES if quick else FTCS_CASES
    result = {
        "fp_ops_per_s": kernels.fp_peak(repeats),
        "stream_copy_bytes_per_s": kernels.stream_copy_bandwidth(repeats, 16 if quick else 256),
        "numpy_per_run_updates_per_s": kernels.numpy_baseline(runs=4 if quick else 8, steps=100 if quick else 500, repeats=repeats),
        "ftcs": [],
        "implicit": [],
    }
    for dims, cells, batch, steps in cases:
        # CPU time of the one thread: on a shared machine, time-slicing by other jobs
        # would otherwise count against the kernel
        rate = kernels.kernel_rate("ftcs", dims, cells, batch, steps, repeats, time.process_time)
        roofs = kernels.roofs(dims, result["fp_ops_per_s"], result["stream_copy_bytes_per_s"])
        result["ftcs"].append({"dims": dims, "cells": cells, "batch": batch, "steps": steps,
                               "updates_per_s_per_core": rate, "compute_roof": roofs["compute"],
                               "memory_roof": roofs["memory"]})
    # implicit: one checkpoint of one step vs one FTCS step on the same batch, and the
    # reference sweep's trajectory (10 checkpoints to 10^4 steps) for both
    for dims, cells, batch, _ in cases:
        ftcs_step = batch * cells**dims / next(
            r["updates_per_s_per_core"] for r in result["ftcs"] if (r["dims"], r["cells"]) == (dims, cells)
        )
        for scheme in ("backward-euler", "crank-nicolson"):
            seconds = checkpoint_seconds(scheme, dims, cells, batch, repeats)
            result["implicit"].append(
                {"scheme": scheme, "dims": dims, "cells": cells, "batch": batch,
                 "checkpoint_seconds": seconds, "ftcs_step_seconds": ftcs_step,
                 "ratio_one_step": seconds / ftcs_step}
            )
    checkpoints = [100, 200] if quick else list(range(1000, 10001, 1000))
    batch = 256 if quick else 1024
    ftcs = sweep_seconds("ftcs", batch, checkpoints, repeats)
    result["reference_trajectory"] = {
        "batch": batch, "checkpoints": checkpoints, "ftcs_seconds": ftcs,
        **{f"{s}_seconds": sweep_seconds(s, batch, checkpoints, repeats) for s in ("backward-euler", "crank-nicolson")},
    }
    watch_cases = kernels.WATCH_CASES[:1] if quick else kernels.WATCH_CASES
    result["watch"] = [
        kernels.watch_overhead(*case, repeats=3 if quick else 9, across_bound=across)
        for case in watch_cases
        for across in (False, True)
    ]
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return result


# -- 2-5. the CLI -------------------------------------------------------------------------


class TreeMemory:
    """Peak summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_cli(workdir: Path, name: str, text: str, workers: int, *, in_process: bool = False,
            local: str | None = None, read: bool = False) -> dict:
    """``diffsweep run`` in a subprocess: wall time, peak memory, the store's own timings.

    ``in_process`` runs the blocks without dask (``--in-process``); ``local`` is
    ``"--threads"`` or ``"--processes"`` for the local cluster's workers (default: the
    CLI's own choice). ``read`` also times a fresh Python reading one whole variable of
    the finished store with plain xarray (:func:`store_layout.read_seconds`).
    """
    import zarr

    from pipeline.planning import plan as make_plan
    from pipeline.sweep import parse_sweep

    path = workdir / f"{name}.yaml"
    path.write_text(text)
    store = workdir / f"{name}-{workers}w.zarr"
    shutil.rmtree(store, ignore_errors=True)
    command = [sys.executable, "-m", "pipeline.cli.main", "run", str(path), "-o", str(store),
               "--no-progress", *(["--in-process"] if in_process else ["--workers", str(workers)]),
               *([local] if local and not in_process else [])]
    if shutil.which("diffsweep"):
        command = ["diffsweep", *command[3:]]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    memory = TreeMemory(process.pid)
    output, _ = process.communicate()
    wall = time.perf_counter() - start
    peak = memory.stop()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output}")
    attrs = json.loads(zarr.open_group(str(store), mode="r").attrs["run_history"])[-1]
    plan = make_plan(parse_sweep(text), parallelism=workers)
    files, on_disk = store_layout.files_and_bytes(store)
    read_seconds, read_bytes = store_layout.read_seconds(store) if read else (float("nan"), 0)
    run_seconds = float(attrs["seconds"])
    compute = float(attrs["compute_seconds"])
    write = float(attrs["write_seconds"])
    shutil.rmtree(store, ignore_errors=True)
    return {
        "name": name, "workers": workers, "in_process": in_process, "runs": plan.n_runs, "results": plan.n_results,
        "blocks": plan.n_blocks, "runs_per_block": plan.runs_per_task,
        "wall_seconds": wall, "run_seconds": run_seconds,
        "compute_seconds": compute, "write_seconds": write,
        "runs_per_s": plan.n_runs / wall, "results_per_s": plan.n_results / wall,
        "peak_rss_bytes": peak,
        # the scheduler's share of the run: worker time not in compute or writes
        "scheduler_share": 1 - (compute + write) / (workers * run_seconds),
        # everything outside block computation, cluster start-up and imports included
        "outside_compute_share": 1 - compute / (workers * wall),
        "store_bytes": plan.store_bytes, "store_bytes_on_disk": on_disk, "store_files": files,
        "read_seconds": read_seconds, "read_bytes": read_bytes,
        "write_bytes_per_s": plan.store_bytes / write if write > 0 else float("nan"),
        "cell_updates": plan.cell_updates,
    }


def bench_startup(workdir: Path, workers: int, repeats: int) -> dict:
    """The small sweep a laptop user runs first, whole CLI: the default, threads, processes, no dask.

    1-D FTCS, 128 cells, 32 x 32 runs to 1000..10000 steps (10 240 results); best of
    ``repeats`` wall times of each way, alternated so that they share the machine's load.
    """
    text = sweep_yaml("startup", 32, 32, list(range(1000, 10001, 1000)))
    ways = {"default": {}, "--threads": {"local": "--threads"}, "--processes": {"local": "--processes"},
            "--in-process": {"in_process": True}}
    walls: dict[str, list[float]] = {way: [] for way in ways}
    run_cli(workdir, "startup", text, workers, in_process=True)  # numba's on-disk cache filled, not timed
    for _ in range(repeats):
        for way, options in ways.items():
            walls[way].append(run_cli(workdir, "startup", text, workers, **options)["wall_seconds"])
    return {"results": 10_240, "walls": walls, "best": {way: min(w) for way, w in walls.items()}}


# -- the baseline a user would write --------------------------------------------------------


def baseline_task(coefficient: float, step_size: float, steps: int) -> tuple[float, float]:
    """One run, one numpy expression per step: 1-D, 128 cells, Neumann, step initial field."""
    cells, dx = 128, 1.0 / 128
    u = np.where((np.arange(cells) + 0.5) * dx < 0.5, 1.0, 0.0)
    mass = u.sum()
    r = coefficient * step_size / dx**2
    for _ in range(steps):
        low = u[0] + r * (u[1] - u[0])
        high = u[-1] + r * (u[-2] - u[-1])
        u[1:-1] += r * (u[2:] - 2 * u[1:-1] + u[:-2])
        u[0], u[-1] = low, high
    return float(np.abs(u - mass / cells).max()), float(abs(u.sum() - mass) / mass)


def first_kernel_call() -> tuple[float, float]:
    """Seconds of the first and the second FTCS call in this (worker) process."""
    from pipeline.numerics import ftcs

    state = np.zeros((2, 128))
    r = np.full(2, 0.25)
    start = time.perf_counter()
    ftcs.advance(state, r, 10, "neumann")
    first = time.perf_counter() - start
    start = time.perf_counter()
    ftcs.advance(state, r, 10, "neumann")
    return first, time.perf_counter() - start


def warm_worker() -> float:
    """Import the pipeline and load the kernel in this worker; seconds it took."""
    start = time.perf_counter()
    import pipeline.compute
    import pipeline.store  # noqa: F401

    first_kernel_call()
    return time.perf_counter() - start


def library_run(client, workdir: Path, text: str, workers: int) -> dict:
    """The reference sweep through the library on warm workers: the scheduler's share alone.

    Store creation (client side) and worker warm-up are timed separately; the share is
    1 - (compute + write summed over blocks) / (workers x time from submit to last result).
    """
    from pipeline import store
    from pipeline.executors import DaskExecutor
    from pipeline.planning import plan as make_plan
    from pipeline.sweep import parse_sweep

    plan = make_plan(parse_sweep(text), parallelism=workers)
    url = str(workdir / "library.zarr")
    start = time.perf_counter()
    warm = client.run(warm_worker)
    warm_seconds = time.perf_counter() - start
    start = time.perf_counter()
    store.create(url, plan)
    create_seconds = time.perf_counter() - start
    start = time.perf_counter()
    summaries = DaskExecutor(client).execute(plan, list(plan.blocks()), store.BlockWriter(url))
    seconds = time.perf_counter() - start
    compute = sum(s["compute_seconds"] for s in summaries)
    write = sum(s["write_seconds"] for s in summaries)
    shutil.rmtree(url, ignore_errors=True)
    return {
        "worker_warm_up_seconds": list(warm.values()), "warm_up_wall_seconds": warm_seconds,
        "store_create_seconds": create_seconds, "execute_seconds": seconds, "blocks": plan.n_blocks,
        "compute_seconds": compute, "write_seconds": write,
        "block_compute_seconds": sorted(s["compute_seconds"] for s in summaries),
        "scheduler_share": 1 - (compute + write) / (workers * seconds),
        "runs_per_s": plan.n_runs / seconds,
    }


def bench_baseline(samples: int, coefficients: int, cfls: int, steps: list[int], workers: int,
                   processes: bool = True, library: tuple[Path, str] | None = None) -> dict:
    import dask
    from distributed import Client, LocalCluster

    grid_dx2 = (1.0 / 128) ** 2
    coefficient = np.geomspace(1e-3, 1.0, coefficients)
    cfl = np.linspace(0.005, 0.495, cfls)
    rng = np.random.default_rng(0)
    picks = rng.choice(coefficients * cfls * len(steps), size=samples, replace=False)
    triples = []
    for pick in picks:
        i, rest = divmod(int(pick), cfls * len(steps))
        j, k = divmod(rest, len(steps))
        triples.append((float(coefficient[i]), float(cfl[j] * grid_dx2 / coefficient[i]), int(steps[k])))
    start = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                      **({"host": "127.0.0.1"} if processes else {}), dashboard_address=None) as cluster, Client(cluster) as client:
        startup = time.perf_counter() - start
        first_calls = client.run(first_kernel_call)
        tasks = [dask.delayed(baseline_task)(c, dt, n) for c, dt, n in triples]
        start = time.perf_counter()
        dask.compute(*tasks, scheduler=client)
        seconds = time.perf_counter() - start
        extra = {"library": library_run(client, *library, workers)} if library else {}
    return {
        "samples": samples, "workers": workers, "seconds": seconds, "cluster_startup_seconds": startup,
        # its start-up (a LocalCluster and the first kernel call in each worker) is paid
        # once per sweep: the wall time of N results is start-up + N / results_per_s
        "startup_seconds": startup + max(v[0] for v in first_calls.values()),
        "results_per_s": samples / seconds,
        "mean_steps": float(np.mean([t[2] for t in triples])),
        "worker_first_kernel_call_seconds": [v[0] for v in first_calls.values()],
        "worker_second_kernel_call_seconds": [v[1] for v in first_calls.values()],
        **extra,
    }


COMPILE_SNIPPET = """
import time, numpy as np
start = time.perf_counter()
from pipeline.numerics import ftcs
imported = time.perf_counter()
ftcs.advance(np.zeros((2, 128)), np.full(2, 0.25), 10, "neumann")
called = time.perf_counter()
print(imported - start, called - imported)
"""


def bench_compile() -> dict:
    """First FTCS call in a fresh process: with an empty numba cache, then with it warm."""
    with tempfile.TemporaryDirectory() as cache:
        environment = {**os.environ, "NUMBA_CACHE_DIR": cache}
        out = {}
        for label in ("cold_cache", "warm_cache"):
            text = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET], env=environment,
                                  capture_output=True, text=True, check=True).stdout.split()
            out[f"{label}_import_seconds"], out[f"{label}_first_call_seconds"] = map(float, text)
    return out


# -- the table -------------------------------------------------------------------------------


def print_table(r: dict) -> None:
    m = r["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, "
        f"numpy {m['numpy']}, numba {m['numba']}",
        f"load average (1, 5, 15 min): start {r['load_start']}, end {r['load_end']}"
        + ("  [--quick: tiny sizes, figures not meaningful]" if r["quick"] else ""),
        "",
        f"{'measure':<58} {'value':>14}  note",
        "-" * 100,
    ]

    def row(label, value, note=""):
        lines.append(f"{label:<58} {value:>14}  {note}")

    if "kernels" in r:
        print_kernels(r["kernels"], row)
    if "particles" in r:
        print_particles(r["particles"], row)
    if "startup" in r:
        print_startup(r["startup"], row)
    if "end_to_end" in r:
        print_cli(r, row)
    if "refine" in r:
        for label, value, note in refine_bench.rows(r["refine"]):
            row(label, value, note)
    print("\n".join(lines))


#: FTCS cell updates/s/core targets (issue 13), by dimension
FTCS_TARGETS = {1: 4e9, 2: 1.5e9, 3: 1.2e9}


def print_kernels(k: dict, row) -> None:
    row("vector multiply/add throughput, 1 thread", f"{k['fp_ops_per_s'] / 1e9:.1f} Gop/s",
        "measured; compute roof of FTCS = this / (5, 7, 9 ops per update in 1-, 2-, 3-D)")
    row("stream copy bandwidth (read + write)", f"{k['stream_copy_bytes_per_s'] / 1e9:.1f} GB/s",
        "memory roof of FTCS without reuse = this / 16 B per update")
    row("numpy per-run loop, 1-D 128 cells", f"{k['numpy_per_run_updates_per_s']:.2e}", "cell updates/s")
    for c in k["ftcs"]:
        grid = "x".join([str(c["cells"])] * c["dims"])
        target = FTCS_TARGETS[c["dims"]]
        mark = "met" if c["updates_per_s_per_core"] >= target else "NOT met"
        row(f"FTCS {c['dims']}-D {grid}, batch {c['batch']}, 1 thread", f"{c['updates_per_s_per_core']:.2e}",
            f"cell updates/s/core (CPU time); target {target:.1e}: {mark}; roof compute "
            f"{c['compute_roof']:.1e}, memory {c['memory_roof']:.1e}")
    for c in k["implicit"]:
        grid = "x".join([str(c["cells"])] * c["dims"])
        row(f"{c['scheme']} {grid}: 1 checkpoint / 1 FTCS step", f"{c['ratio_one_step']:.1f}x",
            f"{c['checkpoint_seconds'] * 1e3:.2f} ms vs {c['ftcs_step_seconds'] * 1e3:.3f} ms")
    for c in k["watch"]:
        grid = "x".join([str(c["cells"])] * c["dims"])
        runs = "r up to 1.5x bound" if c["across_bound"] else "r below bound"
        label = f"FTCS first-passage watch {grid} x{c['steps']} steps, {runs}"
        note = (f"slower than the plain kernel, same batch, alternated ({c['plain_updates_per_s']:.2e} "
                f"-> {c['watched_updates_per_s']:.2e}/s)")
        if not c["across_bound"]:
            note += f"; target <= 15 %: {'met' if c['overhead'] <= 0.15 else 'NOT met'}"
        row(label, f"{c['overhead']:+.1%}", note)
    t = k["reference_trajectory"]
    for s in ("backward-euler", "crank-nicolson"):
        row(f"{s} / FTCS, reference trajectory ({len(t['checkpoints'])} ckpts)",
            f"{t[f'{s}_seconds'] / t['ftcs_seconds']:.3f}x",
            f"to {t['checkpoints'][-1]} steps, batch {t['batch']}: per step of the sweep")


def print_particles(p: dict, row) -> None:
    for c in p["rows"]:
        grid = "x".join([str(c["cells"])] * c["dims"])
        note = "particle-steps/s/core (CPU time), RNG included"
        if c["numpy_rate_cpu"]:
            note += f"; {c['rate_cpu'] / c['numpy_rate_cpu']:.0f}x numpy"
        if c["target"] is not None:
            note += f"; target {c['target']:.0e}: {'met' if c['met'] else 'NOT met'}"
        if c["scheme"] == "langevin":
            note += f"; roof {p['normals_per_s'] / c['dims']:.1e}"
        row(f"{c['scheme']} {c['dims']}-D {grid} {c['boundary']}, {c['runs']} x {c['particles']}",
            f"{c['rate_cpu']:.2e}", note)
    side = p["langevin_3d_kernel"]
    row("3-D langevin kernel alone, current / baseline", f"{side['current']:.2e}",
        f"vs {side['baseline']:.2e} frozen baseline, same bits, alternated; roof "
        f"{p['normals_per_s'] / 3:.2e} (3 normals per particle-step at {p['normals_per_s']:.2e}/s)")


def print_startup(st: dict, row) -> None:
    best = st["best"]
    row(f"small sweep ({st['results']:,} results), whole CLI, default", f"{best['default']:.2f} s",
        f"wall, best of {len(st['walls']['default'])}; target <= 1.5 s: {met(best['default'] <= 1.5)}")
    for way in ("--threads", "--processes", "--in-process"):
        row(f"  same, {way}", f"{best[way]:.2f} s", f"{best[way] / best['default']:.2f}x the default")


def print_cli(r: dict, row) -> None:
    e, b = r["end_to_end"], r["baseline"]
    how = "--in-process" if e["in_process"] else f"{e['workers']} workers"
    row(f"diffsweep run ({how}), reference sweep ({e['runs']} runs, {e['results']} results)",
        f"{e['results_per_s']:,.0f}", f"results/s incl. start-up ({e['wall_seconds']:.1f} s wall, "
        f"{e['runs_per_s']:,.0f} trajectories/s, {e['blocks']} blocks)")
    row(f"baseline: dask.delayed per result, numpy ({b['samples']} sampled)", f"{b['results_per_s']:,.1f}",
        f"results/s, {b['workers']} workers x 1 thread, start-up excluded, mean {b['mean_steps']:.0f} steps")
    ratio = r["speedup"]
    row("  results/s over the baseline's", f"{ratio:,.0f}x", "diffsweep's start-up included, the baseline's not")
    for label, results, wall, target in end_to_end_cases(r):
        baseline_wall = b["startup_seconds"] + results / b["results_per_s"]
        speedup = baseline_wall / wall
        row(f"end to end over the baseline, {label}", f"{speedup:,.0f}x",
            f"both start-ups included: {wall:.2f} s vs {baseline_wall:,.0f} s ({b['startup_seconds']:.1f} s start-up "
            f"+ {results:,} results at {b['results_per_s']:.1f}/s); target >= {target}x: {met(speedup >= target)}")
    row("scheduler share of the run (1 - busy/(workers x run))", f"{e['scheduler_share']:.1%}",
        f"target < 5 %: {'met' if e['scheduler_share'] < 0.05 else 'NOT met'}; run {e['run_seconds']:.2f} s, "
        f"compute {e['compute_seconds']:.2f} s, writes {e['write_seconds']:.2f} s")
    if "library" in b:
        lib = b["library"]
        row("scheduler share, library on warm workers (same sweep)", f"{lib['scheduler_share']:.1%}",
            f"target < 5 %: {'met' if lib['scheduler_share'] < 0.05 else 'NOT met'}; {lib['blocks']} blocks in "
            f"{lib['execute_seconds']:.2f} s, compute {lib['compute_seconds']:.2f} s, writes {lib['write_seconds']:.2f} s")
        row("  client: store template creation", f"{lib['store_create_seconds']:.2f} s", "before any block runs")
        row("  worker warm-up (imports + kernel load), per worker",
            " / ".join(f"{x:.2f}" for x in lib["worker_warm_up_seconds"]) + " s", "paid by the first block otherwise")
    row("outside block compute, incl. cluster start-up", f"{e['outside_compute_share']:.1%}",
        f"of {e['wall_seconds']:.1f} s wall x {e['workers']} workers")
    row("store writes", f"{e['write_bytes_per_s'] / 1e6:.1f} MB/s",
        f"{e['store_bytes'] / 1e6:.1f} MB uncompressed, {e['store_bytes_on_disk'] / 1e6:.1f} MB on disk")
    if "compile" in r:
        c = r["compile"]
        row("numba: first FTCS call, fresh process, empty cache", f"{c['cold_cache_first_call_seconds']:.2f} s", "compile")
        row("numba: first FTCS call, fresh process, warm cache", f"{c['warm_cache_first_call_seconds']:.2f} s", "load from disk cache")
    row("first / second FTCS call in each dask worker",
        " / ".join(f"{x:.2f}" for x in b["worker_first_kernel_call_seconds"]) + " s",
        "second: " + " / ".join(f"{x * 1e3:.2f}" for x in b["worker_second_kernel_call_seconds"]) + " ms (paid once per worker)")
    for s in r.get("scaling", []):
        row(f"scaling {s['label']}: {s['runs']} runs, {s['workers']} worker(s)", f"{s['runs_per_s']:,.0f}",
            f"runs/s, peak RSS {s['peak_rss_bytes'] / 2**20:.0f} MiB (all processes), {s['wall_seconds']:.1f} s wall")
    if "memory_growth" in r:
        g = r["memory_growth"]
        row("peak memory 16x / 1x", f"{g:.2f}", f"target within 20 %: {'met' if abs(g - 1) <= 0.2 else 'NOT met'}")
    if "workers_speedup" in r:
        row("2 workers / 1 worker runs/s (16x sweep)", f"{r['workers_speedup']:.2f}x", "a few seconds: start-up weighs")
    if "long_scaling" in r:
        one, two = r["long_scaling"]
        speedup = one["wall_seconds"] / two["wall_seconds"]
        row(f"2 workers / 1 worker, {one['runs']:,}-run sweep", f"{speedup:.2f}x",
            f"wall {one['wall_seconds']:.1f} s -> {two['wall_seconds']:.1f} s (>= 1 min on 1 worker: "
            f"{'yes' if one['wall_seconds'] >= 60 else 'NO'}); target >= 1.7x: {met(speedup >= 1.7)}")
    if "million" in r:
        mm = r["million"]
        row(f"million-run sweep ({mm['runs']:,} runs, {mm['results']:,} results)", f"{mm['wall_seconds']:.0f} s",
            f"wall; target <= {MILLION_SECONDS} s: {met(mm['wall_seconds'] <= MILLION_SECONDS)}; {mm['runs_per_s']:,.0f} "
            f"runs/s, {mm['blocks']} blocks, scheduler share {mm['scheduler_share']:.1%}")
        row("  store files (consolidated)", f"{mm['store_files']:,}",
            f"{mm['store_bytes_on_disk'] / 2**20:.1f} MiB on disk; target <= {store_layout.MAX_FILES}: "
            f"{met(mm['store_files'] <= store_layout.MAX_FILES)}")
        row("  read one variable, fresh plain xarray", f"{mm['read_seconds']:.2f} s",
            f"distance, {mm['read_bytes'] / 2**20:.1f} MiB, open + .values, best of 3 (imports not timed); "
            f"target <= {store_layout.MAX_READ_SECONDS:.0f} s: {met(mm['read_seconds'] <= store_layout.MAX_READ_SECONDS)}")
        if "long_scaling" in r:
            growth = mm["peak_rss_bytes"] / r["long_scaling"][1]["peak_rss_bytes"]
            row(f"  peak memory, million / {r['long_scaling'][1]['runs']:,} runs", f"{growth:.2f}",
                f"{mm['peak_rss_bytes'] / 2**20:.0f} MiB, same workers; target within 20 %: {met(abs(growth - 1) <= 0.2)}")


#: the million-run sweep's wall-time target, seconds
MILLION_SECONDS = 170

#: end-to-end speed-up targets over the baseline, both sides' start-up included
END_TO_END_TARGETS = {"small": 150, "reference": 300}


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def end_to_end_cases(r: dict) -> list[tuple[str, int, float, int]]:
    """(label, results, diffsweep's wall seconds, target) of each end-to-end comparison."""
    cases = []
    if "startup" in r:
        st = r["startup"]
        cases.append((f"small sweep ({st['results']:,} results)", st["results"], st["best"]["default"],
                      END_TO_END_TARGETS["small"]))
    e = r["end_to_end"]
    cases.append((f"reference ({e['results']:,} results)", e["results"], e["wall_seconds"], END_TO_END_TARGETS["reference"]))
    return cases


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs (seconds)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--skip-million", action="store_true", help="skip the million-run sweep (minutes)")
    parser.add_argument("--skip-refine", action="store_true", help="skip refine against a dense grid")
    parser.add_argument("--only", metavar="SECTIONS", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: all; "
                             "'cli' is the end-to-end, overhead, scaling and million-run part)")
    options = parser.parse_args(argv)
    sections = {name.strip() for name in options.only.split(",") if name.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    quick = options.quick
    workers = 2 if (os.cpu_count() or 1) >= 2 else 1
    results: dict = {"machine": machine(), "load_start": load(), "quick": quick}

    if "kernels" in sections:
        results["kernels"] = bench_kernels(quick)
    if "particles" in sections:
        results["particles"] = particles.measure(quick)
    if "startup" in sections:
        with tempfile.TemporaryDirectory(prefix="diffsweep-bench-") as tmp:
            results["startup"] = bench_startup(Path(tmp), 1 if quick else workers, 1 if quick else 3)
    if "cli" in sections:
        run_cli_sections(results, quick, workers, options.skip_million)
    if "refine" in sections and not options.skip_refine:
        results["refine"] = refine_bench.bench_refine(quick, workers)
    results["load_end"] = load()
    print_table(results)
    if options.json:
        path = Path(options.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))
    return results


#: what ``--only`` can pick
SECTIONS = ("kernels", "particles", "startup", "cli", "refine")


def run_cli_sections(results: dict, quick: bool, workers: int, skip_million: bool) -> None:
    """Sections 2-5: compile times, end to end against the baseline, scaling, million runs."""
    if not quick:
        results["compile"] = bench_compile()

    if quick:
        steps, base = [100, 200], (4, 4)
        reference = (8, 8)
        samples = 8
    else:
        steps, base = list(range(1000, 10001, 1000)), (25, 25)
        reference = (100, 100)
        samples = 400
    with tempfile.TemporaryDirectory(prefix="diffsweep-bench-") as tmp:
        workdir = Path(tmp)
        # --quick: threads instead of worker processes, and the CLI without dask, to
        # check that everything runs in seconds; the figures then mean nothing
        results["baseline"] = bench_baseline(samples, *reference, steps, 1 if quick else workers,
                                             processes=not quick,
                                             library=(workdir, sweep_yaml("reference", *reference, steps)))
        results["end_to_end"] = run_cli(workdir, "reference", sweep_yaml("reference", *reference, steps),
                                        1 if quick else workers, in_process=quick)
        results["speedup"] = results["end_to_end"]["results_per_s"] / results["baseline"]["results_per_s"]
        if not quick:
            scaling = []
            for factor in (1, 4):
                n = (base[0] * int(factor**0.5), base[1] * int(factor**0.5))
                scaling.append({"label": f"{factor}x", **run_cli(workdir, f"scale{factor}", sweep_yaml(f"scale{factor}", *n, steps), workers)})
            scaling.append({"label": "16x", **results["end_to_end"]})  # the reference sweep is 16x the base
            one = run_cli(workdir, "reference", sweep_yaml("reference", *reference, steps), 1)
            scaling.append({"label": "16x", **one})
            results["scaling"] = scaling
            results["memory_growth"] = scaling[2]["peak_rss_bytes"] / scaling[0]["peak_rss_bytes"]
            results["workers_speedup"] = scaling[2]["runs_per_s"] / one["runs_per_s"]
            # 2 workers against 1 on a sweep long enough that start-up does not decide it
            # (>= 1 min on one worker): 300 x 500 runs, the million-run sweep's checkpoints
            long = sweep_yaml("long", 300, 500, store_layout.MILLION_STEPS)
            results["long_scaling"] = [run_cli(workdir, "long", long, n) for n in (1, workers)]
        if not skip_million and not quick:
            million = sweep_yaml("million", 1000, 1000, store_layout.MILLION_STEPS)
            results["million"] = run_cli(workdir, "million", million, workers, read=True)


if __name__ == "__main__":
    main()
