"""diffsweep: parameter sweeps of numerical diffusion, from a YAML file to stability maps.

The package is layered (each layer imports only the ones above it in this list):
``numerics`` → ``diagnostics`` → ``sweep`` → ``planning``/``layout``/``compute``/
``executors`` → ``store``/``runner`` → ``maps`` → ``cluster`` → ``cli``.  Importing :mod:`pipeline` itself is cheap and pulls in none
of dask, xarray or zarr.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("diffsweep")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
