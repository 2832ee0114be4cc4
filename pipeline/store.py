"""The results store: one zarr (v3) store per sweep.

What ``xarray.open_zarr(path)`` shows, without importing diffsweep: the dimensions,
coordinates and variables of the plan's :class:`~pipeline.layout.ResultLayout` (decided
there, only written here), and as attributes the sweep definition text and hash, the
fixed model values, the criteria, software versions, host, start/end times and timings.

The template (metadata and coordinates) is written once by the client; each task then
writes its own block into chunk-aligned regions and *afterwards* marks the block done
in the child group ``_diffsweep`` (invisible to ``open_zarr``). A block that is not
marked is recomputed when the run is resumed.

A store is recognisable as diffsweep's from its very first write on, so an interrupted
creation can always be repaired: the root group and its attributes (with
``diffsweep_state: creating``) are written first, then the bookkeeping, then the
variables; only then does the state become ``ready``. Replacing a store (overwrite)
first rewrites its root attributes to the new sweep's (state ``creating``) and then
deletes everything else in it, so at every moment the root says whose store it is.
Writers hold the store's lock (:mod:`pipeline.store_lock`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import xarray as xr
import zarr

from pipeline import __version__
from pipeline.compute import BlockFailure
from pipeline.diagnostics import FAILED as FAILED_STATUS
from pipeline.diagnostics import NOT_COMPUTED, STATUS_NAMES
from pipeline.errors import (
    REPAIR_HINT,
    UNFINISHED_HINT,
    StoreDamagedError,
    StoreError,
    StoreExistsError,
    StoreNotFoundError,
    SweepError,
)
from pipeline.planning import Block, Plan
from pipeline.store_lock import LOCK_NAME, PARTIAL_SUFFIX, is_local
from pipeline.sweep import Sweep, parse_sweep
from pipeline.sweep.compare import changes
from pipeline.zarr_warnings import expected_zarr_warnings_silenced

BOOKKEEPING = "_diffsweep"
COMPLETED = "completed"
#: format 2: the root is written first with a state attribute; every chunk of a stored
#: block is written, even one that holds only fill values
FORMAT_VERSION = 2
#: root attribute saying whether the template is complete
STATE = "diffsweep_state"
READY = "ready"
CREATING = "creating"


def location(url: str) -> str:
    """``url`` as zarr and fsspec should be given it: a ``file://`` URL becomes its path.

    zarr opens ``file://`` URLs through fsspec without creating directories, so a new
    store there could not be written; the plain path behaves like any local path.

    Raises
    ------
    StoreError
        A ``file://`` URL with a host or a relative path.
    """
    if not url.startswith("file:"):
        return url
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise StoreError(f"{url!r}: a file URL needs an absolute path, as in file:///data/x.zarr")
    return unquote(parts.path)


def _open_group(url: str, mode: Literal["r", "r+"], storage_options: Mapping[str, Any] | None) -> zarr.Group:
    return zarr.open_group(
        store=location(url), mode=mode, storage_options=dict(storage_options) if storage_options else None,
        use_consolidated=False,
    )


def _filesystem(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the store's root path in it."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(location(url), **(storage_options or {}))
    # fsspec shares one filesystem per set of options, with its listings cached: zarr
    # writes through another instance, so a cached listing of the store may be stale
    fs.invalidate_cache(root.rstrip("/"))
    return fs, root.rstrip("/")


@dataclass(frozen=True)
class Found:
    """What is at a store's location.

    Attributes
    ----------
    kind
        ``"absent"`` (nothing, an empty directory, or only a lock and partial writes
        of a store that was never written), ``"foreign"`` (something that is not a
        diffsweep store), ``"unfinished"`` (a diffsweep store whose template was
        interrupted; nothing in it was computed) or ``"ready"``.
    reason
        Why it is foreign.
    attrs
        The root attributes of a diffsweep store (unfinished or ready).
    """

    kind: Literal["absent", "foreign", "unfinished", "ready"]
    reason: str = ""
    attrs: Mapping[str, Any] = field(default_factory=dict)


def _is_ours(attrs: Mapping[str, Any]) -> bool:
    return "sweep_hash" in attrs and "diffsweep_format" in attrs


def inspect(url: str, storage_options: Mapping[str, Any] | None = None) -> Found:
    """Look at ``url`` without opening it through zarr (consolidated metadata cannot hide anything)."""
    fs, root = _filesystem(url, storage_options)
    if not fs.exists(root):
        return Found("absent")
    if not fs.isdir(root):
        return Found("foreign", "it is a file, not a zarr store")
    try:
        raw = fs.cat_file(f"{root}/zarr.json")
    except FileNotFoundError:
        others = [
            name for name in (p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
            if name != LOCK_NAME and not name.endswith(PARTIAL_SUFFIX)
        ]
        if not others:
            return Found("absent")
        return Found("foreign", "it is not a zarr store")
    try:
        metadata = json.loads(raw)
        attrs = dict(metadata.get("attributes", {})) if metadata.get("node_type") == "group" else {}
    except (ValueError, AttributeError):
        return Found("foreign", "its zarr.json cannot be read")
    if not _is_ours(attrs):
        return Found("foreign", "it is a zarr store but not a diffsweep results store")
    ready = attrs.get(STATE, READY) == READY and fs.exists(f"{root}/{BOOKKEEPING}/zarr.json")
    return Found("ready" if ready else "unfinished", attrs=attrs)


def _array(group: zarr.Group, path: str) -> zarr.Array:
    """The array at ``path`` in ``group`` (StoreError if it is a group or missing)."""
    array = group.get(path)
    if not isinstance(array, zarr.Array):
        raise StoreError(f"{group.store_path} has no array {path!r}; it is not a complete diffsweep store")
    return array


def block_grid(attrs: Mapping[str, Any]) -> tuple[int, ...]:
    """The block grid a store was created with (from its root attributes)."""
    return tuple(json.loads(attrs.get("diffsweep_block_grid", "[]")))


def _completed(url: str, storage_options: Mapping[str, Any] | None) -> np.ndarray:
    """The bookkeeping array: 1 where a block is stored.

    Raises
    ------
    StoreDamagedError
        The record is missing, unreadable or not the shape of the store's block grid.
    """
    attrs = read_attributes(url, storage_options)
    expected = block_grid(attrs)
    try:
        record = _open_group(url, "r", storage_options).get(f"{BOOKKEEPING}/{COMPLETED}")
        values = np.asarray(record[...]) if isinstance(record, zarr.Array) else None
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise StoreDamagedError(f"{url!r}: the completion record cannot be read ({reason}); {REPAIR_HINT}") from None
    if values is None:
        raise StoreDamagedError(f"{url!r}: the completion record {BOOKKEEPING}/{COMPLETED} is missing; {REPAIR_HINT}")
    if expected and values.shape != expected:
        raise StoreDamagedError(
            f"{url!r}: the completion record has shape {values.shape}, but the store has "
            f"{'x'.join(map(str, expected))} blocks; {REPAIR_HINT}"
        )
    return values


def exists(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True when something is at ``url`` (a diffsweep store, unfinished or not, or anything else)."""
    return inspect(url, storage_options).kind != "absent"


