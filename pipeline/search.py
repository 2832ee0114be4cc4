"""Searches along the step axis: bracket arithmetic for edges and cheapest settings, and probe runs.

A *column* is one line of the result grid along the step axis (``step_size`` or
``cfl``): one value of every swept model key, one coefficient and (for an edge) one
step count.  ``diffsweep refine`` searches every column at once, in rounds; in each
round every open column asks for one *probe*, a run at one value of the step axis, and
all probes of a round are computed as one batch of tasks (:func:`probe_tasks`).

Everything here is arithmetic on arrays over the columns, so a search is resumable
from its state alone: the state of an edge search is the pair ``(low, high)`` per
column (NaN where a side is not known yet), the state of a cheapest search adds the
best value found so far and its step count.  Nothing here reads or writes a store.

Edges (:class:`EdgeSearch`)
    A column's *edge* lies between the last value on the stable side ("not divergent",
    or "neither oscillating nor divergent") and the first value on the other side.
    The stored sweep gives the first bracket; a column that is stable over the whole
    swept range is extended upward by doubling, one unstable throughout downward by
    halving, within :data:`MAX_EXTENSION` times the swept range; then the bracket is
    bisected (at the geometric midpoint when the axis is geometric) until
    ``high <= low * (1 + rtol)``.  A column that never changes side within the search
    range is *censored*: its edge lies beyond the range searched.

Cheapest settings (:class:`CheapestSearch`)
    Per coefficient, the step-axis value whose run reaches equilibrium in the fewest
    steps: a golden-section search on ``steps_to_equilibrium`` (a run that never gets
    there within the horizon counts as infinitely many steps), started from the best
    value of the stored sweep and its neighbours.

Examples
--------
The divergence edge of two columns whose runs diverge above 0.3 and 7.0:

>>> values = np.array([0.1, 0.2, 0.4, 0.8])
>>> edges = EdgeSearch.from_sweep(values, values[None, :] > np.array([[0.3], [7.0]]), rtol=1e-2)
>>> edges.low, edges.high
(array([0.2, 0.8]), array([0.4, nan]))
>>> while edges.open().any():
...     probe = edges.probes()
...     edges.update(probe > np.array([0.3, 7.0]))
>>> bool(edges.low[0] < 0.3 <= edges.high[0]), bool(edges.low[1] < 7.0 <= edges.high[1])
(True, True)
>>> bool(np.all(edges.high <= edges.low * 1.01)), edges.runs.tolist()
(True, [7, 11])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.compute import measure_runs
from pipeline.diagnostics import DIVERGENT, EQUILIBRIUM, OSCILLATING
from pipeline.planning import MIN_BLOCK_SECONDS, TARGET_BLOCK_SECONDS, run_seconds
from pipeline.sweep import Criteria, RunModel

__all__ = [
    "EDGES",
    "FOUND",
    "GOLDEN",
    "MAX_EXTENSION",
    "NOT_SEARCHED",
    "STABLE_THROUGHOUT",
    "TARGETS",
    "UNSTABLE_THROUGHOUT",
    "BracketSearch",
    "CheapestSearch",
    "EdgeSearch",
    "ProbeTask",
    "SearchRange",
    "evaluate",
    "is_geometric",
    "probe_tasks",
    "rounds_to_converge",
    "seconds_per_probe",
]

#: the edges a search can locate: where runs start to diverge, or to oscillate
EDGES = ("divergence", "oscillation")
#: what ``diffsweep refine`` can look for
TARGETS = ("edge", "cheapest")
#: a column's search range: the swept range widened by this factor on each side
MAX_EXTENSION = 1e4
#: golden-section fraction: a probe splits the larger part of the bracket at this share
GOLDEN = (3.0 - math.sqrt(5.0)) / 2.0

# what became of a column (the ``*_censored`` flags of the store's ``refine`` group)
NOT_SEARCHED = -1
FOUND = 0
#: edge: stable up to the top of the search range; cheapest: never reached equilibrium
STABLE_THROUGHOUT = 1
#: edge: unstable down to the bottom of the search range; cheapest: best at a range end
UNSTABLE_THROUGHOUT = 2


def is_geometric(values: Sequence[float] | np.ndarray) -> bool:
    """Whether sorted, positive ``values`` are evenly spaced in their logarithm (and not linearly).

    Three or more values are needed to tell; two values count as linear.

    Examples
    --------
    >>> is_geometric(np.geomspace(1e-3, 1.0, 7)), is_geometric(np.linspace(1e-3, 1.0, 7))
    (True, False)
    """
    values = np.sort(np.asarray(values, dtype=float))
    if values.size < 3 or values[0] <= 0:
        return False
    logs = np.diff(np.log(values))
    steps = np.diff(values)
    geometric = bool(np.allclose(logs, logs[0], rtol=1e-6, atol=0.0))
    linear = bool(np.allclose(steps, steps[0], rtol=1e-6, atol=0.0))
    return geometric and not linear


@dataclass(frozen=True)
class SearchRange:
    """Where a search may look along the step axis, and how finely.

    Attributes
    ----------
    lowest, highest
        The search range: the swept range widened by :data:`MAX_EXTENSION` each way.
    geometric
        Midpoints are geometric (the swept axis is geometric) rather than arithmetic.
    rtol
        A bracket is closed when ``high <= low * (1 + rtol)``.
    """

    lowest: float
    highest: float
    geometric: bool
    rtol: float

    @classmethod
    def around(cls, values: Sequence[float] | np.ndarray, rtol: float) -> SearchRange:
        """The range of a swept axis with ``values`` widened by :data:`MAX_EXTENSION`."""
        values = np.asarray(values, dtype=float)
        return cls(
            float(values.min()) / MAX_EXTENSION,
            float(values.max()) * MAX_EXTENSION,
            is_geometric(values),
            float(rtol),
        )

    def between(self, low: np.ndarray, high: np.ndarray, share: float | np.ndarray = 0.5) -> np.ndarray:
        """The point ``share`` of the way from ``low`` to ``high`` (in the log when geometric)."""
        if self.geometric:
            return np.exp(np.log(low) + share * (np.log(high) - np.log(low)))
        return low + share * (high - low)

    def closed(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Where a bracket is as narrow as ``rtol`` asks."""
        with np.errstate(invalid="ignore"):
            return high <= low * (1.0 + self.rtol)


