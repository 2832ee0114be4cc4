"""``diffsweep run``: validate, plan, compute on a dask scheduler, write the store."""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.cluster_options import cluster_options, echo_warning
from pipeline.cli.options import debug_option, memory_limit_option, set_option, sweep_argument
from pipeline.errors import SchedulerLostError

if TYPE_CHECKING:
    from pipeline.cluster import ClusterSpec

log = logging.getLogger("pipeline")


@click.command(short_help="Compute a sweep into a zarr store.")
@sweep_argument
@click.option(
    "-o", "--output", "store", required=True, metavar="STORE",
    help="Results store: a directory path (created) or an fsspec URL such as s3://bucket/x.zarr.",
)
@click.option("--resume", is_flag=True, help="Complete an interrupted store: compute only the blocks not yet recorded.")
@click.option("--overwrite", is_flag=True, help="Replace an existing diffsweep store at STORE.")
@click.option(
    "--progress/--no-progress", default=None,
    help="Progress bar over blocks on stderr (default: when stderr is a terminal).",
)
@click.option(
    "--in-process", is_flag=True,
    help="Run the blocks one after another in this process, without dask (for debugging).",
)
@memory_limit_option
@set_option
@cluster_options
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (store checks, scheduler, blocks).")
@debug_option
def run(
    sweep_file: str,
    store: str,
    resume: bool,
    overwrite: bool,
    progress: bool | None,
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
    interrupted run is completed with --resume.

    \b
    Example:
      diffsweep run sweeps/ftcs-1d-stability.yaml -o ftcs.zarr
      diffsweep run sweeps/ftcs-1d-stability.yaml -o ftcs.zarr --resume
      diffsweep run sweeps/ftcs-1d-stability.yaml -o c64.zarr --set model.cells=64
      diffsweep run big.yaml -o /scratch/big.zarr --scheduler-file ~/scheduler.json
    """
    from tqdm.auto import tqdm

    from pipeline import runner
    from pipeline.cluster import describe, open_client
    from pipeline.executors import DaskExecutor, Executor, InProcessExecutor
    from pipeline.store_probe import absolute_store_path, check_store_writable
    from pipeline.sweep import load_sweep

    if verbose:
        logging.getLogger("pipeline").setLevel(logging.INFO)
    sweep = load_sweep(sweep_file, memory_limit=memory_limit, overrides=overrides)
    url = absolute_store_path(store)
    with _flag_wording():
        runner.preflight(url, resume=resume, overwrite=overwrite, storage_options=storage_options)

    if progress is None:
        progress = sys.stderr.isatty()

    def execute_with(executor: Executor) -> runner.RunSummary:
        plan = runner.plan_for_store(
            sweep, url, parallelism=executor.parallelism, resume=resume, storage_options=storage_options
        )
        log.info(
            "plan: %d runs in %d blocks of up to %d runs", plan.n_runs, plan.n_blocks,
            plan.runs_per_task,
        )
        bar = tqdm(total=0, unit="block", disable=not progress, file=sys.stderr, desc=sweep.name)

        try:
            with _flag_wording():
                return runner.run_sweep(
                    plan, url, executor=executor, resume=resume, overwrite=overwrite,
                    storage_options=storage_options, progress=lambda _: bar.update(1),
                    on_start=lambda n: bar.reset(total=n),
                )
        finally:
            bar.close()

    if in_process:
        summary = execute_with(InProcessExecutor())
    else:
        try:
            with open_client(cluster, warn=echo_warning) as client:
                click.echo(describe(client), err=True)
                check_store_writable(client, url, storage_options)
                summary = execute_with(DaskExecutor(client))
        except SchedulerLostError as error:
            raise SchedulerLostError(f"{error}; {resume_hint(sweep_file, store, overrides)}") from error
    click.echo(summary.text())


def resume_hint(sweep_file: str, store: str, overrides: tuple[str, ...] = ()) -> str:
    """What to type to compute the blocks an interrupted run did not record."""
    settings = [word for override in overrides for word in ("--set", override)]
    command = shlex.join(["diffsweep", "run", sweep_file, "-o", store, *settings, "--resume"])
    return f"blocks already written are kept; finish with: {command}"


#: how the library's refusals name run_sweep's arguments, and the flags that set them
ARGUMENT_FLAGS = {"resume=True": "--resume", "overwrite=True": "--overwrite"}


@contextmanager
def _flag_wording() -> Iterator[None]:
    """Reword the store refusals of :mod:`pipeline.runner`, which name arguments, with flags."""
    from pipeline.errors import StoreError

    try:
        yield
    except StoreError as error:
        message = str(error)
        for argument, flag in ARGUMENT_FLAGS.items():
            message = message.replace(argument, flag)
        if message == str(error):
            raise
        raise type(error)(message) from None
