"""Refine a finished results store: locate each column's edge or cheapest setting, store it beside the results.

This is the library behind ``diffsweep refine`` (store layer, like :mod:`pipeline.runner`).
A finished store is read; its sweep definition (stored in the attributes) gives the
models, coefficients and step counts; its ``status`` gives every column's first bracket
(:mod:`pipeline.search`).  Then, round by round, every open column probes one value and
all probes of a round run as one batch of tasks through an executor's ``map`` (one dask
graph per round), until every bracket is as narrow as ``rtol`` asks or censored at the
end of the search range.

Results go into the group ``refine`` of the same store, which plain xarray opens with
``xr.open_zarr(store, group="refine")``; its variables are named after the target
(``divergence_*``, ``oscillation_*``, ``cheapest_*``, see :func:`variables`), over the
sweep's model axes, ``coefficient`` and (edges) ``steps``.  The state is written after
every round, so an interrupted refinement resumes where it stopped; a refinement that
is already as fine as asked does no work and writes nothing.  Every refusal happens in
:func:`prepare`, before anything is written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import xarray as xr
import zarr

from pipeline import __version__, store
from pipeline.diagnostics import EQUILIBRIUM, OSCILLATING
from pipeline.errors import RESUME_HINT, RefineError, StoreError
from pipeline.executors import Executor, InProcessExecutor
from pipeline.layout import axis_array, coordinate_attributes
from pipeline.search import (
    EDGES,
    FOUND,
    GOLDEN,
    MAX_EXTENSION,
    NOT_SEARCHED,
    STABLE_THROUGHOUT,
    TARGETS,
    UNSTABLE_THROUGHOUT,
    CheapestSearch,
    EdgeSearch,
    SearchRange,
    beyond_edge,
    evaluate,
    probe_tasks,
    rounds_to_converge,
    seconds_per_probe,
)
from pipeline.sweep import RunModel, Sweep, Units, parse_sweep
from pipeline.zarr_warnings import expected_zarr_warnings_silenced

__all__ = [
    "GROUP",
    "Estimate",
    "Refinement",
    "Request",
    "Summary",
    "prepare",
    "refine",
    "variables",
]

#: the group of the results store that holds the refinement
GROUP = "refine"
#: the state is written after a round when this many seconds passed since the last write
#: (and always after the last round): an interruption loses at most this much work
CHECKPOINT_SECONDS = 2.0
FORMAT_VERSION = 1

_OUTCOME_MEANINGS = {
    "edge": "not_searched edge_found stable_throughout_search_range unstable_throughout_search_range",
    "cheapest": "not_searched found never_at_equilibrium best_at_end_of_search_range",
}


@dataclass(frozen=True)
class Request:
    """What to refine.

    Attributes
    ----------
    target
        ``"edge"`` (the edge named by ``edge``) or ``"cheapest"`` (per coefficient, the
        value reaching equilibrium in the fewest steps).
    edge
        ``"divergence"`` (last non-divergent to first divergent) or ``"oscillation"``
        (last neither oscillating nor divergent to first oscillating or divergent).
    rtol
        Relative width of the final brackets, ``0 < rtol < 1``.
    axis
        The axis searched; ``None`` means the store's step axis (``step_size`` or ``cfl``),
        the only one allowed.
    """

    target: str = "edge"
    edge: str = "divergence"
    rtol: float = 1e-3
    axis: str | None = None

    @property
    def name(self) -> str:
        """Prefix of the stored variables: the edge's name, or ``cheapest``."""
        return self.edge if self.target == "edge" else "cheapest"

    def check(self) -> None:
        """Refuse (:class:`RefineError`) a target, edge or tolerance out of range."""
        if self.target not in TARGETS:
            raise RefineError(f"target must be one of {', '.join(TARGETS)}, not {self.target!r}")
        if self.edge not in EDGES:
            raise RefineError(f"edge must be one of {', '.join(EDGES)}, not {self.edge!r}")
        if not (isinstance(self.rtol, int | float) and math.isfinite(self.rtol) and 0 < self.rtol < 1):
            raise RefineError(f"rtol must be a number with 0 < rtol < 1, not {self.rtol!r}")


