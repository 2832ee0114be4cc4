"""Command-line options that choose the dask cluster and the store's storage options.

``@cluster_options`` adds them to a command and hands the command two keyword
arguments instead of one per option: ``cluster``, a validated
:class:`~pipeline.cluster.ClusterSpec`, and ``storage_options``, the fsspec options for
the store::

    @click.command()
    @cluster_options
    def run(sweep_file, store, cluster: ClusterSpec, storage_options: dict):
        with open_client(cluster, warn=echo_warning) as client:
            check_store_writable(client, store, storage_options)

Each option is named after the :class:`~pipeline.cluster.ClusterSpec` field it fills
(``--scheduler-file`` fills ``scheduler_file``); the spec checks the values, once, and
its errors name the options as flags here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from pipeline.cli.main import flag_name
from pipeline.cluster import (
    CONNECT_TIMEOUT_CONFIG_KEY,
    JOBQUEUE_KINDS,
    WORKER_TIMEOUT_CONFIG_KEY,
    ClusterSpec,
)
from pipeline.errors import ClusterConfigError

__all__ = [
    "STORAGE_OPTIONS_CONFIG_KEY",
    "cluster_kind_option",
    "cluster_options",
    "echo_warning",
    "parse_storage_options",
    "storage_options_option",
]

F = TypeVar("F", bound=Callable[..., Any])

#: dask config key holding default fsspec storage options for stores (a mapping)
STORAGE_OPTIONS_CONFIG_KEY = "diffsweep.storage-options"

_SPEC_FIELDS = frozenset(field.name for field in dataclasses.fields(ClusterSpec))


def _seconds(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    """``30``, ``30s``, ``2min`` -> seconds (dask's timedelta syntax)."""
    from dask.utils import parse_timedelta

    if value is None:
        return None
    try:
        return float(parse_timedelta(value, "s"))
    except (ValueError, KeyError, TypeError):
        raise click.BadParameter(
            f"expected seconds such as 30, 30s or 2m. Got {value!r} instead."
        ) from None


cluster_kind_option = click.option(
    "--cluster",
    metavar=f"[{'|'.join(JOBQUEUE_KINDS)}]",
    default=None,
    help=(
        "Start workers through a batch system with dask-jobqueue, configured by your "
        "jobqueue.yaml / dask config (jobqueue.<kind>.cores, memory, walltime, queue, ...). "
        "The scheduler runs in this process; see deploy/slurm/."
    ),
)

_PATH = click.Path(dir_okay=False, path_type=str)

#: the options, in the order --help lists them; each is named after a ClusterSpec field
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
        type=_PATH,
        default=None,
        help="JSON file written by `dask scheduler --scheduler-file FILE`; connect to it.",
    ),
    click.option(
        "--workers",
        metavar="N",
        type=int,
        default=None,
        help="Worker processes of the local cluster (default: one per core).",
    ),
    click.option(
        "--processes/--threads",
        default=None,
        help=(
            "Local cluster only: workers as processes (isolated, stopped at once by Ctrl-C), "
            "or as threads in this process (no process start-up). Default: threads for "
            "a sweep estimated at up to a minute of one core, processes above."
        ),
    ),
    click.option(
        "--dashboard/--no-dashboard",
        default=None,
        help=(
            "Local cluster only: serve dask's dashboard on 127.0.0.1 (its link is printed). "
            "Default: for a sweep estimated to run 10 s or more; a shorter run ends "
            "before its dashboard is looked at."
        ),
    ),
    cluster_kind_option,
    click.option(
        "--jobs",
        metavar="N",
        type=int,
        default=None,
        help="With --cluster: batch jobs to submit (default 1; minimum with --maximum-jobs).",
    ),
    click.option(
        "--maximum-jobs",
        metavar="N",
        type=int,
        default=None,
        help="With --cluster: scale adaptively up to N jobs while blocks are waiting.",
    ),
    click.option(
        "--tls-ca-file",
        metavar="PEM",
        type=_PATH,
        default=None,
        help="CA certificate that signed the scheduler's certificate (for tls:// addresses).",
    ),
    click.option(
        "--tls-cert",
        metavar="PEM",
        type=_PATH,
        default=None,
        help="This client's certificate, signed by the same CA (may include the key).",
    ),
    click.option(
        "--tls-key",
        metavar="PEM",
        type=_PATH,
        default=None,
        help="This client's private key, if not inside --tls-cert.",
    ),
    click.option(
        "--connect-timeout",
        metavar="SECONDS",
        default=None,
        callback=_seconds,
        help=(
            "Give up if the scheduler does not answer as a dask scheduler within this time "
            f"(default 10 s, or the dask config key {CONNECT_TIMEOUT_CONFIG_KEY})."
        ),
    ),
    click.option(
        "--worker-timeout",
        metavar="SECONDS",
        default=None,
        callback=_seconds,
        help=(
            "Give up if the scheduler has no worker for this long, at the start or during "
            f"the run (default 60 s, or the dask config key {WORKER_TIMEOUT_CONFIG_KEY}; "
            "with --cluster no limit, as jobs wait in the batch queue)."
        ),
    ),
]


