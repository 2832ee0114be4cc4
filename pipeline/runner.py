"""Run a plan into a store: refuse bad stores, write the template, run the blocks, record.

This is the library behind ``diffsweep run`` (part of the store layer: it owns the
resume bookkeeping). Every check that can refuse the run happens before anything is
written, so a refused run never touches an existing store. Errors speak of this
module's arguments (``resume``, ``overwrite``); the command line words them as flags.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipeline import planning, store
from pipeline.compute import BlockSummary, Progress
from pipeline.diagnostics import STATUS_NAMES
from pipeline.errors import StoreError, StoreExistsError
from pipeline.executors import Executor, InProcessExecutor
from pipeline.planning import Block, Plan
from pipeline.sweep import Sweep

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did, for the closing paragraph and the store's attributes."""

    store: str
    runs: int
    runs_computed: int
    blocks_total: int
    blocks_computed: int
    blocks_skipped: int
    seconds: float
    compute_seconds: float
    write_seconds: float
    status_counts: dict[str, int] = field(default_factory=dict)

    @property
    def runs_per_second(self) -> float:
        return self.runs_computed / self.seconds if self.seconds > 0 else float("nan")

    def text(self) -> str:
        counts = ", ".join(f"{n} {name}" for name, n in self.status_counts.items())
        skipped = f" ({self.blocks_skipped} already stored, skipped)" if self.blocks_skipped else ""
        return (
            f"Computed {self.blocks_computed} of {self.blocks_total} blocks{skipped}: "
            f"{self.runs_computed} runs in {self.seconds:.1f} s ({self.runs_per_second:,.0f} runs/s; "
            f"kernels {self.compute_seconds:.1f} s and writes {self.write_seconds:.1f} s summed over workers). "
            f"Results by status (runs x step counts): {counts or 'none computed'}. Store: {self.store}"
        )


def preflight(
    url: str,
    *,
    resume: bool = False,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Refuse, without writing anything, what :func:`prepare_store` would refuse.

    Raises
    ------
    StoreError
        ``resume`` and ``overwrite`` are both set, or something that is not a
        diffsweep store is at ``url`` (``resume`` or ``overwrite``).
    StoreExistsError
        Something is at ``url`` and neither ``resume`` nor ``overwrite`` is set.
    """
    if resume and overwrite:
        raise StoreError("resume=True and overwrite=True contradict each other; choose one")
    if not store.exists(url, storage_options):
        return
    if not (resume or overwrite):
        raise StoreExistsError(f"{url!r} already exists; pass resume=True to complete it or overwrite=True to replace it")
    store.read_attributes(url, storage_options)  # only ever resume or replace a diffsweep store


def plan_for_store(
    sweep: Sweep,
    url: str,
    *,
    parallelism: int | None = None,
    resume: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Plan:
    """The plan to run: a resumed store keeps the blocks it was created with."""
    if resume and store.exists(url, storage_options):
        attrs = store.read_attributes(url, storage_options)
        if attrs.get("sweep_hash") == sweep.sha256 and "diffsweep_chunks" in attrs:
            chunks = tuple(json.loads(attrs["diffsweep_chunks"]))
            return Plan(sweep=sweep, chunks=chunks, parallelism=parallelism or 1)
    return planning.plan(sweep, parallelism=parallelism)


def prepare_store(
    url: str,
    plan: Plan,
    *,
    resume: bool = False,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> list[Block]:
    """Check the store against ``resume``/``overwrite``, create it if needed, and return the blocks to compute.

    Raises
    ------
    StoreError
        The store exists and neither ``resume`` nor ``overwrite`` is set, or it holds
        another sweep (``resume``). Nothing is modified in either case.
    """
    preflight(url, resume=resume, overwrite=overwrite, storage_options=storage_options)
    present = store.exists(url, storage_options)
    if present and resume:
        store.check_compatible(url, plan, storage_options)
        done = store.completed_blocks(url, storage_options)
        todo = [block for block in plan.blocks() if not done[block.index]]
        log.info("resuming %s: %d of %d blocks already stored", url, plan.n_blocks - len(todo), plan.n_blocks)
        return todo
    if present:
        log.info("overwriting %s", url)
    store.create(url, plan, overwrite=present, storage_options=storage_options)
    return list(plan.blocks())


def run_sweep(
    plan: Plan,
    url: str,
    *,
    executor: Executor | None = None,
    resume: bool = False,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    on_start: Callable[[int], None] | None = None,
) -> RunSummary:
    """Compute every block of ``plan`` not yet in the store at ``url``.

    Parameters
    ----------
    plan
        The plan to execute (see :func:`pipeline.planning.plan`).
    url
        Store path or fsspec URL.
    executor
        Runs the blocks: :class:`~pipeline.executors.DaskExecutor` on a cluster, or
        :class:`~pipeline.executors.InProcessExecutor` (the default) in this process.
    resume, overwrite
        What to do when the store exists (neither: refuse).
    progress
        Called with each block's summary as it completes.
    on_start
        Called with the number of blocks about to run.
    """
    started = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    todo = prepare_store(url, plan, resume=resume, overwrite=overwrite, storage_options=storage_options)
    if on_start is not None:
        on_start(len(todo))
    sink = store.BlockWriter(url, dict(storage_options or {}))
    executor = InProcessExecutor() if executor is None else executor
    summaries: list[BlockSummary] = executor.execute(plan, todo, sink, progress=progress)
    seconds = time.perf_counter() - started
    counts = np.sum([s["status_counts"] for s in summaries], axis=0) if summaries else np.zeros(4, int)
    summary = RunSummary(
        store=url,
        runs=plan.n_runs,
        runs_computed=int(sum(s["runs"] for s in summaries)),
        blocks_total=plan.n_blocks,
        blocks_computed=len(summaries),
        blocks_skipped=plan.n_blocks - len(todo),
        seconds=seconds,
        compute_seconds=float(sum(s["compute_seconds"] for s in summaries)),
        write_seconds=float(sum(s["write_seconds"] for s in summaries)),
        status_counts={name: int(n) for name, n in zip(STATUS_NAMES, counts, strict=True)},
    )
    store.update_attributes(
        url,
        {
            "run_started": started_at,
            "run_finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "run_seconds": round(seconds, 3),
            "run_blocks_computed": summary.blocks_computed,
            "run_runs_per_second": round(summary.runs_per_second, 1),
            "run_compute_seconds": round(summary.compute_seconds, 3),
            "run_write_seconds": round(summary.write_seconds, 3),
        },
        storage_options,
    )
    return summary
