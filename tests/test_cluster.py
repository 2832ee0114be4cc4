"""pipeline.cluster, its ClusterSpec, the store probe and the cluster options, without
external scheduler processes (those are in test_cluster_processes.py)."""

from __future__ import annotations

import dataclasses
import doctest
import os
import time
from pathlib import Path

import click
import dask
import pytest
from certs import make_tls_files
from click.testing import CliRunner

from pipeline.cli.cluster_options import cluster_options, parse_storage_options
from pipeline.cluster import (
    JOBQUEUE_KINDS,
    ClusterSpec,
    describe,
    insecure_address_warning,
    job_script,
    open_client,
    read_scheduler_file,
)
from pipeline.errors import ClusterConfigError, ClusterError, StoreError
from pipeline.store_probe import absolute_store_path, check_store_writable

ROOT = Path(__file__).resolve().parents[1]

SLURM = {
    "jobqueue.slurm.cores": 8,
    "jobqueue.slurm.memory": "32GB",
    "jobqueue.slurm.walltime": "02:30:00",
    "jobqueue.slurm.queue": "compute",
    "jobqueue.slurm.account": "diffusion-study",
}


# --------------------------------------------------------------------------- jobqueue


def test_slurm_job_script_has_the_configured_resources_and_worker_command() -> None:
    with dask.config.set(SLURM):
        script = job_script("slurm")
    assert script.startswith("#!")
    assert "#SBATCH --cpus-per-task=8" in script
    assert "#SBATCH --mem=30G" in script  # dask-jobqueue writes GiB, rounded down
    assert "#SBATCH -t 02:30:00" in script
    assert "#SBATCH -p compute" in script
    assert "#SBATCH -A diffusion-study" in script
    worker = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert "tls://<scheduler-address>:8786" in worker
    assert "--nanny" in worker and "--nworkers" in worker
    # TLS by default: the workers are given the credentials generated for the run
    for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
        assert flag in worker


def test_job_script_overrides_and_plain_tcp_on_request() -> None:
    with dask.config.set(SLURM):
        script = job_script("slurm", tls=False, walltime="00:10:00", cores=2, memory="4GB")
    assert "#SBATCH -t 00:10:00" in script and "#SBATCH --cpus-per-task=2" in script
    assert "tcp://<scheduler-address>:8786" in script and "--tls-" not in script


def test_job_script_from_the_shipped_jobqueue_yaml() -> None:
    import yaml

    config = yaml.safe_load((ROOT / "deploy" / "slurm" / "jobqueue.yaml").read_text())
    with dask.config.set(config):
        script = job_script("slurm")
    slurm = config["jobqueue"]["slurm"]
    assert f"#SBATCH -t {slurm['walltime']}" in script
    assert f"#SBATCH --cpus-per-task={slurm['cores']}" in script
    for argument in slurm["worker-extra-args"]:
        assert str(argument) in script  # --lifetime: retire before the walltime


def test_job_script_incomplete_configuration_is_a_configuration_error() -> None:
    with dask.config.set({"jobqueue.pbs.cores": None, "jobqueue.pbs.memory": None}):
        with pytest.raises(ClusterConfigError, match="`cluster` pbs: You must specify") as caught:
            job_script("pbs")
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ClusterConfigError, match="`cluster` 'yarn' is not a batch system"):
        job_script("yarn")


@pytest.mark.parametrize("kind", list(JOBQUEUE_KINDS))
def test_every_cluster_kind_renders_a_job_script(kind: str) -> None:
    sizes = {"cores": 2, "memory": "4GB", "disk": "1GB"} if kind == "htcondor" else {}
    with dask.config.set({f"jobqueue.{kind}.cores": 2, f"jobqueue.{kind}.memory": "4GB"}):
        assert "distributed.cli.dask_worker" in job_script(kind, **sizes)


