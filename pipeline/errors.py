"""The project's exceptions: one base class, one subclass per kind of bad input.

Every error the user can cause derives from :class:`DiffsweepError`; the command line
turns these into one line on stderr and exit status 2.  Anything else that escapes is
a failure during computation (exit status 1).
"""

from __future__ import annotations


class DiffsweepError(Exception):
    """Base class of every error caused by bad input (exit status 2)."""


class SweepError(DiffsweepError, ValueError):
    """A sweep definition is malformed or impossible.

    Parameters
    ----------
    message
        What is wrong, naming the offending value.
    key
        Dotted path of the offending key (``sweep.step_size.num``), if any.
    source
        File name (or ``<string>``) the definition came from.
    line
        1-based line number of the offending key in ``source``, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.key = key
        self.source = source
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.source is not None:
            where = f"{self.source}:{self.line}: " if self.line is not None else f"{self.source}: "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


class StoreError(DiffsweepError):
    """A results store is missing, belongs to another sweep, or cannot be written."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """Nothing is at the location of a results store that should exist."""


class StoreExistsError(StoreError, FileExistsError):
    """Something is already at the location of a new results store (neither resume nor overwrite)."""


class ClusterError(DiffsweepError):
    """A dask scheduler cannot be reached or configured."""


class MapError(DiffsweepError):
    """A map or recommendation cannot be made from the given store or options."""
