"""Read a sweep definition (YAML) and validate it into a :class:`~pipeline.sweep.Sweep`.

:func:`parse_sweep` checks everything once, before anything is computed, and every
refusal is a :class:`~pipeline.errors.SweepError` naming the file, line, key path and
offending value.  The parser reads the file section by section (``name``,
``description``, ``model``, ``sweep``, ``chunks``, ``criteria``, ``output``, ``units``),
one method each; the YAML node layer it stands on is :mod:`pipeline.sweep.yamltree`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any, TypedDict, Unpack

import numpy as np
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.errors import SweepError
from pipeline.sweep import yamltree
from pipeline.sweep.definition import (
    BOUNDARIES,
    CASE,
    DEFAULT_MEMORY_LIMIT,
    FIELDS,
    INITIALS,
    LENGTH_UNITS,
    MAX_AXIS_LENGTH,
    MAX_RESULTS,
    MAX_STEPS,
    MAX_TEXT_BYTES,
    MODEL_KEYS,
    PARTICLE_DEFAULTS,
    PARTICLE_KEYS,
    SCHEMES,
    STEP_AXES,
    TIME_UNITS,
    ZIPPABLE,
    Axis,
    Criteria,
    Model,
    Output,
    Sweep,
    Units,
)
from pipeline.sweep.overrides import Override, apply_overrides, effective_text, parse_override
from pipeline.sweep.yamltree import describe, is_null, join, scalar, show

__all__ = ["load_sweep", "parse_sweep"]

_INT64_MAX = 2**63 - 1
#: Particles of one run: the kernels index particles with 32-bit counters.
MAX_PARTICLES = 2**32 - 1
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Cell widths outside this range make ``dx**2`` or ``1/dx**2`` leave float64's normal range.
_DX_RANGE = (1e-150, 1e150)

_TOP_KEYS = ("name", "description", "model", "sweep", "chunks", "criteria", "output", "units")
_SWEEP_KEYS = ("coefficient", "step_size", "cfl", "steps", "zip", *MODEL_KEYS)
_FORMS = ("linspace", "geomspace", "range")
_FORM_KEYS = (*_FORMS, "num")
_CRITERIA_KEYS = ("tolerance", "divergence")
_OUTPUT_KEYS = ("fields",)
_UNIT_CHOICES: dict[str, tuple[str, ...]] = {"length": LENGTH_UNITS, "time": TIME_UNITS}
#: names people write for the accepted symbols (only to say which symbol to write)
_UNIT_SYMBOLS: dict[str, str] = {
    **dict.fromkeys(("meter", "meters", "metre", "metres"), "m"),
    **dict.fromkeys(("kilometer", "kilometre"), "km"),
    **dict.fromkeys(("centimeter", "centimetre"), "cm"),
    **dict.fromkeys(("millimeter", "millimetre"), "mm"),
    **dict.fromkeys(("µm", "μm", "micrometer", "micrometre", "micron"), "um"),
    **dict.fromkeys(("nanometer", "nanometre"), "nm"),
    **dict.fromkeys(("second", "seconds", "sec"), "s"),
    **dict.fromkeys(("millisecond", "milliseconds"), "ms"),
    **dict.fromkeys(("µs", "μs", "microsecond", "microseconds"), "us"),
    **dict.fromkeys(("nanosecond", "nanoseconds"), "ns"),
    **dict.fromkeys(("minute", "minutes"), "min"),
    **dict.fromkeys(("hour", "hours", "hr"), "h"),
    **dict.fromkeys(("day", "days"), "d"),
    **dict.fromkeys(("dimensionless", "none", "", "-"), "1"),
}

_MODEL_DEFAULTS: dict[str, Any] = {
    "scheme": "ftcs",
    "dims": 1,
    "cells": 128,
    "length": 1.0,
    "boundary": "neumann",
    "initial": "step",
    "seed": 0,
    **PARTICLE_DEFAULTS,
}

Entries = dict[str, tuple[ScalarNode, Node]]


# --------------------------------------------------------------------------- entry points


class ParseOptions(TypedDict, total=False):
    """The options :func:`load_sweep` passes on to :func:`parse_sweep`."""

    memory_limit: int | None
    overrides: Sequence[str]
    worker_baseline: int


def load_sweep(path: str | PathLike[str], **options: Unpack[ParseOptions]) -> Sweep:
    """Read and validate the sweep definition in the file ``path``.

    Parameters
    ----------
    path
        A YAML file of at most :data:`~pipeline.sweep.MAX_TEXT_BYTES` (1 MiB), or
        ``"-"`` for standard input.  Whatever the file is (regular file, pipe, device),
        at most one byte more than the limit is read.
    **options
        ``memory_limit``, ``overrides`` and ``worker_baseline``, as in :func:`parse_sweep`.

    Raises
    ------
    SweepError
        If the file cannot be read, is too large, or the definition is invalid.
    """
    source = "<stdin>" if str(path) == "-" else str(path)
    data = _read_bounded(path, source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SweepError(
            f"Expected UTF-8 text. Got an undecodable byte at offset {error.start} instead.",
            source=source,
        ) from None
    return parse_sweep(text, source=source, **options)


def parse_sweep(
    text: str,
    *,
    source: str = "<string>",
    memory_limit: int | None = None,
    overrides: Sequence[str] = (),
    worker_baseline: int = 0,
) -> Sweep:
    """Validate the sweep definition ``text`` (YAML) and return it as a :class:`Sweep`.

    Parameters
    ----------
    text
        The YAML document.
    source
        Name used in error messages (and kept as :attr:`Sweep.source`).
    memory_limit
        Bytes one worker may use (it runs one task at a time); default
        :data:`~pipeline.sweep.DEFAULT_MEMORY_LIMIT`. A run that alone needs more
        than ``memory_limit - worker_baseline``, or explicit ``chunks`` whose task
        does, is refused.
    worker_baseline
        Bytes the worker uses before any task (``diffsweep`` passes the measured
        :data:`~pipeline.sweep.WORKER_BASELINE_BYTES`; default 0: the whole limit is
        the task's).
    overrides
        ``KEY=VALUE`` strings (``model.cells=64``, ``sweep.coefficient=[0.1, 1]``),
        applied in order to the YAML tree before it is validated; see
        :mod:`pipeline.sweep.overrides`.  With overrides, :attr:`Sweep.text` is the
        effective definition (YAML naming the overrides in a comment), so a store
        records what was computed.

    Raises
    ------
    SweepError
        Naming ``source:line``, the key path and the offending value.

    Examples
    --------
    >>> sweep = parse_sweep('''
    ... name: demo
    ... model: {scheme: ftcs, cells: 32}
    ... sweep:
    ...   coefficient: [0.1, 1.0]
    ...   cfl: {linspace: [0.1, 0.5], num: 5}
    ...   steps: [10, 100]
    ... ''')
    >>> sweep.axis_names, sweep.shape, sweep.n_runs
    (('coefficient', 'cfl', 'steps'), (2, 5, 2), 10)
    >>> sweep.axis("cfl").values
    (0.1, 0.2, 0.30000000000000004, 0.4, 0.5)
    >>> parse_sweep(sweep.text, overrides=["model.cells=64", "sweep.steps=1000"]).shape
    (2, 5, 1)
    >>> parse_sweep("name: demo\\nmodel: {cells: 2}\\nsweep: {}\\n")
    Traceback (most recent call last):
    ...
    pipeline.errors.SweepError: <string>:2: model.cells: Expected an integer >= 3. Got 2 instead.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    if memory_limit is None:
        memory_limit = DEFAULT_MEMORY_LIMIT
    if isinstance(memory_limit, bool) or not isinstance(memory_limit, int) or memory_limit <= 0:
        raise ValueError(f"memory_limit must be a positive number of bytes, not {memory_limit!r}")
    if not 0 <= worker_baseline < memory_limit:
        raise ValueError(f"worker_baseline must be at least 0 and below memory_limit, not {worker_baseline!r}")
    size = (
        len(text.encode("utf-8", "surrogatepass")) if len(text) * 4 > MAX_TEXT_BYTES else len(text)
    )
    if size > MAX_TEXT_BYTES:
        raise SweepError(_too_large(size), source=source)
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of 'KEY=VALUE' strings, not one string")
    parsed = tuple(parse_override(override) for override in overrides)
    return _Parser(text, source, memory_limit, parsed, worker_baseline).parse()


def _read_bounded(path: str | PathLike[str], source: str) -> bytes:
    """At most ``MAX_TEXT_BYTES + 1`` bytes of ``path`` (``-``: standard input)."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(MAX_TEXT_BYTES + 1)
        else:
            with open(path, "rb") as file:
                info = os.fstat(file.fileno())
                if stat.S_ISREG(info.st_mode) and info.st_size > MAX_TEXT_BYTES:
                    raise SweepError(_too_large(info.st_size), source=source)
                data = file.read(MAX_TEXT_BYTES + 1)
    except OSError as error:
        reason = error.strerror or str(error)
        raise SweepError(f"Cannot read the sweep definition: {reason}.", source=source) from None
    if len(data) > MAX_TEXT_BYTES:
        raise SweepError(_too_large(None), source=source)
    return data


def _too_large(size: int | None) -> str:
    limit = f"{MAX_TEXT_BYTES:,} bytes ({_bytes(MAX_TEXT_BYTES)})"
    got = f"is {size:,} bytes" if size is not None else f"is longer than {MAX_TEXT_BYTES:,} bytes"
    return (
        f"The sweep definition {got}; at most {limit} is accepted "
        "(it is a hand-written file, not data)."
    )


def _bytes(size: int) -> str:
    from dask.utils import format_bytes  # dask is heavy; only messages need it

    return str(format_bytes(size))


def _suggest(word: str, choices: Sequence[str]) -> str:
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else "."


# --------------------------------------------------------------------------- what values are


@dataclass(frozen=True)
class _Kind:
    """What one value of a key must be."""

    type: str  # "float" (> minimum, or >= with inclusive), "int" (>= minimum, <= maximum) or "choice"
    minimum: float = 0
    maximum: int = _INT64_MAX
    choices: tuple[str, ...] = ()
    why_maximum: str = ""
    inclusive: bool = False


_KINDS: dict[str, _Kind] = {
    "scheme": _Kind("choice", choices=SCHEMES),
    "dims": _Kind("int", 1, 3),
    "cells": _Kind("int", 3),
    "length": _Kind("float"),
    "boundary": _Kind("choice", choices=BOUNDARIES),
    "initial": _Kind("choice", choices=INITIALS),
    "seed": _Kind("int", 0),
    "particles": _Kind(
        "int", 1, MAX_PARTICLES, why_maximum=" (particles of one run; memory is checked too)"
    ),
    "confinement": _Kind("float", 0, inclusive=True),
    "coefficient": _Kind("float"),
    "step_size": _Kind("float"),
    "cfl": _Kind("float"),
    "steps": _Kind(
        "int",
        1,
        MAX_STEPS,
        why_maximum=" (the most steps one run may take; FTCS computes every one)",
    ),
}


@dataclass
class _AxisSpec:
    """An axis as written, with its length known before its values are made."""

    name: str
    path: str
    node: Node
    length: int
    materialise: Callable[[], list[Any]]


# --------------------------------------------------------------------------- the parser


class _Parser:
    """One pass over the composed node tree of one sweep definition."""

    def __init__(
        self,
        text: str,
        source: str,
        memory_limit: int,
        overrides: tuple[Override, ...] = (),
        worker_baseline: int = 0,
    ) -> None:
        self.text = text
        self.source = source
        #: bytes a task may use: the worker's limit less what the worker uses itself
        self.memory_limit = memory_limit - worker_baseline
        self.worker_baseline = worker_baseline
        self.overrides = overrides
        #: id of each node an override put into the tree -> the override's label
        self.override_labels: dict[int, str] = {}
        #: key -> (key path, key node) of every model key and axis given in the file
        self.key_nodes: dict[str, tuple[str, Node]] = {}

    def fail(self, message: str, key: str | None, where: Node | int | None) -> SweepError:
        """The error at ``where``: a line of the file, or the override that put it there."""
        if isinstance(where, Node) and id(where) in self.override_labels:
            return SweepError(message, key=key or None, source=self.override_labels[id(where)])
        return yamltree.error(self.source, message, key, where)

    # ---- the document, one method per section

    def parse(self) -> Sweep:
        root, top = self.parse_top()
        name = self.parse_name(top["name"][1])
        description = self.parse_description(top.get("description"))
        sweep_key, sweep_node = top["sweep"]
        sweep_entries = self.entries(sweep_node, "sweep", _SWEEP_KEYS)
        fixed, model_specs = self.parse_model(top["model"][1], sweep_entries)
        zipped_specs = self.parse_zip(sweep_entries)
        specs = model_specs + self.parse_sweep_axes(sweep_key, sweep_entries, zipped_specs)
        axes = self.make_axes(specs, sweep_key)
        zipped = tuple(Axis(spec.name, tuple(spec.materialise())) for spec in zipped_specs)
        self.check_cases(zipped, sweep_entries)
        lengths = {axis.name: len(axis) for axis in axes}
        sweep = Sweep(
            name=name,
            description=description,
            model=Model(**fixed),
            axes=axes,
            zipped=zipped,
            chunks=self.parse_chunks(top.get("chunks"), lengths),
            criteria=self.parse_criteria(self.optional_section(top, "criteria", _CRITERIA_KEYS)),
            output=self.parse_output(self.optional_section(top, "output", _OUTPUT_KEYS), lengths),
            units=self.parse_units(self.optional_section(top, "units", tuple(_UNIT_CHOICES))),
            text=effective_text(root, self.source, self.overrides) if self.overrides else self.text,
            source=self.source,
        )
        self.check_scales(sweep, top)
        self.check_particle_keys(sweep)
        self.check_memory(sweep, top)
        return sweep

    def parse_top(self) -> tuple[Node, Entries]:
        root = yamltree.compose(self.text, self.source)
        if self.overrides and isinstance(root, MappingNode):
            self.override_labels = apply_overrides(root, self.overrides)
        yamltree.check_tree(root, self.fail)
        if not isinstance(root, MappingNode):
            raise self.fail(
                "Expected a mapping with name, model and sweep at the top level. "
                f"Got {describe(root)} instead.",
                None,
                root,
            )
        top = self.entries(root, "", _TOP_KEYS)
        for required in ("name", "model", "sweep"):
            if required not in top:
                raise self.fail("Missing required key.", required, root)
        return root, top

    def parse_name(self, node: Node) -> str:
        name = self.value(node, "name", "a name")
        if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
            raise self.fail(
                "Expected a name of letters, digits, '.', '_' and '-' (at most 128, starting "
                f"with a letter or digit; it names files). Got {show(name)} instead.",
                "name",
                node,
            )
        return name

    def parse_description(self, entry: tuple[ScalarNode, Node] | None) -> str:
        if entry is None or is_null(entry[1]):
            return ""
        description = self.value(entry[1], "description", "text")
        if not isinstance(description, str):
            raise self.fail(
                f"Expected text. Got {show(description)} instead (quote it).",
                "description",
                entry[1],
            )
        return description

    def parse_model(
        self, model_node: Node, sweep_entries: Entries
    ) -> tuple[dict[str, Any], list[_AxisSpec]]:
        """Fixed model values (``None`` where swept) and the model keys given as axes.

        A model key is an axis when it is a list or form in ``model`` or any value under
        ``sweep``; it may not be in both.
        """
        model_entries = self.entries(model_node, "model", MODEL_KEYS)
        fixed: dict[str, Any] = {}
        specs: list[_AxisSpec] = []
        for key in MODEL_KEYS:
            fixed[key] = None
            if key in model_entries and key in sweep_entries:
                raise self.fail(
                    f"Model key {key!r} is set in model (line {yamltree.line(model_entries[key][0])}) "
                    "and swept here; give it in one place.",
                    f"sweep.{key}",
                    sweep_entries[key][0],
                )
            if key in sweep_entries:
                self.key_nodes[key] = (f"sweep.{key}", sweep_entries[key][0])
                specs.append(self.axis_spec(key, f"sweep.{key}", sweep_entries[key][1]))
                continue
            if key in model_entries:
                self.key_nodes[key] = (f"model.{key}", model_entries[key][0])
            if key not in model_entries:
                fixed[key] = _MODEL_DEFAULTS[key]
            elif isinstance(value_node := model_entries[key][1], ScalarNode):
                fixed[key] = self.element(key, scalar(value_node), f"model.{key}", value_node)
            else:
                specs.append(self.axis_spec(key, f"model.{key}", value_node))
        return fixed, specs

    def parse_zip(self, entries: Entries) -> list[_AxisSpec]:
        """``zip: {coefficient: [...], step_size: [...]}``: axes that vary together.

        They become one dimension, :data:`~pipeline.sweep.CASE`, with one run per
        position of the lists (which must be equally long); ``[]`` without ``zip``.
        """
        if "zip" not in entries:
            return []
        zip_key, node = entries["zip"]
        if not isinstance(node, MappingNode):
            raise self.fail(
                "Expected a mapping of the axes that vary together, e.g. "
                f"{{coefficient: [...], step_size: [...]}}. Got {describe(node)} instead.",
                "sweep.zip",
                node,
            )
        for key_node, _ in node.value:
            key = key_node.value
            if key == "steps":
                raise self.fail(
                    "steps are the checkpoints of every run, not a setting of one run; "
                    "give steps beside zip, not in it.",
                    "sweep.zip.steps",
                    key_node,
                )
            if key in MODEL_KEYS:
                raise self.fail(
                    f"Only coefficient and step_size or cfl vary together; {key} changes the "
                    f"arrays of a run, so sweep it as its own axis (sweep.{key}).",
                    f"sweep.zip.{key}",
                    key_node,
                )
        zipped = self.entries(node, "sweep.zip", ZIPPABLE)
        if "step_size" in zipped and "cfl" in zipped:
            raise self.fail(
                "Expected exactly one of step_size or cfl. Got both instead.",
                "sweep.zip.cfl",
                zipped["cfl"][0],
            )
        if len(zipped) < 2:
            given = " ".join(zipped) or "nothing"
            missing = "step_size or cfl" if "coefficient" in zipped else "coefficient"
            raise self.fail(
                "Expected the axes that vary together: coefficient and step_size or cfl. "
                f"Got {given} instead; add {missing}.",
                "sweep.zip",
                zip_key,
            )
        specs = []
        for key in ZIPPABLE:
            if key in zipped:
                path = f"sweep.zip.{key}"
                self.key_nodes[key] = (path, zipped[key][0])
                specs.append(self.axis_spec(key, path, zipped[key][1], unique=False))
        first = specs[0]
        for spec in specs[1:]:
            if spec.length != first.length:
                raise self.fail(
                    f"Expected {first.length} values, as many as {first.path} (line "
                    f"{yamltree.line(first.node)}): zipped axes pair their values one by one. "
                    f"Got {spec.length} instead.",
                    spec.path,
                    spec.node,
                )
        return specs

    def check_cases(self, zipped: tuple[Axis, ...], entries: Entries) -> None:
        """Refuse a case given twice (the same values of every zipped axis): one run twice."""
        first: dict[tuple[Any, ...], int] = {}
        for i, case in enumerate(zip(*(axis.values for axis in zipped), strict=True)):
            if case in first:
                values = " with ".join(f"{axis.name} {show(value)}" for axis, value in zip(zipped, case, strict=True))
                raise self.fail(
                    f"Expected every case once. Got {values} at positions {first[case]} and {i} "
                    "instead (the same run twice).",
                    "sweep.zip",
                    entries["zip"][0],
                )
            first[case] = i

    def parse_sweep_axes(
        self, sweep_key: ScalarNode, entries: Entries, zipped: Sequence[_AxisSpec] = ()
    ) -> list[_AxisSpec]:
        """The ``coefficient``, ``step_size`` or ``cfl``, and ``steps`` axes, in that
        order; the ``case`` axis in place of the first two when they are ``zipped``."""
        specs = []
        zipped_names = [spec.name for spec in zipped]
        for name in STEP_AXES if zipped_names else ():
            if name in entries and name not in zipped_names:  # the other way of giving the step
                other = next(n for n in zipped_names if n in STEP_AXES)
                raise self.fail(
                    f"Expected exactly one of step_size or cfl. Got {other} in zip (line "
                    f"{yamltree.line(self.key_nodes[other][1])}) and {name} here instead.",
                    f"sweep.{name}",
                    entries[name][0],
                )
        for name in zipped_names:
            if name in entries:
                raise self.fail(
                    f"{name!r} varies in zip (line {yamltree.line(self.key_nodes[name][1])}) "
                    "and is swept here too; give it in one place.",
                    f"sweep.{name}",
                    entries[name][0],
                )
        if zipped:
            length = zipped[0].length
            specs.append(_AxisSpec(CASE, "sweep.zip", zipped[0].node, length, lambda: list(range(length))))
        for key in ("steps",) if zipped else ("coefficient", "step", "steps"):
            if key == "step":
                given = [name for name in STEP_AXES if name in entries]
                if len(given) == 2:
                    raise self.fail(
                        "Expected exactly one of step_size or cfl. Got both instead.",
                        "sweep.cfl",
                        entries["cfl"][0],
                    )
                if not given:
                    raise self.fail(
                        "Missing required key: give the time step as step_size, or as cfl "
                        "(r = D*dt/dx**2).",
                        "sweep.step_size",
                        sweep_key,
                    )
                key = given[0]
            if key not in entries:
                raise self.fail("Missing required key.", f"sweep.{key}", sweep_key)
            self.key_nodes[key] = (f"sweep.{key}", entries[key][0])
            specs.append(self.axis_spec(key, f"sweep.{key}", entries[key][1]))
        return specs

    def make_axes(self, specs: list[_AxisSpec], sweep_key: ScalarNode) -> tuple[Axis, ...]:
        """The axes' values, made only once the grid's size is known to be acceptable."""
        total = math.prod(spec.length for spec in specs)
        if total > MAX_RESULTS:
            sizes = " x ".join(f"{spec.length:,} {spec.name}" for spec in specs)
            raise self.fail(
                f"Expected at most {MAX_RESULTS:,} results (runs x checkpoints). "
                f"Got {total:,} ({sizes}) instead.",
                "sweep",
                sweep_key,
            )
        axes = []
        for spec in specs:
            values = spec.materialise()
            axes.append(Axis(spec.name, tuple(sorted(values) if spec.name == "steps" else values)))
        return tuple(axes)

    def parse_chunks(
        self, entry: tuple[ScalarNode, Node] | None, axis_lengths: dict[str, int]
    ) -> tuple[tuple[str, int], ...]:
        if entry is None or is_null(entry[1]):
            return ()
        node = entry[1]
        if not isinstance(node, MappingNode):
            raise self.fail(
                f"Expected a mapping of axis names to runs per task. Got {describe(node)} instead.",
                "chunks",
                node,
            )
        sizes: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            path = f"chunks.{key}"
            self.check_chunk_axis(key, path, key_node, axis_lengths)
            size = self.as_int(self.value(value_node, path, "an integer"), path, value_node, 1)
            if size > axis_lengths[key]:
                raise self.fail(
                    f"Expected at most {axis_lengths[key]} (the length of axis {key}). "
                    f"Got {size} instead.",
                    path,
                    value_node,
                )
            sizes[key] = size
        return tuple((name, sizes[name]) for name in axis_lengths if name in sizes)

    def check_chunk_axis(
        self, key: str, path: str, key_node: Node, axis_lengths: dict[str, int]
    ) -> None:
        if key == "steps":
            raise self.fail(
                "The step-count axis is never chunked: one trajectory serves every checkpoint.",
                path,
                key_node,
            )
        if key not in axis_lengths:
            chunkable = [name for name in axis_lengths if name != "steps"]
            hint = " (it is not swept here)." if key in _SWEEP_KEYS else _suggest(key, chunkable)
            if key in ZIPPABLE and CASE in axis_lengths:
                hint = f" (it is zipped: its runs lie along {CASE!r}; chunk {CASE})."
            raise self.fail(
                f"Expected an axis name. Got {key!r} instead{hint} "
                f"Axes that can be chunked: {', '.join(chunkable)}.",
                path,
                key_node,
            )

    def parse_criteria(self, entries: Entries) -> Criteria:
        values: dict[str, float] = {}
        for key, minimum in (("tolerance", 0.0), ("divergence", 1.0)):
            if key in entries:
                path = f"criteria.{key}"
                node = entries[key][1]
                values[key] = self.as_float(self.value(node, path, "a number"), path, node, minimum)
        return Criteria(**values)

    def parse_output(self, entries: Entries, axis_lengths: dict[str, int]) -> Output:
        if "fields" not in entries:
            return Output()
        node = entries["fields"][1]
        fields = self.as_choice(
            self.value(node, "output.fields", "a name"), FIELDS, "output.fields", node
        )
        varying = [key for key in ("dims", "cells") if key in axis_lengths]
        if fields != "none" and varying:
            raise self.fail(
                f"Expected 'none' when {' and '.join(varying)} is swept (stored fields would "
                f"have a different shape per run). Got {fields!r} instead.",
                "output.fields",
                node,
            )
        return Output(fields)

    def parse_units(self, entries: Entries) -> Units:
        """``units: {length: m, time: s}``: UDUNITS symbols from a short list, ``1`` by default."""
        values: dict[str, str] = {}
        for key, choices in _UNIT_CHOICES.items():
            if key not in entries:
                continue
            path, node = f"units.{key}", entries[key][1]
            value = self.value(node, path, "a unit symbol")
            if value == 1 and not isinstance(value, bool):
                value = "1"
            if not isinstance(value, str) or value not in choices:
                symbol = _UNIT_SYMBOLS.get(str(value).strip().lower()) if isinstance(value, str) else None
                hint = f"; write {symbol!r}" if symbol in choices else ""
                options = ", ".join(repr(choice) for choice in choices)
                raise self.fail(
                    f"Expected a {key} unit, one of {options} (UDUNITS symbols; '1': "
                    f"nondimensional). Got {show(value)} instead{hint}.",
                    path,
                    node,
                )
            values[key] = value
        return Units(**values)

    # ---- checks of the whole definition

    def where(self, top: Entries, *keys: str) -> tuple[str, Node]:
        """Key path and key node of the first of ``keys`` given in the file, else ``model``."""
        for key in keys:
            if key in self.key_nodes:
                return self.key_nodes[key]
        return "model", top["model"][0]

    def check_scales(self, sweep: Sweep, top: Entries) -> None:
        """Refuse numbers whose derived quantities leave float64 (``length: 1e300``).

        The cell width ``dx``, ``dx**2``, the CFL number ``D dt / dx**2`` (or the step
        size ``r dx**2 / D``) and the final time ``steps * dt`` must all be finite,
        normal floats for every run; their extremes are reached at the extremes of
        the axes, so only those are computed.
        """
        lengths = sweep.model_values("length")
        cells = sweep.model_values("cells")
        for length, width in (
            (max(lengths), max(lengths) / min(cells)),
            (min(lengths), min(lengths) / max(cells)),
        ):
            if not _DX_RANGE[0] <= width <= _DX_RANGE[1]:
                path, node = self.where(top, "length")
                raise self.fail(
                    f"Expected a length whose cell width dx = length / cells lies between "
                    f"{_DX_RANGE[0]:g} and {_DX_RANGE[1]:g} (dx**2 and 1/dx**2 must be "
                    f"float64 numbers). Got {show(length)} instead (dx = {width:.3g}); "
                    "choose units in which lengths are near 1.",
                    path,
                    node,
                )
        dx2 = (min(lengths) / max(cells)) ** 2, (max(lengths) / min(cells)) ** 2
        coefficient = sweep.axis("coefficient").values
        step = sweep.axis(sweep.step_axis).values
        if sweep.step_axis == "step_size":
            derived = "CFL number D*dt/dx**2"
            low, high = min(coefficient) * min(step) / dx2[1], max(coefficient) * max(step) / dx2[0]
            dt_high = max(step)
        else:
            derived = "step size cfl*dx**2/D"
            low, high = min(step) * dx2[0] / max(coefficient), max(step) * dx2[1] / min(coefficient)
            dt_high = high
        final_time = max(sweep.checkpoints) * dt_high
        for value, what, result, ok in (
            (min(step), derived, low, low >= sys.float_info.min),
            (max(step), derived, high, math.isfinite(high)),
            (max(step), "final time steps*dt", final_time, math.isfinite(final_time)),
        ):
            if not ok:
                path, node = self.where(top, sweep.step_axis)
                raise self.fail(
                    f"Expected values whose {what} is a float64 number for every run. "
                    f"Got {show(value)} instead, giving {result:.3g} with coefficients "
                    f"{min(coefficient):g} to {max(coefficient):g} and dx**2 {dx2[0]:.3g} to "
                    f"{dx2[1]:.3g}.",
                    path,
                    node,
                )

    def check_particle_keys(self, sweep: Sweep) -> None:
        """Refuse a particle key that no scheme of the sweep uses (``confinement`` with
        ``random-walk``, ``particles`` with ``ftcs``): it would be silently ignored."""
        schemes = sweep.model_values("scheme")
        for key, users in PARTICLE_KEYS.items():
            if key in self.key_nodes and not any(scheme in users for scheme in schemes):
                path, node = self.key_nodes[key]
                used_by = " and ".join(users) + (" schemes" if len(users) > 1 else " scheme")
                given = ", ".join(str(scheme) for scheme in schemes)
                raise self.fail(
                    f"{key} applies only to the {used_by}; this sweep's scheme is {given}. "
                    f"Remove {key}, or use a scheme that takes it.",
                    path,
                    node,
                )

    def limit_text(self) -> str:
        """The memory a task may use, in words (naming the worker's baseline when there is one)."""
        if not self.worker_baseline:
            return f"the memory limit of {_bytes(self.memory_limit)} per task"
        return (
            f"the {_bytes(self.memory_limit)} left to a task (a memory limit of "
            f"{_bytes(self.memory_limit + self.worker_baseline)} less about "
            f"{_bytes(self.worker_baseline)} a dask worker uses itself)"
        )

    def check_memory(self, sweep: Sweep, top: Entries) -> None:
        per_run = sweep.memory_per_run()
        particle_bytes = sweep.particle_memory_per_run()
        if per_run > self.memory_limit and particle_bytes > per_run / 2:
            path, node = self.where(top, "particles")
            particles = int(max(sweep.model_values("particles")))
            raise self.fail(
                f"One run of {particles:,} particles in {sweep.dims_max}-D needs about "
                f"{_bytes(per_run)}, more than the memory limit of {_bytes(self.memory_limit)} "
                "per task; use fewer particles.",
                path,
                node,
            )
        if per_run > self.memory_limit:
            path, node = self.where(top, "cells", "dims")
            grid = f"{sweep.dims_max}-D grid of {sweep.cells_max} cells per dimension"
            raise self.fail(
                f"One run on a {grid} needs about {_bytes(per_run)} "
                f"(output.fields {sweep.output.fields!r}), more than {self.limit_text()}.",
                path,
                node,
            )
        per_task = sweep.memory_per_task()
        if sweep.chunks and "chunks" in top and per_task > self.memory_limit:
            shape = " x ".join(
                f"{size} {axis.name}"
                for axis, size in zip(sweep.axes[:-1], sweep.chunk_shape[:-1], strict=True)
            )
            raise self.fail(
                f"One task of {sweep.runs_per_task:,} runs ({shape}) needs about "
                f"{_bytes(per_task)} ({_bytes(per_run)} per run), more than "
                f"{self.limit_text()}; use smaller chunks.",
                "chunks",
                top["chunks"][0],
            )

    # ---- mappings

    def entries(self, node: Node, path: str, allowed: Sequence[str]) -> Entries:
        """The entries of mapping ``node``; unknown keys are refused."""
        if not isinstance(node, MappingNode):
            raise self.fail(f"Expected a mapping. Got {describe(node)} instead.", path, node)
        result: Entries = {}
        previous: tuple[ScalarNode, Node] | None = None
        for key_node, value_node in node.value:
            key = key_node.value
            if key not in allowed:
                hint = yamltree.flow_comma_hint(node, key_node, value_node, previous)
                if hint != ".":
                    raise self.fail(
                        f"Expected a key. Got the number {key} instead{hint}", path, key_node
                    )
                raise self.fail(
                    f"Unknown key{_suggest(key, allowed)} Allowed here: {', '.join(allowed)}.",
                    join(path, key),
                    key_node,
                )
            result[key] = previous = (key_node, value_node)
        return result

    def optional_section(self, top: Entries, key: str, allowed: Sequence[str]) -> Entries:
        if key not in top or is_null(top[key][1]):
            return {}
        return self.entries(top[key][1], key, allowed)

    # ---- scalar values

    def value(self, node: Node, path: str, expected: str) -> Any:
        """The scalar at ``node``; lists and mappings are refused."""
        if not isinstance(node, ScalarNode):
            raise self.fail(f"Expected {expected}. Got {describe(node)} instead.", path, node)
        return scalar(node)

    def as_float(
        self, value: Any, path: str, where: Node | int, minimum: float = 0.0, inclusive: bool = False
    ) -> float:
        expected = f"a number {'>=' if inclusive else '>'} {minimum:g}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"Expected {expected}. Got {show(value)} instead.", path, where)
        number = float(value) if isinstance(value, float) or abs(value) < 2**1023 else math.inf
        if not math.isfinite(number):
            raise self.fail(
                f"Expected a finite {expected[2:]}. Got {show(number)} instead.", path, where
            )
        if not (number >= minimum if inclusive else number > minimum):
            raise self.fail(f"Expected {expected}. Got {show(value)} instead.", path, where)
        return number

    def as_int(
        self,
        value: Any,
        path: str,
        where: Node | int,
        minimum: int | None = None,
        maximum: int | None = None,
        why_maximum: str = "",
    ) -> int:
        if minimum is not None and maximum is not None and maximum <= 3:
            expected = f"an integer from {minimum} to {maximum}"
        elif minimum is not None:
            expected = f"an integer >= {minimum}"
        else:
            expected = "an integer"
        integral_float = isinstance(value, float) and math.isfinite(value) and value == int(value)
        if isinstance(value, bool) or not (isinstance(value, int) or integral_float):
            raise self.fail(f"Expected {expected}. Got {show(value)} instead.", path, where)
        number = int(value)
        if minimum is not None and number < minimum:
            raise self.fail(f"Expected {expected}. Got {show(value)} instead.", path, where)
        if maximum is not None and number > maximum:
            if maximum > 3:
                expected = f"an integer <= {maximum:,}{why_maximum}"
            raise self.fail(f"Expected {expected}. Got {show(value)} instead.", path, where)
        return number

    def as_choice(self, value: Any, choices: Sequence[str], path: str, where: Node | int) -> str:
        if not isinstance(value, str) or value not in choices:
            hint = _suggest(value, choices) if isinstance(value, str) else "."
            options = ", ".join(repr(choice) for choice in choices)
            raise self.fail(
                f"Expected one of {options}. Got {show(value)} instead{hint}", path, where
            )
        return value

    def element(self, key: str, value: Any, path: str, where: Node | int) -> Any:
        """One value of ``key`` (a fixed model value or one value of an axis)."""
        kind = _KINDS[key]
        if kind.type == "choice":
            return self.as_choice(value, kind.choices, path, where)
        if kind.type == "int":
            return self.as_int(
                value, path, where, int(kind.minimum), kind.maximum, kind.why_maximum
            )
        return self.as_float(value, path, where, kind.minimum, kind.inclusive)

    # ---- axes

    def axis_spec(self, key: str, path: str, node: Node, unique: bool = True) -> _AxisSpec:
        """Read the axis ``key`` at ``node``: a scalar, a list or a generating form.

        ``unique=False`` lets values repeat (a zipped axis: its cases must differ, not
        its values)."""
        if isinstance(node, ScalarNode):
            return self.scalar_axis(key, path, node)
        if isinstance(node, SequenceNode):
            return self.list_axis(key, path, node, unique)
        return self.axis_form(key, path, node, unique)

    def scalar_axis(self, key: str, path: str, node: ScalarNode) -> _AxisSpec:
        value = scalar(node)
        if value is None:
            raise self.fail(
                "Expected a value, a list of values or a mapping such as "
                "{linspace: [a, b], num: n}. Got None instead.",
                path,
                node,
            )
        values = [self.element(key, value, path, node)]
        return _AxisSpec(key, path, node, 1, lambda: values)

    def list_axis(self, key: str, path: str, node: SequenceNode, unique: bool = True) -> _AxisSpec:
        if not node.value:
            raise self.fail("Expected at least one value. Got an empty list instead.", path, node)
        values = []
        first_index: dict[Any, int] = {}
        for i, item in enumerate(node.value):
            item_path = f"{path}[{i}]"
            value = self.element(
                key, self.value(item, item_path, "a single value"), item_path, item
            )
            if unique and value in first_index:
                raise self.fail(
                    f"Expected unique values. Got {show(value)} again "
                    f"(it is also at index {first_index[value]}) instead.",
                    item_path,
                    item,
                )
            first_index.setdefault(value, i)
            values.append(value)
        return _AxisSpec(key, path, node, len(values), lambda: values)

    def axis_form(self, key: str, path: str, node: Node, unique: bool = True) -> _AxisSpec:
        if _KINDS[key].type == "choice":
            raise self.fail(
                f"Expected a name or a list of names. Got {describe(node)} instead.", path, node
            )
        self.check_form_names(path, node)
        entries = self.entries(node, path, _FORM_KEYS)
        forms = [form for form in _FORMS if form in entries]
        if len(forms) != 1:
            got = "none of them" if not forms else " and ".join(forms)
            raise self.fail(
                f"Expected exactly one of linspace, geomspace or range. Got {got} instead.",
                path,
                node,
            )
        form = forms[0]
        if form == "range":
            if "num" in entries:
                raise self.fail(
                    "num goes with linspace or geomspace; range takes [start, stop, step].",
                    f"{path}.num",
                    entries["num"][0],
                )
            return self.range_spec(key, f"{path}.range", entries["range"][1])
        if "num" not in entries:
            raise self.fail(
                f"Missing key 'num' (how many values {form} gives).",
                f"{path}.num",
                entries[form][0],
            )
        return self.spaced_spec(key, path, form, entries, unique)

    def check_form_names(self, path: str, node: Node) -> None:
        """Name the form meant by numpy words that are not forms here (``logspace``, ``arange``)."""
        if not isinstance(node, MappingNode):
            return
        for key_node, value_node in node.value:
            if key_node.value == "logspace":
                example = ""
                ends = [
                    scalar(n) for n in getattr(value_node, "value", []) if isinstance(n, ScalarNode)
                ]
                if len(ends) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in ends
                ):
                    if all(abs(v) < 300 for v in ends):
                        values = ", ".join(f"{10.0**v:g}" for v in ends)
                        example = f" ({{logspace: [{ends[0]}, {ends[1]}]}} means {{geomspace: [{values}]}})"
                raise self.fail(
                    "Unknown key: write geomspace, which takes the end values themselves, "
                    f"not their base-10 exponents as numpy's logspace does{example}.",
                    f"{path}.logspace",
                    key_node,
                )
            if key_node.value == "arange":
                raise self.fail(
                    "Unknown key: write range: [start, stop, step] (integers, stop excluded), "
                    "or linspace: [start, stop] with num for evenly spaced numbers.",
                    f"{path}.arange",
                    key_node,
                )

    def spaced_spec(
        self, key: str, path: str, form: str, entries: Entries, unique: bool = True
    ) -> _AxisSpec:
        """``{linspace: [a, b], num: n}`` or ``{geomspace: [a, b], num: n}``."""
        form_path = f"{path}.{form}"
        form_node = entries[form][1]
        num_node = entries["num"][1]
        num = self.as_int(
            self.value(num_node, f"{path}.num", "an integer"),
            f"{path}.num",
            num_node,
            1,
            MAX_AXIS_LENGTH,
        )
        ends = []
        for i, bound in enumerate(self.sequence(form_node, form_path, 2, "[start, stop]")):
            bound_path = f"{form_path}[{i}]"
            value = self.value(bound, bound_path, "a number")
            if form == "geomspace":
                self.as_float(value, bound_path, bound)
            ends.append(self.element(key, value, bound_path, bound))
        whole = _KINDS[key].type == "int"

        def materialise() -> list[Any]:
            make = np.linspace if form == "linspace" else np.geomspace
            array = make(float(ends[0]), float(ends[1]), num)
            values: list[Any]
            if whole:
                rounded = np.rint(array)
                inexact = ~np.isclose(array, rounded, rtol=1e-9, atol=0.0)
                if inexact.any():
                    raise self.fail(
                        f"Expected whole numbers. Got {array[inexact][0]:.6g} among the {num} "
                        f"values of {form} instead; use range or a list.",
                        form_path,
                        form_node,
                    )
                values = [int(v) for v in rounded.tolist()]
            else:
                values = [float(v) for v in array.tolist()]
            if unique and len(set(values)) != len(values):
                duplicate = next(v for i, v in enumerate(values) if v in values[:i])
                raise self.fail(
                    f"Expected unique values. Got {show(duplicate)} more than once from "
                    f"{form} {ends} with num {num} instead.",
                    form_path,
                    form_node,
                )
            return values

        return _AxisSpec(key, path, form_node, num, materialise)

    def range_spec(self, key: str, path: str, node: Node) -> _AxisSpec:
        """``{range: [start, stop, step]}``: integers, stop excluded, as Python's range."""
        parts = self.sequence(node, path, (2, 3), "[start, stop, step]")
        numbers = [
            self.as_int(self.value(part, f"{path}[{i}]", "an integer"), f"{path}[{i}]", part)
            for i, part in enumerate(parts)
        ]
        if len(numbers) == 2:
            start, stop = numbers
            count = max(stop - start, 0)
            step = max(1, abs(stop - start) // 3) * (1 if stop >= start else -1)
            raise self.fail(
                f"Expected a list [start, stop, step]. Got {numbers} without a step instead, "
                f"which would mean all {count:,} integers from {start} to {stop - 1}; "
                f"give the step, e.g. [{start}, {stop}, {step}] (stop is excluded, as in Python).",
                path,
                node,
            )
        if numbers[2] == 0:
            raise self.fail("Expected a step other than 0. Got 0 instead.", f"{path}[2]", parts[2])
        values_range = range(*numbers)
        length = len(values_range)  # known without making the values
        if length == 0:
            raise self.fail(
                f"Expected at least one value. Got an empty range {numbers} instead.", path, node
            )
        if length > MAX_AXIS_LENGTH:
            raise self.fail(
                f"Expected at most {MAX_AXIS_LENGTH:,} values. Got {length:,} instead.", path, node
            )
        # a range is monotone, so its ends bound every value
        first = self.element(key, values_range[0], path, node)
        self.element(key, values_range[-1], path, node)
        convert = float if isinstance(first, float) else int
        return _AxisSpec(key, path, node, length, lambda: [convert(v) for v in values_range])

    def sequence(
        self, node: Node, path: str, lengths: int | tuple[int, ...], layout: str
    ) -> list[Node]:
        allowed = (lengths,) if isinstance(lengths, int) else lengths
        if isinstance(node, SequenceNode) and len(node.value) in allowed:
            return list(node.value)
        got = f"a list of {len(node.value)}" if isinstance(node, SequenceNode) else describe(node)
        hint = ""
        if isinstance(node, ScalarNode) and isinstance(text := scalar(node), str) and "," in text:
            hint = f"; put the list in brackets: [{text}]"
        raise self.fail(f"Expected a list {layout}. Got {got} instead{hint}.", path, node)
