"""Figures of the stability maps (matplotlib, Agg canvas; no pyplot, no global state).

Each map is a categorical image of the stability class over two sweep axes — by
default step size × coefficient, one image per step count — with the theory drawn on
top: the von Neumann bound of FTCS (``Δt* = Δx²/(2dD)``, a straight line on log
axes; ``r* = 1/(2d)`` on CFL maps) and the slowest-mode prediction of where the field
reaches equilibrium within the image's step count.  Matplotlib is imported only when
a figure is drawn.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pipeline import maps

__all__ = ["COLOURS", "LABELS", "axis_scale", "write_figures"]

#: colour of each class, in the order -1 (not computed), 0..3 — a red/blue diverging
#: palette: stable classes blue, unstable ones red (readable with red-green blindness)
COLOURS = {
    maps.NOT_COMPUTED_NAME: "#e0e0e0",
    "equilibrium": "#2166ac",
    "transient": "#92c5de",
    "oscillating": "#f4a582",
    "divergent": "#b2182b",
}
LABELS = {
    "step_size": "step size Δt",
    "cfl": "CFL number r = D·Δt/Δx²",
    "coefficient": "diffusion coefficient D",
    "steps": "steps",
    "scheme": "scheme",
    "dims": "dimensions",
    "cells": "cells per dimension",
    "length": "domain length",
    "boundary": "boundary",
    "initial": "initial condition",
    "seed": "seed",
}
THEORY_STYLE = {"color": "black", "linewidth": 1.8, "linestyle": "-"}
EQUILIBRIUM_STYLE = {"color": "#1b7837", "linewidth": 1.6, "linestyle": "--"}
MAX_OVERVIEW_COLUMNS = 6
MAX_OVERVIEW_ROWS = 4
MAX_BOUNDARY_LINES = 8


# -- axes ---------------------------------------------------------------------------------


def axis_scale(values: Sequence[Any] | np.ndarray) -> str:
    """``"log"`` for positive geometric-looking axes, ``"category"`` for strings, else ``"linear"``."""
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        return "category"
    v = np.sort(array.astype(float))
    if v.size < 2 or v[0] <= 0:
        return "linear"
    if v.size == 2:
        return "log" if v[1] / v[0] >= 10 else "linear"
    steps = np.diff(v)
    linear = np.allclose(steps, steps[0], rtol=1e-3)
    if linear:
        return "linear"
    ratios = np.diff(np.log(v))
    geometric = v.size >= 3 and np.allclose(ratios, ratios[0], rtol=1e-3)
    return "log" if geometric or v[-1] / v[0] >= 100 else "linear"


def _edges(values: np.ndarray, scale: str) -> np.ndarray:
    """Cell edges around each value (midpoints in log space for log axes)."""
    if scale == "category":
        return np.arange(values.size + 1) - 0.5
    v = values.astype(float)
    t = np.log(v) if scale == "log" else v
    if t.size == 1:
        half = 0.35 if scale == "log" else (0.5 if t[0] == 0 else 0.25 * abs(t[0]))
        edges = np.array([t[0] - half, t[0] + half])
    else:
        middle = (t[1:] + t[:-1]) / 2
        edges = np.concatenate([[t[0] - (middle[0] - t[0])], middle, [t[-1] + (t[-1] - middle[-1])]])
    return np.exp(edges) if scale == "log" else edges


def _positions(values: np.ndarray, scale: str) -> np.ndarray:
    return np.arange(values.size, dtype=float) if scale == "category" else values.astype(float)


def _format(value: Any) -> str:
    value = maps._python(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


# -- what each panel shows ------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    """One map: a selection (axis → position) of every axis that is not on the map."""

    selection: tuple[tuple[str, int], ...]

    def isel(self) -> dict[str, int]:
        return dict(self.selection)


def _model_at(ds: xr.Dataset, selection: Mapping[str, int]) -> dict[str, Any]:
    model = {}
    for key in maps.MODEL_KEYS:
        if key in ds["status"].dims:
            if key in selection:
                model[key] = maps._python(ds[key].values[selection[key]])
        else:
            model[key] = maps.model_value(ds, key)
    return model


@lru_cache(maxsize=256)
def _equilibrium_cfl(model: tuple[tuple[str, Any], ...], steps: int, tolerance: float) -> float:
    return maps.predicted_equilibrium_cfl(dict(model), steps, tolerance)


@dataclass
class Curve:
    xs: np.ndarray
    ys: np.ndarray
    label: str
    style: dict[str, Any]


def _dx(model: Mapping[str, Any]) -> float:
    return float(model["length"]) / int(model["cells"])


def _overlays(
    ds: xr.Dataset, boundary: xr.Dataset, x: str, y: str, selection: Mapping[str, int], edges: dict[str, np.ndarray]
) -> tuple[list[Curve], str | None]:
    """Theory curves for one panel, in the panel's data coordinates, and a note for implicit schemes."""
    axis = maps.step_axis(ds)
    if axis not in (x, y):
        return [], None
    other = y if x == axis else x
    curves: list[Curve] = []
    note = None

    def place(step_values: np.ndarray, other_values: np.ndarray, label: str, style: dict[str, Any]) -> None:
        finite = np.isfinite(step_values)
        if not finite.any():
            return
        xs, ys = (step_values, other_values) if x == axis else (other_values, step_values)
        curves.append(Curve(np.asarray(xs, float), np.asarray(ys, float), label, style))

    if other == "steps":
        # the bound is one step size for this panel's coefficient; the prediction a curve
        where = {k: v for k, v in selection.items() if k in boundary.dims}
        if set(where) == set(boundary.dims):
            name = "theory_max_step_size" if axis == "step_size" else "theory_max_cfl"
            bound = float(boundary[name].isel(where).values)
            if math.isfinite(bound):
                span = edges[other][[0, -1]]
                place(np.array([bound, bound]), span, _bound_label(ds, selection), THEORY_STYLE)
            elif _is_implicit(ds, selection):
                note = "implicit scheme: no stability bound"
            equilibration = maps.equilibration_boundary(ds.isel(where))
            predicted = equilibration["predicted_steps_to_equilibrium"].transpose(axis).values
            place(
                ds[axis].values.astype(float),
                predicted,
                "predicted steps to equilibrium (slowest mode)",
                EQUILIBRIUM_STYLE,
            )
        return curves, note

    # the other map axis is coefficient or a model key: the bound per value of it
    where = {k: v for k, v in selection.items() if k in boundary.dims and k != other}
    if set(where) | {other} != set(boundary.dims):
        return curves, note
    name = "theory_max_step_size" if axis == "step_size" else "theory_max_cfl"
    bound = boundary[name].isel(where).transpose(other).values.astype(float)
    other_values = ds[other].values
    scale = axis_scale(other_values)
    dense = other == "coefficient" and axis == "step_size" and scale != "category"
    tolerance = float(ds.attrs.get("tolerance", 1e-3))
    steps = int(ds["steps"].values[selection["steps"]]) if "steps" in selection else None
    equilibrium = np.full(other_values.size, np.nan)
    if steps is not None:
        for i in range(other_values.size):
            model = _model_at(ds, {**selection, other: i})
            if None in model.values() or len(model) < len(maps.MODEL_KEYS):
                continue
            r = _equilibrium_cfl(tuple(sorted(model.items())), steps, tolerance)
            if other == "coefficient":
                coefficient = float(ds["coefficient"].values[i])
            elif "coefficient" in selection:
                coefficient = float(ds["coefficient"].values[selection["coefficient"]])
            else:
                coefficient = math.nan
            equilibrium[i] = r if axis == "cfl" else r * _dx(model) ** 2 / coefficient
    if not np.isfinite(bound).any() and _is_implicit(ds, selection):
        note = "implicit scheme: no stability bound"
    lines = [
        (bound, _bound_label(ds, selection), THEORY_STYLE),
        (equilibrium, "equilibrium within the steps shown (slowest-mode prediction)", EQUILIBRIUM_STYLE),
    ]
    for values, label, style in lines:
        if not np.isfinite(values).any():
            continue
        if dense:
            # both are c / D along the coefficient axis: draw the exact curve, not cells
            product = values * other_values.astype(float)
            c = product[np.isfinite(product)][0]
            ds_dense = np.geomspace(edges[other][0], edges[other][-1], 200)
            place(c / ds_dense, ds_dense, label, style)
        else:
            # a constant per cell of the other axis: a staircase across each cell
            cell_edges = edges[other]
            order = np.argsort(_positions(other_values, scale))
            xs_other = np.repeat(cell_edges, 2)[1:-1]
            ys_step = np.repeat(values[order], 2)
            place(ys_step, xs_other, label, style)
    return curves, note


