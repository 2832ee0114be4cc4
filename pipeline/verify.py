"""Is a results store what its own records say it is? Find every bad block, and repair.

:func:`verify` checks a store against its completion record and its definition:

* the root attributes that follow from the definition (``sweep_hash``, ``tolerance``,
  ``divergence``, the fixed model keys, the block layout, ...) equal what the stored
  ``sweep_definition`` gives, and that definition still has the stored hash;
* every variable and coordinate has its own metadata (not only the consolidated copy
  ``xarray.open_zarr`` reads), with the layout's shape, chunks, dtype, fill value,
  dimensions and attributes; the consolidated copy matches it; coordinate values are
  the definition's;
* the completion record has the store's block grid;
* every block recorded as done has a chunk in every variable (``quick`` stops here:
  one listing of the store, nothing decoded), each chunk decodes, and ``status`` holds
  a class (0..3) for every result of it.

Each finding is a :class:`Problem` naming where it is (``status block (1, 0)``,
``attribute 'tolerance'``) and which blocks it spoils. :func:`repair` (run by
``diffsweep run --resume``, under the store's lock) makes the store consistent again
without guessing: attributes are rewritten from the definition, lost array metadata is
restored from its consolidated copy when that matches the layout (else the array is
recreated and every block recomputed), coordinates are rewritten, and the blocks with
bad chunks are marked not done so the run recomputes exactly those.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import zarr

from pipeline import consolidate as consolidation
from pipeline import store
from pipeline.errors import RESUME_HINT, DiffsweepError, StoreDamagedError, SweepError
from pipeline.layout import VariableLayout
from pipeline.planning import Block, Plan
from pipeline.sweep import parse_sweep
from pipeline.zarr_warnings import expected_zarr_warnings_silenced

__all__ = ["Problem", "Report", "check_before_resume", "explain_read_failure", "plan_of_store", "repair", "verify"]

#: how :func:`repair` fixes a problem
Repair = Literal[
    "attributes",        # root attributes rewritten from the definition
    "definition",        # sweep_definition rewritten from the run's (same-hash) definition
    "restore",           # an array's lost zarr.json restored from its consolidated copy
    "array attributes",  # an array's attributes rewritten from the layout
    "reconsolidate",     # the consolidated metadata refreshed
    "variable",          # a data variable recreated: every block recomputed
    "coordinate",        # a coordinate rewritten from the definition
    "record",            # the completion record recreated: every block recomputed
    "blocks",            # the blocks marked not done, so the run recomputes them
    "consolidate",       # an interrupted consolidation finished
    "layout",            # a consolidated store returned to one chunk per block: every block recomputed
]

#: root attributes that follow from the definition and the plan (provenance without times,
#: hosts and versions)
DEFINITION_ATTRIBUTES = (
    "title", "sweep_name", "sweep_description", "sweep_hash", "tolerance", "divergence",
    "diffsweep_chunks", "diffsweep_block_grid", "Conventions",
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store.

    Attributes
    ----------
    where
        What is bad: ``"status block (1, 0)"``, ``"attribute 'tolerance'"``,
        ``"array 'status'"``, ``"completion record"``.
    what
        How it is bad, in words.
    repair
        How :func:`repair` fixes it.
    blocks
        Block indices whose results it spoils (recomputed by the repair); ``None``:
        every block.
    name
        The array or attribute concerned.
    """

    where: str
    what: str
    repair: Repair
    blocks: tuple[tuple[int, ...], ...] | None = ()
    name: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class Report:
    """What :func:`verify` found."""

    url: str
    problems: list[Problem] = field(default_factory=list)
    blocks_total: int = 0
    blocks_done: int = 0
    blocks_failed: int = 0
    chunks_checked: int = 0
    decoded: bool = True

    @property
    def ok(self) -> bool:
        return not self.problems

    def bad_blocks(self) -> set[tuple[int, ...]] | None:
        """Blocks to recompute (``None``: every block)."""
        bad: set[tuple[int, ...]] = set()
        for problem in self.problems:
            if problem.blocks is None:
                return None
            bad.update(problem.blocks)
        return bad

    def summary(self) -> str:
        """One line: the verdict and what was checked."""
        checked = "decoded" if self.decoded else "present (quick check: nothing decoded)"
        if self.ok:
            failed = f" ({self.blocks_failed} recorded as failed)" if self.blocks_failed else ""
            return (
                f"OK: {self.url}: {self.blocks_done} of {self.blocks_total} blocks recorded done{failed}, "
                f"{self.chunks_checked} chunks {checked}; metadata and attributes match the definition"
            )
        bad = self.bad_blocks()
        blocks = "every block" if bad is None else f"{len(bad)} of {self.blocks_total} blocks"
        return f"DAMAGED: {self.url}: {len(self.problems)} problems, {blocks} to recompute; {store.REPAIR_HINT}"


