"""A worker lost at any moment of ``diffsweep run`` never fails or hangs the run.

Real processes on 127.0.0.1: a `dask scheduler` and two `dask worker --nthreads 1`
processes with nannies (started by :func:`test_cluster_processes.start_dask`), and the
real ``diffsweep run --scheduler-file`` as a subprocess.  A worker is SIGKILLed at ten
evenly spaced moments from the launch of the run to its end, one run per moment, and at
the moments a hook in the scheduler sees each phase of the run start (the store's write
probe, its removal, the first block sent to a worker, the first block's summary held by
a worker); a worker is retired gracefully mid-run while another joins, and one started
with ``--lifetime`` leaves mid-run.  Every run exits 0 within a bound, and its store
holds the same values as a run in one process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from conftest import diffsweep
from distributed.diagnostics.plugin import SchedulerPlugin
from test_cluster_processes import DaskProcesses, _assert_same_results, start_dask

pytestmark = pytest.mark.cluster

# the scheduler process cannot import this module: send the hook's class by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: 48 blocks of 64 runs: a few seconds of work on two workers
SWEEP = """\
name: lose-a-worker
description: many small blocks, to lose a worker in every phase of a run
model: {scheme: ftcs, dims: 1, cells: 128, boundary: neumann, initial: step}
sweep:
  coefficient: {geomspace: [1.0e-3, 1.0], num: 48}
  cfl: {linspace: [0.005, 0.495], num: 64}
  steps: [100, 1500]
