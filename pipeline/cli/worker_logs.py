"""The workers' logs of a local cluster: quiet about diffsweep's own tasks.

Imported by ``diffsweep run`` only when it computes on a dask cluster (it imports
distributed).
"""

from __future__ import annotations

import logging
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["QuietTaskLogs", "quiet_local_workers"]

#: part of every task key of a diffsweep run (:meth:`pipeline.planning.Plan.key`)
TASK_KEY_MARK = "diffsweep-"


class _TaskNoise(logging.Filter):
    """Drops a worker's records about diffsweep tasks, and everything once it closes."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.closing:
            return False
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted is not ours to judge
            return True
        if record.name == "distributed.worker.state_machine" and message.endswith("ended with CancelledError"):
            return False  # a transfer of a task's input cancelled by this run (the key is elided)
        return TASK_KEY_MARK not in message


class QuietTaskLogs(WorkerPlugin):
    """Worker plugin: the workers of a local cluster stay silent about diffsweep's tasks.

    A block that fails (a full disk, say) is reported by ``diffsweep run`` in one
    line; the worker's "Compute Failed" report and its warnings about cancelled
    diffsweep tasks would repeat it at length on the same terminal. This drops
    records naming a diffsweep task key or a cancelled transfer of a task's input,
    and, once the worker closes, everything it
    logs (it is being shut down by this run).  Other records, such as memory warnings,
    pass.  Registered by name, so each worker, including restarted ones, has it once.
    """

    name = "diffsweep-quiet-task-logs"
    idempotent = True

    def setup(self, worker: Any) -> None:
        self._filter = _TaskNoise()
        for logger in _worker_handlers_loggers():
            for handler in logger.handlers:
                handler.addFilter(self._filter)

    def teardown(self, worker: Any) -> None:
        self._filter.closing = True


def _worker_handlers_loggers() -> list[logging.Logger]:
    """Loggers in a worker process whose handlers write distributed's records."""
    loggers = [logging.getLogger("distributed"), logging.getLogger()]
    return [logger for logger in loggers if logger.handlers]


def quiet_local_workers(client: Any) -> None:
    """Register :class:`QuietTaskLogs` when the client's workers are local processes.

    Remote and batch-system workers log to their own files, where those records belong.
    """
    from distributed import LocalCluster

    if isinstance(getattr(client, "cluster", None), LocalCluster):
        from distributed.comm import CommClosedError

        try:
            client.register_plugin(QuietTaskLogs(), name=QuietTaskLogs.name)
        except (CommClosedError, OSError) as error:
            # a worker died while the scheduler told it; the scheduler keeps the plugin
            # for every worker that starts later, so the run goes on
            logging.getLogger(__name__).debug("quiet task logs: %s: %s", type(error).__name__, error)
