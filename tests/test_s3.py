"""Results stores on object storage, for real: the ``diffsweep`` console script writes,
resumes and reads stores through fsspec/s3fs against a real S3 API — moto's server,
started here on 127.0.0.1 on a free port and stopped at the end — and a fresh Python
that never imports diffsweep reads them back with plain ``xarray.open_zarr``. Nothing
of the filesystem layer is mocked: every byte goes over HTTP to the server.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner, Result
from conftest import SMALL_SWEEP, compute_store, diffsweep, fresh_python

from pipeline.cli.main import cli

BUCKET = "diffsweep-test"
KEY, SECRET = "diffsweep-key", "diffsweep-secret"

#: the data variables of SMALL_SWEEP's store, each chunked like the block grid
DATA_VARIABLES = ("distance", "mass_error", "overshoot", "growth", "error", "status", "field")

#: keep every request of every process on this machine: no instance-metadata lookups
#: for credentials, no proxy between the client and the server
CLIENT_ENV = {"AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}

COMPARE_IN_FRESH_PROCESS = """
import json, sys
import numpy as np
import xarray as xr
remote = xr.open_zarr({url!r}, storage_options={options!r})
local = xr.open_zarr({local!r})
def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "OUS":
        return a.tolist() == b.tolist()
    return a.tobytes() == b.tobytes()
names = sorted([*local.data_vars, *local.coords])
print(json.dumps({{
    "leaked": sorted(m for m in sys.modules if m == "pipeline" or m.startswith("pipeline.")),
    "names": names,
    "remote_names": sorted([*remote.data_vars, *remote.coords]),
    "different": [n for n in names if not same_bits(remote[n].values, local[n].values)],
    "sweep_hash": [remote.attrs["sweep_hash"], local.attrs["sweep_hash"]],
    "not_computed": int((remote.status < 0).sum()),
    "statuses": int(remote.status.size),
}}))
"""


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A real S3 API (moto's server mode) on 127.0.0.1, on a free port, stopped afterwards."""
    from moto.server import ThreadedMotoServer

    requests_log = logging.getLogger("werkzeug")  # one line per request otherwise
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        assert host == "127.0.0.1"
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        requests_log.setLevel(level)


@pytest.fixture(scope="module")
def storage_options(endpoint: str) -> dict[str, str]:
    return {"endpoint_url": endpoint, "key": KEY, "secret": SECRET}


@pytest.fixture(scope="module")
def option_args(storage_options: dict[str, str]) -> list[str]:
    """The same options as ``--storage-option KEY=VALUE`` arguments."""
    return [arg for key, value in storage_options.items() for arg in ("--storage-option", f"{key}={value}")]


@pytest.fixture(scope="module")
def s3(storage_options: dict[str, str]) -> object:
    """This process's own s3fs client, with the test bucket created."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **storage_options)
    fs.mkdir(BUCKET)
    return fs


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("s3-sweep") / "small.yaml"
    path.write_text(SMALL_SWEEP)
    return path


@pytest.fixture(scope="module")
def local_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same sweep computed into a store on local disk."""
    return compute_store(SMALL_SWEEP, tmp_path_factory.mktemp("s3-local") / "small.zarr")


@pytest.fixture(scope="module")
def s3_store(s3: object, sweep_file: Path, option_args: list[str]) -> str:
    """The sweep computed by `diffsweep run` on a local dask cluster straight into S3:
    the client writes the template, the worker process writes the blocks."""
    url = f"s3://{BUCKET}/small.zarr"
    run = diffsweep(
        "run", str(sweep_file), "-o", url, "--workers", "1", "--no-progress", *option_args, env=CLIENT_ENV
    )
    assert run.returncode == 0, run.stderr
    assert "Computed 6 of 6 blocks" in run.stdout, run.stdout
    return url


def objects(fs: object, url: str) -> dict[str, str]:
    """Every object under ``url`` with its ETag (the server's digest of its bytes)."""
    found = fs.find(url.removeprefix("s3://"), detail=True)  # type: ignore[attr-defined]
    return {name: info["ETag"] for name, info in found.items()}


