"""``diffsweep map``: stability maps (PNG), a summary table, the maps dataset, an HTML report."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from pipeline.cli.cluster_options import storage_options_option
from pipeline.cli.options import debug_option, store_argument
from pipeline.cli.verify import explains_damage
from pipeline.outputs import OutputFolder


def completeness(
    store: str, ds: object, storage_options: Mapping[str, Any] | None = None
) -> tuple[str | None, str]:
    """(warning or None, one-line description of how complete the store is)."""
    from pipeline import maps

    computed, total = maps.computed_runs(ds)  # type: ignore[arg-type]
    runs = f"{computed} of {total} runs ({computed / total:.0%})" if total else "no runs"
    try:
        from pipeline.store import completion

        done, blocks = completion(store, storage_options)
        text = f"{done} of {blocks} blocks, {runs} computed"
        complete = done == blocks
    except Exception:  # a store without block bookkeeping: judge from the results
        text = f"{runs} computed"
        complete = computed == total
    if complete:
        return None, f"complete: {text}"
    return f"incomplete store: {text}; the maps show what exists", f"incomplete: {text}"


@click.command("map", short_help="Draw stability maps with the theory overlaid.")
@store_argument
@click.option(
    "-o", "--output", "out_dir", required=True, metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="New or empty folder for the figures, summary table and maps dataset (created).",
)
@click.option(
    "--x", "x_axis", metavar="COORD", default=None,
    help="Horizontal axis: a sweep axis or a coordinate derived from them, such as cfl or time "
    "(default: step_size or cfl, whichever the sweep gives).",
)
@click.option("--y", "y_axis", metavar="COORD", default=None, help="Vertical axis, as for --x (default: coefficient).")
@click.option(
    "--facet", metavar="AXIS", default=None,
    help="One map per value of this sweep axis, side by side in the overview (default: steps); "
    "'none' for no facet: each setting then shows its class over all step counts.",
)
@click.option("--html", "write_html", is_flag=True, help="Also write report.html, one self-contained page.")
@click.option("--dpi", default=100, show_default=True, type=click.IntRange(30, 600), help="Resolution of the PNGs.")
@click.option(
    "--overwrite", is_flag=True,
    help="Replace the maps written into DIR by an earlier `diffsweep map` (only those, and only unchanged).",
)
@storage_options_option
@debug_option
@explains_damage
def map_command(
    store: str,
    out_dir: Path,
    x_axis: str | None,
    y_axis: str | None,
    facet: str | None,
    write_html: bool,
    dpi: int,
    overwrite: bool,
    storage_options: dict[str, Any],
) -> None:
    """Draw the stability maps of the results in STORE into DIR.

    Writes overview.png (every facet side by side), one map_*.png per facet (and per
    value of the remaining axes), boundary.png (stability and equilibration boundaries
    per coefficient against theory), summary.csv and summary.txt (the recommendations
    of `diffsweep recommend`), and maps.zarr (the numbers behind the figures, for
    xarray.open_zarr). An incomplete store is mapped as far as it goes.

    DIR must be new or empty. With --overwrite, map replaces what it wrote into DIR
    earlier (it keeps a list, with checksums, in DIR/.diffsweep-outputs.json) and
    nothing else: files of yours, or its own that you have changed since, are refused,
    and a results store is never replaced.

    \b
    Example:
      diffsweep map ftcs.zarr -o ftcs-maps --html
      diffsweep map dimensions.zarr -o dims --x cfl --y coefficient --facet dims
    """
    from pipeline import edges, maps, plotting, report

    ds = maps.open_results(store, storage_options)
    refinement = edges.open_refinement(store, storage_options, sweep_hash=ds.attrs.get("sweep_hash"))
    axes = maps.resolve_axes(ds, x_axis, y_axis, facet)  # its errors name `x`: the group shows --x
    files = [*plotting.figure_names(ds, axes), "summary.csv", "summary.txt", "maps.zarr"]
    folder = OutputFolder(out_dir, writer="diffsweep map", overwrite=overwrite)
    folder.prepare([*files, *(["report.html"] if write_html else [])])  # before anything is written
    warning, state = completeness(store, ds, storage_options)
    if warning:
        click.echo(f"Warning: {warning}.", err=True)
    records = maps.recommend(ds, refinement)
    images = plotting.write_figures(ds, out_dir, axes, note=warning, records=records, dpi=dpi, refinement=refinement)
    name = ds.attrs.get("sweep_name", "")
    header = [f"diffsweep recommendations: {name}", f"store: {store} ({state})"]
    written = [
        report.write_csv(records, out_dir / "summary.csv"),
        report.write_text(records, out_dir / "summary.txt", header),
    ]
    maps_path = out_dir / "maps.zarr"
    dataset = maps.maps_dataset(ds)
    dataset.attrs["source_store"] = store
    maps.save_maps(dataset, maps_path)
    written.append(maps_path)
    if write_html:
        written.append(
            report.write_html(
                out_dir / "report.html",
                attrs=ds.attrs,
                images=images,
                records=records,
                note=warning,
                links=[p.name for p in written],
                store=store,
                refinement_attrs=None if refinement is None else refinement.attrs,
            )
        )
    folder.commit()
    click.echo(f"{name}: {len(images)} figures and {len(written)} files in {out_dir} ({state})")
    for path in [*images, *written]:
        click.echo(f"  {path}")
