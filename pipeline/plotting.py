"""Figures of the stability maps (matplotlib through xarray's plotting; Agg canvas, no pyplot).

Each map is a categorical image of the stability class over two coordinates of the
results — by default step size × coefficient, one image per step count — drawn by
:func:`plot_status` with xarray's ``pcolormesh`` (log axes where the values are
geometric; a derived coordinate such as ``cfl`` on a step-size sweep is drawn on its
2-D grid).  On top go the theory lines, evaluated on a fine grid of the panel's axes
and drawn as the level-1 contours of

* ``r / r*``: the exact bound of the discrete operator, ``r = D·Δt/Δx² = r* = 2/λ_max``
  (FTCS; a little above the textbook ``1/(2d)`` on small grids; none for the implicit
  schemes), and
* ``n_eq(r) / n``: the slowest-mode prediction of where the field reaches equilibrium
  within the panel's step count ``n``,

so they are exact wherever the axes put them.  Where the maps are step axis against
coefficient, the measured divergence edges go on top as markers: filled where
``diffsweep refine`` located them, open arrows where the edge lies beyond the range
searched (censored).  Matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from pipeline import edges, maps
from pipeline.diagnostics import NOT_COMPUTED, STATUS_NAMES
from pipeline.layout import cfl_number, step_size_from_cfl
from pipeline.numerics import stability_bound

__all__ = [
    "CLASS_COLOURS",
    "CLASS_NAMES",
    "LABELS",
    "axis_label",
    "axis_scale",
    "figure_names",
    "plot_status",
    "write_figures",
]

#: class code -> name; -1 is a run not computed
CLASS_NAMES: dict[int, str] = {NOT_COMPUTED: maps.NOT_COMPUTED_NAME, **dict(enumerate(STATUS_NAMES))}
#: class code -> colour. Stable classes blue, unstable ones orange/red, and every class a
#: different lightness (CIE L* about 97, 21, 58, 80, 38), so that the classes stay apart
#: in greyscale and for red-green colour-blind readers (tests/test_maps.py checks both by
#: simulation)
CLASS_COLOURS: dict[int, str] = {
    NOT_COMPUTED: "#f7f7f7",
    0: "#08306b",
    1: "#4292c6",
    2: "#fdb863",
    3: "#b2182b",
}
LABELS = {
    "step_size": "step size Δt",
    "cfl": "CFL number r = D·Δt/Δx²",
    "coefficient": "diffusion coefficient D",
    "steps": "steps",
    "time": "simulated time",
    "scheme": "scheme",
    "dims": "dimensions",
    "cells": "cells per dimension",
    "length": "domain length",
    "boundary": "boundary",
    "initial": "initial condition",
    "seed": "seed",
}
BOUND_LABEL = "exact stability bound\nr* = 2/λ_max (≈ 1/(2d)),\nΔt* = r*·Δx²/D"
DRIFT_LABEL = "drift bound (langevin)\nk·Δt = 2"
EDGE_LABEL = "divergence edge\n(diffsweep refine)"
CENSORED_LABEL = "edge beyond the range\n(censored)"
EQUILIBRIUM_LABEL = "equilibrium reached within\nthe steps shown (predicted\nfrom the slowest mode)"


@dataclass(frozen=True)
class LineStyle:
    """How a theory line is drawn (always with a white halo, to show on every class colour)."""

    colour: str
    width: float
    dash: Literal["solid", "dashed"]


THEORY_STYLE = LineStyle("black", 1.8, "solid")
EQUILIBRIUM_STYLE = LineStyle("#1b7837", 1.8, "dashed")
MAX_OVERVIEW_COLUMNS = 6
MAX_OVERVIEW_ROWS = 4
MAX_BOUNDARY_LINES = 8
#: points per numeric axis at which the theory is evaluated
FINE = 240


# -- axes ---------------------------------------------------------------------------------


def axis_scale(values: Sequence[Any] | np.ndarray) -> str:
    """``"log"`` for positive geometric-looking values, ``"category"`` for text or a single value, else ``"linear"``.

    Examples
    --------
    >>> axis_scale([1e-4, 1e-3, 1e-2]), axis_scale([0.1, 0.2, 0.3]), axis_scale(["ftcs", "crank-nicolson"])
    ('log', 'linear', 'category')
    """
    array = np.asarray(values)
    if array.dtype.kind not in "iuf" or np.unique(array).size < 2:
        return "category"
    v = np.unique(array.astype(float))
    if v[0] <= 0:
        return "linear"
    if v.size == 2:
        return "log" if v[1] / v[0] >= 10 else "linear"
    steps = np.diff(v)
    if np.allclose(steps, steps[0], rtol=1e-3):
        return "linear"
    ratios = np.diff(np.log(v))
    geometric = np.allclose(ratios, ratios[0], rtol=1e-3)
    return "log" if geometric or v[-1] / v[0] >= 100 else "linear"


def _is_category(name: str, values: np.ndarray) -> bool:
    """Model keys are drawn as categories (one column per value), as are text and single values."""
    return name in maps.MODEL_KEYS or axis_scale(values) == "category"


def axis_label(coordinate: xr.DataArray) -> str:
    """A readable name with the coordinate's units, e.g. ``"step size Δt [s]"``.

    Units ``"1"`` (dimensionless) are left out.
    """
    name = str(coordinate.name)
    label = LABELS.get(name, str(coordinate.attrs.get("long_name", name)))
    units = str(coordinate.attrs.get("units", "")).strip()
    return f"{label} [{units}]" if units and units != "1" else label


def _format(value: Any) -> str:
    value = maps.python_value(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


# -- one categorical map ------------------------------------------------------------------


def _codes(status: xr.DataArray) -> xr.DataArray:
    """int codes, -1 where not computed (a decoded ``_FillValue`` is NaN)."""
    if status.dtype.kind == "f":
        status = status.fillna(NOT_COMPUTED)
    return status.astype(np.int64).clip(NOT_COMPUTED, len(STATUS_NAMES) - 1)


def classes_present(status: xr.DataArray) -> list[int]:
    """The class codes that occur in ``status``, in legend order (-1 last)."""
    present = {int(c) for c in np.unique(_codes(status).values)}
    return [c for c in (*range(len(STATUS_NAMES)), NOT_COMPUTED) if c in present]


def _default_axes(status: xr.DataArray, x: str | None, y: str | None) -> tuple[str, str]:
    dims = [str(d) for d in status.dims]
    if x is None:
        x = next((d for d in ("step_size", "cfl") if d in dims), dims[-1])
    if y is None:
        own = _own_dim(status, x)
        y = next((d for d in ("coefficient", *reversed(dims)) if d in dims and d != own), dims[0])
    return x, y


def _own_dim(status: xr.DataArray, name: str) -> str:
    coordinate = status[name]
    if name in status.dims:
        return name
    if coordinate.ndim == 1:
        return str(coordinate.dims[0])
    return maps.own_dim(name, [str(d) for d in status.dims])


def plot_status(
    status: xr.DataArray,
    x: str | None = None,
    y: str | None = None,
    ax: Any = None,
    *,
    colorbar: bool = True,
    classes: Sequence[int] | None = None,
    small: bool = False,
) -> Any:
    """Draw a 2-D selection of ``status`` as a categorical map.

    Parameters
    ----------
    status
        Stability classes over two sweep axes, e.g. ``ds.status.sel(steps=1000)`` of a
        store opened with plain :func:`xarray.open_zarr` (int8 with -1, or float with NaN,
        for runs not computed); size-1 dimensions are dropped.
    x, y
        Coordinates for the axes: a dimension, or a coordinate derived over two of
        them (``cfl`` on a step-size sweep, drawn on its 2-D grid). Default: the step
        axis against ``coefficient``.
    ax
        Matplotlib axes; default the current pyplot axes.
    colorbar
        Add a colour bar naming the classes.
    classes
        Class codes to give a colour-bar entry; default those present in ``status``.
    small
        Smaller fonts and fewer ticks (panels of an overview).

    Returns
    -------
    matplotlib.collections.QuadMesh

    Raises
    ------
    ValueError
        ``status`` is not two-dimensional once size-1 dimensions are dropped.
    """
    mesh, _ = _plot_status(status, x, y, ax, colorbar=colorbar, classes=classes, small=small)
    return mesh


def _plot_status(
    status: xr.DataArray,
    x: str | None,
    y: str | None,
    ax: Any,
    *,
    colorbar: bool,
    classes: Sequence[int] | None,
    small: bool,
) -> tuple[Any, dict[str, str]]:
    """:func:`plot_status`, also returning the scale of each axis (log, linear, category)."""
    status = status.squeeze(drop=True)
    if status.ndim != 2:
        raise ValueError(
            f"status must have two dimensions to draw, it has {status.ndim} ({', '.join(map(str, status.dims))}); "
            "select the others first, e.g. status.sel(steps=1000)"
        )
    x, y = _default_axes(status, x, y)
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    codes = _codes(status)
    shown = list(classes) if classes is not None else classes_present(status)
    shown = shown or [NOT_COMPUTED]
    index = np.full(len(STATUS_NAMES) + 1, -1)
    for position, code in enumerate(shown):
        index[code + 1] = position
    data = codes.copy(data=index[codes.values + 1].astype(float))
    data = data.where(data >= 0)  # classes left out are blank
    scales: dict[str, str] = {}
    for name in (x, y):
        values = np.asarray(status[name].values)
        if _is_category(name, values) and status[name].ndim == 1:
            scales[name] = "category"
            data = data.assign_coords({name: (status[name].dims, np.arange(values.size, dtype=float))})
        else:
            scales[name] = axis_scale(values.ravel())
            if scales[name] == "category":
                scales[name] = "linear"
    mesh = data.plot.pcolormesh(
        ax=ax,
        x=x,
        y=y,
        levels=np.arange(len(shown) + 1) - 0.5,
        colors=[CLASS_COLOURS[c] for c in shown],
        add_colorbar=False,
        add_labels=False,
        xscale="log" if scales[x] == "log" else "linear",
        yscale="log" if scales[y] == "log" else "linear",
        edgecolors="none",
    )
    fontsize = 7 if small else 10
    for name, which in ((x, "x"), (y, "y")):
        axis = ax.xaxis if which == "x" else ax.yaxis
        values = np.asarray(status[name].values)
        if scales[name] == "category":
            axis.set_ticks(np.arange(values.size), [_format(v) for v in values])
        elif scales[name] == "linear":
            from matplotlib.ticker import MaxNLocator

            axis.set_major_locator(MaxNLocator(4 if small else 7))
            if values.dtype.kind == "f":
                ax.ticklabel_format(axis=which, style="sci", scilimits=(-3, 4), useMathText=True)
    ax.set_xlabel(axis_label(status[x]), fontsize=fontsize)
    ax.set_ylabel(axis_label(status[y]), fontsize=fontsize)
    ax.tick_params(labelsize=fontsize - 1)
    if colorbar:
        bar = ax.figure.colorbar(mesh, ax=ax, ticks=np.arange(len(shown)))
        bar.ax.set_yticklabels([CLASS_NAMES[c] for c in shown], fontsize=fontsize)
        bar.set_label("stability class", fontsize=fontsize)
    return mesh, scales


# -- theory on a panel ------------------------------------------------------------------


@dataclass(frozen=True)
class _Fine:
    """An axis sampled finely for the theory: plot positions and the values there."""

    name: str
    positions: np.ndarray
    values: np.ndarray


def _fine_axis(name: str, panel: xr.Dataset, limits: tuple[float, float], scale: str) -> _Fine:
    low, high = sorted(limits)
    if scale == "category":
        labels = np.asarray(panel[name].values)
        half = 0.5 - 1e-3
        positions = np.ravel([[i - half, i + half] for i in range(labels.size)])
        return _Fine(name, positions, np.repeat(labels, 2))
    positions = np.geomspace(low, high, FINE) if scale == "log" else np.linspace(low, high, FINE)
    return _Fine(name, positions, positions)


def _theory(panel: xr.Dataset, x: str, y: str, ax: Any, scales: Mapping[str, str], steps: float | None) -> list[str]:
    """Draw the bound and the equilibrium frontier on one panel; the labels of what was drawn.

    ``panel`` is the results with every dimension selected except the two on the map.
    """
    fine = {
        x: _fine_axis(x, panel, ax.get_xlim(), scales[x]),
        y: _fine_axis(y, panel, ax.get_ylim(), scales[y]),
    }
    grid_y, grid_x = np.meshgrid(fine[y].values, fine[x].values, indexing="ij")
    point = {x: grid_x, y: grid_y}
    r = np.full(grid_x.shape, np.nan)
    bound = np.full(grid_x.shape, np.nan)
    drift = np.full(grid_x.shape, np.nan)
    equilibrium = np.full(grid_x.shape, np.nan)
    tolerance = float(panel.attrs.get("tolerance", 1e-3))
    keys_on_map = [k for k in (x, y) if k in maps.MODEL_KEYS]
    combos = itertools.product(*(np.unique(point[k]) for k in keys_on_map))
    for combo in combos:
        where = np.ones(grid_x.shape, bool)
        frame = panel
        for key, value in zip(keys_on_map, combo, strict=True):
            where &= point[key] == value
            frame = frame.sel({key: value})
        model = maps.run_model(frame)
        r[where] = _cfl(frame, point, where, model)
        # FTCS: the exact bound of the operator on this grid; a random walk: its validity bound
        exact = stability_bound(model.scheme, model.boundary, model.grid) if model.scheme == "ftcs" else model.stability_limit
        if exact is not None:
            bound[where] = r[where] / exact
        if model.step_size_limit is not None:  # k dt / 2 = (r dx² / D) / (2 / k)
            coefficient = _coordinate(frame, point, where, "coefficient")
            drift[where] = step_size_from_cfl(coefficient, r[where], model.dx) / model.step_size_limit
        count = steps if "steps" not in point else point["steps"][where]
        if count is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                equilibrium[where] = maps.predicted_steps(model, r[where], tolerance) / count
    drawn = []
    lines = ((bound, BOUND_LABEL, THEORY_STYLE), (drift, DRIFT_LABEL, THEORY_STYLE), (equilibrium, EQUILIBRIUM_LABEL, EQUILIBRIUM_STYLE))
    for ratio, label, style in lines:
        finite = ratio[np.isfinite(ratio)]
        if finite.size and finite.min() < 1 < finite.max():
            _contour(ax, fine[x].positions, fine[y].positions, ratio, style)
            drawn.append(label)
    return drawn


def _coordinate(frame: xr.Dataset, point: Mapping[str, np.ndarray], where: np.ndarray, name: str) -> np.ndarray:
    """Coordinate ``name`` at the panel's points: from the map's axes, or its one value."""
    if name in point:
        return np.asarray(point[name][where], float)
    return np.full(int(where.sum()), float(np.asarray(frame[name].values).ravel()[0]))


def _cfl(frame: xr.Dataset, point: Mapping[str, np.ndarray], where: np.ndarray, model: Any) -> np.ndarray:
    """``r = D·Δt/Δx²`` at the panel's points, from whichever of its coordinates fix it."""

    def value(name: str) -> Any:
        if name in point:
            return np.asarray(point[name][where], float)
        return float(np.asarray(frame[name].values).ravel()[0]) if frame[name].size == 1 else None

    if "cfl" in point or ("step_size" not in point and "time" not in point and frame["cfl"].size == 1):
        return np.broadcast_to(np.asarray(value("cfl"), float), where.sum()).copy()
    step_size = value("time") / value("steps") if "time" in point else value("step_size")
    return np.asarray(cfl_number(value("coefficient"), step_size, model.dx), float) * np.ones(where.sum())


