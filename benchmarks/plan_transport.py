"""What it costs to send the plan inside every task instead of once per worker.

:class:`pipeline.executors.DaskExecutor` puts the (small) plan into each block's task,
so that no block depends on data a worker holds (see its comment).  This measures
that choice against the two others on the README's reference sweep (1-D FTCS, 128
cells, 100 x 100 runs, checkpoints 1000 ... 10000: 20 blocks on 2 workers), through
the library on warm workers of a LocalCluster (2 processes x 1 thread, 127.0.0.1):

- ``embedded``: the plan is an argument of every block task (what diffsweep does);
- ``task``: the plan is the result of one task every block depends on;
- ``scatter``: the plan is scattered to every worker (``broadcast=True``).

For each, the time outside the blocks' own work per task:
``(workers x wall - sum(compute + write)) / blocks``, and the scheduler's share
``1 - sum(compute + write) / (workers x wall)``; medians of ``--repeats`` runs,
interleaved so that they share the machine's load.  Also the plan's pickled size and
the time to pickle and unpickle it (what ``embedded`` adds to each task).

Usage::

    python benchmarks/plan_transport.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import sweep_yaml, warm_worker

from pipeline import store
from pipeline.compute import ATTEMPTS, run_block
from pipeline.executors import DaskExecutor
from pipeline.planning import plan as make_plan
from pipeline.sweep import parse_sweep

STEPS = [1000 * k for k in range(1, 11)]


def _the_plan(plan):
    return plan


def execute(client, transport: str, plan, url: str) -> list[dict]:
    sink = store.BlockWriter(url)
    blocks = list(plan.blocks())
    if transport == "embedded":
        return DaskExecutor(client).execute(plan, blocks, sink)
    if transport == "task":
        carried = client.submit(_the_plan, plan, pure=False)
    else:
        carried = client.scatter(plan, broadcast=True, hash=False)
    futures = [
        client.submit(run_block, carried, block, sink, 1, key=f"{transport}-{plan.key(block)}", pure=False,
                      retries=ATTEMPTS - 1)
        for block in blocks
    ]
    return client.gather(futures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    workers = 2
    plan = make_plan(parse_sweep(sweep_yaml("reference", 100, 100, STEPS)), parallelism=workers)
    pickled = pickle.dumps(plan)
    start = time.perf_counter()
    for _ in range(1000):
        pickle.loads(pickle.dumps(plan))
    round_trip = (time.perf_counter() - start) / 1000
    print(f"reference sweep: {plan.n_runs} runs in {plan.n_blocks} blocks; plan pickled {len(pickled):,} bytes, "
          f"pickle + unpickle {round_trip * 1e3:.3f} ms")
    workdir = Path(tempfile.mkdtemp(prefix="plan-transport-"))
    per_task: dict[str, list[float]] = {"embedded": [], "task": [], "scatter": []}
    share: dict[str, list[float]] = {name: [] for name in per_task}
    block_seconds: list[float] = []
    try:
        with LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
                Client(cluster) as client:
            client.run(warm_worker)
            for repeat in range(args.repeats):
                for transport in per_task:
                    url = str(workdir / f"{transport}-{repeat}.zarr")
                    store.create(url, plan)
                    start = time.perf_counter()
                    summaries = execute(client, transport, plan, url)
                    wall = time.perf_counter() - start
                    busy = sum(s["compute_seconds"] + s["write_seconds"] for s in summaries)
                    block_seconds += [s["compute_seconds"] + s["write_seconds"] for s in summaries]
                    per_task[transport].append((workers * wall - busy) / plan.n_blocks)
                    share[transport].append(1 - busy / (workers * wall))
                    shutil.rmtree(url, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    mean_block = statistics.median(block_seconds)
    print(f"median block: {mean_block:.3f} s of compute + write; load average {os.getloadavg()[0]:.2f}")
    print(f"{'transport':<10} {'outside blocks, per task':>26} {'scheduler share':>16}   (medians of {args.repeats})")
    for transport in per_task:
        print(f"{transport:<10} {statistics.median(per_task[transport]) * 1e3:>23.1f} ms "
              f"{statistics.median(share[transport]):>15.1%}")
    print(f"plan in every task adds {round_trip * 1e3:.3f} ms to a task: "
          f"{round_trip / mean_block:.3%} of a median block")


if __name__ == "__main__":
    main()