def variables(request: Request, axis: str, units: Units | None = None) -> dict[str, dict[str, Any]]:
    """Name and attributes of every variable a refinement of ``request`` stores.

    Values on the step ``axis`` carry its units in the sweep's ``units`` (a
    nondimensional study when None), as the results' own ``axis`` coordinate does.

    Edges (``divergence_*`` or ``oscillation_*``, over the model axes, ``coefficient`` and
    ``steps``): ``_edge`` the largest value found on the stable side when the bracket is
    closed, ``_bracket_low``/``_bracket_high`` the bracket (NaN on a side never seen),
    ``_censored`` what became of the column, ``_iterations`` bisection rounds and
    ``_runs`` probe runs.  Cheapest (``cheapest_*``, no ``steps``): ``_value`` the best
    value, ``_steps_to_equilibrium`` its first step at equilibrium, and the same bracket,
    flag and counters.
    """
    name = request.name
    step_units = coordinate_attributes(units or Units())[axis]["units"]
    meanings = _OUTCOME_MEANINGS[request.target]
    flags = {"long_name": f"outcome of the {name} search", "units": "1", "flag_values": [-1, 0, 1, 2], "flag_meanings": meanings}
    if request.target == "edge":
        side = "not divergent" if name == "divergence" else "neither oscillating nor divergent"
        return {
            f"{name}_edge": {
                "long_name": f"{name} edge: largest {axis} found {side} at this step count (NaN when censored or open)",
                "units": step_units,
            },
            f"{name}_bracket_low": {"long_name": f"largest {axis} seen {side} below the {name} edge", "units": step_units},
            f"{name}_bracket_high": {"long_name": f"smallest {axis} seen past the {name} edge", "units": step_units},
            f"{name}_censored": flags,
            f"{name}_iterations": {"long_name": "bisection rounds after the edge was bracketed", "units": "1"},
            f"{name}_runs": {"long_name": "probe runs spent on this column", "units": "1"},
        }
    return {
        "cheapest_value": {"long_name": f"{axis} reaching equilibrium in the fewest steps", "units": step_units},
        "cheapest_steps_to_equilibrium": {
            "long_name": "first step at equilibrium of the cheapest value (exact)",
            "units": "1",
            "comment": "the largest step count + 1 means no value tried reached equilibrium within the largest step count",
        },
        "cheapest_bracket_low": {"long_name": f"lower end of the bracket around the cheapest {axis}", "units": step_units},
        "cheapest_bracket_high": {"long_name": f"upper end of the bracket around the cheapest {axis}", "units": step_units},
        "cheapest_censored": flags,
        "cheapest_iterations": {"long_name": "golden-section rounds after the minimum was bracketed", "units": "1"},
        "cheapest_runs": {"long_name": "probe runs spent on this column", "units": "1"},
    }


@dataclass(frozen=True)
class Columns:
    """The columns of a refinement, flattened in C order over ``dims``.

    Attributes
    ----------
    dims, shape
        The dimensions of the stored variables (model axes, ``coefficient`` and, for
        edges, ``steps``) and their sizes.
    models
        The distinct run models, and ``model_index`` the one of each column.
    coefficient, steps
        ``(columns,)``: each column's coefficient, and the step count it is classified
        at (an edge's step count; the largest step count for cheapest).
    values
        The swept values of the step axis, ascending.
    """

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    models: tuple[RunModel, ...]
    model_index: np.ndarray
    coefficient: np.ndarray
    steps: np.ndarray
    values: np.ndarray

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @classmethod
    def of(cls, sweep: Sweep, target: str) -> Columns:
        model_axes = sweep.swept_model_keys
        dims = (*model_axes, "coefficient", *(("steps",) if target == "edge" else ()))
        shape = tuple(len(sweep.axis(name)) for name in dims)
        models = sweep.run_models()  # C order over the model axes
        n_models = len(models)
        per_model = math.prod(shape[len(model_axes) :])
        model_index = np.repeat(np.arange(n_models), per_model)
        coefficients = np.asarray(sweep.axis("coefficient").values, dtype=float)
        checkpoints = np.asarray(sweep.checkpoints, dtype=np.int64)
        if target == "edge":
            coefficient = np.tile(np.repeat(coefficients, checkpoints.size), n_models)
            steps = np.tile(checkpoints, n_models * coefficients.size)
        else:
            coefficient = np.tile(coefficients, n_models)
            steps = np.full(coefficient.size, checkpoints[-1])
        values = np.sort(np.asarray(sweep.axis(sweep.step_axis).values, dtype=float))
        return cls(dims, shape, models, model_index, coefficient, steps, values)


