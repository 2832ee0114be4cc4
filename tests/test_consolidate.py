"""Consolidation: a complete store rewritten into large chunks reads back bit-identical,
verifies, maps and recommends like the block store it came from; a consolidation
interrupted at any of its writes loses nothing and ``--resume`` finishes it; damage in a
consolidated store is found and repaired by recomputing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from conftest import SMALL_SWEEP, compute_store, fresh_python

from pipeline import consolidate as consolidation
from pipeline import runner, store, verify
from pipeline.cli.main import cli
from pipeline.executors import InProcessExecutor
from pipeline.planning import plan as make_plan
from pipeline.sweep import parse_sweep

#: two blocks, no fields: the smallest store with every kind of step (for the many interruptions)
TINY_SWEEP = """\
name: tiny
model: {scheme: ftcs, dims: 1, cells: 16, boundary: neumann, initial: step}
sweep:
  coefficient: [0.1, 1.0]
  step_size: [1.0e-4, 5.0e-3]
  steps: [10, 100]
chunks: {coefficient: 1, step_size: 2}
output: {fields: none}
"""


def files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def same_bits(a: xr.Dataset, b: xr.Dataset) -> list[str]:
    """Names of the variables and coordinates whose values or attributes differ by any bit."""
    different = []
    for name in sorted({*a.data_vars, *a.coords} | {*b.data_vars, *b.coords}, key=str):
        if name not in a or name not in b:
            different.append(str(name))
            continue
        x, y = np.asarray(a[name].values), np.asarray(b[name].values)
        if x.dtype.kind in "OUST":
            equal = x.tolist() == y.tolist()
        else:
            equal = x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        if not equal or json.dumps(a[name].attrs, default=str) != json.dumps(b[name].attrs, default=str):
            different.append(str(name))
    return different


@pytest.fixture(scope="module")
def block_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SMALL_SWEEP's store as the run leaves it: one chunk per block (6 blocks: not consolidated)."""
    path = Path(compute_store(SMALL_SWEEP, tmp_path_factory.mktemp("blocks") / "small.zarr"))
    assert store.read_attributes(str(path)).get(consolidation.RECORD) is None
    return path


@pytest.fixture(scope="module")
def consolidated_store(block_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("consolidated") / "small.zarr"
    shutil.copytree(block_store, path)
    plan = make_plan(parse_sweep(SMALL_SWEEP), parallelism=1)
    summary = consolidation.consolidate(str(path), plan)
    assert summary is not None and summary.arrays == len(plan.layout.variables) + 1
    return path


def test_consolidated_store_has_one_chunk_per_array_and_the_same_values(block_store: Path, consolidated_store: Path) -> None:
    plan = make_plan(parse_sweep(SMALL_SWEEP), parallelism=1)
    before, after = files(block_store), files(consolidated_store)
    for variable in plan.layout.variables:  # 6 chunk files each before, one after (the store is ~100 KB)
        assert len([f for f in before if f.startswith(f"{variable.name}/c/")]) == 6
        one_chunk = f"{variable.name}/c" + ".0" * len(variable.dims)
        assert [f for f in after if f.startswith(f"{variable.name}/c")] == [one_chunk]
    assert [f for f in after if f.startswith("_diffsweep/completed/c")] == ["_diffsweep/completed/c.0.0"]
    assert len(after) < len(before) - 6 * 6
    record = consolidation.read_record(store.read_attributes(str(consolidated_store)))
    assert record is not None and record.state == "done"
    with xr.open_zarr(block_store) as blocks, xr.open_zarr(consolidated_store) as big:
        assert same_bits(blocks, big) == []
        assert big.distance.encoding["chunks"] == (6, 8, 3)
        assert big.steps_to_equilibrium.encoding["chunks"] == (6, 8)  # per-run variables too
    assert store.completion(str(consolidated_store)) == (6, 6)
    assert store.status_counts(str(consolidated_store)) == store.status_counts(str(block_store))
    report = verify.verify(str(consolidated_store))
    assert report.ok, report.problems
    assert report.chunks_checked == len(plan.layout.variables)


def test_the_cli_reads_a_consolidated_store_as_it_reads_the_block_store(block_store: Path, consolidated_store: Path) -> None:
    cli_runner = CliRunner()
    for command in (["verify"], ["recommend"], ["status"]):
        blocks = cli_runner.invoke(cli, [*command, str(block_store)])
        big = cli_runner.invoke(cli, [*command, str(consolidated_store)])
        assert blocks.exit_code == big.exit_code == 0, (command, blocks.output, big.output)
        if command == ["recommend"]:
            assert big.stdout == blocks.stdout
    assert "consolidated" in cli_runner.invoke(cli, ["status", str(consolidated_store)]).stdout
    assert "6 of 6 blocks" in cli_runner.invoke(cli, ["verify", str(consolidated_store)]).stdout


def test_map_of_a_consolidated_store_equals_the_map_of_the_block_store(
    block_store: Path, consolidated_store: Path, tmp_path: Path
) -> None:
    outputs = []
    for name, path in (("blocks", block_store), ("big", consolidated_store)):
        out = tmp_path / f"{name}-maps"
        result = CliRunner().invoke(cli, ["map", str(path), "-o", str(out)])
        assert result.exit_code == 0, result.output
        outputs.append(out)
    assert (outputs[0] / "summary.csv").read_text() == (outputs[1] / "summary.csv").read_text()
    with xr.open_zarr(outputs[0] / "maps.zarr") as a, xr.open_zarr(outputs[1] / "maps.zarr") as b:
        assert same_bits(a.drop_attrs(deep=False), b.drop_attrs(deep=False)) == []


def test_plain_xarray_in_a_fresh_process_reads_the_consolidated_store(block_store: Path, consolidated_store: Path) -> None:
    code = (
        "import json, xarray as xr\n"
        f"a = xr.open_zarr({str(block_store)!r}).load(); b = xr.open_zarr({str(consolidated_store)!r}).load()\n"
        "print(json.dumps([a.identical(b.drop_attrs(deep=False).assign_attrs(a.attrs)), "
        "b.distance.encoding['chunks']]))"
    )
    opened = fresh_python(code)
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout) == [True, [6, 8, 3]]


