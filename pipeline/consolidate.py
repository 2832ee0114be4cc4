"""Consolidation: once every block is stored, rewrite the store into large chunks.

While a sweep runs, every block is one task and one zarr chunk of every variable, so
that each chunk has exactly one writer and a resumed run knows, block by block, what is
stored. For analysis that layout is poor: the million-run sweep left ~14 000 files of
~12 KB, and dask advises chunks of ~10-100 MiB. Once every block is stored (none
failed), :func:`consolidate` rewrites each data variable, and the completion record,
into chunks of up to :data:`CHUNK_BYTES` (dask's ``"auto"`` chunks, whole multiples of
the blocks), with dask reading the old chunks and writing the new ones.

The new chunks are written *beside* the old ones, in the same array, under the other
spelling of zarr's default chunk keys (``c.0.0.0`` instead of ``c/0/0/0``), so nothing
is renamed (object stores cannot rename) and no path changes (plain
``xarray.open_zarr`` reads the same names). The steps, each recorded before it is
taken in the root attribute :data:`RECORD` (``{"state": ..., "chunks": ...}``):

1. ``writing``: the new chunks of each array are written (invisible: its metadata still
   names the old ones), then its ``zarr.json`` is replaced in one write by metadata
   naming the new chunk grid and keys (the "flip");
2. ``cleaning``: the consolidated metadata xarray reads is refreshed, then the old
   chunks are deleted;
3. ``done``.

At every moment each array's metadata, and the consolidated copy, name chunks that
exist and hold the same values, so an interrupted consolidation loses nothing and a
reader sees identical values; ``diffsweep run --resume`` finishes it
(:func:`finish`): arrays already flipped are kept, the others written again.

The completion record stays: every block is still recorded done, so a resumed run
computes nothing. A consolidated store cannot take a block back (a chunk now holds many
blocks): repairing damage in it recomputes the sweep (:mod:`pipeline.verify`).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zarr

from pipeline import store
from pipeline.errors import StoreError
from pipeline.planning import Plan
from pipeline.store_lock import PARTIAL_SUFFIX, is_local
from pipeline.zarr_warnings import expected_zarr_warnings_silenced

__all__ = [
    "AUTO_ABOVE_BLOCKS",
    "CHUNK_BYTES",
    "RECORD",
    "Consolidation",
    "ConsolidationSummary",
    "consolidate",
    "finish",
    "is_consolidated",
    "planned_chunks",
    "read_record",
    "wanted",
]

#: root attribute recording the consolidation (JSON text): its state and the new chunks
RECORD = "diffsweep_consolidation"
#: largest chunk a consolidated array gets (uncompressed); dask advises ~10-100 MiB
CHUNK_BYTES = 64 * 2**20
#: by default a store is consolidated when it has more blocks than this (below it, a
#: variable is at most this many files and the store stays repairable block by block)
AUTO_ABOVE_BLOCKS = 64
#: chunk-key separator of consolidated arrays; blocks use zarr's default "/"
SEPARATOR = "."

State = Literal["writing", "cleaning", "done"]
#: how a step reports itself (tests inject failures there)
Step = Callable[[str], None]


@dataclass(frozen=True)
class Consolidation:
    """What :data:`RECORD` says: the state and each consolidated array's chunk shape."""

    state: State
    chunks: Mapping[str, tuple[int, ...]]

    def as_text(self) -> str:
        return json.dumps({"state": self.state, "chunks": {k: list(v) for k, v in self.chunks.items()}})


@dataclass(frozen=True)
class ConsolidationSummary:
    """What :func:`consolidate` did: arrays rewritten, chunk files before and after, seconds."""

    arrays: int
    chunks_before: int
    chunks_after: int
    largest_chunk_bytes: int
    seconds: float

    def text(self) -> str:
        from dask.utils import format_bytes, format_time

        return (
            f"  consolidated for analysis: {self.chunks_before:,} chunk files -> {self.chunks_after:,} "
            f"(up to {format_bytes(self.largest_chunk_bytes)} each) in {format_time(self.seconds)}"
        )


def read_record(attrs: Mapping[str, Any]) -> Consolidation | None:
    """The consolidation record in a store's root attributes (None: never consolidated)."""
    text = attrs.get(RECORD)
    if not text:
        return None
    value = json.loads(text) if isinstance(text, str) else text
    return Consolidation(value["state"], {k: tuple(int(c) for c in v) for k, v in value["chunks"].items()})


def _record_path() -> str:
    return f"{store.BOOKKEEPING}/{store.COMPLETED}"


def planned_chunks(plan: Plan) -> dict[str, tuple[int, ...]]:
    """The chunk shape of every array once consolidated: each data variable of the
    plan's layout (dask's ``"auto"`` chunks of at most :data:`CHUNK_BYTES`, in whole
    blocks where the blocks allow) and the completion record (one chunk)."""
    from dask.array.core import normalize_chunks

    chunks: dict[str, tuple[int, ...]] = {}
    for variable in plan.layout.variables:
        auto = normalize_chunks(
            "auto", variable.shape, limit=CHUNK_BYTES, dtype=np.dtype(variable.dtype), previous_chunks=variable.chunks
        )
        chunks[variable.name] = tuple(max(1, c[0]) for c in auto)
    chunks[_record_path()] = tuple(plan.block_grid)
    return chunks


