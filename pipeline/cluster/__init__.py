"""Choosing and connecting a dask scheduler: a :class:`ClusterSpec`, and :func:`open_client`.

A :class:`ClusterSpec` says which cluster to use; it is built once (from the command
line, or by a library caller), is validated when it is built, and cannot change
afterwards.  :func:`open_client` connects to (or starts) the cluster it describes:

* an address (``tcp://`` or ``tls://``) or a scheduler file written by
  ``dask scheduler --scheduler-file``: connect, in a bounded time;
* a batch system through dask-jobqueue (``slurm``, ``pbs``, ``sge``, ``lsf``,
  ``htcondor``), configured by the user's ``jobqueue.yaml`` / dask config;
* the dask config's ``scheduler-address``, if set;
* otherwise a :class:`distributed.LocalCluster` on 127.0.0.1 sized to the machine.

Every wait is bounded and explained.  Connecting waits at most ``connect_timeout``
seconds, and something that accepts TCP but is not a dask scheduler (a stale
scheduler file whose port was reused, another server) is refused within that time.
A scheduler without workers is waited for at most ``worker_timeout`` seconds, at the
start and during the run.  A connection lost during the run becomes a
:class:`~pipeline.errors.SchedulerLostError`.

The package holds :mod:`~pipeline.cluster.spec` (the spec), :mod:`~pipeline.cluster.connect`
(addresses, scheduler files, the bounded handshake), :mod:`~pipeline.cluster.jobqueue`
(batch systems) and :mod:`~pipeline.cluster.client` (:func:`open_client` and the waits).

A dask scheduler runs whatever pickled code a client sends it, so a scheduler reachable
without authentication is a remote-code-execution hole.  Connecting to a plain ``tcp://``
address that is not on this machine therefore warns and points at TLS
(:func:`insecure_address_warning`).

distributed and dask-jobqueue are imported inside the functions, so importing this module
is cheap.
"""

from __future__ import annotations

from pipeline.cluster.client import dashboard_link, describe, open_client
from pipeline.cluster.connect import insecure_address_warning, read_scheduler_file
from pipeline.cluster.jobqueue import JOBQUEUE_KINDS, job_script, jobqueue_cluster
from pipeline.cluster.spec import (
    CONNECT_TIMEOUT_CONFIG_KEY,
    DASHBOARD_FROM_SECONDS,
    THREADS_UP_TO_CORE_SECONDS,
    WORKER_TIMEOUT_CONFIG_KEY,
    ClusterSpec,
)

__all__ = [
    "CONNECT_TIMEOUT_CONFIG_KEY",
    "DASHBOARD_FROM_SECONDS",
    "THREADS_UP_TO_CORE_SECONDS",
    "JOBQUEUE_KINDS",
    "WORKER_TIMEOUT_CONFIG_KEY",
    "ClusterSpec",
    "dashboard_link",
    "describe",
    "insecure_address_warning",
    "job_script",
    "jobqueue_cluster",
    "open_client",
    "read_scheduler_file",
]