class Interrupted(Exception):
    pass


def steps_of_a_consolidation(tmp_path: Path) -> list[str]:
    path = Path(compute_store(TINY_SWEEP, tmp_path / "count.zarr"))
    seen: list[str] = []
    consolidation.consolidate(str(path), make_plan(parse_sweep(TINY_SWEEP), parallelism=1), step=seen.append)
    return seen


def test_a_consolidation_interrupted_at_every_write_loses_nothing_and_resume_finishes_it(tmp_path: Path) -> None:
    plan = make_plan(parse_sweep(TINY_SWEEP), parallelism=1)
    steps = steps_of_a_consolidation(tmp_path)
    arrays = len(plan.layout.variables) + 1
    # recorded writing; per array: new chunks, flip; recorded cleaning; per array: old chunks deleted; done
    assert len(steps) == 1 + 2 * arrays + 1 + arrays + 1, steps
    reference = Path(compute_store(TINY_SWEEP, tmp_path / "reference.zarr"))
    with xr.open_zarr(reference) as opened:
        expected = opened.load()
    for stop, name in enumerate(steps):
        path = tmp_path / f"stopped-{stop}.zarr"
        shutil.copytree(reference, path)

        def interrupt(step: str, stop: int = stop) -> None:
            if step == steps[stop]:
                raise Interrupted(step)

        with pytest.raises(Interrupted):
            consolidation.consolidate(str(path), plan, step=interrupt)
        with xr.open_zarr(path) as stopped:  # a reader sees every value, identical, at every step
            assert same_bits(expected, stopped.load().drop_attrs(deep=False).assign_attrs(expected.attrs)) == [], name
        if stop < len(steps) - 1:
            assert not verify.verify(str(path), quick=True).ok, name  # the record says it is unfinished
            assert runner.nothing_to_compute(plan.sweep, str(path)), name
        summary = runner.run_sweep(plan, str(path), executor=InProcessExecutor(), resume=True)
        assert summary.blocks_computed == 0, name
        record = consolidation.read_record(store.read_attributes(str(path)))
        assert record is not None and record.state == "done", name
        report = verify.verify(str(path))
        assert report.ok, (name, report.problems)
        assert not any("/c/" in f for f in files(path) if not f.startswith(("coefficient", "step_size", "steps", "cfl", "time"))), name
        with xr.open_zarr(path) as finished:
            assert same_bits(expected, finished.load().drop_attrs(deep=False).assign_attrs(expected.attrs)) == [], name


