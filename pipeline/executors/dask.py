"""Run blocks as tasks on a dask ``distributed`` cluster, one task per block."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pipeline.compute import ATTEMPTS, BlockFailure, BlockSummary, Progress, Sink, describe_error, is_fatal, run_block
from pipeline.planning import Block, Plan

#: topic under which a dask nanny logs the restart of a worker that exceeded its memory
MEMORY_RESTART_EVENT = "worker-restart-memory"


@dataclass
class DaskExecutor:
    """Submit one task per block to ``client`` (a ``distributed.Client``) and wait for all.

    Task keys are :meth:`Plan.key <pipeline.planning.Plan.key>`, so resubmitting the
    same sweep reuses names, and a worker lost mid-task makes the scheduler rerun its
    block elsewhere. Each task carries the plan itself and depends on no other task, so
    a worker lost (or retired) at any moment costs only the blocks it was running; each
    task returns only its summary.
    """

    client: Any
    #: when the last execute began, and the smallest worker memory limit then (for failure reports)
    _started: float = field(default=0.0, init=False, repr=False)
    _memory_limit: int | None = field(default=None, init=False, repr=False)

    @property
    def parallelism(self) -> int:
        """Workers connected to the scheduler now (at least 1)."""
        return len(self.client.scheduler_info(n_workers=-1)["workers"]) or 1

    def execute(
        self, plan: Plan, blocks: Iterable[Block], sink: Sink, *, progress: Progress | None = None,
        failed: list[BlockFailure] | None = None,
    ) -> list[BlockSummary]:
        """Run the blocks on the cluster (one numba thread per task); summaries as they finish.

        A task that raises is retried once (``retries=1``); one whose worker dies is
        rerun by the scheduler up to ``distributed.scheduler.allowed-failures`` times.
        A block that still fails goes into ``failed`` — with the nanny's reason when it
        restarted the worker for memory — and the other blocks go on; without
        ``failed`` the first failure propagates. A full or read-only disk
        (:func:`~pipeline.compute.is_fatal`) stops the run at once.
        """
        from distributed import as_completed

        client = self.client
        self._note_start()
        # The plan travels inside every task, not as data on a worker (scattered, or a
        # task's result): then no block depends on anything a worker holds, so a worker
        # lost while the plan is being sent or replicated cannot cancel the blocks for
        # "lost dependencies", the client never connects to a worker (a scatter's
        # CommClosedError), and retiring a worker moves only finished summaries. It is
        # small: 2.8 KB pickled for the README's reference sweep (20 blocks), 19 KB for
        # the million-run sweep (2000 blocks); pickling and unpickling it takes 0.06 ms,
        # 0.01 % of a reference block (0.8 s). Measured on that sweep on warm workers
        # (benchmarks/plan_transport.py): 11 ms outside the blocks per task with the plan
        # in each task, 13 ms with it as a task, 11 ms scattered (noise of a loaded
        # machine); the scheduler's share stays at 1.5 %, the target being 5 %.
        # All blocks go in one map, so the graph is pickled once and the plan in it once:
        # the scheduler (in this process, for a local cluster) holds one plan, not one
        # per task (2000 copies of 19 KB and their task objects made this process 180 MiB
        # larger on the million-run sweep); each task is still sent with the plan.
        by_key = {plan.key(block): block for block in blocks}
        futures = client.map(
            partial(run_block, plan), list(by_key.values()), sink=sink, threads=1,
            key=list(by_key), pure=False, retries=ATTEMPTS - 1,
        )
        summaries = []
        try:
            for future in as_completed(futures, loop=client.loop):
                if future.status == "error" and failed is not None:
                    error = future.exception()
                    if is_fatal(error):
                        raise error
                    failed.append(self._failure(plan, by_key[future.key], error))
                else:
                    summary = future.result()
                    summaries.append(summary)
                    if progress is not None:
                        progress(summary)
                future.release()
        finally:
            for future in futures:
                future.cancel()
        return summaries

    def _note_start(self) -> None:
        """Remember when the run began and the workers' memory limits (for failure reports)."""
        import time

        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        limits = [w.get("memory_limit") for w in workers if w.get("memory_limit")]
        self._started = time.time()
        self._memory_limit = min(limits) if limits else None

    def _failure(self, plan: Plan, block: Block, error: BaseException) -> BlockFailure:
        """What went wrong with ``block``, in one line."""
        if type(error).__name__ != "KilledWorker":
            return {"index": block.index, "error": describe_error(error), "attempts": ATTEMPTS}
        attempts = int(getattr(error, "allowed_failures", 0)) + 1
        return {"index": block.index, "error": self._killed(plan, block, error, attempts), "attempts": attempts}

    def _killed(self, plan: Plan, block: Block, error: BaseException, attempts: int) -> str:
        """Why the workers running ``block`` died: the nanny's memory restarts, if it logged any."""
        import dask.config
        from dask.utils import format_bytes

        from pipeline.planning import WORKER_BASELINE_BYTES

        estimate = plan.sweep.task_memory(block.n_runs)
        try:  # the nanny's memory restarts since this run began (other runs' blocks too, if any)
            mine = [event for when, event in self.client.get_events(MEMORY_RESTART_EVENT) if when >= self._started]
        except Exception:  # a scheduler that keeps no events: say what is known
            mine = []
        if not mine:
            return (
                f"its worker died on each of {attempts} attempts (the nanny logged no memory restart; "
                f"see the worker logs): {describe_error(error)}"
            )
        terminate = float(dask.config.get("distributed.worker.memory.terminate", 0.95))
        limit = self._memory_limit
        of_limit = f" of the worker memory limit {format_bytes(limit)}" if limit else " of the worker memory limit"
        used = max(int(event.get("rss", 0)) for event in mine)
        return (
            f"the dask nanny restarted its worker for memory {len(mine)} times in {attempts} attempts "
            f"(it used {format_bytes(used)}, over {terminate:.0%}{of_limit}); this block of {block.n_runs} runs "
            f"was estimated at {format_bytes(estimate)} plus a worker baseline of about "
            f"{format_bytes(WORKER_BASELINE_BYTES)}: use smaller chunks or workers with more memory"
        )

    def map(self, function: Callable[..., Any], items: Sequence[Any], *, name: str) -> list[Any]:
        """Submit ``function(item, threads=1)`` for every item as one batch and gather the
        results in order. Keys are ``name-0``, ``name-1``, ...; the function must accept
        ``threads`` (numba threads per task: one per task on a worker)."""
        client = self.client
        futures = client.map(
            partial(function, threads=1), list(items), key=[f"{name}-{i}" for i in range(len(items))],
            pure=False, retries=1,
        )
        try:
            return list(client.gather(futures))
        finally:
            for future in futures:
                future.cancel()

