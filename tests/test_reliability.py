"""Nothing lost, nothing hung, nothing silently wrong: each failure case run for real.

Real processes, real signals, real stores on disk. Each case asserts the exit status,
the one line the user sees, and that the store is either untouched (byte-identical)
or repaired to values identical to a clean run's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
from click.testing import CliRunner
from conftest import diffsweep, tree_digest
from sweep_cases import GOOD_MINIMAL

from pipeline.cli.main import cli

FAULTS = Path(__file__).with_name("faults.py")
#: a second definition (other step counts): overwriting a store of GOOD_MINIMAL with it
OTHER_MINIMAL = GOOD_MINIMAL.replace("steps: [10, 50, 200]", "steps: [10, 50, 300]")
DATA_VARIABLES = ("distance", "mass_error", "overshoot", "growth", "error", "status", "field")


def one_line(output: str) -> str:
    """The single non-empty line of ``output`` (asserting there is exactly one, no traceback)."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def values(store: Path) -> xr.Dataset:
    return xr.open_zarr(store).load().drop_attrs()


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two sweep files and a clean store of each, computed once."""
    root = tmp_path_factory.mktemp("sweeps")
    paths: dict[str, Path] = {}
    for name, text in (("minimal", GOOD_MINIMAL), ("other", OTHER_MINIMAL)):
        (root / f"{name}.yaml").write_text(text)
        paths[name] = root / f"{name}.yaml"
        clean = root / f"{name}-clean.zarr"
        code, output = invoke("run", str(paths[name]), "-o", str(clean), "--in-process")
        assert code == 0, output
        paths[f"{name}-clean"] = clean
    return paths


# -- item 2: a store killed at every stage of its creation is recognised and repaired --------


def fork_server(job: dict, tmp_path: Path) -> list[dict]:
    """Run tests/faults.py on ``job``; one result per kill point (or one count)."""
    path = tmp_path / f"job-{len(list(tmp_path.glob('job-*')))}.json"
    path.write_text(json.dumps(job))
    done = subprocess.run(
        [sys.executable, str(FAULTS), str(path)], capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def relative(mutations: list[list[str]], store: str) -> list[tuple[str, str]]:
    return [(op, path.replace(store, "").lstrip("/")) for op, path in mutations]


def top(path: str) -> str:
    return path.split("/", 1)[0]


def creation_stages(log: list[tuple[str, str]]) -> dict[str, int]:
    """Kill points (1-based mutation counts) at each stage of ``run`` on a new store."""

    def where(predicate) -> list[int]:
        return [i for i, (op, path) in enumerate(log, 1) if predicate(op, path)]

    def written(op: str, path: str) -> bool:  # a file in place: renamed or linked there
        return op in ("replace", "link")

    root = where(lambda op, path: written(op, path) and path == "zarr.json")
    arrays = where(
        lambda op, path: written(op, path) and path.endswith("/zarr.json") and path.count("/") == 1
        and not path.startswith("_diffsweep")
    )
    block_chunks = where(lambda op, path: written(op, path) and top(path) in DATA_VARIABLES and "/c/" in path)
    recorded = where(lambda op, path: written(op, path) and path.startswith("_diffsweep/completed/c/"))
    before_blocks = [i for i in root if i < block_chunks[0]]
    return {
        "directory made": where(lambda op, path: op == "mkdir" and path == "")[0],
        "lock being written": where(lambda op, path: op == "open" and path.startswith("diffsweep.lock."))[0],
        "lock held": where(lambda op, path: op == "link" and path == "diffsweep.lock")[0],
        "root being written": where(lambda op, path: op == "open" and path.startswith("zarr."))[0],
        "root written, state creating": root[0],
        "bookkeeping group": where(lambda op, path: written(op, path) and path == "_diffsweep/zarr.json")[0],
        "completion record": where(lambda op, path: written(op, path) and path == "_diffsweep/completed/zarr.json")[0],
        "first variable's metadata": arrays[0],
        "half the variables": arrays[len(arrays) // 2],
        "first coordinate chunk": where(lambda op, path: written(op, path) and "/c/" in path)[0],
        "state ready": before_blocks[-2],
        "consolidated": before_blocks[-1],
        "first block chunk": block_chunks[0],
        "first block recorded": recorded[0],
        "half the second block": block_chunks[len(block_chunks) * 3 // 4],
        "last block recorded": recorded[-1],
        "run attributes": root[-1],
        "lock released": len(log),
    }


def replacement_stages(log: list[tuple[str, str]]) -> dict[str, int]:
    """Kill points while ``--overwrite`` replaces a complete store of another sweep."""

    def where(predicate) -> list[int]:
        return [i for i, (op, path) in enumerate(log, 1) if predicate(op, path)]

    rewritten = where(lambda op, path: op == "replace" and path == "zarr.json")[0]
    entries = where(lambda op, path: op == "rmdir" and path and "/" not in path)
    return {
        "lock held": where(lambda op, path: op == "link" and path == "diffsweep.lock")[0],
        "root rewritten for the new sweep": rewritten,
        "first file deleted": where(lambda op, path: op in ("unlink", "remove"))[0],
        "first entry deleted": entries[0],
        "half the entries deleted": entries[len(entries) // 2],
        "everything but the root deleted": entries[-1],
        "bookkeeping recreated": where(lambda op, path: op == "replace" and path == "_diffsweep/completed/zarr.json")[0],
    }


def check_repaired(killed: Path, sweep: Path, clean: Path, flag: str) -> None:
    copy = killed.with_name(killed.name + flag)
    shutil.copytree(killed, copy, symlinks=True)
    code, output = invoke("run", str(sweep), "-o", str(copy), "--in-process", flag)
    assert code == 0, f"{flag} after the kill: {output}"
    xr.testing.assert_identical(values(copy), values(clean))


@pytest.mark.slow
def test_a_store_killed_at_every_stage_of_its_creation_is_recognised_and_repaired(sweeps, tmp_path: Path) -> None:
    store = str(tmp_path / "new.zarr")
    job = {"store": store, "args": ["run", str(sweeps["minimal"]), "-o", "{store}", "--in-process"]}
    (count,) = fork_server({**job, "count_only": True}, tmp_path)
    assert count["exit"] == 0, count
    stages = creation_stages(relative(count["mutations"], store))
    assert len(set(stages.values())) == len(stages), stages

    results = fork_server({**job, "kill_after": sorted(stages.values())}, tmp_path)
    for result in results:
        stage = next(name for name, i in stages.items() if i == result["kill_after"])
        assert result.get("signal") == signal.SIGKILL, (stage, result)
        killed = Path(result["store"])
        if not killed.exists():  # killed before anything was written (nothing to recognise)
            continue
        status_code, output = invoke("status", str(killed))
        line = output.strip().splitlines()[0]
        assert status_code in (0, 2) and "Traceback" not in output, (stage, output)
        assert "not a diffsweep" not in output and "not a zarr" not in output, (stage, output)
        if status_code == 2:
            assert "creation was interrupted" in line or "no results store" in line, (stage, line)
        for flag in ("--resume", "--overwrite"):
            check_repaired(killed, sweeps["minimal"], sweeps["minimal-clean"], flag)


@pytest.mark.slow
def test_a_store_killed_while_overwrite_replaces_it_is_recognised_and_repaired(sweeps, tmp_path: Path) -> None:
    store = str(tmp_path / "old.zarr")
    job = {
        "store": store, "prepare": str(sweeps["minimal-clean"]),
        "args": ["run", str(sweeps["other"]), "-o", "{store}", "--in-process", "--overwrite"],
    }
    (count,) = fork_server({**job, "count_only": True}, tmp_path)
    assert count["exit"] == 0, count
    stages = replacement_stages(relative(count["mutations"], store))
    results = fork_server({**job, "kill_after": sorted(set(stages.values()))}, tmp_path)
    for result in results:
        assert result.get("signal") == signal.SIGKILL, result
        killed = Path(result["store"])
        check_repaired(killed, sweeps["other"], sweeps["other-clean"], "--overwrite")
        if result["kill_after"] >= stages["root rewritten for the new sweep"]:
            check_repaired(killed, sweeps["other"], sweeps["other-clean"], "--resume")
        else:  # still the old, complete store: --resume with the other sweep is refused
            code, output = invoke("run", str(sweeps["other"]), "-o", str(killed), "--resume", "--in-process")
            assert code == 2 and "holds" in one_line(output), output


# -- item 7: runtime cases that must be one line, not an exception ----------------------------


def test_file_urls_work_and_relative_ones_are_one_line(sweeps, tmp_path: Path) -> None:
    store = tmp_path / "via url.zarr"
    code, output = invoke("run", str(sweeps["minimal"]), "-o", store.as_uri(), "--in-process")
    assert code == 0, output
    xr.testing.assert_identical(values(store), values(sweeps["minimal-clean"]))
    code, output = invoke("status", store.as_uri())
    assert code == 0 and "2 / 2" in output, output
    code, output = invoke("run", str(sweeps["minimal"]), "-o", "file://relative/x.zarr", "--in-process")
    assert code == 2 and "needs an absolute path" in one_line(output), output


@pytest.mark.slow
def test_file_url_with_dask_workers(sweeps, tmp_path: Path) -> None:
    store = tmp_path / "dask.zarr"
    result = diffsweep("run", str(sweeps["minimal"]), "-o", store.as_uri(), "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    xr.testing.assert_identical(values(store), values(sweeps["minimal-clean"]))


def test_overwrite_through_a_symbolic_link_replaces_the_target_and_keeps_the_link(sweeps, tmp_path: Path) -> None:
    target = tmp_path / "real.zarr"
    shutil.copytree(sweeps["minimal-clean"], target)
    link = tmp_path / "link.zarr"
    link.symlink_to(target, target_is_directory=True)
    result = diffsweep("run", str(sweeps["other"]), "-o", str(link), "--in-process", "--overwrite", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    xr.testing.assert_identical(values(target), values(sweeps["other-clean"]))


def test_a_symbolic_link_inside_a_store_is_removed_not_followed(sweeps, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    shutil.copytree(sweeps["minimal-clean"], store)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    (store / "notes").symlink_to(precious, target_is_directory=True)
    code, output = invoke("run", str(sweeps["other"]), "-o", str(store), "--in-process", "--overwrite")
    assert code == 0, output
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert not (store / "notes").exists()


SLOW_SWEEP = """\
name: slow
description: 8 blocks of two runs, about 6 s of compute in all
model: {scheme: ftcs, dims: 1, cells: 128, boundary: periodic, initial: random, seed: 3}
sweep:
  coefficient: {geomspace: [0.1, 1.0], num: 4}
  cfl: {linspace: [0.1, 0.4], num: 4}
  steps: [1000, 1000000, 4000000]
