"""Stability maps, boundaries and recommendations: aggregation of a results Dataset.

Every function here is a pure function of an :class:`xarray.Dataset` laid out like a
results store (see ``docs/architecture.md``): dimensions are the sweep axes — swept
model keys, ``coefficient``, ``step_size`` or ``cfl`` (the *step axis*), ``steps`` —
and ``status`` holds the stability class of every run at every step count (``-1``
where the run has not been computed yet).  The functions stay lazy where the store is
dask-backed; only :func:`recommend` and :func:`maps_dataset` compute, and what they
compute is small (one value per coefficient, or per coefficient and step size).

Definitions (also in ``docs/maps.md``):

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
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from pipeline.diagnostics import NOT_COMPUTED, STATUS_NAMES
from pipeline.errors import MapError, StoreError
from pipeline.numerics import Grid, equilibrium_steps, initial_condition, stability_limit

__all__ = [
    "MODEL_KEYS",
    "NOT_COMPUTED_NAME",
    "STATUS_NAMES",
    "computed_runs",
    "equilibration_boundary",
    "maps_dataset",
    "model_value",
    "open_results",
    "predicted_equilibrium_cfl",
    "recommend",
    "resolve_axes",
    "save_maps",
    "stability_boundary",
    "stability_map",
    "status_names",
    "step_axis",
    "sweep_axes",
    "theory_max_cfl",
    "theory_max_step_size",
]

#: model keys in axis order; each is a coordinate when swept, an attribute otherwise
MODEL_KEYS = ("scheme", "dims", "cells", "length", "boundary", "initial", "seed")
#: the name of a missing result (status -1) wherever status is shown by name
NOT_COMPUTED_NAME = "not computed"
STEP_AXES = ("step_size", "cfl")
_DEFAULTS = {"seed": 0}
_NAMES = np.array([NOT_COMPUTED_NAME, *STATUS_NAMES], dtype=object)
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
        The store as :func:`xarray.open_zarr` opens it, with ``status`` normalised
        (see :func:`status_names` for the class names) and the step axis and ``steps``
        in increasing order.

    Raises
    ------
    StoreError
        Nothing is at ``store``, or it is not a diffsweep results store.
    """
    options = dict(storage_options) if storage_options else None
    try:
        with warnings.catch_warnings():
            # a store without consolidated metadata still opens; say nothing about it
            warnings.filterwarnings("ignore", message=".*consolidated metadata.*", category=RuntimeWarning)
            dataset = xr.open_zarr(store, storage_options=options)
    except (FileNotFoundError, KeyError) as error:
        raise StoreError(f"no results store at {store!r} ({type(error).__name__})") from None
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StoreError(f"{store!r} cannot be opened as a zarr store: {reason}") from None
    if "sweep_hash" not in dataset.attrs or "status" not in dataset.data_vars:
        raise StoreError(f"{store!r} is not a diffsweep results store (no sweep_hash attribute or status)")
    return _results(dataset)


def _results(ds: xr.Dataset) -> xr.Dataset:
    """Check the layout, make ``status`` int8 with -1 for missing, sort the step axes."""
    if "status" not in ds.data_vars:
        raise MapError("the dataset has no 'status' variable: it is not diffsweep results")
    status = ds["status"]
    if status.dtype.kind == "f":  # a CF _FillValue decoded as NaN
        status = status.fillna(NOT_COMPUTED).astype(np.int8).assign_attrs(ds["status"].attrs)
        ds = ds.assign(status=status)
    axis = step_axis(ds)
    for name in (axis, "steps"):
        index = ds.indexes[name]
        if not index.is_monotonic_increasing:
            ds = ds.sortby(name)
    return ds


def sweep_axes(ds: xr.Dataset) -> tuple[str, ...]:
    """The sweep axes of a results Dataset, in order (the dimensions of ``status``)."""
    return tuple(str(d) for d in ds["status"].dims)


def step_axis(ds: xr.Dataset) -> str:
    """``"step_size"`` or ``"cfl"``: whichever the sweep was given in."""
    for name in STEP_AXES:
        if name in ds["status"].dims:
            return name
    raise MapError(f"the results have neither a step_size nor a cfl axis (axes: {', '.join(sweep_axes(ds))})")


