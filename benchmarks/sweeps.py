"""The benchmark sweeps, shared by run.py and store_layout.py."""

from __future__ import annotations

import json


def sweep_yaml(name: str, coefficients: int, cfls: int, steps: list[int]) -> str:
    """1-D FTCS, 128 cells, Neumann walls, step initial condition: ``coefficients``
    (geomspace 1e-3..1) x ``cfls`` (linspace 0.005..0.495, all below the bound) runs."""
    return (
        f"name: {name}\n"
        "model: {scheme: ftcs, dims: 1, cells: 128, length: 1.0, boundary: neumann, initial: step}\n"
        "sweep:\n"
        f"  coefficient: {{geomspace: [1.0e-3, 1.0], num: {coefficients}}}\n"
        f"  cfl: {{linspace: [0.005, 0.495], num: {cfls}}}\n"
        f"  steps: {json.dumps(steps)}\n"
        "output: {fields: none}\n"
    )
