"""Opening a client for a :class:`~pipeline.cluster.spec.ClusterSpec`, with bounded waits."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from pipeline.cluster.connect import Warn, connect, read_scheduler_file
from pipeline.cluster.jobqueue import jobqueue_cluster
from pipeline.cluster.spec import ClusterSpec
from pipeline.errors import (
    ClusterError,
    DiffsweepError,
    SchedulerLostError,
    WorkersLostError,
    first_line,
)

if TYPE_CHECKING:
    import distributed

__all__ = ["dashboard_link", "describe", "open_client"]

logger = logging.getLogger(__name__)

#: How often the watchdog asks the scheduler how many workers it has, in seconds.
WATCH_INTERVAL = 1.0


@contextmanager
def open_client(
    spec: ClusterSpec | None = None, *, warn: Warn | None = None
) -> Iterator[distributed.Client]:
    """Connect to (or start) the cluster ``spec`` describes; close what was started on exit.

    Parameters
    ----------
    spec
        Which cluster (default: ``ClusterSpec()``, the dask config's scheduler-address
        or a local cluster).
    warn
        Called with a warning message (plain tcp to another machine); defaults to logging.

    Yields
    ------
    distributed.Client
        A client that is not set as the global default; use it explicitly.  It has at
        least one worker, unless ``spec.worker_wait`` is ``None``.

    Raises
    ------
    ClusterError
        If the scheduler cannot be reached or is not a dask scheduler within
        ``spec.connect_timeout``, or no worker joins it within ``spec.worker_wait``.
    ClusterConfigError
        If a dask-jobqueue cluster cannot be configured.
    SchedulerLostError
        If the connection to the scheduler is lost inside the ``with`` block.
    WorkersLostError
        If, inside the ``with`` block, the scheduler has had no worker for
        ``spec.worker_wait`` seconds (the client's futures are cancelled then), or it
        cancelled the tasks itself because the workers holding their inputs are gone.
    """
    spec = spec or ClusterSpec()
    warn = warn or _default_warn
    with ExitStack() as stack:
        # first in, last out: also quiet while the client closes after losing its scheduler
        quiet, client_log = _ReconnectNoise(), logging.getLogger("distributed.client")
        client_log.addFilter(quiet)
        stack.callback(client_log.removeFilter, quiet)
        client = _start_client(stack, spec, warn)
        stack.callback(client.close)
        wait = spec.worker_wait
        address = _scheduler_address(client)
        if wait is not None:
            _wait_for_a_worker(client, address, wait)
        elif spec.cluster:
            logger.warning(
                "waiting for the batch system to start a worker job; the wait is not "
                "limited unless a worker timeout is given"
            )
        watchdog = _WorkerWatchdog(client, wait) if wait is not None else None
        if watchdog is not None:
            stack.callback(watchdog.stop)
        try:
            yield client
        except (DiffsweepError, KeyboardInterrupt):
            raise
        except Exception as error:
            if watchdog is not None and watchdog.fired:
                message = (
                    _stalled_message(address, wait, watchdog.workers) if watchdog.stalled
                    else _no_workers_message(address, wait, during_run=True)
                )
                raise WorkersLostError(message, arguments=("worker_timeout",)) from None
            if _connection_lost(client):
                raise SchedulerLostError(
                    f"lost the connection to the dask scheduler {address} "
                    f"({type(error).__name__}: {first_line(error)})"
                ) from error
            if isinstance(error, CancelledError):
                # Not cancelled by us: the watchdog found no worker for too long, or the
                # scheduler dropped the tasks itself.
                left = "lost all its workers" if not _workers(client) else "cancelled the tasks"
                raise WorkersLostError(
                    f"the dask scheduler {address} {left} while blocks were computing "
                    f"({first_line(error)})"
                ) from error
            raise


class _ReconnectNoise(logging.Filter):
    """Drops distributed's tracebacks about reconnecting to a lost scheduler.

    :func:`open_client` reports a lost scheduler itself, in one line
    (:class:`~pipeline.errors.SchedulerLostError`); the dropped records go to this
    module's debug log instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None:
            return True
        from distributed.comm import CommClosedError

        if isinstance(error, CommClosedError | OSError | TimeoutError | asyncio.CancelledError):
            logger.debug("distributed.client: %s: %s", type(error).__name__, error)
            return False
        return True


def _default_warn(message: str) -> None:
    logger.warning(message)


def _start_client(stack: ExitStack, spec: ClusterSpec, warn: Warn) -> distributed.Client:
    security = spec.security()
    timeout = spec.connect_timeout
    if spec.scheduler_file:
        address = read_scheduler_file(spec.scheduler_file)
        return connect(address, security=security, timeout=timeout, warn=warn)
    if spec.scheduler:
        return connect(spec.scheduler, security=security, timeout=timeout, warn=warn)
    if spec.cluster:
        return _jobqueue_client(stack, spec, security)
    import dask.config

    configured = dask.config.get("scheduler-address", None)
    if configured:
        return connect(configured, security=security, timeout=timeout, warn=warn)
    return _local_client(
        stack, workers=spec.local_workers, processes=spec.processes is not False, dashboard=spec.dashboard is not False
    )


def _scheduler_address(client: distributed.Client) -> str:
    address = client.scheduler.address if client.scheduler is not None else None
    return str(address) if address else "?"


def _no_workers_message(address: str, seconds: float | None, *, during_run: bool) -> str:
    what = "lost all its workers" if during_run else "has no workers"
    how_long = "none came back" if during_run else "none joined"
    return (
        f"the dask scheduler {address} {what}: {how_long} within {seconds:g} s "
        f"(`worker_timeout`); start some with `dask worker {address}`"
    )


def _stalled_message(address: str, seconds: float | None, workers: int) -> str:
    return (
        f"the dask scheduler {address} has {workers} worker{'s' if workers != 1 else ''} but ran "
        f"none of the waiting tasks for {seconds:g} s (`worker_timeout`); see its log"
    )


def _wait_for_a_worker(client: distributed.Client, address: str, seconds: float) -> None:
    if client.nthreads():
        return
    logger.info("waiting up to %g s for a worker to join %s", seconds, address)
    try:
        client.wait_for_workers(1, timeout=seconds)
    except TimeoutError:
        raise ClusterError(
            _no_workers_message(address, seconds, during_run=False),
            arguments=("worker_timeout",),
        ) from None


def _workers(client: distributed.Client) -> int:
    """How many workers the scheduler has now (``-1`` if it cannot say)."""
    try:
        return len(client.nthreads())
    except Exception:
        return -1


def _connection_lost(client: distributed.Client) -> bool:
    """Whether ``client`` no longer talks to its scheduler (reconnecting, or given up)."""
    return str(client.status) not in ("running", "newly-created")


class _WorkerWatchdog:
    """Cancels the client's futures once nothing can run them for ``seconds``.

    That is: the scheduler has had no worker for ``seconds``, or it has workers but
    none of them has run anything while this client's tasks waited (a stalled
    scheduler, or workers paused for memory) for ``seconds``. Whoever waits on a
    future then gets a ``CancelledError`` at once, instead of waiting for ever;
    :attr:`fired` and :attr:`stalled` tell why, :attr:`workers` how many there were.
    """

    def __init__(self, client: distributed.Client, seconds: float) -> None:
        self.client = client
        self.seconds = seconds
        self.fired = False
        self.stalled = False
        self.workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="diffsweep-watchdog", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        empty_since: float | None = None
        idle_since: float | None = None
        while not self._stop.wait(WATCH_INTERVAL):
            if _connection_lost(self.client):
                return  # the client reports that itself
            try:
                self.workers = len(self.client.nthreads())
                idle = self.workers > 0 and self._waiting() and not self._running()
            except Exception:
                return
            now = time.monotonic()
            empty_since = None if self.workers else (empty_since if empty_since is not None else now)
            idle_since = (idle_since if idle_since is not None else now) if idle else None
            if empty_since is not None and now - empty_since >= self.seconds:
                self._give_up("no workers")
                return
            if idle_since is not None and now - idle_since >= self.seconds:
                self.stalled = True
                self._give_up("no task ran")
                return

    def _waiting(self) -> bool:
        """Whether any of this client's futures still waits for its result."""
        return any(state.status == "pending" for state in list(self.client.futures.values()))

    def _running(self) -> bool:
        """Whether any worker runs any task now (this client's or another's)."""
        return any(self.client.processing().values())

    def _give_up(self, reason: str) -> None:
        self.fired = True
        from distributed import Future

        futures: list[Any] = [Future(key, self.client) for key in list(self.client.futures)]
        if futures:
            self.client.cancel(futures, reason=reason)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WATCH_INTERVAL + 5)