def _is_implicit(ds: xr.Dataset, selection: Mapping[str, int]) -> bool:
    scheme = _model_at(ds, selection).get("scheme")
    return scheme is not None and scheme != "ftcs"


def _bound_label(ds: xr.Dataset, selection: Mapping[str, int]) -> str:
    if maps.step_axis(ds) == "cfl":
        return "von Neumann bound r* = 1/(2d)"
    return "von Neumann bound Δt* = Δx²/(2dD)"


# -- drawing ------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _legend_handles(curves: Sequence[Curve]) -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(facecolor=c, edgecolor="#555555", label=n) for n, c in COLOURS.items()]
    seen = set()
    for curve in curves:
        if curve.label not in seen:
            seen.add(curve.label)
            handles.append(Line2D([], [], label=curve.label, **curve.style))
    return handles


def _draw(
    ax: Any,
    ds: xr.Dataset,
    boundary: xr.Dataset,
    status: xr.DataArray,
    x: str,
    y: str,
    selection: Mapping[str, int],
    *,
    small: bool = False,
) -> list[Curve]:
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.ticker import MaxNLocator

    scales = {a: axis_scale(ds[a].values) for a in (x, y)}
    values = {a: ds[a].values for a in (x, y)}
    order = {a: (np.arange(values[a].size) if scales[a] == "category" else np.argsort(values[a].astype(float))) for a in (x, y)}
    codes = status.transpose(y, x).values[np.ix_(order[y], order[x])].astype(int) + 1
    sorted_values = {a: values[a][order[a]] for a in (x, y)}
    edges = {a: _edges(sorted_values[a], scales[a]) for a in (x, y)}
    cmap = ListedColormap(list(COLOURS.values()))
    norm = BoundaryNorm(np.arange(-0.5, len(COLOURS) + 0.5), len(COLOURS))
    ax.pcolormesh(edges[x], edges[y], codes, cmap=cmap, norm=norm, shading="flat", edgecolors="none")
    for which, setter, limits in (("x", ax.set_xscale, ax.set_xlim), ("y", ax.set_yscale, ax.set_ylim)):
        name = x if which == "x" else y
        if scales[name] == "log":
            setter("log")
        elif scales[name] == "linear":
            axis = ax.xaxis if which == "x" else ax.yaxis
            if values[name].dtype.kind in "iu" and values[name].size <= 12:
                axis.set_ticks(values[name].astype(float))
            else:
                axis.set_major_locator(MaxNLocator(4 if small else 7))
                ax.ticklabel_format(axis=which, style="sci", scilimits=(-3, 4), useMathText=True)
        limits(edges[name][0], edges[name][-1])
    if scales[x] == "category":
        ax.set_xticks(np.arange(values[x].size), [str(v) for v in values[x]])
    if scales[y] == "category":
        ax.set_yticks(np.arange(values[y].size), [str(v) for v in values[y]])
    fontsize = 7 if small else 10
    ax.set_xlabel(LABELS.get(x, x), fontsize=fontsize)
    ax.set_ylabel(LABELS.get(y, y), fontsize=fontsize)
    ax.tick_params(labelsize=fontsize - 1)
    curves, note = _overlays(ds, boundary, x, y, selection, edges)
    curves = [c for c in curves if _visible(c, edges[x], edges[y])]
    for curve in curves:
        ax.plot(curve.xs, curve.ys, **curve.style)
    if note:
        ax.text(
            0.02, 0.98, note, transform=ax.transAxes, va="top", ha="left", fontsize=fontsize - 1,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
    return curves


def _visible(curve: Curve, x_edges: np.ndarray, y_edges: np.ndarray) -> bool:
    """Whether any point of a curve (or a segment between two of its points) is in the panel."""
    xs, ys = curve.xs, curve.ys
    (x0, x1), (y0, y1) = sorted(x_edges[[0, -1]]), sorted(y_edges[[0, -1]])
    inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    if inside.any():
        return True
    # a straight segment crossing the panel without a vertex inside it
    return bool(((np.minimum(xs[:-1], xs[1:]) <= x1) & (np.maximum(xs[:-1], xs[1:]) >= x0)
                 & (np.minimum(ys[:-1], ys[1:]) <= y1) & (np.maximum(ys[:-1], ys[1:]) >= y0)).any())


def _title(ds: xr.Dataset, selection: Mapping[str, int], facet: str | None, note: str | None) -> str:
    model = _model_at(ds, selection)
    for key in maps.MODEL_KEYS:  # a swept key on the map: list its values
        if key not in model and key in ds["status"].dims:
            model[key] = "/".join(_format(v) for v in ds[key].values)
    grid = (
        f"{model.get('dims', '?')}-D, {model.get('cells', '?')} cells"
        f"{'' if str(model.get('dims')) == '1' else ' per side'}, L = {_format(model.get('length', '?'))}"
    )
    parts = [
        str(model.get("scheme", "?")),
        grid,
        f"{model.get('boundary', '?')} walls" if model.get("boundary") in ("neumann", "dirichlet") else str(model.get("boundary", "?")),
        f"{model.get('initial', '?')} start",
    ]
    chosen = [
        f"{name} = {_format(ds[name].values[i])}"
        for name, i in selection.items()
        if name not in maps.MODEL_KEYS or name == facet
    ]
    lines = [f"{ds.attrs.get('sweep_name', 'diffsweep')}: " + ", ".join(parts)]
    if chosen:
        lines.append(", ".join(chosen))
    if note:
        lines.append(note)
    return "\n".join(lines)


def _panels(ds: xr.Dataset, x: str, y: str, facet: str | None) -> tuple[list[str], list[dict[str, int]]]:
    others = [a for a in maps.sweep_axes(ds) if a not in (x, y, facet)]
    combos = [
        dict(zip(others, index, strict=True)) for index in itertools.product(*(range(ds.sizes[a]) for a in others))
    ]
    return others, combos


def _facet_positions(ds: xr.Dataset, facet: str | None) -> list[int | None]:
    return [None] if facet is None else list(range(ds.sizes[facet]))


def write_figures(
    ds: xr.Dataset,
    out_dir: str | Path,
    x: str | None = None,
    y: str | None = None,
    facet: str | None = None,
    *,
    note: str | None = None,
    records: Sequence[Mapping[str, Any]] | None = None,
    dpi: int = 100,
) -> list[Path]:
    """Write the overview, one PNG per facet (and per value of the other axes) and the boundary plot.

    Parameters
    ----------
    ds
        Results Dataset.
    out_dir
        Existing directory to write into.
    x, y, facet
        Map axes (see :func:`pipeline.maps.resolve_axes`).
    note
        A line added to every title (e.g. how incomplete the store is).
    records
        :func:`pipeline.maps.recommend` of ``ds``, if already computed.
    dpi
        Resolution of the PNGs.

    Returns
    -------
    list of pathlib.Path
        ``overview.png`` first, then ``boundary.png`` (when ``coefficient`` and the step
        axis are both swept), then the per-facet maps.
    """
    ds = maps._results(ds)
    x, y, facet = maps.resolve_axes(ds, x, y, facet)
    out = Path(out_dir)
    ds = ds.copy()
    ds["status"] = ds["status"].compute()
    for name in ("cfl", "step_size"):
        ds[name] = ds[name].compute()
    boundary = maps.stability_boundary(ds).compute()
    _, combos = _panels(ds, x, y, facet)
    written = [_overview(ds, boundary, out, x, y, facet, combos, note, dpi)]
    if "coefficient" in ds["status"].dims:
        records = list(records) if records is not None else maps.recommend(ds)
        written.append(_boundary_figure(ds, out, records, note, dpi))
    for combo in combos:
        for position in _facet_positions(ds, facet):
            selection = dict(combo) if position is None else {**combo, facet: position}
            figure = _figure(7.0, 5.6)
            ax = figure.add_subplot()
            curves = _draw(ax, ds, boundary, ds["status"].isel(selection), x, y, selection)
            handles = _legend_handles(curves)
            figure.legend(handles=handles, loc="outside lower center", ncols=3 if len(handles) > 6 else 5, fontsize=8)
            figure.suptitle(_title(ds, selection, facet, note), fontsize=10)
            name = "map_" + "_".join(f"{a}-{_format(ds[a].values[i])}" for a, i in selection.items()) if selection else "map"
            path = out / f"{_slug(name)}.png"
            figure.savefig(path, dpi=dpi)
            written.append(path)
    return written


def _overview(
    ds: xr.Dataset,
    boundary: xr.Dataset,
    out: Path,
    x: str,
    y: str,
    facet: str | None,
    combos: list[dict[str, int]],
    note: str | None,
    dpi: int,
) -> Path:
    positions = _facet_positions(ds, facet)
    if len(positions) > MAX_OVERVIEW_COLUMNS:
        chosen = np.unique(np.linspace(0, len(positions) - 1, MAX_OVERVIEW_COLUMNS).round().astype(int))
        positions = [positions[i] for i in chosen]
    rows = combos[:MAX_OVERVIEW_ROWS]
    figure = _figure(max(3.4 * len(positions) + 0.8, 7.5), 2.6 * len(rows) + 1.6)
    axes = figure.subplots(len(rows), len(positions), squeeze=False, sharex=True, sharey=True)
    curves: list[Curve] = []
    for r, combo in enumerate(rows):
        for c, position in enumerate(positions):
            selection = dict(combo) if position is None else {**combo, facet: position}
            ax = axes[r][c]
            curves += _draw(ax, ds, boundary, ds["status"].isel(selection), x, y, selection, small=True)
            label = ", ".join(f"{a} = {_format(ds[a].values[i])}" for a, i in selection.items())
            ax.set_title(label, fontsize=8)
            if c:
                ax.set_ylabel("")
            if r < len(rows) - 1:
                ax.set_xlabel("")
    handles = _legend_handles(curves)
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), fontsize=8)
    title = _title(ds, {}, None, note)
    if len(combos) > len(rows):
        title += f"\n(first {len(rows)} of {len(combos)} combinations of {', '.join(a for a in combos[0])}; see the map_*.png files)"
    figure.suptitle(title, fontsize=10)
    path = out / "overview.png"
    figure.savefig(path, dpi=dpi)
    return path


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

        left.plot(d, column("theory_max_step_size"), "-", color=colour, label="von Neumann bound" + suffix)
        left.plot(d, column("max_stable_step_size"), "o", color=colour, mfc="none", label="largest stable (observed)" + suffix)
        left.plot(d, column("first_unstable_step_size"), "x", color=colour, label="smallest unstable (observed)" + suffix)
        right.plot(d, column("min_steps_to_equilibrium"), "o", color=colour, mfc="none", label="fewest steps (observed)" + suffix)
        right.plot(d, column("predicted_steps_to_equilibrium"), "--", color=colour, label="slowest-mode prediction" + suffix)
    scale = axis_scale(ds["coefficient"].values)
    for ax in (left, right):
        if scale == "log":
            ax.set_xscale("log")
        ax.set_xlabel(LABELS["coefficient"])
        ax.grid(True, which="both", alpha=0.3)
        data = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.lines]) if ax.lines else np.array([])
        data = data[np.isfinite(data) & (data > 0)]
        if data.size:
            if data.max() / data.min() >= 10:
                ax.set_yscale("log")
            ax.legend(fontsize=7)
    left.set_ylabel("step size Δt")
    left.set_title("stability boundary (stable at every step count)", fontsize=9)
    right.set_ylabel("steps")
    right.set_title("fewest steps to equilibrium, cheapest stable setting", fontsize=9)
    figure.suptitle(_title(ds, {}, None, note), fontsize=10)
    path = out / "boundary.png"
    figure.savefig(path, dpi=dpi)
    return path
