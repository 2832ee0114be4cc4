"""The memory of a dask worker before any block: the baseline ``--memory-limit`` leaves aside.

Starts a LocalCluster of one single-threaded worker process on 127.0.0.1 (what
``diffsweep run`` starts), then reports the worker's resident set size (psutil RSS):
fresh, and after it ran one tiny block of each kind into a real store (imports of
diffsweep, xarray and zarr, numba's kernels loaded from the on-disk cache, the
store opened). A new cluster per kind, so each figure is one kind's alone. The
largest figure, rounded up, is ``pipeline.sweep.WORKER_BASELINE_BYTES``.

Usage::

    python benchmarks/worker_memory.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

KINDS = {
    "FTCS 1-D": "model: {scheme: ftcs, dims: 1, cells: 32}",
    "FTCS 3-D": "model: {scheme: ftcs, dims: 3, cells: 8}",
    "Crank-Nicolson 2-D": "model: {scheme: crank-nicolson, dims: 2, cells: 16}",
    "backward Euler 1-D, fields": "model: {scheme: backward-euler, dims: 1, cells: 32}\noutput: {fields: checkpoints}",
}

SWEEP = """\
name: baseline
{model}
sweep:
  coefficient: [0.1, 1.0]
  cfl: [0.1, 0.2]
  steps: [10, 20]
"""


def rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def one_block(plan, url: str) -> int:
    from pipeline.compute import run_block
    from pipeline.store import BlockWriter

    run_block(plan, next(plan.blocks()), BlockWriter(url), 1)
    return rss()


def main() -> None:
    from dask.utils import format_bytes
    from distributed import Client, LocalCluster

    from pipeline import store
    from pipeline.planning import plan as make_plan
    from pipeline.sweep import parse_sweep

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, model in KINDS.items():
            plan = make_plan(parse_sweep(SWEEP.format(model=model)), parallelism=1)
            url = str(Path(folder) / f"{len(rows)}.zarr")
            store.create(url, plan)
            with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
                with Client(cluster) as client:
                    fresh = next(iter(client.run(rss).values()))
                    after = client.submit(one_block, plan, url, pure=False).result()
            rows.append((name, fresh, after))
    print(f"{'kind':<30} {'fresh worker':>14} {'after one block':>16}")
    for name, fresh, after in rows:
        print(f"{name:<30} {format_bytes(fresh):>14} {format_bytes(after):>16}")
    print(f"largest: {format_bytes(max(after for _, _, after in rows))}")


if __name__ == "__main__":
    main()
