"""``diffsweep status``: how complete a store is, and what made it."""

from __future__ import annotations

import json
from typing import Any

import click

from pipeline.cli.cluster_options import storage_options_option
from pipeline.cli.options import debug_option, store_argument


@click.command(short_help="Show how complete a results store is, and its provenance.")
@store_argument
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@storage_options_option
@debug_option
def status(store: str, as_json: bool, storage_options: dict[str, Any]) -> None:
    """Print blocks done / total, the sweep name and hash, and the provenance of STORE."""
    from pipeline import store as stores

    attrs = stores.read_attributes(store, storage_options)
    done, total = stores.completion(store, storage_options)
    versions = json.loads(attrs.get("versions", "{}"))
    info = {
        "store": store,
        "sweep": attrs.get("sweep_name"),
        "sweep_hash": attrs.get("sweep_hash"),
        "blocks_done": done,
        "blocks_total": total,
        "complete": done == total,
        "created": attrs.get("created"),
        "run_finished": attrs.get("run_finished"),
        "run_seconds": attrs.get("run_seconds"),
        "host": attrs.get("host"),
        "versions": versions,
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    state = "complete" if done == total else f"incomplete ({total - done} blocks missing; finish with: diffsweep run SWEEP -o STORE --resume)"
    click.echo(f"store     {store}")
    click.echo(f"sweep     {info['sweep']}  (hash {str(info['sweep_hash'])[:12]})")
    click.echo(f"blocks    {done} / {total} ({done / total:.0%}) — {state}")
    click.echo(f"created   {info['created']} on {info['host']}")
    if info["run_finished"]:
        click.echo(f"last run  finished {info['run_finished']} after {info['run_seconds']} s")
    click.echo("versions  " + ", ".join(f"{k} {v}" for k, v in versions.items()))
