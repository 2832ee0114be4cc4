"""Batch systems through dask-jobqueue: the cluster and the job script it submits.

dask-jobqueue is imported inside the functions (it is an optional dependency,
``pip install 'diffsweep[cluster]'``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pipeline.errors import ClusterConfigError, first_line

if TYPE_CHECKING:
    import distributed

__all__ = [
    "JOBQUEUE_KINDS",
    "SCHEDULER_PLACEHOLDER",
    "check_kind",
    "job_script",
    "jobqueue_cluster",
]

#: ``cluster`` kind -> dask-jobqueue cluster class name (``slurm`` -> ``SLURMCluster``)
JOBQUEUE_KINDS: dict[str, str] = {
    name.removesuffix("Cluster").lower(): name
    for name in ("SLURMCluster", "PBSCluster", "SGECluster", "LSFCluster", "HTCondorCluster")
}

#: Placeholder for the scheduler address in a job script printed before anything runs.
SCHEDULER_PLACEHOLDER = "tcp://<scheduler-address>:8786"


def check_kind(kind: str) -> None:
    """Refuse a ``cluster`` kind that is not in :data:`JOBQUEUE_KINDS`.

    Raises
    ------
    ClusterConfigError
        Naming the argument ``cluster`` and the kinds there are.
    """
    if kind not in JOBQUEUE_KINDS:
        raise ClusterConfigError(
            f"`cluster` {kind!r} is not a batch system diffsweep knows; "
            f"choose one of {', '.join(JOBQUEUE_KINDS)}",
            arguments=("cluster",),
        )


def _jobqueue_defaults(kind: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Secure defaults for a jobqueue cluster, under the user's config and ``overrides``.

    * the dashboard listens on 127.0.0.1 only (reach it with ``ssh -L``);
    * credentials generated for this run are written to ``~/.diffsweep/jobqueue`` (0700)
      unless ``jobqueue.<kind>.shared-temp-directory`` names another shared directory.
    """
    import dask.config

    options = dict(overrides)
    if "scheduler_options" not in options:
        configured = dask.config.get(f"jobqueue.{kind}.scheduler-options", None) or {}
        scheduler_options = dict(configured)
        scheduler_options.setdefault("dashboard_address", "127.0.0.1:8787")
        options["scheduler_options"] = scheduler_options
    if "shared_temp_directory" not in options and not dask.config.get(
        f"jobqueue.{kind}.shared-temp-directory", None
    ):
        directory = os.path.expanduser(os.path.join("~", ".diffsweep", "jobqueue"))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        options["shared_temp_directory"] = directory
    return options


def jobqueue_cluster(
    kind: str, *, security: distributed.Security | bool | None = True, **overrides: Any
) -> Any:
    """A dask-jobqueue cluster of ``kind`` configured from the dask config plus ``overrides``.

    The scheduler starts in this process; no job is submitted until it is scaled.
    Scheduler and workers talk TLS: with ``security=True`` (default) dask-jobqueue makes
    a throw-away CA and certificate for this run (files readable only by you in the shared
    temporary directory); pass a :class:`distributed.Security` to use your own, or
    ``None`` for plain tcp (not recommended: anyone on the cluster network could run code
    as you).

    Raises
    ------
    ClusterConfigError
        If ``kind`` is unknown, dask-jobqueue is not installed, or the configuration is
        incomplete (e.g. no ``cores``/``memory``).
    """
    cls = _jobqueue_class(kind)
    options = _jobqueue_defaults(kind, overrides)
    if security is not None and security is not False:
        options.setdefault("security", security)
    try:
        return cls(**options)
    except (TypeError, ValueError) as error:
        raise ClusterConfigError(
            f"`cluster` {kind}: {first_line(error)}", arguments=("cluster",)
        ) from None


def _jobqueue_class(kind: str) -> Any:
    check_kind(kind)
    try:
        import dask_jobqueue
    except ImportError:
        raise ClusterConfigError(
            f"`cluster` {kind} needs dask-jobqueue: pip install 'diffsweep[cluster]'",
            arguments=("cluster",),
        ) from None
    _fill_jobqueue_defaults(dask_jobqueue)
    return getattr(dask_jobqueue, JOBQUEUE_KINDS[kind])


def _fill_jobqueue_defaults(dask_jobqueue: Any) -> None:
    """Put back dask-jobqueue's defaults under whatever the user configured.

    dask-jobqueue adds them once, at import; a ``dask.config.set`` block that created
    ``jobqueue.*`` keys removes the whole section when it exits.
    """
    import dask.config
    import yaml

    path = os.path.join(os.path.dirname(dask_jobqueue.__file__), "jobqueue.yaml")
    with open(path, encoding="utf-8") as file:
        defaults = yaml.safe_load(file)
    dask.config.update(dask.config.config, defaults, priority="old")


def job_script(cluster_kind: str, *, tls: bool = True, **overrides: Any) -> str:
    """The batch script ``diffsweep run --cluster KIND`` would submit for each job.

    Built from the user's ``jobqueue.yaml`` / dask config (``jobqueue.<kind>.*``) plus
    ``overrides`` (any keyword the dask-jobqueue job class accepts, e.g. ``cores``,
    ``memory``, ``walltime``, ``queue``, ``account``), without starting a scheduler or
    touching the batch system.  The scheduler address, and with ``tls`` the credential
    files generated at run time, appear as placeholders.

    Raises
    ------
    ClusterConfigError
        As :func:`jobqueue_cluster`.
    """
    cls = _jobqueue_class(cluster_kind)
    options = dict(overrides)
    address = SCHEDULER_PLACEHOLDER
    if tls and "security" not in options:
        from distributed import Security

        generated = "<shared-temp-directory>/<generated-at-run-time>"
        options["security"] = Security(
            tls_ca_file=f"{generated}-ca.pem",
            tls_worker_cert=f"{generated}-worker.pem",
            tls_worker_key=f"{generated}-worker-key.pem",
            require_encryption=True,
        )
        options.setdefault("protocol", "tls://")
        address = address.replace("tcp://", "tls://")
    try:
        job = cls.job_cls(address, name="diffsweep-worker", **options)
    except (TypeError, ValueError) as error:
        raise ClusterConfigError(
            f"`cluster` {cluster_kind}: {first_line(error)}", arguments=("cluster",)
        ) from None
    script: str = job.job_script()
    return script