def plan_of_store(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Plan | None, list[Problem]]:
    """The plan the store was made with, from its own ``sweep_definition`` and block layout.

    Returns the plan (``None`` when the definition cannot be read back) and the
    problems found on the way (a definition that does not match ``sweep_hash``).
    """
    attrs = store.read_attributes(url, storage_options)
    problems: list[Problem] = []
    try:
        sweep = parse_sweep(str(attrs.get("sweep_definition", "")), source=f"{url} (sweep_definition)", memory_limit=2**62)
    except SweepError as error:
        return None, [Problem("attribute 'sweep_definition'", f"cannot be read back: {error}", "definition", (), "sweep_definition")]
    if sweep.sha256 != attrs.get("sweep_hash"):
        problems.append(
            Problem(
                "attribute 'sweep_definition'",
                f"hashes to {sweep.sha256[:12]}, not the stored sweep_hash {str(attrs.get('sweep_hash'))[:12]}",
                "definition", (), "sweep_definition",
            )
        )
    try:
        chunks = tuple(int(c) for c in json.loads(attrs["diffsweep_chunks"]))
        plan = Plan(sweep=sweep, chunks=chunks, parallelism=1)
        plan.block_grid  # noqa: B018  (a wrong number of chunks fails here)
        if len(chunks) != len(sweep.axis_names):
            raise ValueError(f"{len(chunks)} chunk sizes for {len(sweep.axis_names)} axes")
    except (KeyError, ValueError, TypeError) as error:
        return None, [*problems, Problem("attribute 'diffsweep_chunks'", f"cannot be read back: {error}", "attributes", (), "diffsweep_chunks")]
    return plan, problems


