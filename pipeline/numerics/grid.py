"""The cell-centred grid shared by every run of a block."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A square/cubic cell-centred grid with the same number of cells along every axis.

    Parameters
    ----------
    dims
        Number of spatial dimensions (1, 2 or 3).
    cells
        Cells per dimension.
    length
        Edge length of the domain; the cell width is ``length / cells``.
    """

    dims: int
    cells: int
    length: float

    @property
    def dx(self) -> float:
        """Cell width, ``length / cells``."""
        return self.length / self.cells

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one field, ``(cells,) * dims``."""
        return (self.cells,) * self.dims

    @property
    def size(self) -> int:
        """Number of cells in one field, ``cells ** dims``."""
        return self.cells**self.dims

    @property
    def centres(self) -> np.ndarray:
        """1-D coordinates of the cell centres, ``(i + 0.5) * dx``."""
        return (np.arange(self.cells) + 0.5) * self.dx
