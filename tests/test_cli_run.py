"""`diffsweep run / plan / status` end to end: the real console script, real stores."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner
from conftest import SWEEPS, diffsweep, fresh_python, tree_digest
from sweep_cases import BAD_SWEEPS, BAD_SWEEPS_DIR, GOOD_MINIMAL, INTERRUPTIBLE

from pipeline.cli.main import cli

DOCUMENTED_VARIABLES = {"distance", "mass_error", "overshoot", "growth", "error", "status"}

OPEN_IN_FRESH_PROCESS = """
import json, sys
import xarray as xr
ds = xr.open_zarr({path!r})
leaked = sorted(m for m in sys.modules if m == "pipeline" or m.startswith("pipeline."))
print(json.dumps({{
    "leaked": leaked,
    "dims": dict(ds.sizes),
    "variables": sorted(ds.data_vars),
    "coords": sorted(ds.coords),
    "attrs": sorted(ds.attrs),
    "status_dtype": str(ds.status.encoding["dtype"]),
    "flag_meanings": ds.status.attrs.get("flag_meanings"),
    "not_computed": int(ds.status.isnull().sum()),  # masked by its _FillValue
    "units": {{name: ds[name].attrs.get("units") for name in [*ds.data_vars, *ds.coords]}},
}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.stem)
def test_every_example_sweep_plans_runs_and_opens_without_diffsweep(sweep: Path, tmp_path: Path) -> None:
    plan = diffsweep("plan", str(sweep), "--json")
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)

    store = tmp_path / f"{sweep.stem}.zarr"
    run = diffsweep("run", str(sweep), "-o", str(store), "--no-progress")
    assert run.returncode == 0, run.stderr
    assert f"Computed {planned['blocks']} of {planned['blocks']} blocks" in run.stdout
    assert "Traceback" not in run.stderr

    opened = fresh_python(OPEN_IN_FRESH_PROCESS.format(path=str(store)))
    assert opened.returncode == 0, opened.stderr
    info = json.loads(opened.stdout)
    assert info["leaked"] == []
    assert {name: info["dims"][name] for name in planned["axes"]} == planned["axes"]
    assert DOCUMENTED_VARIABLES <= set(info["variables"])
    assert {"cfl", "step_size", "time", "steps", "coefficient"} <= set(info["coords"])
    assert {"sweep_name", "sweep_hash", "sweep_definition", "versions", "run_history"} <= set(info["attrs"])
    assert info["status_dtype"] == "int8" and info["not_computed"] == 0
    assert info["flag_meanings"] == "equilibrium transient oscillating divergent"
    assert all(units is not None for units in info["units"].values()), info["units"]

    status = diffsweep("status", str(store))
    assert status.returncode == 0 and f"{planned['blocks']} / {planned['blocks']}" in status.stdout


@pytest.mark.slow
def test_dask_and_in_process_executors_write_identical_stores(tmp_path: Path) -> None:
    sweep = tmp_path / "minimal.yaml"
    sweep.write_text(GOOD_MINIMAL)
    runner = CliRunner()
    local = runner.invoke(cli, ["run", str(sweep), "-o", str(tmp_path / "a.zarr"), "--in-process"])
    assert local.exit_code == 0, local.output
    dask = diffsweep("run", str(sweep), "-o", str(tmp_path / "b.zarr"), "--workers", "2")
    assert dask.returncode == 0, dask.stderr
    a, b = (xr.open_zarr(tmp_path / name).load() for name in ("a.zarr", "b.zarr"))
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    assert (a.status >= 0).all()




def _completed(store: Path) -> int:
    try:
        return int(np.count_nonzero(zarr.open_group(store, mode="r")["_diffsweep/completed"][...]))
    except Exception:  # not created yet
        return 0


@pytest.mark.slow
def test_resume_after_sigkill_recomputes_only_missing_blocks(tmp_path: Path) -> None:
    sweep = tmp_path / "interruptible.yaml"
    sweep.write_text(INTERRUPTIBLE)
    store = tmp_path / "killed.zarr"
    process = subprocess.Popen(
        ["diffsweep", "run", str(sweep), "-o", str(store), "--workers", "1", "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while _completed(store) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = _completed(store)
    assert 3 <= done_before < 24, "the run was not interrupted in the middle"

    resumed = diffsweep("run", str(sweep), "-o", str(store), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    computed, total, skipped = map(
        int, re.search(r"Computed (\d+) of (\d+) blocks in .* \((\d+) were already stored", resumed.stdout).groups()
    )
    assert total == 24 and skipped >= done_before and computed == total - skipped < total

    clean = tmp_path / "clean.zarr"
    assert CliRunner().invoke(cli, ["run", str(sweep), "-o", str(clean), "--in-process"]).exit_code == 0
    xr.testing.assert_identical(
        xr.open_zarr(clean).load().drop_attrs(), xr.open_zarr(store).load().drop_attrs()
    )


# -- refusals: exit 2, one line, no traceback, nothing written ------------------------------


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def existing_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One store shared by the refusal tests: each of them checks it is left byte-identical."""
    tmp_path = tmp_path_factory.mktemp("existing")
    sweep = tmp_path / "minimal.yaml"
    sweep.write_text(GOOD_MINIMAL)
    store = tmp_path / "existing.zarr"
    assert CliRunner().invoke(cli, ["run", str(sweep), "-o", str(store), "--in-process"]).exit_code == 0
    return sweep, store, tree_digest(store)


@pytest.mark.parametrize(("name", "expected"), BAD_SWEEPS, ids=[name for name, _ in BAD_SWEEPS])
def test_bad_sweep_files_are_refused_before_anything_is_written(
    name: str, expected: str, tmp_path: Path, existing_store
) -> None:
    _, store, digest = existing_store
    fresh = tmp_path / "never-created.zarr"
    runner = CliRunner()
    for target in (fresh, store):
        line = _one_line_error(runner.invoke(cli, ["run", str(BAD_SWEEPS_DIR / name), "-o", str(target), "--overwrite"]))
        assert expected in line
    assert not fresh.exists()
    assert tree_digest(store) == digest
    assert expected in _one_line_error(runner.invoke(cli, ["plan", str(BAD_SWEEPS_DIR / name)]))


def test_bad_sweep_through_the_console_script_is_one_line(tmp_path: Path) -> None:
    name, expected = BAD_SWEEPS[0]
    result = diffsweep("run", str(BAD_SWEEPS_DIR / name), "-o", str(tmp_path / "x.zarr"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.zarr").exists()


def test_existing_store_without_flags_and_another_sweep_on_resume(tmp_path: Path, existing_store) -> None:
    sweep, store, digest = existing_store
    runner = CliRunner()
    # the library names its arguments (resume=True); the command line names its flags
    line = _one_line_error(runner.invoke(cli, ["run", str(sweep), "-o", str(store), "--in-process"]))
    assert "already exists; pass --resume to complete it or --overwrite to replace it" in line
    other = tmp_path / "other.yaml"
    other.write_text(GOOD_MINIMAL.replace("steps: [10, 50, 200]", "steps: [10, 50, 300]"))
    line = _one_line_error(runner.invoke(cli, ["run", str(other), "-o", str(store), "--resume", "--in-process"]))
    assert "holds another definition of sweep 'minimal': sweep.steps: [10, 50, 200] -> [10, 50, 300]" in line
    assert line.endswith("use another store or --overwrite")
    line = _one_line_error(runner.invoke(cli, ["run", str(sweep), "-o", str(store), "--resume", "--overwrite"]))
    assert "--resume and --overwrite contradict each other" in line
    assert tree_digest(store) == digest


def test_missing_inputs_are_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    assert "no results store" in _one_line_error(runner.invoke(cli, ["status", str(tmp_path / "nope.zarr")]))
    line = _one_line_error(runner.invoke(cli, ["plan", str(tmp_path / "nope.yaml")]))
    assert "nope.yaml" in line
    assert runner.invoke(cli, ["run", str(tmp_path / "nope.yaml")]).exit_code == 2  # -o missing


def test_plan_prints_what_run_executes(tmp_path: Path) -> None:
    sweep = tmp_path / "minimal.yaml"
    sweep.write_text(GOOD_MINIMAL)
    result = CliRunner().invoke(cli, ["plan", str(sweep)])
    assert result.exit_code == 0, result.output
    assert re.search(r"blocks / tasks\s+2 tasks of up to 6 runs", result.output)
    assert re.search(r"runs\s+12 trajectories, 36 results", result.output)
    # 32 cells x 200 steps x 12 runs
    assert re.search(r"cell updates\s+7.68e\+04", result.output)
