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
