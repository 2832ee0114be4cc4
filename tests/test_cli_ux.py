"""What a user of ``diffsweep run`` sees: progress without a terminal, a quiet Ctrl-C and full
disk with the command that finishes the job, the closing summary, the store's run history, and
a changed definition named key by key before any cluster starts.

The Ctrl-C and disk-full tests run the real console script on a real LocalCluster and signal
or fill it for real (SIGINT to the whole process group, as a terminal sends it; a small tmpfs,
or where none can be mounted a file system with a byte quota); each then finishes the store
with the suggested command and compares it with a clean run.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import shlex
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from conftest import compute_store, diffsweep, tree_digest
from sweep_cases import INTERRUPTIBLE

from pipeline import store as stores
from pipeline.cli.interruptions import RunCommand
from pipeline.cli.main import cli
from pipeline.cli.run import run as run_command
from pipeline.diagnostics import STATUS_NAMES
from pipeline.runner import SUMMARY_WIDTH

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


#: 1,200 runs x 3 step counts = 3,600 results in 12 blocks, a second or two in one process
THOUSANDS = """\
name: thousands
model: {scheme: ftcs, dims: 1, cells: 16, boundary: neumann, initial: step}
sweep:
  coefficient: {geomspace: [0.01, 1.0], num: 40}
  step_size: {linspace: [1.0e-4, 4.0e-3], num: 30}
  steps: [10, 100, 300]
