"""The value objects of a sweep definition and the estimates made from them.

A :class:`Sweep` is what :func:`pipeline.sweep.parse_sweep` returns: an immutable,
hashable value holding the model (:class:`Model`), the axes of the parameter grid
(:class:`Axis`), the chunks, the stability :class:`Criteria` and the :class:`Output`
settings.  :class:`RunModel` is the complete, typed model of one run.  The size of
the grid, the memory one run and one task need, and the number of fields stored per
run are computed here and nowhere else.

This module imports only the standard library and numpy: reading a sweep never
imports the numerical kernels, dask or the store.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from pipeline.criteria import Criteria

__all__ = [
    "BOUNDARIES",
    "CASE",
    "DEFAULT_MEMORY_LIMIT",
    "FIELDS",
    "INITIALS",
    "MAX_AXIS_LENGTH",
    "MAX_RESULTS",
    "MAX_STEPS",
    "MAX_TEXT_BYTES",
    "LENGTH_UNITS",
    "MODEL_KEYS",
    "PARTICLE_DEFAULTS",
    "PARTICLE_KEYS",
    "PARTICLE_SCHEMES",
    "SCHEMES",
    "STEP_AXES",
    "WORKER_BASELINE_BYTES",
    "TIME_UNITS",
    "ZIPPABLE",
    "Axis",
    "Criteria",
    "Model",
    "Output",
    "RunModel",
    "Sweep",
    "Units",
]

# The same tuples as in pipeline.numerics, kept here so that reading a sweep never
# imports the numerical kernels; tests/test_sweep.py checks that they stay equal.
SCHEMES: tuple[str, ...] = ("ftcs", "backward-euler", "crank-nicolson", "random-walk", "langevin")
#: The schemes that move particles instead of integrating a field.
PARTICLE_SCHEMES: tuple[str, ...] = ("random-walk", "langevin")
BOUNDARIES: tuple[str, ...] = ("neumann", "periodic", "dirichlet")
INITIALS: tuple[str, ...] = ("step", "gaussian", "random")
FIELDS: tuple[str, ...] = ("none", "final", "checkpoints")

#: Model keys, in the order their axes come first in :attr:`Sweep.axes`.
MODEL_KEYS: tuple[str, ...] = (
    "scheme", "dims", "cells", "length", "boundary", "initial", "seed", "particles", "confinement"
)
#: Model keys only particle schemes use, and which of those schemes use each.
PARTICLE_KEYS: dict[str, tuple[str, ...]] = {
    "particles": PARTICLE_SCHEMES,
    "confinement": ("langevin",),
}
#: Defaults of the particle keys (a store written before they existed holds neither).
PARTICLE_DEFAULTS: dict[str, Any] = {"particles": 10_000, "confinement": 0.0}
#: The two ways of giving the time step; a sweep has exactly one of them as an axis.
STEP_AXES: tuple[str, ...] = ("step_size", "cfl")
#: The dimension of axes that vary together (``zip:``), and the keys that may.
CASE = "case"
ZIPPABLE: tuple[str, ...] = ("coefficient", *STEP_AXES)

DEFAULT_MEMORY_LIMIT = 2 * 2**30  # bytes per worker (one task at a time)
#: Resident memory of a dask worker process before a block's own arrays: Python, dask,
#: xarray, zarr and diffsweep imported, numba's kernels loaded, the store open.
#: benchmarks/worker_memory.py measured 62 MiB for a fresh worker and 202-262 MiB
#: after one tiny block (FTCS 1-D/3-D 262 MiB, implicit schemes 203 MiB); rounded up.
WORKER_BASELINE_BYTES = 288 * 2**20
#: Units a sweep file may give to lengths and times (``units:``): UDUNITS symbols that
#: UDUNITS-2, pint and cf_xarray all read, and that compose into a product such as
#: ``m2 s-1`` without brackets; ``"1"`` is a nondimensional study (the default).
LENGTH_UNITS: tuple[str, ...] = ("1", "m", "km", "cm", "mm", "um", "nm")
TIME_UNITS: tuple[str, ...] = ("1", "s", "ms", "us", "ns", "min", "h", "d")

MAX_TEXT_BYTES = 2**20  # a sweep definition is a small, hand-written file
MAX_AXIS_LENGTH = 10**6  # values along one axis
MAX_RESULTS = 10**9  # points of the whole result grid (runs x checkpoints)
#: Largest step count of a run.  FTCS integrates every step: 10**9 steps of a 128-cell
#: grid are ~1.3e11 cell updates, about 1.5 minutes of one core at the measured
#: ~1.5e9 updates/s, and a 3-D grid multiplies that by its cells.  A stability question
#: that 10**9 steps do not settle is not one this tool answers.
MAX_STEPS = 10**9

# Memory model of one run: the state, the next state and work arrays of the schemes
# (about six fields of cells**dims float64), plus any stored fields, plus the five
# float64 measures and the int8 status per checkpoint.
_WORK_ARRAYS = 6
_BYTES_PER_VALUE = 8
_DIAGNOSTIC_BYTES_PER_CHECKPOINT = 5 * 8 + 1
# Particle runs hold each particle's position (8 bytes per axis), whether it is still in
# the box (1 byte), and a histogram of counts and concentration per checkpoint.
_BYTES_PER_PARTICLE_AXIS = 8
_BYTES_PER_PARTICLE = 1
_HISTOGRAM_ARRAYS = 3


@dataclass(frozen=True)
class Axis:
    """One dimension of the parameter grid.

    Parameters
    ----------
    name
        ``coefficient``, ``step_size``/``cfl``, ``steps``, a model key, or
        :data:`CASE` (the dimension of zipped axes, values ``0 .. n-1``).
    values
        The coordinate values, Python scalars (``float``, ``int`` or ``str``), unique;
        ``steps`` ascending.
    """

    name: str
    values: tuple[Any, ...]

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Model:
    """The fixed model settings; a key that is swept holds ``None`` (read its axis)."""

    scheme: str | None = "ftcs"
    dims: int | None = 1
    cells: int | None = 128
    length: float | None = 1.0
    boundary: str | None = "neumann"
    initial: str | None = "step"
    seed: int | None = 0
    particles: int | None = 10_000
    confinement: float | None = 0.0


@dataclass(frozen=True)
class RunModel:
    """The complete model of one run (or of every run of one block): no swept ``None``.

    Build it with :meth:`Sweep.run_model` (from a sweep) or ``RunModel(**values)`` (from
    the coordinates and attributes of a results store).

    Examples
    --------
    >>> model = RunModel(scheme="ftcs", dims=2, cells=64, length=2.0,
    ...                  boundary="neumann", initial="step", seed=0)
    >>> model.dx
    0.03125
    >>> model.stability_limit
    0.25
    """

    scheme: str
    dims: int
    cells: int
    length: float
    boundary: str
    initial: str
    seed: int
    particles: int = PARTICLE_DEFAULTS["particles"]
    confinement: float = PARTICLE_DEFAULTS["confinement"]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunModel:
        """From a mapping holding every model key (numpy scalars become Python ones); the
        particle keys may be missing (stores written before they existed)."""
        values = {**PARTICLE_DEFAULTS, **values}
        plain = {
            key: values[key].item() if isinstance(values[key], np.generic) else values[key]
            for key in MODEL_KEYS
        }
        return cls(
            scheme=str(plain["scheme"]),
            dims=int(plain["dims"]),
            cells=int(plain["cells"]),
            length=float(plain["length"]),
            boundary=str(plain["boundary"]),
            initial=str(plain["initial"]),
            seed=int(plain["seed"]),
            particles=int(plain["particles"]),
            confinement=float(plain["confinement"]),
        )

    def as_dict(self) -> dict[str, Any]:
        """The model keys and their values, in :data:`MODEL_KEYS` order."""
        return {key: getattr(self, key) for key in MODEL_KEYS}

    @property
    def dx(self) -> float:
        """Cell width, ``length / cells``: :attr:`grid`'s (imports the numerics)."""
        return float(self.grid.dx)

    @property
    def cells_total(self) -> int:
        """Cells of one field, ``cells ** dims``."""
        return self.cells**self.dims

    @property
    def grid(self) -> Any:
        """The :class:`pipeline.numerics.Grid` of this model (imports the numerics)."""
        from pipeline.numerics import Grid

        return Grid(dims=self.dims, cells=self.cells, length=self.length)

    @property
    def moves_particles(self) -> bool:
        """Whether the scheme moves particles (``random-walk``, ``langevin``)."""
        return self.scheme in PARTICLE_SCHEMES

    @property
    def stability_limit(self) -> float | None:
        """Largest stable CFL number ``D dt / dx**2``, ``None`` if there is none.

        The von Neumann bound of the grid schemes; for ``random-walk`` the largest jump
        probability of a valid walk, ``1 / (2 dims)`` (the same number: its mean is FTCS);
        ``None`` for ``langevin``, whose bound is on ``k dt`` (:attr:`step_size_limit`).
        """
        if self.scheme == "random-walk":
            return 1.0 / (2 * self.dims)
        if self.scheme == "langevin":
            return None
        from pipeline.numerics import stability_limit

        return stability_limit(self.scheme, self.dims)

    @property
    def step_size_limit(self) -> float | None:
        """Largest stable step size whatever the coefficient: ``2 / k`` for ``langevin`` with
        confinement ``k > 0`` (divergent for ``k dt >= 2``), else ``None``."""
        if self.scheme == "langevin" and self.confinement > 0:
            return 2.0 / self.confinement
        return None