chunks: {coefficient: 1, cfl: 2}
"""


@pytest.fixture(scope="module")
def slow_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The slow sweep's file and a clean store of it."""
    root = tmp_path_factory.mktemp("slow")
    sweep = root / "slow.yaml"
    sweep.write_text(SLOW_SWEEP)
    clean = root / "clean.zarr"
    code, output = invoke("run", str(sweep), "-o", str(clean), "--in-process")
    assert code == 0, output
    return sweep, clean


def _started(path: Path, command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
def test_two_fresh_runs_racing_for_one_path_one_wins_the_other_is_one_line(slow_sweep, tmp_path: Path) -> None:
    sweep, clean = slow_sweep
    store = tmp_path / "raced.zarr"
    command = ["diffsweep", "run", str(sweep), "-o", str(store), "--in-process", "--no-progress"]
    first, second = _started(store, command), _started(store, command)
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 2], outcomes
    loser = next(err for code, _, err in outcomes if code == 2)
    assert re.search(r"is being written by another diffsweep run \(pid \d+ on |already exists", one_line(loser))
    xr.testing.assert_identical(values(store), values(clean))


@pytest.mark.slow
def test_a_second_run_on_a_store_being_written_is_refused_and_touches_nothing(slow_sweep, tmp_path: Path) -> None:
    sweep, clean = slow_sweep
    store = tmp_path / "busy.zarr"
    first = _started(store, ["diffsweep", "run", str(sweep), "-o", str(store), "--in-process", "--no-progress"])
    deadline = time.monotonic() + 120
    while not (store / "_diffsweep" / "completed" / "c").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGSTOP)  # frozen mid-run, holding the lock, however slow the machine
    try:
        before = tree_digest(store)
        for flag in ("--resume", "--overwrite"):
            second = diffsweep("run", str(sweep), "-o", str(store), "--in-process", flag)
            assert second.returncode == 2, second.stderr
            line = one_line(second.stderr)
            assert f"is being written by another diffsweep run (pid {first.pid} on " in line, line
        assert tree_digest(store) == before
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.communicate()
    assert not (store / "diffsweep.lock").exists()
    xr.testing.assert_identical(values(store), values(clean))


