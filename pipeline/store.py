"""The results store: one zarr (v3) store per sweep.

Layout (what ``xarray.open_zarr(path)`` shows, without importing diffsweep):

* dimensions: the sweep axes (``steps`` last), plus ``x``/``y``/``z`` for stored fields;
* coordinates: every axis, and the derived ``cfl`` (or ``step_size`` when the sweep is
  given in CFL numbers) and ``time = steps · step_size``;
* variables: ``distance``, ``mass_error``, ``overshoot``, ``growth``, ``error``,
  ``status`` (int8 with CF ``flag_values``/``flag_meanings``; ``-1`` = not computed yet),
  optionally ``field``;
* attributes: the sweep definition text and hash, the fixed model values, the criteria,
  software versions, host, start/end times and timings.

The template (metadata and coordinates) is written once by the client; each task then
writes its own block into chunk-aligned regions and *afterwards* marks the block done
in the child group ``_diffsweep`` (invisible to ``open_zarr``). A block that is not
marked is recomputed by ``diffsweep run --resume``.
"""

from __future__ import annotations

import json
import platform
import socket
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import xarray as xr
import zarr

from pipeline import __version__
from pipeline.diagnostics import ATTRIBUTES, MEASURES, NOT_COMPUTED
from pipeline.errors import StoreError
from pipeline.graph import SPATIAL_DIMS, Block, Plan, model_values
from pipeline.numerics import Grid

BOOKKEEPING = "_diffsweep"
COMPLETED = "completed"
FORMAT_VERSION = 1

COORDINATE_ATTRIBUTES: dict[str, dict[str, str]] = {
    "coefficient": {"long_name": "diffusion coefficient D", "units": "length^2 / time"},
    "step_size": {"long_name": "time step", "units": "time"},
    "cfl": {"long_name": "CFL number r = D dt / dx^2", "units": "1"},
    "steps": {"long_name": "number of time steps", "units": "1"},
    "time": {"long_name": "simulated time = steps * step_size", "units": "time"},
    "scheme": {"long_name": "time-stepping scheme", "units": "1"},
    "dims": {"long_name": "number of spatial dimensions", "units": "1"},
    "cells": {"long_name": "cells per dimension", "units": "1"},
    "length": {"long_name": "edge length of the domain", "units": "length"},
    "boundary": {"long_name": "boundary condition", "units": "1"},
    "initial": {"long_name": "initial condition", "units": "1"},
    "seed": {"long_name": "random seed of the initial condition", "units": "1"},
    "x": {"long_name": "cell centre, first dimension", "units": "length"},
    "y": {"long_name": "cell centre, second dimension", "units": "length"},
    "z": {"long_name": "cell centre, third dimension", "units": "length"},
}


@contextmanager
def _consolidated_metadata_accepted() -> Iterator[None]:
    """zarr warns that consolidated metadata is an extension of the v3 spec; we know."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def _open_group(url: str, mode: str, storage_options: Mapping[str, Any] | None) -> zarr.Group:
    return zarr.open_group(
        store=url, mode=mode, storage_options=dict(storage_options) if storage_options else None,
        use_consolidated=False,
    )


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def exists(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True when something (a zarr group or anything else) is at ``url``."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return bool(fs.exists(path))


def read_attributes(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Root attributes of a diffsweep store; :class:`StoreError` if it is not one."""
    if not exists(url, storage_options):
        raise StoreError(f"no results store at {url!r}")
    try:
        group = _open_group(url, "r", storage_options)
    except Exception as error:  # not zarr at all
        raise StoreError(f"{url!r} is not a zarr store ({type(error).__name__}: {error})") from None
    attrs = dict(group.attrs)
    if "sweep_hash" not in attrs or BOOKKEEPING not in group:
        raise StoreError(f"{url!r} is a zarr store but not a diffsweep results store")
    return attrs


