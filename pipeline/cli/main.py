"""The ``diffsweep`` command group.

Commands live one per module and are imported only when invoked (or when the group's
``--help`` lists them), so ``diffsweep plan`` never pays for importing distributed.
Errors are handled here, once: bad input (:class:`~pipeline.errors.DiffsweepError`)
becomes one line on stderr and exit status 2, any other exception during computation
one line and exit status 1. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from pipeline import __version__
from pipeline.errors import (
    REPAIR_HINT,
    RESUME_HINT,
    UNFINISHED_HINT,
    ArgumentNaming,
    ComputationError,
    DiffsweepError,
    first_line,
)

#: command name -> "module:attribute" of its click command
COMMANDS = {
    "run": "pipeline.cli.run:run",
    "plan": "pipeline.cli.plan:plan",
    "status": "pipeline.cli.status:status",
    "verify": "pipeline.cli.verify:verify",
    "map": "pipeline.cli.map:map_command",
    "recommend": "pipeline.cli.recommend:recommend",
    "refine": "pipeline.cli.refine:refine",
}

DEBUG_KEY = "diffsweep.debug"


def flag_name(argument: str) -> str:
    """The command-line flag of a library argument: ``scheduler_file`` -> ``--scheduler-file``."""
    return "--" + argument.replace("_", "-")


#: the library's hints (which name its functions and arguments) as the command line says them
COMMAND_HINTS = {
    REPAIR_HINT: (
        "`diffsweep verify STORE` lists the damage and `diffsweep run SWEEP -o STORE --resume --repair` "
        "recomputes it"
    ),
    UNFINISHED_HINT: (
        "is a diffsweep store whose creation was interrupted before any block was computed; "
        "`diffsweep run SWEEP -o STORE --resume` (the same sweep) or `--overwrite` creates it again"
    ),
    RESUME_HINT: "`diffsweep run SWEEP -o STORE --resume`",
}


def command_wording(text: str) -> str:
    """``text`` with each library hint (:data:`COMMAND_HINTS`) in the command line's words."""
    for hint, command in COMMAND_HINTS.items():
        text = text.replace(hint, command)
    return text


def error_line(error: BaseException) -> str:
    """``error``'s message as the command line shows it: hints as commands, arguments as flags."""
    text = error.naming(flag_name) if isinstance(error, ArgumentNaming) else str(error)
    return command_wording(text)


class DiffsweepGroup(click.Group):
    """A group that loads its commands lazily and turns exceptions into exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module_name, attribute = COMMANDS[cmd_name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as error:
                if error.name != module_name:
                    raise
                return None  # command not built in this version
            return getattr(module, attribute)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except DiffsweepError as error:
            if ctx.meta.get(DEBUG_KEY):
                raise
            click.echo(f"Error: {error_line(error)}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except ComputationError as error:
            if ctx.meta.get(DEBUG_KEY):
                raise
            click.echo(f"Error: {error_line(error)}", err=True)
            ctx.exit(1)
        except Exception as error:
            if ctx.meta.get(DEBUG_KEY):
                raise
            message = first_line(error) if str(error).strip() else ""
            click.echo(
                f"Error: computation failed: {type(error).__name__}: {message} "
                "(run with --debug for the traceback)",
                err=True,
            )
            ctx.exit(1)


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[DEBUG_KEY] = True  # meta is shared by the whole context tree
        logging.getLogger("pipeline").setLevel(logging.DEBUG)
    return value


debug_option = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_debug,
    help="Show full tracebacks and debug logs instead of one-line errors.",
)


@click.group(cls=DiffsweepGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="diffsweep")
@debug_option
def cli() -> None:
    """Sweep numerical diffusion over step size, step count and coefficient.

    \b
    Typical session:
      diffsweep plan sweeps/ftcs-1d-stability.yaml          # what will run, and its cost
      diffsweep run  sweeps/ftcs-1d-stability.yaml -o ftcs.zarr
      diffsweep status ftcs.zarr
      diffsweep verify ftcs.zarr                             # every chunk against the records
      diffsweep refine ftcs.zarr                             # bisect every stability edge
      diffsweep map ftcs.zarr -o maps/ --html               # stability maps with theory
      diffsweep recommend ftcs.zarr                          # best settings per coefficient

    Exit status: 0 success, 2 bad input, 1 failure during computation.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("pipeline")
    if not logger.handlers:
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


if __name__ == "__main__":  # pragma: no cover
    cli()
