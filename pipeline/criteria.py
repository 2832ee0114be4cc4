"""The stability classification thresholds, shared by the diagnostics that apply them and
the sweep file that sets them (``criteria:``); this module imports nothing."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Criteria"]


@dataclass(frozen=True)
class Criteria:
    """Stability classification thresholds.

    A run is at equilibrium when its distance to the equilibrium is at most
    ``tolerance`` (relative to the initial range), and divergent when a deviation
    exceeds ``divergence`` times the initial range (see :mod:`pipeline.diagnostics`).

    Examples
    --------
    >>> Criteria()
    Criteria(tolerance=0.001, divergence=1000.0)
    """

    tolerance: float = 1e-3
    divergence: float = 1e3
