"""Real `dask scheduler` / `dask worker` processes on 127.0.0.1, plain tcp and TLS.

Each module-scoped fixture starts a scheduler and two workers (with nannies) from
distributed's own command line; tests connect through :func:`pipeline.cluster.open_client`
and through ``diffsweep run``, and compare stores value for value with a local run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from certs import dask_tls_args, make_tls_files
from conftest import diffsweep

from pipeline.cluster import ClusterSpec, open_client
from pipeline.errors import ClusterError

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]

#: several blocks, each long enough (~0.5 s) that a worker can be killed while one runs
LONG_SWEEP = """\
name: kill-a-worker
description: blocks that each take a moment, to lose a worker in the middle of one
model: {scheme: ftcs, dims: 2, cells: 48, boundary: neumann, initial: step}
sweep:
  coefficient: [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
  cfl: [0.05, 0.1, 0.2, 0.24]
  steps: [1000, 30000]
chunks: {coefficient: 1, cfl: 4}
output: {fields: final}
"""


@dataclass
class DaskProcesses:
    """A scheduler and its workers, started with `python -m dask ...` on 127.0.0.1."""

    address: str
    scheduler_file: Path
    directory: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tls: dict[str, Path] | None = None

    def pids(self) -> list[int]:
        """Every process started, with all of their children (nanny -> worker)."""
        found = []
        for process in self.processes:
            try:
                parent = psutil.Process(process.pid)
                found += [parent.pid, *(child.pid for child in parent.children(recursive=True))]
            except psutil.NoSuchProcess:
                continue
        return found

    def spec(self, **arguments) -> ClusterSpec:
        """A spec for this scheduler (by address unless told otherwise), with its TLS files."""
        tls = {}
        if self.tls is not None:
            tls = {
                "tls_ca_file": str(self.tls["ca"]),
                "tls_cert": str(self.tls["client"]),
                "tls_key": str(self.tls["client-key"]),
            }
        if "scheduler_file" not in arguments:
            arguments.setdefault("scheduler", self.address)
        return ClusterSpec(**{**tls, **arguments})

    def cli_tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--tls-ca-file", str(self.tls["ca"]),
            "--tls-cert", str(self.tls["client"]),
            "--tls-key", str(self.tls["client-key"]),
        ]  # fmt: skip

    def stop(self) -> None:
        """SIGTERM (dask shuts down cleanly), then SIGKILL whatever is left after 5 s."""
        everything = [psutil.Process(pid) for pid in self.pids() if psutil.pid_exists(pid)]
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        _gone, alive = psutil.wait_procs(everything, timeout=5)
        for process in alive:
            process.kill()
        for process in self.processes:
            process.wait()


def _dask(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dask", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def start_dask(
    directory: Path, *, workers: int = 2, tls: bool = False, nanny: bool = True
) -> DaskProcesses:
    """Start `dask scheduler` (dashboard on 127.0.0.1) and ``workers`` `dask worker`
    processes (``--nanny`` unless told otherwise) on 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    scheduler_file = directory / "scheduler.json"
    files = make_tls_files(directory / "certs") if tls else None
    tls_args = (lambda role: dask_tls_args(files, role)) if files else (lambda role: [])
    scheduler_args = [
        "scheduler",
        "--host", "127.0.0.1",
        "--port", "0",
        "--protocol", "tls" if tls else "tcp",
        "--scheduler-file", str(scheduler_file),
        "--dashboard-address", "127.0.0.1:0",
        *tls_args("scheduler"),
    ]  # fmt: skip
    processes = [_dask(*scheduler_args, log=directory / "scheduler.log")]
    try:
        deadline = time.monotonic() + 60
        address = None
        while address is None:
            if processes[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((directory / "scheduler.log").read_text())
            try:
                address = json.loads(scheduler_file.read_text())["address"]
            except (FileNotFoundError, ValueError, KeyError):
                time.sleep(0.1)
        for index in range(workers):
            worker_args = [
                "worker", address,
                "--nanny" if nanny else "--no-nanny",
                "--name", f"worker-{index}",
                "--nthreads", "1",
                "--host", "127.0.0.1",
                "--no-dashboard",
                "--dashboard-address", "127.0.0.1:0",
                "--memory-limit", "1GiB",
                "--local-directory", str(directory / f"worker-{index}"),
                "--death-timeout", "60",
                *tls_args("worker"),
            ]  # fmt: skip
            processes.append(_dask(*worker_args, log=directory / f"worker-{index}.log"))
        cluster = DaskProcesses(address, scheduler_file, directory, processes, files)
        if workers:
            with open_client(cluster.spec(connect_timeout=30, worker_timeout=90)) as client:
                client.wait_for_workers(workers, timeout=90)
    except BaseException:
        for process in processes:
            process.kill()
            process.wait()
        raise
    return cluster


@pytest.fixture(scope="module")
def tcp_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskProcesses]:
    cluster = start_dask(tmp_path_factory.mktemp("tcp-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskProcesses]:
    cluster = start_dask(tmp_path_factory.mktemp("tls-cluster"), tls=True)
    yield cluster
    cluster.stop()


def _listening(pids: list[int]) -> list[tuple[int, str, int]]:
    found = []
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found += [
            (pid, c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN
        ]
    return found


@contextlib.contextmanager
def _refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs.

    The socket stays bound but never listens: connecting gets ECONNREFUSED, and the
    kernel cannot hand the port out as an ephemeral source port meanwhile. (A port
    that is merely closed can be picked as the client's own source port while dask
    retries, and Linux then connects the socket to itself: a "server" that accepts
    and never answers.)
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _square_sum(client) -> int:
    futures = client.map(lambda x: x * x, range(20))
    return client.submit(sum, futures).result(timeout=30)


# --------------------------------------------------------------------------- tcp


def test_connect_by_scheduler_file_and_address(tcp_cluster: DaskProcesses) -> None:
    with open_client(ClusterSpec(scheduler_file=str(tcp_cluster.scheduler_file))) as client:
        assert client.scheduler.address == tcp_cluster.address
        assert len(client.nthreads()) == 2
        assert _square_sum(client) == sum(x * x for x in range(20))
    with open_client(ClusterSpec(scheduler=tcp_cluster.address)) as client:
        assert _square_sum(client) == sum(x * x for x in range(20))


def test_every_listening_socket_is_on_loopback(
    tcp_cluster: DaskProcesses, tls_cluster: DaskProcesses
) -> None:
    pids = tcp_cluster.pids() + tls_cluster.pids()
    assert len(pids) >= 2 * (1 + 2 * 2), pids  # scheduler + (nanny + worker) x 2, twice
    listening = _listening(pids)
    # the scheduler and every nanny and worker listen on something
    assert len({pid for pid, _ip, _port in listening}) >= 2 * 5, listening
    assert all(ip == "127.0.0.1" for _pid, ip, _port in listening), listening


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
@pytest.mark.parametrize("dashboard", [True, False], ids=["dashboard", "no-dashboard"])
def test_local_cluster_listens_on_loopback_only(processes: bool, dashboard: bool) -> None:
    # threads: the workers' HTTP servers (/health, metrics) too, which have no address of their own
    with open_client(ClusterSpec(workers=1, processes=processes, dashboard=dashboard)) as client:
        assert _square_sum(client) == sum(x * x for x in range(20))
        me = psutil.Process()
        pids = [me.pid, *(child.pid for child in me.children(recursive=True))]
        listening = _listening(pids)
        assert listening
        assert all(ip == "127.0.0.1" for _pid, ip, _port in listening), listening


def test_unreachable_scheduler_is_a_cluster_error_within_the_timeout() -> None:
    with _refused_port() as port:
        address = f"tcp://127.0.0.1:{port}"
        start = time.monotonic()
        with pytest.raises(ClusterError, match=f"cannot connect to the dask scheduler at {address}"):
            with open_client(ClusterSpec(scheduler=address, connect_timeout=2)):
                pass
    assert time.monotonic() - start < 10


def test_cli_unreachable_scheduler_exits_2_with_one_line(
    small_sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASK_DIFFSWEEP__CONNECT_TIMEOUT", "2s")
    with _refused_port() as port:
        address = f"tcp://127.0.0.1:{port}"
        start = time.monotonic()
        result = diffsweep(
            "run", str(small_sweep), "-o", str(tmp_path / "x.zarr"), "--scheduler", address,
            timeout=60,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - start < 30
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert address in lines[0] and lines[0].startswith("Error:")
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- TLS


def test_tls_client_connects(tls_cluster: DaskProcesses) -> None:
    assert tls_cluster.address.startswith("tls://127.0.0.1:")
    with open_client(tls_cluster.spec(scheduler_file=str(tls_cluster.scheduler_file))) as client:
        assert len(client.nthreads()) == 2
        assert _square_sum(client) == sum(x * x for x in range(20))


def test_tls_scheduler_refuses_plain_tcp(tls_cluster: DaskProcesses) -> None:
    plain = tls_cluster.address.replace("tls://", "tcp://")
    with pytest.raises(ClusterError, match=plain):
        with open_client(ClusterSpec(scheduler=plain, connect_timeout=2)):
            pass


def test_tls_address_without_credentials_is_refused_before_connecting(
    tls_cluster: DaskProcesses,
) -> None:
    with pytest.raises(ClusterError, match="uses TLS: give `tls_ca_file` and `tls_cert`"):
        with open_client(ClusterSpec(scheduler=tls_cluster.address, connect_timeout=2)):
            pass


def test_tls_scheduler_refuses_a_certificate_from_another_ca(
    tls_cluster: DaskProcesses, tmp_path: Path
) -> None:
    stranger = make_tls_files(tmp_path / "stranger")
    spec = ClusterSpec(
        scheduler=tls_cluster.address,
        tls_ca_file=str(stranger["ca"]),
        tls_cert=str(stranger["client"]),
        tls_key=str(stranger["client-key"]),
        connect_timeout=2,
    )
    with pytest.raises(ClusterError, match=tls_cluster.address):
        with open_client(spec):
            pass


# --------------------------------------------------------------------------- sweeps


def _load(path: Path):
    import xarray as xr

    return xr.open_zarr(path).load()


def _assert_same_results(store: Path, reference: Path) -> None:
    import xarray as xr

    actual, expected = _load(store), _load(reference)
    assert sorted(actual.data_vars) == sorted(expected.data_vars)
    assert actual.sizes == expected.sizes
    for name in expected.data_vars:
        xr.testing.assert_identical(actual[name], expected[name])


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    result = diffsweep("run", *args, "--no-progress", timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result


@contextlib.contextmanager
def _diffsweep_running(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``diffsweep run ARGS`` in the background (stdout and stderr piped, text); killed
    on leaving the block if it is still running (a failed assertion, a timeout)."""
    run = subprocess.Popen(["diffsweep", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield run
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()


@pytest.fixture(scope="module")
def minimal_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sweep_cases import GOOD_MINIMAL

    path = tmp_path_factory.mktemp("sweep") / "minimal.yaml"
    path.write_text(GOOD_MINIMAL)
    return path


@pytest.fixture(scope="module")
def local_reference(minimal_sweep: Path) -> Path:
    store = minimal_sweep.parent / "local.zarr"
    _run(str(minimal_sweep), "-o", str(store), "--workers", "1")
    return store


def test_cli_run_through_scheduler_file_and_address(
    tcp_cluster: DaskProcesses, minimal_sweep: Path, local_reference: Path, tmp_path: Path
) -> None:
    by_file = tmp_path / "by-file.zarr"
    result = _run(
        str(minimal_sweep), "-o", str(by_file), "--scheduler-file", str(tcp_cluster.scheduler_file)
    )
    assert tcp_cluster.address in result.stderr  # describe() line
    _assert_same_results(by_file, local_reference)

    by_address = tmp_path / "by-address.zarr"
    _run(str(minimal_sweep), "-o", str(by_address), "--scheduler", tcp_cluster.address)
    _assert_same_results(by_address, local_reference)


def test_cli_run_over_tls(
    tls_cluster: DaskProcesses, minimal_sweep: Path, local_reference: Path, tmp_path: Path
) -> None:
    store = tmp_path / "tls.zarr"
    _run(
        str(minimal_sweep),
        "-o",
        str(store),
        "--scheduler",
        tls_cluster.address,
        *tls_cluster.cli_tls_args(),
    )
    _assert_same_results(store, local_reference)


def test_cli_refuses_unwritable_store_before_computing(
    tcp_cluster: DaskProcesses, minimal_sweep: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"  # a path below a regular file: not writable, even by root
    blocker.write_text("not a directory")
    result = diffsweep(
        "run", str(minimal_sweep), "-o", str(blocker / "x.zarr"),
        "--scheduler", tcp_cluster.address, "--no-progress",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(blocker) in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (blocker.parent / "x.zarr").exists()


@pytest.fixture(scope="module")
def long_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("long") / "long.yaml"
    path.write_text(LONG_SWEEP)
    return path


@pytest.fixture(scope="module")
def long_reference(long_sweep: Path) -> Path:
    """LONG_SWEEP computed without interruption on a local cluster."""
    store = long_sweep.parent / "reference.zarr"
    _run(str(long_sweep), "-o", str(store), "--workers", "2")
    return store


def test_sigkill_a_worker_while_blocks_run(
    tcp_cluster: DaskProcesses, long_sweep: Path, long_reference: Path, tmp_path: Path
) -> None:
    """Lose a worker mid-block: the scheduler reruns its block elsewhere; same store."""
    sweep, reference, store = long_sweep, long_reference, tmp_path / "killed.zarr"

    with open_client(ClusterSpec(scheduler=tcp_cluster.address)) as watcher:
        worker_pids = watcher.run(os.getpid)  # worker address -> pid (the nanny's child)
        with _diffsweep_running(
            str(sweep), "-o", str(store), "--no-progress",
            "--scheduler", tcp_cluster.address,
        ) as run:  # fmt: skip
            victim = _busy_worker(watcher, run)
            os.kill(worker_pids[victim], signal.SIGKILL)
            _stdout, stderr = run.communicate(timeout=240)
        assert run.returncode == 0, stderr
        # the nanny restarts the killed worker: the cluster is whole again afterwards
        watcher.wait_for_workers(2, timeout=60)
        assert worker_pids[victim] not in watcher.run(os.getpid).values()
    log = (tcp_cluster.directory / "scheduler.log").read_text()
    assert any("Remove worker" in line and victim in line for line in log.splitlines()), log
    _assert_same_results(store, reference)


def _busy_worker(watcher, run: subprocess.Popen[str], within: float = 120) -> str:
    """The address of a worker running a block of ``run`` (not the store probe), as soon
    as one does."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and run.poll() is None:
        processing = watcher.processing().items()
        busy = [worker for worker, keys in processing if any("-block-" in str(k) for k in keys)]
        if busy:
            return busy[0]
        time.sleep(0.05)
    _stdout, stderr = run.communicate(timeout=60) if run.poll() is not None else ("", "")
    raise AssertionError(f"no block was ever seen running; run exited {run.returncode}: {stderr}")


# --------------------------------------------------------------------------- bounded waits


class NotDask:
    """A real TCP listener on 127.0.0.1 that is not a dask scheduler.

    It accepts every connection and keeps it open; with ``reply`` it writes those bytes
    first (garbage to a dask client), without it it says nothing at all.
    """

    def __init__(self, reply: bytes | None = None) -> None:
        import threading

        self.reply = reply
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.server.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return  # closed
            self.connections.append(connection)
            if self.reply is not None:
                try:
                    connection.sendall(self.reply)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()
        for connection in self.connections:
            connection.close()
        self.thread.join(5)


@pytest.fixture
def silent_listener() -> Iterator[NotDask]:
    listener = NotDask()
    yield listener
    listener.close()


#: what a web server answers to dask's first frame: an HTTP error, read by dask as lengths
GARBAGE = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 64


def _timed_diffsweep(
    *args: str, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = diffsweep(*args, timeout=timeout)
    return result, time.monotonic() - start


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_a_silent_listener_is_refused_after_exactly_the_connect_timeout(
    silent_listener: NotDask,
) -> None:
    """distributed's Client alone waits forever here (its handshake read has no timeout)."""
    start = time.monotonic()
    with pytest.raises(ClusterError) as caught:
        with open_client(ClusterSpec(scheduler=silent_listener.address)):
            pass
    elapsed = time.monotonic() - start
    # the default, 10 s, promised by the README (+ slack for a busy machine's scheduling)
    assert 10 <= elapsed < 10 + 3, elapsed
    assert str(caught.value) == (
        f"{silent_listener.address} accepted the connection but did not answer as a dask "
        "scheduler within 10 s (a stale scheduler file, or another service on that port?)"
    )
    assert isinstance(caught.value, ConnectionError)


def test_garbage_from_a_listener_is_refused_at_once() -> None:
    listener = NotDask(GARBAGE)
    try:
        start = time.monotonic()
        with pytest.raises(
            ClusterError, match=f"{listener.address} did not answer as a dask scheduler"
        ):
            with open_client(ClusterSpec(scheduler=listener.address)):
                pass
        assert time.monotonic() - start < 5
    finally:
        listener.close()


@pytest.mark.parametrize("reply", [None, GARBAGE], ids=["silent", "garbage"])
def test_cli_refuses_a_listener_that_is_not_dask_in_one_line_within_10_s(
    reply: bytes | None, minimal_sweep: Path, tmp_path: Path
) -> None:
    listener = NotDask(reply)
    try:
        store = tmp_path / "x.zarr"
        result, elapsed = _timed_diffsweep(
            "run", str(minimal_sweep), "-o", str(store), "--scheduler", listener.address
        )
    finally:
        listener.close()
    assert result.returncode == 2, result.stderr
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr  # no "Exception ignored in Client.__del__"
    assert lines[0].startswith(f"Error: {listener.address} ")
    assert "as a dask scheduler" in lines[0]
    assert not store.exists()
    # 10 s of waiting at most, plus starting Python and importing dask on a busy machine
    assert elapsed < 10 + 20, elapsed
    if reply is None:
        assert elapsed >= 10, elapsed
        assert lines[0].endswith(
            "within 10 s (a stale scheduler file, or another service on that port?)"
        )


def test_ctrl_c_while_connecting_exits_at_once(
    silent_listener: NotDask, minimal_sweep: Path, tmp_path: Path
) -> None:
    with _diffsweep_running(
        str(minimal_sweep), "-o", str(tmp_path / "x.zarr"),
        "--scheduler", silent_listener.address,
    ) as run:  # fmt: skip
        deadline = time.monotonic() + 60
        while not silent_listener.connections and time.monotonic() < deadline:
            time.sleep(0.05)  # until the client is inside the handshake
        assert silent_listener.connections, "diffsweep never connected"
        interrupted = time.monotonic()
        run.send_signal(signal.SIGINT)
        _stdout, stderr = run.communicate(timeout=30)
        elapsed = time.monotonic() - interrupted
    assert run.returncode == 130, stderr
    (line,) = _error_lines(stderr)
    assert line == (
        f"interrupted before any block was computed; start again with: diffsweep run {minimal_sweep} "
        f"-o {tmp_path / 'x.zarr'} --scheduler {silent_listener.address}"
    ), stderr
    assert elapsed < 8, elapsed  # distributed alone lingered ~20 s here


@pytest.fixture
def lonely_scheduler(tmp_path: Path) -> Iterator[DaskProcesses]:
    """A real `dask scheduler` with no workers."""
    cluster = start_dask(tmp_path / "lonely", workers=0)
    yield cluster
    cluster.stop()


def test_a_scheduler_without_workers_is_given_up_after_the_worker_timeout(
    lonely_scheduler: DaskProcesses, minimal_sweep: Path, tmp_path: Path
) -> None:
    start = time.monotonic()
    with pytest.raises(ClusterError) as caught:
        with open_client(ClusterSpec(scheduler=lonely_scheduler.address, worker_timeout=2)):
            pass
    elapsed = time.monotonic() - start
    assert 2 <= elapsed < 2 + 3, elapsed
    assert "has no workers: none joined within 2 s (`worker_timeout`)" in str(caught.value)

    store = tmp_path / "x.zarr"
    result, elapsed = _timed_diffsweep(
        "run", str(minimal_sweep), "-o", str(store),
        "--scheduler-file", str(lonely_scheduler.scheduler_file), "--worker-timeout", "3",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    address = lonely_scheduler.address
    assert _error_lines(result.stderr) == [
        f"Error: the dask scheduler {address} has no workers: none joined within 3 s "
        f"(--worker-timeout); start some with `dask worker {address}`"
    ]
    assert 3 <= elapsed < 3 + 20, elapsed
    assert not store.exists()


def test_a_worker_that_joins_in_time_is_waited_for(
    lonely_scheduler: DaskProcesses, minimal_sweep: Path, local_reference: Path, tmp_path: Path
) -> None:
    store = tmp_path / "late.zarr"
    with _diffsweep_running(
        str(minimal_sweep), "-o", str(store), "--no-progress",
        "--scheduler", lonely_scheduler.address, "--worker-timeout", "120",
    ) as run:  # fmt: skip
        _wait_for_another_client(lonely_scheduler.address, run)
        time.sleep(1)  # diffsweep is connected and waiting for a worker
        assert run.poll() is None, run.communicate()
        lonely_scheduler.processes.append(
            _dask(
                "worker", lonely_scheduler.address, "--nthreads", "1", "--host", "127.0.0.1",
                "--no-dashboard", "--local-directory", str(tmp_path / "late-worker"),
                log=tmp_path / "late-worker.log",
            )
        )  # fmt: skip
        _stdout, stderr = run.communicate(timeout=180)
    assert run.returncode == 0, stderr
    _assert_same_results(store, local_reference)


def _wait_for_another_client(address: str, run: subprocess.Popen[str], within: float = 120) -> None:
    """Return once a client other than this test's own is connected to the scheduler."""
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as watcher:
        before = watcher.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.clients))
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and run.poll() is None:
            now = watcher.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.clients))
            if now > before:
                return
            time.sleep(0.1)
    raise AssertionError("diffsweep never connected to the scheduler")


def test_losing_every_worker_mid_run_exits_1_with_the_resume_command(
    long_sweep: Path, long_reference: Path, tmp_path: Path
) -> None:
    """The only worker (no nanny) is killed mid-block and none comes back within
    --worker-timeout: one line says so, and how to finish."""
    cluster = start_dask(tmp_path / "one-worker", workers=1, nanny=False)
    store = tmp_path / "orphaned.zarr"
    try:
        with open_client(cluster.spec()) as watcher:
            (worker_pid,) = watcher.run(os.getpid).values()
            with _diffsweep_running(
                str(long_sweep), "-o", str(store), "--no-progress",
                "--scheduler", cluster.address, "--worker-timeout", "3",
            ) as run:  # fmt: skip
                _busy_worker(watcher, run)
                os.kill(worker_pid, signal.SIGKILL)
                killed = time.monotonic()
                _stdout, stderr = run.communicate(timeout=120)
                elapsed = time.monotonic() - killed
    finally:
        cluster.stop()
    assert run.returncode == 1, stderr
    lines = _error_lines(stderr)
    assert lines[0].startswith(f"dask scheduler {cluster.address}: 1 worker"), stderr
    assert len(lines) == 2, stderr
    resume = (
        f"diffsweep run {long_sweep} -o {store} --no-progress --scheduler {cluster.address} "
        "--worker-timeout 3 --resume"
    )
    assert lines[1].startswith(
        f"Error: the dask scheduler {cluster.address} lost all its workers: none came back within 3 s"
    ), stderr
    assert lines[1].endswith(f"; blocks already written are kept; finish with: {resume}"), stderr
    assert 3 <= elapsed < 15, elapsed

    finish = diffsweep("run", str(long_sweep), "-o", str(store), "--resume", "--workers", "1", "--no-progress",
                       timeout=240)  # a local cluster stands in for the scheduler's new workers
    assert finish.returncode == 0, finish.stderr
    _assert_same_results(store, long_reference)


def test_a_scheduler_killed_mid_run_exits_1_with_the_resume_command(
    long_sweep: Path, long_reference: Path, tmp_path: Path
) -> None:
    cluster = start_dask(tmp_path / "doomed", workers=1)
    store = tmp_path / "interrupted.zarr"
    try:
        with _diffsweep_running(
            str(long_sweep), "-o", str(store), "--no-progress",
            "--scheduler-file", str(cluster.scheduler_file),
        ) as run:  # fmt: skip
            with open_client(cluster.spec()) as watcher:
                _busy_worker(watcher, run)
            cluster.processes[0].kill()  # the scheduler, SIGKILL: no goodbye to anyone
            killed = time.monotonic()
            _stdout, stderr = run.communicate(timeout=120)
            elapsed = time.monotonic() - killed
    finally:
        cluster.stop()
    assert run.returncode == 1, stderr
    lines = _error_lines(stderr)
    assert lines[0].startswith(f"dask scheduler {cluster.address}: 1 worker"), stderr
    assert len(lines) == 2, stderr  # no tracebacks from distributed's reconnection attempts
    resume = f"diffsweep run {long_sweep} -o {store} --no-progress --scheduler-file {cluster.scheduler_file} --resume"
    assert lines[1].startswith(
        f"Error: lost the connection to the dask scheduler {cluster.address} ("
    )
    assert lines[1].endswith(f"; blocks already written are kept; finish with: {resume}")
    # not the 10 s distributed spends trying to reconnect before it gives up (measured 1.1 s)
    assert elapsed < 8, elapsed

    # the printed command finishes the job once a scheduler runs again; here a local
    # cluster stands in for it: same values as a clean run
    finish = diffsweep("run", str(long_sweep), "-o", str(store), "--resume", "--workers", "1", "--no-progress",
                       timeout=240)
    assert finish.returncode == 0, finish.stderr
    _assert_same_results(store, long_reference)


# --------------------------------------------------------------------------- dashboard


def _http_status(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as response:
        return int(response.status)


@pytest.mark.parametrize("workers", ["--processes", "--threads"])
def test_run_prints_a_local_dashboard_that_answers(workers: str, long_sweep: Path, tmp_path: Path) -> None:
    """bokeh is a dependency: the local cluster serves its dashboard on 127.0.0.1."""
    import re

    with _diffsweep_running(
        str(long_sweep), "-o", str(tmp_path / "x.zarr"), "--no-progress",
        "--workers", "1", workers, "--dashboard",
    ) as run:  # fmt: skip
        assert run.stderr is not None
        first = run.stderr.readline()
        match = re.search(r", dashboard (http://127\.0\.0\.1:\d+/status)$", first.strip())
        assert match, first
        assert _http_status(match.group(1)) == 200  # while the run is still going
        _stdout, rest = run.communicate(timeout=240)
    assert run.returncode == 0, rest


def test_a_short_local_run_serves_no_dashboard_says_how_to_get_one_and_listens_on_loopback_only(
    long_sweep: Path, tmp_path: Path
) -> None:
    """Below DASHBOARD_FROM_SECONDS (about 0.6 s here) the dashboard is not started;
    the scheduler's HTTP server (/health, metrics) still runs, on 127.0.0.1 only."""
    import psutil

    with _diffsweep_running(
        str(long_sweep), "-o", str(tmp_path / "x.zarr"), "--no-progress",
        "--workers", "1", "--threads",
    ) as run:  # fmt: skip
        assert run.stderr is not None
        first = run.stderr.readline().strip()
        listening = [c.laddr for c in psutil.Process(run.pid).net_connections("inet") if c.status == "LISTEN"]
        _stdout, rest = run.communicate(timeout=240)
    assert run.returncode == 0, rest
    assert first == (
        "dask scheduler in this process: 1 worker, 1 thread "
        "(no dashboard for a sweep this short; --dashboard serves one)"
    )
    assert listening, "the scheduler's HTTP server was not found"
    assert {address.ip for address in listening} == {"127.0.0.1"}, listening


def test_run_prints_a_remote_dashboard_that_answers(
    tcp_cluster: DaskProcesses, minimal_sweep: Path, tmp_path: Path
) -> None:
    import re

    result = _run(
        str(minimal_sweep), "-o", str(tmp_path / "x.zarr"), "--scheduler", tcp_cluster.address
    )
    first = result.stderr.splitlines()[0]
    match = re.search(r", dashboard (http://127\.0\.0\.1:\d+/status)$", first)
    assert match, first
    assert _http_status(match.group(1)) == 200
