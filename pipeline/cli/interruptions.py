"""Stopping ``diffsweep run`` early, quietly: Ctrl-C, a full disk, and the cluster's noise.

A run that stops early has written every block it finished, so what the user needs is
one line saying how far it got and the command that finishes it::

    interrupted after 3 of 8 blocks; finish with: diffsweep run s.yaml -o s.zarr --resume

What must not reach them is dask's own account of the stop: tracebacks of worker
processes that also received the terminal's SIGINT, the scheduler's warnings about
workers leaving, "Compute Failed" reports of the block that hit the full disk.  Three
pieces keep those out, unless ``-v``/``--debug`` asks for them:

* :func:`workers_ignore_ctrl_c` starts local worker processes with SIGINT blocked, so
  a Ctrl-C at the terminal reaches only this process;
* :class:`pipeline.cli.worker_logs.QuietTaskLogs` (a worker plugin, local clusters
  only) drops the workers' reports of diffsweep tasks that failed or were cancelled,
  which this process reports itself in one line, and everything they log while
  shutting down;
* :func:`stopped_quietly` silences distributed's loggers here once the run stops, so
  closing the cluster says nothing.

Only ``diffsweep run`` imports this module; it does not import distributed (a run
``--in-process`` does without it).
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import click

__all__ = [
    "DISK_FULL_ERRNOS",
    "RunCommand",
    "is_disk_full",
    "silence_cluster_logs",
    "stopped_quietly",
    "workers_ignore_ctrl_c",
]

#: loggers whose records this process drops once a run stops (unless verbose)
NOISY_LOGGERS = ("distributed", "tornado", "asyncio", "bokeh")

#: errno values that mean the store's file system has no room left
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


# --------------------------------------------------------------------------- the command again


@dataclass(frozen=True)
class RunCommand:
    """The ``diffsweep run`` command line as the user typed it, to suggest it again.

    Parameters
    ----------
    args
        The command's arguments (after ``run``), as click received them.
    value_options
        Option names that take a value (``-o``, ``--set``, ...), so that a value that
        happens to read ``--overwrite`` is never mistaken for the flag.
    """

    args: tuple[str, ...]
    value_options: frozenset[str] = frozenset()

    @classmethod
    def of(cls, command: click.Command, args: Sequence[str]) -> RunCommand:
        """The command line ``args`` of the click ``command``."""
        value_options = {
            name
            for param in command.params
            if isinstance(param, click.Option) and not (param.is_flag or param.count)
            for name in param.opts
        }
        return cls(tuple(args), frozenset(value_options))

    def again(self) -> str:
        """The same command, to type again (shell-quoted)."""
        return shlex.join(["diffsweep", "run", *self.args])

    def resuming(self) -> str:
        """The command that completes the store: the same options, ``--resume`` instead of ``--overwrite``."""
        kept: list[str] = []
        tokens = iter(self.args)
        for token in tokens:
            if token == "--":
                kept += ["--resume", token, *tokens]
                break
            if token in ("--resume", "--overwrite"):
                continue
            kept.append(token)
            if token in self.value_options:
                value = next(tokens, None)
                if value is not None:
                    kept.append(value)
        else:
            kept.append("--resume")
        return shlex.join(["diffsweep", "run", *kept])


# --------------------------------------------------------------------------- Ctrl-C


@contextmanager
def workers_ignore_ctrl_c() -> Iterator[None]:
    """Start worker processes inside this block with SIGINT blocked.

    A Ctrl-C at the terminal goes to every process of the foreground group: without
    this, each local worker prints a ``KeyboardInterrupt`` traceback while this
    process is still cancelling its tasks. Blocked signals are inherited by threads
    and processes started here (the cluster's event loop, the workers it spawns, also
    those it restarts later), while this thread takes SIGINT again after the block.
    A Ctrl-C during the block is delivered when it ends.
    """
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    from multiprocessing import resource_tracker

    # multiprocessing starts its resource tracker with the first worker and then
    # *unblocks* SIGINT in the starting thread; start it now, before blocking
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def stopped_quietly(*, quiet: bool, on_second_interrupt: Callable[[], str]) -> Iterator[None]:
    """Ctrl-C inside the block raises ``KeyboardInterrupt`` after silencing the cluster's logs.

    The logs are silenced in the signal handler itself, before any clean-up runs (the
    cluster closing, tasks being cancelled), so the clean-up is quiet; they are put
    back as they were when the block ends.  A second
    Ctrl-C while the run is being stopped ends the process at once (exit 130),
    printing ``on_second_interrupt()`` first.
    """
    if threading.current_thread() is not threading.main_thread():
        try:
            yield
        finally:
            _CLUSTER_LOGS.restore()
        return
    interrupted = False

    def on_sigint(_signum: int, _frame: Any) -> None:
        nonlocal interrupted
        if interrupted:
            sys.stderr.write(on_second_interrupt() + "\n")
            sys.stderr.flush()
            os._exit(130)
        interrupted = True
        if quiet:
            silence_cluster_logs()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _CLUSTER_LOGS.restore()


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


class _ClusterLogs:
    """Silences distributed's loggers in this process, and puts them back as they were."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def silence(self) -> None:
        if self._undo:
            return
        drop = _DropAll()
        for name in NOISY_LOGGERS:
            loggers = [logging.getLogger(name)] + [
                child for child_name, child in list(logging.Logger.manager.loggerDict.items())
                if child_name.startswith(name + ".") and isinstance(child, logging.Logger)
            ]
            for logger in loggers:
                self._undo.append(partial(setattr, logger, "disabled", logger.disabled))
                logger.disabled = True
                for handler in logger.handlers:
                    handler.addFilter(drop)
                    self._undo.append(partial(handler.removeFilter, drop))
        hook = sys.unraisablehook
        self._undo.append(partial(setattr, sys, "unraisablehook", hook))
        sys.unraisablehook = lambda _unraisable: None

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


_CLUSTER_LOGS = _ClusterLogs()


def silence_cluster_logs() -> None:
    """Drop every record of distributed, tornado, asyncio and bokeh in this process.

    Used when a run stops (finished, interrupted or failed): what dask says while its
    cluster closes is not for the user. The loggers are disabled, their handlers get a
    filter that drops everything (children's records reach them by propagation), and
    exceptions "ignored" in finalizers are not printed, until :func:`stopped_quietly`
    ends and puts everything back.
    """
    _CLUSTER_LOGS.silence()


# --------------------------------------------------------------------------- a full disk


def is_disk_full(error: BaseException) -> bool:
    """True for an ``OSError`` saying the file system (or the user's quota) is full, also when wrapped."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False