def parse_storage_options(items: Sequence[str]) -> dict[str, Any]:
    """fsspec storage options: the dask config's defaults updated by ``KEY=VALUE`` items.

    Values are read as YAML scalars (``true``, ``3``, ``1.5``, else a string); a dotted
    key ``a.b=1`` becomes ``{"a": {"b": 1}}``.

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
    for item in items:
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


def _parse_value(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None and text.strip() not in ("null", "~", "None", ""):
        return text
    return value if isinstance(value, str | int | float | bool) or value is None else text


def _storage_options(
    _ctx: click.Context, _param: click.Parameter, value: Sequence[str]
) -> dict[str, Any]:
    return parse_storage_options(value)


#: ``--storage-option KEY=VALUE`` (repeatable): gives the command ``storage_options``, a
#: dict; also for the commands that only read a store
storage_options_option = click.option(
    "--storage-option",
    "storage_options",
    metavar="KEY=VALUE",
    multiple=True,
    callback=_storage_options,
    help=(
        "fsspec option for a store URL such as s3://bucket/x.zarr, passed to the workers "
        "too; repeatable; dotted keys nest (client_kwargs.endpoint_url=http://...). "
        f"Defaults come from the dask config key {STORAGE_OPTIONS_CONFIG_KEY}."
    ),
)

_OPTIONS.append(storage_options_option)


def cluster_options(f: F) -> F:
    """Add the cluster and storage options to a click command.

    The command receives ``cluster`` (a :class:`~pipeline.cluster.ClusterSpec` built from
    ``--scheduler``, ``--scheduler-file``, ``--workers``, ``--processes``/``--threads``,
    ``--dashboard``/``--no-dashboard``, ``--cluster``, ``--jobs``,
    ``--maximum-jobs``, ``--tls-ca-file``, ``--tls-cert``, ``--tls-key``,
    ``--connect-timeout`` and ``--worker-timeout``) and ``storage_options`` (a dict from
    ``--storage-option`` and the dask config).  Values the spec refuses are a usage
    error (exit status 2) before the command body runs.
    """

    @functools.wraps(f)
    def with_spec(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in list(kwargs) if name in _SPEC_FIELDS}
        values = {name: value for name, value in given.items() if value is not None}
        try:
            kwargs["cluster"] = ClusterSpec(**values)
        except ClusterConfigError as error:
            raise click.UsageError(error.naming(flag_name)) from None
        return f(*args, **kwargs)

    for option in reversed(_OPTIONS):
        with_spec = option(with_spec)
    return with_spec  # type: ignore[return-value]


def echo_warning(message: str) -> None:
    """Show a warning from :func:`pipeline.cluster.open_client` on stderr."""
    click.echo(f"Warning: {message}", err=True)
