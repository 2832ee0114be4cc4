"""Executors: how the blocks of a plan are run, behind one small protocol.

An executor takes the blocks to compute and a sink, runs
:func:`pipeline.compute.run_block` on each block, and returns the blocks' summaries.
:class:`InProcessExecutor` runs them one after another in this process (tests,
debugging, ``diffsweep run --in-process``); :class:`DaskExecutor` submits one task per
block to a ``distributed.Client``. Whoever runs a plan picks one explicitly. Both also
``map`` a function over a list of small tasks and return the results (the probe runs
of ``diffsweep refine``, one batch per round).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from pipeline.compute import BlockFailure, BlockSummary, Progress, Sink
from pipeline.executors.dask import DaskExecutor
from pipeline.executors.in_process import InProcessExecutor
from pipeline.planning import Block, Plan

__all__ = ["DaskExecutor", "Executor", "InProcessExecutor"]

T = TypeVar("T")

class Executor(Protocol):
    """Runs the blocks of a plan into a sink."""

    @property
    def parallelism(self) -> int:
        """How many blocks run at once (the plan sizes its blocks for this many workers)."""
        ...

    def execute(
        self, plan: Plan, blocks: Iterable[Block], sink: Sink, *, progress: Progress | None = None,
        failed: list[BlockFailure] | None = None,
    ) -> list[BlockSummary]:
        """Compute every block of ``blocks`` into ``sink``; one summary per computed block, in
        completion order. A block that raises is tried once more; then it is appended to
        ``failed`` and the others go on (without ``failed``, the error propagates)."""
        ...

    def map(self, function: Callable[[T], Any], items: Sequence[T], *, name: str) -> list[Any]:
        """``[function(item) for item in items]`` as one batch of tasks (one dask graph),
        in the order of ``items``; ``name`` prefixes the task keys. Results must be small.
        ``function`` takes an optional keyword ``threads`` (numba threads of one task),
        which the dask executor sets to 1."""
        ...