def _contour(ax: Any, xs: np.ndarray, ys: np.ndarray, ratio: np.ndarray, style: LineStyle) -> None:
    from matplotlib import patheffects

    contour = ax.contour(xs, ys, np.ma.masked_invalid(ratio), levels=[1.0], colors=style.colour,
                         linewidths=style.width, linestyles=style.dash)
    contour.set_path_effects([patheffects.withStroke(linewidth=style.width + 2.2, foreground="white")])


def _implicit_note(panel: xr.Dataset) -> str | None:
    schemes = panel["scheme"].values if "scheme" in panel.coords else np.asarray(panel.attrs.get("scheme"))
    if np.all(np.isin(np.ravel(schemes), ["backward-euler", "crank-nicolson"])):
        return "implicit scheme: no stability bound"
    return None


# -- drawing ------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path, title: str, handles: Sequence[Any], dpi: int) -> Path:
    """Title and legend on the figure, and in the PNG's text chunks (``Title``, ``Description``)."""
    figure.legend(handles=handles, loc="outside right center", fontsize=8)
    figure.suptitle(title, fontsize=10)
    legend = "; ".join(" ".join(str(h.get_label()).split()) for h in handles)
    metadata = {"Title": title, "Description": f"legend: {legend}", "Software": "diffsweep"}
    figure.savefig(path, dpi=dpi, metadata=metadata)
    return path