def test_plan_names_the_flag_when_the_batch_configuration_is_incomplete() -> None:
    from pipeline.cli.main import cli

    with dask.config.set({"jobqueue.pbs.cores": None, "jobqueue.pbs.memory": None}):
        result = CliRunner().invoke(
            cli, ["plan", str(ROOT / "sweeps" / "ftcs-1d-stability.yaml"), "--cluster", "pbs"]
        )
    assert result.exit_code == 2, result.output
    assert "Error: --cluster pbs: You must specify" in result.output
    assert "`" not in result.output.splitlines()[-1]


# --------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"scheduler": "tcp://127.0.0.1:1", "scheduler_file": "s.json"},
         "`scheduler` and `scheduler_file` are mutually exclusive"),
        ({"cluster": "slurm", "scheduler": "tcp://127.0.0.1:1"},
         "`scheduler` and `cluster` are mutually exclusive"),
        ({"workers": 2, "scheduler": "tcp://127.0.0.1:1"}, "`workers` sizes the local cluster only"),
        ({"workers": 2, "cluster": "slurm"}, "`workers` sizes the local cluster only"),
        ({"dashboard": True, "scheduler": "tcp://127.0.0.1:1"}, "`dashboard` chooses the local cluster's dashboard"),
        ({"dashboard": False, "cluster": "slurm"}, "`dashboard` chooses the local cluster's dashboard"),
        ({"jobs": 2}, "`jobs` needs `cluster`"),
        ({"maximum_jobs": 2}, "`maximum_jobs` needs `cluster`"),
        ({"cluster": "slurm", "jobs": 3, "maximum_jobs": 2}, "`jobs` 3 is larger than `maximum_jobs` 2"),
        ({"cluster": "yarn"}, "`cluster` 'yarn' is not a batch system diffsweep knows; choose one of slurm"),
        ({"workers": 0}, "`workers` 0: expected at least 1"),
        ({"cluster": "pbs", "jobs": 0}, "`jobs` 0: expected at least 1"),
        ({"connect_timeout": 0}, "`connect_timeout` 0: expected a positive number of seconds"),
        ({"worker_timeout": -1.5}, "`worker_timeout` -1.5: expected a positive number of seconds"),
        ({"tls_cert": "client.pem"}, "missing `tls_ca_file`"),
        ({"tls_ca_file": "ca.pem", "tls_cert": "c.pem", "cluster": "slurm"},
         "`cluster` makes its own TLS credentials"),
        ({"tls_ca_file": "missing.pem", "tls_cert": "missing.pem"}, "`tls_ca_file` missing.pem: no such file"),
    ],
)  # fmt: skip
def test_spec_refuses_contradictions_naming_the_arguments(arguments: dict, message: str) -> None:
    with pytest.raises(ClusterConfigError) as caught:
        ClusterSpec(**arguments)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)
    # every argument the message names is listed, so a caller can rename it
    renamed = caught.value.naming(lambda name: f"<{name}>")
    assert "`" not in renamed.replace("`dask worker`", ""), renamed