Search = EdgeSearch | CheapestSearch


@dataclass
class Refinement:
    """A checked refinement, ready to run or to estimate; nothing has been written yet.

    Built by :func:`prepare`. ``search`` holds the state: from the stored ``refine``
    group when this target was refined before, else from the stored sweep (for the
    cheapest target on a store without ``steps_to_equilibrium``, from a first round
    that runs the swept values again: ``scan``).
    """

    url: str
    storage_options: Mapping[str, Any] | None
    request: Request
    sweep: Sweep
    columns: Columns
    search: Search
    resumed: bool
    previous: dict[str, Any] = field(default_factory=dict)
    #: cheapest target on a store without ``steps_to_equilibrium``: the first round runs
    #: every swept value of every column to find the starting brackets
    scan: bool = False

    @property
    def axis(self) -> str:
        return self.sweep.step_axis

    @property
    def name(self) -> str:
        return self.request.name


def _refusal_prefix(url: str) -> str:
    return f"cannot refine {url!r}"


def prepare(url: str, request: Request, storage_options: Mapping[str, Any] | None = None) -> Refinement:
    """Check everything and build the starting state; writes nothing.

    Raises
    ------
    RefineError
        The request is out of range, or ``request.axis`` is not the store's step axis.
    StoreError
        Nothing, or not a diffsweep store, is at ``url``; the store is incomplete; its
        definition does not match its hash; its ``refine`` group is not this sweep's;
    """
    request.check()
    attrs = store.read_attributes(url, storage_options)
    done, total = store.completion(url, storage_options)
    if done != total:
        raise StoreError(
            f"{_refusal_prefix(url)}: only {done} of {total} blocks are stored; finish it first ({RESUME_HINT})"
        )
    sweep = parse_sweep(str(attrs.get("sweep_definition", "")), source=f"{url} (sweep_definition)")
    if sweep.sha256 != attrs.get("sweep_hash"):
        raise StoreError(f"{_refusal_prefix(url)}: its sweep_definition does not match its sweep_hash")
    axis = sweep.step_axis
    if sweep.zipped:
        raise RefineError(
            f"{url!r} zips {' and '.join(sweep.zipped_names)} into one dimension 'case' (a zip: sweep), so it has no "
            f"{axis} column to search along; refine a store that sweeps coefficient and {axis} as a grid"
        )
    if request.axis is not None and request.axis != axis:
        raise RefineError(
            f"axis {request.axis!r} is not swept in {url!r} (its axes: {', '.join(sweep.axis_names)}); "
            f"refine along {axis!r}"
        )
    columns = Columns.of(sweep, request.target)
    search_range = SearchRange.around(columns.values, request.rtol)
    stored = _stored_state(url, storage_options, sweep, request, columns)
    search: Search
    if stored is not None:
        search, previous = _search_from_state(request, stored, search_range)
        return Refinement(url, storage_options, request, sweep, columns, search, True, previous)
    results = xr.open_zarr(url, storage_options=dict(storage_options) if storage_options else None)
    scan = request.target == "cheapest" and "steps_to_equilibrium" not in results.data_vars
    if scan:  # nothing stored to start from: a placeholder until the first round has run
        never = np.full((columns.size, columns.values.size), -1)
        search = CheapestSearch.from_sweep(columns.values, never, rtol=request.rtol, search=search_range)
    else:
        search = _search_from_results(results, sweep, request, columns, search_range)
    return Refinement(url, storage_options, request, sweep, columns, search, False, scan=scan)


def _column_order(results: xr.Dataset, variable: str, sweep: Sweep, columns: Columns) -> np.ndarray:
    """``variable`` as ``(columns, step values ascending)``."""
    array = results[variable].sortby(sweep.step_axis).transpose(*columns.dims, sweep.step_axis, ...)
    if "steps" not in columns.dims and "steps" in array.dims:
        array = array.isel(steps=-1)
    values = np.asarray(array.values)
    return values.reshape(columns.size, columns.values.size)


