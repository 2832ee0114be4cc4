"""Connecting to a running scheduler: addresses, scheduler files, and a bounded handshake.

distributed's ``Client`` waits without limit for the handshake of a peer that accepts a
TCP connection and then says nothing (a stale scheduler file whose port was reused,
another service).  :func:`connect` first asks the peer who it is, with every step
bounded by the connect timeout, and only then hands the address to ``Client``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.errors import ClusterError, first_line

if TYPE_CHECKING:
    import distributed

__all__ = ["Warn", "connect", "insecure_address_warning", "read_scheduler_file"]

logger = logging.getLogger(__name__)

Warn = Callable[[str], None]


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

    Examples
    --------
    >>> insecure_address_warning("tcp://127.0.0.1:8786") is None
    True
    >>> insecure_address_warning("tls://10.1.2.3:8786") is None
    True
    """
    try:
        protocol, host = _address_host(address)
    except ValueError:
        return None  # connect reports malformed addresses
    if protocol != "tcp" or _is_loopback(host):
        return None
    return (
        f"connecting to {address} over plain tcp:// — the scheduler is unauthenticated and "
        "unencrypted, so anyone who can reach it can run code on its workers; use a tls:// "
        "scheduler with client certificates (see deploy/README.md)"
    )


def read_scheduler_file(path: str | os.PathLike[str]) -> str:
    """The scheduler address stored in a ``dask scheduler --scheduler-file`` JSON file.

    Raises
    ------
    ClusterError
        If the file is missing, unreadable, or holds no address.
    """
    where = f"`scheduler_file` {os.fspath(path)}"
    try:
        with open(path, encoding="utf-8") as file:
            content = json.load(file)
    except FileNotFoundError:
        raise ClusterError(f"{where}: no such file", arguments=("scheduler_file",)) from None
    except (OSError, ValueError) as error:
        raise ClusterError(
            f"{where}: cannot read it: {error}", arguments=("scheduler_file",)
        ) from None
    address = content.get("address") if isinstance(content, dict) else None
    if not isinstance(address, str) or not address:
        raise ClusterError(
            f"{where}: no 'address' in it "
            "(expected the JSON written by `dask scheduler --scheduler-file`)",
            arguments=("scheduler_file",),
        )
    return address


# --------------------------------------------------------------------------- connecting


def _run_bounded(make: Callable[[], Any], timeout: float) -> Any:
    """Run the coroutine ``make()`` on a private event loop, at most ``timeout`` seconds.

    The loop runs in a daemon thread, so neither a running event loop in this thread
    (Jupyter) nor a Ctrl-C here keeps it from finishing or the process from exiting.
    Raises :class:`TimeoutError` after ``timeout``, else what the coroutine raised.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(asyncio.wait_for(make(), timeout))
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name="diffsweep-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1)  # wait_for ends it at ``timeout``; 1 s for the loop to close
    if "error" in outcome:
        raise outcome["error"]
    if "value" not in outcome:
        raise TimeoutError
    return outcome["value"]


def _accepts_tcp(address: str) -> bool:
    """Whether something accepts a TCP connection at ``address`` now (within 2 s)."""
    import socket

    from distributed.comm import parse_host_port

    host, port = parse_host_port(address.split("://", 1)[-1])
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _identify(
    address: str, security: distributed.Security | None, timeout: float
) -> dict[str, Any]:
    """Ask ``address`` who it is, as a dask peer does, within ``timeout`` seconds.

    distributed's own ``Client`` waits without limit for the handshake of a peer that
    accepts the connection and then says nothing; this asks for the scheduler's
    ``identity`` with every step bounded, so such a peer is refused in time.
    """
    from distributed.comm import connect

    args = security.get_connection_args("client") if security is not None else {}

    connected = False

    async def identity() -> Any:
        nonlocal connected
        comm = await connect(address, timeout=timeout, **args)
        connected = True
        try:
            await comm.write({"op": "identity", "n_workers": 0, "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    try:
        answer = _run_bounded(identity, timeout)
    except TimeoutError:
        # dask's connect covers both TCP (retried while refused) and its handshake:
        # the bound fired in one or the other, and only a plain TCP connect tells which
        if not connected and not _accepts_tcp(address):
            raise OSError(f"timed out after {timeout:g} s trying to connect") from None
        raise
    if not isinstance(answer, dict):
        raise ValueError(f"unexpected answer {type(answer).__name__}")
    return answer


def connect(
    address: str,
    *,
    security: distributed.Security | None,
    timeout: float,
    warn: Warn,
) -> distributed.Client:
    """A client connected to the dask scheduler at ``address``, within ``timeout`` seconds.

    Parameters
    ----------
    address
        ``tcp://host:port`` or ``tls://host:port``.
    security
        TLS credentials; required for ``tls://``.
    timeout
        Seconds for the whole connection: TCP, the handshake and the scheduler's answer.
    warn
        Called with a warning before connecting over plain tcp to another machine.

    Raises
    ------
    ClusterError
        If the address is malformed, nothing answers, the peer is not a dask scheduler
        (it says nothing, or something that is not dask), or TLS credentials are missing.
    """
    from distributed import Client

    try:
        protocol, _host = _address_host(address)
    except ValueError as error:
        raise ClusterError(f"scheduler address {address!r} is not valid: {error}") from None
    if protocol == "tls" and security is None:
        raise ClusterError(
            f"scheduler {address} uses TLS: give `tls_ca_file` and `tls_cert` (and `tls_key`), "
            "or set distributed.comm.tls.* in the dask config",
            arguments=("tls_ca_file", "tls_cert", "tls_key"),
        )
    message = insecure_address_warning(address)
    if message:
        warn(message)
    start = time.monotonic()
    try:
        identity = _identify(address, security, timeout)
    except TimeoutError:
        raise ClusterError(
            f"{address} accepted the connection but did not answer as a dask scheduler "
            f"within {timeout:g} s (a stale scheduler file, or another service on that port?)"
        ) from None
    except OSError as error:
        raise ClusterError(
            f"cannot connect to the dask scheduler at {address} within {timeout:g} s "
            f"({first_line(error)})"
        ) from None
    except Exception as error:  # e.g. ValueError decoding a non-dask service's reply
        raise ClusterError(
            f"{address} did not answer as a dask scheduler "
            f"({type(error).__name__}: {first_line(error)})"
        ) from None
    if identity.get("type") != "Scheduler":
        what = identity.get("type", "something else")
        raise ClusterError(f"{address} is a dask {what}, not a scheduler")
    remaining = max(timeout - (time.monotonic() - start), 1.0)
    try:
        return Client(address, security=security, timeout=remaining, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise ClusterError(
            f"cannot connect to the dask scheduler at {address} within {timeout:g} s "
            f"({first_line(error)})"
        ) from None
