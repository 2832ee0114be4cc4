"""The store's layout before and after consolidation: files, bytes, read time, cost.

``diffsweep run --no-consolidate`` writes a sweep into a store with one chunk per block
(as every run does while it computes); ``diffsweep run --resume --consolidate`` then
rewrites it into large chunks. Before and after, a fresh Python that never imported
diffsweep reads one full variable (``distance``) with plain ``xarray.open_zarr`` and
times it (``open_zarr`` and ``.values``; the imports, ~1-2 s of start-up whatever the
store, are not timed). Printed side by side, with the targets of the million-run store (at most 200
files; one variable read in at most 2 s).

The default size is a tenth of the million-run sweep: 316 x 316 runs (~10^5) with its
4 checkpoints to 10^4 steps; ``--million`` runs the million-run sweep (1000 x 1000 runs x 4 checkpoints,
minutes). For the default size the million-run store's files after consolidation are
*computed* from its plan (its consolidated chunks and its template's other files,
written without computing anything): an exact count, not a measurement of a run.

Usage::

    python benchmarks/store_layout.py [--million] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweeps import sweep_yaml  # noqa: E402  (the same sweeps as benchmarks/run.py)

#: the checkpoints of the million-run sweep of benchmarks/run.py (and of the 10^5-run one here)
MILLION_STEPS = [2500, 5000, 7500, 10000]
#: the targets of the million-run store
MAX_FILES = 200
MAX_READ_SECONDS = 2.0

READ_ONE_VARIABLE = """
import json, time
import dask.array, xarray as xr  # imports are the interpreter's start-up, not the store's: not timed
start = time.perf_counter()
with xr.open_zarr({path!r}) as ds:
    values = ds["distance"].values
