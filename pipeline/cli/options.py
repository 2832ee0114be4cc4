"""Options shared by several commands, as decorators (rasterio ``rio/options.py`` style)."""

from __future__ import annotations

import click

from pipeline.cli.main import debug_option

__all__ = ["debug_option", "memory_limit_option", "set_option", "store_argument", "sweep_argument"]

sweep_argument = click.argument(
    "sweep_file",
    metavar="SWEEP",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
)

set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a key of SWEEP, e.g. --set model.cells=64 --set sweep.coefficient='[0.1, 1]' "
    "(VALUE is YAML; repeatable). The effective definition is what is run and stored.",
)

store_argument = click.argument("store", metavar="STORE", type=str)


def _parse_bytes(_ctx: click.Context, _param: click.Parameter, value: str | int) -> int:
    from dask.utils import parse_bytes

    try:
        size = parse_bytes(value) if isinstance(value, str) else int(value)
    except (ValueError, TypeError):
        raise click.BadParameter(f"Expected a size such as 2GiB or 500MB. Got {value!r} instead.") from None
    if size <= 0:
        raise click.BadParameter(f"Expected a positive size. Got {value!r} instead.")
    return size


memory_limit_option = click.option(
    "--memory-limit",
    default="2GiB",
    show_default=True,
    callback=_parse_bytes,
    help="Refuse a sweep whose tasks would each need more memory than this.",
)