def test_a_stale_lock_of_a_dead_process_is_taken_over(sweeps, tmp_path: Path) -> None:
    store = tmp_path / "stale.zarr"
    shutil.copytree(sweeps["minimal-clean"], store)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (store / "diffsweep.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "x"}))
    code, output = invoke("run", str(sweeps["minimal"]), "-o", str(store), "--in-process", "--resume")
    assert code == 0, output
    assert not (store / "diffsweep.lock").exists()


def test_a_lock_from_another_host_is_refused_naming_the_file_to_remove(sweeps, tmp_path: Path) -> None:
    store = tmp_path / "remote.zarr"
    shutil.copytree(sweeps["minimal-clean"], store)
    (store / "diffsweep.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then"}))
    before = tree_digest(store)
    code, output = invoke("run", str(sweeps["minimal"]), "-o", str(store), "--in-process", "--resume")
    assert code == 2
    line = one_line(output)
    assert "(pid 1 on elsewhere, since then)" in line and f"remove {store}/diffsweep.lock" in line, line
    assert tree_digest(store) == before


# -- item 6: corruption is detected, named and repaired ---------------------------------------


def damaged_copy(clean: Path, tmp_path: Path, name: str = "damaged.zarr") -> Path:
    store = tmp_path / name
    shutil.copytree(clean, store)
    return store


