"""Real `dask scheduler` / `dask worker` processes on 127.0.0.1, plain tcp and TLS.

Each module-scoped fixture starts a scheduler and two workers (with nannies) from
distributed's own command line; tests connect through :func:`pipeline.cluster.open_client`
and through ``diffsweep run``, and compare stores value for value with a local run.
"""

from __future__ import annotations

import contextlib
import json
import os
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


def start_dask(directory: Path, *, workers: int = 2, tls: bool = False) -> DaskProcesses:
    """Start `dask scheduler` and ``workers`` `dask worker --nanny` processes on 127.0.0.1."""
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
        "--no-dashboard",
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
                "--nanny",
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
        with open_client(cluster.spec(connect_timeout=30)) as client:
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


def test_local_cluster_listens_on_loopback_only() -> None:
    with open_client(ClusterSpec(workers=1)) as client:
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


def test_something_that_is_not_a_scheduler_is_a_cluster_error() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(10)
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        import threading

        def answer_nonsense() -> None:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 64)
                time.sleep(1)

        thread = threading.Thread(target=answer_nonsense, daemon=True)
        thread.start()
        with pytest.raises(ClusterError, match=address):
            with open_client(ClusterSpec(scheduler=address, connect_timeout=2)):
                pass
        thread.join(5)


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


def test_sigkill_a_worker_while_blocks_run(tcp_cluster: DaskProcesses, tmp_path: Path) -> None:
    """Lose a worker mid-block: the scheduler reruns its block elsewhere; same store."""
    sweep = tmp_path / "long.yaml"
    sweep.write_text(LONG_SWEEP)
    reference, store = tmp_path / "reference.zarr", tmp_path / "killed.zarr"
    _run(str(sweep), "-o", str(reference), "--workers", "2")

    with open_client(ClusterSpec(scheduler=tcp_cluster.address)) as watcher:
        worker_pids = watcher.run(os.getpid)  # worker address -> pid (the nanny's child)
        run = subprocess.Popen(
            ["diffsweep", "run", str(sweep), "-o", str(store), "--no-progress",
             "--scheduler", tcp_cluster.address],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            victim = None
            deadline = time.monotonic() + 120
            while victim is None and time.monotonic() < deadline and run.poll() is None:
                busy = {w: keys for w, keys in watcher.processing().items() if keys}
                if busy:
                    victim = next(iter(busy))
                    break
                time.sleep(0.05)
            assert victim is not None, "no block was ever seen running"
            os.kill(worker_pids[victim], signal.SIGKILL)
            _stdout, stderr = run.communicate(timeout=240)
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
        assert run.returncode == 0, stderr
        # the nanny restarts the killed worker: the cluster is whole again afterwards
        watcher.wait_for_workers(2, timeout=60)
        assert worker_pids[victim] not in watcher.run(os.getpid).values()
    log = (tcp_cluster.directory / "scheduler.log").read_text()
    assert any("Remove worker" in line and victim in line for line in log.splitlines()), log
    _assert_same_results(store, reference)
