"""The results store: one zarr (v3) store per sweep.

What ``xarray.open_zarr(path)`` shows, without importing diffsweep: the dimensions,
coordinates and variables of the plan's :class:`~pipeline.layout.ResultLayout` (decided
there, only written here), and as attributes the sweep definition text and hash, the
fixed model values, the criteria, software versions, host, start/end times and timings.

The template (metadata and coordinates) is written once by the client; each task then
writes its own block into chunk-aligned regions and *afterwards* marks the block done
in the child group ``_diffsweep`` (invisible to ``open_zarr``). A block that is not
marked is recomputed when the run is resumed.
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
from typing import Any, Literal

import numpy as np
import xarray as xr
import zarr

from pipeline import __version__
from pipeline.diagnostics import NOT_COMPUTED, STATUS_NAMES
from pipeline.errors import StoreError, StoreNotFoundError, SweepError
from pipeline.planning import Block, Plan
from pipeline.sweep import Sweep, parse_sweep
from pipeline.sweep.compare import changes

BOOKKEEPING = "_diffsweep"
COMPLETED = "completed"
FORMAT_VERSION = 1


@contextmanager
def _consolidated_metadata_accepted() -> Iterator[None]:
    """zarr warns that consolidated metadata is an extension of the v3 spec; we know."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def _open_group(url: str, mode: Literal["r", "r+"], storage_options: Mapping[str, Any] | None) -> zarr.Group:
    return zarr.open_group(
        store=url, mode=mode, storage_options=dict(storage_options) if storage_options else None,
        use_consolidated=False,
    )


def _array(group: zarr.Group, path: str) -> zarr.Array:
    """The array at ``path`` in ``group`` (StoreError if it is a group or missing)."""
    array = group.get(path)
    if not isinstance(array, zarr.Array):
        raise StoreError(f"{group.store_path} has no array {path!r}; it is not a complete diffsweep store")
    return array


def _completed(url: str, storage_options: Mapping[str, Any] | None) -> np.ndarray:
    """The bookkeeping array: 1 where a block is stored."""
    return np.asarray(_array(_open_group(url, "r", storage_options), f"{BOOKKEEPING}/{COMPLETED}")[...])


