"""``diffsweep recommend``: the best settings per coefficient, as a table or JSON."""

from __future__ import annotations

import json
from typing import Any

import click

from pipeline.cli.cluster_options import storage_options_option
from pipeline.cli.options import debug_option, store_argument
from pipeline.cli.verify import explains_damage


@click.command(short_help="Print the largest stable step size and cheapest setting per coefficient.")
@store_argument
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per coefficient.")
@storage_options_option
@debug_option
@explains_damage
def recommend(store: str, as_json: bool, storage_options: dict[str, Any]) -> None:
    """Per coefficient (and per value of any swept model key) in STORE: the largest step
    size not divergent (and not oscillating) at the largest step count against the exact
    bound 2/λ_max of the discrete operator, the fewest steps that reach equilibrium
    against the slowest-mode prediction, the cheapest stable setting that gets there,
    and the stable share of the results. Edges and cheapest settings come from
    `diffsweep refine` when it has run on STORE; censored values are marked.

    \b
    Example:
      diffsweep recommend schemes.zarr
      diffsweep recommend schemes.zarr --json | jq '.[] | select(.scheme == "ftcs")'
      diffsweep recommend s3://bucket/schemes.zarr --storage-option anon=true
    """
    from pipeline import edges, maps, report
    from pipeline.cli.map import completeness

    ds = maps.open_results(store, storage_options)
    refinement = edges.open_refinement(store, storage_options, sweep_hash=ds.attrs.get("sweep_hash"))
    records = maps.recommend(ds, refinement)
    warning, state = completeness(store, ds, storage_options)
    if warning:
        click.echo(f"Warning: {warning}.", err=True)
    if as_json:
        click.echo(json.dumps(records, indent=2, allow_nan=False))
        return
    click.echo(f"{ds.attrs.get('sweep_name', '')} ({state}); tolerance {ds.attrs.get('tolerance')}")
    click.echo(report.format_table(records))
    for note in report.table_notes(records):
        click.echo(f"  {note}")