chunks: {coefficient: 1, cfl: 64}
output: {fields: final}
"""

#: the first part of the key of every block task (see pipeline.planning.Plan.key)
BLOCK = "diffsweep-"


class Hook(SchedulerPlugin):
    """Runs in the scheduler: records where blocks run, and SIGKILLs a worker on cue.

    The cue is one of: the run's client connecting (``on="client"``); the first task
    whose key starts with ``prefix`` being sent to a worker (``on="processing"``: that
    worker is killed) or finishing there (``on="memory"``: the worker holding its
    result is killed); the ``after``-th block finishing (``on="blocks"``: a worker
    running a block is killed, in its kernel or in its writes).  The kill happens in
    that very transition, inside the phase, before anything else runs.
    """

    name = "diffsweep-test-hook"

    def __init__(self, on: str | None = None, prefix: str = "", after: int = 0) -> None:
        self.on, self.prefix, self.after = on, prefix, after
        self.killed: str | None = None
        self.sent: list[tuple[str, str]] = []  # (block key, worker) each time one is sent
        self.done: list[tuple[str, str, float]] = []  # (block key, worker, time) as each finishes
        self.left: dict[str, float] = {}  # worker -> when it left

    def _kill(self, worker: str | None) -> None:
        if worker is None or self.killed is not None:
            return
        self.killed = worker
        os.kill(self.scheduler.workers[worker].pid, signal.SIGKILL)

    def add_client(self, scheduler: Any, client: str) -> None:
        if self.on == "client":
            self._kill(min(scheduler.workers, default=None))

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        key = str(key)
        if finish == "processing":
            worker = self.scheduler.tasks[key].processing_on.address
            if key.startswith(BLOCK):
                self.sent.append((key, worker))
            if self.on == "processing" and key.startswith(self.prefix):
                self._kill(worker)
        elif start == "processing" and finish == "memory":
            worker = kwargs.get("worker")
            if key.startswith(BLOCK):
                self.done.append((key, worker, time.time()))
            if self.on == "memory" and key.startswith(self.prefix):
                self._kill(worker)
            if self.on == "blocks" and len(self.done) == self.after:
                running = [ws.address for ws in self.scheduler.workers.values() if ws.processing]
                self._kill(min(running, default=worker))

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        self.left[worker] = time.time()


def _install(cluster_client: Any, hook: Hook) -> None:
    # arguments are pickled by reference unless cloudpickle is told otherwise
    cluster_client.run_on_scheduler(_replace_hook, cloudpickle.dumps(hook))


def _replace_hook(pickled: bytes, dask_scheduler: Any = None) -> None:
    hook = cloudpickle.loads(pickled)
    dask_scheduler.plugins.pop(Hook.name, None)
    dask_scheduler.add_plugin(hook, name=Hook.name)
    hook.scheduler = dask_scheduler


def _hook_record(dask_scheduler: Any = None) -> dict[str, Any]:
    hook = dask_scheduler.plugins[Hook.name]
    return {"killed": hook.killed, "sent": hook.sent, "done": hook.done, "left": hook.left}


@dataclass
class Timing:
    """An undisturbed run: seconds from its launch to its exit, and to its first block."""

    total: float
    first_block: float

    @property
    def bound(self) -> float:
        """How long a run that loses a worker may take: a worker restarts meanwhile."""
        return max(60.0, 4 * self.total)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskProcesses]:
    processes = start_dask(tmp_path_factory.mktemp("losing"))
    yield processes
    processes.stop()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "lose-a-worker.yaml"
    path.write_text(SWEEP)
    return path


@pytest.fixture(scope="module")
def in_process(sweep: Path) -> Path:
    """The reference: the sweep computed in this one process, no dask at all."""
    store = sweep.parent / "in-process.zarr"
    result = diffsweep("run", str(sweep), "-o", str(store), "--in-process", "--no-progress", timeout=240)
    assert result.returncode == 0, result.stderr
    return store


@pytest.fixture(scope="module")
def watcher(cluster: DaskProcesses) -> Iterator[Any]:
    from distributed import Client

    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        yield client


def _launch(sweep: Path, store: Path, cluster: DaskProcesses) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["diffsweep", "run", str(sweep), "-o", str(store), "--no-progress",
         "--scheduler-file", str(cluster.scheduler_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def _finish(run: subprocess.Popen[str], within: float) -> tuple[int, str]:
    """Wait for ``run`` up to ``within`` seconds: (exit status, stderr); kill it after."""
    try:
        _stdout, stderr = run.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        run.kill()
        _stdout, stderr = run.communicate()
        raise AssertionError(f"diffsweep run did not exit within {within:.0f} s:\n{stderr}") from None
    return run.returncode, stderr


def _ready(watcher: Any, workers: int = 2) -> None:
    """Every worker is back (the nannies restart killed ones) before the next run."""
    watcher.wait_for_workers(workers, timeout=120)


@pytest.fixture(scope="module")
def timing(cluster: DaskProcesses, watcher: Any, sweep: Path, in_process: Path, tmp_path_factory) -> Timing:
    """One run without losing anything: its store is right, and it times the others."""
    store = tmp_path_factory.mktemp("undisturbed") / "undisturbed.zarr"
    _ready(watcher)
    _install(watcher, Hook())
    launched = time.time()
    run = _launch(sweep, store, cluster)
    status, stderr = _finish(run, 240)
    total = time.time() - launched
    assert status == 0, stderr
    record = watcher.run_on_scheduler(_hook_record)
    _assert_same_results(store, in_process)
    first = min(when for _key, _worker, when in record["done"]) - launched
    return Timing(total=total, first_block=first)


def _kill_one_worker(watcher: Any) -> str:
    """SIGKILL a worker process (not its nanny)."""
    pids = watcher.run(os.getpid)
    victim = min(pids)
    os.kill(pids[victim], signal.SIGKILL)
    return str(victim)


#: blocks of SWEEP
BLOCKS = 48

#: ten moments from the launch of a run to its end, one run each: the phases of its
#: start, placed by the scheduler's hook, then evenly spaced through its blocks
MOMENTS: dict[str, dict[str, Any] | None] = {
    "at launch": None,  # before it has even connected: killed from here
    "as it connects": {"on": "client"},
    "store probe sent": {"on": "processing", "prefix": "_write_probe-"},
    "probe removal sent": {"on": "processing", "prefix": "_remove_probe-"},
    "first block sent with the plan": {"on": "processing", "prefix": BLOCK},
    "first summary held by its worker": {"on": "memory", "prefix": BLOCK},
    **{f"{k}/5 of the blocks done": {"on": "blocks", "after": k * BLOCKS // 5} for k in range(1, 5)},
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_worker_killed_at_any_moment_of_a_run(
    moment: str, cluster: DaskProcesses, watcher: Any, sweep: Path, in_process: Path, timing: Timing, tmp_path: Path
) -> None:
    """SIGKILL a worker at ``moment``: the run exits 0 within a bound, with the same store."""
    store = tmp_path / "killed.zarr"
    _ready(watcher)
    cue = MOMENTS[moment]
    _install(watcher, Hook(**(cue or {})))
    launched = time.monotonic()
    run = _launch(sweep, store, cluster)
    victim = _kill_one_worker(watcher) if cue is None else None
    status, stderr = _finish(run, timing.bound)
    assert status == 0, stderr
    assert time.monotonic() - launched < timing.bound
    _assert_same_results(store, in_process)
    record = watcher.run_on_scheduler(_hook_record)
    victim = victim or record["killed"]
    assert victim is not None, f"the moment {moment!r} never came"
    assert victim in record["left"]


def _start_worker(cluster: DaskProcesses, name: str, *extra: str) -> subprocess.Popen[bytes]:
    """One more `dask worker` (with a nanny) for ``cluster``; stopped with it."""
    directory = cluster.directory / name
    with open(cluster.directory / f"{name}.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", cluster.address, "--nanny", "--name", name,
             "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "1GiB",
             "--local-directory", str(directory), "--death-timeout", "60", *extra],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    cluster.processes.append(process)
    return process


def _address_of(watcher: Any, name: str, within: float = 120) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for address, info in watcher.scheduler_info(n_workers=-1)["workers"].items():
            if info.get("name") == name:
                return str(address)
        time.sleep(0.1)
    raise AssertionError(f"the worker {name} never joined")


def _check_graceful(record: dict[str, Any], leaver: str) -> None:
    """``leaver`` left while blocks remained; no block it finished ran again, and only
    those it was running when it left ran twice."""
    done_at = [when for _key, _worker, when in record["done"]]
    assert leaver in record["left"], record["left"]
    assert any(key for key, worker in record["sent"] if worker == leaver), "it ran no block"
    assert max(done_at) > record["left"][leaver], "it left after the last block"
    finished_there = {key for key, worker, _when in record["done"] if worker == leaver}
    sends: dict[str, list[str]] = {}
    for key, worker in record["sent"]:
        sends.setdefault(key, []).append(worker)
    again = {key: workers for key, workers in sends.items() if len(workers) > 1}
    assert not finished_there & set(again), again  # its summaries moved, they were not recomputed
    assert all(workers[0] == leaver for workers in again.values()), again
    assert len(again) <= 2, again  # a worker of one thread is sent at most two blocks at a time
    assert len({key for key, _worker, _when in record["done"]}) == len(sends)


def test_a_worker_retired_mid_run_while_another_joins(
    cluster: DaskProcesses, watcher: Any, sweep: Path, in_process: Path, timing: Timing, tmp_path: Path
) -> None:
    """``retire_workers`` on a worker running blocks, while a new worker joins: the run
    loses nothing, recomputes at most the retired worker's blocks in flight, and uses
    the newcomer."""
    store = tmp_path / "retired.zarr"
    _ready(watcher)
    _install(watcher, Hook())
    launched = time.monotonic()
    run = _launch(sweep, store, cluster)
    _start_worker(cluster, "joiner")
    deadline = time.monotonic() + timing.bound
    busy: list[str] = []
    while not busy and time.monotonic() < deadline and run.poll() is None:
        names = {a: info.get("name") for a, info in watcher.scheduler_info(n_workers=-1)["workers"].items()}
        processing = watcher.processing().items()
        busy = [w for w, keys in processing if names.get(w) != "joiner" and any(str(k).startswith(BLOCK) for k in keys)]
        time.sleep(0.02)
    assert busy, "no block was seen running"
    leaver = busy[0]
    watcher.retire_workers([leaver], close_workers=True)
    joiner = _address_of(watcher, "joiner")
    status, stderr = _finish(run, timing.bound)
    assert status == 0, stderr
    assert time.monotonic() - launched < timing.bound
    _assert_same_results(store, in_process)
    record = watcher.run_on_scheduler(_hook_record)
    _check_graceful(record, leaver)
    assert any(worker == joiner for _key, worker, _when in record["done"]), "the new worker ran no block"


def test_a_worker_whose_lifetime_ends_mid_run(
    cluster: DaskProcesses, watcher: Any, sweep: Path, in_process: Path, timing: Timing, tmp_path: Path
) -> None:
    """A worker started with ``--lifetime`` (as dask-jobqueue does for a job's walltime)
    closes itself gracefully mid-run: nothing is lost.

    Its lifetime runs from its own start, and how long a run takes to reach its blocks
    varies with the machine's load; so it is aimed at the middle of the blocks of an
    undisturbed run, and, if it ended outside the blocks, aimed again (at most three
    tries) by how far it missed.  Every try must exit 0 with the same store.
    """
    # from the worker's start: about when a run launched as it joins is halfway through its blocks
    lifetime = (timing.first_block + timing.total) / 2
    for attempt in range(3):
        store = tmp_path / f"lifetime-{attempt}.zarr"
        _ready(watcher)
        _install(watcher, Hook())
        name = f"walltime-{attempt}"
        _start_worker(cluster, name, "--lifetime", f"{lifetime:.2f}s", "--lifetime-stagger", "0s")
        mortal = _address_of(watcher, name)
        launched = time.monotonic()
        status, stderr = _finish(_launch(sweep, store, cluster), timing.bound)
        assert status == 0, stderr
        assert time.monotonic() - launched < timing.bound
        _assert_same_results(store, in_process)
        record = watcher.run_on_scheduler(_hook_record)
        if mortal not in record["left"]:  # it outlived the run: wait for it to go
            deadline = time.monotonic() + lifetime + 30
            while mortal not in record["left"] and time.monotonic() < deadline:
                time.sleep(0.2)
                record = watcher.run_on_scheduler(_hook_record)
        done_at = sorted(when for _key, _worker, when in record["done"])
        left_at = record["left"][mortal]
        ran = any(worker == mortal for _key, worker in record["sent"])
        if ran and done_at[0] < left_at < done_at[-1]:
            _check_graceful(record, mortal)
            return
        lifetime += (done_at[0] + done_at[-1]) / 2 - left_at
    raise AssertionError("a worker's --lifetime never ended while blocks ran, in three tries")
