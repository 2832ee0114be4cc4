"""Run blocks as tasks on a dask ``distributed`` cluster, one task per block."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.compute import BlockSummary, Progress, Sink, run_block
from pipeline.planning import Block, Plan


@dataclass(frozen=True)
class DaskExecutor:
    """Submit one task per block to ``client`` (a ``distributed.Client``) and wait for all.

    Task keys are :meth:`Plan.key <pipeline.planning.Plan.key>`, so resubmitting the
    same sweep reuses names, and a worker lost mid-task makes the scheduler rerun its
    block elsewhere. The plan is scattered once; each task returns only its summary.
    """

    client: Any

    @property
    def parallelism(self) -> int:
        """Workers connected to the scheduler now (at least 1)."""
        return len(self.client.scheduler_info(n_workers=-1)["workers"]) or 1

    def execute(self, plan: Plan, blocks: Iterable[Block], sink: Sink, *, progress: Progress | None = None) -> list[BlockSummary]:
        """Run the blocks on the cluster (one numba thread per task); summaries as they finish."""
        from distributed import as_completed

        client = self.client
        plan_future = client.scatter(plan, broadcast=True, hash=False)
        futures = [
            client.submit(run_block, plan_future, block, sink, 1, key=plan.key(block), pure=False, retries=1)
            for block in blocks
        ]
        summaries = []
        try:
            for future in as_completed(futures, loop=client.loop):
                summary = future.result()
                summaries.append(summary)
                if progress is not None:
                    progress(summary)
                future.release()
        finally:
            for future in futures:
                future.cancel()
        return summaries