def edit_root_attribute(store: Path, key: str, value: object) -> None:
    metadata = json.loads((store / "zarr.json").read_text())
    metadata["attributes"][key] = value
    (store / "zarr.json").write_text(json.dumps(metadata))


def test_verify_names_every_bad_block_and_resume_repair_restores_identical_values(sweeps, tmp_path: Path) -> None:
    store = damaged_copy(sweeps["minimal-clean"], tmp_path)
    (store / "distance/c/0/1/0").unlink()                                  # a chunk deleted
    chunk = store / "status/c/0/0/0"
    chunk.write_bytes(chunk.read_bytes()[:10])                              # a chunk truncated
    edit_root_attribute(store, "tolerance", 0.5)                            # an attribute edited
    (store / "error/zarr.json").unlink()                                    # metadata hidden by the consolidated copy
    before = tree_digest(store)

    result = diffsweep("verify", str(store))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert "BAD  attribute 'tolerance': is 0.5, the stored definition says 0.001" in lines
    assert "BAD  array 'error': its metadata (zarr.json) is missing; only the consolidated copy xarray reads is left" in lines
    assert "BAD  distance block (0, 1): chunk distance/c/0/1/0 is missing" in lines
    assert any(line.startswith("BAD  status block (0, 0): chunk status/c/0/0/0 cannot be decoded (") for line in lines)
    assert lines[-1].startswith(f"DAMAGED: {store}: 4 problems, 2 of 2 blocks to recompute;")
    assert tree_digest(store) == before  # verify writes nothing

    status = diffsweep("status", str(store))
    assert status.returncode == 0 and "damaged (see the warning)" in status.stdout
    assert "Warning: a quick check found 3 problems:" in status.stderr  # quick: the truncated chunk is not decoded
    assert "distance block (0, 1): chunk distance/c/0/1/0 is missing" in status.stderr

    code, output = invoke("run", str(sweeps["minimal"]), "-o", str(store), "--in-process", "--resume", "--repair")
    assert code == 0, output
    assert diffsweep("verify", str(store)).returncode == 0
    xr.testing.assert_identical(values(store), values(sweeps["minimal-clean"]))
    assert xr.open_zarr(store).attrs["tolerance"] == 1.0e-3