def _search_from_results(
    results: xr.Dataset, sweep: Sweep, request: Request, columns: Columns, search_range: SearchRange
) -> Search:
    if request.target == "edge":
        status = _column_order(results, "status", sweep, columns)
        return EdgeSearch.from_sweep(columns.values, beyond_edge(status, request.edge), rtol=request.rtol, search=search_range)
    first = _column_order(results, "steps_to_equilibrium", sweep, columns)
    status = _column_order(results, "status", sweep, columns)  # at the largest step count
    horizon = columns.steps[:, None]
    settled = (status == EQUILIBRIUM) & (first <= horizon)
    return CheapestSearch.from_sweep(
        columns.values, np.where(settled, first, -1), rtol=request.rtol, search=search_range, unstable=status >= OSCILLATING
    )


def _open_root(url: str, storage_options: Mapping[str, Any] | None, mode: Literal["r", "r+"]) -> zarr.Group:
    return zarr.open_group(
        store=url, mode=mode, storage_options=dict(storage_options) if storage_options else None, use_consolidated=False
    )


def _stored_state(
    url: str, storage_options: Mapping[str, Any] | None, sweep: Sweep, request: Request, columns: Columns
) -> dict[str, Any] | None:
    """The stored state of this target, or None; refuses a ``refine`` group that is not this sweep's."""
    root = _open_root(url, storage_options, "r")
    if GROUP not in root:
        return None
    group = root[GROUP]
    if not isinstance(group, zarr.Group) or group.attrs.get("sweep_hash") != sweep.sha256:
        raise StoreError(
            f"{_refusal_prefix(url)}: its {GROUP!r} group was not written by diffsweep refine for this sweep; "
            "move it away first"
        )
    names = list(variables(request, sweep.step_axis))
    if not all(name in group for name in names):
        return None
    state: dict[str, Any] = {}
    for name in names:
        array = group[name]
        if not isinstance(array, zarr.Array) or tuple(array.shape) != columns.shape:
            raise StoreError(f"{_refusal_prefix(url)}: {GROUP}/{name} does not have the shape {columns.shape}")
        state[name] = np.asarray(array[...]).reshape(-1)
    state["attrs"] = dict(group.attrs)
    state["horizon"] = columns.steps
    return state


def _search_from_state(request: Request, state: dict[str, Any], search_range: SearchRange) -> tuple[Search, dict[str, Any]]:
    name = request.name
    prefix = f"{name}_"
    previous = {key[len(prefix) :]: value for key, value in state["attrs"].items() if key.startswith(prefix)}
    iterations = state[f"{name}_iterations"].astype(np.int64)
    runs = state[f"{name}_runs"].astype(np.int64)
    low, high = state[f"{name}_bracket_low"], state[f"{name}_bracket_high"]
    if request.target == "edge":
        return EdgeSearch(low, high, search_range, iterations, runs), previous
    best = state["cheapest_value"]
    best_steps = state["cheapest_steps_to_equilibrium"]
    best_steps = np.where(best_steps > state["horizon"], -1, best_steps)
    return CheapestSearch(low, high, search_range, iterations, runs, best=best, best_steps=best_steps), previous


# -- cost -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """What a refinement will cost, before it runs (``diffsweep refine --dry-run``)."""

    name: str
    rtol: float
    axis: str
    columns: int
    open_columns: int
    bracketed: int
    extending: int
    rounds: tuple[int, int]
    runs: tuple[int, int]
    core_seconds: tuple[float, float]
    dense_runs: int
    dims: tuple[str, ...]
    shape: tuple[int, ...]

    def summary(self) -> dict[str, Any]:
        """Plain values, for ``--json``."""
        return {
            "target": self.name,
            "rtol": self.rtol,
            "axis": self.axis,
            "columns": self.columns,
            "column_axes": dict(zip(self.dims, self.shape, strict=True)),
            "open_columns": self.open_columns,
            "bracketed_by_sweep": self.bracketed,
            "extending": self.extending,
            "rounds": list(self.rounds),
            "runs": list(self.runs),
            "estimated_core_seconds": list(self.core_seconds),
            "dense_grid_runs": self.dense_runs,
        }

    def text(self) -> str:
        """A few lines for the terminal."""
        shape = " x ".join(f"{n} {name}" for name, n in zip(self.dims, self.shape, strict=True))
        what = "cheapest setting" if self.name == "cheapest" else f"{self.name} edge"
        if self.open_columns == 0:
            return f"Nothing to do: the {what} of all {self.columns} columns ({shape}) is already refined to rtol {self.rtol:g}."

        def span(pair: tuple[Any, Any], fmt: str = "{:,}") -> str:
            low, high = pair
            return fmt.format(low) if low == high else f"{fmt.format(low)} to {fmt.format(high)}"

        lines = [
            f"refine the {what} along {self.axis} to rtol {self.rtol:g}: {self.open_columns} of {self.columns} columns open ({shape})",
            f"  {self.bracketed} bracketed already, {self.extending} to extend beyond the swept range (up to {MAX_EXTENSION:g}x)",
            f"  rounds (one batch of tasks each): {span(self.rounds)}",
            f"  runs: {span(self.runs)}",
            f"  compute (estimate): {span(self.core_seconds, '{:.3g}')} core-seconds",
            f"  a dense grid at this resolution over the swept range: {self.dense_runs:,} runs",
        ]
        return "\n".join(lines)