def _legend_handles(classes: Sequence[int], lines: Sequence[str]) -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [
        Patch(facecolor=CLASS_COLOURS[c], edgecolor="#555555", label=CLASS_NAMES[c]) for c in classes
    ]
    for label in (BOUND_LABEL, DRIFT_LABEL, EQUILIBRIUM_LABEL):
        if label not in lines:
            continue
        style = EQUILIBRIUM_STYLE if label == EQUILIBRIUM_LABEL else THEORY_STYLE
        handles.append(Line2D([], [], label=label, color=style.colour, linewidth=style.width, linestyle=style.dash))
    if EDGE_LABEL in lines:
        handles.append(Line2D([], [], label=EDGE_LABEL, **_EDGE_MARKER))
    if CENSORED_LABEL in lines:
        handles.append(Line2D([], [], label=CENSORED_LABEL, **{**_CENSORED_MARKER, "marker": ">"}))
    return handles


_EDGE_MARKER: dict[str, Any] = {
    "marker": "D", "markersize": 5, "color": "#ffd92f", "markeredgecolor": "black", "linestyle": "none", "zorder": 5,
}
_CENSORED_MARKER: dict[str, Any] = {
    "markersize": 6, "color": "black", "markerfacecolor": "white", "linestyle": "none", "zorder": 5,
}