def test_plain_resume_repairs_what_the_quick_check_finds(sweeps, tmp_path: Path) -> None:
    store = damaged_copy(sweeps["minimal-clean"], tmp_path)
    (store / "field/c/0/0/0").unlink()
    (store / "status/zarr.json").unlink()
    assert invoke("verify", str(store), "--quick")[0] == 1
    code, output = invoke("run", str(sweeps["minimal"]), "-o", str(store), "--in-process", "--resume")
    assert code == 0, output
    assert "Computed 1 of 2 blocks" in output
    assert invoke("verify", str(store))[0] == 0
    assert "status" in xr.open_zarr(store).data_vars  # the consolidated metadata kept it
    xr.testing.assert_identical(values(store), values(sweeps["minimal-clean"]))


def test_consolidating_over_an_array_that_lost_its_metadata_is_refused(sweeps, tmp_path: Path) -> None:
    from pipeline import store as stores
    from pipeline.errors import StoreDamagedError

    store = damaged_copy(sweeps["minimal-clean"], tmp_path)
    (store / "status/zarr.json").unlink()
    before = tree_digest(store)
    with pytest.raises(StoreDamagedError, match=r"the metadata of 'status' is missing \(only the consolidated copy is left\)") as caught:
        stores.update_attributes(str(store), {"note": "x"})
    assert tree_digest(store) == before
    # damaged content is a ValueError, never an OSError (which a run reads as a failing disk)
    assert isinstance(caught.value, ValueError) and not isinstance(caught.value, OSError)
    # the library names its functions and arguments; the command line says `diffsweep run ... --repair`
    assert str(caught.value).endswith("`pipeline.runner.run_sweep` with resume=True and repair=True recomputes it")
    assert "--" not in str(caught.value)


def test_a_changed_completion_record_is_a_clear_error_and_resume_recomputes(sweeps, tmp_path: Path) -> None:
    import zarr

    store = damaged_copy(sweeps["minimal-clean"], tmp_path)
    bookkeeping = zarr.open_group(store / "_diffsweep", mode="r+", use_consolidated=False)
    del bookkeeping["completed"]
    bookkeeping.create_array("completed", shape=(3,), chunks=(1,), dtype="int8", fill_value=1)
    code, output = invoke("status", str(store))
    assert code == 2
    assert "the completion record has shape (3,), but the store has 1x2 blocks" in one_line(output)
    code, output = invoke("verify", str(store))
    assert code == 1 and "BAD  completion record: shape (3,), expected (1, 2)" in output
    code, output = invoke("run", str(sweeps["minimal"]), "-o", str(store), "--in-process", "--resume")
    assert code == 0 and "Computed 2 of 2 blocks" in output, output
    xr.testing.assert_identical(values(store), values(sweeps["minimal-clean"]))


@pytest.mark.parametrize("command", ["map", "recommend"])
def test_a_truncated_chunk_is_named_by_variable_and_block(command: str, sweeps, tmp_path: Path) -> None:
    store = damaged_copy(sweeps["minimal-clean"], tmp_path)
    chunk = store / "status/c/0/1/0"
    chunk.write_bytes(chunk.read_bytes()[:10])
    args = [command, str(store)] + (["-o", str(tmp_path / "maps")] if command == "map" else [])
    result = diffsweep(*args)
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    assert line.startswith(f"Error: '{store}' is damaged: status block (0, 1): chunk status/c/0/1/0 cannot be decoded ("), line
    assert line.endswith("`diffsweep run SWEEP -o STORE --resume --repair` recomputes it")


