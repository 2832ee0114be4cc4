"""`diffsweep run` stores the first passages of every run; plain xarray reads them.

The store is opened in a fresh interpreter that never imports diffsweep, as an analyst
would; its values are compared with the library's (``pipeline.numerics.first_passage``,
tested against brute force in ``test_numerics_passage.py``) and with the stored status.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import diffsweep, fresh_python

from pipeline.numerics import Batch, Grid, first_passage, initial_condition

SWEEP = """\
name: first-passage
model: {scheme: ftcs, dims: 1, cells: 16, length: 1.0, boundary: neumann, initial: step}
sweep:
  coefficient: [0.5, 2.0]
  cfl: [0.2, 0.45, 0.52, 0.6]
  steps: [10, 300, 2000]
criteria: {tolerance: 1.0e-3, divergence: 1.0e3}
"""

READ_IN_FRESH_PROCESS = """
import json, sys
import xarray as xr
ds = xr.open_zarr({path!r})
out = {{"leaked": sorted(m for m in sys.modules if m == "pipeline" or m.startswith("pipeline."))}}
for name in ("steps_to_equilibrium", "steps_to_divergence"):
    v = ds[name]
    out[name] = {{
        "dims": list(v.dims), "dtype": str(v.dtype), "stored_dtype": str(v.encoding["dtype"]),
        "nan": int(v.isnull().sum()), "attrs": {{k: (int(a) if k == "not_reached" else a)
        for k, a in v.attrs.items()}}, "values": v.values.tolist(),
    }}
out["divergent_by"] = {{int(s): (ds.steps_to_divergence <= s).values.tolist() for s in ds.steps.values}}
out["status_divergent"] = {{int(s): (ds.status.sel(steps=s) == 3).values.tolist() for s in ds.steps.values}}
out["settled"] = {{int(s): (ds.distance.sel(steps=s) <= 1e-3).values.tolist() for s in ds.steps.values}}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_run_stores_first_passages_that_plain_xarray_reads(tmp_path: Path) -> None:
    sweep = tmp_path / "first-passage.yaml"
    sweep.write_text(SWEEP)
    store = tmp_path / "first-passage.zarr"
    run = diffsweep("run", str(sweep), "-o", str(store), "--in-process", "--no-progress")
    assert run.returncode == 0, run.stderr

    opened = fresh_python(READ_IN_FRESH_PROCESS.format(path=str(store)))
    assert opened.returncode == 0, opened.stderr
    info = json.loads(opened.stdout)
    assert info["leaked"] == []
    for name in ("steps_to_equilibrium", "steps_to_divergence"):
        stored = info[name]
        # int64 in the store; CF-decoded (the -1 of runs not computed is the _FillValue) as
        # floats, here whole numbers everywhere since every run is computed
        assert stored["dims"] == ["coefficient", "cfl"] and stored["stored_dtype"] == "int64"
        assert stored["dtype"] == "float64" and stored["nan"] == 0
        assert stored["attrs"]["not_reached"] == 2001 and stored["attrs"]["units"] == "1"
        assert "2001" in stored["attrs"]["comment"] and stored["attrs"]["long_name"]

    # the library's first passages for the same runs (cfl is r; dt = r dx^2 / D)
    grid = Grid(1, 16, 1.0)
    coefficient, cfl = np.meshgrid([0.5, 2.0], [0.2, 0.45, 0.52, 0.6], indexing="ij")
    runs = Batch(
        "ftcs", "neumann", grid, initial_condition("step", grid), coefficient.ravel(),
        (cfl * grid.dx**2 / coefficient).ravel(),
    )
    expected = first_passage(runs, 2000, tolerance=1e-3, divergence=1e3)
    assert np.ravel(info["steps_to_equilibrium"]["values"]).tolist() == expected.steps_to_equilibrium.tolist()
    assert np.ravel(info["steps_to_divergence"]["values"]).tolist() == expected.steps_to_divergence.tolist()
    divergence = np.array(info["steps_to_divergence"]["values"])
    assert (divergence[:, :2] == 2001).all()  # below the bound: never
    assert (divergence[:, 2:] <= 2000).all()  # above 2/λ_max = 0.5024 on 16 cells
    equilibrium = np.array(info["steps_to_equilibrium"]["values"])
    assert ((equilibrium[:, 1] > 10) & (equilibrium[:, 1] <= 2000)).all()

    # the status at every step count agrees with the first passages
    for steps in ("10", "300", "2000"):
        assert info["status_divergent"][steps] == info["divergent_by"][steps]
        settled = np.array(info["settled"][steps])
        assert (equilibrium[settled] <= int(steps)).all()
