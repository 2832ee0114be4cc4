"""Run a plan into a store: refuse bad stores, write the template, run the blocks, record.

This is the library behind ``diffsweep run`` (part of the store layer: it owns the
resume bookkeeping). Every check that can refuse the run happens before anything is
written, so a refused run never touches an existing store. Errors speak of this
module's arguments (``resume``, ``overwrite``); the command line words them as flags.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipeline import __version__, planning, store, verify
from pipeline import consolidate as consolidation
from pipeline.consolidate import ConsolidationSummary
from pipeline.compute import BlockFailure, BlockSummary, Progress
from pipeline.diagnostics import FAILED as FAILED_STATUS
from pipeline.diagnostics import STATUS_NAMES
from pipeline.errors import StoreDamagedError, StoreError, StoreExistsError
from pipeline.executors import Executor, InProcessExecutor
from pipeline.planning import Block, Plan
from pipeline.store_lock import busy_error, holding_lock, lock_owner
from pipeline.sweep import Sweep

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did and what the store now holds, for the closing paragraph and the history.

    *Runs* are trajectories (one integration per point of the grid without ``steps``);
    *results* are runs measured at each step count (``runs x step counts``), and each
    result has a status.  :attr:`status_counts` covers this run's results,
    :attr:`store_counts` every result in the store (after ``--resume``, the blocks
    stored earlier too).
    """

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
    store_counts: dict[str, int] = field(default_factory=dict)
    step_counts: int = 1
    workers: int = 1
    #: blocks that raised on every attempt (their runs hold status -2 in the store)
    failures: list[BlockFailure] = field(default_factory=list)
    #: what the consolidation after the last block did (None: the store was not consolidated now)
    consolidation: ConsolidationSummary | None = None

    @property
    def runs_per_second(self) -> float:
        return self.runs_computed / self.seconds if self.seconds > 0 else float("nan")

    @property
    def complete(self) -> bool:
        """Every block of the store is computed."""
        return self.blocks_computed + self.blocks_skipped == self.blocks_total

    def history_entry(self, started: str, finished: str, outcome: str) -> dict[str, Any]:
        """This run as one entry of the store's ``run_history`` attribute.

        ``outcome`` is ``finished``, ``interrupted`` or ``failed: <exception type>``.
        """
        return {
            "started": started,
            "finished": finished,
            "outcome": outcome,
            "seconds": round(self.seconds, 3),
            "blocks_computed": self.blocks_computed,
            "blocks_stored_before": self.blocks_skipped,
            "blocks_total": self.blocks_total,
            "runs_computed": self.runs_computed,
            "runs_per_second": round(self.runs_per_second, 1),
            "compute_seconds": round(self.compute_seconds, 3),
            "write_seconds": round(self.write_seconds, 3),
            "workers": self.workers,
            "status_counts": self.status_counts,
            "host": socket.gethostname(),
            "diffsweep_version": __version__,
            **(
                {
                    "consolidation_seconds": round(self.consolidation.seconds, 3),
                    "chunks_before_consolidation": self.consolidation.chunks_before,
                    "chunks_after_consolidation": self.consolidation.chunks_after,
                }
                if self.consolidation is not None else {}
            ),
        }

    def failure_text(self) -> str | None:
        """One line naming the failed blocks and the first error (None when none failed)."""
        if not self.failures:
            return None
        shown = ", ".join(str(tuple(f["index"])) for f in self.failures[:8])
        more = f" and {len(self.failures) - 8} more" if len(self.failures) > 8 else ""
        first = self.failures[0]
        return (
            f"{len(self.failures)} of {self.blocks_total} blocks failed after {first['attempts']} attempts: "
            f"{shown}{more}; first error (block {tuple(first['index'])}): {first['error']}. "
            f"Their runs hold status {FAILED_STATUS} (failed) in the store; the other blocks are stored, "
            "and resume=True retries the failed ones"
        )

    def text(self) -> str:
        """The closing paragraph: what was computed, the results by status, the store's state.

        Counts carry thousands separators, durations use :func:`dask.utils.format_time`,
        and no line is longer than :data:`SUMMARY_WIDTH` characters (except a store URL
        that is itself longer).
        """
        from dask.utils import format_time

        lines = []
        if self.blocks_computed:
            before = f" ({self.blocks_skipped:,} were already stored)" if self.blocks_skipped else ""
            workers = f"{self.workers:,} worker{'s' if self.workers != 1 else ''}"
            lines += [
                f"Computed {self.blocks_computed:,} of {self.blocks_total:,} blocks in "
                f"{format_time(self.seconds)}{before}",
                f"  {self.runs_computed:,} runs at {_rate(self.runs_per_second)} runs/s on {workers}",
                f"  time summed over workers: kernels {format_time(self.compute_seconds)}, "
                f"writes {format_time(self.write_seconds)}",
            ]
        else:
            written = "" if self.consolidation is not None else " (nothing written)"
            lines.append(f"Nothing to compute: all {self.blocks_total:,} blocks were already stored{written}.")
        if self.blocks_computed and not self.blocks_skipped and self.complete:
            columns = {"this run (the whole store)": self.status_counts}
        else:
            columns = {"this run": self.status_counts} if self.blocks_computed else {}
            columns["whole store"] = self.store_counts
        lines += _results_table(columns, self.step_counts)
        state = "complete" if self.complete else "incomplete"
        done = self.blocks_computed + self.blocks_skipped
        lines += [
            f"Store: {self.store}",
            f"  {state}: {done:,} of {self.blocks_total:,} blocks, {self.runs:,} runs x "
            f"{self.step_counts:,} step counts = {self.runs * self.step_counts:,} results",
        ]
        if self.consolidation is not None:
            lines.append(self.consolidation.text())
        return "\n".join(lines)


