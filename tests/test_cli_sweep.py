"""Reading sweep files through the command line: bounded whatever the file kind, one line on refusal.

The console script is run for real (pipes, FIFOs, devices need a real process)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import diffsweep
from sweep_cases import GOOD_MINIMAL

from pipeline.cli.main import cli
from pipeline.sweep import MAX_TEXT_BYTES


def _refused(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert expected in lines[0], lines[0]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_is_read_only_up_to_the_limit() -> None:
    result = diffsweep("plan", "/dev/zero", timeout=60)
    _refused(result, f"/dev/zero: The sweep definition is longer than {MAX_TEXT_BYTES:,} bytes")


def test_an_endless_fifo_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    fifo = tmp_path / "sweep.yaml"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"yes > '{fifo}'"], stderr=subprocess.DEVNULL)
    try:
        result = diffsweep("plan", str(fifo), timeout=60)
    finally:
        writer.kill()
        writer.wait(timeout=10)
    _refused(result, f"{fifo}: The sweep definition is longer than {MAX_TEXT_BYTES:,} bytes")


def test_endless_standard_input_is_read_only_up_to_the_limit() -> None:
    result = subprocess.run(
        ["sh", "-c", "yes | diffsweep plan -"], capture_output=True, text=True, timeout=60
    )
    _refused(result, f"<stdin>: The sweep definition is longer than {MAX_TEXT_BYTES:,} bytes")


def test_a_sweep_on_standard_input_is_planned() -> None:
    result = CliRunner().invoke(cli, ["plan", "-", "--json"], input=GOOD_MINIMAL)
    assert result.exit_code == 0, result.output
    assert '"sweep": "minimal"' in result.output
    refused = CliRunner().invoke(cli, ["plan", "-"], input="name: x\n")
    assert refused.exit_code == 2
    assert refused.output.strip() == "Error: <stdin>:1: model: Missing required key."


def test_a_large_regular_file_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(GOOD_MINIMAL + "#" * MAX_TEXT_BYTES + "\n")
    size = path.stat().st_size
    _refused(
        diffsweep("plan", str(path)), f"big.yaml: The sweep definition is {size:,} bytes; at most"
    )


@pytest.mark.parametrize("levels", [1000, 100_000])
def test_deep_nesting_is_one_line_not_a_crash(tmp_path: Path, levels: int) -> None:
    # libyaml's composer recurses once per level: 100 000 levels crashed the interpreter
    path = tmp_path / "deep.yaml"
    path.write_text("name: deep\nmodel: " + "[" * levels + "]" * levels + "\n")
    _refused(diffsweep("plan", str(path)), f"{path}:2: Expected at most 20 levels of nested lists")


def test_set_overrides_plan_and_are_recorded_by_run(tmp_path: Path) -> None:
    import zarr

    from pipeline.sweep import parse_sweep

    sweep = tmp_path / "minimal.yaml"
    sweep.write_text(GOOD_MINIMAL)
    runner = CliRunner()
    sets = ["--set", "model.cells=16", "--set", "sweep.coefficient=[0.2, 0.4, 0.8]"]
    planned = runner.invoke(cli, ["plan", str(sweep), "--json", *sets])
    assert planned.exit_code == 0, planned.output
    expected = parse_sweep(
        GOOD_MINIMAL, overrides=["model.cells=16", "sweep.coefficient=[0.2, 0.4, 0.8]"]
    )
    assert f'"sweep_hash": "{expected.sha256}"' in planned.output

    store = tmp_path / "c16.zarr"
    ran = runner.invoke(cli, ["run", str(sweep), "-o", str(store), "--in-process", *sets])
    assert ran.exit_code == 0, ran.output
    attrs = zarr.open_group(str(store), mode="r").attrs
    assert attrs["sweep_hash"] == expected.sha256 != parse_sweep(GOOD_MINIMAL).sha256
    recorded = parse_sweep(attrs["sweep_definition"])
    assert recorded == expected and recorded.model.cells == 16
    assert '#   "model.cells=16"' in attrs["sweep_definition"]

    # resuming needs the same definition: the same overrides, not the bare file
    resumed = runner.invoke(
        cli, ["run", str(sweep), "-o", str(store), "--resume", "--in-process", *sets]
    )
    assert resumed.exit_code == 0, resumed.output
    bare = runner.invoke(cli, ["run", str(sweep), "-o", str(store), "--resume", "--in-process"])
    assert bare.exit_code == 2 and "holds another definition of sweep 'minimal': model.cells: 16 -> 32" in bare.output


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "model.cells=2",
            "Error: override 'model.cells=2': model.cells: Expected an integer >= 3. Got 2 instead.",
        ),
        (
            "model.cels=64",
            "Error: override 'model.cels=64': model.cels: Unknown key; did you mean 'cells'?",
        ),
        ("model.cells", "Error: override 'model.cells': Expected KEY=VALUE"),
    ],
)
def test_a_bad_set_is_one_line_and_writes_nothing(
    tmp_path: Path, override: str, expected: str
) -> None:
    sweep = tmp_path / "minimal.yaml"
    sweep.write_text(GOOD_MINIMAL)
    store = tmp_path / "never.zarr"
    result = diffsweep("run", str(sweep), "-o", str(store), "--set", override)
    _refused(result, expected)
    assert result.stderr.startswith(expected)
    assert not store.exists()
    _refused(diffsweep("plan", str(sweep), "--set", override), expected)
