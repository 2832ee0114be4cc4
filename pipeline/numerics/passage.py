"""First passage: the first step at which a run reaches equilibrium, and at which it diverges.

Definitions (shared with :mod:`pipeline.diagnostics`, which applies them at the
checkpoints).  For a run with initial field ``u0``:

* ``u_eq`` is the mean of ``u0`` (Neumann, periodic) or 0 (Dirichlet); the *scale* is
  ``max u0 - min u0`` (1 for a constant field); ``peak(n) = max |u_n - u_eq|`` and
  ``norm(n) = ‖u_n - u_eq‖₂``; ``distance(n) = peak(n) / scale``.
* The **growth** at step ``n >= 1`` is the per-step factor of ``norm`` over a window
  that depends on ``n`` alone::

      growth(n) = (norm(n) / norm(m)) ** (1 / (n - m)),   m = growth_window_start(n)

  where ``m`` is the largest power of two not above ``n / 2`` (``m = 0`` for ``n = 1``),
  so the window covers the last half to three quarters of the run.  Why this window:

  - it is a function of ``n`` only, so the status of a run at ``n`` never depends on
    which other step counts a sweep asks for;
  - it is long: a mode amplified by ``|g| > 1`` is measured at its asymptotic rate once
    it dominates, while the decay of early transients does not mask it as it would
    over ``[0, n]``;
  - it is monotone.  Every step operator here is symmetric, so
    ``norm(n)² = Σ_k c_k² g_k^(2n)`` is log-convex in ``n``; the secant slope of a
    convex function never decreases when both ends of the interval move right, so
    ``growth(n)`` never decreases with ``n``.  Once a run grows it grows for good
    (in exact arithmetic), which makes "the first step at which it grows" well
    defined and locatable without looking at every step;
  - its start lies on the fixed lattice 0, 1, 2, 4, 8, …, so integrating to ``n`` needs
    only ``log₂ n`` remembered norms, not the whole history (``⌊n/2⌋`` has the other
    properties but would need a norm at every step).

* A run is **growing** at ``n`` when ``norm(n) > floor`` and ``growth(n) > 1 +``
  :data:`GROWTH_TOLERANCE`, with ``floor`` = :data:`ROUNDOFF_FLOOR` ``· sqrt(cells) ·
  max(|u_eq|, scale)``: a run settled to round-off is not growing, whatever its last
  digits do.
* A run is **divergent** at ``n`` when ``distance(n) <= divergence`` does not hold
  (non-finite values included) or it is growing.

First passages (per run, int64):

* ``steps_to_equilibrium``: the first ``n >= 0`` with ``distance(n) <= tolerance``;
* ``steps_to_divergence``: the first ``n >= 1`` at which the run is divergent;
* both are ``horizon + 1`` (the largest step count integrated, plus one) when the
  passage does not happen within the horizon.  The sentinel is right-censoring, not a
  missing value: ``steps_to_divergence <= n`` is "divergent by step n" and
  ``steps_to_equilibrium <= budget`` is "settled within budget" for every step count
  up to the horizon, and a minimum over runs is the true minimum whenever any run
  passes.

How they are found, exactly to the step:

* FTCS (:func:`_watch_ftcs`): the compiled kernel advances the batch in windows of
  :data:`CHECK_EVERY` steps (and to every power of two, which are the growth windows'
  starts).  After each window every open run is measured.  Between two measured steps
  ``p < n`` a step cannot change ``peak`` by more than ``rho = |1 - 2 d r| + 2 d r``
  (the ∞-norm of the FTCS operator) per step, so ``peak(q) >= peak(n) / rho^(n-q)``
  and ``peak(q) <= rho^(q-p) peak(p)`` for ``p < q < n``, plus a round-off allowance;
  when these bounds cannot exclude a passage inside the window — or one is seen at
  ``n`` — the window is replayed step by step from a copy of the state at ``p``, with
  the same kernel, so bit for bit the same trajectory.  Non-finite values and growth
  stay once they appear, so checking them at ``n`` covers the window.  For
  ``r <= 1/(2d)`` (``rho = 1``: the maximum principle) only the window of the passage
  itself is replayed.
* Backward Euler and Crank–Nicolson (:func:`spectral_first_passage`): the state at
  any ``n`` is ``c g^n`` in the boundary's eigenbasis, one inverse transform away.
  Backward Euler for any ``r`` and Crank–Nicolson for ``r <= 1/d`` obey the maximum
  principle, so ``distance`` never increases and bisection finds the first step.
  Crank–Nicolson at larger ``r`` can ring (``distance`` is not monotone); there the
  steps are searched in order, skipping those that lower bounds rule out (a single
  mode's ``|c_k g_k^n| / ‖φ_k‖₁``, ``‖u - u_eq‖₂ / sqrt(cells)``, and the exact value
  at the cells where earlier evaluations peaked), so only a few steps need a
  transform.  ``|g| <= 1`` for both schemes, so ``norm`` never increases and neither
  scheme is ever growing; divergence can only come from the ``divergence`` threshold
  (searched the same way, with the upper bound ``Σ_k |c_k g_k^n| max|φ_k|``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from . import ftcs, spectral
from .batch import Batch
from .grid import Grid

#: per-step growth factor of ‖u - u_eq‖₂ above 1 that counts as growing
GROWTH_TOLERANCE = 1e-9
#: per-cell round-off floor of ‖u - u_eq‖₂, relative to the field's magnitude
ROUNDOFF_FLOOR = 1e-12
#: steps between two measurements of an FTCS run that may ring (r > 1/(2d))
CHECK_EVERY = 64
#: steps between two looks at the equilibrium of an FTCS run under the maximum principle
SPARSE_CHECK_EVERY = 256

_EPS = float(np.finfo(float).eps)
_TINY = float(np.finfo(float).tiny)
#: relative margin on the thresholds when bounds, not exact values, rule a step out
_MARGIN = 1e-9


def growth_window_start(steps: int) -> int:
    """Start ``m`` of the growth window of step ``steps`` (>= 1).

    The largest power of two not above ``steps / 2``, and 0 for ``steps == 1``; see
    the module docstring for why.

    >>> [growth_window_start(n) for n in (1, 2, 3, 4, 7, 8, 1000)]
    [0, 1, 1, 2, 2, 4, 256]
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, not {steps}")
    return 0 if steps == 1 else 1 << (int(steps).bit_length() - 2)