def read_attributes(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Root attributes of a diffsweep store whose template is complete.

    Raises
    ------
    StoreNotFoundError
        Nothing is at ``url``.
    StoreError
        Something is there but it is not a diffsweep results store, or its creation
        was interrupted (:data:`UNFINISHED_HINT`).
    """
    found = inspect(url, storage_options)
    if found.kind == "absent":
        raise StoreNotFoundError(f"no results store at {url!r}")
    if found.kind == "foreign":
        raise StoreError(f"{url!r}: {found.reason}")
    if found.kind == "unfinished":
        raise StoreError(f"{url!r} {UNFINISHED_HINT}")
    return dict(found.attrs)


def completion(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """(blocks completed, blocks in total)."""
    done = _completed(url, storage_options)
    return int(np.count_nonzero(done == DONE)), int(done.size)


def completed_blocks(url: str, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """Boolean array over the block grid: True where the block is stored."""
    return _completed(url, storage_options) == DONE


#: values of the completion record: not computed yet, stored, raised on every attempt
NOT_DONE, DONE, FAILED = 0, 1, 2
#: attribute of the bookkeeping group: the failed blocks' errors (JSON, by block index)
FAILURES = "failures"


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
    from importlib.metadata import version  # not importing distributed (0.35 s) for a version

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
                "scipy": version("scipy"),
                "numba": version("numba"),
                "dask": version("dask"),
                "distributed": version("distributed"),
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

    The caller holds the store's lock (:func:`pipeline.store_lock.holding_lock`). The
    root and its attributes are written first, marked ``diffsweep_state: creating``
    until the last write, so an interrupted creation leaves a store that
    :func:`inspect` recognises as an unfinished diffsweep store.

    Parameters
    ----------
    overwrite
        Replace the diffsweep store (ready or unfinished) at ``url``: its root
        attributes are rewritten to this plan's first, then everything else in it is
        deleted (never following a symbolic link), then the template is written.

    Raises
    ------
    StoreError
        The location cannot be written: an object store's bucket that does not exist
        (object stores, unlike folders, are not created on the first write) or no
        permission. Nothing was written then.
    StoreExistsError
        Something is at ``url`` and ``overwrite`` is not set.
    """
    attrs = {**provenance(plan), STATE: CREATING}
    options = dict(storage_options) if storage_options else None
    found = inspect(url, storage_options)
    with expected_zarr_warnings_silenced():
        if found.kind == "absent":
            _delete_contents(url, storage_options, keep={LOCK_NAME})  # partial writes of a killed run, if any
            try:
                group = zarr.create_group(location(url), zarr_format=3, attributes=attrs, storage_options=options)
            except (FileNotFoundError, PermissionError) as error:
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise StoreError(f"cannot create the store {url!r}: {reason}") from None
            except zarr.errors.ContainsGroupError:
                raise StoreExistsError(f"{url!r} was created by someone else meanwhile") from None
        elif overwrite and found.kind in ("ready", "unfinished"):
            group = _open_group(url, "r+", storage_options)
            group.attrs.put(attrs)  # the new owner first (and no stale consolidated metadata) ...
            _delete_contents(url, storage_options, keep={"zarr.json", LOCK_NAME})  # ... then the old contents
        else:
            raise StoreExistsError(f"{url!r} already exists")
        bookkeeping = group.create_group(BOOKKEEPING)
        bookkeeping.attrs["description"] = (
            "diffsweep bookkeeping: completed is 1 where a block is stored, 2 where it failed "
            "(its error in the attribute failures), 0 where it is still to compute"
        )
        bookkeeping.create_array(
            COMPLETED, shape=plan.block_grid, chunks=(1,) * len(plan.block_grid), dtype="int8", fill_value=0
        )
        dataset, encoding = template(plan)
        dataset.attrs.update(attrs)  # xarray rewrites the root attributes: keep the mark
        dataset.to_zarr(
            location(url), mode="a", compute=False, encoding=encoding, zarr_format=3,
            consolidated=False, storage_options=options,
        )
        group.attrs[STATE] = READY
        zarr.consolidate_metadata(group.store)


def _delete_contents(url: str, storage_options: Mapping[str, Any] | None, keep: set[str]) -> None:
    """Delete everything under the store's root except the names in ``keep``.

    Local stores are emptied entry by entry: a symbolic link (the store itself, or an
    entry in it) is removed as a link, never followed.
    """
    fs, root = _filesystem(url, storage_options)
    if not fs.exists(root):
        return
    if is_local(fs):
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.name in keep:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        return
    for path in fs.ls(root, detail=False):
        if path.rstrip("/").rsplit("/", 1)[-1] not in keep:
            fs.rm(path, recursive=True)


def record_failures(
    url: str, plan: Plan, failures: list[BlockFailure], storage_options: Mapping[str, Any] | None = None
) -> None:
    """Flag the runs of each failed block (status :data:`~pipeline.diagnostics.FAILED`) and
    record the blocks as failed, with their errors, in the bookkeeping; replaces the
    failures recorded by an earlier run (a resumed run retries every one of them)."""
    group = _open_group(url, "r+", storage_options)
    status = _array(group, "status").with_config({"write_empty_chunks": True})
    record = _array(group, f"{BOOKKEEPING}/{COMPLETED}")
    dims = plan.layout.variable("status").dims
    for failure in failures:
        block = plan.block(tuple(failure["index"]))
        region = block.region(dims)
        status[region] = np.full(tuple(s.stop - s.start for s in region), FAILED_STATUS, dtype=np.int8)
        record[block.index] = FAILED
    bookkeeping = group[BOOKKEEPING]
    bookkeeping.attrs[FAILURES] = json.dumps(
        {",".join(map(str, f["index"])): {"error": f["error"], "attempts": f["attempts"]} for f in failures}
    )


def failures(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[tuple[int, ...], str]:
    """The blocks recorded as failed and their errors (empty when none failed)."""
    done = _completed(url, storage_options)
    if not np.any(done == FAILED):
        return {}
    group = _open_group(url, "r", storage_options)
    recorded = json.loads(str(group[BOOKKEEPING].attrs.get(FAILURES, "{}")))
    found = {}
    for index in zip(*np.nonzero(done == FAILED), strict=True):
        key = tuple(int(i) for i in index)
        found[key] = recorded.get(",".join(map(str, key)), {}).get("error", "unknown error")
    return found


def update_attributes(url: str, attrs: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> None:
    """Merge ``attrs`` into the root attributes and refresh the consolidated metadata.

    Raises
    ------
    StoreDamagedError
        An array the consolidated metadata lists has lost its own metadata: refreshing
        it would make the array vanish, so nothing is written.
    """
    with expected_zarr_warnings_silenced():
        _check_nothing_vanished(url, storage_options)
        group = _open_group(url, "r+", storage_options)
        group.attrs.update(dict(attrs))
        zarr.consolidate_metadata(group.store)


def _check_nothing_vanished(url: str, storage_options: Mapping[str, Any] | None) -> None:
    """Refuse to consolidate when a node the consolidated metadata lists no longer exists."""
    fs, root = _filesystem(url, storage_options)
    try:
        consolidated = json.loads(fs.cat_file(f"{root}/zarr.json")).get("consolidated_metadata") or {}
    except (FileNotFoundError, ValueError):
        return
    listed = set(consolidated.get("metadata", {}))
    vanished = sorted(name for name in listed if not fs.exists(f"{root}/{name}/zarr.json"))
    if vanished:
        raise StoreDamagedError(
            f"{url!r}: the metadata of {', '.join(map(repr, vanished))} is missing "
            f"(only the consolidated copy is left); {REPAIR_HINT}"
        )


#: root attribute holding the run history (a JSON list, one entry per computing run)
RUN_HISTORY = "run_history"

#: what :func:`status_counts` calls results not computed yet (status -1)
NOT_COMPUTED_NAME = "not computed"
#: what :func:`status_counts` calls results whose block failed (status -2)
FAILED_NAME = "failed"


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

    Keys are :data:`~pipeline.diagnostics.STATUS_NAMES` and, when there are any, results
    not computed yet (status -1), :data:`NOT_COMPUTED_NAME`, and results whose block
    failed (status -2), :data:`FAILED_NAME`.
    """
    status = _array(_open_group(url, "r", storage_options), "status")
    lowest = FAILED_STATUS  # the codes run from -2 (failed) and -1 (not computed) to the classes
    counts = np.zeros(len(STATUS_NAMES) - lowest, dtype=np.int64)
    step = status.chunks[0]
    for start in range(0, status.shape[0], step):
        rows = np.asarray(status[start : start + step]).ravel().astype(np.int64)
        counts += np.bincount(rows - lowest, minlength=len(counts))[: len(counts)]
    named = {name: int(n) for name, n in zip(STATUS_NAMES, counts[-len(STATUS_NAMES) :], strict=True)}
    for code, name in ((NOT_COMPUTED, NOT_COMPUTED_NAME), (FAILED_STATUS, FAILED_NAME)):
        if counts[code - lowest]:
            named[name] = int(counts[code - lowest])
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
            # every chunk of a stored block exists, even an all-NaN one: a missing chunk is damage
            array.with_config({"write_empty_chunks": True})[region] = variable.values
        _array(group, f"{BOOKKEEPING}/{COMPLETED}")[block.index] = DONE


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
    "DONE",
    "FAILED",
    "NOT_DONE",
    "BlockWriter",
    "Found",
    "append_run_history",
    "check_compatible",
    "check_same_definition",
    "completion",
    "create",
    "exists",
    "failures",
    "inspect",
    "location",
    "read_attributes",
    "record_failures",
    "run_history",
    "status_counts",
    "template",
    "update_attributes",
]