def rounds_to_converge(
    low: np.ndarray, high: np.ndarray, rtol: float, geometric: bool, shrink: float = 0.5, *, optimistic: bool = False
) -> np.ndarray:
    """Rounds a bracket ``[low, high]`` needs to become closed when each round multiplies its width by ``shrink``.

    Widths are ``log(high / low)`` (geometric) or ``high - low``; the closed width is
    ``log(1 + rtol)``, or ``rtol`` times the final ``low``, which lies between ``low``
    and ``high``: the count assumes ``low`` (``high`` when ``optimistic``), so for
    arithmetic bisection it is an upper (lower) bound, for geometric bisection exact.
    Bisection shrinks by 1/2, golden section by ``1 - GOLDEN`` per round.

    Examples
    --------
    >>> rounds_to_converge(np.array([1.0]), np.array([2.0]), 1e-3, geometric=True).tolist()
    [10]
    """
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if geometric:
            ratio = np.log(high / low) / math.log1p(rtol)
        else:
            ratio = (high - low) / ((high if optimistic else low) * rtol)
        rounds = np.ceil(np.log(ratio) / -math.log(shrink) - 1e-9)
    return np.where(ratio > 1, rounds, 0).astype(np.int64)


@dataclass
class BracketSearch:
    """The state every search along the step axis keeps per column: a bracket, the range, counters.

    The searches (:class:`EdgeSearch`, :class:`CheapestSearch`) say what the bracket
    encloses and how it narrows; they share these fields, their normalisation and
    :meth:`open`.

    Attributes
    ----------
    low, high
        ``(columns,)`` float64 brackets; NaN where that side is not known yet.
    search
        The search range and tolerance.
    iterations
        ``(columns,)`` int64: rounds each column has taken once bracketed (zeros when
        not given, or not one per column).
    runs
        ``(columns,)`` int64: probe runs each column has spent, extension included
        (zeros likewise).
    """

    low: np.ndarray
    high: np.ndarray
    search: SearchRange
    iterations: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    runs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self.low = np.array(self.low, dtype=float)
        self.high = np.array(self.high, dtype=float)
        if self.iterations.size != self.low.size:
            self.iterations = np.zeros(self.low.size, dtype=np.int64)
        if self.runs.size != self.low.size:
            self.runs = np.zeros(self.low.size, dtype=np.int64)
        self._probe: np.ndarray | None = None

    def outcome(self) -> np.ndarray:
        """Per column: :data:`FOUND`, :data:`STABLE_THROUGHOUT`, :data:`UNSTABLE_THROUGHOUT`
        or :data:`NOT_SEARCHED` (still open); each search says when."""
        raise NotImplementedError

    def open(self) -> np.ndarray:
        """Columns that still need a probe."""
        return self.outcome() == NOT_SEARCHED


