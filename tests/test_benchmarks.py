"""Smoke test of the benchmark script: ``--quick`` runs end to end and prints its table.

It runs the benchmarks (tens of seconds, LocalClusters, a subprocess CLI run), so it is
marked ``benchmark`` and left out of the default run; ``pytest -m benchmark`` runs it.
Never a timed assertion: the figures depend on the machine and its load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.benchmark
def test_benchmark_quick_prints_table_and_writes_json(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--skip-million", "--json", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    table = completed.stdout
    for line in ("stream copy bandwidth", "FTCS 1-D", "first-passage watch", "end to end over the baseline", "small sweep", "scheduler share",
                 "store writes", "runs: dense / refine", "wall time: dense / refine"):
        assert line in table, table
    results = json.loads(output.read_text())
    end_to_end = results["end_to_end"]
    # the run really filled a store: every block, every result, bytes on disk
    assert end_to_end["runs"] > 0 and end_to_end["blocks"] >= 1
    assert end_to_end["runs"] <= end_to_end["blocks"] * end_to_end["runs_per_block"]
    assert end_to_end["store_bytes_on_disk"] > 0
    assert results["baseline"]["samples"] > 0 and results["baseline"]["results_per_s"] > 0
    assert 0 < results["speedup"] < float("inf")
    refined = results["refine"]  # both sides really ran: every edge bracketed by refine and by the dense grid
    coefficients = refined["study"]["coefficients"]
    assert refined["refine"]["bound_inside_bracket"] == coefficients == refined["brackets_overlap"]
    assert refined["dense"]["runs"] == refined["dense"]["step_sizes"] * coefficients
    assert refined["runs_ratio"] == refined["dense"]["runs"] / refined["refine"]["runs"]
