"""Smoke test of the benchmark script: ``--quick`` runs end to end and prints its table.

Never a timed assertion: the figures depend on the machine and its load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_quick_prints_table_and_writes_json(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--skip-million", "--json", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    table = completed.stdout
    for line in ("stream copy bandwidth", "FTCS 1-D", "speed-up over the baseline", "scheduler share", "store writes"):
        assert line in table, table
    results = json.loads(output.read_text())
    assert results["quick"] is True
    assert results["end_to_end"]["runs"] > 0 and results["baseline"]["samples"] > 0
    assert results["speedup"] > 0
    assert len(results["load_start"]) == 3
