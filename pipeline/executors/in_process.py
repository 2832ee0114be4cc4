"""Run blocks one after another in this process: no scheduler, nothing pickled."""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.compute import BlockSummary, Progress, Sink, run_block
from pipeline.planning import Block, Plan


class InProcessExecutor:
    """Compute blocks sequentially in the calling process (tests, debugging, ``--in-process``).

    Examples
    --------
    >>> InProcessExecutor().parallelism
    1
    """

    @property
    def parallelism(self) -> int:
        """One block at a time."""
        return 1

    def execute(self, plan: Plan, blocks: Iterable[Block], sink: Sink, *, progress: Progress | None = None) -> list[BlockSummary]:
        """Run each block with :func:`~pipeline.compute.run_block`, in order."""
        summaries = []
        for block in blocks:
            summary = run_block(plan, block, sink)
            summaries.append(summary)
            if progress is not None:
                progress(summary)
        return summaries