def _edge_markers(ax: Any, axes: maps.MapAxes, columns: xr.Dataset | None, selection: Mapping[str, int]) -> list[str]:
    """Mark the divergence edge of each coefficient on a step-axis x coefficient panel."""
    if columns is None or axes.y != "coefficient" or axes.x not in ("step_size", "cfl"):
        return []
    here = {k: v for k, v in selection.items() if k in columns.dims}
    if "steps" not in here:
        here["steps"] = columns.sizes["steps"] - 1  # a panel over all step counts: the last one binds
    column = columns.isel(here)
    low, high = column[f"divergence_{axes.x}_low"].values, column[f"divergence_{axes.x}_high"].values
    refined = column["divergence_refined"].values
    censored = column["divergence_censored"].values
    coefficient = column["coefficient"].values
    drawn = []
    found = refined & ~censored
    if found.any():
        ax.plot(low[found], coefficient[found], **_EDGE_MARKER)
        drawn.append(EDGE_LABEL)
    above = censored & np.isnan(high) & ~np.isnan(low)
    below = censored & np.isnan(low) & ~np.isnan(high)
    if above.any() or below.any():
        # censored: the edge lies beyond the map's end (refine may have searched far past
        # the sweep), so the arrow sits at that end, pointing out
        from matplotlib.transforms import blended_transform_factory

        at_end = blended_transform_factory(ax.transAxes, ax.transData)
        ax.plot(np.full(above.sum(), 0.97), coefficient[above], marker=">", transform=at_end, **_CENSORED_MARKER)
        ax.plot(np.full(below.sum(), 0.03), coefficient[below], marker="<", transform=at_end, **_CENSORED_MARKER)
        drawn.append(CENSORED_LABEL)
    return drawn


