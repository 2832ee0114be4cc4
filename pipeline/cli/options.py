"""Options shared by several commands, as decorators (rasterio ``rio/options.py`` style)."""

from __future__ import annotations

import click

from pipeline.cli.main import debug_option

__all__ = ["debug_option", "store_argument", "sweep_argument"]

sweep_argument = click.argument(
    "sweep_file",
    metavar="SWEEP",
    type=click.Path(dir_okay=False, path_type=str),
)

store_argument = click.argument("store", metavar="STORE", type=str)