def verify(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    plan: Plan | None = None,
    quick: bool = False,
) -> Report:
    """Check the store at ``url`` (see the module docstring); a :class:`Report` of every problem.

    Parameters
    ----------
    plan
        The plan to check against (``diffsweep run --resume`` passes its own, whose
        hash equals the store's); default: the one the store records.
    quick
        Only metadata, attributes and the presence of chunks (one listing); decode nothing.

    Raises
    ------
    StoreNotFoundError, StoreError
        Nothing, or no (finished) diffsweep store, is at ``url``.
    """
    attrs = store.read_attributes(url, storage_options)
    stored_plan, problems = plan_of_store(url, storage_options)
    plan = plan or stored_plan
    report = Report(url, problems, decoded=not quick)
    if plan is None:
        return report
    report.blocks_total = plan.n_blocks
    report.problems += _attribute_problems(attrs, plan)
    fs, root = store._filesystem(url, storage_options)
    files = {path[len(root) + 1 :] for path in fs.find(root)}
    consolidated = _consolidated(fs, root)
    group = store._open_group(url, "r", storage_options)
    record = consolidation.read_record(attrs)
    if record is not None and record.state != "done":
        report.problems.append(
            Problem(
                "consolidation", f"was interrupted ({record.state}); every value is still stored, "
                f"and {RESUME_HINT} finishes it", "consolidate", (), consolidation.RECORD,
            )
        )
    arrays: dict[str, zarr.Array] = {}
    chunk_shapes: dict[str, tuple[int, ...]] = {}
    for variable in plan.layout.variables:
        chunk_shapes[variable.name] = _stored_chunks(group, record, variable)
        expected = _expected_metadata(variable, chunk_shapes[variable.name])
        array, found = _array_problems(group, files, consolidated, variable.name, expected, "variable")
        report.problems += found
        if array is not None:
            arrays[variable.name] = array
    report.problems += _coordinate_problems(group, files, consolidated, plan)
    done, record_problems = _record(group, files, consolidated, plan)
    report.problems += record_problems
    if done is None:
        return report
    format_version = int(attrs.get("diffsweep_format", 1))
    report.blocks_done = int(np.count_nonzero(done == store.DONE))
    report.blocks_failed = int(np.count_nonzero(done == store.FAILED))
    by_block = [v for v in plan.layout.variables if v.name in arrays and chunk_shapes[v.name] == v.chunks]
    for block in plan.blocks():
        if done[block.index] != store.DONE:
            continue
        for variable in by_block:
            report.chunks_checked += 1
            problem = _chunk_problem(arrays[variable.name], variable, block, files, quick, format_version)
            if problem is not None:
                report.problems.append(problem)
    for variable in plan.layout.variables:  # consolidated: each chunk holds many blocks
        if variable.name in arrays and variable not in by_block:
            array = arrays[variable.name]
            for coords in np.ndindex(*array.cdata_shape):
                report.chunks_checked += 1
                problem = _consolidated_chunk_problem(array, variable, coords, files, quick)
                if problem is not None:
                    report.problems.append(problem)
    return report


def _stored_chunks(group: zarr.Group, record: consolidation.Consolidation | None, variable: VariableLayout) -> tuple[int, ...]:
    """The chunks ``variable`` should have now: the blocks', or the consolidated ones the
    record names (while a consolidation is being written, whichever its metadata names)."""
    if record is None or variable.name not in record.chunks:
        return variable.chunks
    if record.state != "writing":
        return record.chunks[variable.name]
    try:
        array = group.get(variable.name)
        flipped = isinstance(array, zarr.Array) and consolidation.is_consolidated(array)
    except Exception:
        return variable.chunks
    return record.chunks[variable.name] if flipped else variable.chunks


# -- attributes ---------------------------------------------------------------------------