#: the longest line :meth:`RunSummary.text` writes (a long store URL aside)
SUMMARY_WIDTH = 100


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value < 10 else f"{value:,.0f}"


def _results_table(columns: Mapping[str, Mapping[str, int]], step_counts: int) -> list[str]:
    """Results by status, one row per status and one column per count (``this run``, ...)."""
    names = [*STATUS_NAMES, *{n for counts in columns.values() for n in counts if n not in STATUS_NAMES}]
    rows = [[name, *(f"{counts.get(name, 0):,}" for counts in columns.values())] for name in names]
    rows.append(["total", *(f"{sum(counts.values()):,}" for counts in columns.values())])
    title = f"Results by status (a result is one run at one of its {step_counts:,} step counts)"
    if len(columns) == 1:
        title += f", {next(iter(columns))}:"
        header: list[str] = []
    else:
        title += ":"
        header = ["", *columns]
    table = [header] if header else []
    table += rows
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [title]
    for row in table:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))]
        lines.append(("  " + "   ".join(cells)).rstrip())
    return lines


def preflight(
    url: str,
    *,
    resume: bool = False,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    sweep: Sweep | None = None,
) -> None:
    """Refuse, without writing anything, what :func:`prepare_store` would refuse.

    Cheap enough to call before a cluster starts. With ``sweep``, a store to be
    resumed must hold that definition; the refusal names each key that differs.

    Raises
    ------
    StoreError
        ``resume`` and ``overwrite`` are both set, something that is not a diffsweep
        store is at ``url`` (``resume`` or ``overwrite``), or the store holds another
        definition than ``sweep`` (``resume``).
    StoreExistsError
        Something is at ``url`` and neither ``resume`` nor ``overwrite`` is set.
    StoreBusyError
        Another run is writing the store.
    """
    if resume and overwrite:
        raise StoreError("resume=True and overwrite=True contradict each other; choose one")
    found = store.inspect(url, storage_options)
    owner = lock_owner(url, storage_options)
    if owner is not None:
        raise busy_error(url, owner)
    if found.kind == "absent":
        return
    if not (resume or overwrite):
        raise StoreExistsError(f"{url!r} already exists; pass resume=True to complete it or overwrite=True to replace it")
    if found.kind == "foreign":  # only ever resume or replace a diffsweep store
        raise StoreError(f"{url!r}: {found.reason}; refusing to resume or overwrite it")
    if resume and sweep is not None and found.kind == "ready":
        store.check_same_definition(url, sweep, storage_options)