def wanted(plan: Plan, setting: bool | None) -> bool:
    """Whether a complete store of ``plan`` is consolidated: ``setting`` if given, else
    when it has more than :data:`AUTO_ABOVE_BLOCKS` blocks."""
    return plan.n_blocks > AUTO_ABOVE_BLOCKS if setting is None else setting


def _nothing(step: str) -> None:
    """The default step report: nothing."""


def consolidate(
    url: str, plan: Plan, storage_options: Mapping[str, Any] | None = None, *, step: Step = _nothing
) -> ConsolidationSummary | None:
    """Rewrite a complete store into large chunks, or finish an interrupted rewrite.

    The caller holds the store's lock. Returns None when there is nothing to do (the
    store is consolidated already).

    Parameters
    ----------
    step
        Called with a description after each write (tests make it raise to interrupt
        the consolidation at every step).

    Raises
    ------
    StoreError
        Not every block of the store is recorded done.
    """
    record = read_record(store.read_attributes(url, storage_options))
    if record is not None and record.state == "done":
        return None
    if record is None:
        done, total = store.completion(url, storage_options)
        if done != total:
            raise StoreError(f"{url!r}: only {done} of {total} blocks are stored; consolidating needs every block")
        record = Consolidation("writing", planned_chunks(plan))
        store.update_attributes(url, {RECORD: record.as_text()}, storage_options)
        step("recorded: writing")
    return finish(url, plan, storage_options, step=step)


def finish(
    url: str, plan: Plan, storage_options: Mapping[str, Any] | None = None, *, step: Step = _nothing
) -> ConsolidationSummary | None:
    """Finish the consolidation the store's record says is under way (None: none is)."""
    import dask
    import dask.array as da
    from zarr.core.array import AsyncArray
    from zarr.storage import StorePath

    started = time.perf_counter()
    record = read_record(store.read_attributes(url, storage_options))
    if record is None or record.state == "done":
        return None
    fs, root = store._filesystem(url, storage_options)
    before = after = largest = 0
    with expected_zarr_warnings_silenced():
        group = store._open_group(url, "r+", storage_options)
        if record.state == "writing":
            for name, chunks in record.chunks.items():
                old = group[name]
                assert isinstance(old, zarr.Array)
                largest = max(largest, math.prod(chunks) * old.dtype.itemsize)
                if is_consolidated(old):
                    after += old.nchunks
                    continue
                before += old.nchunks
                metadata = _consolidated_metadata(old, chunks)
                new: Any = zarr.Array(AsyncArray(metadata, StorePath(group.store, name)))
                # every chunk written, even one holding only fill values: a missing chunk is damage
                new = new.with_config({"write_empty_chunks": True})
                # each task reads one new chunk's region from the old chunks (zarr fetches
                # them concurrently) and writes it: no two tasks share a chunk
                with dask.config.set(scheduler="threads"):
                    da.store(da.from_zarr(old, chunks=chunks), new, lock=False)
                step(f"wrote the new chunks of {name}")
                _put(fs, f"{root}/{name}/zarr.json", metadata.to_buffer_dict(_prototype())["zarr.json"].to_bytes())
                step(f"flipped {name}")
                after += new.nchunks
            record = Consolidation("cleaning", record.chunks)
            store.update_attributes(url, {RECORD: record.as_text()}, storage_options)
            step("recorded: cleaning")
        else:
            store.update_attributes(url, {}, storage_options)  # the consolidated copy may predate the flips
        fs.invalidate_cache()  # an object store's listing cached before the flips is stale
        for name in record.chunks:
            old_chunks = f"{root}/{name}/c"
            if fs.exists(old_chunks):
                fs.rm(old_chunks, recursive=True)
                step(f"deleted the old chunks of {name}")
        store.update_attributes(url, {RECORD: Consolidation("done", record.chunks).as_text()}, storage_options)
        step("recorded: done")
    return ConsolidationSummary(len(record.chunks), before, after, largest, time.perf_counter() - started)


def _prototype() -> Any:
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype()


def is_consolidated(array: zarr.Array) -> bool:
    """Whether ``array``'s metadata names consolidated chunks (keys spelt with :data:`SEPARATOR`)."""
    return getattr(getattr(array.metadata, "chunk_key_encoding", None), "separator", None) == SEPARATOR


def _consolidated_metadata(array: zarr.Array, chunks: tuple[int, ...]) -> Any:
    """``array``'s metadata with the chunk grid ``chunks`` and keys spelt with :data:`SEPARATOR`."""
    from zarr.core.metadata.v3 import ArrayV3Metadata

    metadata = array.metadata.to_dict()
    metadata["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": list(chunks)}}
    metadata["chunk_key_encoding"] = {"name": "default", "configuration": {"separator": SEPARATOR}}
    return ArrayV3Metadata.from_dict(metadata)


def _put(fs: Any, path: str, data: bytes) -> None:
    """Replace the file at ``path`` in one step: an object store's PUT, or locally a
    rename over it (a kill never leaves half a file)."""
    if not is_local(fs):
        fs.pipe_file(path, data)
        return
    temporary = f"{path}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}"
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