def _jobqueue_client(
    stack: ExitStack, spec: ClusterSpec, security: distributed.Security | None
) -> distributed.Client:
    from distributed import Client

    assert spec.cluster is not None
    job_cluster = jobqueue_cluster(
        spec.cluster, security=security if security is not None else True
    )
    stack.callback(job_cluster.close)
    if spec.maximum_jobs is not None:
        job_cluster.adapt(minimum_jobs=spec.jobs or 0, maximum_jobs=spec.maximum_jobs)
    else:
        job_cluster.scale(jobs=spec.jobs or 1)
    logger.info("submitting %s job(s) with:\n%s", spec.jobs or 1, job_cluster.job_script())
    return Client(
        job_cluster,
        security=job_cluster.security,
        timeout=spec.connect_timeout,
        set_as_default=False,
    )


def _local_client(
    stack: ExitStack, *, workers: int, processes: bool, dashboard: bool
) -> distributed.Client:
    import warnings

    from distributed import Client, LocalCluster

    if not processes and not _numba_threadsafe():
        logger.info("no thread-safe numba threading layer (tbb or OpenMP): worker processes instead of threads")
        processes = True
    with warnings.catch_warnings(record=True) as caught:
        # "Port 8787 is already in use ... on port N instead": falling back is what we want.
        warnings.filterwarnings("always", message="Port .* is already in use", category=UserWarning)
        local = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=processes,
            # worker processes talk tcp on loopback; threads use inproc:// (no socket)
            **({"host": "127.0.0.1"} if processes else {"worker_class": _loopback_worker_class()}),
            # without the dashboard the scheduler still serves /health and metrics: on
            # loopback too (dashboard_address=None would bind the host's address)
            dashboard_address="127.0.0.1:8787",
            scheduler_kwargs={"dashboard": dashboard},
        )
    for item in caught:
        if "is already in use" in str(item.message):
            logger.info("dashboard: %s", str(item.message).replace("\n", " "))
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    stack.callback(local.close)
    return Client(local, set_as_default=False)