def in_process(*args: str) -> Result:
    """The command line run in this process: for the commands that only check or read."""
    return CliRunner().invoke(cli, list(args))


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def same_bits(a: xr.Dataset, b: xr.Dataset) -> list[str]:
    """Names of the variables and coordinates of ``b`` whose values differ in ``a`` by any bit."""
    different = []
    for name in [*b.data_vars, *b.coords]:
        x, y = np.asarray(a[name].values), np.asarray(b[name].values)
        if x.dtype.kind in "OUS":
            equal = x.dtype == y.dtype and x.tolist() == y.tolist()
        else:
            equal = x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        if not equal:
            different.append(str(name))
    return different


@pytest.mark.slow
@pytest.mark.cluster
def test_run_to_s3_reads_back_bit_identical_with_plain_xarray_and_s3fs(
    s3: object, s3_store: str, local_store: str, storage_options: dict[str, str]
) -> None:
    keys = objects(s3, s3_store)
    # one object per block and variable, plus the completion record of every block
    for name in (*DATA_VARIABLES, "_diffsweep/completed"):
        chunks = [k for k in keys if re.fullmatch(rf"{BUCKET}/small\.zarr/{name}/c/\d+/\d+(/0)?", k)]
        assert len(chunks) == 6, (name, sorted(keys))
    # the worker's write probe was removed again: the bucket holds the store only
    assert s3.ls(BUCKET, refresh=True) == [f"{BUCKET}/small.zarr"]  # type: ignore[attr-defined]

    opened = fresh_python(
        COMPARE_IN_FRESH_PROCESS.format(url=s3_store, options=storage_options, local=local_store)
    )
    assert opened.returncode == 0, opened.stderr
    info = json.loads(opened.stdout)
    assert info["leaked"] == []
    assert set(DATA_VARIABLES) <= set(info["names"])
    assert info["remote_names"] == info["names"]
    assert info["different"] == []
    assert info["sweep_hash"][0] == info["sweep_hash"][1]
    assert info["statuses"] == 6 * 8 * 3 and info["not_computed"] == 0


@pytest.mark.slow
def test_resume_on_s3_recomputes_exactly_the_unfinished_blocks(
    s3: object,
    s3_store: str,
    local_store: str,
    sweep_file: Path,
    option_args: list[str],
    storage_options: dict[str, str],
) -> None:
    url = f"s3://{BUCKET}/interrupted.zarr"
    root = url.removeprefix("s3://")
    s3.copy(s3_store.removeprefix("s3://"), root, recursive=True)  # type: ignore[attr-defined]
    assert objects(s3, url).keys() == {k.replace("small.zarr", "interrupted.zarr") for k in objects(s3, s3_store)}
    # As an interrupted run leaves it: block (0, 1) never written, block (2, 0) written
    # but killed before its completion record was stored.
    unwritten = [f"{root}/{name}/c/0/1/0" for name in DATA_VARIABLES]
    unrecorded = [f"{root}/_diffsweep/completed/c/0/1", f"{root}/_diffsweep/completed/c/2/0"]
    s3.rm([*unwritten, *unrecorded])  # type: ignore[attr-defined]
    assert not any(s3.exists(k) for k in [*unwritten, *unrecorded])  # type: ignore[attr-defined]
    with xr.open_zarr(url, storage_options=storage_options) as damaged:
        # the unwritten block reads as not computed: 2 coefficients x 4 step sizes x 3 step counts
        assert int(damaged.status.isnull().sum()) == 2 * 4 * 3  # masked by its _FillValue

    status = in_process("status", url, "--json", *option_args)
    assert status.exit_code == 0, status.output
    assert (json.loads(status.stdout)["blocks_done"], json.loads(status.stdout)["blocks_total"]) == (4, 6)

    resumed = diffsweep(
        "run", str(sweep_file), "-o", url, "--resume", "--in-process", "--no-progress", *option_args,
        env=CLIENT_ENV,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"^Computed 2 of 6 blocks in .* \(4 were already stored\)$", resumed.stdout, re.M), resumed.stdout
    assert all(s3.exists(k) for k in [*unwritten, *unrecorded])  # type: ignore[attr-defined]

    with xr.open_zarr(url, storage_options=storage_options) as remote, xr.open_zarr(local_store) as local:
        assert same_bits(remote, local) == []
        assert json.loads(remote.attrs["run_history"])[-1]["blocks_computed"] == 2

    status = in_process("status", url, *option_args)
    assert status.exit_code == 0, status.output
    assert "6 / 6 (100%) — complete" in status.stdout