def test_verify_a_sound_store_a_non_store_and_an_overridden_definition(sweeps, tmp_path: Path) -> None:
    result = diffsweep("verify", str(sweeps["minimal-clean"]))
    assert result.returncode == 0
    # 2 blocks x 9 variables, the 2 per-run first passages (steps_to_equilibrium, steps_to_divergence) among them
    assert one_line(result.stdout) == (
        f"OK: {sweeps['minimal-clean']}: 2 of 2 blocks recorded done, 18 chunks decoded; "
        "metadata and attributes match the definition"
    )
    code, output = invoke("verify", str(sweeps["minimal-clean"]), "--json")
    assert code == 0 and json.loads(output)["chunks_checked"] == 18
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    result = diffsweep("verify", str(folder))
    assert result.returncode == 2 and "it is not a zarr store" in one_line(result.stderr)
    overridden = tmp_path / "overridden.zarr"
    code, output = invoke(
        "run", str(sweeps["minimal"]), "-o", str(overridden), "--in-process", "--set", "model.cells=16",
        "--set", "criteria.tolerance=0.01",
    )
    assert code == 0, output
    code, output = invoke("verify", str(overridden))
    assert code == 0, output


# -- item 8: a poison block does not sink the sweep -------------------------------------------


def template_only(sweep: Path, store: Path) -> None:
    """A store with its template and no block (as a run killed before any block leaves it)."""
    from conftest import compute_store

    compute_store(sweep.read_text(), store, blocks=0)


def check_poison_block(sweeps, tmp_path: Path, *executor: str) -> None:
    import numpy as np
    import zarr

    store = tmp_path / "poisoned.zarr"
    template_only(sweeps["minimal"], store)
    obstacle = store / "distance/c/0/1/0"
    obstacle.mkdir(parents=True)  # block (0, 1) cannot write its distance chunk: it raises every time
    result = diffsweep("run", str(sweeps["minimal"]), "-o", str(store), "--resume", "--no-progress", *executor)
    assert result.returncode == 1, result.stderr
    line = one_line("\n".join(l for l in result.stderr.splitlines() if l.startswith("Error")))
    assert line.startswith("Error: 1 of 2 blocks failed after 2 attempts: (0, 1); first error (block (0, 1)): IsADirectoryError:"), line
    assert f"diffsweep run {sweeps['minimal']} -o {store} " in line and " --resume retries the failed ones" in line
    assert "Computed 1 of 2 blocks" in result.stdout  # the rest of the sweep completed
    group = zarr.open_group(store, mode="r")
    assert group["_diffsweep/completed"][...].tolist() == [[1, 2]]
    assert (group["status"][:, 2:4, :] == -2).all() and (group["status"][:, 0:2, :] >= 0).all()
    status = diffsweep("status", str(store))
    assert status.returncode == 0
    assert "failed    1 blocks raised on every attempt: (0, 1); first error (block (0, 1)): IsADirectoryError" in status.stdout
    assert diffsweep("verify", str(store)).returncode == 0  # a failed block is recorded, not damage

    obstacle.rmdir()
    resumed = diffsweep("run", str(sweeps["minimal"]), "-o", str(store), "--resume", "--no-progress", *executor)
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"Computed 1 of 2 blocks in .* \(1 were already stored\)", resumed.stdout), resumed.stdout
    xr.testing.assert_identical(values(store), values(sweeps["minimal-clean"]))
    assert np.asarray(zarr.open_group(store, mode="r")["_diffsweep/completed"][...]).tolist() == [[1, 1]]
    assert "raised on every attempt" not in diffsweep("status", str(store)).stdout


def test_a_poison_block_is_retried_recorded_and_the_rest_completes(sweeps, tmp_path: Path) -> None:
    check_poison_block(sweeps, tmp_path, "--in-process")


@pytest.mark.slow
def test_a_poison_block_on_dask_workers(sweeps, tmp_path: Path) -> None:
    check_poison_block(sweeps, tmp_path, "--workers", "2")


# -- item 4: memory is honoured --------------------------------------------------------------

AUTO_BLOCKS = """\
name: auto
model: {scheme: ftcs, dims: 2, cells: 256}
sweep:
  coefficient: {geomspace: [0.01, 1.0], num: 64}
  cfl: {linspace: [0.05, 0.2], num: 64}
  steps: [10]
output: {fields: final}
"""


