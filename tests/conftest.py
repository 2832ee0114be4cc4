"""Fixtures shared by the test modules."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))

#: a sweep small enough to run in well under a second, with both stable and unstable runs
SMALL_SWEEP = """\
name: small
description: a quick 1-D FTCS sweep across the stability bound
model: {scheme: ftcs, dims: 1, cells: 32, boundary: neumann, initial: step}
sweep:
  coefficient: {geomspace: [0.01, 1.0], num: 6}
  step_size: {linspace: [1.0e-5, 1.2e-3], num: 8}
  steps: [10, 100, 1000]
chunks: {coefficient: 2, step_size: 4}
output: {fields: final}
"""


@pytest.fixture
def small_sweep(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_SWEEP)
    return path


def compute_store(text: str, path: Path, *, blocks: int | None = None) -> str:
    """Run a sweep definition into a store in this process; only the first ``blocks``
    blocks when given (an incomplete store, as an interrupted run leaves it)."""
    from pipeline import runner, store
    from pipeline.executors import InProcessExecutor
    from pipeline.planning import plan as make_plan
    from pipeline.sweep import parse_sweep

    plan = make_plan(parse_sweep(text), parallelism=1)
    if blocks is None:
        runner.run_sweep(plan, str(path), executor=InProcessExecutor())
    else:
        todo = runner.prepare_store(str(path), plan)
        InProcessExecutor().execute(plan, todo[:blocks], store.BlockWriter(str(path)))
    return str(path)


def tree_digest(path: Path) -> str:
    """Digest of every file name and byte under ``path``: equal digests, untouched store."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def diffsweep(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess[str]:
    """Run the real console script (``env`` adds to this process's environment)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        ["diffsweep", *args], capture_output=True, text=True, timeout=timeout, env=env, **kwargs
    )


def fresh_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter that has never imported diffsweep."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd="/"
    )
