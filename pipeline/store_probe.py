"""Can the workers write the store, and do they see the same storage as this process?

Part of the store layer: it knows where a store lives (local path or fsspec URL) and
how to write an object beside it; it needs nothing of the cluster but a connected
``distributed.Client`` to send one task to a worker.  :func:`absolute_store_path` gives
the path every worker must be given, :func:`check_store_writable` checks it before
anything is computed, so that a path each machine resolves to its own disk (or a
read-only location) stops a run at once instead of losing its results.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any

from pipeline.errors import StoreError, WorkersLostError, first_line
from pipeline.store_lock import is_local

if TYPE_CHECKING:
    import distributed

__all__ = ["PROBE_PREFIX", "absolute_store_path", "check_store_writable"]

logger = logging.getLogger(__name__)

#: name prefix of the object a worker writes (and removes) beside the store
PROBE_PREFIX = ".diffsweep-write-probe-"


def absolute_store_path(store: str) -> str:
    """``store`` with a relative local path made absolute (``~`` expanded); URLs unchanged.

    Workers may run in another working directory or on another machine, so they must be
    given absolute paths.

    Examples
    --------
    >>> absolute_store_path("s3://bucket/x.zarr")
    's3://bucket/x.zarr'
    >>> absolute_store_path("/data/x.zarr")
    '/data/x.zarr'
    """
    if "://" in store or store.startswith("memory:"):
        return store
    return os.path.abspath(os.path.expanduser(store))


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
        Seconds to wait for each of the two probe tasks (``None``: wait for a worker to
        join).

    Raises
    ------
    StoreError
        If the worker cannot write there, or (``shared``) writes somewhere this process
        does not see, or no worker ran the probe within ``timeout``.
    WorkersLostError
        If the worker running the probe died on every attempt the scheduler allows.

    Notes
    -----
    The probe is an ordinary task with no inputs on any worker: if the worker running
    it dies, the scheduler runs it again on another one (up to
    ``distributed.scheduler.allowed-failures`` times), so a worker lost while the run
    starts delays the check by one probe, and the removal goes to any worker when the
    one that wrote the probe is gone.
    """
    options = dict(storage_options or {})
    token = uuid.uuid4().hex
    future = client.submit(_write_probe, store, options, token, pure=False, retries=0)
    try:
        probe, worker, failure = future.result(timeout=timeout)
    except TimeoutError:
        raise StoreError(
            f"cannot check the store {store}: no worker ran the write probe within {timeout:g} s"
        ) from None
    except CancelledError:
        raise  # the probe never ran (the workers or the scheduler went away): not the store
    except Exception as error:  # e.g. the probe could not even be unpickled there
        if type(error).__name__ == "KilledWorker":  # its workers died, whatever the store
            raise WorkersLostError(
                f"cannot check the store {store}: the workers running its write probe died "
                f"on each attempt ({first_line(error)})"
            ) from None
        probe, failure = None, f"{type(error).__name__}: {first_line(error)}"
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
    except CancelledError:
        raise
    except Exception as error:
        logger.warning("could not remove the write probe %s: %s", probe, first_line(error))
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


def _write_probe(
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
            if is_local(fs):  # object stores have no directories to make
                fs.makedirs(location, exist_ok=True)
        probe = f"{location}/{PROBE_PREFIX}{token}"
        with fs.open(probe, "wb") as file:
            file.write(token.encode())
    except Exception as error:
        return None, worker, f"{type(error).__name__}: {first_line(error)}"
    return probe, worker, None


def _read_probe(url: str, storage_options: Mapping[str, Any], probe: str) -> bytes:
    import fsspec

    fs, _root = fsspec.core.url_to_fs(url, **storage_options)
    with fs.open(probe, "rb") as file:
        data: bytes = file.read()
    return data


def _remove_probe(url: str, storage_options: Mapping[str, Any], probe: str) -> None:
    import fsspec

    fs, _root = fsspec.core.url_to_fs(url, **storage_options)
    if fs.exists(probe):
        fs.rm(probe)