def _draw(
    ax: Any, ds: xr.Dataset, axes: maps.MapAxes, status: xr.DataArray, selection: Mapping[str, int],
    classes: Sequence[int], *, small: bool = False, edge_table: xr.Dataset | None = None,
) -> list[str]:
    """One panel: the map, the theory, the measured edges, a note for implicit schemes; the
    labels of the lines and markers drawn."""
    panel = ds.isel(selection)
    _, scales = _plot_status(status, axes.x, axes.y, ax, colorbar=False, classes=classes, small=small)

    if "steps" in selection:
        steps: float | None = float(ds["steps"].values[selection["steps"]])
    elif axes.collapsed_steps:
        steps = float(ds["steps"].values.max())
    else:
        steps = None
    lines = _theory(panel.drop_vars(list(panel.data_vars)), axes.x, axes.y, ax, scales, steps)
    limits = ax.get_xlim(), ax.get_ylim()
    lines += _edge_markers(ax, axes, edge_table, selection)  # on top of the theory lines
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    note = _implicit_note(panel)
    if note and BOUND_LABEL not in lines:
        ax.text(
            0.02, 0.98, note, transform=ax.transAxes, va="top", ha="left", fontsize=6 if small else 9,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
    return lines


def _model_line(ds: xr.Dataset) -> str:
    """The model in words; a swept key on the map lists its values."""
    values: dict[str, str] = {}
    for key in maps.MODEL_KEYS:
        if key in ds.coords:
            values[key] = "/".join(_format(v) for v in np.ravel(ds[key].values))
        else:
            values[key] = _format(ds.attrs.get(key, "?"))
    per_side = "" if values["dims"] == "1" else " per side"
    boundary = values["boundary"]
    walls = f"{boundary} walls" if boundary in ("neumann", "dirichlet") else boundary
    return (
        f"{values['scheme']}, {values['dims']}-D, {values['cells']} cells{per_side}, L = {values['length']}, "
        f"{walls}, {values['initial']} start"
    )


def _title(ds: xr.Dataset, selection: Mapping[str, int], note: str | None, *, collapsed: bool = False) -> str:
    panel = ds.isel(selection)
    lines = [f"{ds.attrs.get('sweep_name', 'diffsweep')}: {_model_line(panel)}"]
    chosen = [
        f"{name} = {_format(ds[name].values[i])}" for name, i in selection.items() if name not in maps.MODEL_KEYS
    ]
    if collapsed:
        chosen.append(f"class over all {ds.sizes['steps']} step counts (worst unstable, else the last)")
    if chosen:
        lines.append(", ".join(chosen))
    if note:
        lines.append(note)
    return "\n".join(lines)


def _selections(ds: xr.Dataset, dims: Sequence[str]) -> list[dict[str, int]]:
    return [
        dict(zip(dims, index, strict=True)) for index in itertools.product(*(range(ds.sizes[d]) for d in dims))
    ]


def _map_status(ds: xr.Dataset, axes: maps.MapAxes) -> xr.DataArray:
    status = maps.setting_status(ds) if axes.collapsed_steps else ds["status"]
    return status.compute()


def write_figures(
    ds: xr.Dataset,
    out_dir: str | Path,
    axes: maps.MapAxes | None = None,
    *,
    note: str | None = None,
    records: Sequence[Mapping[str, Any]] | None = None,
    dpi: int = 100,
    refinement: xr.Dataset | None = None,
) -> list[Path]:
    """Write the overview, one PNG per map and the boundary plot.

    Parameters
    ----------
    ds
        Results Dataset.
    out_dir
        Existing directory to write into.
    axes
        What the maps show (:func:`pipeline.maps.resolve_axes`); default its defaults.
    note
        A line added to every title (e.g. how incomplete the store is).
    records
        :func:`pipeline.maps.recommend` of ``ds``, if already computed.
    dpi
        Resolution of the PNGs.
    refinement
        The store's ``refine`` group (:func:`pipeline.edges.open_refinement`): its edges
        are marked on the maps and drawn in the boundary plot.

    Returns
    -------
    list of pathlib.Path
        ``overview.png`` first, then ``boundary.png`` (when ``coefficient`` and the step
        axis are both swept), then one ``map_*.png`` per facet value and per value of
        the other axes not on the map.
    """
    ds = maps.as_results(ds)
    axes = axes or maps.resolve_axes(ds)
    out = Path(out_dir)
    ds = ds.copy()
    for name in ds.coords:
        ds[name] = ds[name].compute()
    status = _map_status(ds, axes)
    classes = classes_present(status)
    names = figure_names(ds, axes)
    selections = _selections(ds, _map_dims(axes))
    edge_table = edges.edges(ds, refinement).compute() if "coefficient" in ds["status"].dims else None
    written = [_overview(ds, status, axes, out, classes, note, dpi, edge_table)]
    if "coefficient" in ds["status"].dims:
        records = list(records) if records is not None else maps.recommend(ds, refinement)
        written.append(_boundary_figure(ds, out, records, note, dpi))
    for selection, name in zip(selections, names[-len(selections) :], strict=True):
        figure = _figure(8.4, 5.6)
        ax = figure.add_subplot()
        lines = _draw(ax, ds, axes, status.isel(selection), selection, classes, edge_table=edge_table)
        here = classes_present(status.isel(selection))
        handles = _legend_handles(here, lines)
        title = _title(ds, selection, note, collapsed=axes.collapsed_steps)
        written.append(_save(figure, out / name, title, handles, dpi))
    return written


def _map_dims(axes: maps.MapAxes) -> list[str]:
    return [*axes.panels, *([axes.facet] if axes.facet else [])]


def figure_names(ds: xr.Dataset, axes: maps.MapAxes) -> list[str]:
    """The file names :func:`write_figures` writes, in its order (known before drawing).

    Examples
    --------
    >>> import xarray as xr
    >>> from pipeline import maps
    >>> ds = xr.Dataset({"status": (("coefficient", "step_size", "steps"), [[[0, 0]]])},
    ...                 coords={"coefficient": [1.0], "step_size": [1e-3], "steps": [10, 100]})
    >>> figure_names(ds, maps.resolve_axes(ds))
    ['overview.png', 'boundary.png', 'map_steps-10.png', 'map_steps-100.png']
    """
    names = ["overview.png"]
    if "coefficient" in ds["status"].dims:
        names.append("boundary.png")
    for selection in _selections(ds, _map_dims(axes)):
        label = "_".join(f"{a}-{_format(ds[a].values[i])}" for a, i in selection.items())
        names.append(f"{_slug('map_' + label)}.png" if selection else "map.png")
    return names


def _spread(count: int, most: int) -> list[int]:
    """Up to ``most`` positions of ``count``, spread evenly, first and last included."""
    if count <= most:
        return list(range(count))
    return [int(i) for i in np.unique(np.linspace(0, count - 1, most).round().astype(int))]


def _overview(
    ds: xr.Dataset,
    status: xr.DataArray,
    axes: maps.MapAxes,
    out: Path,
    classes: Sequence[int],
    note: str | None,
    dpi: int,
    edge_table: xr.Dataset | None = None,
) -> Path:
    rows_all = _selections(ds, axes.panels)
    if axes.facet:
        columns_all = [{axes.facet: i} for i in range(ds.sizes[axes.facet])]
        rows = [rows_all[i] for i in _spread(len(rows_all), MAX_OVERVIEW_ROWS)]
        columns = [columns_all[i] for i in _spread(len(columns_all), MAX_OVERVIEW_COLUMNS)]
        grid = [[{**row, **column} for column in columns] for row in rows]
        shown, total = len(rows) * len(columns), len(rows_all) * len(columns_all)
    else:
        chosen = [rows_all[i] for i in _spread(len(rows_all), MAX_OVERVIEW_ROWS * MAX_OVERVIEW_COLUMNS)]
        width = min(len(chosen), MAX_OVERVIEW_COLUMNS if len(chosen) > 4 else 4)
        grid = [chosen[i : i + width] for i in range(0, len(chosen), width)]
        shown, total = len(chosen), len(rows_all)
    n_rows, n_columns = len(grid), max(len(row) for row in grid)
    figure = _figure(max(3.2 * n_columns + 2.4, 7.5), 2.7 * n_rows + 1.4)
    subplots = figure.subplots(n_rows, n_columns, squeeze=False)
    lines: list[str] = []
    for r, row in enumerate(grid):
        for c in range(n_columns):
            ax = subplots[r][c]
            if c >= len(row):
                ax.set_axis_off()
                continue
            selection = row[c]
            lines += _draw(ax, ds, axes, status.isel(selection), selection, classes, small=True, edge_table=edge_table)
            label = ", ".join(f"{a} = {_format(ds[a].values[i])}" for a, i in selection.items())
            ax.set_title(label, fontsize=8)
            if c:
                ax.set_ylabel("")
            if r < n_rows - 1:
                ax.set_xlabel("")
    handles = _legend_handles(classes, lines)
    title = _title(ds, {}, note, collapsed=axes.collapsed_steps)
    if shown < total:
        title += f"\nshowing {shown} of {total} maps, spread evenly; every map is in its own map_*.png"
    return _save(figure, out / "overview.png", title, handles, dpi)


def _boundary_figure(
    ds: xr.Dataset, out: Path, records: Sequence[Mapping[str, Any]], note: str | None, dpi: int
) -> Path:
    figure = _figure(11.0, 4.4)
    left, right = figure.subplots(1, 2)
    group_keys = [k for k in records[0] if k in ds["status"].dims and k != "coefficient"] if records else []
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(tuple(record[k] for k in group_keys), []).append(record)
    colours = ["#000000", "#e66101", "#5e3c99", "#1b7837", "#b2182b", "#2166ac", "#8c510a", "#666666"]
    for n, (key, rows) in enumerate(list(groups.items())[:MAX_BOUNDARY_LINES]):
        rows = sorted(rows, key=lambda r: r["coefficient"])
        colour = colours[n % len(colours)]
        label = ", ".join(f"{k} = {_format(v)}" for k, v in zip(group_keys, key, strict=True))
        suffix = f" ({label})" if label else ""
        d = np.array([r["coefficient"] for r in rows], float)

        def column(name: str, rows: list[Mapping[str, Any]] = rows) -> np.ndarray:
            return np.array([np.nan if r[name] is None else r[name] for r in rows], float)

        if np.isfinite(column("bound_step_size")).any():  # none for the implicit schemes
            left.plot(d, column("bound_step_size"), "-", color=colour, label="exact bound 2/λ_max" + suffix)
            left.plot(d, column("theory_max_step_size"), ":", color=colour, linewidth=1, label="textbook 1/(2d)" + suffix)
        for edge, marker, name in (("divergence_edge", "o", "not divergent"), ("oscillation_edge", "s", "not oscillating")):
            _edge_points(left, d, [r.get(edge) for r in rows], marker, colour, f"largest {name}" + suffix)
        right.plot(d, column("min_steps_to_equilibrium"), "o", color=colour, mfc="none", label="fewest steps (observed)" + suffix)
        right.plot(d, column("predicted_steps_to_equilibrium"), "--", color=colour, label="slowest-mode prediction" + suffix)
    scale = axis_scale(ds["coefficient"].values)
    for ax in (left, right):
        if scale == "log":
            ax.set_xscale("log")
        ax.set_xlabel(axis_label(ds["coefficient"]))
        ax.grid(True, which="both", alpha=0.3)
        data = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.lines]) if ax.lines else np.array([])
        data = data[np.isfinite(data) & (data > 0)]
        if data.size:
            if data.max() / data.min() >= 10:
                ax.set_yscale("log")
            elif ax is right:  # counts that hardly vary: from 0, so a few steps do not look like a trend
                ax.set_ylim(bottom=0, top=1.1 * data.max())
            ax.legend(fontsize=7)
    left.set_ylabel(axis_label(ds["step_size"]))
    steps = next((r["divergence_edge"]["steps"] for r in records if r.get("divergence_edge")), None)
    left.set_title(f"stability edges at {steps} steps (filled: found, open arrows: beyond the range)", fontsize=9)
    right.set_ylabel("steps")
    right.set_title("fewest steps to equilibrium, cheapest stable setting", fontsize=9)
    figure.suptitle(_title(ds, {}, note), fontsize=10)
    path = out / "boundary.png"
    figure.savefig(path, dpi=dpi, metadata={"Title": _title(ds, {}, note), "Software": "diffsweep"})
    return path