def completion(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """(blocks completed, blocks in total)."""
    read_attributes(url, storage_options)
    done = _open_group(url, "r", storage_options)[f"{BOOKKEEPING}/{COMPLETED}"][...]
    return int(np.count_nonzero(done)), int(done.size)


def completed_blocks(url: str, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """Boolean array over the block grid: True where the block is stored."""
    return _open_group(url, "r", storage_options)[f"{BOOKKEEPING}/{COMPLETED}"][...].astype(bool)


def check_compatible(url: str, plan: Plan, storage_options: Mapping[str, Any] | None = None) -> None:
    """Refuse (StoreError) a store made from another sweep definition or block layout."""
    attrs = read_attributes(url, storage_options)
    if attrs["sweep_hash"] != plan.sweep.sha256:
        raise StoreError(
            f"{url!r} holds sweep {attrs.get('sweep_name')!r} (hash {attrs['sweep_hash'][:12]}), "
            f"not this definition of {plan.sweep.name!r} (hash {plan.sweep.sha256[:12]}); "
            "use another store or --overwrite"
        )
    stored_chunks = json.loads(attrs.get("diffsweep_chunks", "null"))
    if stored_chunks != list(plan.chunks):
        raise StoreError(
            f"{url!r} was written with blocks {stored_chunks}, this run would use {list(plan.chunks)}; "
            "resume with the same chunks"
        )


def coordinates(plan: Plan) -> dict[str, xr.DataArray]:
    """Axis coordinates plus the derived ``cfl``/``step_size`` and ``time``."""
    sweep = plan.sweep
    coords: dict[str, xr.DataArray] = {}
    for axis in sweep.axes:
        values = np.array(axis.values, dtype=object) if isinstance(axis.values[0], str) else np.array(axis.values)
        coords[axis.name] = xr.DataArray(values, dims=(axis.name,), attrs=COORDINATE_ATTRIBUTES[axis.name])

    def model_coordinate(key: str) -> Any:
        return coords[key] if key in coords else getattr(sweep.model, key)

    dx = model_coordinate("length") / model_coordinate("cells")
    coefficient = coords["coefficient"]
    if sweep.step_axis == "cfl":
        step_size = coords["cfl"] * dx**2 / coefficient
        coords["step_size"] = step_size.assign_attrs(COORDINATE_ATTRIBUTES["step_size"])
    else:
        cfl = coefficient * coords["step_size"] * (1 / dx**2)
        coords["cfl"] = cfl.assign_attrs(COORDINATE_ATTRIBUTES["cfl"])
    time = coords["steps"] * coords["step_size"]
    coords["time"] = time.assign_attrs(COORDINATE_ATTRIBUTES["time"])
    for name in ("cfl", "step_size", "time"):
        if name not in plan.axis_names:
            coords[name] = coords[name].transpose(*(d for d in plan.axis_names if d in coords[name].dims))
    return coords


def template(plan: Plan) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """The lazy (dask-backed) Dataset whose metadata is written before any block runs."""
    import dask.array as da

    sweep = plan.sweep
    dims = plan.axis_names
    chunks = plan.chunks
    data_vars: dict[str, Any] = {}
    encoding: dict[str, dict[str, Any]] = {}
    for name in MEASURES:
        data_vars[name] = (dims, da.full(plan.shape, np.nan, chunks=chunks), ATTRIBUTES[name])
        encoding[name] = {"chunks": chunks}
    data_vars["status"] = (
        dims,
        da.full(plan.shape, NOT_COMPUTED, dtype=np.int8, chunks=chunks),
        {**ATTRIBUTES["status"], "flag_values": [0, 1, 2, 3], "missing_value_meaning": "-1 not computed"},
    )
    encoding["status"] = {"chunks": chunks, "fill_value": NOT_COMPUTED}
    coords = coordinates(plan)
    if sweep.output.fields != "none":
        model = model_values(sweep)
        grid = Grid(dims=model["dims"], cells=model["cells"], length=model["length"])
        spatial = SPATIAL_DIMS[: grid.dims]
        keep_steps = sweep.output.fields == "checkpoints"
        field_dims = (*(dims if keep_steps else dims[:-1]), *spatial)
        field_shape = (*(plan.shape if keep_steps else plan.shape[:-1]), *grid.shape)
        field_chunks = (*(chunks if keep_steps else chunks[:-1]), *grid.shape)
        data_vars["field"] = (
            field_dims,
            da.full(field_shape, np.nan, chunks=field_chunks),
            {"long_name": "concentration", "units": "1"},
        )
        encoding["field"] = {"chunks": field_chunks}
        for name in spatial:
            coords[name] = xr.DataArray(grid.centres, dims=(name,), attrs=COORDINATE_ATTRIBUTES[name])
    return xr.Dataset(data_vars, coords=coords), encoding


def provenance(plan: Plan) -> dict[str, Any]:
    """Attributes that say what made the store."""
    import dask
    import distributed
    import numba
    import scipy

    sweep = plan.sweep
    fixed = {key: value for key, value in model_values(sweep).items() if key not in plan.axis_names}
    return {
        "title": f"diffsweep results: {sweep.name}",
        "sweep_name": sweep.name,
        "sweep_description": sweep.description or "",
        "sweep_hash": sweep.sha256,
        "sweep_definition": sweep.text,
        **fixed,
        "tolerance": sweep.criteria.tolerance,
        "divergence": sweep.criteria.divergence,
        "diffsweep_version": __version__,
        "diffsweep_format": FORMAT_VERSION,
        "diffsweep_chunks": json.dumps(list(plan.chunks)),
        "diffsweep_block_grid": json.dumps(list(plan.block_grid)),
        "versions": json.dumps(
            {
                "diffsweep": __version__,
                "python": platform.python_version(),
                "numpy": np.__version__,
                "scipy": scipy.__version__,
                "numba": numba.__version__,
                "dask": dask.__version__,
                "distributed": distributed.__version__,
                "xarray": xr.__version__,
                "zarr": zarr.__version__,
            }
        ),
        "host": socket.gethostname(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "Conventions": "CF-1.10",
    }


def create(
    url: str, plan: Plan, *, overwrite: bool = False, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write the template (metadata, coordinates, empty bookkeeping). Computes nothing."""
    dataset, encoding = template(plan)
    dataset.attrs.update(provenance(plan))
    with _consolidated_metadata_accepted():
        dataset.to_zarr(
            url,
            mode="w" if overwrite else "w-",
            compute=False,
            encoding=encoding,
            zarr_format=3,
            consolidated=True,
            storage_options=dict(storage_options) if storage_options else None,
        )
        group = _open_group(url, "r+", storage_options)
        bookkeeping = group.create_group(BOOKKEEPING)
        bookkeeping.attrs["description"] = "diffsweep bookkeeping: 1 where a block is stored"
        bookkeeping.create_array(
            COMPLETED, shape=plan.block_grid, chunks=(1,) * len(plan.block_grid), dtype="int8", fill_value=0
        )
        zarr.consolidate_metadata(group.store)


def update_attributes(url: str, attrs: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> None:
    """Merge ``attrs`` into the root attributes and refresh the consolidated metadata."""
    with _consolidated_metadata_accepted():
        group = _open_group(url, "r+", storage_options)
        group.attrs.update(dict(attrs))
        zarr.consolidate_metadata(group.store)


@lru_cache(maxsize=8)
def _writer_group(url: str, options: str) -> zarr.Group:
    return _open_group(url, "r+", json.loads(options) or None)


@dataclass(frozen=True)
class BlockWriter:
    """The sink of a run: writes a block's region and then marks the block complete.

    Picklable; each worker process opens the store once and keeps it.
    """

    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, block: Block, dataset: xr.Dataset) -> None:
        group = _writer_group(self.url, json.dumps(dict(self.storage_options), sort_keys=True))
        axes = dict(zip(dataset["status"].dims, block.slices, strict=True))
        for name, variable in dataset.data_vars.items():
            array = group[name]
            region = tuple(axes.get(dim, slice(None)) for dim in variable.dims)
            check_aligned(name, region, array.chunks, array.shape)
            array[region] = variable.values
        group[f"{BOOKKEEPING}/{COMPLETED}"][block.index] = 1


def check_aligned(
    name: str, region: tuple[slice, ...], chunks: tuple[int, ...], shape: tuple[int, ...]
) -> None:
    """Refuse a region that would share a zarr chunk with another task's region."""
    for s, chunk, size in zip(region, chunks, shape, strict=True):
        start = s.start or 0
        stop = size if s.stop is None else s.stop
        if start % chunk or (stop % chunk and stop != size):
            raise StoreError(
                f"region {[(r.start, r.stop) for r in region]} of {name!r} is not aligned with its zarr chunks {chunks}"
            )


def open_results(url: str, storage_options: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Open a results store lazily (plain ``xarray.open_zarr`` after checking it is ours)."""
    read_attributes(url, storage_options)
    return xr.open_zarr(url, storage_options=dict(storage_options) if storage_options else None)


__all__ = [
    "BlockWriter",
    "check_compatible",
    "completion",
    "create",
    "exists",
    "open_results",
    "read_attributes",
    "update_attributes",
]