@dataclass
class FirstPassage:
    """Thresholds to watch while integrating, and the first steps that met them.

    Give one to :func:`pipeline.numerics.integrate` (``first_passage=``); the results
    are filled in when its iterator is exhausted.

    Attributes
    ----------
    tolerance
        Equilibrium when ``distance <= tolerance``.
    divergence
        Divergent when ``distance > divergence`` (or non-finite, or growing).
    horizon
        The largest step count integrated (set by ``integrate``).
    steps_to_equilibrium, steps_to_divergence
        ``(batch,)`` int64: the first step at which the run met the criterion, or
        :attr:`not_reached` (``horizon + 1``) when it did not within the horizon.
    """

    tolerance: float
    divergence: float
    horizon: int = 0
    steps_to_equilibrium: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    steps_to_divergence: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def not_reached(self) -> int:
        """The sentinel: ``horizon + 1``."""
        return self.horizon + 1


def reference_scales(
    boundary: str, grid: Grid, initial: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equilibrium value, scale and round-off floor of each run of a batch.

    Parameters
    ----------
    boundary, grid
        As for :class:`pipeline.numerics.Batch`.
    initial
        ``(batch, *grid.shape)``.

    Returns
    -------
    equilibrium, scale, floor : numpy.ndarray
        ``(batch,)`` each: ``u_eq``, ``max u0 - min u0`` (1 where that is 0) and the
        norm below which a run is never growing.
    """
    spatial = tuple(range(1, grid.dims + 1))
    low, high = initial.min(axis=spatial), initial.max(axis=spatial)
    scale = np.where(high > low, high - low, 1.0)
    if boundary in ("neumann", "periodic"):
        equilibrium = initial.mean(axis=spatial)
    else:
        equilibrium = np.zeros(initial.shape[0])
    floor = ROUNDOFF_FLOOR * np.sqrt(grid.size) * np.maximum(np.abs(equilibrium), scale)
    return equilibrium, scale, floor


# -- measures shared by the kernel and the diagnostics (one code path: same bits) -------


@njit(cache=True, nogil=True)
def _peak_of(absolute):
    """Largest entry of a non-negative array, NaN if any: as int64 bit patterns, whose
    order is that of non-negative doubles (NaN above inf), a loop the compiler vectorizes
    without any fastmath."""
    bits = absolute.view(np.int64)
    top = bits[0]
    for j in range(1, bits.shape[0]):
        value = bits[j]
        top = value if value > top else top
    bits[0] = top
    return absolute[0]


@njit(cache=True, nogil=True)
def _row_peak(row, equilibrium, scratch):
    """``max |row - equilibrium|`` (NaN if any); overwrites ``scratch``."""
    for j in range(row.shape[0]):
        scratch[j] = abs(row[j] - equilibrium)
    return _peak_of(scratch[: row.shape[0]])


@njit(cache=True, nogil=True)
def _row_deviation(row, equilibrium, scratch):
    """``(peak, norm)`` of ``row - equilibrium``; overwrites ``scratch``.

    The sum of squares runs in eight independent lanes, combined pairwise at the end:
    fast without reassociating anything (no fastmath), so the result depends on the
    row alone.  The peak is the same bits as :func:`_row_peak` (a maximum is exact).
    """
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    s5 = 0.0
    s6 = 0.0
    s7 = 0.0
    n = row.shape[0]
    j = 0
    while j + 8 <= n:
        v0 = row[j + 0] - equilibrium
        v1 = row[j + 1] - equilibrium
        v2 = row[j + 2] - equilibrium
        v3 = row[j + 3] - equilibrium
        v4 = row[j + 4] - equilibrium
        v5 = row[j + 5] - equilibrium
        v6 = row[j + 6] - equilibrium
        v7 = row[j + 7] - equilibrium
        s0 += v0 * v0
        s1 += v1 * v1
        s2 += v2 * v2
        s3 += v3 * v3
        s4 += v4 * v4
        s5 += v5 * v5
        s6 += v6 * v6
        s7 += v7 * v7
        scratch[j + 0] = abs(v0)
        scratch[j + 1] = abs(v1)
        scratch[j + 2] = abs(v2)
        scratch[j + 3] = abs(v3)
        scratch[j + 4] = abs(v4)
        scratch[j + 5] = abs(v5)
        scratch[j + 6] = abs(v6)
        scratch[j + 7] = abs(v7)
        j += 8
    while j < n:
        v0 = row[j] - equilibrium
        s0 += v0 * v0
        scratch[j] = abs(v0)
        j += 1
    total = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    return _peak_of(scratch[:n]), np.sqrt(total)


@njit(cache=True, nogil=True)
def _deviations(flat, equilibrium, peak, norm, scratch):
    # serial: it is called once per checkpoint, and a thread-pool launch can cost
    # more than the pass itself on a loaded machine
    for i in range(flat.shape[0]):
        peak[i], norm[i] = _row_deviation(flat[i], equilibrium[i], scratch)


def deviations(state: np.ndarray, equilibrium: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max |u - u_eq|`` and ``‖u - u_eq‖₂`` of each run of a batch.

    Parameters
    ----------
    state
        ``(batch, ...)`` float64.
    equilibrium
        ``(batch,)``.

    Returns
    -------
    peak, norm : numpy.ndarray
        ``(batch,)`` each; NaN in a run gives NaN peak and norm.
    """
    flat = np.ascontiguousarray(state, dtype=float).reshape(state.shape[0], -1)
    batch = flat.shape[0]
    peak, norm = np.empty(batch), np.empty(batch)
    scratch = np.empty(max(flat.shape[1], 1))
    _deviations(flat, np.ascontiguousarray(equilibrium, dtype=float), peak, norm, scratch)
    return peak, norm


@njit(cache=True, nogil=True)
def _growth(norm, start_norm, steps, start):
    return (norm / max(start_norm, _TINY)) ** (1.0 / (steps - start))


@njit(cache=True, nogil=True)
def _growing(norm, start_norm, steps, start, floor):
    return norm > floor and _growth(norm, start_norm, steps, start) > 1.0 + GROWTH_TOLERANCE


@njit(cache=True, nogil=True)
def _growth_many(norm, start_norm, steps, start, out):
    for i in range(norm.shape[0]):
        out[i] = _growth(norm[i], start_norm[i], steps, start)


def growth_factor(norm: np.ndarray, start_norm: np.ndarray, steps: int) -> np.ndarray:
    """``growth(steps)`` of each run from its norms at ``steps`` and at the window start."""
    out = np.empty(norm.shape[0])
    _growth_many(
        np.ascontiguousarray(norm, dtype=float),
        np.ascontiguousarray(start_norm, dtype=float),
        int(steps),
        growth_window_start(steps),
        out,
    )
    return out


def is_growing(growth: np.ndarray, norm: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Growing: above the round-off floor and ``growth > 1 + GROWTH_TOLERANCE``."""
    return (norm > floor) & (growth > 1.0 + GROWTH_TOLERANCE)


# -- FTCS: the kernel advances in windows, measures, and replays where needed ------------


@njit(cache=True, nogil=True)
def _floor_log2(n):
    level = 0
    while n > 1:
        n >>= 1
        level += 1
    return level


@njit(cache=True, nogil=True)
def _window_start(n):
    return 0 if n == 1 else 1 << (_floor_log2(n) - 1)


@njit(cache=True, nogil=True)
def _is_power_of_two(n):
    return n > 0 and (n & (n - 1)) == 0


@njit(cache=True, nogil=True)
def _divergent_at(step, peak, norm, scale, floor, divergence, window_norms, run):
    return not (peak / scale <= divergence) or _growing(
        norm, window_norms[run, _floor_log2(step)], step, _window_start(step), floor
    )


@njit(cache=True, nogil=True)
def _bisect(start_state, a, b, scratch, probe, rate, boundary, dims, n, low, high, centre, scale,
            floor, tolerance, divergence, window_norms, run, equilibrium_test):
    """First step in ``(low, high]`` meeting a criterion that holds at ``high``, not at ``low``
    and never stops holding once met: the equilibrium test (``distance <= tolerance``,
    for runs under the maximum principle) or the divergence test.  ``start_state`` is
    the run at ``low``; steps are retaken from the last step known not to meet it."""
    known = start_state.copy()  # the run at `low`
    while high - low > 1:
        middle = (low + high) // 2
        ftcs._load(known, a, dims, n)
        ftcs._take_steps(a, b, rate, middle - low, boundary, dims, n)
        ftcs._unload(a, scratch, dims, n)
        if equilibrium_test:
            holds = _row_peak(scratch, centre, probe) / scale <= tolerance
        else:
            peak, norm = _row_deviation(scratch, centre, probe)
            holds = _divergent_at(middle, peak, norm, scale, floor, divergence, window_norms, run)
        if holds:
            high = middle
        else:
            low = middle
            known[:] = scratch
    return high


@njit(cache=True, nogil=True)
def _replay(start_state, a, b, scratch, probe, run, rate, boundary, dims, n, first, last, centre,
            scale, floor, tolerance, divergence, first_equilibrium, first_divergence,
            open_equilibrium, open_divergence, window_norms):
    """Retake the steps of one run from ``first`` (``start_state``) to ``last`` one at a
    time, recording the first step that meets each open criterion."""
    ftcs._load(start_state, a, dims, n)
    for step in range(first + 1, last + 1):
        ftcs._take_steps(a, b, rate, 1, boundary, dims, n)
        ftcs._unload(a, scratch, dims, n)
        peak, norm = _row_deviation(scratch, centre, probe)
        if open_equilibrium[run] and first_equilibrium[run] < 0 and peak / scale <= tolerance:
            first_equilibrium[run] = step
        if open_divergence[run] and first_divergence[run] < 0:
            if _divergent_at(step, peak, norm, scale, floor, divergence, window_norms, run):
                first_divergence[run] = step


@njit(cache=True, nogil=True)
def _slack(span, spread, error_rate, centre, peak_before, peak):
    """Round-off allowance on the peak bounds over ``span`` steps."""
    return 8.0 * span * spread * error_rate * _EPS * (abs(centre) + spread * peak_before + peak)


@njit(cache=True, nogil=True)
def _replay_from_start(initial, a, b, scratch, probe, rate, boundary, dims, n, last, centre,
                       scale, floor, divergence):
    """First step in ``[1, last]`` at which a run is divergent, retaking every step from
    ``initial`` with the norm of each kept; -1 if none."""
    norms = np.empty(last + 1)
    ftcs._load(initial, a, dims, n)
    _, norms[0] = _row_deviation(initial, centre, probe)
    for step in range(1, last + 1):
        ftcs._take_steps(a, b, rate, 1, boundary, dims, n)
        ftcs._unload(a, scratch, dims, n)
        peak, norms[step] = _row_deviation(scratch, centre, probe)
        start = _window_start(step)
        if not (peak / scale <= divergence) or _growing(norms[step], norms[start], step, start, floor):
            return step
    return -1


@njit(cache=True, nogil=True)
def _watch_monotone(a, b, c, d, before_equilibrium, now, probe, initial, run, rate, boundary,
                    dims, n, begin, end, window_starts, centre, scale, floor, tolerance,
                    divergence, first_equilibrium, first_divergence, open_equilibrium,
                    open_divergence, window_norms):
    """Watch a run with ``rho == 1`` (``r <= 1/(2d)``): the maximum principle holds.

    ``distance`` never increases, so the equilibrium is looked at every
    :data:`SPARSE_CHECK_EVERY` steps (its peak only) and a passage seen at a stop is
    located by bisection inside the window before it.  Divergence — non-finite
    values, growth — never stops once started, so it is checked at ``end`` alone,
    with the norm at its window start recorded on the way (``window_starts``: the
    steps whose norm a checkpoint needs); a divergence found there is located by
    retaking the run from ``initial`` (under the maximum principle it takes
    round-off in a run of tens of millions of steps for that to happen at all).
    ``a`` and ``before_equilibrium`` hold the run at ``begin``.
    """
    error_rate = 1.0 + 4.0 * dims * rate
    last_equilibrium = begin
    peak_equilibrium = _row_peak(before_equilibrium, centre, probe)
    step = begin
    while step < end:
        watch_equilibrium = open_equilibrium[run]
        after = end
        if open_divergence[run]:
            for start in window_starts:
                if start > step:
                    after = min(after, start)
                    break
        if watch_equilibrium:
            after = min(after, (step // SPARSE_CHECK_EVERY + 1) * SPARSE_CHECK_EVERY)
        if not (watch_equilibrium or open_divergence[run]):
            after = end
        ftcs._take_steps(a, b, rate, after - step, boundary, dims, n)
        if not (watch_equilibrium or open_divergence[run]):
            return
        ftcs._unload(a, now, dims, n)
        record = False
        for start in window_starts:
            if start == after and open_divergence[run]:
                record = True
        if record or (open_divergence[run] and after == end):
            peak, norm = _row_deviation(now, centre, probe)
        else:
            peak, norm = _row_peak(now, centre, probe), np.nan
        if record:
            window_norms[run, _floor_log2(after) + 1] = norm
        if watch_equilibrium:
            if peak / scale <= tolerance:
                first_equilibrium[run] = _bisect(
                    before_equilibrium, c, d, now, probe, rate, boundary, dims, n,
                    last_equilibrium, after, centre, scale, floor, tolerance, divergence,
                    window_norms, run, True)
                open_equilibrium[run] = False
                ftcs._unload(a, now, dims, n)
            else:
                slack = _slack(after - last_equilibrium, 1.0, error_rate, centre,
                               peak_equilibrium, peak)
                if not (peak - slack > tolerance * scale * (1.0 + _MARGIN)):
                    # within round-off of the tolerance: look at every step
                    _replay(before_equilibrium, c, d, now, probe, run, rate, boundary, dims, n,
                            last_equilibrium, after, centre, scale, floor, tolerance,
                            divergence, first_equilibrium, first_divergence,
                            open_equilibrium, open_divergence, window_norms)
                    ftcs._unload(a, now, dims, n)
                before_equilibrium[:] = now
                last_equilibrium = after
                peak_equilibrium = peak
                if first_equilibrium[run] >= 0 or not np.isfinite(peak):
                    open_equilibrium[run] = False
        if open_divergence[run] and after == end:
            if _divergent_at(after, peak, norm, scale, floor, divergence, window_norms, run):
                if first_divergence[run] < 0:
                    first_divergence[run] = _replay_from_start(
                        initial, c, d, now, probe, rate, boundary, dims, n, after, centre,
                        scale, floor, divergence)
                open_divergence[run] = False
                if not np.isfinite(peak):
                    open_equilibrium[run] = False
                ftcs._unload(a, now, dims, n)
        step = after


@njit(cache=True, nogil=True)
def _watch_ringing(a, b, c, d, before, now, probe, run, rate, boundary, dims, n, begin, end, centre,
                   scale, floor, tolerance, divergence, first_equilibrium, first_divergence,
                   open_equilibrium, open_divergence, window_norms):
    """Watch a run with ``rho > 1``: ``distance`` may rise and fall between steps.

    The run is measured every :data:`CHECK_EVERY` steps and at the powers of two; a
    window is replayed step by step when a passage shows at its end or the bounds
    ``peak(q) >= (peak(after) - slack) / rho^(after - q)`` and
    ``peak(q) <= rho^(q - step) peak(step) + slack`` cannot rule one out inside it.
    ``before`` holds the run at ``begin``, and so does ``a``.
    """
    size = now.shape[0]
    rho = abs(1.0 - 2.0 * dims * rate) + 2.0 * dims * rate
    error_rate = 1.0 + 4.0 * dims * rate
    peak_before = _row_peak(before, centre, probe)
    step = begin
    while step < end:
        if not (open_equilibrium[run] or open_divergence[run]):
            ftcs._take_steps(a, b, rate, end - step, boundary, dims, n)
            return
        power = 1 if step == 0 else 1 << (_floor_log2(step) + 1)
        after = min((step // CHECK_EVERY + 1) * CHECK_EVERY, power, end)
        span = after - step
        ftcs._take_steps(a, b, rate, span, boundary, dims, n)
        ftcs._unload(a, now, dims, n)
        peak, norm = _row_deviation(now, centre, probe)
        distance = peak / scale
        spread = rho**span
        slack = _slack(span, spread, error_rate, centre, peak_before, peak)
        replay = False
        if open_equilibrium[run]:
            if distance <= tolerance or not (
                peak - slack > spread * tolerance * scale * (1.0 + _MARGIN)
            ):
                replay = True
        if open_divergence[run]:
            if _divergent_at(after, peak, norm, scale, floor, divergence, window_norms, run):
                replay = True
            elif not (spread * peak_before + slack <= divergence * scale * (1.0 - _MARGIN)):
                replay = True
        if replay:
            _replay(before, c, d, now, probe, run, rate, boundary, dims, n, step, after, centre,
                    scale, floor, tolerance, divergence, first_equilibrium, first_divergence,
                    open_equilibrium, open_divergence, window_norms)
            ftcs._unload(a, now, dims, n)
        if after == power:
            window_norms[run, _floor_log2(after) + 1] = norm
        if first_divergence[run] >= 0:
            open_divergence[run] = False
        if first_equilibrium[run] >= 0 or not np.isfinite(peak):
            open_equilibrium[run] = False
        elif first_divergence[run] >= 0 and norm > 2.0 * np.sqrt(size) * tolerance * scale:
            # a growing run only grows (log-convexity), and peak >= norm / sqrt(size)
            if _growing(norm, window_norms[run, _floor_log2(after)], after,
                        _window_start(after), floor):
                open_equilibrium[run] = False
        before[:] = now
        peak_before = peak
        step = after


@njit(cache=True, nogil=True, parallel=True)
def _watch_ftcs(flat, initial, r, boundary, dims, n, begin, end, window_starts, equilibrium,
                scale, floor, tolerance, divergence, first_equilibrium, first_divergence,
                open_equilibrium, open_divergence, window_norms):
    """Advance ``flat`` (``(batch, n**dims)``, at step ``begin``) to step ``end``, watching.

    Each run is stepped in its padded scratch by :func:`ftcs._take_steps`, as the
    plain kernel does, so the trajectory is the same bit for bit; it stops only to be
    measured while one of its passages is open.  Records first passages into
    ``first_*`` (-1 while unknown) and closes ``open_*`` once a passage is known or can
    no longer happen.  ``window_norms[:, 0]`` is the norm at step 0 and
    ``window_norms[:, j + 1]`` the norm at step ``2**j`` (where it was needed);
    ``initial`` is the batch at step 0.
    """
    batch = flat.shape[0]
    size = flat.shape[1]
    padded = ftcs.padded_size(dims, n)
    for chunk in prange((batch + ftcs.RUNS_PER_CHUNK - 1) // ftcs.RUNS_PER_CHUNK):
        a = np.zeros(padded)
        b = np.zeros(padded)
        c = np.zeros(padded)
        d = np.zeros(padded)
        before = np.empty(size)
        now = np.empty(size)
        probe = np.empty(size)
        for run in range(chunk * ftcs.RUNS_PER_CHUNK, min(batch, (chunk + 1) * ftcs.RUNS_PER_CHUNK)):
            rate = r[run]
            ftcs._load(flat[run], a, dims, n)
            if open_equilibrium[run] or open_divergence[run]:
                centre = equilibrium[run]
                before[:] = flat[run]
                peak, norm = _row_deviation(before, centre, probe)
                if begin == 0:
                    window_norms[run, 0] = norm
                    if peak / scale[run] <= tolerance:
                        first_equilibrium[run] = 0
                        open_equilibrium[run] = False
                if not np.isfinite(peak):
                    open_equilibrium[run] = False
                if 2.0 * dims * rate <= 1.0:
                    _watch_monotone(a, b, c, d, before, now, probe, initial[run], run, rate,
                                    boundary, dims, n, begin, end, window_starts, centre,
                                    scale[run], floor[run], tolerance, divergence,
                                    first_equilibrium, first_divergence, open_equilibrium,
                                    open_divergence, window_norms)
                else:
                    _watch_ringing(a, b, c, d, before, now, probe, run, rate, boundary, dims, n,
                                   begin, end, centre, scale[run], floor[run], tolerance,
                                   divergence, first_equilibrium, first_divergence,
                                   open_equilibrium, open_divergence, window_norms)
            else:
                ftcs._take_steps(a, b, rate, end - begin, boundary, dims, n)
            ftcs._unload(a, flat[run], dims, n)


class FtcsWatch:
    """First-passage state of an FTCS batch, carried from one checkpoint to the next.

    Parameters
    ----------
    grid, boundary
        As for :class:`pipeline.numerics.Batch`.
    r
        ``(batch,)`` ``D dt / dx**2``.
    initial
        ``(batch, *grid.shape)``, the batch at step 0 (copied).
    passage
        The thresholds, and where the results go (:meth:`finish`).
    checkpoints
        Every step count the batch will be advanced to, in order.
    """

    def __init__(self, grid: Grid, boundary: str, r: np.ndarray, initial: np.ndarray,
                 passage: FirstPassage, checkpoints: Sequence[int]) -> None:
        batch = r.shape[0]
        self.grid, self.boundary, self.r = grid, boundary, r
        self.passage = passage
        self.horizon = int(max(checkpoints, default=0))
        self.initial = np.array(initial, dtype=float).reshape(batch, -1)
        self.equilibrium, self.scale, self.floor = reference_scales(boundary, grid, initial)
        self.window_starts = np.array(
            sorted({growth_window_start(int(steps)) for steps in checkpoints}), dtype=np.int64
        )
        self.first_equilibrium = np.full(batch, -1, dtype=np.int64)
        self.first_divergence = np.full(batch, -1, dtype=np.int64)
        self.open_equilibrium = np.ones(batch, dtype=np.bool_)
        self.open_divergence = np.ones(batch, dtype=np.bool_)
        self.window_norms = np.full((batch, max(self.horizon, 1).bit_length() + 1), np.nan)

    def advance(self, state: np.ndarray, begin: int, end: int) -> None:
        """Advance ``state`` (the batch at step ``begin``) to step ``end``, in place."""
        if end <= begin or state.shape[0] == 0:
            return
        _watch_ftcs(
            state.reshape(state.shape[0], -1), self.initial, self.r,
            ftcs.BOUNDARY_CODES[self.boundary], self.grid.dims, self.grid.cells, begin, end,
            self.window_starts, self.equilibrium, self.scale, self.floor,
            float(self.passage.tolerance), float(self.passage.divergence),
            self.first_equilibrium, self.first_divergence, self.open_equilibrium,
            self.open_divergence, self.window_norms,
        )

    def finish(self) -> None:
        """Write the first passages (sentinel where none) into the :class:`FirstPassage`."""
        _store(self.passage, self.horizon, self.first_equilibrium, self.first_divergence)


def _store(
    passage: FirstPassage, horizon: int, equilibrium: np.ndarray, divergence: np.ndarray
) -> None:
    passage.horizon = int(horizon)
    sentinel = passage.not_reached
    passage.steps_to_equilibrium = np.where(equilibrium >= 0, equilibrium, sentinel).astype(np.int64)
    passage.steps_to_divergence = np.where(divergence >= 0, divergence, sentinel).astype(np.int64)


# -- implicit schemes: exact states at any step in the eigenbasis --------------------------


@njit(cache=True, nogil=True)
def _integer_powers(factor, steps, out):
    """``out[i, s, k] = factor[i, k] ** steps[i, s]`` by repeated squaring (same bits anywhere)."""
    for i in range(factor.shape[0]):
        for s in range(steps.shape[1]):
            for k in range(factor.shape[1]):
                result = 1.0
                base = factor[i, k]
                exponent = steps[i, s]
                while exponent > 0:
                    if exponent & 1:
                        result *= base
                    base *= base
                    exponent >>= 1
                out[i, s, k] = result


class SpectralRuns:
    """A batch of implicit-scheme runs in the eigenbasis: the exact state at any step.

    Parameters
    ----------
    scheme, boundary, grid
        As for :class:`pipeline.numerics.Batch` (``scheme`` implicit).
    initial
        ``(batch, *grid.shape)``.
    r
        ``(batch,)`` ``D dt / dx**2``.
    """

    def __init__(self, scheme: str, boundary: str, grid: Grid, initial: np.ndarray,
                 r: np.ndarray) -> None:
        self.scheme, self.boundary, self.grid = scheme, boundary, grid
        self.initial = initial
        self.r = r
        self.coefficients = spectral.forward(boundary, grid, initial)
        self.spectral_shape = self.coefficients.shape[1:]
        eigenvalues = spectral.spectral_eigenvalues(boundary, grid)
        factor = spectral.amplification_factor(
            scheme, r.reshape((-1,) + (1,) * grid.dims), eigenvalues
        )
        self.factor = np.ascontiguousarray(
            np.broadcast_to(factor, self.coefficients.shape).reshape(r.shape[0], -1)
        )

    def states(self, runs: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """States of ``runs`` after ``steps`` (``(len(runs), S)`` ints): ``(len(runs), S, *grid.shape)``."""
        steps = np.ascontiguousarray(steps, dtype=np.int64)
        powers = np.empty((runs.shape[0], steps.shape[1], self.factor.shape[1]))
        _integer_powers(self.factor[runs], steps, powers)
        powers = powers.reshape(runs.shape[0], steps.shape[1], *self.spectral_shape)
        coefficients = self.coefficients[runs][:, None] * powers
        return spectral.inverse(self.boundary, self.grid, coefficients)

    def state(self, steps: int) -> np.ndarray:
        """The whole batch after ``steps`` steps, ``(batch, *grid.shape)``."""
        batch = self.r.shape[0]
        if steps == 0:
            return np.array(self.initial, dtype=float)
        return self.states(np.arange(batch), np.full((batch, 1), steps))[:, 0]


def _mode_norms(boundary: str, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per coefficient of :func:`spectral.forward`: ``‖φ_k‖₁``, ``max |φ_k|`` and its weight.

    The weight counts the coefficient's complex conjugate where the real FFT stores
    only one of the pair (periodic), so ``Σ w_k |c_k|² = ‖u‖₂²``; the zero mode of
    Neumann and periodic walls (the equilibrium) has weight 0.
    """
    cells = grid.cells
    if boundary == "periodic":
        size = float(grid.size)
        shape = (cells,) * (grid.dims - 1) + (cells // 2 + 1,)
        l1 = np.full(shape, np.sqrt(size))
        peak = np.full(shape, 1.0 / np.sqrt(size))
        last = np.arange(cells // 2 + 1)
        paired = (last > 0) & (2 * last != cells)
        weight = np.broadcast_to(np.where(paired, 2.0, 1.0), shape).copy()
    else:
        identity = np.eye(cells)
        if boundary == "neumann":
            basis = spectral.inverse(boundary, Grid(1, cells, 1.0), identity)
        else:
            basis = spectral.inverse(boundary, Grid(1, cells, 1.0), identity)
        l1_1d, peak_1d = np.abs(basis).sum(axis=1), np.abs(basis).max(axis=1)
        l1, peak = l1_1d, peak_1d
        for _ in range(grid.dims - 1):
            l1, peak = np.multiply.outer(l1, l1_1d), np.multiply.outer(peak, peak_1d)
        weight = np.ones(l1.shape)
    if boundary != "dirichlet":
        weight[(0,) * grid.dims] = 0.0
    return l1, peak, weight


class _Bounds:
    """Bounds on ``distance(n)`` from the coefficients alone (no transform)."""

    def __init__(self, runs: SpectralRuns, scale: np.ndarray) -> None:
        l1, peak, weight = _mode_norms(runs.boundary, runs.grid)
        magnitude = np.abs(runs.coefficients).reshape(runs.r.shape[0], -1) / scale[:, None]
        live = weight.ravel() > 0
        self.decay = np.abs(runs.factor[:, live])
        self.single = magnitude[:, live] / l1.ravel()[live]
        self.energy = weight.ravel()[live] * magnitude[:, live] ** 2 / runs.grid.size
        self.upper_terms = weight.ravel()[live] * magnitude[:, live] * peak.ravel()[live]

    def lower(self, runs: np.ndarray, steps: np.ndarray) -> np.ndarray:
        decay = self.decay[runs] ** steps[:, None]
        single = (self.single[runs] * decay).max(axis=1, initial=0.0)
        energy = np.sqrt((self.energy[runs] * decay**2).sum(axis=1))
        return np.maximum(single, energy)

    def upper(self, runs: np.ndarray, steps: np.ndarray) -> np.ndarray:
        return (self.upper_terms[runs] * self.decay[runs] ** steps[:, None]).sum(axis=1)


def _first_step(
    predicate: Callable[[np.ndarray, np.ndarray], np.ndarray],
    runs: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
) -> np.ndarray:
    """Smallest ``n`` in ``(low, high]`` with ``predicate(runs, n)``, for a predicate that is
    false at ``low``, true at ``high`` and monotone in between (integer bisection, batched)."""
    low, high = low.copy(), high.copy()
    while True:
        pending = np.flatnonzero(high - low > 1)
        if pending.size == 0:
            return high
        middle = (low[pending] + high[pending]) // 2
        holds = predicate(runs[pending], middle)
        high[pending[holds]] = middle[holds]
        low[pending[~holds]] = middle[~holds]


#: steps evaluated together while scanning one run
_SCAN_CHUNK = 64
#: probe cells kept per run while scanning (the most recent peaks)
_MAX_PROBES = 16


class _SpectralSearch:
    """Exact ``distance(n)`` of implicit-scheme runs, and the searches for first passages."""

    def __init__(self, runs: SpectralRuns, passage: FirstPassage, horizon: int) -> None:
        self.runs = runs
        self.horizon = horizon
        self.tolerance = float(passage.tolerance)
        self.divergence = float(passage.divergence)
        self.equilibrium, self.scale, _ = reference_scales(runs.boundary, runs.grid, runs.initial)
        # round-off between a bound or probe (sums over modes) and a transform
        self.slack = 64 * _EPS * (np.abs(self.equilibrium) / self.scale + 1.0)

    def distances(self, which: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Exact ``distance`` of runs ``which`` at ``steps`` (``(k,)`` or ``(k, S)``): ``(k, S)``."""
        steps = np.asarray(steps).reshape(which.shape[0], -1)
        count = steps.shape[1]
        states = self.runs.states(which, steps).reshape(which.shape[0] * count, -1)
        peak, _ = deviations(states, np.repeat(self.equilibrium[which], count))
        return (peak / np.repeat(self.scale[which], count)).reshape(steps.shape)

    def first_passages(self) -> tuple[np.ndarray, np.ndarray]:
        runs, grid = self.runs, self.runs.grid
        batch = runs.r.shape[0]
        horizon, tolerance, divergence = self.horizon, self.tolerance, self.divergence
        first_equilibrium = np.full(batch, -1, dtype=np.int64)
        first_divergence = np.full(batch, -1, dtype=np.int64)
        everyone = np.arange(batch)
        start_peak, _ = deviations(runs.initial, self.equilibrium)
        first_equilibrium[start_peak / self.scale <= tolerance] = 0
        if runs.scheme == "backward-euler":
            monotone = np.ones(batch, dtype=np.bool_)
        else:
            monotone = runs.r <= 1.0 / grid.dims

        # -- maximum principle: distance never increases; bisect -----------------------
        todo = everyone[monotone & (first_equilibrium < 0)]
        if todo.size:
            todo = todo[self.distances(todo, np.full(todo.size, horizon))[:, 0] <= tolerance]
            first_equilibrium[todo] = _first_step(
                lambda which, steps: self.distances(which, steps)[:, 0] <= tolerance,
                todo, np.zeros(todo.size, dtype=np.int64), np.full(todo.size, horizon),
            )
        todo = everyone[monotone]
        if todo.size:  # distance(n) <= distance(1) for every n >= 1
            at_one = self.distances(todo, np.ones(todo.size, dtype=np.int64))[:, 0]
            first_divergence[todo[~(at_one <= divergence)]] = 1

        # -- Crank–Nicolson above r = 1/d can ring: search the steps in order ----------
        ringing = everyone[~monotone]
        if ringing.size:
            bounds = _Bounds(runs, self.scale)
            threshold = tolerance * (1 + _MARGIN) + self.slack
            todo = ringing[first_equilibrium[ringing] < 0]
            todo = todo[bounds.lower(todo, np.full(todo.size, horizon)) <= threshold[todo]]
            earliest = _first_step(  # before this step the lower bound excludes a passage
                lambda which, steps: bounds.lower(which, steps) <= threshold[which],
                todo, np.zeros(todo.size, dtype=np.int64), np.full(todo.size, horizon),
            )
            for run, begin in zip(todo, earliest, strict=True):
                first_equilibrium[run] = self._scan_equilibrium(int(run), int(begin), threshold[run])
            limit = divergence * (1 - _MARGIN) - self.slack
            possible = bounds.upper(ringing, np.ones(ringing.size, dtype=np.int64)) > limit[ringing]
            for run in ringing[possible]:
                first_divergence[run] = self._scan_divergence(int(run), bounds, limit[run])
        return first_equilibrium, first_divergence

    def _scan_equilibrium(self, run: int, begin: int, threshold: float) -> int:
        """First ``n`` in ``[max(begin, 1), horizon]`` with ``distance(n) <= tolerance``, or -1.

        A step gets an exact evaluation (one inverse transform) only when the exact
        deviation at the probe cells — the cells where earlier evaluations peaked,
        summed from the coefficients without a transform — does not already exceed the
        tolerance.  Near the passage the peak stays at one cell, so this costs a few
        transforms rather than one per step.
        """
        runs = self.runs
        which = np.array([run])
        weight = _mode_norms(runs.boundary, runs.grid)[2].ravel()
        live = weight > 0
        # the deviation at a cell x is Re Σ_k w_k c_k g_k^n conj(f_k(x)), f(x) the
        # transform of the unit field at x: kept as real matrix products
        coefficients = runs.coefficients[run].ravel()[live] * weight[live]
        parts = np.stack([coefficients.real, coefficients.imag])  # (2, modes)
        factor = runs.factor[run][live]
        probes = np.empty((2, 0, parts.shape[1]))  # (re/im, probe, modes)
        step = max(begin, 1)
        while step <= self.horizon:
            chunk = np.arange(step, min(step + _SCAN_CHUNK, self.horizon + 1))
            candidates = chunk
            if probes.shape[1]:
                powers = np.empty((chunk.size, factor.size))
                powers[0] = factor ** float(chunk[0])
                powers[1:] = factor
                np.cumprod(powers, axis=0, out=powers)  # g^n, step after step: a bound needs no more
                values = (powers * parts[0]) @ probes[0].T + (powers * parts[1]) @ probes[1].T
                lower = np.abs(values).max(axis=1) / self.scale[run]
                candidates = chunk[lower <= threshold]
            if candidates.size == 0:
                step = int(chunk[-1]) + 1
                continue
            candidate = int(candidates[0])
            state = runs.states(which, np.array([[candidate]]))[0, 0]
            peak, _ = deviations(state[None], self.equilibrium[which])
            if peak[0] / self.scale[run] <= self.tolerance:
                return candidate
            delta = np.zeros(runs.grid.shape)
            delta[np.unravel_index(np.argmax(np.abs(state - self.equilibrium[run])), runs.grid.shape)] = 1.0
            probe = spectral.forward(runs.boundary, runs.grid, delta).ravel()[live]
            probe = np.stack([probe.real, probe.imag])[:, None, :]
            probes = np.concatenate([probes, probe], axis=1)[:, -_MAX_PROBES:]
            step = candidate + 1
        return -1

    def _scan_divergence(self, run: int, bounds: _Bounds, limit: float) -> int:
        """First ``n`` in ``[1, horizon]`` with ``distance(n) > divergence``, or -1.

        Only steps whose upper bound exceeds the threshold can pass; the bound never
        increases, so they form a prefix, evaluated exactly in chunks.
        """
        which = np.array([run])
        step = 1
        while step <= self.horizon:
            if not bounds.upper(which, np.array([step]))[0] > limit:
                return -1
            chunk = np.arange(step, min(step + _SCAN_CHUNK, self.horizon + 1))
            values = self.distances(which, chunk[None])[0]
            passed = np.flatnonzero(~(values <= self.divergence))
            if passed.size:
                return int(chunk[passed[0]])
            step = int(chunk[-1]) + 1
        return -1


def spectral_first_passage(runs: SpectralRuns, passage: FirstPassage, horizon: int) -> None:
    """Fill ``passage`` for implicit-scheme ``runs`` integrated to ``horizon`` steps."""
    first_equilibrium, first_divergence = _SpectralSearch(runs, passage, horizon).first_passages()
    _store(passage, horizon, first_equilibrium, first_divergence)


def first_passage(batch: Batch, horizon: int, *, tolerance: float, divergence: float) -> FirstPassage:
    """First steps to equilibrium and to divergence of a batch, within ``horizon`` steps.

    Integrates once to ``horizon`` (:func:`pipeline.numerics.integrate`); the module
    docstring has the definitions.

    Parameters
    ----------
    batch
        The runs (:class:`~pipeline.numerics.Batch`), of a grid scheme.
    horizon
        The last step looked at, >= 1.
    tolerance, divergence
        As for :class:`FirstPassage`.

    Returns
    -------
    FirstPassage
        With ``steps_to_equilibrium`` and ``steps_to_divergence`` (``(batch,)`` int64,
        ``horizon + 1`` where not reached).
    """
    from .integrate import integrate  # integrate imports this module

    result = FirstPassage(tolerance=tolerance, divergence=divergence)
    for _ in integrate(batch, [horizon], first_passage=result):
        pass
    return result
