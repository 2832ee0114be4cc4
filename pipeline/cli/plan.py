"""``diffsweep plan``: validate a sweep and print what ``run`` would do, and its cost."""

from __future__ import annotations

import json

import click

from pipeline.cli.cluster_options import cluster_kind_option
from pipeline.cli.options import debug_option, memory_limit_option, set_option, sweep_argument


def _duration(core_seconds: float, workers: int | None) -> str:
    import os

    cores = workers or os.cpu_count() or 1
    return f"~{core_seconds:.3g} core-seconds, ~{core_seconds / cores:.2g} s on {cores} workers"


@click.command(short_help="Validate a sweep and print its plan and cost.")
@sweep_argument
@click.option(
    "--workers", type=click.IntRange(min=1), default=None,
    help="Workers the blocks will be spread over (default: this machine's cores), as for run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@cluster_kind_option
@memory_limit_option
@set_option
@debug_option
def plan(
    sweep_file: str,
    workers: int | None,
    as_json: bool,
    cluster: str | None,
    memory_limit: int,
    overrides: tuple[str, ...],
) -> None:
    """Validate SWEEP and print the plan `diffsweep run` executes: runs, blocks
    (one task each), cell updates, memory per task, store size, and the share of
    runs von Neumann theory predicts unstable. Nothing is computed or written.

    With --cluster KIND it also prints the batch script `diffsweep run --cluster KIND`
    would submit for each worker job (from your jobqueue.yaml / dask config).
    """
    from dask.utils import format_bytes

    from pipeline.planning import plan as make_plan
    from pipeline.sweep import WORKER_BASELINE_BYTES, load_sweep

    sweep = load_sweep(
        sweep_file, memory_limit=memory_limit, overrides=overrides, worker_baseline=WORKER_BASELINE_BYTES
    )
    summary = make_plan(sweep, parallelism=workers, memory_limit=memory_limit).summary()
    if cluster is not None:
        from pipeline.cluster import job_script

        summary["job_script"] = job_script(cluster)
    else:
        from pipeline.cluster import ClusterSpec

        local = ClusterSpec().for_sweep(summary["estimated_core_seconds"])
        if local.processes is not None:  # a local cluster (no scheduler-address in the dask config)
            summary["local_workers"] = "processes" if local.processes else "threads"
            summary["local_dashboard"] = bool(local.dashboard)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    axes = "  ".join(f"{name}={n}" for name, n in summary["axes"].items())
    if "zipped" in summary:
        axes += f"  (case: {' and '.join(summary['zipped'])} vary together)"
    chunks = "  ".join(f"{name}={n}" for name, n in summary["chunks"].items())
    rows = [
        ("sweep", f"{sweep.name}  ({summary['sweep_hash'][:12]})"),
        ("axes", axes),
        ("block shape", chunks),
        ("runs", f"{summary['runs']:,} trajectories, {summary['results']:,} results (runs x step counts)"),
        ("blocks / tasks", f"{summary['blocks']:,} tasks of up to {summary['runs_per_task']:,} runs"),
        ("cell updates", f"{summary['cell_updates']:.3g}"),
        ("compute (estimate)", _duration(summary["estimated_core_seconds"], workers)),
        ("memory per task", format_bytes(summary["memory_per_task_bytes"])),
        ("store size", f"{format_bytes(summary['store_bytes'])} uncompressed"),
        ("unstable (theory)", f"{summary['unstable_fraction']:.1%} of runs above the von Neumann bound"),
    ]
    if "local_workers" in summary:
        dashboard = "with a dashboard" if summary["local_dashboard"] else "no dashboard"
        rows.append((
            "local workers",
            f"{summary['local_workers']}, {dashboard} (a local run; --threads/--processes, "
            "--dashboard/--no-dashboard to choose)",
        ))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"{label:<{width}}  {value}")
    if cluster is not None:
        click.echo(f"\njob script ({cluster}, one per worker job):\n")
        click.echo(summary["job_script"])