def estimate(refinement: Refinement) -> Estimate:
    """The expected cost of running ``refinement`` (fewest and most rounds, runs and core-seconds)."""
    search = refinement.search
    columns = refinement.columns
    fewest, most = search.rounds_left()
    opened = search.open()
    extending = opened & (np.isnan(search.low) | np.isnan(search.high))
    values = columns.values
    if refinement.scan:
        # one round of every swept value, then golden section from a bracket of two grid steps
        widest = float(np.max(values[1:] / values[:-1])) ** 2 if values.size > 1 and values[0] > 0 else 2.0
        golden = int(rounds_to_converge(np.array([1.0]), np.array([widest]), refinement.request.rtol, True, 1.0 - GOLDEN)[0])
        fewest = np.full(columns.size, values.size)
        most = np.full(columns.size, values.size + golden + 1)
        opened = np.ones(columns.size, dtype=bool)
        extending = np.zeros(columns.size, dtype=bool)
    per_run = np.array(
        [seconds_per_probe(columns.models[m], int(n)) for m, n in zip(columns.model_index, columns.steps, strict=True)]
    )
    if values.size > 1 and values[0] > 0:
        dense_per_column = math.ceil(math.log(values[-1] / values[0]) / math.log1p(refinement.request.rtol)) + 1
    else:
        dense_per_column = values.size
    return Estimate(
        name=refinement.name,
        rtol=refinement.request.rtol,
        axis=refinement.axis,
        columns=columns.size,
        open_columns=int(opened.sum()),
        bracketed=int((opened & ~extending).sum()),
        extending=int(extending.sum()),
        rounds=(1, int(most.max(initial=0)) - values.size + 1) if refinement.scan else (int(fewest.max(initial=0)), int(most.max(initial=0))),
        runs=(int(fewest.sum()), int(most.sum())),
        core_seconds=(float((fewest * per_run).sum()), float((most * per_run).sum())),
        dense_runs=dense_per_column * columns.size,
        dims=columns.dims,
        shape=columns.shape,
    )


# -- running ----------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a refinement did."""

    store: str
    name: str
    columns: int
    outcomes: dict[str, int]
    rounds: int
    runs: int
    runs_total: int
    seconds: float
    nothing_to_do: bool = False

    def text(self) -> str:
        what = "cheapest setting" if self.name == "cheapest" else f"{self.name} edge"
        counts = ", ".join(f"{n} {label}" for label, n in self.outcomes.items() if n)
        if self.nothing_to_do:
            return f"Nothing to do: the {what} of all {self.columns} columns is already refined ({counts}). Store: {self.store}"
        return (
            f"Refined the {what} of {self.columns} columns in {self.rounds} rounds: {self.runs:,} runs "
            f"in {self.seconds:.1f} s ({self.runs_total:,} runs in all). Columns: {counts}. "
            f"Read it with xarray.open_zarr({self.store!r}, group={GROUP!r})."
        )


def _outcome_labels(target: str) -> dict[int, str]:
    if target == "edge":
        return {FOUND: "edge found", STABLE_THROUGHOUT: "stable throughout (censored)", UNSTABLE_THROUGHOUT: "unstable throughout (censored)", NOT_SEARCHED: "still open"}
    return {FOUND: "found", STABLE_THROUGHOUT: "never at equilibrium", UNSTABLE_THROUGHOUT: "best at the end of the search range", NOT_SEARCHED: "still open"}


def _counts(refinement: Refinement) -> dict[str, int]:
    outcome = refinement.search.outcome()
    return {label: int((outcome == code).sum()) for code, label in _outcome_labels(refinement.request.target).items()}