def _edge_points(
    ax: Any, coefficient: np.ndarray, edges_: Sequence[Mapping[str, Any] | None], marker: str, colour: str, label: str
) -> None:
    """Edges of one group: filled markers where found (with the bracket as an error bar when
    it is wider than the marker), open arrows where censored."""
    found = [(d, e) for d, e in zip(coefficient, edges_, strict=True) if e and not e["censored"] and e["step_size"] is not None]
    above = [(d, e["step_size"]) for d, e in zip(coefficient, edges_, strict=True) if e and e["censored"] and e["bracket"][1] is None]
    below = [(d, e["step_size"]) for d, e in zip(coefficient, edges_, strict=True) if e and e["censored"] and e["bracket"][0] is None]
    if found:
        d = np.array([p[0] for p in found])
        low = np.array([p[1]["bracket"][0] for p in found], float)
        high = np.array([p[1]["bracket"][1] for p in found], float)
        ax.errorbar(d, low, yerr=[np.zeros_like(low), high - low], fmt=marker, color=colour, markersize=5,
                    capsize=2, linewidth=0.8, label=label)
    if above:
        ax.plot([p[0] for p in above], [p[1] for p in above], "^", color=colour, mfc="none", markersize=7,
                label=f"{label}: beyond the range (censored)")
    if below:
        ax.plot([p[0] for p in below], [p[1] for p in below], "v", color=colour, mfc="none", markersize=7,
                label=f"{label}: below the range (censored)")
