"""Command-line options that choose the dask cluster and the store's storage options.

``@cluster_options`` adds them to a command; inside it, ``client_from_options(**kwargs)``
opens the client they describe and ``storage_options_from(kwargs)`` gives the fsspec
options for the store::

    @click.command()
    @cluster_options
    def run(sweep_file, store, **options):
        cluster = pop_cluster_options(options)
        with client_from_options(**cluster) as client:
            check_store_writable(client, store, storage_options_from(cluster))
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pipeline.cluster import JOBQUEUE_KINDS

if TYPE_CHECKING:
    import distributed

__all__ = [
    "CLUSTER_OPTION_NAMES",
    "client_from_options",
    "cluster_kind_option",
    "cluster_options",
    "pop_cluster_options",
    "storage_options_from",
    "storage_options_option",
]

F = TypeVar("F", bound=Callable[..., Any])

#: dask config key holding default fsspec storage options for stores (a mapping)
STORAGE_OPTIONS_CONFIG_KEY = "diffsweep.storage-options"

#: dask config key: seconds (or "10s") to wait for a scheduler before giving up
CONNECT_TIMEOUT_CONFIG_KEY = "diffsweep.connect-timeout"

#: keyword names the options below give the command
CLUSTER_OPTION_NAMES = (
    "scheduler",
    "scheduler_file",
    "workers",
    "cluster",
    "jobs",
    "maximum_jobs",
    "tls_ca_file",
    "tls_cert",
    "tls_key",
    "storage_option",
)

_pem_file = click.Path(exists=True, dir_okay=False, readable=True, path_type=str)

cluster_kind_option = click.option(
    "--cluster",
    type=click.Choice(list(JOBQUEUE_KINDS)),
    default=None,
    help=(
        "Start workers through a batch system with dask-jobqueue, configured by your "
        "jobqueue.yaml / dask config (jobqueue.<kind>.cores, memory, walltime, queue, ...). "
        "The scheduler runs in this process; see deploy/slurm/."
    ),
)

#: ``--storage-option KEY=VALUE`` (repeatable), also for the commands that only read a store
storage_options_option = click.option(
    "--storage-option",
    "storage_option",
    metavar="KEY=VALUE",
    multiple=True,
    help=(
        "fsspec option for a store URL such as s3://bucket/x.zarr, passed to the workers "
        "too; repeatable; dotted keys nest (client_kwargs.endpoint_url=http://...). "
        f"Defaults come from the dask config key {STORAGE_OPTIONS_CONFIG_KEY}."
    ),
)

_OPTIONS = [
    click.option(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help=(
            "Address of a running dask scheduler, tls://host:port (with --tls-*) or "
            "tcp://host:port. Default: the dask config's scheduler-address, else a local "
            "cluster on 127.0.0.1."
        ),
    ),
    click.option(
        "--scheduler-file",
        metavar="FILE",
        type=click.Path(dir_okay=False, path_type=str),
        default=None,
        help="JSON file written by `dask scheduler --scheduler-file FILE`; connect to it.",
    ),
    click.option(
        "--workers",
        metavar="N",
        type=click.IntRange(min=1),
        default=None,
        help="Worker processes of the local cluster (default: one per core).",
    ),
    cluster_kind_option,
    click.option(
        "--jobs",
        metavar="N",
        type=click.IntRange(min=1),
        default=None,
        help="With --cluster: batch jobs to submit (default 1; minimum with --maximum-jobs).",
    ),
    click.option(
        "--maximum-jobs",
        metavar="N",
        type=click.IntRange(min=1),
        default=None,
        help="With --cluster: scale adaptively up to N jobs while blocks are waiting.",
    ),
    click.option(
        "--tls-ca-file",
        metavar="PEM",
        type=_pem_file,
        default=None,
        help="CA certificate that signed the scheduler's certificate (for tls:// addresses).",
    ),
    click.option(
        "--tls-cert",
        metavar="PEM",
        type=_pem_file,
        default=None,
        help="This client's certificate, signed by the same CA (may include the key).",
    ),
    click.option(
        "--tls-key",
        metavar="PEM",
        type=_pem_file,
        default=None,
        help="This client's private key, if not inside --tls-cert.",
    ),
    storage_options_option,
]


def _check_combinations(options: Mapping[str, Any]) -> None:
    """Refuse options that contradict each other (click.UsageError, exit status 2)."""
    if options.get("scheduler") and options.get("scheduler_file"):
        raise click.UsageError("--scheduler and --scheduler-file are mutually exclusive.")
    remote = (
        "--scheduler"
        if options.get("scheduler")
        else ("--scheduler-file" if options.get("scheduler_file") else None)
    )
    if options.get("cluster") and remote:
        raise click.UsageError(f"--cluster and {remote} are mutually exclusive.")
    if options.get("workers") is not None and (remote or options.get("cluster")):
        raise click.UsageError(
            "--workers sizes the local cluster only; with --cluster use --jobs, with a "
            "running scheduler start more `dask worker` processes."
        )
    for name in ("jobs", "maximum_jobs"):
        if options.get(name) is not None and not options.get("cluster"):
            raise click.UsageError(f"--{name.replace('_', '-')} needs --cluster.")
    jobs, maximum = options.get("jobs"), options.get("maximum_jobs")
    if jobs is not None and maximum is not None and jobs > maximum:
        raise click.UsageError(f"--jobs {jobs} is larger than --maximum-jobs {maximum}.")
    tls = {name: options.get(name) for name in ("tls_ca_file", "tls_cert", "tls_key")}
    if any(tls.values()) and options.get("cluster"):
        raise click.UsageError(
            "--cluster makes its own TLS credentials for each run; to use your own, set "
            "distributed.comm.tls.* (scheduler, worker and client) in the dask config."
        )
    if any(tls.values()) and not (tls["tls_ca_file"] and tls["tls_cert"]):
        raise click.UsageError(
            "TLS needs both --tls-ca-file and --tls-cert (and --tls-key "
            "unless the certificate file holds the key)."
        )
    storage_options_from(options)  # BadParameter on a malformed KEY=VALUE


def cluster_options(f: F) -> F:
    """Add the cluster and storage options to a click command.

    Adds ``--scheduler``, ``--scheduler-file``, ``--workers``, ``--cluster``, ``--jobs``,
    ``--maximum-jobs``, ``--tls-ca-file``, ``--tls-cert``, ``--tls-key`` and
    ``--storage-option``; the command receives them as keyword arguments named in
    :data:`CLUSTER_OPTION_NAMES`.  Contradictory combinations are refused with a usage
    error (exit status 2) before the command body runs.
    """

    @functools.wraps(f)
    def checked(*args: Any, **kwargs: Any) -> Any:
        _check_combinations(kwargs)
        return f(*args, **kwargs)

    for option in reversed(_OPTIONS):
        checked = option(checked)
    return checked  # type: ignore[return-value]


def pop_cluster_options(kwargs: MutableMapping[str, Any]) -> dict[str, Any]:
    """Remove the cluster options from a command's keyword arguments and return them."""
    return {name: kwargs.pop(name) for name in CLUSTER_OPTION_NAMES if name in kwargs}