@dataclass(frozen=True)
class Units:
    """The units of length and time of a study (UDUNITS symbols); ``"1"``: nondimensional.

    Every other unit is derived from these two by :meth:`of`: the coefficient is
    length² / time, the step size and simulated time are times, the domain length and
    cell centres are lengths, the CFL number and step counts are pure numbers.

    Examples
    --------
    >>> units = Units(length="m", time="s")
    >>> units.of(length=2, time=-1), units.of(time=1), units.of()
    ('m2 s-1', 's', '1')
    >>> Units().of(length=2, time=-1), Units(length="mm").of(length=2, time=-1)
    ('1', 'mm2')
    """

    length: str = "1"
    time: str = "1"

    def of(self, length: int = 0, time: int = 0) -> str:
        """UDUNITS string of ``length**length * time**time`` (``"1"`` if nondimensional)."""
        parts = [
            f"{unit}{'' if power == 1 else power}"
            for unit, power in ((self.length, length), (self.time, time))
            if power and unit != "1"
        ]
        return " ".join(parts) or "1"

    @property
    def is_default(self) -> bool:
        """Nondimensional in both length and time."""
        return self == Units()


@dataclass(frozen=True)
class Output:
    """What is stored beside the measures: ``none``, ``final`` or ``checkpoints`` fields."""

    fields: str = "none"

    def fields_per_run(self, n_checkpoints: int) -> int:
        """How many fields one run stores: 0 (``none``), 1 (``final``) or one per checkpoint.

        The only place this multiplier is written down; memory and store-size estimates
        and the result layout read it from here.

        Examples
        --------
        >>> Output("checkpoints").fields_per_run(4), Output("final").fields_per_run(4)
        (4, 1)
        """
        if self.fields == "none":
            return 0
        if self.fields == "final":
            return 1
        if self.fields == "checkpoints":
            return n_checkpoints
        raise ValueError(f"fields must be one of {FIELDS}, not {self.fields!r}")