def _state_arrays(refinement: Refinement) -> dict[str, np.ndarray]:
    search = refinement.search
    name = refinement.name
    shape = refinement.columns.shape
    outcome = search.outcome()
    if isinstance(search, EdgeSearch):
        arrays = {
            f"{name}_edge": search.edge,
            f"{name}_bracket_low": search.low,
            f"{name}_bracket_high": search.high,
        }
    else:
        not_reached = refinement.columns.steps + 1  # as the results' own steps_to_equilibrium
        arrays = {
            "cheapest_value": search.best,
            "cheapest_steps_to_equilibrium": np.where(search.best_steps < 0, not_reached, search.best_steps).astype(np.int64),
            "cheapest_bracket_low": search.low,
            "cheapest_bracket_high": search.high,
        }
    arrays[f"{name}_censored"] = outcome.astype(np.int8)
    arrays[f"{name}_iterations"] = search.iterations.astype(np.int32)
    arrays[f"{name}_runs"] = search.runs.astype(np.int32)
    return {key: value.reshape(shape) for key, value in arrays.items()}


def _group_attributes(refinement: Refinement) -> dict[str, Any]:
    sweep = refinement.sweep
    return {
        "title": f"diffsweep refinement: {sweep.name}",
        "sweep_name": sweep.name,
        "sweep_hash": sweep.sha256,
        "step_axis": sweep.step_axis,
        "max_extension": MAX_EXTENSION,
        "diffsweep_version": __version__,
        "diffsweep_refine_format": FORMAT_VERSION,
        "Conventions": "CF-1.10",
    }


def _write(refinement: Refinement, progress_attrs: Mapping[str, Any]) -> None:
    """Write the state (creating the group or the target's variables when needed) and refresh the metadata."""
    url, options = refinement.url, refinement.storage_options
    arrays = _state_arrays(refinement)
    attributes = variables(refinement.request, refinement.axis, refinement.sweep.units)
    root = _open_root(url, options, "r+")
    group = root.get(GROUP)
    present = isinstance(group, zarr.Group) and all(name in group for name in arrays)
    with expected_zarr_warnings_silenced():
        if not present:
            sweep, columns = refinement.sweep, refinement.columns
            coordinates = coordinate_attributes(sweep.units)
            coords = {}
            for dim in columns.dims:
                coords[dim] = xr.DataArray(axis_array(sweep.axis(dim).values), dims=(dim,), attrs=coordinates[dim])
            dataset = xr.Dataset(
                {name: (columns.dims, values, attributes[name]) for name, values in arrays.items()}, coords=coords
            )
            encoding = {
                name: {"fill_value": -1} for name, values in arrays.items() if np.issubdtype(values.dtype, np.integer)
            }
            dataset.attrs.update(_group_attributes(refinement))
            dataset.to_zarr(
                url, group=GROUP, mode="a", zarr_format=3, consolidated=False, encoding=encoding,
                storage_options=dict(options) if options else None,
            )
            root = _open_root(url, options, "r+")
            group = root[GROUP]
        else:
            assert isinstance(group, zarr.Group)
            for name, state in arrays.items():
                array = group[name]
                assert isinstance(array, zarr.Array)
                array[...] = state
        assert isinstance(group, zarr.Group)
        group.attrs.update({f"{refinement.name}_{key}": value for key, value in progress_attrs.items()})
        zarr.consolidate_metadata(root.store)


def _scan(refinement: Refinement, executor: Executor) -> None:
    """The cheapest target's first round when the store has no ``steps_to_equilibrium``: every
    swept value of every column, run to the largest step count, in one batch."""
    columns, sweep = refinement.columns, refinement.sweep
    values = columns.values
    probes = (
        (columns.models[columns.model_index[c]], int(columns.steps[c]), int(c * values.size + k), float(columns.coefficient[c]), float(value))
        for c in range(columns.size)
        for k, value in enumerate(values)
    )
    tasks, members = probe_tasks(probes, criteria=sweep.criteria, step_axis=sweep.step_axis, parallelism=executor.parallelism)
    results = executor.map(evaluate, tasks, name=f"diffsweep-refine-{sweep.sha256[:16]}-cheapest-scan")
    first = np.full(columns.size * values.size, -1, dtype=np.int64)
    unstable = np.zeros(columns.size * values.size, dtype=bool)
    for result, which in zip(results, members, strict=True):
        first[which] = result["steps_to_equilibrium"]
        unstable[which] = result["status"] >= OSCILLATING
    shape = (columns.size, values.size)
    search = CheapestSearch.from_sweep(
        values, first.reshape(shape), rtol=refinement.request.rtol, search=refinement.search.search,
        unstable=unstable.reshape(shape),
    )
    search.runs += values.size
    refinement.search = search