def test_spec_is_frozen_and_says_which_cluster() -> None:
    spec = ClusterSpec(scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.scheduler = "tcp://127.0.0.1:1"  # type: ignore[misc]
    assert spec.kind == "scheduler"
    assert ClusterSpec(scheduler_file="s.json").kind == "scheduler_file"
    assert ClusterSpec(cluster="slurm").kind == "jobqueue"
    assert ClusterSpec().kind == "local"
    with dask.config.set({"scheduler-address": "tcp://127.0.0.1:8786"}):
        assert ClusterSpec().kind == "config"


def test_a_local_cluster_serves_its_dashboard_for_a_sweep_long_enough_to_look_at() -> None:
    from pipeline.cluster import DASHBOARD_FROM_SECONDS

    two = ClusterSpec(workers=2)
    # the estimate is in core-seconds; the wall time is that over the workers
    assert two.for_sweep(2 * DASHBOARD_FROM_SECONDS * 0.99).dashboard is False
    assert two.for_sweep(2 * DASHBOARD_FROM_SECONDS).dashboard is True
    assert ClusterSpec(workers=1).for_sweep(DASHBOARD_FROM_SECONDS * 1.5).dashboard is True
    # what was asked for is kept, either way
    assert ClusterSpec(dashboard=True).for_sweep(0.1).dashboard is True
    assert ClusterSpec(dashboard=False).for_sweep(1e6).dashboard is False
    # a running scheduler serves its own: nothing to decide
    assert ClusterSpec(scheduler="tcp://127.0.0.1:8786").for_sweep(1e6).dashboard is None


def test_spec_timeouts_come_from_the_arguments_else_the_dask_config() -> None:
    assert ClusterSpec().connect_timeout == 10
    assert ClusterSpec().worker_wait == 60
    assert ClusterSpec(cluster="slurm").worker_wait is None  # jobs wait in the batch queue
    assert ClusterSpec(cluster="slurm", worker_timeout=600).worker_wait == 600
    config = {"diffsweep.connect-timeout": "30s", "diffsweep.worker-timeout": "2 minutes"}
    with dask.config.set(config):
        assert ClusterSpec().connect_timeout == 30
        assert ClusterSpec().worker_wait == 120
        assert ClusterSpec(connect_timeout=3, worker_timeout=4).worker_wait == 4


def test_cluster_errors_are_also_the_builtin_errors(tmp_path: Path) -> None:
    with pytest.raises(ConnectionError):
        read_scheduler_file(tmp_path / "missing.json")
    with pytest.raises(ValueError):
        ClusterSpec(jobs=1)


# --------------------------------------------------------------------------- addresses, TLS


@pytest.mark.parametrize(
    ("address", "warns"),
    [
        ("tcp://10.1.2.3:8786", True),
        ("tcp://scheduler.example.org:8786", True),
        ("10.1.2.3:8786", True),  # no protocol means tcp
        ("tcp://127.0.0.1:8786", False),
        ("tcp://localhost:8786", False),
        ("tcp://[::1]:8786", False),
        ("tls://10.1.2.3:8786", False),
        ("inproc://10.1.2.3/1/1", False),
    ],
)
def test_plain_tcp_to_another_machine_warns(address: str, warns: bool) -> None:
    message = insecure_address_warning(address)
    assert (message is not None) == warns
    if message:
        assert address in message and "tls://" in message


def test_cli_echoes_the_insecure_warning_to_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warning is shown before connecting; the connection itself is faked (no network)."""
    import pipeline.cluster.connect as connect

    seen: list[str] = []

    def refuse(address, security, timeout):
        seen.append(address)
        raise OSError("not connecting in this test")

    monkeypatch.setattr(connect, "_identify", refuse)
    result = CliRunner().invoke(
        _command_with_cluster_options(), ["--scheduler", "tcp://10.9.8.7:8786"]
    )
    assert seen == ["tcp://10.9.8.7:8786"]
    assert "Warning: connecting to tcp://10.9.8.7:8786 over plain tcp://" in result.output
    assert isinstance(result.exception, ClusterError)
    assert insecure_address_warning("tcp://10.9.8.7:8786") in result.output


def test_security_from_the_tls_files(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    spec = ClusterSpec(
        tls_ca_file=str(files["ca"]),
        tls_cert=str(files["client"]),
        tls_key=str(files["client-key"]),
    )
    security = spec.security()
    assert security is not None and security.require_encryption
    assert security.tls_ca_file == str(files["ca"])
    assert security.tls_client_cert == str(files["client"])
    assert security.tls_client_key == str(files["client-key"])
    with pytest.raises(ClusterConfigError, match=r"`tls_key` .*nope\.pem: no such file"):
        ClusterSpec(
            tls_ca_file=str(files["ca"]), tls_cert=str(files["client"]),
            tls_key=str(tmp_path / "nope.pem"),
        )  # fmt: skip


def test_security_from_dask_config(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    assert ClusterSpec().security() is None
    config = {
        "distributed.comm.tls.ca-file": str(files["ca"]),
        "distributed.comm.tls.client.cert": str(files["client"]),
        "distributed.comm.tls.client.key": str(files["client-key"]),
    }
    with dask.config.set(config):
        security = ClusterSpec().security()
    assert security is not None and security.tls_client_key == str(files["client-key"])


def test_read_scheduler_file(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.json"
    with pytest.raises(ClusterError, match=r"`scheduler_file` .*: no such file"):
        read_scheduler_file(path)
    path.write_text("{not json")
    with pytest.raises(ClusterError, match="cannot read it"):
        read_scheduler_file(path)
    path.write_text('{"type": "Scheduler"}')
    with pytest.raises(ClusterError, match="no 'address'"):
        read_scheduler_file(path)
    path.write_text('{"address": "tls://127.0.0.1:1234"}')
    assert read_scheduler_file(path) == "tls://127.0.0.1:1234"


def test_cli_names_the_flag_of_a_missing_scheduler_file(tmp_path: Path) -> None:
    from pipeline.cli.main import cli

    (tmp_path / "s.yaml").write_text((ROOT / "sweeps" / "ftcs-1d-stability.yaml").read_text())
    missing = tmp_path / "gone.json"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(tmp_path / "s.yaml"),
            "-o",
            str(tmp_path / "x.zarr"),
            "--scheduler-file",
            str(missing),
        ],
    )
    assert result.exit_code == 2, result.output
    assert (
        result.output.strip().splitlines()[-1] == f"Error: --scheduler-file {missing}: no such file"
    )
    assert not (tmp_path / "x.zarr").exists()


def test_doctests_of_the_cluster_modules() -> None:
    import pipeline.cluster.connect
    import pipeline.cluster.spec
    import pipeline.store_probe

    for module in (pipeline.cluster.spec, pipeline.cluster.connect, pipeline.store_probe):
        failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert attempted > 0 and failed == 0, module.__name__


# --------------------------------------------------------------------------- store


def test_absolute_store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_store_path("out/x.zarr") == str(tmp_path / "out" / "x.zarr")
    assert absolute_store_path("/data/x.zarr") == "/data/x.zarr"
    assert absolute_store_path("~/x.zarr") == os.path.expanduser("~/x.zarr")
    for url in ("s3://bucket/x.zarr", "memory://x.zarr", "gcs://b/x.zarr", "file:///d/x.zarr"):
        assert absolute_store_path(url) == url


@pytest.fixture(scope="module")
def local_client():
    with open_client(ClusterSpec(workers=1)) as client:
        yield client


@pytest.mark.cluster
def test_local_cluster_and_describe(local_client) -> None:
    line = describe(local_client)
    assert line.startswith("dask scheduler tcp://127.0.0.1:")
    assert "1 worker, 1 thread" in line
    assert local_client.submit(lambda: 42).result() == 42


@pytest.mark.cluster
def test_store_probe_leaves_nothing_behind(local_client, tmp_path: Path) -> None:
    existing = tmp_path / "existing.zarr"
    existing.mkdir()
    check_store_writable(local_client, str(existing))
    check_store_writable(local_client, str(tmp_path / "new" / "x.zarr"))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["existing.zarr", "new"]


@pytest.mark.cluster
def test_store_probe_fails_clearly_when_workers_cannot_write(local_client, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match=r"workers cannot write to the store .*a-file/x\.zarr"):
        check_store_writable(local_client, str(blocker / "x.zarr"))


@pytest.mark.cluster
def test_store_probe_detects_storage_workers_do_not_share(local_client) -> None:
    # memory:// lives in one process: the worker process writes where this one cannot see
    with pytest.raises(StoreError, match="memory:// lives inside one process"):
        check_store_writable(local_client, "memory://diffsweep-probe-test/x.zarr")


def test_store_probe_in_process_memory_filesystem() -> None:
    with open_client(ClusterSpec(workers=1, processes=False)) as client:
        check_store_writable(client, "memory://diffsweep-probe-test/x.zarr")
        check_store_writable(client, "memory://diffsweep-probe-test/x.zarr", shared=False)


# --------------------------------------------------------------------------- CLI options


def _command_with_cluster_options() -> click.Command:
    """A command that prints the spec and storage options it receives, then connects."""

    @click.command()
    @cluster_options
    @click.option("--connect/--no-connect", default=True)
    def command(cluster: ClusterSpec, storage_options: dict, connect: bool) -> None:
        click.echo(f"spec={dataclasses.asdict(cluster)}")
        click.echo(f"storage={storage_options}")
        if connect:
            with open_client(
                cluster, warn=lambda m: click.echo(f"Warning: {m}", err=True)
            ) as client:
                click.echo(describe(client))

    return command


def test_every_flag_fills_its_field_of_the_spec(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    tls = [
        "--tls-ca-file",
        str(files["ca"]),
        "--tls-cert",
        str(files["client"]),
        "--tls-key",
        str(files["client-key"]),
    ]
    cases = [
        (["--scheduler", "tls://10.1.2.3:8786", *tls, "--connect-timeout", "30s", "--worker-timeout", "2m"],
         {"scheduler": "tls://10.1.2.3:8786", "tls_ca_file": str(files["ca"]),
          "tls_cert": str(files["client"]), "tls_key": str(files["client-key"]),
          "connect_timeout": 30.0, "worker_timeout": 120.0}),
        (["--scheduler-file", "s.json"], {"scheduler_file": "s.json"}),
        (["--workers", "3"], {"workers": 3}),
        (["--workers", "3", "--threads", "--dashboard"], {"workers": 3, "processes": False, "dashboard": True}),
        (["--processes", "--no-dashboard"], {"processes": True, "dashboard": False}),
        (["--cluster", "pbs", "--jobs", "2", "--maximum-jobs", "5"],
         {"cluster": "pbs", "jobs": 2, "maximum_jobs": 5}),
    ]  # fmt: skip
    for args, expected in cases:
        result = CliRunner().invoke(_command_with_cluster_options(), [*args, "--no-connect"])
        assert result.exit_code == 0, result.output
        spec = eval(result.output.splitlines()[0].removeprefix("spec="))
        defaults = dataclasses.asdict(ClusterSpec())
        assert {k: v for k, v in spec.items() if v != defaults[k]} == expected, args


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduler", "tcp://127.0.0.1:1", "--scheduler-file", "s.json"],
         "--scheduler and --scheduler-file are mutually exclusive"),
        (["--cluster", "slurm", "--scheduler", "tcp://127.0.0.1:1"], "--scheduler and --cluster are mutually exclusive"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
         "--workers sizes the local cluster only; with --cluster use --jobs"),
        (["--no-dashboard", "--scheduler", "tcp://127.0.0.1:1"],
         "--dashboard chooses the local cluster's dashboard; a running scheduler"),
        (["--jobs", "2"], "--jobs needs --cluster"),
        (["--maximum-jobs", "2"], "--maximum-jobs needs --cluster"),
        (["--cluster", "slurm", "--jobs", "3", "--maximum-jobs", "2"], "--jobs 3 is larger than --maximum-jobs 2"),
        (["--cluster", "yarn"], "--cluster 'yarn' is not a batch system"),
        (["--workers", "0"], "--workers 0: expected at least 1"),
        (["--worker-timeout", "0"], "--worker-timeout 0: expected a positive number"),
        (["--worker-timeout", "soon"], "expected seconds such as 30, 30s or 2m"),
        (["--storage-option", "anon"], "expected KEY=VALUE"),
        (["--tls-ca-file", "missing.pem", "--tls-cert", "missing.pem"], "--tls-ca-file missing.pem: no such file"),
        (["--tls-cert", "client.pem"], "TLS needs both --tls-ca-file and --tls-cert (missing --tls-ca-file)"),
    ],
)  # fmt: skip
def test_contradictory_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(_command_with_cluster_options(), args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "spec=" not in result.output  # refused before the command body
    assert "`" not in result.output.replace("`dask worker`", "")


def test_run_refuses_contradictory_cluster_options_before_reading_anything(tmp_path: Path) -> None:
    from pipeline.cli.main import cli

    result = CliRunner().invoke(
        cli, ["run", str(tmp_path / "absent.yaml"), "-o", str(tmp_path / "x.zarr"), "--jobs", "2"]
    )
    assert result.exit_code == 2
    assert "--jobs needs --cluster" in result.output
    assert not (tmp_path / "x.zarr").exists()


def test_storage_options_parse_and_nest() -> None:
    options = ("anon=true", "client_kwargs.endpoint_url=http://127.0.0.1:9000", "block_size=5")
    with dask.config.set({"diffsweep.storage-options": {"anon": False, "key": "abc"}}):
        result = parse_storage_options(options)
    assert result == {
        "anon": True,
        "key": "abc",
        "block_size": 5,
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"},
    }
    assert parse_storage_options(()) == {}


def test_storage_options_reach_the_command() -> None:
    result = CliRunner().invoke(
        _command_with_cluster_options(),
        ["--storage-option", "anon=true", "--storage-option", "a.b=2", "--no-connect"],
    )
    assert result.exit_code == 0, result.output
    assert "storage={'anon': True, 'a': {'b': 2}}" in result.output


def test_a_probe_that_never_ran_is_not_blamed_on_the_store(tmp_path: Path) -> None:
    """Workers gone (or the scheduler lost) while the probe waits: its future is cancelled.
    That is the cluster's news, for open_client to report, not "cannot write the store"."""
    import threading
    from concurrent.futures import CancelledError

    from distributed import Future

    with open_client(ClusterSpec(workers=1, processes=False)) as client:
        client.retire_workers(list(client.scheduler_info()["workers"]))
        outcome: list[BaseException] = []

        def probe() -> None:
            try:
                check_store_writable(client, str(tmp_path / "x.zarr"))
            except BaseException as error:
                outcome.append(error)

        thread = threading.Thread(target=probe)
        thread.start()
        deadline = time.monotonic() + 30
        while not client.futures and time.monotonic() < deadline:
            time.sleep(0.05)
        client.cancel([Future(key, client) for key in list(client.futures)], reason="no workers")
        thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], CancelledError), outcome
    assert not isinstance(outcome[0], StoreError)