def _expected_attributes(plan: Plan) -> dict[str, Any]:
    provenance = store.provenance(plan)
    fixed = {key: provenance[key] for key in plan.sweep.model.__dataclass_fields__ if key in provenance}
    return {**{key: provenance[key] for key in DEFINITION_ATTRIBUTES}, **fixed}


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values (tuples and arrays as lists, NaN equal to NaN, True not equal to 1)."""
    a, b = (x.tolist() if isinstance(x, np.ndarray | np.generic) else x for x in (a, b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _attribute_problems(attrs: Mapping[str, Any], plan: Plan) -> list[Problem]:
    problems = []
    for key, expected in _expected_attributes(plan).items():
        if key not in attrs:
            problems.append(Problem(f"attribute {key!r}", f"is missing (the definition says {expected!r})", "attributes", (), key))
        elif not _same(attrs[key], expected):
            problems.append(
                Problem(f"attribute {key!r}", f"is {attrs[key]!r}, the stored definition says {expected!r}", "attributes", (), key)
            )
    return problems


# -- arrays -------------------------------------------------------------------------------


def _expected_metadata(variable: VariableLayout, chunks: tuple[int, ...]) -> dict[str, Any]:
    return {
        "shape": list(variable.shape),
        "chunks": list(chunks),
        "data_type": variable.dtype,
        "fill_value": variable.fill_value,
        "dimension_names": list(variable.dims),
        "attributes": dict(variable.attrs),
    }


def _consolidated(fs: Any, root: str) -> dict[str, Any]:
    try:
        metadata = json.loads(fs.cat_file(f"{root}/zarr.json"))
    except (FileNotFoundError, ValueError):
        return {}
    return dict((metadata.get("consolidated_metadata") or {}).get("metadata") or {})


def _mismatches(metadata: Mapping[str, Any], expected: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """How the zarr.json ``metadata`` of an array differs from ``expected``: (structure, attributes)."""
    actual = {
        "shape": metadata.get("shape"),
        "chunks": (metadata.get("chunk_grid") or {}).get("configuration", {}).get("chunk_shape"),
        "data_type": metadata.get("data_type"),
        "dimension_names": metadata.get("dimension_names"),
    }
    def shown(value: Any) -> str:
        return repr(tuple(value)) if isinstance(value, (list, tuple)) else repr(value)

    structure = [
        f"{key} {shown(actual[key])}, expected {shown(expected[key])}"
        for key in ("shape", "chunks", "data_type", "dimension_names")
        if key in expected and not _same(actual[key], expected[key])
    ]
    if "fill_value" in expected:
        fill, want = metadata.get("fill_value"), expected["fill_value"]
        if not (_same(fill, want) or (fill == "NaN" and isinstance(want, float) and math.isnan(want))):
            structure.append(f"fill_value {fill!r}, expected {want!r}")
    stored = metadata.get("attributes") or {}
    attributes = [
        f"attribute {key!r} {stored.get(key)!r}, expected {want!r}"
        for key, want in (expected.get("attributes") or {}).items()
        if not _same(stored.get(key), want)
    ]
    return structure, attributes


def _array_problems(
    group: zarr.Group,
    files: set[str],
    consolidated: Mapping[str, Any],
    name: str,
    expected: Mapping[str, Any],
    lost: Repair,
) -> tuple[zarr.Array | None, list[Problem]]:
    """The array ``name`` (None if unusable) and what is wrong with its metadata.

    ``lost`` is how a missing or structurally wrong array is repaired (``variable``,
    ``coordinate`` or ``record``); a variable or the record spoils every block then.
    """
    where = f"array {name!r}" if lost != "record" else "completion record"
    spoiled = () if lost == "coordinate" else None
    copy = consolidated.get(name)
    if f"{name}/zarr.json" not in files:
        if copy is not None and not any(_mismatches(copy, expected)):
            what = "its metadata (zarr.json) is missing; only the consolidated copy xarray reads is left"
            return None, [Problem(where, what, "restore", (), name)]
        return None, [Problem(where, "is missing", lost, spoiled, name)]
    try:
        array = group.get(name)
        if not isinstance(array, zarr.Array):
            raise TypeError("it is not an array")
        metadata = array.metadata.to_dict()
    except Exception as error:
        return None, [Problem(where, f"its metadata cannot be read ({_first_line(error)})", lost, spoiled, name)]
    structure, attributes = _mismatches(metadata, expected)
    if structure:
        return None, [Problem(where, "; ".join(structure), lost, spoiled, name)]
    problems = []
    if attributes:
        problems.append(Problem(where, "; ".join(attributes), "array attributes", (), name))
    if copy is not None and not _same(json.loads(json.dumps(copy)), json.loads(json.dumps(metadata))):
        problems.append(Problem(where, "its consolidated copy (what xarray reads) differs from its zarr.json", "reconsolidate", (), name))
    return array, problems


def _coordinate_problems(group: zarr.Group, files: set[str], consolidated: Mapping[str, Any], plan: Plan) -> list[Problem]:
    problems = []
    values = plan.layout.coordinates()
    for coordinate in plan.layout.coordinates_layout:
        value = values[coordinate.name]
        expected = {
            "shape": list(value.shape),
            "dimension_names": list(coordinate.dims),
            "attributes": dict(coordinate.attrs),
        }
        array, found = _array_problems(group, files, consolidated, coordinate.name, expected, "coordinate")
        problems += found
        if array is None:
            continue
        try:
            stored = np.asarray(array[...])
        except Exception as error:
            problems.append(Problem(f"coordinate {coordinate.name!r}", f"cannot be decoded ({_first_line(error)})", "coordinate", (), coordinate.name))
            continue
        want = np.asarray(value.values)
        equal = (
            # zarr 3 reads strings as numpy's StringDType, which does not cast to "<U"
            stored.shape == want.shape and list(map(str, stored.ravel())) == list(map(str, want.ravel()))
            if want.dtype.kind in "OUST"
            else stored.shape == want.shape and np.array_equal(stored, want, equal_nan=True)
        )
        if not equal:
            problems.append(Problem(f"coordinate {coordinate.name!r}", "its values differ from the definition's", "coordinate", (), coordinate.name))
    return problems


def _record(
    group: zarr.Group, files: set[str], consolidated: Mapping[str, Any], plan: Plan
) -> tuple[np.ndarray | None, list[Problem]]:
    """The completion record's values (None if unusable) and what is wrong with it."""
    name = f"{store.BOOKKEEPING}/{store.COMPLETED}"
    expected = {"shape": list(plan.block_grid), "data_type": "int8"}
    array, problems = _array_problems(group, files, consolidated, name, expected, "record")
    if array is None:
        return None, problems
    try:
        values = np.asarray(array[...])
    except Exception as error:
        return None, [*problems, Problem("completion record", f"cannot be decoded ({_first_line(error)})", "record", None, name)]
    return values, problems


