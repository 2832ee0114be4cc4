"""``diffsweep run``: validate, plan, compute on a dask scheduler, write the store."""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.cluster_options import cluster_options, echo_warning
from pipeline.cli.main import DEBUG_KEY, command_wording
from pipeline.cli.options import debug_option, memory_limit_option, set_option, sweep_argument
from pipeline.cli.progress import DEFAULT_INTERVAL, RunProgress, choose_mode
from pipeline.errors import ClusterLostError

if TYPE_CHECKING:
    from pipeline.cli.interruptions import RunCommand  # imports distributed: only when run runs
    from pipeline.cluster import ClusterSpec

log = logging.getLogger("pipeline")


class _KeepsItsArguments(click.Command):
    """A command that remembers its command line (to suggest it again with --resume)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGUMENTS_KEY] = list(args)
        return super().parse_args(ctx, args)


ARGUMENTS_KEY = "diffsweep.run.arguments"


@click.command(cls=_KeepsItsArguments, short_help="Compute a sweep into a zarr store.")
@sweep_argument
@click.option(
    "-o", "--output", "store", required=True, metavar="STORE",
    help="Results store: a directory path (created) or an fsspec URL such as s3://bucket/x.zarr.",
)
@click.option("--resume", is_flag=True, help="Complete an interrupted store: compute only the blocks not yet recorded.")
@click.option("--overwrite", is_flag=True, help="Replace an existing diffsweep store at STORE.")
@click.option(
    "--repair", is_flag=True,
    help="With --resume: decode every stored chunk first and recompute the damaged blocks "
    "(a plain --resume checks metadata and that every chunk is present).",
)
@click.option(
    "--consolidate/--no-consolidate", default=None,
    help="Once every block is stored, rewrite the store into chunks of up to 64 MiB for analysis "
    "(default: when it has more than 64 blocks). An interrupted consolidation is finished by --resume.",
)
@click.option(
    "--progress/--no-progress", default=None,
    help="Progress on stderr: a bar on a terminal, else a log line every --progress-interval "
    "seconds (default); --progress forces the bar, --no-progress shows neither.",
)
@click.option(
    "--progress-interval", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_INTERVAL,
    show_default=True, metavar="SECONDS",
    help="Seconds between progress lines when stderr is not a terminal (batch logs, nohup, pipes).",
)
@click.option(
    "--in-process", is_flag=True,
    help="Run the blocks one after another in this process, without dask (for debugging).",
)
@memory_limit_option
@set_option
@cluster_options
@click.option(
    "-v", "--verbose", is_flag=True,
    help="Log what happens (store checks, scheduler, each block) and dask's own messages.",
)
@debug_option
@click.pass_context
def run(
    ctx: click.Context,
    sweep_file: str,
    store: str,
    resume: bool,
    overwrite: bool,
    repair: bool,
    consolidate: bool | None,
    progress: bool | None,
    progress_interval: float,
    in_process: bool,
    memory_limit: int,
    overrides: tuple[str, ...],
    verbose: bool,
    cluster: ClusterSpec,
    storage_options: dict[str, Any],
) -> None:
    """Compute the sweep defined in SWEEP and write every result into STORE.

    Without --scheduler/--scheduler-file/--cluster it uses the dask config's
    scheduler-address if set, else a LocalCluster on this machine (127.0.0.1, one
    single-threaded worker per core). Each task computes one block of runs and
    writes it straight into the store; the store records each finished block, so an
    interrupted run (Ctrl-C: exit status 130; a full disk: 1) is completed with --resume.

    \b
    Example:
      diffsweep run sweeps/ftcs-1d-stability.yaml -o ftcs.zarr
      diffsweep run sweeps/ftcs-1d-stability.yaml -o ftcs.zarr --resume
      diffsweep run sweeps/ftcs-1d-stability.yaml -o ftcs.zarr --resume --repair
      diffsweep run sweeps/ftcs-1d-stability.yaml -o c64.zarr --set model.cells=64
      diffsweep run big.yaml -o /scratch/big.zarr --scheduler-file ~/scheduler.json
    """
    from pipeline import runner
    from pipeline.cli import interruptions
    from pipeline.cluster import describe, open_client
    from pipeline.executors import DaskExecutor, Executor, InProcessExecutor
    from pipeline.planning import plan as make_plan
    from pipeline.store_probe import absolute_store_path, check_store_writable
    from pipeline.sweep import WORKER_BASELINE_BYTES, load_sweep

    if verbose:
        logging.getLogger("pipeline").setLevel(logging.INFO)
    quiet = not (verbose or ctx.meta.get(DEBUG_KEY))
    if repair and not resume:
        raise click.UsageError("--repair goes with --resume (it repairs a store being completed)")
    sweep = load_sweep(
        sweep_file, memory_limit=memory_limit, overrides=overrides, worker_baseline=WORKER_BASELINE_BYTES
    )
    url = absolute_store_path(store)
    with _flag_wording():
        runner.preflight(url, resume=resume, overwrite=overwrite, storage_options=storage_options, sweep=sweep)

    command = interruptions.RunCommand.of(ctx.command, ctx.meta.get(ARGUMENTS_KEY, ()))
    reporter = RunProgress(
        sweep.name, mode=choose_mode(progress, sys.stderr.isatty()), interval=progress_interval,
        each_block=verbose,
    )
    stop = _StopReport(command, url, storage_options, reporter)

    def execute_with(executor: Executor, release: Callable[[], None] | None = None) -> runner.RunSummary:
        plan = runner.plan_for_store(
            sweep, url, parallelism=executor.parallelism, resume=resume, storage_options=storage_options,
            memory_limit=memory_limit,
        )
        log.info(
            "plan: %d runs in %d blocks of up to %d runs", plan.n_runs, plan.n_blocks,
            plan.runs_per_task,
        )

        def on_start(blocks_to_compute: int) -> None:
            stop.blocks_total = plan.n_blocks
            reporter.start(blocks_to_compute, plan.n_blocks)

        def computed() -> None:
            reporter.close()  # before the cluster closes: the bar's time is the computation's
            if release is not None:
                release()

        try:
            with _flag_wording():
                return runner.run_sweep(
                    plan, url, executor=executor, resume=resume, overwrite=overwrite, repair=repair,
                    consolidate=consolidate, storage_options=storage_options, progress=reporter.block_done,
                    on_start=on_start, on_computed=computed,
                )
        finally:
            reporter.close()

    try:
        with interruptions.stopped_quietly(quiet=quiet, on_second_interrupt=stop.interrupted_line), reporter:
            if in_process or (resume and not repair and runner.nothing_to_compute(sweep, url, storage_options)):
                summary = execute_with(InProcessExecutor())
            else:
                try:
                    with ExitStack() as cluster_open:
                        chosen = cluster.for_sweep(make_plan(sweep).core_seconds)  # threads if small
                        # only local worker processes are started here; connecting to a
                        # running scheduler (or starting threads) stays interruptible by Ctrl-C
                        spawning = chosen.kind == "local" and chosen.processes is not False
                        with interruptions.workers_ignore_ctrl_c() if spawning else nullcontext():
                            client = cluster_open.enter_context(open_client(chosen, warn=echo_warning))
                        try:
                            line = describe(client)
                            if chosen.kind == "local" and chosen.dashboard is False and cluster.dashboard is None:
                                line += " (no dashboard for a sweep this short; --dashboard serves one)"
                            click.echo(line, err=True)
                            if quiet:
                                from pipeline.cli.worker_logs import quiet_local_workers

                                quiet_local_workers(client)
                            # bounded like every wait on the cluster: by the worker timeout
                            check_store_writable(client, url, storage_options, timeout=cluster.worker_wait)

                            def release_cluster() -> None:
                                """The consolidation needs no workers: free them (and a batch
                                system's jobs) before the store is rewritten."""
                                if quiet:
                                    interruptions.silence_cluster_logs()
                                cluster_open.close()

                            summary = execute_with(DaskExecutor(client), release_cluster)
                        finally:
                            if quiet:  # what dask says while its cluster closes is not for the user
                                interruptions.silence_cluster_logs()
                except ClusterLostError as error:
                    hint = stop.lost_hint()
                    raise type(error)(f"{error}; {hint}", arguments=error.arguments) from error
    except KeyboardInterrupt:
        click.echo(stop.interrupted_line(), err=True)
        ctx.exit(130)
    except OSError as error:
        if ctx.meta.get(DEBUG_KEY) or not interruptions.is_disk_full(error):
            raise
        click.echo(f"Error: {stop.disk_full_line(error)}", err=True)
        ctx.exit(1)
    click.echo(summary.text())
    failed = summary.failure_text()
    if failed:  # the rest of the sweep is stored; exit 1 naming what is not
        click.echo(f"Error: {failed.replace('resume=True', command.resuming())}", err=True)
        ctx.exit(1)


class _StopReport:
    """The one line that says how far a stopped run got and how to finish it."""

    def __init__(
        self, command: RunCommand, url: str, storage_options: dict[str, Any] | None, reporter: RunProgress
    ) -> None:
        self.command = command
        self.url = url
        self.storage_options = storage_options
        self.reporter = reporter
        self.blocks_total: int | None = None  # known once the store is ready and blocks start

    def _blocks_stored(self) -> int:
        """Blocks the store records now (those that finished while the run stopped count too)."""
        from pipeline import store

        try:
            return store.completion(self.url, self.storage_options)[0]
        except Exception:  # unreadable right now: what this run saw finish
            return self.reporter.blocks_before + self.reporter.blocks_done

    def interrupted_line(self) -> str:
        """``interrupted after B of N blocks; finish with: diffsweep run ... --resume``."""
        if self.blocks_total is None:
            return f"interrupted before any block was computed; start again with: {self.command.again()}"
        return (
            f"interrupted after {self._blocks_stored():,} of {self.blocks_total:,} blocks; "
            f"finish with: {self.command.resuming()}"
        )

    def lost_hint(self) -> str:
        """After a lost scheduler: what is kept and how to finish."""
        return f"blocks already written are kept; finish with: {self.command.resuming()}"

    def disk_full_line(self, error: OSError) -> str:
        """The cause (no space left where the store is written) and how to go on after freeing space."""
        cause = f"{error.strerror or error} (errno {errno.errorcode.get(error.errno or 0, error.errno)})"
        if self.blocks_total is None:
            return f"{cause} while creating {self.url}; free space, then start again with: {self.command.again()}"
        return (
            f"{cause} while writing {self.url} after {self._blocks_stored():,} of {self.blocks_total:,} blocks; "
            f"free space, then finish with: {self.command.resuming()}"
        )


#: how the library's refusals name run_sweep's arguments, and the flags that set them
ARGUMENT_FLAGS = {"resume=True": "--resume", "overwrite=True": "--overwrite"}


@contextmanager
def _flag_wording() -> Iterator[None]:
    """Reword the store refusals of :mod:`pipeline.runner`, which name arguments, with flags."""
    from pipeline.errors import StoreError

    try:
        yield
    except StoreError as error:
        message = command_wording(str(error))  # the hints first: they name arguments too
        for argument, flag in ARGUMENT_FLAGS.items():
            message = message.replace(argument, flag)
        if message == str(error):
            raise
        raise type(error)(message) from None
