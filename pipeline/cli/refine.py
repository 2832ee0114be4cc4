"""``diffsweep refine``: locate every edge (or cheapest setting) of a finished store by bisection."""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.cluster_options import cluster_options, echo_warning
from pipeline.cli.options import debug_option, store_argument

if TYPE_CHECKING:
    from pipeline.cluster import ClusterSpec

log = logging.getLogger("pipeline")


@click.command(short_help="Bisect the stability edges (or the cheapest step size) of a finished store.")
@store_argument
@click.option(
    "--target", type=click.Choice(["edge", "cheapest"]), default="edge", show_default=True,
    help="edge: the step size where runs change class (see --edge); cheapest: per coefficient, "
    "the step size reaching equilibrium in the fewest steps.",
)
@click.option(
    "--edge", type=click.Choice(["divergence", "oscillation"]), default="divergence", show_default=True,
    help="divergence: last non-divergent to first divergent (von Neumann); oscillation: last "
    "monotone to first oscillating or divergent (maximum principle).",
)
@click.option(
    "--rtol", default="1e-3", show_default=True, metavar="RTOL",
    help="Relative width of the final brackets, 0 < RTOL < 1.",
)
@click.option(
    "--axis", default=None, metavar="AXIS",
    help="Axis to search along; only the store's step axis (step_size or cfl) is allowed. Default: that axis.",
)
@click.option("--dry-run", is_flag=True, help="Print the expected cost (rounds, runs, core-seconds) and stop.")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate (--dry-run) or the summary as JSON.")
@click.option(
    "--progress/--no-progress", default=None,
    help="One line per round on stderr (default: when stderr is a terminal).",
)
@click.option("--in-process", is_flag=True, help="Run the probes in this process, without dask (for debugging).")
@cluster_options
@click.option("-v", "--verbose", is_flag=True, help="Log what happens.")
@debug_option
def refine(
    store: str,
    target: str,
    edge: str,
    rtol: str,
    axis: str | None,
    dry_run: bool,
    as_json: bool,
    progress: bool | None,
    in_process: bool,
    verbose: bool,
    cluster: ClusterSpec,
    storage_options: dict[str, Any],
) -> None:
    """Locate, for every column of the finished store STORE (each swept model x coefficient x
    step count), the step size at which runs start to diverge (or oscillate), to a relative
    width RTOL.

    The stored sweep gives each column a first bracket; columns stable (or unstable) over
    the whole swept range are extended by doubling (halving) up to 10^4 times beyond it,
    else reported as censored. Each round runs one probe per open column, all of a round
    as one batch of dask tasks; the state is stored after every round in the group
    "refine" of STORE, so an interrupted refine is completed by running it again, and a
    finished one does nothing.

    \b
    Example:
      diffsweep refine ftcs-1d.zarr --dry-run
      diffsweep refine ftcs-1d.zarr                   # divergence edge, rtol 1e-3
      diffsweep refine ftcs-1d.zarr --target cheapest
      python -c "import xarray as xr; print(xr.open_zarr('ftcs-1d.zarr', group='refine'))"
    """
    from pipeline import refine as refinement
    from pipeline.errors import RefineError

    if verbose:
        logging.getLogger("pipeline").setLevel(logging.INFO)
    try:
        tolerance = float(rtol)
    except ValueError:
        tolerance = float("nan")
    if not 0 < tolerance < 1:  # NaN included
        raise RefineError(f"--rtol must be a number with 0 < RTOL < 1, not {rtol!r}")
    request = refinement.Request(target=target, edge=edge, rtol=tolerance, axis=axis)
    prepared = refinement.prepare(store, request, storage_options or None)
    cost = refinement.estimate(prepared)
    if dry_run:
        click.echo(json.dumps(cost.summary(), indent=2) if as_json else cost.text())
        return
    if not as_json:
        click.echo(cost.text(), err=True)
    if progress is None:
        progress = sys.stderr.isatty()

    def report(round_: int, still_open: int, runs: int) -> None:
        if progress:
            click.echo(f"round {round_}: {still_open} columns open, {runs:,} runs spent", err=True)

    if in_process or cost.open_columns == 0:
        summary = refinement.refine(prepared, progress=report)
    else:
        from pipeline.cluster import describe, open_client
        from pipeline.executors import DaskExecutor

        # the probes' results come back to this process, which alone writes the store:
        # the workers need not reach it
        with open_client(cluster, warn=echo_warning) as client:
            click.echo(describe(client), err=True)
            summary = refinement.refine(prepared, executor=DaskExecutor(client), progress=report)
    if as_json:
        click.echo(json.dumps(
            {"store": summary.store, "target": summary.name, "columns": summary.columns, "outcomes": summary.outcomes,
             "rounds": summary.rounds, "runs": summary.runs, "runs_total": summary.runs_total,
             "seconds": round(summary.seconds, 3), "nothing_to_do": summary.nothing_to_do},
            indent=2,
        ))
    else:
        click.echo(summary.text())
