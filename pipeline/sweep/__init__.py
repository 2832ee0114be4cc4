"""The sweep definition: parse and validate a YAML file into an immutable :class:`Sweep`.

A sweep definition names a model (scheme, grid, boundary, initial condition), the axes
of the parameter grid (``coefficient``, ``step_size`` or ``cfl``, ``steps`` and any
model key), how the grid is cut into tasks (``chunks``), the stability criteria and
what to store.  :func:`parse_sweep` checks all of it once, before anything is
computed, and every refusal is a :class:`~pipeline.errors.SweepError` naming the
file, line, key path and offending value.  Everything downstream trusts a
:class:`Sweep`.

The package has two halves: :mod:`pipeline.sweep.definition` holds the value objects
(:class:`Sweep`, :class:`Axis`, :class:`Model`, :class:`RunModel`, :class:`Criteria`,
:class:`Output`, :class:`Units`) and the size, cost and memory estimates made from them;
:mod:`pipeline.sweep.parser` reads the YAML, section by section, on top of the safe,
bounded node layer :mod:`pipeline.sweep.yamltree`.

Examples
--------
>>> from pipeline.sweep import parse_sweep
>>> sweep = parse_sweep('''
... name: demo
... model: {scheme: ftcs, dims: 1, cells: 64}
... sweep:
...   coefficient: {geomspace: [0.01, 1.0], num: 3}
...   step_size: [1.0e-4, 2.0e-4]
...   steps: [100, 10]
... ''')
>>> sweep.shape
(3, 2, 2)
>>> sweep.checkpoints
(10, 100)
>>> sweep.run_model().dx
0.015625
"""

from __future__ import annotations

from pipeline.sweep import definition
from pipeline.sweep.definition import *  # noqa: F403 (the value objects and limits, re-exported)
from pipeline.sweep.parser import load_sweep, parse_sweep

__all__ = [*definition.__all__, "load_sweep", "parse_sweep"]
