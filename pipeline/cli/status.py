"""``diffsweep status``: how complete a store is, and what made it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from pipeline.cli.cluster_options import storage_options_option
from pipeline.cli.main import command_wording
from pipeline.cli.options import debug_option, store_argument


@click.command(short_help="Show how complete a results store is, and its provenance.")
@store_argument
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@storage_options_option
@debug_option
def status(store: str, as_json: bool, storage_options: dict[str, Any]) -> None:
    """Print blocks done / total, the sweep name and hash, and the provenance of STORE."""
    from dask.utils import format_time

    from pipeline import store as stores

    attrs = stores.read_attributes(store, storage_options)
    done, total = stores.completion(store, storage_options)
    history = stores.run_history(store, storage_options)
    problems = quick_check(store, storage_options)
    failed = stores.failures(store, storage_options)
    versions = json.loads(attrs.get("versions", "{}"))
    info = {
        "store": store,
        "sweep": attrs.get("sweep_name"),
        "sweep_hash": attrs.get("sweep_hash"),
        "blocks_done": done,
        "blocks_total": total,
        "complete": done == total,
        "created": attrs.get("created"),
        "runs": history,
        "host": attrs.get("host"),
        "versions": versions,
        "problems": problems,
        "failed_blocks": {",".join(map(str, index)): error for index, error in failed.items()},
        "layout": _layout(attrs),
    }
    if problems:
        info["complete"] = False
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    state = "damaged (see the warning)" if problems else "complete" if done == total else f"incomplete ({total - done} blocks missing; finish with: diffsweep run SWEEP -o STORE --resume)"
    click.echo(f"store     {store}")
    click.echo(f"sweep     {info['sweep']}  (hash {str(info['sweep_hash'])[:12]})")
    click.echo(f"blocks    {done} / {total} ({done / total:.0%}) — {state}")
    click.echo(f"created   {info['created']} on {info['host']}")
    click.echo(f"layout    {info['layout']}")
    for number, entry in enumerate(history, 1):
        click.echo(f"{'runs' if number == 1 else '':<9} {number}. {_history_line(entry, format_time)}")
    click.echo("versions  " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if failed:
        first, error = next(iter(failed.items()))
        blocks = ", ".join(str(index) for index in list(failed)[:8]) + (" ..." if len(failed) > 8 else "")
        click.echo(f"failed    {len(failed)} blocks raised on every attempt: {blocks}; first error (block {first}): {error}")
        click.echo("          their runs hold status -2; diffsweep run SWEEP -o STORE --resume retries them")
    if problems:
        shown = problems[:5] + ([f"... and {len(problems) - 5} more"] if len(problems) > 5 else [])
        click.echo(f"Warning: a quick check found {len(problems)} problems:", err=True)
        for line in shown:
            click.echo(f"  {command_wording(line)}", err=True)
        click.echo(f"  {command_wording(stores.REPAIR_HINT)}", err=True)


def _layout(attrs: dict[str, Any]) -> str:
    """How the store is chunked: one chunk per block, or consolidated (and how far)."""
    from pipeline.consolidate import read_record

    record = read_record(attrs)
    if record is None:
        return "one chunk per block (not consolidated)"
    if record.state != "done":
        return f"consolidation interrupted ({record.state}); diffsweep run SWEEP -o STORE --resume finishes it"
    return f"consolidated for analysis: {len(record.chunks)} arrays in large chunks"


def quick_check(store: str, storage_options: dict[str, object]) -> list[str]:
    """What a quick verify (metadata, attributes, chunks present; nothing decoded) finds."""
    from pipeline.verify import verify

    return [str(problem) for problem in verify(store, storage_options, quick=True).problems]


def _history_line(entry: dict[str, Any], format_time: Callable[[float], str]) -> str:
    """One run of the store's history: when, where, how it ended, what it computed."""
    blocks = entry["blocks_computed"]
    before = entry.get("blocks_stored_before", 0)
    workers = entry.get("workers", 1)
    return (
        f"{entry['finished']} on {entry['host']}, {entry.get('outcome', 'finished')}: "
        f"{blocks:,} block{'s' if blocks != 1 else ''}"
        + (f" ({before:,} stored before)" if before else "")
        + f", {entry['runs_computed']:,} runs in {format_time(entry['seconds'])}"
        + f" on {workers:,} worker{'s' if workers != 1 else ''}"
    )
