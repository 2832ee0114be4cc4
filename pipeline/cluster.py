"""Choosing and connecting a dask scheduler, and checking that workers can reach the store.

One entry point, :func:`open_client`, covers every way diffsweep runs:

* an address (``tcp://`` or ``tls://``) or a scheduler file written by
  ``dask scheduler --scheduler-file`` — connect, with a bounded timeout;
* a batch system through dask-jobqueue (``slurm``, ``pbs``, ``sge``, ``lsf``,
  ``htcondor``), configured by the user's ``jobqueue.yaml`` / dask config;
* the dask config's ``scheduler-address``, if set;
* otherwise a :class:`distributed.LocalCluster` on 127.0.0.1 sized to the machine.

A dask scheduler runs whatever pickled code a client sends it, so a scheduler reachable
without authentication is a remote-code-execution hole.  Connecting to a plain ``tcp://``
address that is not on this machine therefore warns and points at TLS
(:func:`security_from_options`).

distributed and dask-jobqueue are imported inside the functions, so importing this module
is cheap.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from pipeline.errors import ClusterError, StoreError

if TYPE_CHECKING:
    import distributed

__all__ = [
    "JOBQUEUE_KINDS",
    "absolute_store_path",
    "check_store_writable",
    "describe",
    "insecure_address_warning",
    "job_script",
    "jobqueue_cluster",
    "open_client",
    "read_scheduler_file",
    "security_from_options",
]

logger = logging.getLogger(__name__)

#: ``--cluster`` choice -> dask-jobqueue cluster class name
JOBQUEUE_KINDS: dict[str, str] = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
}

#: Placeholder for the scheduler address in a job script printed before anything runs.
SCHEDULER_PLACEHOLDER = "tcp://<scheduler-address>:8786"

_PROBE_PREFIX = ".diffsweep-write-probe-"

Warn = Callable[[str], None]


# --------------------------------------------------------------------------- security


def security_from_options(
    tls_ca_file: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> distributed.Security | None:
    """Build the client's TLS credentials from command-line options or the dask config.

    Parameters
    ----------
    tls_ca_file
        PEM file of the certificate authority that signed the scheduler's certificate.
    tls_cert
        PEM file of this client's certificate (may also hold the key).
    tls_key
        PEM file of this client's private key, if not inside ``tls_cert``.

    Returns
    -------
    distributed.Security or None
        Credentials from the options when any is given; otherwise credentials from the
        dask config (``distributed.comm.tls.ca-file`` and ``distributed.comm.tls.client.*``)
        when it sets them; otherwise ``None`` (plain ``tcp://``).

    Raises
    ------
    ClusterError
        If only some of the options are given, or a file does not exist.
    """
    from distributed import Security

    given = {"--tls-ca-file": tls_ca_file, "--tls-cert": tls_cert, "--tls-key": tls_key}
    if any(value is not None for value in given.values()):
        if tls_ca_file is None or tls_cert is None:
            missing = " and ".join(
                name for name in ("--tls-ca-file", "--tls-cert") if given[name] is None
            )
            raise ClusterError(
                f"TLS needs both --tls-ca-file and --tls-cert (missing {missing}); "
                "the scheduler requires a client certificate signed by its CA"
            )
        for name, path in given.items():
            if path is not None and not os.path.isfile(path):
                raise ClusterError(f"{name} {path}: no such file")
        return Security(
            tls_ca_file=tls_ca_file,
            tls_client_cert=tls_cert,
            tls_client_key=tls_key,
            require_encryption=True,
        )

    import dask.config

    if dask.config.get("distributed.comm.tls.ca-file", None) and dask.config.get(
        "distributed.comm.tls.client.cert", None
    ):
        return Security()  # reads distributed.comm.tls.* itself
    return None


# --------------------------------------------------------------------------- addresses


def _address_host(address: str) -> tuple[str, str]:
    """``(protocol, host)`` of a dask address; the protocol defaults to ``tcp``."""
    from distributed.comm import parse_address, parse_host_port

    protocol, location = parse_address(address)
    try:
        host, _port = parse_host_port(location)
    except ValueError:
        host = location
    return protocol, host


def _is_loopback(host: str) -> bool:
    if host in {"localhost", "localhost.localdomain", "ip6-localhost"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def insecure_address_warning(address: str) -> str | None:
    """The warning to show before connecting to ``address``, or ``None`` if it is fine.

    Plain ``tcp://`` is unauthenticated and unencrypted: anyone who can reach the
    scheduler can run code on every worker.  That is acceptable on 127.0.0.1 only.
    """
    try:
        protocol, host = _address_host(address)
    except ValueError:
        return None  # _connect reports malformed addresses
    if protocol != "tcp" or _is_loopback(host):
        return None
    return (
        f"connecting to {address} over plain tcp:// — the scheduler is unauthenticated and "
        "unencrypted, so anyone who can reach it can run code on its workers; use a tls:// "
        "scheduler with --tls-ca-file/--tls-cert/--tls-key (see deploy/README.md)"
    )


def read_scheduler_file(path: str | os.PathLike[str]) -> str:
    """The scheduler address stored in a ``dask scheduler --scheduler-file`` JSON file.

    Raises
    ------
    ClusterError
        If the file is missing, unreadable, or holds no address.
    """
    try:
        with open(path, encoding="utf-8") as file:
            content = json.load(file)
    except FileNotFoundError:
        raise ClusterError(f"scheduler file {os.fspath(path)}: no such file") from None
    except (OSError, ValueError) as error:
        raise ClusterError(f"scheduler file {os.fspath(path)}: cannot read it: {error}") from None
    address = content.get("address") if isinstance(content, dict) else None
    if not isinstance(address, str) or not address:
        raise ClusterError(
            f"scheduler file {os.fspath(path)}: no 'address' in it "
            "(expected the JSON written by `dask scheduler --scheduler-file`)"
        )
    return address


# --------------------------------------------------------------------------- clients


def _connect(
    address: str,
    *,
    security: distributed.Security | None,
    timeout: float,
    warn: Warn,
) -> distributed.Client:
    """A client connected to ``address``, or :class:`ClusterError` within ``timeout``."""
    from distributed import Client

    try:
        protocol, _host = _address_host(address)
    except ValueError as error:
        raise ClusterError(f"scheduler address {address!r} is not valid: {error}") from None
    if protocol == "tls" and security is None:
        raise ClusterError(
            f"scheduler {address} uses TLS: give --tls-ca-file and --tls-cert (and --tls-key), "
            "or set distributed.comm.tls.* in the dask config"
        )
    message = insecure_address_warning(address)
    if message:
        warn(message)
    try:
        return Client(address, security=security, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise ClusterError(
            f"cannot connect to the dask scheduler at {address} within {timeout:g} s "
            f"({_first_line(error)})"
        ) from None
    except Exception as error:  # e.g. MemoryError decoding a non-dask service's reply
        raise ClusterError(
            f"{address} did not answer as a dask scheduler "
            f"({type(error).__name__}: {_first_line(error)})"
        ) from None


def _default_warn(message: str) -> None:
    logger.warning(message)


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
    ClusterError
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
        raise ClusterError(f"--cluster {kind}: {_first_line(error)}") from None


def _jobqueue_class(kind: str):
    if kind not in JOBQUEUE_KINDS:
        raise ClusterError(
            f"unknown cluster kind {kind!r}; expected one of {', '.join(JOBQUEUE_KINDS)}"
        )
    try:
        import dask_jobqueue
    except ImportError:
        raise ClusterError(
            f"--cluster {kind} needs dask-jobqueue: pip install 'diffsweep[cluster]'"
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
    ClusterError
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
        raise ClusterError(f"--cluster {cluster_kind}: {_first_line(error)}") from None
    return job.job_script()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def open_client(
    *,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    workers: int | None = None,
    security: distributed.Security | None = None,
    cluster: str | None = None,
    jobs: int | None = None,
    maximum_jobs: int | None = None,
    timeout: float = 10.0,
    processes: bool = True,
    warn: Warn | None = None,
) -> Iterator[distributed.Client]:
    """Connect to (or start) a dask cluster; close whatever was started on exit.

    Parameters
    ----------
    scheduler
        Address of a running scheduler, ``tcp://host:port`` or ``tls://host:port``.
    scheduler_file
        JSON file written by ``dask scheduler --scheduler-file``.
    workers
        Worker processes of the local cluster (default: one per core).  Only used when
        no other cluster is chosen.
    security
        TLS credentials (:func:`security_from_options`); required for ``tls://``.
    cluster
        A dask-jobqueue kind (:data:`JOBQUEUE_KINDS`): start a scheduler here and submit
        worker jobs to the batch system.
    jobs
        With ``cluster``: submit this many jobs (default 1 unless ``maximum_jobs``).
    maximum_jobs
        With ``cluster``: scale adaptively between ``jobs or 0`` and this many jobs.
    timeout
        Seconds to wait for a scheduler to answer before :class:`ClusterError`.
    processes
        Local cluster only: worker processes (default) or threads in this process.
    warn
        Called with a warning message (insecure address); defaults to logging.

    Yields
    ------
    distributed.Client
        A client that is not set as the global default; use it explicitly.

    Raises
    ------
    ClusterError
        If the scheduler cannot be reached within ``timeout``, the options contradict
        each other, or the cluster cannot be configured.
    """
    warn = warn or _default_warn
    chosen = [
        name
        for name, value in (
            ("scheduler", scheduler),
            ("scheduler_file", scheduler_file),
            ("cluster", cluster),
        )
        if value
    ]
    if len(chosen) > 1:
        raise ClusterError(f"choose one of {' / '.join(chosen)}, not several")

    with ExitStack() as stack:
        if scheduler_file:
            address = read_scheduler_file(scheduler_file)
            client = _connect(address, security=security, timeout=timeout, warn=warn)
        elif scheduler:
            client = _connect(scheduler, security=security, timeout=timeout, warn=warn)
        elif cluster:
            client = _jobqueue_client(
                stack,
                cluster,
                security=security,
                jobs=jobs,
                maximum_jobs=maximum_jobs,
                timeout=timeout,
            )
        else:
            import dask.config

            configured = dask.config.get("scheduler-address", None)
            if configured:
                client = _connect(configured, security=security, timeout=timeout, warn=warn)
            else:
                client = _local_client(stack, workers=workers, processes=processes)
        stack.callback(client.close)
        yield client


def _jobqueue_client(
    stack: ExitStack,
    kind: str,
    *,
    security: distributed.Security | None,
    jobs: int | None,
    maximum_jobs: int | None,
    timeout: float,
) -> distributed.Client:
    from distributed import Client

    job_cluster = jobqueue_cluster(kind, security=security if security is not None else True)
    stack.callback(job_cluster.close)
    if maximum_jobs is not None:
        job_cluster.adapt(minimum_jobs=jobs or 0, maximum_jobs=maximum_jobs)
    else:
        job_cluster.scale(jobs=jobs or 1)
    logger.info("submitting %s job(s) with:\n%s", jobs or 1, job_cluster.job_script())
    return Client(job_cluster, security=job_cluster.security, timeout=timeout, set_as_default=False)


def _local_client(stack: ExitStack, *, workers: int | None, processes: bool) -> distributed.Client:
    import warnings

    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster

    n_workers = workers or CPU_COUNT or 1
    with warnings.catch_warnings(record=True) as caught:
        # "Port 8787 is already in use ... on port N instead": falling back is what we want.
        warnings.filterwarnings("always", message="Port .* is already in use", category=UserWarning)
        local = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=processes,
            # worker processes talk tcp on loopback; threads use inproc:// (no socket)
            **({"host": "127.0.0.1"} if processes else {}),
            dashboard_address="127.0.0.1:8787",
        )
    for item in caught:
        if "is already in use" in str(item.message):
            logger.info("dashboard: %s", str(item.message).replace("\n", " "))
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    stack.callback(local.close)
    return Client(local, set_as_default=False)


def describe(client: distributed.Client) -> str:
    """One line naming the scheduler, its workers and threads, and the dashboard."""
    nthreads = client.nthreads()
    address = client.scheduler.address if client.scheduler is not None else "?"
    n_workers = len(nthreads)
    n_threads = sum(nthreads.values())
    text = (
        f"dask scheduler {address}: {n_workers} worker{'s' if n_workers != 1 else ''}, "
        f"{n_threads} thread{'s' if n_threads != 1 else ''}"
    )
    link = _dashboard_link(client)
    if link:
        text += f", dashboard {link}"
    return text


def _dashboard_link(client: distributed.Client) -> str | None:
    import importlib.util

    cluster = getattr(client, "cluster", None)
    if cluster is not None and importlib.util.find_spec("bokeh") is None:
        return None  # a local scheduler without bokeh serves no dashboard
    try:
        info = client.scheduler_info(n_workers=0)
    except Exception:
        return None
    if "dashboard" not in info.get("services", {}):
        return None
    try:
        return client.dashboard_link
    except Exception:
        return None


# --------------------------------------------------------------------------- store


def absolute_store_path(store: str) -> str:
    """``store`` with a relative local path made absolute (``~`` expanded); URLs unchanged.

    Workers may run in another working directory or on another machine, so they must be
    given absolute paths.
    """
    if "://" in store or store.startswith("memory:"):
        return store
    return os.path.abspath(os.path.expanduser(store))


def _probe_store(
    url: str, storage_options: Mapping[str, Any], token: str
) -> tuple[str | None, str, str | None]:
    """Worker side: create a probe object in (or beside) the store.

    Returns ``(probe path or None, worker address, error or None)``; failures are
    returned, not raised, so the worker does not log a traceback for an expected answer.
    """
    import fsspec
    from distributed import get_worker

    worker = get_worker().address
    try:
        fs, root = fsspec.core.url_to_fs(url, **storage_options)
        root = root.rstrip("/")
        if fs.isdir(root):
            location = root
        else:
            location = fs._parent(root) or root
            if _is_local(fs):  # object stores have no directories to make
                fs.makedirs(location, exist_ok=True)
        probe = f"{location}/{_PROBE_PREFIX}{token}"
        with fs.open(probe, "wb") as file:
            file.write(token.encode())
    except Exception as error:
        return None, worker, f"{type(error).__name__}: {_first_line(error)}"
    return probe, worker, None


def _is_local(fs: Any) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def check_store_writable(
    client: distributed.Client,
    store: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    shared: bool = True,
    timeout: float | None = None,
) -> None:
    """Check, from a worker, that the store location can be written; fail early if not.

    One task on a worker creates a probe object in the store (or beside it, if the
    store does not exist yet), and it is removed again.  With ``shared`` (default) this
    process must also see the worker's probe: the store is shared between the client,
    which writes its template, and the workers, which write their blocks.  That catches
    the classic mistake of a local path that each machine resolves to its own disk.

    Parameters
    ----------
    client
        Connected client; the probe runs on one of its workers.
    store
        Absolute path or fsspec URL (see :func:`absolute_store_path`).
    storage_options
        fsspec options for the URL (credentials, endpoint).
    shared
        Also require that this process sees what the worker wrote.
    timeout
        Seconds to wait for the probe task (``None``: wait for a worker to join).

    Raises
    ------
    StoreError
        If the worker cannot write there, or (``shared``) writes somewhere this process
        does not see.
    """
    options = dict(storage_options or {})
    token = uuid.uuid4().hex
    future = client.submit(_probe_store, store, options, token, pure=False, retries=0)
    try:
        probe, worker, failure = future.result(timeout=timeout)
    except TimeoutError:
        raise StoreError(
            f"cannot check the store {store}: no worker ran the write probe within {timeout:g} s"
        ) from None
    except Exception as error:  # e.g. the probe could not even be unpickled there
        probe, failure = None, f"{type(error).__name__}: {_first_line(error)}"
    if probe is None:
        raise StoreError(f"workers cannot write to the store {store}: {failure}")

    seen = None
    if shared:
        try:
            seen = _read_probe(store, options, probe)
        except Exception as error:
            logger.debug("cannot read the write probe %s here: %s", probe, error)
    # Remove it from the worker that wrote it: only that one surely sees it.
    removal = client.submit(
        _remove_probe, store, options, probe, pure=False, workers=[worker], allow_other_workers=True
    )
    try:
        removal.result(timeout=timeout)
    except Exception as error:
        logger.warning("could not remove the write probe %s: %s", probe, _first_line(error))
    if shared and seen != token.encode():
        if store.startswith("memory:"):
            raise StoreError(
                f"store {store}: memory:// lives inside one process, so worker processes "
                "cannot share it; use a local path, or a cluster of threads (processes=False)"
            )
        raise StoreError(
            f"the workers and this machine see different storage at {store}: a worker "
            "wrote a file there that this process cannot see; use a path on a filesystem "
            "shared by every machine (the same path everywhere) or an object-store URL"
        )


def _read_probe(url: str, storage_options: Mapping[str, Any], probe: str) -> bytes:
    import fsspec

    fs, _root = fsspec.core.url_to_fs(url, **storage_options)
    with fs.open(probe, "rb") as file:
        return file.read()


def _remove_probe(url: str, storage_options: Mapping[str, Any], probe: str) -> None:
    import fsspec

    fs, _root = fsspec.core.url_to_fs(url, **storage_options)
    if fs.exists(probe):
        fs.rm(probe)
