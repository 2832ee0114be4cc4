"""The edges of every column, for maps and recommendations: refined when ``diffsweep refine``
has run, else read off the sweep's own grid, censoring marked either way.

A column is one value of every swept model key, one coefficient and one step count; its
*divergence edge* lies between the last step size not divergent and the first divergent
one, its *oscillation edge* between the last neither oscillating nor divergent and the
first that is either.  :func:`edges` gives, per column and edge, the bracket ``[low,
high]`` in step sizes and in CFL numbers, whether it is *censored* (one side never seen:
the whole range stayed on one side of the edge, so the edge lies beyond it), whether it
came from the ``refine`` group, and the exact discrete bound ``2/λ_max`` next to it.

The edge *value* reported is ``low``, the largest step size seen on the stable side (a
step size known to work), or for a column unstable throughout, ``high`` (the edge lies
below it).

Examples
--------
>>> import xarray as xr
>>> status = xr.DataArray([[[1], [1], [3]], [[1], [1], [1]]], dims=("coefficient", "cfl", "steps"),
...                       coords={"coefficient": [0.5, 1.0], "cfl": [0.1, 0.2, 0.4], "steps": [100]})
>>> bracket = sweep_brackets(status, "divergence")
>>> bracket.low.values[:, 0].tolist(), bracket.high.values[:, 0].tolist()
([0.2, 0.4], [0.4, nan])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from pipeline.diagnostics import DIVERGENT, OSCILLATING
from pipeline.layout import cfl_number, step_size_from_cfl
from pipeline.numerics import stability_bound
from pipeline.sweep import MODEL_KEYS, RunModel
from pipeline.zarr_warnings import expected_zarr_warnings_silenced

__all__ = [
    "EDGES",
    "REFINE_GROUP",
    "cheapest_record",
    "edge_record",
    "edges",
    "exact_bound_cfl",
    "open_refinement",
    "sweep_brackets",
]

#: the edges, in the order they are reported
EDGES = ("divergence", "oscillation")
#: the group of a results store that ``diffsweep refine`` writes
REFINE_GROUP = "refine"
#: what a refine group's ``*_censored`` flags mean (see pipeline.search)
_FOUND, _STABLE_THROUGHOUT, _UNSTABLE_THROUGHOUT = 0, 1, 2


def open_refinement(store: str, storage_options: Mapping[str, Any] | None = None, sweep_hash: str | None = None) -> xr.Dataset | None:
    """The ``refine`` group of ``store``, or None when there is none (or it belongs to another sweep)."""
    options = dict(storage_options) if storage_options else None
    try:
        with expected_zarr_warnings_silenced():
            refined = xr.open_zarr(store, group=REFINE_GROUP, storage_options=options)
    except Exception:  # no such group: nothing refined
        return None
    if sweep_hash is not None and refined.attrs.get("sweep_hash") != sweep_hash:
        return None
    return refined


def _step_axis(status: xr.DataArray) -> str:
    return "cfl" if "cfl" in status.dims else "step_size"


def sweep_brackets(status: xr.DataArray, edge: str) -> xr.Dataset:
    """The bracket of ``edge`` in each column, from the swept grid alone (in step-axis units).

    Parameters
    ----------
    status
        Stability classes over the sweep axes (``-1`` not computed, never past an edge).
    edge
        ``"divergence"`` or ``"oscillation"``.

    Returns
    -------
    xarray.Dataset
        ``low`` (the value before the first one past the edge; NaN if the first value is
        past it) and ``high`` (the first value past the edge; NaN if none is), over every
        axis but the step axis.
    """
    axis = _step_axis(status)
    status = status.sortby(axis).transpose(..., axis)
    values = status[axis].values.astype(float)
    codes = np.asarray(status.values)
    beyond = codes == DIVERGENT if edge == "divergence" else (codes == OSCILLATING) | (codes == DIVERGENT)
    first = np.where(beyond.any(axis=-1), beyond.argmax(axis=-1), values.size)
    padded = np.concatenate([[np.nan], values, [np.nan]])
    template = status.isel({axis: 0}, drop=True)
    template = template.drop_vars([c for c in template.coords if c not in template.dims])
    return xr.Dataset(
        {"low": template.copy(data=padded[first]), "high": template.copy(data=padded[first + 1])}
    )


def exact_bound_cfl(ds: xr.Dataset) -> xr.DataArray:
    """The exact discrete bound ``2/λ_max`` on ``r`` per model (NaN for unconditionally stable schemes),
    over the swept model keys and ``coefficient``."""
    from pipeline.maps import per_model

    def bound(model: RunModel, coefficient: np.ndarray) -> np.ndarray:
        value = stability_bound(model.scheme, model.boundary, model.grid)
        return np.full(coefficient.shape, np.nan if value is None else value)

    return per_model(ds, ds["coefficient"], bound)


def _cell_width(ds: xr.Dataset) -> xr.DataArray:
    """``dx`` of every model, over the swept model keys."""
    from pipeline.maps import per_model

    return per_model(ds, xr.DataArray(0.0), lambda model, values: np.full(np.shape(values), model.dx))


def edges(ds: xr.Dataset, refinement: xr.Dataset | None = None) -> xr.Dataset:
    """Every column's edges, refined where ``refinement`` holds them, else from the sweep.

    Parameters
    ----------
    ds
        Results Dataset (``status`` over the sweep axes, step axes sorted).
    refinement
        The store's ``refine`` group (:func:`open_refinement`), or None.

    Returns
    -------
    xarray.Dataset
        Over the swept model keys, ``coefficient`` and ``steps``: for each edge ``e`` of
        :data:`EDGES`, ``e_low``/``e_high`` (step sizes), ``e_low_cfl``/``e_high_cfl``,
        ``e_censored`` (bool: one side never seen), ``e_refined`` (bool: from
        ``refinement``) and ``e_search_limit`` (bool: censored at the end of refine's
        search range rather than of the sweep); and ``bound_cfl``/``bound_step_size``,
        the exact discrete bound.
    """
    status = ds["status"]
    axis = _step_axis(status)
    result = xr.Dataset()
    for edge in EDGES:
        bracket = sweep_brackets(status, edge)
        low, high = bracket["low"], bracket["high"]
        refined = xr.zeros_like(low, dtype=bool)
        search_limit = xr.zeros_like(low, dtype=bool)
        if refinement is not None and f"{edge}_censored" in refinement:
            flags = refinement[f"{edge}_censored"].load()
            searched = (flags >= 0).broadcast_like(low)
            low = xr.where(searched, refinement[f"{edge}_bracket_low"].broadcast_like(low), low)
            high = xr.where(searched, refinement[f"{edge}_bracket_high"].broadcast_like(high), high)
            refined = searched
            search_limit = searched & (flags.broadcast_like(low) != _FOUND)
        low, high = low.transpose(*bracket["low"].dims), high.transpose(*bracket["low"].dims)
        result[f"{edge}_{axis}_low"] = low
        result[f"{edge}_{axis}_high"] = high
        result[f"{edge}_censored"] = low.isnull() | high.isnull()
        result[f"{edge}_refined"] = refined.transpose(*low.dims)
        result[f"{edge}_search_limit"] = search_limit.transpose(*low.dims)
    coefficient = ds["coefficient"].reset_coords(drop=True)
    dx = _cell_width(ds)
    for edge in EDGES:
        for side in ("low", "high"):
            value = result[f"{edge}_{axis}_{side}"]
            if axis == "cfl":
                result[f"{edge}_step_size_{side}"] = step_size_from_cfl(coefficient, value, dx).transpose(*value.dims)
            else:
                result[f"{edge}_cfl_{side}"] = cfl_number(coefficient, value, dx).transpose(*value.dims)
    bound = exact_bound_cfl(ds)
    result["bound_cfl"] = bound
    result["bound_step_size"] = step_size_from_cfl(coefficient, bound, dx).transpose(*bound.dims)
    return result


def _number(value: Any) -> float | None:
    value = float(np.asarray(value))
    return value if math.isfinite(value) else None


def edge_record(columns: xr.Dataset, edge: str) -> dict[str, Any]:
    """One edge of one column as JSON-ready values.

    Returns
    -------
    dict
        ``value`` and its copy ``step_size``, and ``cfl`` (the largest step size seen on the
        stable side; for a column past the edge throughout, the smallest value seen, the
        edge lying below it),
        ``bracket`` and ``bracket_cfl`` (``[low, high]``, None on a side never seen),
        ``censored``, ``refined``, ``limit`` (``"sweep"`` or ``"search"``: which range a
        censored edge lies beyond; None when not censored) and ``steps``.
    """
    low, high = _number(columns[f"{edge}_step_size_low"]), _number(columns[f"{edge}_step_size_high"])
    low_cfl, high_cfl = _number(columns[f"{edge}_cfl_low"]), _number(columns[f"{edge}_cfl_high"])
    censored = bool(columns[f"{edge}_censored"])
    limit = None
    if censored:
        limit = "search" if bool(columns[f"{edge}_search_limit"]) else "sweep"
    value = low if low is not None else high
    return {
        "value": value,
        "step_size": value,
        "cfl": low_cfl if low_cfl is not None else high_cfl,
        "bracket": [low, high],
        "bracket_cfl": [low_cfl, high_cfl],
        "censored": censored,
        "refined": bool(columns[f"{edge}_refined"]),
        "limit": limit,
        "steps": int(columns["steps"]),
    }


def cheapest_record(ds: xr.Dataset, refined: xr.Dataset, axis: str) -> dict[str, Any] | None:
    """The refined cheapest setting of one coefficient as JSON-ready values, or None when the
    refinement did not search it or found no run at equilibrium.

    Parameters
    ----------
    ds
        Results Dataset (for the fixed model keys).
    refined
        The ``refine`` group selected down to one coefficient (and one value of each swept
        model key).
    axis
        The step axis, ``"step_size"`` or ``"cfl"``.

    Returns
    -------
    dict or None
        ``step_size``, ``cfl``, ``steps`` (first step at equilibrium), ``bracket`` (step
        sizes), ``censored`` (the best value sits at the end of the search range),
        ``refined`` (True).
    """
    from pipeline.maps import run_model

    flag = int(np.asarray(refined["cheapest_censored"].values))
    steps = int(np.asarray(refined["cheapest_steps_to_equilibrium"].values))
    if flag < 0 or flag == _STABLE_THROUGHOUT or steps > int(ds["steps"].max()):
        return None
    coords = {key: refined[key] for key in MODEL_KEYS if key in refined.coords}
    model = run_model(xr.Dataset(coords=coords, attrs=ds.attrs))
    coefficient = float(np.asarray(refined["coefficient"].values))

    def to_step(value: float | None) -> float | None:
        if value is None or axis != "cfl":
            return value
        return float(step_size_from_cfl(coefficient, value, model.dx))

    step_size = to_step(float(np.asarray(refined["cheapest_value"].values)))
    assert step_size is not None
    low = to_step(_number(refined["cheapest_bracket_low"].values))
    high = to_step(_number(refined["cheapest_bracket_high"].values))
    return {
        "step_size": step_size,
        "cfl": float(cfl_number(coefficient, step_size, model.dx)),
        "steps": steps,
        "bracket": [low, high],
        "censored": flag == _UNSTABLE_THROUGHOUT,
        "refined": True,
    }
