"""The warnings zarr and xarray give about what diffsweep does on purpose, silenced in one place.

Each is expected, so saying it to the user would only alarm them:

- zarr warns that consolidated metadata is an extension of the v3 spec; diffsweep
  (through xarray) writes it on purpose, so that a store opens with one read;
- zarr warns about every file in a group that is not zarr's while it walks the hierarchy
  (consolidating): the store's lock is one, and a file a kill left half-written
  (``*.partial``) another; zarr skips them;
- xarray warns when a store has no consolidated metadata (a store still being written,
  a ``refine`` group) and opens it by reading each array's metadata instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["expected_zarr_warnings_silenced"]


@contextmanager
def expected_zarr_warnings_silenced() -> Iterator[None]:
    """Silence, inside the ``with`` block, the zarr and xarray warnings listed above (only those)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part", category=UserWarning)
        warnings.filterwarnings("ignore", message="Object at .* is not recognized as a component of a Zarr hierarchy")
        warnings.filterwarnings("ignore", message=".*consolidated metadata.*", category=RuntimeWarning)
        yield
