"""The layout of a results store, decided once: dimensions, coordinates and variables.

A :class:`ResultLayout` is built from a plan (:attr:`pipeline.planning.Plan.layout`)
before anything runs. It says, for the whole store:

* the dimensions and their sizes: the sweep axes in order (``steps`` last), then
  ``x``/``y``/``z`` when fields are stored;
* the coordinates: every axis (string axes as object arrays; zipped axes along
  ``case``, the dimension they share), the derived ``cfl`` (or
  ``step_size`` when the sweep is given in CFL numbers), ``time = steps * step_size``,
  and the cell centres of stored fields (unless ``length`` is swept, which moves them);
  with their dimensions and attributes (UDUNITS ``units`` in the sweep's
  :class:`~pipeline.sweep.Units`, by :func:`coordinate_attributes`);
* every variable: its dimensions, shape, zarr chunks, dtype, fill value, encoding and
  attributes; integer variables (``status``) carry their fill value ``-1`` as the CF
  ``_FillValue``, so plain xarray masks runs not computed yet.

The store's template (:func:`pipeline.store.template`), the Dataset of each computed
block (:meth:`ResultLayout.block_dataset`) and the writer's regions
(:meth:`pipeline.planning.Block.region`) all read from it, so a block always matches
the template it is written into. A new variable is one more entry in
:meth:`ResultLayout.from_plan`; its dimensions may be any of the axes (a per-run
variable leaves out ``steps``).

Examples
--------
>>> from pipeline.planning import plan
>>> from pipeline.sweep import parse_sweep
>>> sweep = parse_sweep('''
... name: tiny
... model: {cells: 16}
... sweep:
...   coefficient: [0.5, 1.0]
...   cfl: [0.25, 0.5, 0.75]
...   steps: [10, 100]
... output: {fields: final}
... ''')
>>> layout = plan(sweep, parallelism=1).layout
>>> layout.sizes
{'coefficient': 2, 'cfl': 3, 'steps': 2, 'x': 16}
>>> layout.variable("field").dims
('coefficient', 'cfl', 'x')
>>> status = layout.variable("status")
>>> status.dtype, status.fill_value, status.chunks
('int8', -1, (2, 3, 2))
>>> layout.coordinate("step_size").dims
('coefficient', 'cfl')
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from pipeline.diagnostics import (
    ATTRIBUTES,
    FAILED,
    MEASURES,
    NOT_COMPUTED,
    PASSAGES,
    STATUS_NAMES,
    passage_attributes,
)
from pipeline.particle_diagnostics import PARTICLE_ATTRIBUTES, PARTICLE_MEASURES
from pipeline.sweep import CASE, RunModel, Sweep, Units

if TYPE_CHECKING:
    from pipeline.planning import Block, Plan

__all__ = [
    "COORDINATE_ATTRIBUTES",
    "SPATIAL_DIMS",
    "CoordinateLayout",
    "ResultLayout",
    "VariableLayout",
    "axis_array",
    "cfl_number",
    "coordinate_attributes",
    "step_size_from_cfl",
]

#: dimensions of a stored field, in order; a d-dimensional run uses the first d
SPATIAL_DIMS = ("x", "y", "z")

#: long name of every coordinate, and its dimension as powers of (length, time)
_COORDINATES: dict[str, tuple[str, tuple[int, int]]] = {
    "coefficient": ("diffusion coefficient D", (2, -1)),
    "step_size": ("time step", (0, 1)),
    "cfl": ("CFL number r = D dt / dx^2", (0, 0)),
    "steps": ("number of time steps", (0, 0)),
    "time": ("simulated time = steps * step_size", (0, 1)),
    "scheme": ("time-stepping scheme", (0, 0)),
    "dims": ("number of spatial dimensions", (0, 0)),
    "cells": ("cells per dimension", (0, 0)),
    "length": ("edge length of the domain", (1, 0)),
    "boundary": ("boundary condition", (0, 0)),
    "initial": ("initial condition", (0, 0)),
    "seed": ("random seed of the initial condition and of the particles", (0, 0)),
    "particles": ("particles per run", (0, 0)),
    "confinement": ("harmonic confinement k of langevin, V = k/2 |x - x0|^2", (0, -1)),
    CASE: ("case number: the zipped axes take their values together along it", (0, 0)),
    "x": ("cell centre, first dimension", (1, 0)),
    "y": ("cell centre, second dimension", (1, 0)),
    "z": ("cell centre, third dimension", (1, 0)),
}


def coordinate_attributes(units: Units) -> dict[str, dict[str, str]]:
    """``long_name`` and UDUNITS ``units`` of every coordinate, in the sweep's ``units``.

    Examples
    --------
    >>> attrs = coordinate_attributes(Units(length="m", time="s"))
    >>> attrs["coefficient"]["units"], attrs["step_size"]["units"], attrs["x"]["units"], attrs["cfl"]["units"]
    ('m2 s-1', 's', 'm', '1')
    """
    return {
        name: {"long_name": long_name, "units": units.of(length=powers[0], time=powers[1])}
        for name, (long_name, powers) in _COORDINATES.items()
    }


def axis_array(values: Sequence[Any]) -> np.ndarray:
    """The values of a sweep axis as a coordinate array; strings as an object array
    (zarr's variable-length strings), numbers as numpy gives them.

    Examples
    --------
    >>> axis_array(("ftcs", "crank-nicolson")).dtype, axis_array((0.5, 1.0)).dtype
    (dtype('O'), dtype('float64'))
    """
    return np.array(values, dtype=object) if isinstance(values[0], str) else np.array(values)


#: the coordinates' attributes in a nondimensional study (no ``units:`` in the sweep file)
COORDINATE_ATTRIBUTES: dict[str, dict[str, str]] = coordinate_attributes(Units())

#: CF flag attributes of ``status``: ``flag_values`` has the variable's own type (int8);
#: the not-computed marker is the variable's ``_FillValue`` (see ``VariableLayout.encoding``),
#: not a flag, so plain xarray masks it
STATUS_ATTRIBUTES: dict[str, Any] = {
    "long_name": ATTRIBUTES["status"]["long_name"],
    "units": "1",
    "flag_values": np.arange(len(STATUS_NAMES), dtype=np.int8),
    "flag_meanings": " ".join(STATUS_NAMES),
    "comment": (
        f"_FillValue {NOT_COMPUTED}: run not computed yet (NaN once xarray decodes it); "
        f"{FAILED}: its block raised an error (diffsweep status names it, run --resume retries it)"
    ),
}
FIELD_ATTRIBUTES: dict[str, str] = {"long_name": "concentration", "units": "1"}
REASON_ATTRIBUTES: dict[str, Any] = {
    **PARTICLE_ATTRIBUTES["reason"],
    "flag_values": list(range(len(PARTICLE_ATTRIBUTES["reason"]["flag_meanings"].split()))),
    "missing_value_meaning": f"{NOT_COMPUTED} not computed",
}

#: model keys the cell width ``dx = length / cells`` depends on
_CELL_WIDTH_KEYS = ("cells", "length")


def cfl_number(coefficient: Any, step_size: Any, dx: Any) -> Any:
    """The CFL number ``r = D dt / dx**2`` (numpy arrays or DataArrays broadcast)."""
    return coefficient * step_size / dx**2


def step_size_from_cfl(coefficient: Any, cfl: Any, dx: Any) -> Any:
    """The time step ``dt = r dx**2 / D`` of a CFL number (inverse of :func:`cfl_number`)."""
    return cfl * dx**2 / coefficient


@dataclass(frozen=True)
class VariableLayout:
    """One data variable of the store.

    Attributes
    ----------
    name
        Variable name in the store.
    dims
        Its dimensions: any sweep axes (in axis order), then spatial dimensions.
    shape, chunks
        Size and zarr chunk size along each dimension; along an axis the chunk is the
        plan's block size, along a spatial dimension the whole field.
    dtype
        Numpy dtype name.
    fill_value
        What the store holds before a block is written: NaN, or for integer data a
        value outside the data's range (``-1``) that is also its CF ``_FillValue``.
    attrs
        CF attributes (``long_name``, ``units``, flags).
    """

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    fill_value: float | int
    attrs: Mapping[str, Any]

    @property
    def encoding(self) -> dict[str, Any]:
        """xarray's ``to_zarr`` encoding: the chunks and, for integer data, the fill value
        twice: as zarr's ``fill_value`` (what an unwritten chunk reads as) and as the CF
        ``_FillValue`` attribute, so that plain ``xarray.open_zarr`` masks runs not
        computed yet (NaN) instead of counting ``-1`` as data. Floating-point data keeps
        xarray's NaN for both."""
        encoding: dict[str, Any] = {"chunks": self.chunks}
        if np.issubdtype(np.dtype(self.dtype), np.integer):
            encoding["fill_value"] = self.fill_value
            encoding["_FillValue"] = self.fill_value
        return encoding

    @property
    def nbytes(self) -> int:
        """Uncompressed size of the whole variable."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class CoordinateLayout:
    """One coordinate of the store (its values come from :meth:`ResultLayout.coordinates`)."""

    name: str
    dims: tuple[str, ...]
    attrs: Mapping[str, Any]


@dataclass(frozen=True)
class ResultLayout:
    """Dimensions, coordinates and variables of a results store; built once per plan.

    Attributes
    ----------
    sweep
        The sweep the store holds.
    sizes
        Every dimension and its size, axes first (``steps`` last among them), then
        the spatial dimensions of stored fields.
    variables
        The data variables, in store order.
    coordinates_layout
        The coordinates: axes, derived ``cfl``/``step_size`` and ``time``, cell centres.
    """

    sweep: Sweep
    sizes: Mapping[str, int]
    variables: tuple[VariableLayout, ...]
    coordinates_layout: tuple[CoordinateLayout, ...]

    @classmethod
    def from_plan(cls, plan: Plan) -> ResultLayout:
        """The layout of the store ``plan`` writes, its blocks being the zarr chunks."""
        sweep = plan.sweep
        axes = sweep.axis_names
        spatial: tuple[str, ...] = ()
        if sweep.output.fields != "none":  # the parser refuses fields when dims or cells is swept
            spatial = SPATIAL_DIMS[: sweep.dims_max]
        sizes = {**dict(zip(axes, sweep.shape, strict=True)), **{name: sweep.cells_max for name in spatial}}
        chunks = {**dict(zip(axes, plan.chunks, strict=True)), **{name: sizes[name] for name in spatial}}

        def variable(name: str, dims: tuple[str, ...], dtype: str, fill_value: float | int, attrs: Mapping[str, Any]) -> VariableLayout:
            return VariableLayout(
                name, dims, tuple(sizes[d] for d in dims), tuple(chunks[d] for d in dims), dtype, fill_value, attrs
            )

        variables = [variable(name, axes, "float64", math.nan, ATTRIBUTES[name]) for name in MEASURES]
        variables.append(variable("status", axes, "int8", NOT_COMPUTED, STATUS_ATTRIBUTES))
        if sweep.has_particles:
            variables += [variable(name, axes, "float64", math.nan, PARTICLE_ATTRIBUTES[name]) for name in PARTICLE_MEASURES]
            variables.append(variable("reason", axes, "int8", NOT_COMPUTED, REASON_ATTRIBUTES))
        # first passages: one value per run, no steps dimension; the sentinel (largest
        # step count + 1) is data, -1 only marks a block not computed yet
        passages = passage_attributes(max(sweep.checkpoints), particles=sweep.has_particles)
        for name in PASSAGES:
            attrs = {**passages[name], "missing_value_meaning": f"{NOT_COMPUTED} not computed"}
            variables.append(variable(name, axes[:-1], "int64", NOT_COMPUTED, attrs))
        if spatial:
            kept_steps = axes if sweep.output.fields == "checkpoints" else axes[:-1]
            variables.append(variable("field", (*kept_steps, *spatial), "float64", math.nan, FIELD_ATTRIBUTES))

        # derived coordinates: the step axis not swept, over the axes it depends on
        run_dims = {sweep.dim_of("coefficient"), sweep.dim_of(sweep.step_axis)}
        step_dims = tuple(name for name in axes if name in {*_CELL_WIDTH_KEYS, *run_dims})
        derived = "step_size" if sweep.step_axis == "cfl" else "cfl"
        size_dims = step_dims if derived == "step_size" else (sweep.dim_of(sweep.step_axis),)
        attributes = coordinate_attributes(sweep.units)
        coordinates = [CoordinateLayout(name, (name,), attributes[name]) for name in axes]
        if sweep.zipped:  # each zipped axis is a coordinate along the cases
            zipped = {**attributes[CASE], "zipped_axes": " ".join(sweep.zipped_names)}
            coordinates[axes.index(CASE)] = CoordinateLayout(CASE, (CASE,), zipped)
            coordinates += [CoordinateLayout(name, (CASE,), attributes[name]) for name in sweep.zipped_names]
        coordinates.append(CoordinateLayout(derived, step_dims, attributes[derived]))
        time_dims = tuple(name for name in axes if name in {*size_dims, "steps"})
        coordinates.append(CoordinateLayout("time", time_dims, attributes["time"]))
        if not sweep.is_swept("length"):  # cell centres differ by run otherwise: no coordinate
            coordinates += [CoordinateLayout(name, (name,), attributes[name]) for name in spatial]
        return cls(sweep, sizes, tuple(variables), tuple(coordinates))

    # -- looking things up --------------------------------------------------------------
    @property
    def axis_names(self) -> tuple[str, ...]:
        """The sweep axes, in dimension order."""
        return self.sweep.axis_names

    def variable(self, name: str) -> VariableLayout:
        """The layout of variable ``name``; ``KeyError`` naming the variables if none."""
        for variable in self.variables:
            if variable.name == name:
                return variable
        raise KeyError(f"no variable {name!r} (variables: {', '.join(v.name for v in self.variables)})")

    def coordinate(self, name: str) -> CoordinateLayout:
        """The layout of coordinate ``name``; ``KeyError`` naming the coordinates if none."""
        for coordinate in self.coordinates_layout:
            if coordinate.name == name:
                return coordinate
        raise KeyError(f"no coordinate {name!r} (coordinates: {', '.join(c.name for c in self.coordinates_layout)})")

    @property
    def spatial_dims(self) -> tuple[str, ...]:
        """The dimensions of stored fields (none when fields are not stored)."""
        return tuple(name for name in self.sizes if name in SPATIAL_DIMS)

    @property
    def nbytes(self) -> int:
        """Uncompressed size of the data variables (coordinates are not counted)."""
        return sum(variable.nbytes for variable in self.variables)

    # -- values -------------------------------------------------------------------------
    def axis_values(self, name: str) -> np.ndarray:
        """The values of axis ``name`` as :func:`axis_array` stores them."""
        return axis_array(self.sweep.axis(name).values)

    def axis_coordinates(self, block: Block) -> dict[str, np.ndarray]:
        """The values of every axis over one block: each dimension's slice, and each
        zipped axis' slice along :data:`~pipeline.sweep.CASE`."""
        slices = dict(zip(block.dims, block.slices, strict=True))
        names = (*block.dims, *self.sweep.zipped_names)
        return {name: self.axis_values(name)[slices[self.sweep.dim_of(name)]] for name in names}

    def _first_model(self) -> RunModel:
        """The model of the first run (every model key at its first value)."""
        return self.sweep.run_model({key: self.sweep.axis(key).values[0] for key in self.sweep.swept_model_keys})

    def _cell_width(self) -> xr.DataArray:
        """``RunModel.dx`` over the swept ``cells``/``length`` axes (0-d when neither is swept)."""
        swept = tuple(name for name in self.axis_names if name in _CELL_WIDTH_KEYS)
        first = self._first_model().as_dict()
        widths = [
            RunModel.from_mapping({**first, **dict(zip(swept, values, strict=True))}).dx
            for values in itertools.product(*(self.sweep.axis(name).values for name in swept))
        ]
        return xr.DataArray(np.reshape(widths, tuple(self.sizes[name] for name in swept)), dims=swept)

    def coordinates(self) -> dict[str, xr.DataArray]:
        """Every coordinate of the store, with its attributes, for the whole grid."""
        sweep = self.sweep
        values: dict[str, xr.DataArray] = {
            name: xr.DataArray(self.axis_values(name), dims=(sweep.dim_of(name),))
            for name in (*self.axis_names, *sweep.zipped_names)
        }
        dx = self._cell_width()
        coefficient, step = values["coefficient"], values[sweep.step_axis]
        if sweep.step_axis == "cfl":
            values["step_size"] = step_size_from_cfl(coefficient, step, dx)
        else:
            values["cfl"] = cfl_number(coefficient, step, dx)
        values["time"] = values["steps"] * values["step_size"]
        centres = self._first_model().grid.centres
        values.update({name: xr.DataArray(centres, dims=(name,)) for name in self.spatial_dims})
        return {
            c.name: values[c.name].transpose(*c.dims).assign_attrs(c.attrs) for c in self.coordinates_layout
        }

    def block_shape(self, variable: VariableLayout, block: Block) -> tuple[int, ...]:
        """Shape of ``variable`` within ``block``."""
        return tuple(len(range(size)[s]) for s, size in zip(block.region(variable.dims), variable.shape, strict=True))

    def block_dataset(self, block: Block, arrays: Mapping[str, np.ndarray]) -> xr.Dataset:
        """The Dataset of one computed block: every variable of the layout from ``arrays``.

        ``arrays`` maps each variable name to its values with the block's runs flattened
        (in axis order) into the first dimension, as :func:`pipeline.diagnostics.measure_trajectory`
        returns them.
        """
        data_vars = {
            v.name: (v.dims, np.asarray(arrays[v.name], dtype=v.dtype).reshape(self.block_shape(v, block)), v.attrs)
            for v in self.variables
        }
        coords = {
            name: (self.sweep.dim_of(name), values) for name, values in self.axis_coordinates(block).items()
        }
        return xr.Dataset(data_vars, coords=coords)