def test_recommend_and_status_read_an_s3_store_as_they_read_a_local_one(
    s3_store: str, local_store: str, option_args: list[str]
) -> None:
    remote = diffsweep("recommend", s3_store, *option_args, env=CLIENT_ENV)
    local = in_process("recommend", local_store)
    assert remote.returncode == 0, remote.stderr
    assert local.exit_code == 0, local.output
    # the header says how complete the store is, from its completion record read with
    # the storage options; the table holds every recommendation
    assert "(complete: 6 of 6 blocks, 48 of 48 runs (100%) computed)" in remote.stdout
    assert remote.stdout == local.stdout and len(remote.stdout.splitlines()) > 3

    status = in_process("status", s3_store, "--json", *option_args)
    assert status.exit_code == 0, status.output
    info = json.loads(status.stdout)
    assert (info["blocks_done"], info["blocks_total"], info["complete"]) == (6, 6, True)
    assert info["sweep"] == "small" and info["store"] == s3_store


def test_an_existing_s3_store_is_refused_untouched_without_resume_or_overwrite(
    s3: object, s3_store: str, sweep_file: Path, option_args: list[str]
) -> None:
    before = objects(s3, s3_store)
    refused = in_process("run", str(sweep_file), "-o", s3_store, "--in-process", *option_args)
    assert refused.exit_code == 2
    assert "already exists; pass --resume" in one_error_line(refused.stderr)
    assert objects(s3, s3_store) == before


def test_a_missing_bucket_is_refused_in_one_line_and_not_created(
    s3: object, sweep_file: Path, option_args: list[str]
) -> None:
    url = "s3://no-such-bucket/x.zarr"
    refused = in_process("run", str(sweep_file), "-o", url, "--in-process", *option_args)
    assert refused.exit_code == 2
    line = one_error_line(refused.stderr)
    assert url in line and "bucket does not exist" in line
    assert not s3.exists("no-such-bucket")  # type: ignore[attr-defined]

    missing = in_process("status", f"s3://{BUCKET}/missing.zarr", *option_args)
    assert missing.exit_code == 2
    assert "no results store" in one_error_line(missing.stderr)



@pytest.mark.slow
def test_a_consolidation_interrupted_on_s3_loses_nothing_and_resume_finishes_it(
    s3: object, s3_store: str, local_store: str, sweep_file: Path, option_args: list[str],
    storage_options: dict[str, str],
) -> None:
    from pipeline import consolidate
    from pipeline.planning import plan as make_plan
    from pipeline.sweep import parse_sweep

    url = f"s3://{BUCKET}/consolidated.zarr"
    root = url.removeprefix("s3://")
    s3.copy(s3_store.removeprefix("s3://"), root, recursive=True)  # type: ignore[attr-defined]

    class Interrupted(Exception):
        pass

    def stop_after_status_flipped(step: str) -> None:
        if step == "flipped status":
            raise Interrupted(step)

    plan = make_plan(parse_sweep(sweep_file.read_text()), parallelism=1)
    with pytest.raises(Interrupted):
        consolidate.consolidate(url, plan, storage_options, step=stop_after_status_flipped)
    with xr.open_zarr(url, storage_options=storage_options) as remote, xr.open_zarr(local_store) as local:
        assert same_bits(remote, local) == []  # every value still readable, identical

    resumed = diffsweep(
        "run", str(sweep_file), "-o", url, "--resume", "--no-progress", *option_args, env=CLIENT_ENV,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "Nothing to compute" in resumed.stdout
    keys = objects(s3, url)
    for name in (*DATA_VARIABLES, "_diffsweep/completed"):  # one object per array, the block chunks deleted
        assert [k for k in keys if k.startswith(f"{root}/{name}/c")] == [f"{root}/{name}/c.0.0" + (".0" if name != "_diffsweep/completed" else "")], name
    opened = fresh_python(COMPARE_IN_FRESH_PROCESS.format(url=url, options=storage_options, local=local_store))
    assert opened.returncode == 0, opened.stderr
    info = json.loads(opened.stdout)
    assert info["different"] == [] and info["remote_names"] == info["names"]
    verified = in_process("verify", url, *option_args)
    assert verified.exit_code == 0, verified.output
