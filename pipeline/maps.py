"""Stability maps, boundaries and recommendations: aggregation of a results Dataset.

Every function here is a pure function of an :class:`xarray.Dataset` laid out like a
results store (``docs/architecture.md`` describes the store): dimensions are the sweep axes — swept
model keys, ``coefficient``, ``step_size`` or ``cfl`` (the *step axis*), ``steps`` —
and ``status`` holds the stability class of every run at every step count (``-1``, or
NaN once decoded through a ``_FillValue``, where the run has not been computed yet).
The functions stay lazy where the store is dask-backed; only :func:`recommend` and
:func:`maps_dataset` compute, and what they compute is small (one value per
coefficient, or per coefficient and step size).

Definitions (the README's "Stability maps" section shows them on figures):

* a *setting* (one point of every axis except ``steps``) is **stable** when it has been
  computed and its status is ``equilibrium`` or ``transient`` at every step count;
* the **stability boundary** of a coefficient is the smallest step size unstable at
  some step count (``first_unstable_*``) and the largest stable step size below it
  (``max_stable_*``); the von Neumann bound is ``Δt* = r*·Δx²/D`` with
  ``r* = 1/(2d)`` for FTCS and none for the implicit schemes;
* the **equilibration boundary** of a stable setting is the fewest steps at which it
  is at ``equilibrium``; the prediction comes from the slowest Laplacian mode
  (:func:`pipeline.numerics.equilibrium_steps`);
* the **cheapest** setting of a coefficient is the stable one reaching equilibrium in
  the fewest steps (ties: the larger step size).

Examples
--------
>>> import xarray as xr
>>> from pipeline import maps
>>> status = xr.DataArray([[0, 1], [3, -1]], dims=("coefficient", "step_size"),
...                       coords={"coefficient": [0.1, 1.0], "step_size": [1e-3, 1e-2]})
>>> maps.status_names(status).values.tolist()
[['equilibrium', 'transient'], ['divergent', 'not computed']]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import xarray as xr

from pipeline.diagnostics import NOT_COMPUTED, STATUS_NAMES
from pipeline.errors import ArgumentNaming, MapError, StoreError
from pipeline.layout import cfl_number, step_size_from_cfl
from pipeline.numerics import equilibrium_steps, initial_condition
from pipeline.sweep import CASE, MODEL_KEYS, STEP_AXES, RunModel
from pipeline.zarr_warnings import expected_zarr_warnings_silenced

__all__ = [
    "MODEL_KEYS",
    "NOT_COMPUTED_NAME",
    "STATUS_NAMES",
    "AxisError",
    "MapAxes",
    "as_results",
    "cheapest_setting",
    "computed_runs",
    "equilibration_boundary",
    "maps_dataset",
    "open_results",
    "own_dim",
    "per_model",
    "plot_status",
    "predicted_steps",
    "python_value",
    "recommend",
    "resolve_axes",
    "run_model",
    "save_maps",
    "setting_status",
    "stability_boundary",
    "stability_map",
    "status_names",
    "step_axis",
    "sweep_axes",
    "theory_max_cfl",
    "theory_max_step_size",
]

#: the name of a missing result (status -1) wherever status is shown by name
NOT_COMPUTED_NAME = "not computed"
#: model keys a store written before ``seed`` was recorded may lack, with their value then
_DEFAULTS = {"seed": 0, "particles": 10_000, "confinement": 0.0}
_NAMES = np.array([NOT_COMPUTED_NAME, *STATUS_NAMES], dtype=object)
#: the attribute that marks a zarr store as a maps dataset (and its format)
MAPS_FORMAT_ATTR = "diffsweep_maps_format"
MAPS_FORMAT = 1
#: attributes carried from the results store into the maps dataset
PROVENANCE_ATTRS = (
    "sweep_name",
    "sweep_description",
    "sweep_hash",
    "sweep_definition",
    *MODEL_KEYS,
    "tolerance",
    "divergence",
    "diffsweep_version",
    "versions",
    "created",
    "host",
)


class AxisError(ArgumentNaming, MapError):
    """A map axis that the results do not have, or one asked for twice.

    The message names the arguments in backticks (```x```, ```y```, ```facet```); a
    caller that exposes them under other names shows :meth:`naming` (the command line:
    ``--x``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, arguments=tuple(a for a in ("x", "y", "facet") if f"`{a}`" in message))


# -- opening and reading a results store ---------------------------------------------------


