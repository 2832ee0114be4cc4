"""``diffsweep refine`` end to end: the real console script, real stores, real dask workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zarr
from click.testing import CliRunner
from conftest import compute_store, diffsweep, fresh_python, tree_digest

from pipeline.cli.main import cli

SWEEP = """\
name: refine-cli
model: {scheme: ftcs, dims: 1, cells: 16, boundary: neumann, initial: step}
sweep:
  coefficient: {geomspace: [0.1, 1.0], num: 3}
  cfl: {geomspace: [0.1, 0.8], num: 4}
  steps: [100, 3000]
"""

OPEN_REFINE_GROUP = """
import json, sys
import xarray as xr
ds = xr.open_zarr({path!r}, group="refine")
leaked = sorted(m for m in sys.modules if m == "pipeline" or m.startswith("pipeline."))
print(json.dumps({{
    "leaked": leaked,
    "dims": dict(ds.sizes),
    "variables": sorted(ds.data_vars),
    "edge": ds.divergence_edge.values.tolist(),
    "censored": ds.divergence_censored.values.tolist(),
    "rtol": ds.attrs["divergence_rtol"],
}}))
"""


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return Path(compute_store(SWEEP, tmp_path / "s.zarr"))


def test_refine_in_process_then_plain_xarray_reads_the_edges(store: Path) -> None:
    result = CliRunner().invoke(cli, ["refine", str(store), "--in-process"])
    assert result.exit_code == 0, result.output
    assert "Refined the divergence edge of 6 columns" in result.output
    opened = fresh_python(OPEN_REFINE_GROUP.format(path=str(store)))
    assert opened.returncode == 0, opened.stderr
    info = json.loads(opened.stdout)
    assert info["leaked"] == [] and info["dims"] == {"coefficient": 3, "steps": 2} and info["rtol"] == 1e-3
    assert all(flag == 0 for row in info["censored"] for flag in row)
    assert all(0.5 < edge < 0.6 for row in info["edge"] for edge in row[1:])  # 3000 steps: near 2/λ_max


def test_dry_run_prints_the_cost_and_writes_nothing(store: Path) -> None:
    before = tree_digest(store)
    result = diffsweep("refine", str(store), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "6 of 6 columns open" in result.stdout and "a dense grid at this resolution" in result.stdout
    as_json = json.loads(CliRunner().invoke(cli, ["refine", str(store), "--dry-run", "--json"]).stdout)
    assert as_json["columns"] == 6 and as_json["runs"][0] <= as_json["runs"][1]
    assert tree_digest(store) == before


def test_a_rerun_says_nothing_to_do_and_leaves_the_store_as_it_was(store: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["refine", str(store), "--in-process"]).exit_code == 0
    before = tree_digest(store)
    again = runner.invoke(cli, ["refine", str(store), "--in-process"])
    assert again.exit_code == 0 and "Nothing to do" in again.output
    assert tree_digest(store) == before


@pytest.mark.slow
@pytest.mark.cluster
def test_refine_on_a_local_dask_cluster_matches_in_process(tmp_path: Path, store: Path) -> None:
    other = Path(compute_store(SWEEP, tmp_path / "other.zarr"))
    result = diffsweep("refine", str(store), "--workers", "2", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["outcomes"]["edge found"] == 6 and summary["runs"] > 0
    assert CliRunner().invoke(cli, ["refine", str(other), "--in-process"]).exit_code == 0
    a = zarr.open_group(str(store), mode="r")["refine"]
    b = zarr.open_group(str(other), mode="r")["refine"]
    for name in ("divergence_bracket_low", "divergence_bracket_high", "divergence_runs"):
        assert (a[name][...] == b[name][...]).all(), name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rtol", "0"], "--rtol must be a number with 0 < RTOL < 1, not '0'"),
        (["--rtol", "1"], "not '1'"),
        (["--rtol", "-1e-3"], "not '-1e-3'"),
        (["--rtol", "nan"], "not 'nan'"),
        (["--rtol", "tiny"], "not 'tiny'"),
        (["--axis", "step_size"], "axis 'step_size' is not swept"),
        (["--axis", "coefficient"], "axis 'coefficient' is not swept"),
    ],
)
def test_bad_options_are_one_line_exit_2_and_leave_the_store_untouched(store: Path, args: list[str], message: str) -> None:
    before = tree_digest(store)
    result = CliRunner().invoke(cli, ["refine", str(store), *args])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert tree_digest(store) == before


def test_missing_incomplete_and_foreign_stores_are_refused(tmp_path: Path) -> None:
    incomplete = Path(compute_store(SWEEP, tmp_path / "incomplete.zarr", blocks=0))
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(str(foreign), mode="w").attrs["hello"] = "world"
    not_zarr = tmp_path / "notes"
    not_zarr.mkdir()
    (not_zarr / "a.txt").write_text("hello")
    cases = {
        tmp_path / "missing.zarr": "no results store",
        incomplete: "only 0 of 1 blocks are stored; finish it first (`diffsweep run SWEEP -o STORE --resume`)",
        foreign: "not a diffsweep results store",
        not_zarr: "not",
    }
    for path, message in cases.items():
        before = tree_digest(path) if path.exists() else None
        result = CliRunner().invoke(cli, ["refine", str(path)])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], (path, result.stderr)
        assert (tree_digest(path) if path.exists() else None) == before
    # and through the real console script: no traceback, exit status 2
    result = diffsweep("refine", str(incomplete))
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
