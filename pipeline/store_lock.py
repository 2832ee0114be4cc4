"""One writer per results store: the lock file ``STORE/diffsweep.lock``.

A run that writes a store (``diffsweep run``, fresh, ``--resume`` or ``--overwrite``)
holds the lock from before its first write until it ends; a second run on the same
store is refused with one line naming the owner, instead of both recomputing every
block. Readers (``status``, ``map``, ``recommend``, ``verify``) never take it.

The lock is a small JSON object (``pid``, ``host``, ``process_started``, ``started``,
``token``) created exclusively: on a local or shared filesystem it is written whole
under a temporary name and hard-linked into place (``link(2)`` fails when the lock
exists, and no kill can leave a lock without its owner in it); on an object store
it is an existence check and one write (best effort: two clients starting within
the same request round trip may both get it). It is also the first thing a
new store's directory ever holds, so a directory with nothing but a lock in it is a
store that was never written.

Staleness: a lock written on this host is stale when its process is gone (or the pid
now belongs to a process started at another time) and is then taken over, with a
log line. A lock from another host cannot be checked from here; the refusal says so
and names the file to remove once that run is known to be gone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import StoreBusyError, StoreError

__all__ = ["LOCK_NAME", "LockOwner", "busy_error", "holding_lock", "is_local", "lock_owner"]

log = logging.getLogger(__name__)

#: name of the lock object inside the store
LOCK_NAME = "diffsweep.lock"
#: suffix of a file being written (zarr's LocalStore uses the same); a kill can leave one
PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class LockOwner:
    """Who holds a store's lock, as written in the lock file."""

    pid: int
    host: str
    process_started: float | None
    started: str
    token: str

    @classmethod
    def this_process(cls) -> LockOwner:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            process_started=_process_started(os.getpid()),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            token=uuid.uuid4().hex,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LockOwner | None:
        """The owner written in a lock file; None if it cannot be read (being written)."""
        try:
            fields = json.loads(data)
            return cls(
                pid=int(fields["pid"]),
                host=str(fields["host"]),
                process_started=fields.get("process_started"),
                started=str(fields.get("started", "?")),
                token=str(fields.get("token", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "pid": self.pid,
                "host": self.host,
                "process_started": self.process_started,
                "started": self.started,
                "token": self.token,
                "what": "diffsweep run writing this store; removed when it ends",
            }
        ).encode()

    @property
    def alive(self) -> bool | None:
        """True/False on this host; None (unknown) for a lock from another host."""
        if self.host != socket.gethostname():
            return None
        started = _process_started(self.pid)
        if started is None:
            return False
        return self.process_started is None or abs(started - self.process_started) < 1.0

    @property
    def is_this_process(self) -> bool:
        return self.pid == os.getpid() and self.host == socket.gethostname()

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.started}"


def _process_started(pid: int) -> float | None:
    """Start time of process ``pid`` (seconds since the epoch), None if there is none."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _fs(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, root.rstrip("/")


def is_local(fs: Any) -> bool:
    """True when the fsspec filesystem ``fs`` is the local disk (directories, rename, hard links)."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def lock_owner(url: str, storage_options: Mapping[str, Any] | None = None) -> LockOwner | None:
    """The owner of the store's lock, or None when nobody else holds it (or it is stale)."""
    fs, root = _fs(url, storage_options)
    owner = _read_owner(fs, f"{root}/{LOCK_NAME}")
    if owner is None or owner.alive is False or owner.is_this_process:
        return None
    return owner


def _read_owner(fs: Any, path: str) -> LockOwner | None:
    try:
        data = fs.cat_file(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    owner = LockOwner.from_bytes(data)
    if owner is None:  # unreadable: treat as held by an unknown process, never as free
        return LockOwner(pid=-1, host="an unknown host", process_started=None, started="?", token="")
    return owner


def _create_exclusive(fs: Any, path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True when this call created it."""
    if is_local(fs):
        # written whole to a temporary name, then linked into place: link(2) fails if the
        # lock exists, and a kill never leaves a lock without its owner in it
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}"
        with open(temporary, "wb") as file:
            file.write(data)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(temporary)
        return True
    if fs.exists(path):
        return False
    fs.pipe_file(path, data)
    return True


def busy_error(url: str, owner: LockOwner) -> StoreBusyError:
    where = f"{url.rstrip('/')}/{LOCK_NAME}"
    if owner.alive is None:
        hint = f"if that run is no longer running, remove {where} and try again"
    else:
        hint = "wait for it to finish (or stop it), then try again"
    return StoreBusyError(f"{url!r} is being written by another diffsweep run ({owner.describe()}); {hint}")


@contextmanager
def holding_lock(url: str, storage_options: Mapping[str, Any] | None = None) -> Iterator[LockOwner]:
    """Hold the store's lock for the duration of the block.

    Raises
    ------
    StoreBusyError
        Another live run holds it (or one on another host, which cannot be checked).
    """
    fs, root = _fs(url, storage_options)
    path = f"{root}/{LOCK_NAME}"
    local = is_local(fs)
    created_directory = local and not os.path.lexists(root)
    me = LockOwner.this_process()
    for _attempt in range(2):
        try:
            created = _create_exclusive(fs, path, me.to_bytes())
        except (FileNotFoundError, PermissionError) as error:  # e.g. an object store's missing bucket
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise StoreError(f"cannot create the store {url!r}: {reason}") from None
        if created:
            break
        owner = _read_owner(fs, path)
        if owner is None:
            continue  # removed meanwhile: try again
        if owner.alive is not False:
            if created_directory:
                _remove_empty_directory(root)
            raise busy_error(url, owner)
        log.warning("taking over the lock of %s from %s, which is no longer running", url, owner.describe())
        fs.rm_file(path)
    else:
        owner = _read_owner(fs, path) or me
        raise busy_error(url, owner)
    try:
        yield me
    finally:
        _release(fs, path, me)
        if created_directory:
            _remove_empty_directory(root)


def _release(fs: Any, path: str, me: LockOwner) -> None:
    current = _read_owner(fs, path)
    if current is not None and current.token == me.token:
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass


def _remove_empty_directory(root: str) -> None:
    """Remove the directory the lock created, if the run left nothing else in it."""
    try:
        os.rmdir(root)
    except OSError:
        pass
