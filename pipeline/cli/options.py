"""Options shared by several commands, as decorators (rasterio ``rio/options.py`` style)."""

from __future__ import annotations

import click

from pipeline.cli.main import debug_option
from pipeline.sweep.definition import WORKER_BASELINE_BYTES

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


def _parse_memory_limit(ctx: click.Context, param: click.Parameter, value: str | int) -> int:
    from dask.utils import format_bytes

    size = _parse_bytes(ctx, param, value)
    if size <= WORKER_BASELINE_BYTES:
        raise click.BadParameter(
            f"Expected more than the about {format_bytes(WORKER_BASELINE_BYTES)} a dask worker uses "
            f"before any task. Got {value!r} instead."
        )
    return size


memory_limit_option = click.option(
    "--memory-limit",
    default="2GiB",
    show_default=True,
    callback=_parse_memory_limit,
    help="Memory of one dask worker (it runs one task at a time). A task may use this less "
    f"about {WORKER_BASELINE_BYTES // 2**20} MiB the worker needs itself: automatic blocks are "
    "sized to fit, and a sweep whose single run (or explicit chunk) cannot fit is refused.",
)
