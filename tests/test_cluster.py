"""pipeline.cluster and the cluster options, without external scheduler processes."""

from __future__ import annotations

import os
from pathlib import Path

import click
import dask
import pytest
from certs import make_tls_files
from click.testing import CliRunner

from pipeline.cli.cluster_options import (
    CLUSTER_OPTION_NAMES,
    client_from_options,
    cluster_options,
    pop_cluster_options,
    storage_options_from,
)
from pipeline.cluster import (
    JOBQUEUE_KINDS,
    absolute_store_path,
    check_store_writable,
    describe,
    insecure_address_warning,
    job_script,
    open_client,
    read_scheduler_file,
    security_from_options,
)
from pipeline.errors import ClusterError, StoreError

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


def test_job_script_incomplete_configuration_is_a_cluster_error() -> None:
    with dask.config.set({"jobqueue.pbs.cores": None, "jobqueue.pbs.memory": None}):
        with pytest.raises(ClusterError, match="--cluster pbs: You must specify"):
            job_script("pbs")
    with pytest.raises(ClusterError, match="unknown cluster kind 'yarn'"):
        job_script("yarn")


@pytest.mark.parametrize("kind", list(JOBQUEUE_KINDS))
def test_every_cluster_kind_renders_a_job_script(kind: str) -> None:
    sizes = {"cores": 2, "memory": "4GB", "disk": "1GB"} if kind == "htcondor" else {}
    with dask.config.set({f"jobqueue.{kind}.cores": 2, f"jobqueue.{kind}.memory": "4GB"}):
        assert "distributed.cli.dask_worker" in job_script(kind, **sizes)


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
    import pipeline.cluster as cluster

    seen: list[str] = []

    def fake_client(address, **kwargs):
        seen.append(address)
        raise OSError("not connecting in this test")

    monkeypatch.setattr("distributed.Client", fake_client)
    command = _command_with_cluster_options()
    result = CliRunner().invoke(command, ["--scheduler", "tcp://10.9.8.7:8786"])
    assert seen == ["tcp://10.9.8.7:8786"]
    assert "Warning: connecting to tcp://10.9.8.7:8786 over plain tcp://" in result.output
    assert isinstance(result.exception, ClusterError)
    assert cluster.insecure_address_warning("tcp://10.9.8.7:8786") in result.output


def test_security_from_options(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    security = security_from_options(
        str(files["ca"]), str(files["client"]), str(files["client-key"])
    )
    assert security is not None and security.require_encryption
    assert security.tls_ca_file == str(files["ca"])
    assert security.tls_client_cert == str(files["client"])
    with pytest.raises(ClusterError, match="missing --tls-ca-file"):
        security_from_options(None, str(files["client"]), None)
    with pytest.raises(ClusterError, match=r"--tls-key .*: no such file"):
        security_from_options(str(files["ca"]), str(files["client"]), str(tmp_path / "nope.pem"))


def test_security_from_dask_config(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    assert security_from_options() is None
    config = {
        "distributed.comm.tls.ca-file": str(files["ca"]),
        "distributed.comm.tls.client.cert": str(files["client"]),
        "distributed.comm.tls.client.key": str(files["client-key"]),
    }
    with dask.config.set(config):
        security = security_from_options()
    assert security is not None and security.tls_client_key == str(files["client-key"])


def test_read_scheduler_file(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.json"
    with pytest.raises(ClusterError, match="no such file"):
        read_scheduler_file(path)
    path.write_text("{not json")
    with pytest.raises(ClusterError, match="cannot read it"):
        read_scheduler_file(path)
    path.write_text('{"type": "Scheduler"}')
    with pytest.raises(ClusterError, match="no 'address'"):
        read_scheduler_file(path)
    path.write_text('{"address": "tls://127.0.0.1:1234"}')
    assert read_scheduler_file(path) == "tls://127.0.0.1:1234"


def test_choosing_two_schedulers_is_an_error() -> None:
    with pytest.raises(ClusterError, match="choose one of scheduler / scheduler_file"):
        with open_client(scheduler="tcp://127.0.0.1:1", scheduler_file="x.json"):
            pass


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
    with open_client(workers=1) as client:
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
    with open_client(workers=1, processes=False) as client:
        check_store_writable(client, "memory://diffsweep-probe-test/x.zarr")
        check_store_writable(client, "memory://diffsweep-probe-test/x.zarr", shared=False)


# --------------------------------------------------------------------------- CLI options


def _command_with_cluster_options() -> click.Command:
    @click.command()
    @cluster_options
    def command(**options):
        cluster = pop_cluster_options(options)
        assert not options
        click.echo(f"storage={storage_options_from(cluster)}")
        with client_from_options(timeout=1, **cluster) as client:
            click.echo(describe(client))

    return command


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduler", "tcp://127.0.0.1:1", "--scheduler-file", "s.json"], "mutually exclusive"),
        (["--cluster", "slurm", "--scheduler", "tcp://127.0.0.1:1"], "mutually exclusive"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "sizes the local cluster only"),
        (["--jobs", "2"], "--jobs needs --cluster"),
        (["--maximum-jobs", "2"], "--maximum-jobs needs --cluster"),
        (["--cluster", "slurm", "--jobs", "3", "--maximum-jobs", "2"], "larger than"),
        (["--cluster", "yarn"], "Invalid value for '--cluster'"),
        (["--workers", "0"], "Invalid value for '--workers'"),
        (["--storage-option", "anon"], "expected KEY=VALUE"),
        (["--tls-ca-file", "missing.pem"], "does not exist"),
    ],
)
def test_contradictory_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(_command_with_cluster_options(), args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_tls_options_must_come_together(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    result = CliRunner().invoke(
        _command_with_cluster_options(), ["--tls-cert", str(files["client"])]
    )
    assert result.exit_code == 2
    assert "needs both --tls-ca-file and --tls-cert" in result.output


def test_storage_options_parse_and_nest() -> None:
    options = ("anon=true", "client_kwargs.endpoint_url=http://127.0.0.1:9000", "block_size=5")
    with dask.config.set({"diffsweep.storage-options": {"anon": False, "key": "abc"}}):
        result = storage_options_from({"storage_option": options})
    assert result == {
        "anon": True,
        "key": "abc",
        "block_size": 5,
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"},
    }
    assert storage_options_from({}) == {}


def test_option_names_match_the_decorator() -> None:
    names = {param.name for param in _command_with_cluster_options().params}
    assert names == set(CLUSTER_OPTION_NAMES)


def test_run_has_every_cluster_option() -> None:
    from pipeline.cli.run import run

    assert set(CLUSTER_OPTION_NAMES) <= {param.name for param in run.params}
