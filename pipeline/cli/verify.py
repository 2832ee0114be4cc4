"""``diffsweep verify``: check every recorded block of a store, name every bad one."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pipeline.cli.cluster_options import storage_options_option
from pipeline.cli.main import command_wording
from pipeline.cli.options import debug_option, store_argument

F = TypeVar("F", bound=Callable[..., Any])


def explains_damage(command: F) -> F:
    """Make a command that reads STORE name the damaged variable and block when reading fails.

    zarr reports a truncated chunk as, e.g., "Zstd decompression error" from deep inside
    dask; the command then verifies the store and says which chunk of which variable and
    block is bad (:func:`pipeline.verify.explain_read_failure`), exit status 2.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pipeline.verify import explain_read_failure

        with explain_read_failure(kwargs["store"], kwargs.get("storage_options")):
            return command(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@click.command(short_help="Check a store's chunks, metadata and attributes against its records.")
@store_argument
@click.option(
    "--quick", is_flag=True,
    help="Check metadata, attributes and that every chunk is present; decode nothing (one listing).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@storage_options_option
@debug_option
def verify(store: str, quick: bool, as_json: bool, storage_options: dict[str, Any]) -> None:
    """Check STORE against its completion record and its own definition.

    Every block recorded as done must have a chunk in every variable that decodes to
    the right shape, with a stability class in every status; every array its own
    metadata (not only the consolidated copy) with the layout's shape, chunks, dtype,
    fill value, dimensions and attributes; the coordinates and the root attributes
    (tolerance, divergence, model keys, blocks) must be what the stored definition
    gives, and that definition must still have the stored hash.

    Prints one line per problem, naming the variable and block (or attribute), then a
    verdict. Exit status 0: sound; 1: damaged (`diffsweep run SWEEP -o STORE --resume
    --repair` recomputes exactly the bad blocks); 2: not a diffsweep store.

    \b
    Example:
      diffsweep verify ftcs.zarr
      diffsweep verify s3://bucket/ftcs.zarr --quick --storage-option anon=true
    """
    from pipeline.verify import verify as check

    report = check(store, storage_options, quick=quick)
    if as_json:
        bad = report.bad_blocks()
        click.echo(json.dumps({
            "store": store,
            "ok": report.ok,
            "decoded": report.decoded,
            "blocks_total": report.blocks_total,
            "blocks_done": report.blocks_done,
            "chunks_checked": report.chunks_checked,
            "bad_blocks": None if bad is None else sorted(list(index) for index in bad),
            "problems": [
                {"where": p.where, "what": command_wording(p.what), "repair": p.repair, "name": p.name}
                for p in report.problems
            ],
        }, indent=2))
    else:
        for problem in report.problems:
            click.echo(f"BAD  {command_wording(str(problem))}")
        click.echo(command_wording(report.summary()))
    if not report.ok:
        click.get_current_context().exit(1)