def model_value(ds: xr.Dataset, key: str) -> Any:
    """A model key's value: the coordinate when it was swept, else the attribute.

    Returns
    -------
    xarray.DataArray or scalar
        A 1-D coordinate for a swept key; a plain Python value for a fixed one.
    """
    if key in ds["status"].dims:
        return ds[key]
    if key in ds.coords and ds[key].ndim == 0:  # a swept key selected down to one value
        return _python(ds[key].values)
    if key in ds.attrs:
        return _python(ds.attrs[key])
    if key in _DEFAULTS:
        return _DEFAULTS[key]
    raise MapError(f"model key {key!r} is neither a sweep axis nor an attribute of the results")


def status_names(ds: xr.Dataset | xr.DataArray) -> xr.DataArray:
    """The stability class of every result by name (``"not computed"`` for missing ones).

    Accepts a results Dataset or its ``status`` DataArray; lazy over dask.
    """
    status = ds["status"] if isinstance(ds, xr.Dataset) else ds
    if status.dtype.kind == "f":
        status = status.fillna(NOT_COMPUTED)

    def lookup(codes: np.ndarray) -> np.ndarray:
        return _NAMES[np.clip(codes.astype(np.int64), -1, len(STATUS_NAMES) - 1) + 1]

    names = xr.apply_ufunc(lookup, status, dask="parallelized", output_dtypes=[object])
    return names.rename("status_name").assign_attrs(long_name="stability class by name")


def computed_runs(ds: xr.Dataset) -> tuple[int, int]:
    """(runs computed, runs in the sweep); a run is one setting with all its step counts."""
    ds = _results(ds)
    computed = (ds["status"] >= 0).any("steps")
    return int(computed.sum().compute()), int(computed.size)


def resolve_axes(
    ds: xr.Dataset, x: str | None = None, y: str | None = None, facet: str | None = None
) -> tuple[str, str, str | None]:
    """Fill in default map axes and check them against the sweep's axes.

    Defaults: ``x`` the step axis, ``y`` ``coefficient`` (the step axis when ``x`` is
    ``coefficient``), ``facet`` ``steps`` (or the first axis left over when ``steps``
    is on the map). ``facet="none"`` draws no facets.

    Raises
    ------
    MapError
        An axis that is not a sweep axis, or the same axis twice.
    """
    axes = sweep_axes(ds)
    axis = step_axis(ds)
    x = x or axis
    if y is None:
        y = axis if x == "coefficient" else "coefficient"
    for option, name in (("x", x), ("y", y), ("facet", facet)):
        if name is not None and name != "none" and name not in axes:
            raise MapError(
                f"unknown axis {name!r} for --{option}; the axes of this sweep are {', '.join(axes)}"
            )
    if x == y:
        raise MapError(f"--x and --y are both {x!r}; choose two different axes")
    if facet == "none":
        return x, y, None
    if facet is None:
        rest = [a for a in axes if a not in (x, y)]
        facet = "steps" if "steps" in rest else (rest[0] if rest else None)
    elif facet in (x, y):
        raise MapError(f"--facet {facet!r} is already on the map (x={x!r}, y={y!r})")
    return x, y, facet


# -- maps ------------------------------------------------------------------------------------


def stability_map(
    ds: xr.Dataset, x: str | None = "step_size", y: str | None = "coefficient", facet: str | None = "steps"
) -> xr.DataArray:
    """The categorical stability map: ``status`` ordered ``(*other axes, facet, y, x)``.

    Parameters
    ----------
    ds
        Results Dataset.
    x, y, facet
        Sweep axes (see :func:`resolve_axes`; ``x="step_size"`` also means the ``cfl``
        axis of a sweep given in CFL numbers).

    Returns
    -------
    xarray.DataArray
        int8 classes 0..3 (``STATUS_NAMES``), -1 where not computed; attributes
        ``map_x``, ``map_y``, ``map_facet`` name the axes.
    """
    ds = _results(ds)
    if x in STEP_AXES:
        x = step_axis(ds)
    if y in STEP_AXES:
        y = step_axis(ds)
    x, y, facet = resolve_axes(ds, x, y, facet if facet is not None else "none")
    on_map = [a for a in (facet, y, x) if a is not None]
    others = [a for a in sweep_axes(ds) if a not in on_map]
    status = ds["status"].transpose(*others, *on_map)
    return status.assign_attrs(map_x=x, map_y=y, map_facet=facet or "")


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
    ds = _results(ds)
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
    for name, text in attrs.items():
        result[name].attrs["long_name"] = text
    return result