# -- chunks -------------------------------------------------------------------------------


def _chunk_coords(variable: VariableLayout, block: Block) -> tuple[int, ...]:
    region = block.region(variable.dims)
    return tuple((s.start or 0) // chunk for s, chunk in zip(region, variable.chunks, strict=True))


def _chunk_problem(
    array: zarr.Array, variable: VariableLayout, block: Block, files: set[str], quick: bool, format_version: int
) -> Problem | None:
    where = f"{variable.name} block {block.index}"
    key = f"{variable.name}/{array.metadata.encode_chunk_key(_chunk_coords(variable, block))}"
    if key not in files:
        if format_version < 2 and np.dtype(variable.dtype).kind == "f":
            return None  # format 1 skipped chunks that held only NaN
        return Problem(where, f"chunk {key} is missing", "blocks", (block.index,), variable.name)
    if quick:
        return None
    try:
        values = np.asarray(array[block.region(variable.dims)])
    except Exception as error:
        return Problem(where, f"chunk {key} cannot be decoded ({_first_line(error)})", "blocks", (block.index,), variable.name)
    if variable.name == "status" and (values.min(initial=0) < 0 or values.max(initial=0) > 3):
        return Problem(where, "status holds values other than the classes 0..3 in a block recorded as done", "blocks", (block.index,), variable.name)
    return None


def _consolidated_chunk_problem(
    array: zarr.Array, variable: VariableLayout, coords: tuple[int, ...], files: set[str], quick: bool
) -> Problem | None:
    """What is wrong with one chunk of a consolidated variable; it spoils every block
    (a consolidated store is repaired by recomputing it: see :func:`repair`)."""
    where = f"{variable.name} chunk {coords}"
    key = f"{variable.name}/{array.metadata.encode_chunk_key(coords)}"
    if key not in files:
        return Problem(where, f"chunk {key} is missing", "layout", None, variable.name)
    if quick:
        return None
    region = tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, array.chunks, strict=True))
    try:
        values = np.asarray(array[region])
    except Exception as error:
        return Problem(where, f"chunk {key} cannot be decoded ({_first_line(error)})", "layout", None, variable.name)
    if variable.name == "status" and (values.min(initial=0) < 0 or values.max(initial=0) > 3):
        return Problem(where, "status holds values other than the classes 0..3 in a complete store", "layout", None, variable.name)
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