@dataclass
class EdgeSearch(BracketSearch):
    """The edge of every column, as brackets ``[low, high]`` narrowed round by round.

    ``low`` is the largest value seen on the stable side below the edge, ``high`` the
    smallest value seen on the unstable side; NaN where that side has not been seen
    yet.  The state is these arrays and the counters (:class:`BracketSearch`; here
    ``iterations`` counts bisection rounds), nothing else.
    """

    @classmethod
    def from_sweep(
        cls, values: np.ndarray, beyond: np.ndarray, *, rtol: float, search: SearchRange | None = None
    ) -> EdgeSearch:
        """The first brackets, from the stored sweep.

        Parameters
        ----------
        values
            The swept values of the step axis, ascending, ``(k,)``.
        beyond
            ``(columns, k)`` bool: the run at each value is past the edge (divergent,
            or oscillating for the oscillation edge).
        rtol
            Relative width at which a bracket is closed.
        search
            The search range; default :meth:`SearchRange.around` the values.

        Returns
        -------
        EdgeSearch
            ``high`` is the first value past the edge, ``low`` the value before it (NaN
            when the first value is already past it); a column never past the edge has
            ``low`` = the largest value and ``high`` = NaN.
        """
        values = np.asarray(values, dtype=float)
        beyond = np.asarray(beyond, dtype=bool)
        first = np.where(beyond.any(axis=1), beyond.argmax(axis=1), values.size)
        padded = np.concatenate([[np.nan], values, [np.nan]])
        return cls(
            low=padded[first],  # the value before the first past the edge
            high=padded[first + 1],
            search=search or SearchRange.around(values, rtol),
        )

    # -- where each column stands ----------------------------------------------------------
    def outcome(self) -> np.ndarray:
        """Per column: :data:`FOUND` (bracket closed), :data:`STABLE_THROUGHOUT`,
        :data:`UNSTABLE_THROUGHOUT` (censored at a range end) or :data:`NOT_SEARCHED` (open)."""
        search = self.search
        low, high = self.low, self.high
        with np.errstate(invalid="ignore"):
            stable_throughout = np.isnan(high) & (low >= search.highest)
            unstable_throughout = np.isnan(low) & (high <= search.lowest)
        found = ~np.isnan(low) & ~np.isnan(high) & search.closed(low, high)
        return np.select(
            [found, stable_throughout, unstable_throughout], [FOUND, STABLE_THROUGHOUT, UNSTABLE_THROUGHOUT], NOT_SEARCHED
        ).astype(np.int8)

    @property
    def edge(self) -> np.ndarray:
        """The largest value found on the stable side of a closed bracket (NaN otherwise)."""
        return np.where(self.outcome() == FOUND, self.low, np.nan)

    def probes(self) -> np.ndarray:
        """The next value to run in every column (NaN where the column is closed).

        Doubling above a column stable so far, halving below one unstable so far (both
        capped at the search range), else the midpoint of the bracket.
        """
        search = self.search
        low, high = self.low, self.high
        with np.errstate(invalid="ignore"):
            probe = np.where(
                np.isnan(high),
                np.minimum(2.0 * low, search.highest),
                np.where(np.isnan(low), np.maximum(0.5 * high, search.lowest), search.between(low, high)),
            )
        probe = np.where(self.open(), probe, np.nan)
        self._probe = probe
        return probe

    def update(self, beyond: np.ndarray) -> None:
        """Take the outcome of the probes of :meth:`probes` (``beyond`` ignored where no probe ran)."""
        assert self._probe is not None, "update() needs probes() first"
        probe, self._probe = self._probe, None
        ran = ~np.isnan(probe)
        beyond = np.asarray(beyond, dtype=bool) & ran
        bracketed = ~np.isnan(self.low) & ~np.isnan(self.high)
        self.iterations += ran & bracketed
        self.runs += ran
        self.high = np.where(beyond, probe, self.high)
        self.low = np.where(ran & ~beyond, probe, self.low)

    def rounds_left(self) -> tuple[np.ndarray, np.ndarray]:
        """(fewest, most) further rounds per column: exact for a bracketed column on a
        geometric axis (bounds on a linear one); for one still extending, from one more
        doubling/halving to reaching the range end."""
        search = self.search
        low, high = self.low, self.high
        halving = rounds_to_converge(low, high, search.rtol, search.geometric)
        halving_fewest = rounds_to_converge(low, high, search.rtol, search.geometric, optimistic=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.ceil(np.log2(search.highest / low) - 1e-9)
            down = np.ceil(np.log2(high / search.lowest) - 1e-9)
        after = int(rounds_to_converge(np.array([1.0]), np.array([2.0]), search.rtol, search.geometric)[0])
        most = np.where(np.isnan(high), up + after, np.where(np.isnan(low), down + after, halving))
        fewest = np.where(np.isnan(high) | np.isnan(low), 1, halving_fewest)
        opened = self.open()
        return (np.where(opened, fewest, 0).astype(np.int64), np.where(opened, np.nan_to_num(most), 0).astype(np.int64))


#: step count standing for "never", for comparisons (equilibrium not reached)
_NEVER = np.iinfo(np.int64).max


@dataclass
class CheapestSearch(BracketSearch):
    """Per column, the value reaching equilibrium in the fewest steps: golden-section search.

    ``best`` is the value with the fewest steps to equilibrium seen so far
    (``best_steps``) and ``[low, high]`` the bracket around it.  While the best value is
    the largest (smallest) one seen, the bracket is open on that side (``high`` or
    ``low`` NaN) and the search doubles (halves) it, within the search range; once
    bracketed, each round probes the larger side of ``best`` at the golden share and
    keeps the better point, so the bracket shrinks by about 0.62 per round.  A run that
    never reaches equilibrium within the horizon (diverged, or too slow) counts as
    infinitely many steps; ties go to the larger value (the same steps, further in time).

    Attributes
    ----------
    best
        ``(columns,)`` float64 (keyword only, after the :class:`BracketSearch` fields,
        whose ``iterations`` count golden-section rounds here).
    best_steps
        ``(columns,)`` int64, -1 where no run of the column reached equilibrium
        (keyword only).
    """

    best: np.ndarray = field(kw_only=True)
    best_steps: np.ndarray = field(kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.best = np.array(self.best, dtype=float)
        self.best_steps = np.array(self.best_steps, dtype=np.int64)

    @classmethod
    def from_sweep(
        cls,
        values: np.ndarray,
        steps_to_equilibrium: np.ndarray,
        *,
        rtol: float,
        search: SearchRange | None = None,
        unstable: np.ndarray | None = None,
    ) -> CheapestSearch:
        """The first brackets from the stored sweep: the best swept value and its neighbours.

        Parameters
        ----------
        values
            Swept values of the step axis, ascending, ``(k,)``.
        steps_to_equilibrium
            ``(columns, k)`` int: first step at equilibrium, negative where never.
        rtol
            Relative width at which a bracket is closed.
        search
            The search range; default :meth:`SearchRange.around` the values.
        unstable
            ``(columns, k)`` bool, optional: where the run is oscillating or divergent at
            the horizon.

        Notes
        -----
        A column with no run at equilibrium is searched only when ``unstable`` shows a
        stable value followed by an unstable one: the fastest runs of a scheme with a
        stability edge lie just below it, possibly between two swept values, so the
        bracket between them is bisected (unstable probes move its top, stable ones its
        bottom) until a probe reaches equilibrium, from where the golden-section search
        takes over. Any other column with no run at equilibrium is not searched (it is
        reported as :data:`STABLE_THROUGHOUT`: no equilibrium within the horizon).
        """
        values = np.asarray(values, dtype=float)
        counts = _counts(steps_to_equilibrium)
        index = values.size - 1 - counts[:, ::-1].argmin(axis=1)  # ties to the larger value
        best_steps = counts[np.arange(counts.shape[0]), index]
        never = best_steps == _NEVER
        padded = np.concatenate([[np.nan], values, [np.nan]])
        low = np.where(never, np.nan, padded[index])
        high = np.where(never, np.nan, padded[index + 2])
        if unstable is not None:  # no equilibrium: seek it just below the first unstable value
            unstable = np.asarray(unstable, dtype=bool)
            first = unstable.argmax(axis=1)
            seek = never & unstable.any(axis=1) & (first > 0)
            low = np.where(seek, padded[first], low)  # padded[first] is values[first - 1]
            high = np.where(seek, values[first], high)
        return cls(
            low=low,
            high=high,
            best=np.where(never, np.nan, values[index]),
            best_steps=np.where(never, -1, best_steps),
            search=search or SearchRange.around(values, rtol),
        )

    def _seeking(self) -> np.ndarray:
        """Columns with no run at equilibrium yet, bisecting the bracket below their edge."""
        return np.isnan(self.best) & ~np.isnan(self.low) & ~np.isnan(self.high)

    def outcome(self) -> np.ndarray:
        """Per column: :data:`FOUND`; :data:`STABLE_THROUGHOUT` when no run reached
        equilibrium; :data:`UNSTABLE_THROUGHOUT` when the best value is still the largest
        (smallest) seen at the end of the search range; :data:`NOT_SEARCHED` while open."""
        search = self.search
        closed = search.closed(self.low, self.high)
        never = np.isnan(self.best) & ~(self._seeking() & ~closed)
        with np.errstate(invalid="ignore"):
            at_end = (np.isnan(self.high) & (self.best >= search.highest)) | (
                np.isnan(self.low) & (self.best <= search.lowest)
            )
        return np.select(
            [never, at_end, closed], [STABLE_THROUGHOUT, UNSTABLE_THROUGHOUT, FOUND], NOT_SEARCHED
        ).astype(np.int8)

    def probes(self) -> np.ndarray:
        """The next value to run in every column (NaN where closed): doubling or halving
        an open side, else the golden point of the larger side of ``best``."""
        search = self.search
        low, high, best = self.low, self.high, self.best
        with np.errstate(invalid="ignore", divide="ignore"):
            if search.geometric:
                upper_larger = np.log(high) - np.log(best) >= np.log(best) - np.log(low)
            else:
                upper_larger = high - best >= best - low
            golden = np.where(upper_larger, search.between(best, high, GOLDEN), search.between(best, low, GOLDEN))
            probe = np.where(
                np.isnan(high),
                np.minimum(2.0 * best, search.highest),
                np.where(np.isnan(low), np.maximum(0.5 * best, search.lowest), golden),
            )
            probe = np.where(self._seeking(), search.between(low, high), probe)
        probe = np.where(self.open(), probe, np.nan)
        self._probe = probe
        return probe

    def update(self, steps_to_equilibrium: np.ndarray, unstable: np.ndarray | None = None) -> None:
        """Take the probes' first steps at equilibrium (negative: never) and narrow the brackets;
        ``unstable`` (oscillating or divergent at the horizon) steers columns still seeking
        their first run at equilibrium (default: none unstable)."""
        assert self._probe is not None, "update() needs probes() first"
        probe, self._probe = self._probe, None
        ran = ~np.isnan(probe)
        seeking = ran & self._seeking()
        beyond = np.zeros(probe.shape, dtype=bool) if unstable is None else np.asarray(unstable, dtype=bool)
        counts = _counts(steps_to_equilibrium)
        current = _counts(self.best_steps)
        with np.errstate(invalid="ignore"):
            above = probe > self.best
        # ties go to the larger value
        better = ran & ((counts < current) | ((counts == current) & above & (counts != _NEVER)))
        bracketed = ~np.isnan(self.low) & ~np.isnan(self.high)
        low_before, high_before = self.low, self.high
        # a better probe becomes the best and the old best the end on its side;
        # a worse probe becomes the end on its side
        self.low, self.high = (
            np.where(better & above, self.best, np.where(ran & ~better & ~above, probe, self.low)),
            np.where(better & ~above, self.best, np.where(ran & ~better & above, probe, self.high)),
        )
        # a seeking column keeps its bracket when a probe inside it reaches equilibrium
        # (the golden section starts from there), else moves the end on the probe's side
        found = seeking & (counts != _NEVER)
        self.low = np.where(seeking, np.where(~found & ~beyond, probe, low_before), self.low)
        self.high = np.where(seeking, np.where(~found & beyond, probe, high_before), self.high)
        self.best = np.where(better, probe, self.best)
        self.best_steps = np.where(better, counts, self.best_steps)
        self.iterations += ran & bracketed
        self.runs += ran

    def rounds_left(self) -> tuple[np.ndarray, np.ndarray]:
        """(fewest, most) further rounds per column (golden section shrinks by ~0.62 a round)."""
        search = self.search
        low = np.where(np.isnan(self.low), self.best / 2.0, self.low)
        high = np.where(np.isnan(self.high), self.best * 2.0, self.high)
        rounds = rounds_to_converge(low, high, search.rtol, search.geometric, shrink=1.0 - GOLDEN)
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.nan_to_num(np.ceil(np.log2(search.highest / self.best) - 1e-9))
            down = np.nan_to_num(np.ceil(np.log2(self.best / search.lowest) - 1e-9))
        extending = np.isnan(self.low) | np.isnan(self.high)
        most = rounds + np.where(np.isnan(self.high), up, 0) + np.where(np.isnan(self.low), down, 0)
        opened = self.open()
        return (
            np.where(opened, np.where(extending, 1, rounds), 0).astype(np.int64),
            np.where(opened, most, 0).astype(np.int64),
        )


def _counts(steps_to_equilibrium: np.ndarray) -> np.ndarray:
    """Step counts with "never" (negative) as the largest int64, for comparisons."""
    steps = np.asarray(steps_to_equilibrium, dtype=np.int64)
    return np.where(steps < 0, _NEVER, steps)


# -- probe runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeTask:
    """A batch of probe runs sharing one model and one step count: one task of a round.

    Attributes
    ----------
    model
        The model every run shares.
    criteria
        Classification thresholds of the sweep.
    step_axis
        ``"step_size"`` or ``"cfl"``: what ``value`` holds.
    steps
        The step count at which every run is classified.
    coefficient, value
        ``(runs,)`` each: the coefficient and step-axis value of every run.
    """

    model: RunModel
    criteria: Criteria
    step_axis: str
    steps: int
    coefficient: np.ndarray
    value: np.ndarray

    @property
    def n_runs(self) -> int:
        return int(self.coefficient.shape[0])


def evaluate(task: ProbeTask, threads: int | None = None) -> dict[str, np.ndarray]:
    """Run every probe of ``task`` to its step count and classify it there.

    The classification is :func:`pipeline.compute.measure_runs` at the single checkpoint
    ``task.steps``: the status at a step count depends on the run and that count only,
    so a probe's status is that of the same run in any sweep.

    Returns
    -------
    dict
        ``"status"``: ``(runs,)`` int8 stability class at ``task.steps``;
        ``"steps_to_equilibrium"``: ``(runs,)`` int64 first step at equilibrium, -1 where
        not within ``task.steps`` or where the run is not at equilibrium (stable) at
        ``task.steps`` (a run that dips below the tolerance and then diverges is no answer).
    """
    if threads is not None:
        import numba

        most = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]  # set at import, untyped
        numba.set_num_threads(max(1, min(threads, most)))
    measured = measure_runs(
        task.model, task.coefficient, task.step_axis, task.value, [task.steps], criteria=task.criteria
    )
    status = measured["status"][:, 0]
    # particle runs have no exact first passage: their first step at equilibrium is unknown
    first = np.asarray(measured.get("steps_to_equilibrium", np.full(status.shape, task.steps + 1)), dtype=np.int64)
    settled = (status == EQUILIBRIUM) & (first <= task.steps)
    return {"status": status, "steps_to_equilibrium": np.where(settled, first, -1)}


def beyond_edge(status: np.ndarray, edge: str) -> np.ndarray:
    """Whether a status lies past ``edge``: divergent, or (``oscillation``) oscillating or divergent."""
    if edge == "divergence":
        return status == DIVERGENT
    return (status == OSCILLATING) | (status == DIVERGENT)


def seconds_per_probe(model: RunModel, steps: int) -> float:
    """Rough single-core seconds of one probe run of ``model`` to ``steps`` (one checkpoint)."""
    return run_seconds(model, steps)


def probe_tasks(
    probes: Iterable[tuple[RunModel, int, int, float, float]],
    *,
    criteria: Criteria,
    step_axis: str,
    parallelism: int = 1,
) -> tuple[list[ProbeTask], list[np.ndarray]]:
    """Batch one round's probes into tasks.

    Probes sharing a model and a step count go into the same tasks, each task sized like
    a block of ``diffsweep run`` (about :data:`~pipeline.planning.TARGET_BLOCK_SECONDS`,
    and at least four tasks per worker when there are enough runs).

    Parameters
    ----------
    probes
        ``(model, steps, column, coefficient, value)`` of every probe of the round.
    criteria, step_axis
        As in :class:`ProbeTask`.
    parallelism
        Workers the tasks will be spread over.

    Returns
    -------
    tasks : list of ProbeTask
    columns : list of numpy.ndarray
        For each task, the column of each of its runs.
    """
    groups: dict[tuple[RunModel, int], list[tuple[int, float, float]]] = {}
    for model, steps, column, coefficient, value in probes:
        groups.setdefault((model, int(steps)), []).append((column, coefficient, value))
    total = sum(len(members) for members in groups.values())
    balanced = max(1, math.ceil(total / (4 * max(1, parallelism))))
    tasks: list[ProbeTask] = []
    columns: list[np.ndarray] = []
    for (model, steps), members in groups.items():
        per_run = max(seconds_per_probe(model, steps), 1e-9)
        size = max(1, min(int(TARGET_BLOCK_SECONDS / per_run), max(balanced, int(MIN_BLOCK_SECONDS / per_run), 1)))
        array = np.array(members, dtype=float)
        for start in range(0, len(members), size):
            part = array[start : start + size]
            tasks.append(
                ProbeTask(model, criteria, step_axis, steps, np.ascontiguousarray(part[:, 1]), np.ascontiguousarray(part[:, 2]))
            )
            columns.append(part[:, 0].astype(np.int64))
    return tasks, columns