def _loopback_worker_class() -> type:
    """A thread worker whose HTTP server (/health, metrics) listens on 127.0.0.1.

    An in-process worker has no network address of its own (``inproc://``), so
    distributed binds its HTTP server to every interface; a worker process bound to
    ``host="127.0.0.1"`` does not need this.
    """
    from distributed import Worker

    class LoopbackWorker(Worker):
        def start_http_server(
            self, routes: Any, dashboard_address: str | None, default_port: int = 0, ssl_options: Any = None
        ) -> Any:
            address = dashboard_address or f"127.0.0.1:{default_port}"
            return super().start_http_server(routes, address, default_port, ssl_options)

    return LoopbackWorker


def _numba_threadsafe() -> bool:
    """Make numba's parallel kernels safe to call from several threads at once, if it can.

    Worker threads each run a block's kernels at the same time; numba's own fallback
    threading layer (``workqueue``) aborts the process on concurrent launches, while its
    TBB and OpenMP layers allow them. ``False`` when neither can be loaded here, or when
    a kernel already started another layer in this process.
    """
    import importlib

    import numba

    for module in ("numba.np.ufunc.tbbpool", "numba.np.ufunc.omppool"):
        try:
            importlib.import_module(module)
        except ImportError:  # the library it wraps (libtbb, libgomp) is missing
            continue
        break
    else:
        return False
    try:
        current = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet: the layer is still ours to choose
        numba.config.THREADING_LAYER = "threadsafe"  # type: ignore[attr-defined]  # untyped module
        return True
    return current in ("tbb", "omp")


# --------------------------------------------------------------------------- describing


def describe(client: distributed.Client) -> str:
    """One line naming the scheduler, its workers and threads, and the dashboard."""
    nthreads = client.nthreads()
    address = _scheduler_address(client)
    n_workers = len(nthreads)
    n_threads = sum(nthreads.values())
    where = "in this process" if address.startswith("inproc://") else address
    text = (
        f"dask scheduler {where}: {n_workers} worker{'s' if n_workers != 1 else ''}, "
        f"{n_threads} thread{'s' if n_threads != 1 else ''}"
    )
    link = dashboard_link(client)
    if link:
        text += f", dashboard {link}"
    return text


def _serves_bokeh(client: distributed.Client) -> bool:
    """Whether a scheduler running in this process serves the bokeh dashboard (or the
    scheduler runs elsewhere, where only its own ``services`` can tell): its HTTP server
    also runs, for /health and metrics, when the dashboard is off."""
    scheduler = getattr(getattr(client, "cluster", None), "scheduler", None)
    http = getattr(scheduler, "http_application", None)
    if http is None:
        return True
    return any(
        any(cls.__name__ == "BokehTornado" for cls in type(app).__mro__)
        for app in getattr(http, "applications", ())
    )


def dashboard_link(client: distributed.Client) -> str | None:
    """The scheduler's dashboard URL, or ``None`` if it serves none.

    A local cluster's dashboard listens on 127.0.0.1; a remote scheduler's link is
    built from its address and dashboard port (dask's ``distributed.dashboard.link``).
    """
    try:
        info = client.scheduler_info(n_workers=0)
    except Exception:
        return None
    if "dashboard" not in info.get("services", {}) or not _serves_bokeh(client):
        return None
    if _scheduler_address(client).startswith("inproc://"):  # threads: served on loopback here
        return f"http://127.0.0.1:{info['services']['dashboard']}/status"
    try:
        link: str = client.dashboard_link
    except Exception:
        return None
    return link