# -- repair -------------------------------------------------------------------------------


def repair(url: str, plan: Plan, report: Report, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Make the store consistent with ``plan`` again; what was done, one line each.

    The caller holds the store's lock and then recomputes the blocks the completion
    record no longer marks done. ``plan`` must hold the store's sweep (its hash).
    """
    if not report.problems:
        return []
    lines: list[str] = []
    fs, root = store._filesystem(url, storage_options)
    consolidated = _consolidated(fs, root)
    recompute: set[tuple[int, ...]] | None = set()
    variables = {v.name: v for v in plan.layout.variables}
    with expected_zarr_warnings_silenced():
        group = store._open_group(url, "r+", storage_options)
        for problem in report.problems:
            name = problem.name
            if problem.repair == "restore":
                fs.pipe_file(f"{root}/{name}/zarr.json", json.dumps(consolidated[name], indent=2).encode())
                lines.append(f"restored the metadata of {name!r} from its consolidated copy")
            elif problem.repair == "array attributes":
                array = group[name]
                if name in variables:
                    wanted = dict(variables[name].attrs)
                else:
                    wanted = dict(plan.layout.coordinate(name).attrs)
                array.attrs.update(json.loads(json.dumps(wanted)))
                lines.append(f"rewrote the attributes of {name!r} from the definition")
            elif problem.repair == "coordinate":
                _rewrite_coordinate(url, plan, name, storage_options)
                lines.append(f"rewrote coordinate {name!r} from the definition")
            elif problem.repair == "variable":
                _recreate_variable(url, plan, name, storage_options)
                lines.append(f"recreated variable {name!r}: every block is recomputed")
                recompute = None
            elif problem.repair == "record":
                if fs.exists(f"{root}/{name}"):
                    fs.rm(f"{root}/{name}", recursive=True)
                group.require_group(store.BOOKKEEPING).create_array(
                    store.COMPLETED, shape=plan.block_grid, chunks=(1,) * len(plan.block_grid), dtype="int8", fill_value=0,
                )
                lines.append("recreated the completion record: every block is recomputed")
                recompute = None
            elif problem.repair == "layout":
                recompute = None
            elif problem.repair == "blocks" and recompute is not None and problem.blocks is not None:
                recompute.update(problem.blocks)
        consolidated_record = consolidation.read_record(group.attrs)
        if consolidated_record is not None and (recompute is None or recompute):
            # a consolidated chunk holds many blocks, none can be rewritten alone: back to
            # one chunk per block, every block recomputed
            _return_to_blocks(url, plan, group, storage_options)
            lines.append("returned the consolidated store to one chunk per block: every block is recomputed")
            recompute = None
        changed = {
            key: value for key, value in _expected_attributes(plan).items() if not _same(group.attrs.get(key), value)
        }
        if any(p.repair == "definition" for p in report.problems):
            changed["sweep_definition"] = plan.sweep.text
        if changed:
            group.attrs.update(changed)
            lines.append("rewrote attributes from the definition: " + ", ".join(sorted(changed)))
        record = group[f"{store.BOOKKEEPING}/{store.COMPLETED}"]
        assert isinstance(record, zarr.Array)
        if recompute is None:
            record[...] = store.NOT_DONE
        elif recompute:
            for index in sorted(recompute):
                record[index] = store.NOT_DONE
            lines.append(f"marked {len(recompute)} damaged blocks for recomputing: {_blocks(recompute)}")
        zarr.consolidate_metadata(group.store)
    if recompute == set() and any(p.repair == "consolidate" for p in report.problems):
        consolidation.finish(url, plan, storage_options)
        lines.append("finished the interrupted consolidation")
    return lines


def _return_to_blocks(url: str, plan: Plan, group: zarr.Group, storage_options: Mapping[str, Any] | None) -> None:
    """Recreate every data variable and the completion record with one chunk per block
    (nothing stored) and forget the consolidation."""
    fs, root = store._filesystem(url, storage_options)
    for variable in plan.layout.variables:
        _recreate_variable(url, plan, variable.name, storage_options)
    name = f"{store.BOOKKEEPING}/{store.COMPLETED}"
    if fs.exists(f"{root}/{name}"):
        fs.rm(f"{root}/{name}", recursive=True)
    group.require_group(store.BOOKKEEPING).create_array(
        store.COMPLETED, shape=plan.block_grid, chunks=(1,) * len(plan.block_grid), dtype="int8", fill_value=0,
    )
    del group.attrs[consolidation.RECORD]


def _blocks(indices: set[tuple[int, ...]] | list[tuple[int, ...]], most: int = 8) -> str:
    shown = ", ".join(str(i) for i in sorted(indices)[:most])
    return shown + (f" and {len(indices) - most} more" if len(indices) > most else "")


def _recreate_variable(url: str, plan: Plan, name: str, storage_options: Mapping[str, Any] | None) -> None:
    fs, root = store._filesystem(url, storage_options)
    if fs.exists(f"{root}/{name}"):
        fs.rm(f"{root}/{name}", recursive=True)
    dataset, encoding = store.template(plan)
    alone = dataset[[name]]
    alone.drop_vars(list(alone.coords)).to_zarr(
        store.location(url), mode="a", compute=False, encoding={name: encoding[name]}, zarr_format=3,
        consolidated=False, storage_options=dict(storage_options) if storage_options else None,
    )


def _rewrite_coordinate(url: str, plan: Plan, name: str, storage_options: Mapping[str, Any] | None) -> None:
    import xarray as xr

    fs, root = store._filesystem(url, storage_options)
    if fs.exists(f"{root}/{name}"):
        fs.rm(f"{root}/{name}", recursive=True)
    coordinate = plan.layout.coordinates()[name]
    xr.Dataset({name: coordinate.variable}).to_zarr(
        store.location(url), mode="a", zarr_format=3, consolidated=False,
        storage_options=dict(storage_options) if storage_options else None,
    )


# -- reading a damaged store ----------------------------------------------------------------


@contextmanager
def explain_read_failure(url: str, storage_options: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Turn a failure while reading the store into one line naming the damage.

    A truncated chunk makes zarr fail deep inside a dask computation with, e.g.,
    "Zstd decompression error"; on any such failure the store is verified and, if it
    is damaged, :class:`~pipeline.errors.StoreDamagedError` names the first bad
    variable and block (and how many more there are) instead.
    """
    try:
        yield
    except DiffsweepError:
        raise
    except Exception as error:
        try:
            report = verify(url, storage_options)
        except Exception:
            raise error from None
        if report.ok:
            raise
        more = f" (and {len(report.problems) - 1} more problems)" if len(report.problems) > 1 else ""
        raise StoreDamagedError(
            f"{url!r} is damaged: {report.problems[0]}{more}; {store.REPAIR_HINT}"
        ) from error


def check_before_resume(url: str, plan: Plan, storage_options: Mapping[str, Any] | None, *, decode: bool) -> list[str]:
    """Verify (quickly unless ``decode``) and repair a store about to be resumed.

    ``plan`` holds the store's own sweep (the caller checked the hash). Returns what
    was found and done, one line each (empty for a sound store). A second pass checks
    what the first could not see yet (the chunks of an array whose metadata it restored).
    """
    lines: list[str] = []
    for _ in range(2):
        report = verify(url, storage_options, plan=plan, quick=not decode)
        if report.ok:
            break
        lines += [f"damaged: {p}" for p in report.problems]
        lines += repair(url, plan, report, storage_options)
        if not any(p.repair == "restore" for p in report.problems):
            break
    return lines