@dataclass(frozen=True)
class Sweep:
    """A validated sweep definition: an immutable, hashable value.

    Equality and hashing use the normalised definition only, never ``text`` or
    ``source``; :attr:`sha256` is the stable content hash stores are tagged with.

    Attributes
    ----------
    name, description
        Identification; ``name`` is safe as a file stem.
    model
        Fixed model settings (swept keys hold ``None``).
    axes
        The grid dimensions in result order: swept model keys (in :data:`MODEL_KEYS`
        order), ``coefficient``, ``step_size`` or ``cfl``, then ``steps``; or, when
        those two vary together, one :data:`CASE` axis (values ``0 .. n-1``) in their
        place.
    zipped
        The axes that vary together along :data:`CASE` (``zip:`` in the file):
        ``coefficient`` and the step axis, each with one value per case; empty for a
        full product.
    chunks
        Explicit runs per task along axes, ``((axis, size), ...)`` in axis order; axes
        not named are unchunked (``steps`` never is).
    criteria, output
        Classification thresholds and stored fields.
    units
        Units of length and time (default nondimensional, ``"1"``).
    text
        The YAML exactly as given; with overrides, the effective definition (the tree
        serialised back to YAML under a comment naming the file and the overrides).
    source
        Where it came from (file name or ``<string>``).
    """

    name: str
    description: str
    model: Model
    axes: tuple[Axis, ...]
    chunks: tuple[tuple[str, int], ...]
    criteria: Criteria
    output: Output
    units: Units = Units()
    zipped: tuple[Axis, ...] = ()
    text: str = field(default="", compare=False, repr=False)
    source: str = field(default="<string>", compare=False, repr=False)

    # ---- the grid

    @property
    def axis_names(self) -> tuple[str, ...]:
        """Names of the axes, in result-dimension order."""
        return tuple(axis.name for axis in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """Length of every axis, in result-dimension order (``steps`` last).

        Examples
        --------
        >>> from pipeline.sweep import parse_sweep
        >>> sweep = parse_sweep(
        ...     "name: s\\nmodel: {dims: [1, 2]}\\n"
        ...     "sweep: {coefficient: [0.5, 1.0], cfl: [0.1, 0.2, 0.3], steps: [10, 100]}\\n"
        ... )
        >>> sweep.axis_names, sweep.shape, sweep.n_runs, sweep.n_results
        (('dims', 'coefficient', 'cfl', 'steps'), (2, 2, 3, 2), 12, 24)
        """
        return tuple(len(axis.values) for axis in self.axes)

    @property
    def n_runs(self) -> int:
        """Number of trajectories: every axis but ``steps`` (checkpoints are not runs)."""
        return math.prod(self.shape[:-1])

    @property
    def n_results(self) -> int:
        """Number of points of the result grid (``n_runs`` × number of checkpoints)."""
        return math.prod(self.shape)

    def axis(self, name: str) -> Axis:
        """The axis called ``name``, a dimension or a zipped axis (its values along
        :data:`CASE`); ``KeyError`` naming the axes if there is none."""
        for axis in (*self.axes, *self.zipped):
            if axis.name == name:
                return axis
        raise KeyError(
            f"{name!r} is not an axis of sweep {self.name!r} (axes: {', '.join(self.axis_names)})"
        )

    @property
    def zipped_names(self) -> tuple[str, ...]:
        """Names of the axes that vary together along :data:`CASE` (empty if none)."""
        return tuple(axis.name for axis in self.zipped)

    def dim_of(self, name: str) -> str:
        """The dimension axis ``name`` runs along: :data:`CASE` if zipped, else itself."""
        return CASE if name in self.zipped_names else name

    @property
    def step_axis(self) -> str:
        """``"step_size"`` or ``"cfl"``: which one is the swept time-step axis."""
        return "cfl" if "cfl" in (*self.axis_names, *self.zipped_names) else "step_size"

    @property
    def run_dims(self) -> tuple[str, ...]:
        """The dimensions over which the runs of one model vary: ``coefficient`` and
        the step axis, or :data:`CASE` when they are zipped."""
        if self.zipped:
            return (CASE,)
        return ("coefficient", self.step_axis)

    @property
    def runs_per_model(self) -> int:
        """Runs that share one combination of swept model values."""
        return math.prod(len(self.axis(name)) for name in self.run_dims)

    def coefficient_and_step(self) -> tuple[np.ndarray, np.ndarray]:
        """Coefficient and step-axis value (``step_size`` or ``cfl``) of the runs of
        one model, broadcastable to their grid: ``(n, 1)`` and ``(1, m)`` for a
        product, ``(n,)`` and ``(n,)`` when zipped."""
        coefficient = np.asarray(self.axis("coefficient").values, dtype=float)
        step = np.asarray(self.axis(self.step_axis).values, dtype=float)
        if self.zipped:
            return coefficient, step
        return coefficient[:, None], step[None, :]

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """The step counts (``steps`` axis values), ascending."""
        return tuple(self.axes[-1].values)

    @property
    def swept_model_keys(self) -> tuple[str, ...]:
        """Model keys that are axes, in axis order."""
        return tuple(name for name in self.axis_names if name in MODEL_KEYS)

    def is_swept(self, key: str) -> bool:
        """Whether ``key`` is an axis of this sweep."""
        return key in self.axis_names

    def run_model(self, swept: Mapping[str, Any] | None = None) -> RunModel:
        """The complete model of a run: fixed keys from :attr:`model`, swept ones from ``swept``.

        ``swept`` maps every swept model key to its value for that run.
        """
        values = {key: getattr(self.model, key) for key in MODEL_KEYS}
        values.update(swept or {})
        missing = [key for key in MODEL_KEYS if values[key] is None]
        if missing:
            raise KeyError(f"swept model keys need a value: {', '.join(missing)}")
        return RunModel.from_mapping(values)

    def run_models(self) -> tuple[RunModel, ...]:
        """The model of every combination of swept model keys (one when none is swept)."""
        keys = self.swept_model_keys
        return tuple(
            self.run_model(dict(zip(keys, values, strict=True)))
            for values in itertools.product(*(self.axis(key).values for key in keys))
        )

    def model_values(self, key: str) -> tuple[Any, ...]:
        """Every value model ``key`` takes in this sweep (one when it is fixed)."""
        if self.is_swept(key):
            return self.axis(key).values
        return (getattr(self.model, key),)

    @property
    def has_particles(self) -> bool:
        """Whether any run of the sweep moves particles."""
        return any(scheme in PARTICLE_SCHEMES for scheme in self.model_values("scheme"))

    @property
    def dims_max(self) -> int:
        """The largest number of dimensions of any run."""
        return int(max(self.model_values("dims")))

    @property
    def cells_max(self) -> int:
        """The largest number of cells per dimension of any run."""
        return int(max(self.model_values("cells")))

    # ---- tasks and memory

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        """Runs per task along every axis: the explicit chunk, else the whole axis; 1
        along a swept model key, which always splits tasks (a task has one model).

        The blocks of :func:`pipeline.planning.plan` when :attr:`chunks` names a run axis.
        """
        explicit = dict(self.chunks)
        return tuple(
            1 if axis.name in MODEL_KEYS else explicit.get(axis.name, len(axis.values))
            for axis in self.axes
        )

    @property
    def runs_per_task(self) -> int:
        """Runs in one full task under :attr:`chunk_shape`."""
        return math.prod(self.chunk_shape[:-1])

    def memory_per_run(self, fields: str | None = None) -> int:
        """Estimated bytes one run needs (the largest grid of the sweep).

        About six arrays of ``cells**dims`` float64 for the state and the scheme's work
        arrays, the diagnostics per checkpoint, and the stored fields: one more array
        for ``final``, one per checkpoint for ``checkpoints``.  ``fields`` defaults to
        ``output.fields``.
        """
        output = self.output if fields is None else Output(fields)
        size = self.cells_max**self.dims_max
        n_checkpoints = len(self.checkpoints)
        stored = output.fields_per_run(n_checkpoints)
        grid = (_WORK_ARRAYS + stored) * size * _BYTES_PER_VALUE
        return grid + n_checkpoints * _DIAGNOSTIC_BYTES_PER_CHECKPOINT + self.particle_memory_per_run()

    def particle_memory_per_run(self) -> int:
        """Bytes of one particle run beyond the grid's: positions, flags and histograms
        (0 when no run of the sweep moves particles)."""
        if not self.has_particles:
            return 0
        particles = int(max(self.model_values("particles")))
        positions = particles * (self.dims_max * _BYTES_PER_PARTICLE_AXIS + _BYTES_PER_PARTICLE)
        return positions + _HISTOGRAM_ARRAYS * self.cells_max**self.dims_max * _BYTES_PER_VALUE

    @property
    def fields_per_run(self) -> int:
        """Fields one run stores under :attr:`output` (see :meth:`Output.fields_per_run`)."""
        return self.output.fields_per_run(len(self.checkpoints))

    def task_memory(self, runs: int, fields: str | None = None) -> int:
        """Estimated peak bytes of a task that computes ``runs`` runs (the largest grid's)."""
        return runs * self.memory_per_run(fields)

    def memory_per_task(self, fields: str | None = None) -> int:
        """Estimated bytes of one task under :attr:`chunk_shape`."""
        return self.task_memory(self.runs_per_task, fields)

    # ---- identity

    def to_dict(self) -> dict[str, Any]:
        """The normalised definition as plain data in the YAML layout.

        Swept model keys are written under ``sweep``; ``parse_sweep(yaml.safe_dump(
        sweep.to_dict()))`` equals ``sweep``.
        """
        model = {key: value for key, value in self.model_settings().items() if value is not None}
        sweep: dict[str, Any] = {}
        for axis in self.axes:
            if axis.name == CASE:
                sweep["zip"] = {zipped.name: list(zipped.values) for zipped in self.zipped}
            else:
                sweep[axis.name] = list(axis.values)
        document = {
            "name": self.name,
            "description": self.description,
            "model": model,
            "sweep": sweep,
            "chunks": dict(self.chunks),
            "criteria": asdict(self.criteria),
            "output": asdict(self.output),
        }
        if not self.units.is_default:
            document["units"] = asdict(self.units)
        return document

    def canonical_json(self) -> str:
        """Canonical JSON of the normalised definition (what :attr:`sha256` hashes).

        Keys sorted, no whitespace, floats by ``repr``, axes and chunks as ordered
        lists; comments, layout and key order of the YAML do not enter.  ``units``
        and ``zip`` enter only when given, so definitions without them keep the hash
        they had before either existed.
        """
        document: dict[str, Any] = {
            "format": "diffsweep-sweep-1",
            "name": self.name,
            "description": self.description,
            "model": self.model_settings(),
            "axes": [[axis.name, list(axis.values)] for axis in self.axes],
            "chunks": [list(chunk) for chunk in self.chunks],
            "criteria": asdict(self.criteria),
            "output": asdict(self.output),
        }
        if not self.units.is_default:
            document["units"] = asdict(self.units)
        if self.zipped:
            document["zip"] = [[axis.name, list(axis.values)] for axis in self.zipped]
        return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)

    def model_settings(self) -> dict[str, Any]:
        """The model as plain data, without the particle keys no scheme of the sweep uses
        (they are at their defaults): grid sweeps keep the definition and hash they had
        before those keys existed, and the result parses again."""
        model = asdict(self.model)
        schemes = set(self.model_values("scheme"))
        for key, users in PARTICLE_KEYS.items():
            if not schemes & set(users):
                model.pop(key)
        return model

    @cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of :meth:`canonical_json`: stable across formatting changes."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()