def nothing_to_compute(sweep: Sweep, url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True when ``url`` is a complete, sound store of ``sweep``: resuming it computes nothing.

    Sound as far as the quick check of :func:`pipeline.verify.verify` sees (metadata,
    attributes, every chunk present); a damaged store has blocks to recompute.
    """
    found = store.inspect(url, storage_options)
    if found.kind != "ready" or found.attrs.get("sweep_hash") != sweep.sha256:
        return False
    try:
        done, total = store.completion(url, storage_options)
    except StoreDamagedError:
        return False
    if done != total:
        return False
    # an interrupted consolidation is finished without computing anything
    harmless = ("consolidate", "reconsolidate")
    return all(p.repair in harmless for p in verify.verify(url, storage_options, quick=True).problems)


def plan_for_store(
    sweep: Sweep,
    url: str,
    *,
    parallelism: int | None = None,
    resume: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    memory_limit: int | None = None,
) -> Plan:
    """The plan to run: a resumed store keeps the blocks it was created with.

    ``memory_limit`` (one worker's memory) caps automatic blocks, as in
    :func:`pipeline.planning.plan`.
    """
    if resume:
        found = store.inspect(url, storage_options)
        if found.kind == "ready" and found.attrs.get("sweep_hash") == sweep.sha256 and "diffsweep_chunks" in found.attrs:
            chunks = tuple(json.loads(found.attrs["diffsweep_chunks"]))
            return Plan(sweep=sweep, chunks=chunks, parallelism=parallelism or 1)
    return planning.plan(sweep, parallelism=parallelism, memory_limit=memory_limit)


def prepare_store(
    url: str,
    plan: Plan,
    *,
    resume: bool = False,
    overwrite: bool = False,
    repair: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> list[Block]:
    """Check the store against ``resume``/``overwrite``, create it if needed, and return the blocks to compute.

    The caller holds the store's lock (:func:`run_sweep` does). A store whose creation
    was interrupted holds no results: ``resume`` (same sweep) or ``overwrite`` create
    it again. A store that is resumed is first checked and repaired
    (:func:`pipeline.verify.check_before_resume`): quickly — metadata, attributes and
    the presence of every recorded block's chunks — or, with ``repair``, by decoding
    every chunk; the blocks found damaged are recomputed with the missing ones.

    Raises
    ------
    StoreError
        The store exists and neither ``resume`` nor ``overwrite`` is set, or it holds
        another sweep (``resume``). Nothing is modified in either case.
    """
    preflight(url, resume=resume, overwrite=overwrite, storage_options=storage_options)
    found = store.inspect(url, storage_options)
    if found.kind == "ready" and resume:
        store.check_compatible(url, plan, storage_options)
        for line in verify.check_before_resume(url, plan, storage_options, decode=repair):
            log.warning("%s: %s", url, line)
        done = store.completed_blocks(url, storage_options)
        todo = [block for block in plan.blocks() if not done[block.index]]
        log.info("resuming %s: %d of %d blocks already stored", url, plan.n_blocks - len(todo), plan.n_blocks)
        return todo
    if found.kind == "unfinished":
        if resume and found.attrs.get("sweep_hash") != plan.sweep.sha256:
            raise StoreError(
                f"{url!r} is an unfinished store of another sweep definition "
                f"({found.attrs.get('sweep_name')!r}, hash {str(found.attrs.get('sweep_hash'))[:12]}); "
                "replace it with overwrite=True"
            )
        log.warning("%s: its creation was interrupted before any block was computed; creating it again", url)
    elif found.kind == "ready":
        log.info("overwriting %s", url)
    store.create(url, plan, overwrite=found.kind != "absent", storage_options=storage_options)
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
    repair: bool = False,
    consolidate: bool | None = None,
    on_computed: Callable[[], None] | None = None,
) -> RunSummary:
    """Compute every block of ``plan`` not yet in the store at ``url``, holding its lock.

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
    repair
        With ``resume``: decode every chunk of the stored blocks first and recompute
        the damaged ones (without it, only a quick check: see :func:`prepare_store`).
    consolidate
        Once every block is stored (none failed), rewrite the store into large chunks
        for analysis (:mod:`pipeline.consolidate`); ``None``: when it has more than
        :data:`~pipeline.consolidate.AUTO_ABOVE_BLOCKS` blocks. An interrupted
        consolidation is always finished.
    on_computed
        Called once the blocks are computed and stored, before the consolidation: it
        runs in this process and needs no workers, so a caller can release its cluster
        here (the workers' memory is then not held while the store is rewritten).

    Raises
    ------
    StoreBusyError
        Another run is writing the store (see :mod:`pipeline.store_lock`).
    """
    with holding_lock(url, storage_options):
        started = time.perf_counter()
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        todo = prepare_store(
            url, plan, resume=resume, overwrite=overwrite, repair=repair, storage_options=storage_options
        )
        if on_start is not None:
            on_start(len(todo))
        executor = InProcessExecutor() if executor is None else executor
        workers = executor.parallelism
        finished: list[BlockSummary] = []
        failed: list[BlockFailure] = []

        def block_done(summary: BlockSummary) -> None:
            finished.append(summary)
            if progress is not None:
                progress(summary)

        def summarise(whole_store: bool) -> RunSummary:
            return _summary(plan, url, finished, len(todo), time.perf_counter() - started, workers,
                            store_counts=store.status_counts(url, storage_options) if whole_store else None,
                            failures=failed)

        if not todo:  # a resumed complete store: nothing is computed (it may be consolidated)
            summary = summarise(whole_store=True)
            summary.consolidation = _consolidate(url, plan, consolidate, storage_options)
            if summary.consolidation is not None:
                store.append_run_history(url, summary.history_entry(started_at, _now(), "consolidated"), storage_options)
            return summary
        try:
            executor.execute(
                plan, todo, store.BlockWriter(url, dict(storage_options or {})), progress=block_done, failed=failed
            )
        except BaseException as error:
            # the blocks that finished are in the store; say so in its history, if it can still be written
            outcome = "interrupted" if isinstance(error, KeyboardInterrupt) else f"failed: {type(error).__name__}"
            try:
                entry = summarise(whole_store=False).history_entry(started_at, _now(), outcome)
                store.append_run_history(url, entry, storage_options)
            except Exception as unrecorded:  # a full disk, a lost connection: the error itself matters
                log.debug("run history not updated: %s: %s", type(unrecorded).__name__, unrecorded)
            raise
        if failed or store.failures(url, storage_options):  # flag them; forget those retried successfully
            store.record_failures(url, plan, failed, storage_options)
        if on_computed is not None:
            on_computed()
        summary = summarise(whole_store=len(finished) < plan.n_blocks)
        if not failed:
            summary.consolidation = _consolidate(url, plan, consolidate, storage_options)
        outcome = f"finished, {len(failed)} block{'s' if len(failed) != 1 else ''} failed" if failed else "finished"
        store.append_run_history(url, summary.history_entry(started_at, _now(), outcome), storage_options)
        return summary


def _consolidate(
    url: str, plan: Plan, setting: bool | None, storage_options: Mapping[str, Any] | None
) -> ConsolidationSummary | None:
    """Consolidate a complete store when ``setting`` (or the size, see
    :func:`pipeline.consolidate.wanted`) asks for it; finish an interrupted consolidation."""
    if consolidation.read_record(store.read_attributes(url, storage_options)) is not None:
        return consolidation.finish(url, plan, storage_options)
    done, total = store.completion(url, storage_options)
    if done != total or not consolidation.wanted(plan, setting):
        return None
    log.info("consolidating %s into chunks of up to %d bytes", url, consolidation.CHUNK_BYTES)
    return consolidation.consolidate(url, plan, storage_options)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _summary(
    plan: Plan,
    url: str,
    finished: list[BlockSummary],
    blocks_to_compute: int,
    seconds: float,
    workers: int,
    store_counts: dict[str, int] | None,
    failures: list[BlockFailure] | None = None,
) -> RunSummary:
    """The summary of a run that computed the blocks ``finished`` out of ``blocks_to_compute``."""
    counts = np.sum([s["status_counts"] for s in finished], axis=0) if finished else np.zeros(len(STATUS_NAMES), int)
    this_run = {name: int(n) for name, n in zip(STATUS_NAMES, counts, strict=True)}
    return RunSummary(
        store=url,
        runs=plan.n_runs,
        runs_computed=int(sum(s["runs"] for s in finished)),
        blocks_total=plan.n_blocks,
        blocks_computed=len(finished),
        blocks_skipped=plan.n_blocks - blocks_to_compute,
        seconds=seconds,
        compute_seconds=float(sum(s["compute_seconds"] for s in finished)),
        write_seconds=float(sum(s["write_seconds"] for s in finished)),
        status_counts=this_run,
        # without blocks stored before (or missing), the whole store is this run's results
        store_counts=dict(this_run) if store_counts is None else store_counts,
        step_counts=len(plan.sweep.checkpoints),
        workers=workers,
        failures=list(failures or []),
    )