def _broadcast_to(value: xr.DataArray | float, like: xr.Dataset) -> xr.DataArray:
    template = xr.zeros_like(_strip(like["stable_fraction"]), dtype=float)
    if isinstance(value, xr.DataArray):
        return _strip(value.broadcast_like(template).transpose(*template.dims))
    return template + value


# -- theory ---------------------------------------------------------------------------------


def _python(value: Any) -> Any:
    """numpy scalars (and numpy strings) → plain Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        return str(value)
    return value


def _model_apply(
    ds: xr.Dataset,
    keys: tuple[str, ...],
    template: xr.DataArray | float,
    func: Callable[[dict[str, Any], np.ndarray], np.ndarray],
) -> xr.DataArray | float:
    """Apply ``func(model, values)`` for each combination of the swept ``keys``.

    ``model`` holds the value of every key in ``keys``; ``values`` the part of
    ``template`` (broadcast against the swept keys) that belongs to that combination.
    """
    swept = [k for k in keys if k in ds["status"].dims]
    fixed = {k: model_value(ds, k) for k in keys if k not in swept}
    if not swept and not isinstance(template, xr.DataArray):
        return float(np.asarray(func(fixed, np.asarray(template, dtype=float))))
    base = template if isinstance(template, xr.DataArray) else xr.DataArray(float(template))
    base = _strip(base).astype(float)
    for key in swept:
        base = base.broadcast_like(ds[key])
    base = base.transpose(*swept, ...).compute()
    out = np.full(base.shape, np.nan)
    for index in np.ndindex(*(base.sizes[k] for k in swept)):
        model = dict(fixed)
        model.update({k: _python(ds[k].values[i]) for k, i in zip(swept, index, strict=True)})
        out[index] = func(model, base.values[index])
    return base.copy(data=out)


def theory_max_cfl(ds: xr.Dataset) -> xr.DataArray | float:
    """The von Neumann bound on ``r = D dt / dx²`` (NaN for unconditionally stable schemes)."""

    def limit(model: dict[str, Any], values: np.ndarray) -> np.ndarray:
        bound = stability_limit(str(model["scheme"]), int(model["dims"]))
        return np.full(np.shape(values), np.nan if bound is None else bound)

    return _model_apply(ds, ("scheme", "dims"), 0.0, limit)


def theory_max_step_size(ds: xr.Dataset) -> xr.DataArray:
    """The von Neumann bound on the step size, ``Δt* = r*·Δx²/D`` per coefficient."""

    def limit(model: dict[str, Any], coefficient: np.ndarray) -> np.ndarray:
        bound = stability_limit(str(model["scheme"]), int(model["dims"]))
        if bound is None:
            return np.full(np.shape(coefficient), np.nan)
        dx = float(model["length"]) / int(model["cells"])
        return bound * dx**2 / coefficient

    result = _model_apply(ds, ("scheme", "dims", "cells", "length"), ds["coefficient"], limit)
    assert isinstance(result, xr.DataArray)
    return result


def _initial(model: dict[str, Any]) -> tuple[Grid, np.ndarray]:
    grid = Grid(dims=int(model["dims"]), cells=int(model["cells"]), length=float(model["length"]))
    return grid, initial_condition(str(model["initial"]), grid, seed=int(model.get("seed", 0)))


def _predicted_steps(ds: xr.Dataset, cfl: xr.DataArray) -> xr.DataArray:
    tolerance = float(ds.attrs.get("tolerance", 1e-3))

    def steps(model: dict[str, Any], r: np.ndarray) -> np.ndarray:
        grid, initial = _initial(model)
        return np.asarray(
            equilibrium_steps(str(model["scheme"]), str(model["boundary"]), grid, initial, np.asarray(r), tolerance),
            dtype=float,
        )

    result = _model_apply(ds, MODEL_KEYS, cfl, steps)
    assert isinstance(result, xr.DataArray)
    return result


def predicted_equilibrium_cfl(model: Mapping[str, Any], steps: int, tolerance: float) -> float:
    """Smallest ``r`` that the slowest-mode prediction says reaches equilibrium in ``steps``.

    NaN when no stable ``r`` does (FTCS capped by its bound, or ``steps`` too few).
    Used to draw the predicted equilibration frontier on step-size maps.
    """
    grid, initial = _initial(dict(model))
    r = np.geomspace(1e-8, 1e4, 1201)
    predicted = np.asarray(
        equilibrium_steps(str(model["scheme"]), str(model["boundary"]), grid, initial, r, tolerance),
        dtype=float,
    )
    reached = np.isfinite(predicted) & (predicted <= steps)
    return float(r[np.argmax(reached)]) if reached.any() else math.nan


def equilibration_boundary(ds: xr.Dataset) -> xr.Dataset:
    """Fewest steps reaching equilibrium per setting, next to the slowest-mode prediction.

    Returns
    -------
    xarray.Dataset
        Dimensions: every sweep axis but ``steps``. Variables:
        ``steps_to_equilibrium`` (fewest step counts of the sweep at which the setting is
        at ``equilibrium``; NaN if never, or if the setting is not stable),
        ``predicted_steps_to_equilibrium`` (slowest-mode prediction, NaN where the scheme
        is unstable) and ``predicted_steps_on_grid`` (the smallest step count of the sweep
        at or above the prediction; NaN beyond the grid), ``stable`` (1 where the setting
        is stable at every step count, 0 where not, -1 where not computed).
    """
    ds = _results(ds)
    computed, _, stable = _stable_setting(ds)
    steps = ds["steps"]
    reached = (ds["status"] == 0) & stable
    observed = _masked_extreme(steps.astype(float), reached, "steps", largest=False)
    predicted = _predicted_steps(ds, ds["cfl"])
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
        "fewest step counts of the sweep at equilibrium (stable settings only)"
    )
    result["predicted_steps_to_equilibrium"].attrs["long_name"] = (
        "steps to equilibrium predicted from the slowest Laplacian mode"
    )
    result["predicted_steps_on_grid"].attrs["long_name"] = (
        "smallest step count of the sweep at or above the prediction"
    )
    result["stable"].attrs.update(
        long_name="stable (equilibrium or transient) at every step count",
        flag_values=[-1, 0, 1],
        flag_meanings="not_computed unstable stable",
    )
    return result


# -- recommendations ----------------------------------------------------------------------------


def _number(value: Any) -> float | int | None:
    """A JSON-friendly number: None for NaN/inf, int for integral step counts."""
    value = _python(value)
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, int):
        return value
    value = float(value)
    return None if not math.isfinite(value) else value


def recommend(ds: xr.Dataset) -> list[dict[str, Any]]:
    """Per coefficient (and per value of the other non-map axes): the settings to use.

    Returns
    -------
    list of dict
        One dict per coefficient and combination of the other axes (each named by its
        axis), with ``coefficient``, ``max_stable_step_size``, ``first_unstable_step_size``,
        ``theory_max_step_size`` (None for implicit schemes), ``max_stable_cfl``,
        ``theory_max_cfl``, ``min_steps_to_equilibrium`` (None if no stable setting
        reaches equilibrium), ``predicted_steps_to_equilibrium`` (at the cheapest step
        size), ``cheapest`` (``{"step_size", "cfl", "steps"}`` or None: the stable setting
        reaching equilibrium in the fewest steps, ties broken towards the larger step
        size), ``stable_fraction`` and ``computed_fraction``. Missing values are None.
    """
    ds = _results(ds)
    axis = step_axis(ds)
    boundary = stability_boundary(ds).compute()
    equilibration = equilibration_boundary(ds).compute()
    step_size = _strip(ds["step_size"]).broadcast_like(equilibration["stable"]).compute()
    cfl = _strip(ds["cfl"]).broadcast_like(equilibration["stable"]).compute()
    group_dims = [d for d in sweep_axes(ds) if d not in (axis, "steps")]
    shape = [boundary.sizes[d] for d in group_dims]
    records = []
    for index in np.ndindex(*shape):
        where = dict(zip(group_dims, index, strict=True))
        record: dict[str, Any] = {
            d: _python(ds[d].values[i]) for d, i in where.items() if d != "coefficient"
        }
        record["coefficient"] = _python(ds["coefficient"].values[where["coefficient"]])
        here = boundary.isel(where)
        for name in (
            "max_stable_step_size",
            "first_unstable_step_size",
            "theory_max_step_size",
            "max_stable_cfl",
            "theory_max_cfl",
        ):
            record[name] = _number(here[name].values)
        line = equilibration.isel(where)
        observed = line["steps_to_equilibrium"].transpose(axis).values
        sizes = step_size.isel(where).transpose(axis).values
        numbers = cfl.isel(where).transpose(axis).values
        cheapest = None
        predicted = None
        fewest = None
        if np.isfinite(observed).any():
            fewest = float(np.nanmin(observed))
            candidates = np.flatnonzero(observed == fewest)
            best = candidates[np.argmax(sizes[candidates])]
            cheapest = {
                "step_size": _number(sizes[best]),
                "cfl": _number(numbers[best]),
                "steps": int(fewest),
            }
            predicted = _number(line["predicted_steps_to_equilibrium"].transpose(axis).values[best])
            predicted = None if predicted is None else int(predicted)
        record["min_steps_to_equilibrium"] = None if fewest is None else int(fewest)
        record["predicted_steps_to_equilibrium"] = predicted
        record["cheapest"] = cheapest
        record["stable_fraction"] = _number(here["stable_fraction"].values)
        record["computed_fraction"] = _number(here["computed_fraction"].values)
        records.append(record)
    return records


# -- the saved maps dataset -----------------------------------------------------------------------


def maps_dataset(ds: xr.Dataset) -> xr.Dataset:
    """Everything the maps show, as one small in-memory Dataset (saved as ``maps.zarr``).

    Holds ``status`` (the categorical maps, int8, -1 not computed), the
    :func:`stability_boundary` and :func:`equilibration_boundary` variables, and the
    cheapest setting per coefficient (``cheapest_step_size`` and
    ``min_steps_to_equilibrium``), with the derived ``cfl``/``step_size`` coordinates and
    the store's provenance attributes.
    """
    ds = _results(ds)
    axis = step_axis(ds)
    boundary = stability_boundary(ds).compute()
    equilibration = equilibration_boundary(ds).compute()
    axes = sweep_axes(ds)
    status = ds["status"].compute()
    status = status.reset_coords(drop=True).assign_attrs(
        {
            "long_name": "stability class",
            "flag_values": [-1, 0, 1, 2, 3],
            "flag_meanings": "not_computed " + " ".join(STATUS_NAMES),
        }
    )
    cheapest_size, cheapest_steps = _cheapest_arrays(ds, equilibration, axis)
    result = xr.Dataset(
        {"status": status, **boundary.data_vars, **equilibration.data_vars},
        coords={a: ds[a].values for a in axes},
    )
    result["cheapest_step_size"] = cheapest_size
    result["min_steps_to_equilibrium"] = cheapest_steps
    derived = "cfl" if axis == "step_size" else "step_size"
    result = result.assign_coords({derived: _strip(ds[derived]).compute()})
    for name in axes:
        result[name].attrs.update(ds[name].attrs)
    result.attrs = {k: _python(ds.attrs[k]) for k in PROVENANCE_ATTRS if k in ds.attrs}
    result.attrs["title"] = f"diffsweep stability maps: {ds.attrs.get('sweep_name', '')}".strip()
    result.attrs["step_axis"] = axis
    computed, total = computed_runs(ds)
    result.attrs["runs_computed"] = computed
    result.attrs["runs_total"] = total
    return result


def _cheapest_arrays(
    ds: xr.Dataset, equilibration: xr.Dataset, axis: str
) -> tuple[xr.DataArray, xr.DataArray]:
    observed = equilibration["steps_to_equilibrium"]
    fewest = _masked_extreme(observed, np.isfinite(observed), axis, largest=False)
    sizes = _strip(ds["step_size"]).broadcast_like(observed).compute()
    at_fewest = observed == fewest  # NaN never compares equal
    size = _masked_extreme(sizes, at_fewest, axis, largest=True)
    size.attrs["long_name"] = "cheapest stable step size reaching equilibrium (ties: larger step size)"
    steps = _strip(fewest).assign_attrs(
        long_name="fewest steps at which a stable setting reaches equilibrium (the cheapest setting's steps)"
    )
    return size, steps



def save_maps(maps: xr.Dataset, path: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> None:
    """Write a :func:`maps_dataset` as a zarr store (replacing one already at ``path``).

    It opens again with plain ``xarray.open_zarr(path)``.
    """
    with warnings.catch_warnings():
        # zarr calls consolidated metadata an extension of the v3 spec; xarray writes it on purpose
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        maps.to_zarr(
            path, mode="w", consolidated=True, storage_options=dict(storage_options) if storage_options else None
        )
