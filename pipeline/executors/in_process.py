"""Run blocks one after another in this process: no scheduler, nothing pickled."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pipeline.compute import (
    ATTEMPTS,
    BlockFailure,
    BlockSummary,
    Progress,
    Sink,
    describe_error,
    is_fatal,
    run_block,
)
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

    def execute(
        self, plan: Plan, blocks: Iterable[Block], sink: Sink, *, progress: Progress | None = None,
        failed: list[BlockFailure] | None = None,
    ) -> list[BlockSummary]:
        """Run each block with :func:`~pipeline.compute.run_block`, in order.

        A block that raises is tried once more; if it raises again it goes into
        ``failed`` and the next block runs (without ``failed``, the error propagates,
        as does a full or read-only disk at once: :func:`~pipeline.compute.is_fatal`).
        """
        summaries = []
        for block in blocks:
            summary = _attempts(plan, block, sink, failed)
            if summary is None:
                continue
            summaries.append(summary)
            if progress is not None:
                progress(summary)
        return summaries

    def map(self, function: Callable[[Any], Any], items: Sequence[Any], *, name: str) -> list[Any]:
        """``function`` applied to each item in turn (``name`` is unused here)."""
        return [function(item) for item in items]


def _attempts(plan: Plan, block: Block, sink: Sink, failed: list[BlockFailure] | None) -> BlockSummary | None:
    """Run ``block`` up to :data:`~pipeline.compute.ATTEMPTS` times; None once it is recorded as failed."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return run_block(plan, block, sink)
        except Exception as error:
            if is_fatal(error):
                raise
            if attempt == ATTEMPTS:
                if failed is None:
                    raise
                failed.append({"index": block.index, "error": describe_error(error), "attempts": attempt})
    return None