chunks: {coefficient: 10, step_size: 10}
"""


def _write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _completed(store: Path) -> int:
    try:
        return stores.completion(str(store))[0]
    except Exception:  # not created yet
        return 0


def _status_counts(store: Path) -> dict[str, int]:
    """Results by status, counted here from the store with xarray (not with diffsweep's reader)."""
    status = xr.open_zarr(store).status.values.ravel()
    computed = status[status >= 0].astype(int)
    return dict(zip(STATUS_NAMES, np.bincount(computed, minlength=len(STATUS_NAMES)).tolist(), strict=True))


def _table(stdout: str) -> dict[str, list[int]]:
    """The summary's results table: status -> its counts (one per column)."""
    rows = {}
    for line in stdout.splitlines():
        match = re.fullmatch(r"  ([a-z ]+?)((?:\s+[\d,]+)+)", line)
        if match:
            rows[match[1]] = [int(n.replace(",", "")) for n in match[2].split()]
    return rows


def _assert_identical_values(store: Path, clean: Path) -> None:
    xr.testing.assert_identical(xr.open_zarr(clean).load().drop_attrs(), xr.open_zarr(store).load().drop_attrs())


def _group_gone(pgid: int, within: float = 20.0) -> bool:
    """True once no process of the group ``pgid`` is left (the cluster was stopped)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


# -- progress -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_without_a_terminal_progress_is_logged_every_interval_and_each_block_with_v(tmp_path: Path) -> None:
    sweep = _write(tmp_path, INTERRUPTIBLE.replace("400000", "40000"), "logged")
    result = diffsweep(
        "run", str(sweep), "-o", str(tmp_path / "s.zarr"), "--in-process", "-v", "--progress-interval", "0.2"
    )
    assert result.returncode == 0, result.stderr
    progress = re.findall(
        r"^\d\d:\d\d:\d\d INFO progress: (\d+) of 24 blocks \(\d+%\), ([\d,]+) runs in \S+ \S+, "
        r"(?:[\d.,]+ runs/s, ETA \S+ \S+|no block finished yet)$",
        result.stderr, flags=re.MULTILINE,
    )
    assert len(progress) >= 2, result.stderr
    done = [int(blocks) for blocks, _ in progress]
    assert done == sorted(done) and done[-1] < 24  # monotone, and nothing logged once all are done
    assert all(int(runs.replace(",", "")) == 2 * blocks for blocks, runs in ((int(b), r) for b, r in progress))
    blocks = re.findall(r"INFO block \d+,\d+ done: 2 runs, kernels .*\((\d+) of 24 blocks\)$", result.stderr, re.M)
    assert sorted(map(int, blocks)) == list(range(1, 25))  # -v: each block, once
    assert "\r" not in result.stderr and "block/s" not in result.stderr  # no bar in a log


@pytest.mark.slow
def test_without_v_and_with_no_progress_a_log_stays_quiet(tmp_path: Path) -> None:
    sweep = _write(tmp_path, INTERRUPTIBLE.replace("400000", "4000"), "quiet")
    default = diffsweep("run", str(sweep), "-o", str(tmp_path / "a.zarr"), "--in-process", "--progress-interval", "60")
    assert default.returncode == 0, default.stderr
    # one line saying what will be computed and how often progress follows; no per-block lines
    assert len(_lines(default.stderr)) == 1, default.stderr
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO computing 24 of 24 blocks; a progress line every 60 s\n", default.stderr)
    silent = diffsweep("run", str(sweep), "-o", str(tmp_path / "b.zarr"), "--in-process", "--no-progress")
    assert silent.returncode == 0 and silent.stderr == ""


@pytest.mark.slow
def test_on_a_terminal_the_bar_is_drawn_and_no_progress_lines(tmp_path: Path) -> None:
    sweep = _write(tmp_path, INTERRUPTIBLE.replace("400000", "4000"), "tty")
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100 characters
    process = subprocess.Popen(
        ["diffsweep", "run", str(sweep), "-o", str(tmp_path / "t.zarr"), "--in-process", "--progress-interval", "0.1"],
        stdout=subprocess.PIPE, stderr=terminal,
    )
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        drawn += chunk
    stdout, _ = process.communicate(timeout=120)
    os.close(controller)
    assert process.returncode == 0
    text = drawn.decode(errors="replace")
    assert "24/24" in text and "block/s" in text and "\r" in text, text  # tqdm's bar
    assert "progress:" not in text
    assert b"Computed 24 of 24 blocks" in stdout


# -- Ctrl-C -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.parametrize("workers", ["--processes", "--threads"])
def test_ctrl_c_stops_the_cluster_quietly_and_the_suggested_resume_finishes_the_store(
    workers: str, tmp_path: Path
) -> None:
    sweep = _write(tmp_path, INTERRUPTIBLE, "interruptible")
    store = tmp_path / "interrupted.zarr"
    options = ["--workers", "2", workers, "--no-progress", "--set", "description=stopped on purpose"]
    process = subprocess.Popen(
        ["diffsweep", "run", str(sweep), "-o", str(store), *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 180
    while _completed(store) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C: the whole group
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr
    assert stdout == ""
    lines = _lines(stderr)
    where = "tcp://127.0.0.1:" if workers == "--processes" else "in this process:"
    assert len(lines) == 2 and lines[0].startswith(f"dask scheduler {where}"), stderr
    match = re.fullmatch(r"interrupted after (\d+) of 24 blocks; finish with: (.+)", lines[1])
    assert match, stderr
    stored = int(match[1])
    assert stored == _completed(store) and 2 <= stored < 24, "the run was not interrupted in the middle"
    suggested = shlex.split(match[2])
    assert suggested == ["diffsweep", "run", str(sweep), "-o", str(store), *options, "--resume"]
    assert _group_gone(process.pid), "worker processes outlived the interrupted run"

    resumed = subprocess.run(suggested, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Computed {24 - stored} of 24 blocks in" in resumed.stdout
    assert f"({stored} were already stored)" in resumed.stdout

    clean = tmp_path / "clean.zarr"
    ran = CliRunner().invoke(cli, ["run", str(sweep), "-o", str(clean), "--in-process", *options[3:]])
    assert ran.exit_code == 0, ran.output
    _assert_identical_values(store, clean)
    history = stores.run_history(str(store))
    assert [entry["outcome"] for entry in history] == ["interrupted", "finished"]
    assert history[0]["blocks_computed"] <= stored and history[1]["blocks_stored_before"] == stored


# -- a full disk --------------------------------------------------------------------------------

#: 8 blocks with the final field stored: enough bytes per block to fill a small disk part way
DISK_FILLER = """\
name: filler
model: {scheme: ftcs, dims: 1, cells: 2048, boundary: periodic, initial: random, seed: 5}
sweep:
  coefficient: {geomspace: [0.1, 1.0], num: 8}
  cfl: {linspace: [0.1, 0.45], num: 16}
  steps: [10, 20]
chunks: {coefficient: 1, cfl: 16}
output: {fields: final}
"""

PAGE = 4096


def _pages(path: Path) -> int:
    """Bytes a tmpfs needs for the files under ``path`` (whole pages per file)."""
    return sum(-(-f.stat().st_size // PAGE) * PAGE for f in path.rglob("*") if f.is_file())


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class SmallDisk:
    """Where the disk-full test writes: a tmpfs, or a file system with a byte quota."""

    def __init__(self, kind: str, root: Path, capacity: int, entry_points: Path) -> None:
        self.kind, self.root, self.capacity, self.entry_points = kind, root, capacity, entry_points

    @property
    def store(self) -> str:
        path = str(self.root / "full.zarr")
        return path if self.kind == "tmpfs" else f"quotafs://{path}"

    @property
    def env(self) -> dict[str, str]:
        python_path = os.pathsep.join([str(ROOT), str(TESTS), str(self.entry_points)])
        return {
            "PYTHONPATH": python_path,
            "DIFFSWEEP_TEST_QUOTA": str(self.capacity),
            "DIFFSWEEP_TEST_QUOTA_ROOT": str(self.root),
        }

    def grow(self) -> None:
        """Free space: ten times the room."""
        self.capacity *= 10
        if self.kind == "tmpfs":
            subprocess.run(["mount", "-o", f"remount,size={self.capacity}", str(self.root)], check=True)


def _mount_tmpfs(path: Path, size: int) -> bool:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return mounted.returncode == 0


def _measured(tmp_path: Path) -> tuple[Path, Path]:
    """DISK_FILLER's template alone, and its complete store: what the small disk is sized from."""
    from pipeline import store as store_module
    from pipeline.planning import plan as make_plan
    from pipeline.sweep import parse_sweep

    template, full = tmp_path / "template.zarr", tmp_path / "measure.zarr"
    store_module.create(str(template), make_plan(parse_sweep(DISK_FILLER), parallelism=2))
    compute_store(DISK_FILLER, full)
    return template, full


def _quota_disk(tmp_path: Path, template: Path, full: Path) -> SmallDisk:
    from quotafs import register_entry_point

    entry_points, root = tmp_path / "entry-points", tmp_path / "disk"
    register_entry_point(entry_points)
    root.mkdir(exist_ok=True)
    return SmallDisk("quota", root, _bytes(template) + (_bytes(full) - _bytes(template)) // 2, entry_points)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A disk with room for the template and about half of the blocks of DISK_FILLER.

    A real tmpfs when this process may mount one (root); otherwise the quota file
    system on the same cluster, so the test runs everywhere.
    """
    template, full = _measured(tmp_path)
    root = tmp_path / "disk"
    size = _pages(template) + (_pages(full) - _pages(template)) // 2
    size = -(-size // PAGE) * PAGE
    if _mount_tmpfs(root, size):
        yield SmallDisk("tmpfs", root, size, tmp_path)
        subprocess.run(["umount", str(root)], check=True)
    else:
        print("cannot mount a tmpfs here: using the quota file system instead")
        yield _quota_disk(tmp_path, template, full)


@pytest.mark.slow
@pytest.mark.cluster
def test_a_full_disk_is_one_line_with_the_resume_hint_and_the_resume_finishes(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    sweep = _write(tmp_path, DISK_FILLER, "filler")
    options = ["--workers", "2", "--no-progress"]
    result = diffsweep("run", str(sweep), "-o", small_disk.store, *options, env=small_disk.env)

    assert result.returncode == 1, result.stderr
    lines = _lines(result.stderr)
    assert len(lines) == 2 and lines[0].startswith("dask scheduler "), result.stderr
    assert "Compute Failed" not in result.stderr and "Traceback" not in result.stderr
    match = re.fullmatch(
        rf"Error: {os.strerror(errno.ENOSPC)} \(errno ENOSPC\) while writing {re.escape(small_disk.store)} "
        r"after (\d+) of 8 blocks; free space, then finish with: (.+)",
        lines[1],
    )
    assert match, lines[1]
    assert int(match[1]) < 8
    suggested = shlex.split(match[2])
    assert suggested == ["diffsweep", "run", str(sweep), "-o", small_disk.store, *options, "--resume"]

    small_disk.grow()
    resumed = subprocess.run(
        suggested, capture_output=True, text=True, timeout=300, env={**os.environ, **small_disk.env}
    )
    assert resumed.returncode == 0, resumed.stderr
    _assert_identical_values(small_disk.root / "full.zarr", tmp_path / "measure.zarr")  # a clean run


@pytest.mark.slow
def test_the_quota_file_system_fills_like_a_disk(tmp_path: Path) -> None:
    """The fallback of the test above, in one process: the same line, the same exit status."""
    template, full = _measured(tmp_path)
    disk = _quota_disk(tmp_path, template, full)
    sweep = _write(tmp_path, DISK_FILLER, "filler")
    result = diffsweep("run", str(sweep), "-o", disk.store, "--in-process", "--no-progress", env=disk.env)
    assert result.returncode == 1, result.stderr
    assert re.fullmatch(
        rf"Error: {os.strerror(errno.ENOSPC)} \(errno ENOSPC\) while writing {re.escape(disk.store)} after \d of 8 "
        rf"blocks; free space, then finish with: diffsweep run {re.escape(str(sweep))} -o {re.escape(disk.store)} "
        r"--in-process --no-progress --resume\n",
        result.stderr,
    ), result.stderr
    disk.grow()
    assert diffsweep("run", str(sweep), "-o", disk.store, "--in-process", "--resume", env=disk.env).returncode == 0
    _assert_identical_values(disk.root / "full.zarr", full)


def test_disk_full_errors_are_recognised_also_when_wrapped() -> None:
    from pipeline.cli.interruptions import is_disk_full

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    try:
        try:
            raise full
        except OSError as error:
            raise RuntimeError("write failed") from error
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert is_disk_full(OSError(errno.EDQUOT, "quota"))
    assert not is_disk_full(OSError(errno.EACCES, "denied"))
    assert not is_disk_full(ValueError("no"))


# -- the command to type again ------------------------------------------------------------------


def test_the_resume_command_keeps_the_users_options_and_trades_overwrite_for_resume() -> None:
    args = ["s.yaml", "-o", "out dir/s.zarr", "--overwrite", "--set", "model.cells=64", "--workers", "2", "-v"]
    command = RunCommand.of(run_command, args)
    assert command.resuming() == "diffsweep run s.yaml -o 'out dir/s.zarr' --set model.cells=64 --workers 2 -v --resume"
    assert command.again() == "diffsweep run s.yaml -o 'out dir/s.zarr' --overwrite --set model.cells=64 --workers 2 -v"
    # a value that reads like a flag stays a value; --resume is not doubled
    tricky = RunCommand.of(run_command, ["s.yaml", "-o", "--overwrite", "--resume"])
    assert tricky.resuming() == "diffsweep run s.yaml -o --overwrite --resume"


# -- the summary and the history ----------------------------------------------------------------


def test_summary_lines_are_short_formatted_alike_and_match_the_store(tmp_path: Path) -> None:
    sweep = _write(tmp_path, THOUSANDS, "thousands")
    store = tmp_path / "t.zarr"
    result = CliRunner().invoke(cli, ["run", str(sweep), "-o", str(store), "--in-process"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= SUMMARY_WIDTH for line in lines), max(lines, key=len)
    assert re.match(r"Computed 12 of 12 blocks in \S+ \S+$", lines[0])
    assert re.match(r"  1,200 runs at [\d,.]+ runs/s on 1 worker$", lines[1])
    assert "this run (the whole store)" in result.stdout
    assert "1,200 runs x 3 step counts = 3,600 results" in result.stdout
    assert not re.search(r"\d{4}", result.stdout.replace(str(store), "")), "a number without separators"
    table = _table(result.stdout)
    counts = _status_counts(store)
    assert {name: table[name] for name in STATUS_NAMES} == {name: [n] for name, n in counts.items()}
    assert table["total"] == [3600]


def test_resume_shows_this_run_and_the_whole_store_and_appends_to_the_history(tmp_path: Path) -> None:
    sweep = _write(tmp_path, THOUSANDS, "thousands")
    store = tmp_path / "r.zarr"
    compute_store(THOUSANDS, store, blocks=5)  # an interrupted store
    before = _status_counts(store)
    runner = CliRunner()
    result = runner.invoke(cli, ["run", str(sweep), "-o", str(store), "--resume", "--in-process"])
    assert result.exit_code == 0, result.output
    assert "Computed 7 of 12 blocks in" in result.stdout and "(5 were already stored)" in result.stdout
    table = _table(result.stdout)
    after = _status_counts(store)
    for name in STATUS_NAMES:
        assert table[name] == [after[name] - before[name], after[name]], name
    assert table["total"] == [sum(after.values()) - sum(before.values()), 3600]
    assert all(len(line) <= SUMMARY_WIDTH for line in result.stdout.splitlines())
    history = stores.run_history(str(store))
    assert len(history) == 1 and history[0]["blocks_computed"] == 7 and history[0]["blocks_stored_before"] == 5

    # a second run of the same sweep into another store keeps its own history; this one is untouched
    digest = tree_digest(store)
    noop = runner.invoke(cli, ["run", str(sweep), "-o", str(store), "--resume"])  # no cluster is started
    assert noop.exit_code == 0, noop.output
    assert noop.stdout.startswith("Nothing to compute: all 12 blocks were already stored (nothing written).")
    assert _table(noop.stdout)["total"] == [3600]
    assert tree_digest(store) == digest  # the record of the run that computed it is not clobbered

    status = runner.invoke(cli, ["status", str(store)])
    assert re.search(r"runs +1\. \S+ on \S+, finished: 7 blocks \(5 stored before\), 700 runs in", status.stdout)


def test_each_computing_run_adds_to_the_history(tmp_path: Path) -> None:
    sweep = _write(tmp_path, THOUSANDS, "thousands")
    store = tmp_path / "h.zarr"
    runner = CliRunner()
    assert runner.invoke(cli, ["run", str(sweep), "-o", str(store), "--in-process"]).exit_code == 0
    assert runner.invoke(cli, ["run", str(sweep), "-o", str(store), "--in-process", "--overwrite"]).exit_code == 0
    # --overwrite makes a new store: its history starts again
    assert [e["outcome"] for e in stores.run_history(str(store))] == ["finished"]
    first = stores.run_history(str(store))[0]
    assert first["blocks_computed"] == 12 and first["runs_computed"] == 1200
    assert sum(first["status_counts"].values()) == 3600


# -- a changed definition on --resume -----------------------------------------------------------


def test_resume_with_a_changed_definition_names_the_keys_before_any_cluster_starts(tmp_path: Path) -> None:
    sweep = _write(tmp_path, THOUSANDS, "thousands")
    store = tmp_path / "c.zarr"
    compute_store(THOUSANDS, store, blocks=3)
    digest = tree_digest(store)
    started = time.monotonic()
    result = diffsweep(
        "run", str(sweep), "-o", str(store), "--resume", "--set", "model.cells=32",
        "--set", "sweep.steps=[10, 100]", "--workers", "2",
    )
    assert result.returncode == 2
    assert _lines(result.stderr) == [
        f"Error: {str(store)!r} holds another definition of sweep 'thousands': model.cells: 16 -> 32; "
        "sweep.steps: [10, 100, 300] -> [10, 100]; use another store or --overwrite"
    ]  # and nothing else: no scheduler line, the cluster was never started
    assert time.monotonic() - started < 30
    assert tree_digest(store) == digest


def test_a_long_axis_change_is_shown_by_length_and_ends() -> None:
    from pipeline.sweep import parse_sweep
    from pipeline.sweep.compare import changes

    old = parse_sweep(THOUSANDS)
    new = parse_sweep(THOUSANDS.replace("num: 30", "num: 20").replace("cells: 16", "cells: 16, length: 2.0"))
    assert changes(old, new) == [
        "model.length: 1 -> 2",
        "sweep.step_size: 30 values 0.0001 ... 0.004 -> 20 values 0.0001 ... 0.004",
    ]
    nudged = parse_sweep(THOUSANDS.replace("4.0e-3", "4.0000001e-3"))
    assert changes(old, nudged)[0].startswith("sweep.step_size: value 2 of 30 ")