def _echo_warning(message: str) -> None:
    click.echo(f"Warning: {message}", err=True)


@contextmanager
def client_from_options(
    *,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    workers: int | None = None,
    cluster: str | None = None,
    jobs: int | None = None,
    maximum_jobs: int | None = None,
    tls_ca_file: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    timeout: float | None = None,
    **_other: Any,
) -> Iterator[distributed.Client]:
    """Open the client the command-line options describe (see :func:`pipeline.cluster.open_client`).

    Other keyword arguments (``storage_option``, the command's own options) are ignored,
    so a command may pass all of its keyword arguments.  Warnings (plain ``tcp://`` to
    another machine) go to stderr; errors are :class:`~pipeline.errors.ClusterError`
    (exit status 2 through the command group).  ``timeout`` defaults to the dask config
    key ``diffsweep.connect-timeout`` (``DASK_DIFFSWEEP__CONNECT_TIMEOUT``), else 10 s.
    """
    import dask.config
    from dask.utils import parse_timedelta

    from pipeline.cluster import open_client, security_from_options

    _check_combinations(locals())
    if timeout is None:
        timeout = parse_timedelta(dask.config.get(CONNECT_TIMEOUT_CONFIG_KEY, "10s"), "s")
    security = security_from_options(tls_ca_file, tls_cert, tls_key)
    with open_client(
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        workers=workers,
        security=security,
        cluster=cluster,
        jobs=jobs,
        maximum_jobs=maximum_jobs,
        timeout=timeout,
        warn=_echo_warning,
    ) as client:
        yield client


def _parse_value(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None and text.strip() not in ("null", "~", "None", ""):
        return text
    return value if isinstance(value, str | int | float | bool) or value is None else text


def storage_options_from(options: Mapping[str, Any]) -> dict[str, Any]:
    """fsspec storage options: the dask config's defaults updated by ``--storage-option``.

    ``KEY=VALUE`` values are read as YAML scalars (``true``, ``3``, ``1.5``, else a
    string); a dotted key ``a.b=1`` becomes ``{"a": {"b": 1}}``.

    Raises
    ------
    click.BadParameter
        If an item is not ``KEY=VALUE``.
    """
    import copy

    import dask.config

    result: dict[str, Any] = copy.deepcopy(
        dict(dask.config.get(STORAGE_OPTIONS_CONFIG_KEY, {}) or {})
    )
    for item in options.get("storage_option") or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise click.BadParameter(
                f"expected KEY=VALUE, got {item!r}", param_hint="'--storage-option'"
            )
        target = result
        *parents, leaf = key.split(".")
        for part in parents:
            child = target.get(part)
            if not isinstance(child, dict):
                child = target[part] = {}
            target = child
        target[leaf] = _parse_value(text)
    return result