def open_results(store: str, storage_options: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Open a diffsweep results store lazily, with ``status`` as int8 (``-1`` not computed).

    Parameters
    ----------
    store
        Local path or fsspec URL of the zarr store ``diffsweep run`` wrote.
    storage_options
        Passed to fsspec for remote stores.

    Returns
    -------
    xarray.Dataset
        The store as :func:`xarray.open_zarr` opens it, normalised by :func:`as_results`.

    Raises
    ------
    StoreError
        Nothing is at ``store``, or it is not a diffsweep results store.
    """
    options = dict(storage_options) if storage_options else None
    try:
        with expected_zarr_warnings_silenced():  # a store without consolidated metadata still opens
            dataset = xr.open_zarr(store, storage_options=options)
    except (FileNotFoundError, KeyError) as error:
        raise StoreError(f"no results store at {store!r} ({type(error).__name__})") from None
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StoreError(f"{store!r} cannot be opened as a zarr store: {reason}") from None
    if "sweep_hash" not in dataset.attrs or "status" not in dataset.data_vars:
        raise StoreError(f"{store!r} is not a diffsweep results store (no sweep_hash attribute or status)")
    return as_results(dataset)


def as_results(ds: xr.Dataset) -> xr.Dataset:
    """Check that ``ds`` is laid out like results; ``status`` int8 (-1 missing), step axes sorted.

    Accepts a Dataset from :func:`open_results` (returned as it is) or from plain
    :func:`xarray.open_zarr`, whose ``status`` may be float with NaN where a
    ``_FillValue`` masked the runs not computed.

    Results whose coefficient and step axis are zipped along ``case`` pass (their
    status can be named and counted); what needs a step axis refuses them
    (:func:`step_axis`).

    Raises
    ------
    MapError
        ``ds`` has no ``status`` variable.
    """
    if "status" not in ds.data_vars:
        raise MapError("the dataset has no 'status' variable: it is not diffsweep results")
    status = ds["status"]
    if status.dtype.kind == "f":  # a CF _FillValue decoded as NaN
        status = status.fillna(NOT_COMPUTED).astype(np.int8).assign_attrs(ds["status"].attrs)
        ds = ds.assign(status=status)
    for name in (*STEP_AXES, "steps"):
        if name in ds["status"].dims and not ds.indexes[name].is_monotonic_increasing:
            ds = ds.sortby(name)
    return ds


def sweep_axes(ds: xr.Dataset) -> tuple[str, ...]:
    """The sweep axes of a results Dataset, in order (the dimensions of ``status``)."""
    return tuple(str(d) for d in ds["status"].dims)


def step_axis(ds: xr.Dataset) -> str:
    """``"step_size"`` or ``"cfl"``: whichever the sweep was given in.

    Raises
    ------
    MapError
        The results have no step axis: none at all, or one zipped with ``coefficient``
        along ``case`` (``zip:``), which a stability map cannot use as an axis.
    """
    for name in STEP_AXES:
        if name in ds["status"].dims:
            return name
    if CASE in ds["status"].dims:
        zipped = str(ds[CASE].attrs.get("zipped_axes", "coefficient and the step")).replace(" ", " and ")
        raise MapError(
            f"these results vary {zipped} together along {CASE!r} (a zip: sweep); stability maps "
            "and recommendations need them as two separate axes, so sweep them as a product, "
            "or read the cases with xarray (README: zipped axes)"
        )
    raise MapError(f"the results have neither a step_size nor a cfl axis (axes: {', '.join(sweep_axes(ds))})")


def python_value(value: Any) -> Any:
    """A plain Python value for a numpy scalar, a 0-d array or a numpy string (JSON-ready);
    anything else is returned as it is.

    Examples
    --------
    >>> python_value(np.float64(0.5)), python_value(np.array("ftcs")), python_value([1, 2])
    (0.5, 'ftcs', [1, 2])
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        return str(value)
    return value


def run_model(ds: xr.Dataset) -> RunModel:
    """The model of the runs in ``ds``, read from its coordinates and attributes.

    A swept model key must be selected down to one value first (``ds.sel(scheme="ftcs")``);
    a fixed one is an attribute of the results.

    Raises
    ------
    MapError
        A model key is still an axis of ``ds``, or is neither a coordinate nor an attribute.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset(coords={"cells": [32, 64]},
    ...                 attrs={"scheme": "ftcs", "dims": 2, "length": 1.0, "boundary": "neumann",
    ...                        "initial": "step", "seed": 0})
    >>> model = run_model(ds.sel(cells=64))
    >>> model.cells, model.dx, model.stability_limit
    (64, 0.015625, 0.25)
    """
    still_swept = [key for key in MODEL_KEYS if key in ds.dims]
    if still_swept:
        raise MapError(f"select one value of {', '.join(still_swept)} first: each is an axis of the results")
    values: dict[str, Any] = {}
    for key in MODEL_KEYS:
        if key in ds.coords:
            values[key] = python_value(ds[key].values)
        elif key in ds.attrs:
            values[key] = python_value(ds.attrs[key])
        elif key in _DEFAULTS:
            values[key] = _DEFAULTS[key]
        else:
            raise MapError(f"model key {key!r} is neither a coordinate nor an attribute of the results")
    return RunModel.from_mapping(values)


def per_model(
    ds: xr.Dataset,
    values: xr.DataArray,
    func: Callable[[RunModel, np.ndarray], np.ndarray],
    keys: tuple[str, ...] = MODEL_KEYS,
) -> xr.DataArray:
    """``func(model, part of values)`` for every combination of the swept model ``keys``.

    Parameters
    ----------
    ds
        Results Dataset: its ``status`` dims say which model keys are swept.
    values
        Broadcast against the swept ``keys`` first; the result has its shape (and its
        dimension coordinates, none of its attributes).
    func
        Called once per model with that model's part of ``values`` (a numpy array with
        the dims of ``values`` other than the swept keys); returns an array of that shape.
    keys
        The model keys ``func`` depends on: the result runs along those of them that are
        swept. A swept model key left out is taken at its first value.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"status": ("cells", np.zeros(2, np.int8))}, coords={"cells": [8, 16]},
    ...                 attrs={"scheme": "ftcs", "dims": 1, "length": 1.0, "boundary": "neumann",
    ...                        "initial": "step"})
    >>> per_model(ds, xr.DataArray(0.0), lambda model, v: np.full(np.shape(v), model.dx)).values
    array([0.125 , 0.0625])
    """
    dims = ds["status"].dims
    swept = [key for key in keys if key in dims]
    unused = {key: 0 for key in MODEL_KEYS if key in dims and key not in keys}
    frame = xr.Dataset(coords={key: ds[key] for key in MODEL_KEYS if key in dims}, attrs=ds.attrs).isel(unused)
    base = _strip(values).astype(float)
    for key in swept:
        base = base.broadcast_like(ds[key])
    base = base.transpose(*swept, ...).compute()
    out = np.full(base.shape, np.nan)
    for index in np.ndindex(*(base.sizes[key] for key in swept)):
        model = run_model(frame.isel(dict(zip(swept, index, strict=True))))
        out[index] = func(model, base.values[index])
    result = base.copy(data=out)
    result.attrs = {}  # not the input's: a bound on the step size is not a coefficient
    return result


def status_names(status: xr.Dataset | xr.DataArray) -> xr.DataArray:
    """The stability class of every result by name (``"not computed"`` for missing ones).

    Accepts a results Dataset or its ``status`` DataArray; lazy over dask.
    """
    status = status["status"] if isinstance(status, xr.Dataset) else status
    if status.dtype.kind == "f":
        status = status.fillna(NOT_COMPUTED)

    def lookup(codes: np.ndarray) -> np.ndarray:
        return _NAMES[np.clip(codes.astype(np.int64), -1, len(STATUS_NAMES) - 1) + 1]

    names = xr.apply_ufunc(lookup, status, dask="parallelized", output_dtypes=[object])
    return names.rename("status_name").assign_attrs(long_name="stability class by name")


def computed_runs(ds: xr.Dataset) -> tuple[int, int]:
    """(runs computed, runs in the sweep); a run is one setting with all its step counts."""
    ds = as_results(ds)
    computed = (ds["status"] >= 0).any("steps")
    return int(computed.sum().compute()), int(computed.size)


#: derived coordinates and the dimension each stands for on a map (``None``: the step axis)
_OWN_DIMS: dict[str, str | None] = {"cfl": None, "step_size": None, "time": "steps"}


def own_dim(name: str, dims: Sequence[str]) -> str:
    """The dimension a coordinate runs along on a map: itself for a sweep axis, the step
    axis for a derived ``cfl``/``step_size``, ``steps`` for ``time``.

    Examples
    --------
    >>> own_dim("cfl", ("coefficient", "step_size", "steps")), own_dim("time", ("cfl", "steps"))
    ('step_size', 'steps')
    """
    if name in dims:
        return name
    own = _OWN_DIMS.get(name, "")
    if own is None:
        own = next((d for d in STEP_AXES if d in dims), "")
    if own not in dims:
        raise MapError(f"{name!r} runs along none of the dimensions {', '.join(dims)}")
    return own


@dataclass(frozen=True)
class MapAxes:
    """What a set of maps shows: built by :func:`resolve_axes`.

    Attributes
    ----------
    x, y
        Coordinates on the horizontal and vertical axis: sweep axes or coordinates
        derived over them (``cfl``, ``step_size``, ``time``).
    x_dim, y_dim
        The dimensions they run along (:func:`own_dim`).
    facet
        One map per value of this sweep axis, side by side in the overview; ``None``
        for none.
    panels
        The other sweep axes not on the map: one map per combination of their values.
    collapsed_steps
        ``steps`` is neither on the map nor a facet (``facet="none"``): each setting is
        shown by its class over all step counts (:func:`setting_status`).
    """

    x: str
    y: str
    x_dim: str
    y_dim: str
    facet: str | None
    panels: tuple[str, ...]
    collapsed_steps: bool


def resolve_axes(
    ds: xr.Dataset, x: str | None = None, y: str | None = None, facet: str | None = None
) -> MapAxes:
    """Fill in default map axes and check them against the results.

    ``x`` and ``y`` may be any coordinate of the results along the sweep axes: an axis,
    or a derived coordinate (``cfl`` on a step-size sweep, ``step_size`` on a CFL
    sweep, ``time``), drawn on its own 2-D grid. Defaults: ``x`` the step axis, ``y``
    ``coefficient`` (the step axis when ``x`` is ``coefficient``), ``facet`` ``steps``
    (or the first axis left over when ``steps`` is on the map). ``facet="none"``
    draws no facets: ``steps``, when not on the map, is then summarised per setting
    by :func:`setting_status`.

    Raises
    ------
    AxisError
        An axis the results do not have, two axes along one dimension, or a facet that
        is not a sweep axis or is already on the map.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset({"status": (("coefficient", "step_size", "steps"), [[[0]]])},
    ...                 coords={"coefficient": [1.0], "step_size": [1e-3], "steps": [10]})
    >>> ds = ds.assign_coords(cfl=ds.coefficient * ds.step_size / 0.01)
    >>> axes = resolve_axes(ds, x="cfl", facet="none")
    >>> axes.x, axes.x_dim, axes.y, axes.facet, axes.collapsed_steps
    ('cfl', 'step_size', 'coefficient', None, True)
    """
    dims = sweep_axes(ds)
    axis = step_axis(ds)
    plottable = [*dims, *(str(c) for c in ds.coords if c not in dims and set(ds[c].dims) <= set(dims) and ds[c].ndim)]
    for argument, name in (("x", x), ("y", y)):
        if name is not None and name not in plottable:
            raise AxisError(f"unknown axis {name!r} for `{argument}`; the axes of this sweep are {', '.join(plottable)}")
    x = x or axis
    x_dim = own_dim(x, dims)
    if y is None:
        y = axis if x_dim == "coefficient" else "coefficient"
    y_dim = own_dim(y, dims)
    if x == y:
        raise AxisError(f"`x` and `y` are both {x!r}; choose two different axes")
    if x_dim == y_dim:
        raise AxisError(f"`x` {x!r} and `y` {y!r} both run along {x_dim!r}; choose axes along two dimensions")
    rest = [d for d in dims if d not in (x_dim, y_dim)]
    if facet == "none":
        facet = None
    elif facet is None:
        facet = "steps" if "steps" in rest else (rest[0] if rest else None)
    elif facet in (x_dim, y_dim):
        raise AxisError(f"`facet` {facet!r} is already on the map (x={x!r}, y={y!r})")
    elif facet not in dims:
        raise AxisError(f"unknown axis {facet!r} for `facet`; the sweep axes are {', '.join(dims)}")
    collapsed = facet is None and "steps" in rest
    panels = tuple(d for d in rest if d != facet and not (collapsed and d == "steps"))
    return MapAxes(x, y, x_dim, y_dim, facet, panels, collapsed)


# -- maps ------------------------------------------------------------------------------------


def setting_status(ds: xr.Dataset) -> xr.DataArray:
    """The class of each setting over all its step counts (no ``steps`` dimension).

    The worst unstable class (``divergent`` over ``oscillating``) if the setting is
    unstable at some step count, else its class at the last step count (``equilibrium``
    if it got there); -1 where not computed.
    """
    ds = as_results(ds)
    status = ds["status"]
    unstable = (status >= 2).any("steps")
    last = status.isel(steps=-1, drop=True)
    summary = xr.where(unstable, status.max("steps"), last).astype(np.int8)
    summary = summary.drop_vars([c for c in summary.coords if "steps" in ds[c].dims], errors="ignore")
    return summary.rename("status").assign_attrs(
        long_name="stability class over all step counts (worst unstable class, else the class at the last one)",
        flag_values=np.arange(NOT_COMPUTED, len(STATUS_NAMES), dtype=np.int8),
        flag_meanings="not_computed " + " ".join(STATUS_NAMES),
    )


def stability_map(
    ds: xr.Dataset, x: str | None = None, y: str | None = None, facet: str | None = "steps"
) -> xr.DataArray:
    """The categorical stability map: classes ordered ``(*panels, facet, y_dim, x_dim)``.

    Parameters
    ----------
    ds
        Results Dataset.
    x, y, facet
        As for :func:`resolve_axes` (``facet=None`` is ``"none"`` here); ``"step_size"``
        also means the ``cfl`` axis of a sweep given in CFL numbers when no derived
        ``step_size`` coordinate exists.

    Returns
    -------
    xarray.DataArray
        int8 classes 0..3 (``STATUS_NAMES``), -1 where not computed, with the derived
        coordinates; attributes ``map_x``, ``map_y``, ``map_facet`` name the axes.
        Without a facet and with ``steps`` off the map, the classes are those of
        :func:`setting_status`.
    """
    ds = as_results(ds)
    axes = resolve_axes(ds, x, y, facet if facet is not None else "none")
    status = setting_status(ds) if axes.collapsed_steps else ds["status"]
    order = [*axes.panels, *([axes.facet] if axes.facet else []), axes.y_dim, axes.x_dim]
    return status.transpose(*order).assign_attrs(map_x=axes.x, map_y=axes.y, map_facet=axes.facet or "")


def plot_status(status: xr.DataArray, x: str | None = None, y: str | None = None, **kwargs: Any) -> Any:
    """Draw a 2-D selection of ``status`` as a categorical map; see :func:`pipeline.plotting.plot_status`.

    Works on plain :func:`xarray.open_zarr` data, e.g.
    ``plot_status(ds.status.sel(steps=1000))``.
    """
    from pipeline import plotting

    return plotting.plot_status(status, x=x, y=y, **kwargs)


def _stable_setting(ds: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """(computed, unstable at some step count, stable at every step count) per setting."""
    status = ds["status"]
    computed = (status >= 0).any("steps")
    unstable = (status >= 2).any("steps")
    return computed, unstable, computed & ~unstable


def _strip(array: xr.DataArray) -> xr.DataArray:
    """Drop coordinates that are not indexes (derived ``cfl``/``time`` ride along otherwise)."""
    return array.reset_coords(drop=True) if array.coords else array


def _masked_extreme(values: xr.DataArray, mask: xr.DataArray, dim: str, largest: bool) -> xr.DataArray:
    """Max (or min) of ``values`` over ``dim`` where ``mask``; NaN where nothing is masked in."""
    fill = -np.inf if largest else np.inf
    chosen = values.where(mask, fill)
    extreme = chosen.max(dim) if largest else chosen.min(dim)
    return _strip(extreme.where(np.isfinite(extreme)))


def stability_boundary(ds: xr.Dataset) -> xr.Dataset:
    """Largest stable and smallest unstable step size per coefficient, with the theory.

    Parameters
    ----------
    ds
        Results Dataset.

    Returns
    -------
    xarray.Dataset
        Dimensions: every sweep axis but the step axis and ``steps``. Variables:
        ``max_stable_step_size`` / ``max_stable_cfl`` (largest step size stable at every
        step count below the first unstable one; NaN if none), ``first_unstable_step_size``
        / ``first_unstable_cfl`` (smallest step size unstable at some step count; NaN if
        none), ``theory_max_step_size`` / ``theory_max_cfl`` (von Neumann bound; NaN for
        implicit schemes), ``stable_above_boundary`` (stable step sizes above the first
        unstable one — nonzero flags a ragged boundary), ``stable_fraction`` (share of the
        computed results that are equilibrium or transient) and ``computed_fraction``
        (share of the settings computed).
    """
    ds = as_results(ds)
    axis = step_axis(ds)
    computed, unstable, stable = _stable_setting(ds)
    position = ds[axis]
    first_unstable = position.where(unstable, np.inf).min(axis)
    below = position < first_unstable
    boundary = stable & below
    at_first = unstable & (position == first_unstable)
    status = ds["status"]
    n_computed = (status >= 0).sum([axis, "steps"])
    n_stable = ((status == 0) | (status == 1)).sum([axis, "steps"])
    result = xr.Dataset(
        {
            "max_stable_step_size": _masked_extreme(ds["step_size"], boundary, axis, largest=True),
            "max_stable_cfl": _masked_extreme(ds["cfl"], boundary, axis, largest=True),
            "first_unstable_step_size": _masked_extreme(ds["step_size"], at_first, axis, largest=False),
            "first_unstable_cfl": _masked_extreme(ds["cfl"], at_first, axis, largest=False),
            "stable_above_boundary": _strip((stable & ~below).sum(axis)),
            "stable_fraction": _strip(n_stable / n_computed.where(n_computed > 0)),
            "computed_fraction": _strip(computed.mean(axis)),
        }
    )
    limit = theory_max_cfl(ds)
    step = theory_max_step_size(ds)
    result["theory_max_cfl"] = _broadcast_to(limit, result)
    result["theory_max_step_size"] = _broadcast_to(step, result)
    attrs = {
        "max_stable_step_size": "largest step size stable (equilibrium/transient) at every step count, below the first unstable one",
        "max_stable_cfl": "CFL number r = D dt / dx^2 of max_stable_step_size",
        "first_unstable_step_size": "smallest step size oscillating or divergent at some step count",
        "first_unstable_cfl": "CFL number of first_unstable_step_size",
        "stable_above_boundary": "stable step sizes above the first unstable one (0 for a clean boundary)",
        "stable_fraction": "share of computed results (step sizes x step counts) that are equilibrium or transient",
        "computed_fraction": "share of the step sizes computed",
        "theory_max_cfl": "von Neumann bound on r (FTCS 1/(2 dims); NaN: unconditionally stable)",
        "theory_max_step_size": "von Neumann bound on the step size, r* dx^2 / D (NaN: unconditionally stable)",
    }
    return _with_long_names(result, attrs)


def _with_long_names(result: xr.Dataset, texts: Mapping[str, str]) -> xr.Dataset:
    for name, text in texts.items():
        result[name].attrs["long_name"] = text
    return result


def _broadcast_to(value: xr.DataArray | float, like: xr.Dataset) -> xr.DataArray:
    template = xr.zeros_like(_strip(like["stable_fraction"]), dtype=float)
    if isinstance(value, xr.DataArray):
        return _strip(value.broadcast_like(template).transpose(*template.dims))
    return template + value


# -- theory ---------------------------------------------------------------------------------


def theory_max_cfl(ds: xr.Dataset) -> xr.DataArray:
    """The von Neumann bound on ``r = D dt / dx²`` (NaN for unconditionally stable schemes).

    A 0-d DataArray, or one over the swept ``scheme``/``dims``.  The random walk's is its
    validity bound ``1/(2 dims)``; confined Langevin's is ``k dt = 2``, ``r = 2 D / (k dx²)``,
    which depends on the coefficient (the result is then over ``coefficient`` too).
    """

    def limit(model: RunModel, values: np.ndarray) -> np.ndarray:
        bound = model.stability_limit
        if model.step_size_limit is not None:  # langevin: k dt = 2, i.e. r = 2 D / (k dx²)
            return cfl_number(values, model.step_size_limit, model.dx)
        return np.full(np.shape(values), np.nan if bound is None else bound)

    if ("confinement" in ds.attrs and float(ds.attrs["confinement"]) > 0) or "confinement" in ds["status"].dims:
        keys = ("scheme", "dims", "cells", "length", "confinement")
        return per_model(ds, ds["coefficient"], limit, keys=keys)
    return per_model(ds, xr.DataArray(0.0), limit, keys=("scheme", "dims"))


def theory_max_step_size(ds: xr.Dataset) -> xr.DataArray:
    """The von Neumann bound on the step size, ``Δt* = r*·Δx²/D`` per coefficient
    (confined Langevin: ``2 / k``, whatever the coefficient)."""

    def limit(model: RunModel, coefficient: np.ndarray) -> np.ndarray:
        bound = model.stability_limit
        if model.step_size_limit is not None:  # langevin: k dt = 2 whatever D
            return np.full(np.shape(coefficient), model.step_size_limit)
        if bound is None:
            return np.full(np.shape(coefficient), np.nan)
        return step_size_from_cfl(coefficient, bound, model.dx)

    return per_model(ds, ds["coefficient"], limit, keys=("scheme", "dims", "cells", "length", "confinement"))


@lru_cache(maxsize=64)
def _initial(model: RunModel) -> np.ndarray:
    initial = initial_condition(model.initial, model.grid, seed=model.seed)
    initial.flags.writeable = False  # cached: shared by every caller
    return initial


def predicted_steps(model: RunModel, cfl: np.ndarray | float, tolerance: float) -> np.ndarray:
    """Steps to equilibrium that the slowest Laplacian mode predicts, for each CFL number.

    Parameters
    ----------
    model
        The run model (scheme, grid, boundary, initial condition).
    cfl
        ``r = D dt / dx²``, any shape.
    tolerance
        The equilibrium tolerance of the sweep's criteria.

    Returns
    -------
    numpy.ndarray
        float64 counts shaped like ``cfl``; NaN where the run never equilibrates
        (FTCS beyond its bound).

    Examples
    --------
    >>> model = RunModel(scheme="ftcs", dims=1, cells=32, length=1.0,
    ...                  boundary="neumann", initial="step", seed=0)
    >>> predicted_steps(model, [0.25, 0.5, 0.6], 1e-3).tolist()
    [2678.0, 1338.0, nan]

    The random walk's mean is FTCS, so it gets FTCS's prediction (the noise floor of a
    finite number of particles may be above the tolerance); Langevin has none (NaN).
    """
    if model.scheme == "langevin":
        return np.full(np.shape(cfl), np.nan)
    scheme = "ftcs" if model.scheme == "random-walk" else model.scheme
    return np.asarray(
        equilibrium_steps(scheme, model.boundary, model.grid, _initial(model), np.asarray(cfl, float), tolerance),
        dtype=float,
    )


def _tolerance(ds: xr.Dataset) -> float:
    return float(ds.attrs.get("tolerance", 1e-3))


def equilibration_boundary(ds: xr.Dataset) -> xr.Dataset:
    """Fewest steps reaching equilibrium per setting, next to the slowest-mode prediction.

    Returns
    -------
    xarray.Dataset
        Dimensions: every sweep axis but ``steps``. Variables:
        ``steps_to_equilibrium`` (the stored exact first step at equilibrium when the
        store has it, else the fewest step counts of the sweep at which the setting is at
        ``equilibrium``; NaN if never, or if the setting is not stable),
        ``predicted_steps_to_equilibrium`` (slowest-mode prediction, NaN where the scheme
        is unstable) and ``predicted_steps_on_grid`` (the smallest step count of the sweep
        at or above the prediction; NaN beyond the grid), ``stable`` (1 where the setting
        is stable at every step count, 0 where not, -1 where not computed).
    """
    ds = as_results(ds)
    computed, _, stable = _stable_setting(ds)
    steps = ds["steps"]
    reached = (ds["status"] == 0) & stable
    observed = _masked_extreme(steps.astype(float), reached, "steps", largest=False)
    if "steps_to_equilibrium" in ds.data_vars:  # exact first passages: the step, not the checkpoint
        exact = ds["steps_to_equilibrium"].astype(float)
        exact.attrs = {}
        observed = _strip(exact.where(reached.any("steps") & (exact >= 0) & (exact <= steps.max())))
    tolerance = _tolerance(ds)
    predicted = per_model(ds, ds["cfl"], lambda model, r: predicted_steps(model, r, tolerance))
    grid_values = np.sort(steps.values.astype(float))

    def on_grid(values: np.ndarray) -> np.ndarray:
        index = np.searchsorted(grid_values, values, side="left")
        inside = np.isfinite(values) & (index < grid_values.size)
        return np.where(inside, grid_values[np.minimum(index, grid_values.size - 1)], np.nan)

    predicted_on_grid = xr.apply_ufunc(on_grid, predicted)
    observed, predicted, predicted_on_grid = (
        _strip(a).transpose(*[d for d in sweep_axes(ds) if d != "steps" and d in a.dims])
        for a in xr.broadcast(observed, predicted, predicted_on_grid)
    )
    state = xr.where(computed, stable.astype(np.int8), np.int8(NOT_COMPUTED)).astype(np.int8)
    result = xr.Dataset(
        {
            "steps_to_equilibrium": observed,
            "predicted_steps_to_equilibrium": predicted,
            "predicted_steps_on_grid": predicted_on_grid,
            "stable": _strip(state),
        }
    )
    result["steps_to_equilibrium"].attrs["long_name"] = (
        "first step at equilibrium (exact where stored, else the fewest step counts of the sweep; stable settings only)"
    )
    result["predicted_steps_to_equilibrium"].attrs["long_name"] = (
        "steps to equilibrium predicted from the slowest Laplacian mode"
    )
    result["predicted_steps_on_grid"].attrs["long_name"] = (
        "smallest step count of the sweep at or above the prediction"
    )
    result["stable"].attrs.update(
        long_name="stable (equilibrium or transient) at every step count",
        flag_values=np.array([NOT_COMPUTED, 0, 1], dtype=np.int8),
        flag_meanings="not_computed unstable stable",
    )
    return result


def cheapest_setting(ds: xr.Dataset, equilibration: xr.Dataset | None = None) -> xr.Dataset:
    """The stable setting reaching equilibrium in the fewest steps, per coefficient.

    Ties (several step sizes first at equilibrium at the same step count) go to the
    larger step size.

    Parameters
    ----------
    ds
        Results Dataset.
    equilibration
        :func:`equilibration_boundary` of ``ds``, if already computed.

    Returns
    -------
    xarray.Dataset
        Dimensions: every sweep axis but the step axis and ``steps``. Variables
        ``cheapest_step_size``, ``cheapest_cfl``, ``min_steps_to_equilibrium`` and
        ``cheapest_predicted_steps`` (the slowest-mode prediction at that setting); NaN
        where no stable setting reaches equilibrium.
    """
    ds = as_results(ds)
    axis = step_axis(ds)
    if equilibration is None:
        equilibration = equilibration_boundary(ds)
    observed = equilibration["steps_to_equilibrium"]
    fewest = _masked_extreme(observed, observed.notnull(), axis, largest=False)
    step_size = _strip(ds["step_size"]).broadcast_like(observed)
    at_fewest = observed == fewest  # NaN never compares equal
    size = _masked_extreme(step_size, at_fewest, axis, largest=True)
    chosen = at_fewest & (step_size == size)
    cfl = _strip(ds["cfl"]).broadcast_like(observed)
    predicted = equilibration["predicted_steps_to_equilibrium"]
    result = xr.Dataset(
        {
            "cheapest_step_size": size,
            "cheapest_cfl": _masked_extreme(cfl, chosen, axis, largest=True),
            "min_steps_to_equilibrium": fewest,
            "cheapest_predicted_steps": _masked_extreme(predicted, chosen & predicted.notnull(), axis, largest=True),
        }
    )
    texts = {
        "cheapest_step_size": "cheapest stable step size reaching equilibrium (ties: larger step size)",
        "cheapest_cfl": "CFL number of cheapest_step_size",
        "min_steps_to_equilibrium": "fewest steps at which a stable setting reaches equilibrium (the cheapest setting's steps)",
        "cheapest_predicted_steps": "steps to equilibrium the slowest mode predicts at the cheapest setting",
    }
    return _with_long_names(result, texts)


# -- recommendations ----------------------------------------------------------------------------


def _number(value: Any) -> float | int | None:
    """A JSON-friendly number: None for NaN/inf, int for integral step counts."""
    value = python_value(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    value = float(value)
    return None if not np.isfinite(value) else value


def _count(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


#: recommendation fields read from :func:`stability_boundary`, in record order
_BOUNDARY_FIELDS = (
    "max_stable_step_size",
    "first_unstable_step_size",
    "theory_max_step_size",
    "max_stable_cfl",
    "theory_max_cfl",
)


def recommend(ds: xr.Dataset, refinement: xr.Dataset | None = None) -> list[dict[str, Any]]:
    """Per coefficient (and per value of the other non-map axes): the settings to use.

    Parameters
    ----------
    ds
        Results Dataset.
    refinement
        The store's ``refine`` group (:func:`pipeline.edges.open_refinement`), whose edges
        and cheapest settings replace the ones read off the sweep's grid where present.

    Returns
    -------
    list of dict
        One dict per coefficient and combination of the other axes (each named by its
        axis), with ``coefficient``, ``max_stable_step_size``, ``first_unstable_step_size``,
        ``theory_max_step_size`` (the textbook bound; None for implicit schemes),
        ``max_stable_cfl``, ``theory_max_cfl``, ``bound_step_size`` and ``bound_cfl``
        (the exact bound 2/λ_max of the discrete operator; None for implicit schemes),
        ``divergence_edge`` and ``oscillation_edge`` at the largest step count (see
        :func:`pipeline.edges.edge_record`: value, ``bracket``, ``censored``,
        ``refined``), ``min_steps_to_equilibrium`` (None if no stable setting reaches
        equilibrium), ``predicted_steps_to_equilibrium`` (at the cheapest step size),
        ``cheapest`` (``{"step_size", "cfl", "steps", "refined"}``, with ``bracket`` and
        ``censored`` when refined, or None: see :func:`cheapest_setting`),
        ``stable_fraction`` and ``computed_fraction``. Missing values are None.
    """
    from pipeline import edges

    ds = as_results(ds)
    axis = step_axis(ds)
    boundary = stability_boundary(ds)
    cheapest = cheapest_setting(ds)
    table = xr.merge([boundary, cheapest]).compute()
    columns = edges.edges(ds, refinement).isel(steps=-1).compute()
    refined_cheapest = refinement if refinement is not None and "cheapest_value" in refinement else None
    group_dims = [d for d in sweep_axes(ds) if d not in (axis, "steps")]
    records = []
    for index in np.ndindex(*(table.sizes[d] for d in group_dims)):
        selection = dict(zip(group_dims, index, strict=True))
        row = table.isel(selection)
        column = columns.isel(selection)
        record: dict[str, Any] = {d: python_value(row[d].values) for d in group_dims if d != "coefficient"}
        record["coefficient"] = python_value(row["coefficient"].values)
        record.update({name: _number(row[name].values) for name in _BOUNDARY_FIELDS})
        record["bound_step_size"] = _number(column["bound_step_size"].values)
        record["bound_cfl"] = _number(column["bound_cfl"].values)
        record["divergence_edge"] = edges.edge_record(column, "divergence")
        record["oscillation_edge"] = edges.edge_record(column, "oscillation")
        steps = _count(row["min_steps_to_equilibrium"].values)
        record["min_steps_to_equilibrium"] = steps
        record["predicted_steps_to_equilibrium"] = _count(row["cheapest_predicted_steps"].values)
        record["cheapest"] = None if steps is None else {
            "step_size": _number(row["cheapest_step_size"].values),
            "cfl": _number(row["cheapest_cfl"].values),
            "steps": steps,
            "refined": False,
        }
        if refined_cheapest is not None:
            refined = edges.cheapest_record(ds, refined_cheapest.isel(selection), axis)
            if refined is not None:
                record["cheapest"] = refined
                record["min_steps_to_equilibrium"] = refined["steps"]
                # the prediction at the refined setting, not at the grid's cheapest one
                model = run_model(xr.Dataset(coords={k: column[k] for k in MODEL_KEYS if k in column.coords}, attrs=ds.attrs))
                predicted = predicted_steps(model, refined["cfl"], _tolerance(ds))
                record["predicted_steps_to_equilibrium"] = _count(predicted)
        record["stable_fraction"] = _number(row["stable_fraction"].values)
        record["computed_fraction"] = _number(row["computed_fraction"].values)
        records.append(record)
    return records


# -- the saved maps dataset -----------------------------------------------------------------------


def maps_dataset(ds: xr.Dataset) -> xr.Dataset:
    """Everything the maps show, as one small in-memory Dataset (saved as ``maps.zarr``).

    Holds ``status`` (the categorical maps, int8, -1 not computed), the
    :func:`stability_boundary`, :func:`equilibration_boundary` and
    :func:`cheapest_setting` variables, with the derived ``cfl``/``step_size``
    coordinates and the store's provenance attributes. Every variable has ``units``:
    step sizes the store's time unit, everything else ``"1"``.
    """
    ds = as_results(ds)
    axis = step_axis(ds)
    boundary = stability_boundary(ds).compute()
    equilibration = equilibration_boundary(ds).compute()
    cheapest = cheapest_setting(ds, equilibration).compute()
    axes = sweep_axes(ds)
    status = ds["status"].compute()
    status = status.reset_coords(drop=True).assign_attrs(
        {
            "long_name": "stability class",
            "flag_values": np.arange(NOT_COMPUTED, len(STATUS_NAMES), dtype=np.int8),
            "flag_meanings": "not_computed " + " ".join(STATUS_NAMES),
        }
    )
    result = xr.Dataset(
        {"status": status, **boundary.data_vars, **equilibration.data_vars, **cheapest.data_vars},
        coords={a: ds[a].values for a in axes},
    )
    derived = "cfl" if axis == "step_size" else "step_size"
    result = result.assign_coords({derived: _strip(ds[derived]).compute()})
    for name in axes:
        result[name].attrs.update(ds[name].attrs)
    step_units = ds["step_size"].attrs.get("units", "1")
    for variable in result.data_vars.values():  # step sizes in the store's time unit; counts, CFL numbers, shares: 1
        variable.attrs["units"] = step_units if str(variable.name).endswith("step_size") else "1"
    result.attrs = {k: python_value(ds.attrs[k]) for k in PROVENANCE_ATTRS if k in ds.attrs}
    result.attrs["title"] = f"diffsweep stability maps: {ds.attrs.get('sweep_name', '')}".strip()
    result.attrs["step_axis"] = axis
    result.attrs[MAPS_FORMAT_ATTR] = MAPS_FORMAT
    computed, total = computed_runs(ds)
    result.attrs["runs_computed"] = computed
    result.attrs["runs_total"] = total
    return result


def save_maps(
    maps: xr.Dataset,
    path: str | os.PathLike[str],
    storage_options: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> None:
    """Write a :func:`maps_dataset` as a zarr store; it opens with plain ``xarray.open_zarr(path)``.

    Parameters
    ----------
    maps
        The dataset to write.
    path
        Local path or fsspec URL; nothing may be there yet, unless ``overwrite``.
    storage_options
        Passed to fsspec for remote paths.
    overwrite
        Replace a maps dataset written here before. Anything else at ``path`` (a results
        store, a folder of other files) is never replaced.

    Raises
    ------
    StoreError
        Something is at ``path`` and ``overwrite`` is off, or it is not a maps dataset.
    """
    import fsspec
    import zarr

    options = dict(storage_options) if storage_options else {}
    fs, root = fsspec.core.url_to_fs(str(path), **options)
    if fs.exists(root):
        if not fs.isdir(root):
            raise StoreError(f"{str(path)!r} is a file; the maps dataset needs a new path")
        if fs.ls(root):
            if not overwrite:
                raise StoreError(f"{str(path)!r} already exists; pass overwrite=True to replace a maps dataset written there")
            try:
                attrs = dict(zarr.open_group(str(path), mode="r", storage_options=options or None).attrs)
            except Exception:
                attrs = {}
            if MAPS_FORMAT_ATTR not in attrs:
                kind = "a diffsweep results store" if "sweep_hash" in attrs else "not a diffsweep maps dataset"
                raise StoreError(f"{str(path)!r} is {kind}; it is never replaced")
    maps = maps.assign_attrs({MAPS_FORMAT_ATTR: MAPS_FORMAT})
    with expected_zarr_warnings_silenced():  # xarray writes consolidated metadata on purpose
        maps.to_zarr(path, mode="w" if overwrite else "w-", consolidated=True, storage_options=options or None)
