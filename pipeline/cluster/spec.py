"""The typed, validated description of which dask cluster to use."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pipeline.cluster.jobqueue import check_kind
from pipeline.errors import ClusterConfigError

if TYPE_CHECKING:
    import distributed

__all__ = [
    "CONNECT_TIMEOUT_CONFIG_KEY",
    "DASHBOARD_FROM_SECONDS",
    "THREADS_UP_TO_CORE_SECONDS",
    "WORKER_TIMEOUT_CONFIG_KEY",
    "ClusterSpec",
]

#: dask config key: seconds (or "10s") to wait for a scheduler to answer
CONNECT_TIMEOUT_CONFIG_KEY = "diffsweep.connect-timeout"

#: dask config key: seconds (or "60s") a running scheduler may have no workers
WORKER_TIMEOUT_CONFIG_KEY = "diffsweep.worker-timeout"

#: A sweep estimated at up to this many core-seconds runs its local cluster's workers as
#: threads in this process unless told otherwise (``--processes``/``--threads``): starting
#: worker processes costs seconds, most of such a sweep's time (benchmarks/run.py,
#: "start-up"). Longer sweeps get worker processes: isolated from each other and from
#: this process, and stopped at once by Ctrl-C.
THREADS_UP_TO_CORE_SECONDS = 60.0

#: A local cluster serves its dashboard, unless told otherwise (``--dashboard``/
#: ``--no-dashboard``), for a sweep estimated at this many seconds of wall time or more:
#: the dashboard of a shorter run is gone before anyone opens its link, and starting it
#: (bokeh) costs about 0.45 s, a sixth of a small sweep's whole run (benchmarks/run.py).
DASHBOARD_FROM_SECONDS = 10.0


def _configured_seconds(key: str, default: str) -> float:
    import dask.config
    from dask.utils import parse_timedelta

    value = dask.config.get(key, default)
    try:
        return float(parse_timedelta(value, "s"))
    except (ValueError, KeyError, TypeError):
        raise ClusterConfigError(
            f"dask config {key}: expected seconds such as 30, 30s or 2m, got {value!r}"
        ) from None


def _connect_timeout_default() -> float:
    return _configured_seconds(CONNECT_TIMEOUT_CONFIG_KEY, "10s")


@dataclass(frozen=True)
class ClusterSpec:
    """Which dask cluster to use, validated when it is made.

    At most one of ``scheduler``, ``scheduler_file`` and ``cluster`` is given; none
    means the dask config's ``scheduler-address`` if set, else a local cluster.

    Parameters
    ----------
    scheduler
        Address of a running scheduler, ``tls://host:port`` or ``tcp://host:port``.
    scheduler_file
        JSON file written by ``dask scheduler --scheduler-file``; read when connecting.
    workers
        Worker processes of the local cluster (default: one per core).
    cluster
        A dask-jobqueue kind (:data:`~pipeline.cluster.jobqueue.JOBQUEUE_KINDS`): start a scheduler here and submit
        worker jobs to the batch system, which make their own TLS credentials.
    jobs
        With ``cluster``: jobs to submit (default 1; the minimum with ``maximum_jobs``).
    maximum_jobs
        With ``cluster``: scale adaptively up to this many jobs.
    tls_ca_file, tls_cert, tls_key
        PEM files: the CA that signed the scheduler's certificate, this client's
        certificate, and its key (if not inside ``tls_cert``).  Without them, TLS
        credentials come from the dask config (``distributed.comm.tls.*``) if it has any.
    connect_timeout
        Seconds to wait for a scheduler to answer as one (default: the dask config key
        ``diffsweep.connect-timeout``, else 10).
    worker_timeout
        Seconds a scheduler may have no worker before giving up, at the start and
        during the run.  ``None`` (default): the dask config key
        ``diffsweep.worker-timeout``, else 60 s, for a running scheduler or a local
        cluster; no limit with ``cluster``, whose jobs wait in the batch queue.
    processes
        Local cluster only: ``True`` worker processes, ``False`` worker threads in this
        process (no process start-up, one copy of the imports and kernels), ``None``
        (default) threads for a small sweep, processes otherwise (see :meth:`for_sweep`).
    dashboard
        Local cluster only: serve the dashboard (on 127.0.0.1) or not; ``None``
        (default) for a sweep estimated to run long enough to look at it (see
        :meth:`for_sweep`).

    Raises
    ------
    ClusterConfigError
        If the arguments contradict each other or a TLS file does not exist; the
        message names the arguments as ```name``` (see
        :meth:`~pipeline.errors.ClusterConfigError.naming`).

    Examples
    --------
    >>> ClusterSpec(workers=2).kind
    'local'
    >>> ClusterSpec(scheduler="tcp://127.0.0.1:8786", workers=2)
    Traceback (most recent call last):
    ...
    pipeline.errors.ClusterConfigError: `workers` sizes the local cluster only; with `cluster` use `jobs`, with a running scheduler start more `dask worker` processes
    """

    scheduler: str | None = None
    scheduler_file: str | None = None
    workers: int | None = None
    cluster: str | None = None
    jobs: int | None = None
    maximum_jobs: int | None = None
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    connect_timeout: float = field(default_factory=_connect_timeout_default)
    worker_timeout: float | None = None
    processes: bool | None = None
    dashboard: bool | None = None

    def __post_init__(self) -> None:
        chosen = [
            name for name in ("scheduler", "scheduler_file", "cluster") if getattr(self, name)
        ]
        if len(chosen) > 1:
            raise ClusterConfigError(
                f"{' and '.join(f'`{name}`' for name in chosen)} are mutually exclusive; "
                "choose one",
                arguments=tuple(chosen),
            )
        if self.cluster:
            check_kind(self.cluster)
        for name in ("workers", "jobs", "maximum_jobs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ClusterConfigError(
                    f"`{name}` {value}: expected at least 1", arguments=(name,)
                )
        for name in ("connect_timeout", "worker_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ClusterConfigError(
                    f"`{name}` {value:g}: expected a positive number of seconds",
                    arguments=(name,),
                )
        if self.processes is not None and self.kind != "local":
            raise ClusterConfigError(
                "`processes` chooses how the local cluster runs its workers; a running "
                "scheduler or a batch cluster has its own",
                arguments=("processes",),
            )
        if self.dashboard is not None and self.kind != "local":
            raise ClusterConfigError(
                "`dashboard` chooses the local cluster's dashboard; a running scheduler or "
                "a batch cluster serves its own",
                arguments=("dashboard",),
            )
        if self.workers is not None and self.kind != "local":
            raise ClusterConfigError(
                "`workers` sizes the local cluster only; with `cluster` use `jobs`, "
                "with a running scheduler start more `dask worker` processes",
                arguments=("workers", "cluster", "jobs"),
            )
        for name in ("jobs", "maximum_jobs"):
            if getattr(self, name) is not None and not self.cluster:
                raise ClusterConfigError(f"`{name}` needs `cluster`", arguments=(name, "cluster"))
        if (
            self.jobs is not None
            and self.maximum_jobs is not None
            and self.jobs > self.maximum_jobs
        ):
            raise ClusterConfigError(
                f"`jobs` {self.jobs} is larger than `maximum_jobs` {self.maximum_jobs}",
                arguments=("jobs", "maximum_jobs"),
            )
        self._check_tls()

    def _check_tls(self) -> None:
        tls = {"tls_ca_file": self.tls_ca_file, "tls_cert": self.tls_cert, "tls_key": self.tls_key}
        given = [name for name, path in tls.items() if path is not None]
        if not given:
            return
        if self.cluster:
            raise ClusterConfigError(
                "`cluster` makes its own TLS credentials for each run; to use your own, set "
                "distributed.comm.tls.* (scheduler, worker and client) in the dask config",
                arguments=("cluster",),
            )
        missing = [name for name in ("tls_ca_file", "tls_cert") if tls[name] is None]
        if missing:
            raise ClusterConfigError(
                f"TLS needs both `tls_ca_file` and `tls_cert` (missing "
                f"{' and '.join(f'`{name}`' for name in missing)}); the scheduler requires "
                "a client certificate signed by its CA (and `tls_key` unless the "
                "certificate file holds the key)",
                arguments=("tls_ca_file", "tls_cert", "tls_key"),
            )
        for name in given:
            if not os.path.isfile(tls[name] or ""):
                raise ClusterConfigError(f"`{name}` {tls[name]}: no such file", arguments=(name,))

    @property
    def local_workers(self) -> int:
        """Workers a local cluster starts: ``workers``, else one per core (dask's count)."""
        from dask.system import CPU_COUNT

        return self.workers or CPU_COUNT or 1

    @property
    def kind(self) -> str:
        """``"scheduler"``, ``"scheduler_file"``, ``"jobqueue"``, ``"config"`` or ``"local"``."""
        if self.scheduler:
            return "scheduler"
        if self.scheduler_file:
            return "scheduler_file"
        if self.cluster:
            return "jobqueue"
        import dask.config

        return "config" if dask.config.get("scheduler-address", None) else "local"

    def for_sweep(self, core_seconds: float) -> ClusterSpec:
        """This spec with ``processes`` and ``dashboard`` decided for a sweep of ``core_seconds``.

        Only a local cluster's choices that were not given change: threads up to
        :data:`THREADS_UP_TO_CORE_SECONDS`, processes above; a dashboard when the
        estimated wall time on its workers is at least :data:`DASHBOARD_FROM_SECONDS`.

        Examples
        --------
        >>> ClusterSpec().for_sweep(2.0).processes, ClusterSpec().for_sweep(3600.0).processes
        (False, True)
        >>> ClusterSpec(processes=True).for_sweep(2.0).processes
        True
        >>> ClusterSpec(workers=2).for_sweep(2.0).dashboard, ClusterSpec(workers=2).for_sweep(20.0).dashboard
        (False, True)
        """
        if self.kind != "local":
            return self
        processes = self.processes if self.processes is not None else core_seconds > THREADS_UP_TO_CORE_SECONDS
        wall_seconds = core_seconds / self.local_workers
        dashboard = self.dashboard if self.dashboard is not None else wall_seconds >= DASHBOARD_FROM_SECONDS
        return replace(self, processes=processes, dashboard=dashboard)

    @property
    def worker_wait(self) -> float | None:
        """Seconds a scheduler may have no worker (``None``: no limit); see ``worker_timeout``."""
        if self.worker_timeout is not None:
            return self.worker_timeout
        if self.cluster:
            return None
        return _configured_seconds(WORKER_TIMEOUT_CONFIG_KEY, "60s")

    def security(self) -> distributed.Security | None:
        """The client's TLS credentials: from the ``tls_*`` files, else the dask config.

        Returns
        -------
        distributed.Security or None
            From the files when given; otherwise from the dask config
            (``distributed.comm.tls.ca-file`` and ``distributed.comm.tls.client.*``) when
            it sets them; otherwise ``None`` (plain ``tcp://``).
        """
        from distributed import Security

        if self.tls_ca_file is not None:
            return Security(
                tls_ca_file=self.tls_ca_file,
                tls_client_cert=self.tls_cert,
                tls_client_key=self.tls_key,
                require_encryption=True,
            )
        import dask.config

        if dask.config.get("distributed.comm.tls.ca-file", None) and dask.config.get(
            "distributed.comm.tls.client.cert", None
        ):
            return Security()  # reads distributed.comm.tls.* itself
        return None