def exists(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True when something (a zarr group or anything else) is at ``url``."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return bool(fs.exists(path))


def read_attributes(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Root attributes of a diffsweep store.

    Raises
    ------
    StoreNotFoundError
        Nothing is at ``url``.
    StoreError
        Something is there but it is not a diffsweep results store.
    """
    if not exists(url, storage_options):
        raise StoreNotFoundError(f"no results store at {url!r}")
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
    done = _completed(url, storage_options)
    return int(np.count_nonzero(done)), int(done.size)


def completed_blocks(url: str, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """Boolean array over the block grid: True where the block is stored."""
    return _completed(url, storage_options).astype(bool)


def check_same_definition(url: str, sweep: Sweep, storage_options: Mapping[str, Any] | None = None) -> None:
    """Refuse (StoreError) a store made from another sweep definition, naming what differs.

    The message lists each differing key (``model.cells: 128 -> 64``) between the
    definition recorded in the store and ``sweep``; it falls back to the hashes when the
    recorded definition cannot be read back.
    """
    attrs = read_attributes(url, storage_options)
    if attrs["sweep_hash"] == sweep.sha256:
        return
    what = f"{url!r} holds sweep {attrs.get('sweep_name')!r} (hash {attrs['sweep_hash'][:12]}), not this definition"
    try:
        stored = parse_sweep(attrs["sweep_definition"], source=url, memory_limit=2**62)
        differences = changes(stored, sweep)
    except (KeyError, SweepError):
        differences = []
    if differences:
        what = f"{url!r} holds another definition of sweep {attrs.get('sweep_name')!r}: " + "; ".join(differences)
    else:
        what += f" of {sweep.name!r} (hash {sweep.sha256[:12]})"
    raise StoreError(f"{what}; use another store or overwrite=True")


def check_compatible(url: str, plan: Plan, storage_options: Mapping[str, Any] | None = None) -> None:
    """Refuse (StoreError) a store made from another sweep definition or block layout."""
    check_same_definition(url, plan.sweep, storage_options)
    attrs = read_attributes(url, storage_options)
    stored_chunks = json.loads(attrs.get("diffsweep_chunks", "null"))
    if stored_chunks != list(plan.chunks):
        raise StoreError(
            f"{url!r} was written with blocks {stored_chunks}, this run would use {list(plan.chunks)}; "
            "resume with the same chunks"
        )


def template(plan: Plan) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """The lazy (dask-backed) Dataset of :attr:`Plan.layout <pipeline.planning.Plan.layout>`
    whose metadata is written before any block runs, and its encoding."""
    import dask.array as da

    layout = plan.layout
    data_vars = {
        v.name: (v.dims, da.full(v.shape, v.fill_value, dtype=v.dtype, chunks=v.chunks), dict(v.attrs))
        for v in layout.variables
    }
    encoding = {v.name: v.encoding for v in layout.variables}
    return xr.Dataset(data_vars, coords=layout.coordinates()), encoding


def provenance(plan: Plan) -> dict[str, Any]:
    """Attributes that say what made the store."""
    import dask
    import distributed
    import numba
    import scipy

    sweep = plan.sweep
    fixed = {key: value for key, value in sweep.model_settings().items() if not sweep.is_swept(key)}
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
    """Write the template (metadata, coordinates, empty bookkeeping). Computes nothing.

    Raises
    ------
    StoreError
        The location cannot be written: an object store's bucket that does not exist
        (object stores, unlike folders, are not created on the first write) or no
        permission. Nothing was written then.
    """
    dataset, encoding = template(plan)
    dataset.attrs.update(provenance(plan))
    with _consolidated_metadata_accepted():
        try:
            dataset.to_zarr(
                url,
                mode="w" if overwrite else "w-",
                compute=False,
                encoding=encoding,
                zarr_format=3,
                consolidated=True,
                storage_options=dict(storage_options) if storage_options else None,
            )
        except (FileNotFoundError, PermissionError) as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise StoreError(f"cannot create the store {url!r}: {reason}") from None
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


#: root attribute holding the run history (a JSON list, one entry per computing run)
RUN_HISTORY = "run_history"

#: what :func:`status_counts` calls results not computed yet (status -1)
NOT_COMPUTED_NAME = "not computed"


def run_history(url: str, storage_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The store's runs, oldest first: one dict per ``run`` that computed blocks into it."""
    history = read_attributes(url, storage_options).get(RUN_HISTORY, "[]")
    entries = json.loads(history) if isinstance(history, str) else history
    return list(entries)


def append_run_history(
    url: str, entry: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Add ``entry`` to the store's run history (kept as JSON text, as netCDF allows); the new history."""
    history = [*run_history(url, storage_options), dict(entry)]
    update_attributes(url, {RUN_HISTORY: json.dumps(history)}, storage_options)
    return history


def status_counts(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Results of the whole store by status, read a row of chunks at a time.

    Keys are :data:`~pipeline.diagnostics.STATUS_NAMES` and, when some results are not
    computed yet (status -1), :data:`NOT_COMPUTED_NAME`.
    """
    status = _array(_open_group(url, "r", storage_options), "status")
    counts = np.zeros(len(STATUS_NAMES) + 1, dtype=np.int64)
    step = status.chunks[0]
    for start in range(0, status.shape[0], step):
        rows = np.asarray(status[start : start + step]).ravel().astype(np.int64)
        counts += np.bincount(rows - NOT_COMPUTED, minlength=len(counts))[: len(counts)]
    named = {name: int(n) for name, n in zip(STATUS_NAMES, counts[1:], strict=True)}
    if counts[0]:
        named[NOT_COMPUTED_NAME] = int(counts[0])
    return named


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
        for name, variable in dataset.data_vars.items():
            array = _array(group, str(name))
            region = block.region(tuple(map(str, variable.dims)))
            check_aligned(str(name), region, array.chunks, array.shape)
            array[region] = variable.values
        _array(group, f"{BOOKKEEPING}/{COMPLETED}")[block.index] = 1


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


__all__ = [
    "BlockWriter",
    "append_run_history",
    "check_compatible",
    "check_same_definition",
    "completion",
    "create",
    "exists",
    "read_attributes",
    "run_history",
    "status_counts",
    "template",
    "update_attributes",
]