def test_damage_in_a_consolidated_store_is_found_and_repaired_by_recomputing(consolidated_store: Path, block_store: Path, tmp_path: Path) -> None:
    path = tmp_path / "damaged.zarr"
    shutil.copytree(consolidated_store, path)
    (path / "growth" / "c.0.0.0").write_bytes(b"not zstd")
    assert verify.verify(str(path), quick=True).ok  # present: only decoding finds it
    report = verify.verify(str(path))
    assert len(report.problems) == 1, report.problems
    assert str(report.problems[0]).startswith("growth chunk (0, 0, 0): chunk growth/c.0.0.0 cannot be decoded")
    assert report.bad_blocks() is None  # every block: a consolidated chunk holds them all
    plan = make_plan(parse_sweep(SMALL_SWEEP), parallelism=1)
    summary = runner.run_sweep(plan, str(path), executor=InProcessExecutor(), resume=True, repair=True, consolidate=True)
    assert summary.blocks_computed == 6 and summary.consolidation is not None
    assert verify.verify(str(path)).ok
    with xr.open_zarr(block_store) as blocks, xr.open_zarr(path) as repaired:
        assert same_bits(blocks, repaired.drop_attrs(deep=False).assign_attrs(blocks.attrs)) == []


def test_consolidation_is_automatic_above_64_blocks_and_can_be_forced_either_way() -> None:
    def plan_with(blocks_along_step_size: int):  # 2 coefficients x n step sizes, one per block
        text = SMALL_SWEEP.replace("num: 8", f"num: {blocks_along_step_size}").replace(
            "chunks: {coefficient: 2, step_size: 4}", "chunks: {coefficient: 1, step_size: 1}"
        ).replace("num: 6", "num: 2")
        return make_plan(parse_sweep(text), parallelism=1)

    assert plan_with(32).n_blocks == 64 and plan_with(33).n_blocks == 66
    assert not consolidation.wanted(plan_with(32), None)
    assert consolidation.wanted(plan_with(33), None)
    assert consolidation.wanted(plan_with(32), True) and not consolidation.wanted(plan_with(33), False)


def test_run_consolidate_flag_consolidates_and_reports_it(small_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "flagged.zarr"
    result = CliRunner().invoke(cli, ["run", str(small_sweep), "-o", str(out), "--in-process", "--consolidate"])
    assert result.exit_code == 0, result.output
    arrays = len(make_plan(parse_sweep(SMALL_SWEEP), parallelism=1).layout.variables) + 1
    assert f"consolidated for analysis: {6 * arrays} chunk files -> {arrays}" in result.stdout
    history = store.run_history(str(out))
    assert history[-1]["chunks_after_consolidation"] == arrays
    again = CliRunner().invoke(cli, ["run", str(small_sweep), "-o", str(out), "--resume", "--in-process"])
    assert again.exit_code == 0, again.output
    assert "Nothing to compute" in again.stdout and "consolidated for analysis" not in again.stdout


def test_the_caller_can_release_its_workers_once_every_block_is_stored_and_before_consolidating(
    tmp_path: Path,
) -> None:
    """``on_computed`` comes once, when the store is complete and not yet consolidated."""
    path = tmp_path / "released.zarr"
    plan = make_plan(parse_sweep(SMALL_SWEEP), parallelism=1)
    seen = []

    def computed() -> None:
        done, total = store.completion(str(path))
        seen.append((done, total, consolidation.read_record(store.read_attributes(str(path)))))

    summary = runner.run_sweep(plan, str(path), executor=InProcessExecutor(), consolidate=True, on_computed=computed)
    assert seen == [(plan.n_blocks, plan.n_blocks, None)]  # complete, consolidation not begun
    assert summary.consolidation is not None
    assert consolidation.read_record(store.read_attributes(str(path))).state == "done"


@pytest.mark.cluster
def test_run_closes_its_local_cluster_before_consolidating(small_sweep: Path, tmp_path: Path) -> None:
    """The consolidation runs in the run's own process: the worker processes are gone by
    then, so their memory is not held while the store is rewritten."""
    import subprocess
    import sys

    out = tmp_path / "cluster.zarr"
    code = (
        "import sys, psutil\n"
        "from pipeline import consolidate\n"
        "from pipeline.cli.main import cli\n"
        "finish = consolidate.finish\n"
        "def watched(*args, **kwargs):\n"
        "    workers = [p for p in psutil.Process().children(recursive=True)\n"
        "               if p.is_running() and 'spawn_main' in ' '.join(p.cmdline())]\n"
        "    print('worker processes at consolidation:', len(workers), file=sys.stderr)\n"
        "    return finish(*args, **kwargs)\n"
        "consolidate.finish = watched\n"
        f"cli(['run', {str(small_sweep)!r}, '-o', {str(out)!r}, '--workers', '2', '--processes', '--consolidate', "
        "'--no-progress'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "worker processes at consolidation: 0" in done.stderr, done.stderr
    assert "consolidated for analysis" in done.stdout
