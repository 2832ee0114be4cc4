"""The project's exceptions: one base class, one subclass per kind of bad input.

Every error the user can cause derives from :class:`DiffsweepError`; the command line
turns these into one line on stderr and exit status 2.  :class:`ComputationError` is a
failure during computation that diffsweep can explain in one line; it and anything else
that escapes exit with status 1.  Each class also derives from the built-in exception
of the same meaning (``ValueError``, ``ConnectionError``), so ``except ConnectionError``
catches a scheduler that cannot be reached, as it would for any other library.
"""

from __future__ import annotations

from collections.abc import Callable


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
    """A results store is missing, belongs to another sweep, or cannot be written.

    It has no built-in base of its own: its subclasses carry the built-in meaning that
    fits (``FileNotFoundError``, ``FileExistsError``, ``ValueError``).  It is never an
    ``OSError``, which callers read as a failing disk (a full disk stops a run).
    """


class StoreNotFoundError(StoreError, FileNotFoundError):
    """Nothing is at the location of a results store that should exist."""


class StoreExistsError(StoreError, FileExistsError):
    """Something is already at the location of a new results store (neither resume nor overwrite)."""


class StoreBusyError(StoreError):
    """Another diffsweep run is writing the store (it holds the store's lock).

    No built-in base: the nearest, ``BlockingIOError``, is an ``OSError`` about
    non-blocking file descriptors, which this is not.
    """


class StoreDamagedError(StoreError, ValueError):
    """A results store's files contradict its own records (missing or unreadable chunks,
    metadata or attributes that no longer match its definition).

    A ``ValueError`` as well: the content read back is wrong, as when zarr or json
    cannot decode what they read.
    """


class ArgumentNaming(Exception):
    """Mixin: the message names the caller's arguments as ```name```.

    A library error speaks of the arguments of the function that refused them
    (```scheduler_file```); a caller that exposes them under other names (the command
    line: ``--scheduler-file``) shows :meth:`naming` instead of ``str(error)``.  Put
    it first among the bases, so that its constructor takes ``arguments``.

    Parameters
    ----------
    message
        What happened; arguments are named in backticks (```jobs```).
    arguments
        The argument names the message mentions, for :meth:`naming`.
    """

    def __init__(self, message: str, *, arguments: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.arguments = arguments

    def naming(self, rename: Callable[[str], str]) -> str:
        """The message with each argument ```name``` replaced by ``rename(name)``."""
        text = str(self)
        for name in self.arguments:
            text = text.replace(f"`{name}`", rename(name))
        return text


class ClusterConfigError(ArgumentNaming, DiffsweepError, ValueError):
    """Cluster arguments contradict each other, or a cluster cannot be configured.

    Constructed as :class:`ArgumentNaming`; the message says what is wrong.
    """


class ClusterError(ArgumentNaming, DiffsweepError, ConnectionError):
    """A dask scheduler cannot be reached, is not one, or has no workers.

    Constructed as :class:`ArgumentNaming`; the message names the address.
    """


class ComputationError(Exception):
    """A failure during computation that diffsweep explains in one line (exit status 1)."""


class ClusterLostError(ArgumentNaming, ComputationError, ConnectionError):
    """The cluster went away while blocks were computing (exit status 1).

    Blocks already written are recorded in the store; the rest can be computed later
    (``diffsweep run ... --resume``).  Constructed as :class:`ArgumentNaming`; the
    message says what was lost, naming the scheduler.
    """


class SchedulerLostError(ClusterLostError):
    """The connection to the dask scheduler was lost while blocks were computing."""


class WorkersLostError(ClusterLostError):
    """The dask scheduler lost every worker (or the data they held) while blocks were computing."""


class MapError(DiffsweepError, ValueError):
    """A map or recommendation cannot be made from the given store or options.

    A ``ValueError`` as well: the results or the options asked of them do not fit
    (an axis the results lack, a dataset that is not results).
    """


#: what to do about a damaged store (every message about damage ends with it); the library
#: speaks of its functions and arguments, the command line shows its own commands instead
REPAIR_HINT = (
    "`pipeline.verify.verify(store)` lists the damage and `pipeline.runner.run_sweep` with "
    "resume=True and repair=True recomputes it"
)
#: what an interrupted creation left, and what to do about it
UNFINISHED_HINT = (
    "is a diffsweep store whose creation was interrupted before any block was computed; "
    "running the same sweep with resume=True, or with overwrite=True, creates it again"
)
#: how a store that is not finished (or whose consolidation was interrupted) is finished
RESUME_HINT = "running the same sweep again with resume=True"


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type's name if it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class RefineError(DiffsweepError, ValueError):
    """A refinement cannot be made as asked: an axis that is not swept, a tolerance out of range."""