def _progress_attributes(refinement: Refinement, rounds: int, started_at: str, started: float) -> dict[str, Any]:
    search = refinement.search
    previous = refinement.previous if refinement.resumed else {}
    return {
        "rtol": refinement.request.rtol,
        "rounds": rounds,
        "runs": int(search.runs.sum()),
        "complete": int(not search.open().any()),
        "geometric": int(search.search.geometric),
        "started": previous.get("started", started_at),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(float(previous.get("seconds", 0.0)) + time.perf_counter() - started, 3),
    }


def refine(
    refinement: Refinement,
    *,
    executor: Executor | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    max_rounds: int | None = None,
) -> Summary:
    """Run the rounds of ``refinement`` until every column is closed (or ``max_rounds``).

    Parameters
    ----------
    refinement
        From :func:`prepare`.
    executor
        Runs each round's probe tasks (``map``); default in this process.
    progress
        Called after each round with (round, open columns, runs spent so far).
    max_rounds
        Stop after this many rounds (the state is stored; a later call resumes).

    Returns
    -------
    Summary
        Nothing is written when nothing was open.
    """
    columns = refinement.columns
    sweep = refinement.sweep
    name = refinement.name
    started = time.perf_counter()
    executor = InProcessExecutor() if executor is None else executor
    if refinement.scan:
        _scan(refinement, executor)
    search = refinement.search
    previous_runs = 0 if refinement.scan else int(search.runs.sum())
    if not search.open().any() and not refinement.scan:
        return Summary(refinement.url, name, columns.size, _counts(refinement), 0, 0, previous_runs, 0.0, nothing_to_do=True)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    total_rounds = int(refinement.previous.get("rounds", 0)) if refinement.resumed else 0
    rounds = 0
    request = refinement.request
    last_write = started
    if refinement.scan:  # the scan is a round of its own: keep what it found
        refinement.scan = False
        rounds = 1
        _write(refinement, _progress_attributes(refinement, total_rounds + rounds, started_at, started))
        last_write = time.perf_counter()
    while search.open().any() and (max_rounds is None or rounds < max_rounds):
        probe = search.probes()
        todo = np.flatnonzero(~np.isnan(probe))
        tasks, members = probe_tasks(
            (
                (columns.models[columns.model_index[c]], int(columns.steps[c]), int(c), float(columns.coefficient[c]), float(probe[c]))
                for c in todo
            ),
            criteria=sweep.criteria,
            step_axis=sweep.step_axis,
            parallelism=executor.parallelism,
        )
        key = f"diffsweep-refine-{sweep.sha256[:16]}-{name}-round-{total_rounds + rounds}"
        results = executor.map(evaluate, tasks, name=key)
        if request.target == "edge":
            beyond = np.zeros(columns.size, dtype=bool)
            for result, which in zip(results, members, strict=True):
                beyond[which] = beyond_edge(result["status"], request.edge)
            assert isinstance(search, EdgeSearch)
            search.update(beyond)
        else:
            first = np.full(columns.size, -1, dtype=np.int64)
            unstable = np.zeros(columns.size, dtype=bool)
            for result, which in zip(results, members, strict=True):
                first[which] = result["steps_to_equilibrium"]
                unstable[which] = result["status"] >= OSCILLATING
            assert isinstance(search, CheapestSearch)
            search.update(first, unstable)
        rounds += 1
        finished = not search.open().any() or (max_rounds is not None and rounds >= max_rounds)
        if finished or time.perf_counter() - last_write >= CHECKPOINT_SECONDS:
            _write(refinement, _progress_attributes(refinement, total_rounds + rounds, started_at, started))
            last_write = time.perf_counter()
        if progress is not None:
            progress(rounds, int(search.open().sum()), int(search.runs.sum()))
    return Summary(
        refinement.url,
        name,
        columns.size,
        _counts(refinement),
        rounds,
        int(search.runs.sum()) - previous_runs,
        int(search.runs.sum()),
        time.perf_counter() - started,
    )