def test_automatic_blocks_fit_the_memory_limit_less_the_worker_baseline(tmp_path: Path) -> None:
    from pipeline.sweep import WORKER_BASELINE_BYTES

    sweep = tmp_path / "auto.yaml"
    sweep.write_text(AUTO_BLOCKS)
    for limit in (400 * 10**6, 2**30, 2 * 2**30):
        code, output = invoke("plan", str(sweep), "--memory-limit", str(limit), "--json")
        assert code == 0, output
        planned = json.loads(output)
        assert planned["memory_per_task_bytes"] <= limit - WORKER_BASELINE_BYTES, (limit, planned)
    assert planned["memory_per_task_bytes"] == 64 * planned["memory_per_task_bytes"] // planned["runs_per_task"]

    result = CliRunner().invoke(cli, ["plan", str(sweep), "--memory-limit", "100MB"])
    assert result.exit_code == 2
    assert "Expected more than the about 288.00 MiB a dask worker uses before any task. Got '100MB' instead." in result.output

    huge = tmp_path / "huge.yaml"
    huge.write_text(AUTO_BLOCKS.replace("cells: 256", "cells: 4096"))
    code, output = invoke("run", str(huge), "-o", str(tmp_path / "never.zarr"), "--memory-limit", "800MB")
    assert code == 2 and not (tmp_path / "never.zarr").exists()
    assert "model.cells: One run on a 2-D grid of 4096 cells per dimension needs about 896.00 MiB" in one_line(output)
    assert "more than the 474.94 MiB left to a task (a memory limit of 762.94 MiB less about 288.00 MiB" in output


@pytest.mark.slow
def test_the_worker_baseline_is_what_a_worker_really_uses(tmp_path: Path) -> None:
    """A real worker after one block (imports, kernels, store) stays under WORKER_BASELINE_BYTES."""
    from pipeline.sweep import WORKER_BASELINE_BYTES

    script = Path(__file__).parents[1] / "benchmarks" / "worker_memory.py"
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert done.returncode == 0, done.stderr
    from dask.utils import parse_bytes

    largest = parse_bytes(done.stdout.splitlines()[-1].split(":", 1)[1].strip())
    assert 100 * 2**20 < largest <= WORKER_BASELINE_BYTES, done.stdout


BIG_BLOCK = """\
name: big
description: one block of 64 runs (350 MiB estimated, well over 500 MB used) on a worker with 500 MB
model: {scheme: ftcs, dims: 2, cells: 320, boundary: periodic, initial: random}
sweep:
  coefficient: {geomspace: [0.1, 1.0], num: 8}
  cfl: {linspace: [0.1, 0.2], num: 8}
  steps: [5, 10]
chunks: {coefficient: 8, cfl: 8}
output: {fields: final}
"""


@pytest.mark.slow
@pytest.mark.cluster
def test_a_worker_killed_by_its_nanny_for_memory_is_reported_as_such(tmp_path: Path) -> None:
    sweep = tmp_path / "big.yaml"
    sweep.write_text(BIG_BLOCK)
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}  # two attempts, not four
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--scheduler-file", str(scheduler_file), "--no-dashboard"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
                 "--nworkers", "1", "--nthreads", "1", "--memory-limit", "500MB", "--host", "127.0.0.1",
                 "--no-dashboard"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )
        store = tmp_path / "big.zarr"
        result = diffsweep(
            "run", str(sweep), "-o", str(store), "--scheduler-file", str(scheduler_file), "--no-progress", timeout=600,
        )
        assert result.returncode == 1, result.stderr
        line = one_line("\n".join(l for l in result.stderr.splitlines() if l.startswith("Error")))
        assert "already forgotten" not in result.stderr
        assert re.search(
            r"Error: 1 of 1 blocks failed after 2 attempts: \(0, 0\); first error \(block \(0, 0\)\): "
            r"the dask nanny restarted its worker for memory [12] times in 2 attempts \(it used [\d.]+ MiB, over 95% "
            r"of the worker memory limit 476.84 MiB\); this block of 64 runs was estimated at 350.01 MiB plus a "
            r"worker baseline of about 288.00 MiB", line,
        ), line
        status = diffsweep("status", str(store))
        assert "failed    1 blocks raised on every attempt: (0, 0)" in status.stdout
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