print(json.dumps({{"seconds": time.perf_counter() - start, "bytes": values.nbytes}}))
"""


def files_and_bytes(path: Path) -> tuple[int, int]:
    found = [p for p in path.rglob("*") if p.is_file() and p.name != "diffsweep.lock"]
    return len(found), sum(p.stat().st_size for p in found)


def read_seconds(path: Path, repeats: int = 3) -> tuple[float, int]:
    """Best of ``repeats`` fresh processes reading ``distance`` whole (open included)."""
    best, nbytes = math.inf, 0
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", READ_ONE_VARIABLE.format(path=str(path))],
                              capture_output=True, text=True, check=True, cwd="/")
        result = json.loads(done.stdout)
        best, nbytes = min(best, result["seconds"]), result["bytes"]
    return best, nbytes


def diffsweep(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pipeline.cli.main", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True)


def measure(workdir: Path, name: str, text: str) -> dict:
    sweep = workdir / f"{name}.yaml"
    sweep.write_text(text)
    path = workdir / f"{name}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    diffsweep("run", str(sweep), "-o", str(path), "--no-consolidate", "--no-progress", "--workers", "2")
    run_wall = time.perf_counter() - start
    files_before, bytes_before = files_and_bytes(path)
    read_before, nbytes = read_seconds(path)
    start = time.perf_counter()
    diffsweep("run", str(sweep), "-o", str(path), "--resume", "--consolidate", "--no-progress", "--in-process")
    consolidate_wall = time.perf_counter() - start
    history = json.loads(__import__("zarr").open_group(str(path), mode="r").attrs["run_history"])[-1]
    files_after, bytes_after = files_and_bytes(path)
    read_after, _ = read_seconds(path)
    shutil.rmtree(path, ignore_errors=True)
    return {
        "name": name, "run_wall_seconds": run_wall, "variable_bytes": nbytes,
        "files_before": files_before, "bytes_before": bytes_before, "read_seconds_before": read_before,
        "files_after": files_after, "bytes_after": bytes_after, "read_seconds_after": read_after,
        "consolidation_seconds": history["consolidation_seconds"], "consolidate_command_seconds": consolidate_wall,
        "chunks_before": history["chunks_before_consolidation"], "chunks_after": history["chunks_after_consolidation"],
    }


def million_files_from_plan(workdir: Path) -> dict:
    """Files of the consolidated million-run store, from its plan and template (nothing computed)."""
    from pipeline import consolidate, store
    from pipeline.planning import plan as make_plan
    from pipeline.sweep import parse_sweep

    plan = make_plan(parse_sweep(sweep_yaml("million", 1000, 1000, MILLION_STEPS)), parallelism=2)
    path = workdir / "million-template.zarr"
    store.create(str(path), plan)
    # the template holds metadata and coordinates; the record's and variables' chunks come on top
    template_files, _ = files_and_bytes(path)
    record = f"{store.BOOKKEEPING}/{store.COMPLETED}"
    block_chunks = sum(math.prod(plan.block_grid) for _ in plan.layout.variables) + math.prod(plan.block_grid)
    chunks = consolidate.planned_chunks(plan)
    shapes = {v.name: v.shape for v in plan.layout.variables} | {record: plan.block_grid}
    after = sum(math.prod(math.ceil(s / c) for s, c in zip(shapes[n], chunks[n], strict=True)) for n in chunks)
    shutil.rmtree(path, ignore_errors=True)
    largest = max(math.prod(v.shape) * __import__("numpy").dtype(v.dtype).itemsize for v in plan.layout.variables)
    return {"blocks": plan.n_blocks, "files_before": template_files + block_chunks,
            "files_after": template_files + after, "largest_variable_bytes": largest}


def mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--million", action="store_true", help="also run the million-run sweep (minutes)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    options = parser.parse_args(argv)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="diffsweep-layout-") as tmp:
        workdir = Path(tmp)
        results["hundred_thousand"] = measure(workdir, "hundred-thousand", sweep_yaml("hundred-thousand", 316, 316, MILLION_STEPS))
        results["million_plan"] = million_files_from_plan(workdir)
        if options.million:
            results["million"] = measure(workdir, "million", sweep_yaml("million", 1000, 1000, MILLION_STEPS))
    print_table(results)
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2))
    return results


def print_table(results: dict) -> None:
    from dask.utils import format_bytes

    print(f"{'store':<44} {'before':>16} {'after':>16}  target")
    print("-" * 100)
    for key, label in (("hundred_thousand", "316 x 316 runs (~10^5), 4 checkpoints"), ("million", "million-run sweep (10^6 runs)")):
        if key not in results:
            continue
        r = results[key]
        print(f"{label}")
        print(f"{'  files':<44} {r['files_before']:>16,} {r['files_after']:>16,}"
              + (f"  <= {MAX_FILES}: {mark(r['files_after'] <= MAX_FILES)}" if key == "million" else ""))
        print(f"{'  bytes on disk':<44} {format_bytes(r['bytes_before']):>16} {format_bytes(r['bytes_after']):>16}")
        print(f"{'  read distance (' + format_bytes(r['variable_bytes']) + '), fresh xarray*':<44} "
              f"{r['read_seconds_before']:>14.3f} s {r['read_seconds_after']:>14.3f} s"
              + (f"  <= {MAX_READ_SECONDS:.0f} s: {mark(r['read_seconds_after'] <= MAX_READ_SECONDS)}" if key == "million" else ""))
        print(f"{'  consolidation (in the run / whole command)':<44} {'':>16} "
              f"{r['consolidation_seconds']:>12.2f} s / {r['consolidate_command_seconds']:.1f} s")
        print(f"{'  run without consolidation (2 workers)':<44} {r['run_wall_seconds']:>14.1f} s")
    print("  * open_zarr + .values in a fresh process, best of 3, imports (xarray, dask.array) not timed")
    m = results["million_plan"]
    print(f"million-run store from its plan ({m['blocks']:,} blocks; computed, not run)")
    print(f"{'  files':<44} {m['files_before']:>16,} {m['files_after']:>16,}  <= {MAX_FILES}: {mark(m['files_after'] <= MAX_FILES)}")
    print(f"{'  largest variable':<44} {'':>16} {format_bytes(m['largest_variable_bytes']):>16}")


if __name__ == "__main__":
    main()