def test_no_worker_for_the_worker_timeout_mid_run_cancels_the_wait() -> None:
    """A task waiting for a worker that never comes is given up after ``worker_timeout``."""
    from pipeline.errors import WorkersLostError

    start = None
    with pytest.raises(WorkersLostError) as caught:
        with open_client(ClusterSpec(workers=1, processes=False, worker_timeout=2)) as client:
            client.retire_workers(list(client.scheduler_info()["workers"]))
            start = time.monotonic()
            client.submit(sum, [1, 2]).result(timeout=30)  # no worker to run it: waits
    assert start is not None
    assert 2 <= time.monotonic() - start < 2 + 5
    assert "lost all its workers: none came back within 2 s (`worker_timeout`)" in str(caught.value)
    assert isinstance(caught.value, ConnectionError)


def test_workers_that_run_nothing_for_the_worker_timeout_cancel_the_wait() -> None:
    """A task that the scheduler never hands to its worker (here: it asks for a resource
    no worker has, as a stalled scheduler would leave it) is given up after
    ``worker_timeout`` too, instead of being waited for for ever."""
    from pipeline.errors import WorkersLostError

    start = None
    with pytest.raises(WorkersLostError) as caught:
        with open_client(ClusterSpec(workers=1, processes=False, worker_timeout=2)) as client:
            start = time.monotonic()
            client.submit(sum, [1, 2], resources={"unobtainium": 1}).result(timeout=30)
    assert start is not None
    assert 2 <= time.monotonic() - start < 2 + 5
    assert "has 1 worker but ran none of the waiting tasks for 2 s (`worker_timeout`)" in str(caught.value)


def test_a_busy_worker_is_not_a_stalled_one() -> None:
    """A task that runs longer than ``worker_timeout`` is waited for."""
    with open_client(ClusterSpec(workers=1, processes=False, worker_timeout=1)) as client:
        assert client.submit(time.sleep, 3.5).result(timeout=30) is None
