"""The sweep definition: parse and validate a YAML file into an immutable :class:`Sweep`.

A sweep definition names a model (scheme, grid, boundary, initial condition), the axes
of the parameter grid (``coefficient``, ``step_size`` or ``cfl``, ``steps`` and any
model key), how the grid is cut into tasks (``chunks``), the stability criteria and
what to store.  :func:`parse_sweep` checks all of it once, before anything is
computed, and every refusal is a :class:`~pipeline.errors.SweepError` naming the
file, line, key path and offending value.  Everything downstream trusts a
:class:`Sweep`.

The YAML is read with PyYAML's *safe* composer only: the node tree keeps line numbers,
tags are checked before any value is constructed, and no tag that builds a Python
object is ever honoured.  Plain scalars that are numbers in YAML 1.2 but strings in
PyYAML's YAML 1.1 resolver (``1e3``, ``1.0e3``) are read as numbers, as a scientist
writing them means.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.errors import SweepError

__all__ = [
    "BOUNDARIES",
    "DEFAULT_MEMORY_LIMIT",
    "FIELDS",
    "INITIALS",
    "MAX_AXIS_LENGTH",
    "MAX_RESULTS",
    "MAX_TEXT_BYTES",
    "MODEL_KEYS",
    "SCHEMES",
    "Axis",
    "Criteria",
    "Model",
    "Output",
    "RunModel",
    "Sweep",
    "load_sweep",
    "parse_sweep",
]

# The same tuples as in pipeline.numerics, kept here so that reading a sweep never
# imports the numerical kernels; tests/test_sweep.py checks that they stay equal.
SCHEMES: tuple[str, ...] = ("ftcs", "backward-euler", "crank-nicolson")
BOUNDARIES: tuple[str, ...] = ("neumann", "periodic", "dirichlet")
INITIALS: tuple[str, ...] = ("step", "gaussian", "random")
FIELDS: tuple[str, ...] = ("none", "final", "checkpoints")

#: Model keys, in the order their axes come first in :attr:`Sweep.axes`.
MODEL_KEYS: tuple[str, ...] = ("scheme", "dims", "cells", "length", "boundary", "initial", "seed")
STEP_AXES: tuple[str, ...] = ("step_size", "cfl")

DEFAULT_MEMORY_LIMIT = 2 * 2**30  # bytes per task
MAX_TEXT_BYTES = 2**20  # a sweep definition is a small, hand-written file
MAX_AXIS_LENGTH = 10**6  # values along one axis
MAX_RESULTS = 10**9  # points of the whole result grid (runs x checkpoints)

# Memory model of one run: the state, the next state and work arrays of the schemes
# (about six fields of cells**dims float64), plus any stored fields, plus the five
# float64 measures and the int8 status per checkpoint.
_WORK_ARRAYS = 6
_BYTES_PER_VALUE = 8
_DIAGNOSTIC_BYTES_PER_CHECKPOINT = 5 * 8 + 1

_INT64_MAX = 2**63 - 1
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_YAML12_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")

_TOP_KEYS = ("name", "description", "model", "sweep", "chunks", "criteria", "output")
_SWEEP_KEYS = ("coefficient", "step_size", "cfl", "steps", *MODEL_KEYS)
_FORM_KEYS = ("linspace", "geomspace", "range", "num")
_CRITERIA_KEYS = ("tolerance", "divergence")
_OUTPUT_KEYS = ("fields",)

_MODEL_DEFAULTS: dict[str, Any] = {
    "scheme": "ftcs",
    "dims": 1,
    "cells": 128,
    "length": 1.0,
    "boundary": "neumann",
    "initial": "step",
    "seed": 0,
}


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Axis:
    """One dimension of the parameter grid.

    Parameters
    ----------
    name
        ``coefficient``, ``step_size``/``cfl``, ``steps`` or a model key.
    values
        The coordinate values, Python scalars (``float``, ``int`` or ``str``), unique;
        ``steps`` ascending.
    """

    name: str
    values: tuple[Any, ...]

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Model:
    """The fixed model settings; a key that is swept holds ``None`` (read its axis)."""

    scheme: str | None = "ftcs"
    dims: int | None = 1
    cells: int | None = 128
    length: float | None = 1.0
    boundary: str | None = "neumann"
    initial: str | None = "step"
    seed: int | None = 0


@dataclass(frozen=True)
class RunModel:
    """The complete model of one run (or of every run of one block): no swept ``None``.

    Build it with :meth:`Sweep.run_model` (from a sweep) or ``RunModel(**values)`` (from
    the coordinates and attributes of a results store).

    Examples
    --------
    >>> model = RunModel(scheme="ftcs", dims=2, cells=64, length=2.0,
    ...                  boundary="neumann", initial="step", seed=0)
    >>> model.dx
    0.03125
    >>> model.stability_limit
    0.25
    """

    scheme: str
    dims: int
    cells: int
    length: float
    boundary: str
    initial: str
    seed: int

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunModel:
        """From a mapping holding every model key (numpy scalars become Python ones)."""
        plain = {key: values[key].item() if isinstance(values[key], np.generic) else values[key] for key in MODEL_KEYS}
        return cls(
            scheme=str(plain["scheme"]),
            dims=int(plain["dims"]),
            cells=int(plain["cells"]),
            length=float(plain["length"]),
            boundary=str(plain["boundary"]),
            initial=str(plain["initial"]),
            seed=int(plain["seed"]),
        )

    def as_dict(self) -> dict[str, Any]:
        """The model keys and their values, in :data:`MODEL_KEYS` order."""
        return {key: getattr(self, key) for key in MODEL_KEYS}

    @property
    def dx(self) -> float:
        """Cell width, ``length / cells``."""
        return self.length / self.cells

    @property
    def cells_total(self) -> int:
        """Cells of one field, ``cells ** dims``."""
        return self.cells**self.dims

    @property
    def grid(self) -> Any:
        """The :class:`pipeline.numerics.Grid` of this model (imports the numerics)."""
        from pipeline.numerics import Grid

        return Grid(dims=self.dims, cells=self.cells, length=self.length)

    @property
    def stability_limit(self) -> float | None:
        """Largest stable CFL number ``D dt / dx**2`` (von Neumann), ``None`` if unconditional."""
        from pipeline.numerics import stability_limit

        return stability_limit(self.scheme, self.dims)


@dataclass(frozen=True)
class Criteria:
    """Stability classification thresholds (see DESIGN, diagnostics)."""

    tolerance: float = 1e-3
    divergence: float = 1e3


@dataclass(frozen=True)
class Output:
    """What is stored beside the measures: ``none``, ``final`` or ``checkpoints`` fields."""

    fields: str = "none"


@dataclass(frozen=True)
class Sweep:
    """A validated sweep definition: an immutable, hashable value.

    Equality and hashing use the normalised definition only, never ``text`` or
    ``source``; :attr:`sha256` is the stable content hash stores are tagged with.

    Attributes
    ----------
    name, description
        Identification; ``name`` is safe as a file stem.
    model
        Fixed model settings (swept keys hold ``None``).
    axes
        The grid dimensions in result order: swept model keys (in :data:`MODEL_KEYS`
        order), ``coefficient``, ``step_size`` or ``cfl``, then ``steps``.
    chunks
        Explicit runs per task along axes, ``((axis, size), ...)`` in axis order; axes
        not named are unchunked (``steps`` never is).
    criteria, output
        Classification thresholds and stored fields.
    text
        The YAML exactly as given.
    source
        Where it came from (file name or ``<string>``).
    """

    name: str
    description: str
    model: Model
    axes: tuple[Axis, ...]
    chunks: tuple[tuple[str, int], ...]
    criteria: Criteria
    output: Output
    text: str = field(default="", compare=False, repr=False)
    source: str = field(default="<string>", compare=False, repr=False)

    # ---- the grid

    @property
    def axis_names(self) -> tuple[str, ...]:
        """Names of the axes, in result-dimension order."""
        return tuple(axis.name for axis in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """Length of every axis, in result-dimension order (``steps`` last)."""
        return tuple(len(axis.values) for axis in self.axes)

    @property
    def n_runs(self) -> int:
        """Number of trajectories: every axis but ``steps`` (checkpoints are not runs)."""
        return math.prod(self.shape[:-1])

    @property
    def n_results(self) -> int:
        """Number of points of the result grid (``n_runs`` × number of checkpoints)."""
        return math.prod(self.shape)

    def axis(self, name: str) -> Axis:
        """The axis called ``name``; ``KeyError`` naming the axes if there is none."""
        for axis in self.axes:
            if axis.name == name:
                return axis
        raise KeyError(
            f"{name!r} is not an axis of sweep {self.name!r} (axes: {', '.join(self.axis_names)})"
        )

    @property
    def step_axis(self) -> str:
        """``"step_size"`` or ``"cfl"``: which one is the swept time-step axis."""
        return "cfl" if "cfl" in self.axis_names else "step_size"

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """The step counts (``steps`` axis values), ascending."""
        return tuple(self.axes[-1].values)

    @property
    def swept_model_keys(self) -> tuple[str, ...]:
        """Model keys that are axes, in axis order."""
        return tuple(name for name in self.axis_names if name in MODEL_KEYS)

    def is_swept(self, key: str) -> bool:
        """Whether ``key`` is an axis of this sweep."""
        return key in self.axis_names

    def model_value(self, key: str, index: Mapping[str, int] | None = None) -> Any:
        """The value of model ``key``: the fixed one, or the swept one at ``index[key]``.

        ``index`` maps axis names to integer positions; it is needed only when ``key``
        is swept.
        """
        if key not in MODEL_KEYS:
            raise KeyError(f"{key!r} is not a model key (keys: {', '.join(MODEL_KEYS)})")
        if not self.is_swept(key):
            return getattr(self.model, key)
        if index is None or key not in index:
            raise KeyError(f"model key {key!r} is swept; give its position in index")
        return self.axis(key).values[index[key]]

    def run_model(self, swept: Mapping[str, Any] | None = None) -> RunModel:
        """The complete model of a run: fixed keys from :attr:`model`, swept ones from ``swept``.

        ``swept`` maps every swept model key to its value for that run.
        """
        values = {key: getattr(self.model, key) for key in MODEL_KEYS}
        values.update(swept or {})
        missing = [key for key in MODEL_KEYS if values[key] is None]
        if missing:
            raise KeyError(f"swept model keys need a value: {', '.join(missing)}")
        return RunModel.from_mapping(values)

    def run_models(self) -> tuple[RunModel, ...]:
        """The model of every combination of swept model keys (one when none is swept)."""
        keys = self.swept_model_keys
        return tuple(
            self.run_model(dict(zip(keys, values, strict=True)))
            for values in itertools.product(*(self.axis(key).values for key in keys))
        )

    def model_values(self, key: str) -> tuple[Any, ...]:
        """Every value model ``key`` takes in this sweep (one when it is fixed)."""
        if self.is_swept(key):
            return self.axis(key).values
        return (getattr(self.model, key),)

    @property
    def dims_max(self) -> int:
        """The largest number of dimensions of any run."""
        return int(max(self.model_values("dims")))

    @property
    def cells_max(self) -> int:
        """The largest number of cells per dimension of any run."""
        return int(max(self.model_values("cells")))

    # ---- tasks and memory

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        """Runs per task along every axis: the explicit chunk, else the whole axis."""
        explicit = dict(self.chunks)
        return tuple(explicit.get(axis.name, len(axis.values)) for axis in self.axes)

    @property
    def runs_per_task(self) -> int:
        """Runs in one full task under :attr:`chunk_shape`."""
        return math.prod(self.chunk_shape[:-1])

    def memory_per_run(self, fields: str | None = None) -> int:
        """Estimated bytes one run needs (the largest grid of the sweep).

        About six arrays of ``cells**dims`` float64 for the state and the scheme's work
        arrays, the diagnostics per checkpoint, and the stored fields: one more array
        for ``final``, one per checkpoint for ``checkpoints``.  ``fields`` defaults to
        ``output.fields``.
        """
        fields = self.output.fields if fields is None else fields
        if fields not in FIELDS:
            raise ValueError(f"fields must be one of {FIELDS}, not {fields!r}")
        size = self.cells_max**self.dims_max
        n_checkpoints = len(self.checkpoints)
        stored = {"none": 0, "final": 1, "checkpoints": n_checkpoints}[fields]
        return (
            _WORK_ARRAYS + stored
        ) * size * _BYTES_PER_VALUE + n_checkpoints * _DIAGNOSTIC_BYTES_PER_CHECKPOINT

    def memory_per_task(self, fields: str | None = None) -> int:
        """Estimated bytes of one task under :attr:`chunk_shape`."""
        return self.runs_per_task * self.memory_per_run(fields)

    # ---- identity

    def to_dict(self) -> dict[str, Any]:
        """The normalised definition as plain data in the YAML layout.

        Swept model keys are written under ``sweep``; ``parse_sweep(yaml.safe_dump(
        sweep.to_dict()))`` equals ``sweep``.
        """
        model = {key: value for key, value in asdict(self.model).items() if value is not None}
        return {
            "name": self.name,
            "description": self.description,
            "model": model,
            "sweep": {axis.name: list(axis.values) for axis in self.axes},
            "chunks": dict(self.chunks),
            "criteria": asdict(self.criteria),
            "output": asdict(self.output),
        }

    def canonical_json(self) -> str:
        """Canonical JSON of the normalised definition (what :attr:`sha256` hashes).

        Keys sorted, no whitespace, floats by ``repr``, axes and chunks as ordered
        lists; comments, layout and key order of the YAML do not enter.
        """
        document = {
            "format": "diffsweep-sweep-1",
            "name": self.name,
            "description": self.description,
            "model": asdict(self.model),
            "axes": [[axis.name, list(axis.values)] for axis in self.axes],
            "chunks": [list(chunk) for chunk in self.chunks],
            "criteria": asdict(self.criteria),
            "output": asdict(self.output),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)

    @cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of :meth:`canonical_json`: stable across formatting changes."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- loading


def load_sweep(path: str | PathLike[str], *, memory_limit: int | None = None) -> Sweep:
    """Read and validate the sweep definition in the file ``path``.

    Parameters
    ----------
    path
        A YAML file of at most 1 MiB.
    memory_limit
        Bytes one task may use; default :data:`DEFAULT_MEMORY_LIMIT`.

    Raises
    ------
    SweepError
        If the file cannot be read or the definition is invalid.
    """
    source = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_TEXT_BYTES:
            raise SweepError(_too_large(size), source=source)
        data = Path(path).read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        raise SweepError(f"Cannot read the sweep definition: {reason}.", source=source) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SweepError(
            f"Expected UTF-8 text. Got an undecodable byte at offset {error.start} instead.",
            source=source,
        ) from None
    return parse_sweep(text, source=source, memory_limit=memory_limit)


def parse_sweep(text: str, *, source: str = "<string>", memory_limit: int | None = None) -> Sweep:
    """Validate the sweep definition ``text`` (YAML) and return it as a :class:`Sweep`.

    Parameters
    ----------
    text
        The YAML document.
    source
        Name used in error messages (and kept as :attr:`Sweep.source`).
    memory_limit
        Bytes one task may use; default :data:`DEFAULT_MEMORY_LIMIT`.  A run that
        alone needs more, or explicit ``chunks`` whose task needs more, is refused.

    Raises
    ------
    SweepError
        Naming ``source:line``, the key path and the offending value.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    if memory_limit is None:
        memory_limit = DEFAULT_MEMORY_LIMIT
    if isinstance(memory_limit, bool) or not isinstance(memory_limit, int) or memory_limit <= 0:
        raise ValueError(f"memory_limit must be a positive number of bytes, not {memory_limit!r}")
    if len(text) > MAX_TEXT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise SweepError(_too_large(len(text.encode("utf-8", "surrogatepass"))), source=source)
    return _Parser(text, source, memory_limit).parse()


def _too_large(size: int) -> str:
    return (
        f"The sweep definition is {_human_bytes(size)}; at most {_human_bytes(MAX_TEXT_BYTES)} "
        "is accepted (it is a hand-written file, not data)."
    )


# --------------------------------------------------------------------------- parsing

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_TIMESTAMP, _SEQ, _MAP, _MERGE = (_TAG + t for t in ("timestamp", "seq", "map", "merge"))
_SCALAR_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP}
# The constructors of the safe scalar tags are pure functions of the node.
_CONSTRUCT: dict[str, Callable[[SafeConstructor, ScalarNode], Any]] = {
    _STR: SafeConstructor.construct_yaml_str,
    _INT: SafeConstructor.construct_yaml_int,
    _FLOAT: SafeConstructor.construct_yaml_float,
    _BOOL: SafeConstructor.construct_yaml_bool,
    _NULL: SafeConstructor.construct_yaml_null,
    _TIMESTAMP: SafeConstructor.construct_yaml_timestamp,
}
_CONSTRUCTOR = SafeConstructor()
# libyaml composes ten times faster; both keep line marks and resolve tags alike (the C
# one marks plain scalars with style "" where the Python one uses None).
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class _Kind:
    """What one value of a key must be."""

    type: str  # "float" (> minimum), "int" (>= minimum, <= maximum) or "choice"
    minimum: float = 0
    maximum: int = _INT64_MAX
    choices: tuple[str, ...] = ()


_KINDS: dict[str, _Kind] = {
    "scheme": _Kind("choice", choices=SCHEMES),
    "dims": _Kind("int", 1, 3),
    "cells": _Kind("int", 3),
    "length": _Kind("float"),
    "boundary": _Kind("choice", choices=BOUNDARIES),
    "initial": _Kind("choice", choices=INITIALS),
    "seed": _Kind("int", 0),
    "coefficient": _Kind("float"),
    "step_size": _Kind("float"),
    "cfl": _Kind("float"),
    "steps": _Kind("int", 1),
}


@dataclass
class _AxisSpec:
    """An axis as written, with its length known before its values are made."""

    name: str
    path: str
    node: Node
    length: int
    materialise: Callable[[], list[Any]]


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return _show(_scalar(node))


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _scalar(node: ScalarNode) -> Any:
    """The value of a safe scalar node; plain YAML 1.2 floats (``1e3``) become floats."""
    value = _CONSTRUCT[node.tag](_CONSTRUCTOR, node)
    if node.tag == _STR and not node.style and _YAML12_FLOAT.fullmatch(value):
        return float(value)
    return value


def _human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _suggest(word: str, choices: Sequence[str]) -> str:
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else "."


class _Parser:
    """One pass over the composed node tree of one sweep definition."""

    def __init__(self, text: str, source: str, memory_limit: int) -> None:
        self.text = text
        self.source = source
        self.memory_limit = memory_limit

    def fail(self, message: str, key: str | None, where: Node | int | None) -> SweepError:
        line = _line(where) if isinstance(where, Node) else where
        return SweepError(message, key=key or None, source=self.source, line=line)

    # ---- the YAML layer

    def compose(self) -> Node:
        try:
            root = yaml.compose(self.text, Loader=_FAST_LOADER)
        except yaml.YAMLError as fast_error:
            # Report what the pure-Python composer says, so messages do not depend on
            # whether PyYAML was built with libyaml.
            try:
                yaml.compose(self.text, Loader=yaml.SafeLoader)
            except yaml.MarkedYAMLError as error:
                raise self.fail(_yaml_problem(error), None, _yaml_line(error)) from None
            except yaml.YAMLError as error:
                raise self.fail(
                    f"Invalid YAML: {' '.join(str(error).split())}.", None, None
                ) from None
            raise self.fail(
                f"Invalid YAML: {' '.join(str(fast_error).split())}.", None, None
            ) from None
        if root is None:
            raise self.fail(
                "Expected a mapping with name, model and sweep. Got an empty document instead.",
                None,
                1,
            )
        return root

    def check_tree(self, root: Node) -> None:
        """Refuse object-building tags, non-text keys and duplicate keys anywhere."""
        seen: set[int] = set()
        stack: list[tuple[Node, str]] = [(root, "")]
        while stack:
            node, path = stack.pop()
            if id(node) in seen:  # an alias of a node already checked
                continue
            seen.add(id(node))
            allowed = (
                _SCALAR_TAGS
                if isinstance(node, ScalarNode)
                else {_SEQ}
                if isinstance(node, SequenceNode)
                else {_MAP}
            )
            if node.tag not in allowed:
                raise self.fail(
                    f"Expected plain YAML data. Got the tag {_short_tag(node.tag)!r} instead "
                    "(tags that build objects are refused, never run).",
                    path,
                    node,
                )
            if isinstance(node, ScalarNode) and node.tag != _STR:
                try:
                    _scalar(node)
                except (ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError):
                    raise self.fail(
                        f"Expected a value of the tag {_short_tag(node.tag)!r}. "
                        f"Got {_show(node.value)} instead.",
                        path,
                        node,
                    ) from None
            children: list[tuple[Node, str]] = []
            if isinstance(node, MappingNode):
                first_line: dict[str, int] = {}
                for key_node, value_node in node.value:
                    if key_node.tag == _MERGE:
                        raise self.fail(
                            "YAML merge keys ('<<') are not supported; write the keys out.",
                            path,
                            key_node,
                        )
                    if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                        if isinstance(key_node, ScalarNode) and key_node.tag not in _SCALAR_TAGS:
                            children.append((key_node, path))  # reported as a bad tag
                            continue
                        shown = _describe(key_node)
                        raise self.fail(
                            f"Expected a text key. Got {shown} instead.",
                            _join(path, shown),
                            key_node,
                        )
                    key = key_node.value
                    key_path = _join(path, key)
                    if key in first_line:
                        raise self.fail(
                            f"Duplicate key {key!r} (first given on line {first_line[key]}); "
                            "YAML would silently keep only the last one.",
                            key_path,
                            key_node,
                        )
                    first_line[key] = _line(key_node)
                    children.append((value_node, key_path))
            elif isinstance(node, SequenceNode):
                children = [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
            stack.extend(reversed(children))

    def entries(
        self, node: Node, path: str, allowed: Sequence[str]
    ) -> dict[str, tuple[ScalarNode, Node]]:
        """The entries of mapping ``node``; unknown keys are refused."""
        if not isinstance(node, MappingNode):
            raise self.fail(f"Expected a mapping. Got {_describe(node)} instead.", path, node)
        result: dict[str, tuple[ScalarNode, Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key not in allowed:
                raise self.fail(
                    f"Unknown key{_suggest(key, allowed)} Allowed here: {', '.join(allowed)}.",
                    _join(path, key),
                    key_node,
                )
            result[key] = (key_node, value_node)
        return result

    def optional_section(
        self, top: dict[str, tuple[ScalarNode, Node]], key: str, allowed: Sequence[str]
    ) -> dict[str, tuple[ScalarNode, Node]]:
        if key not in top or _is_null(top[key][1]):
            return {}
        return self.entries(top[key][1], key, allowed)

    # ---- scalar values

    def value(self, node: Node, path: str, expected: str) -> Any:
        """The scalar at ``node``; lists and mappings are refused."""
        if not isinstance(node, ScalarNode):
            raise self.fail(f"Expected {expected}. Got {_describe(node)} instead.", path, node)
        return _scalar(node)

    def as_float(self, value: Any, path: str, where: Node | int, minimum: float = 0.0) -> float:
        expected = f"a number > {minimum:g}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"Expected {expected}. Got {_show(value)} instead.", path, where)
        number = float(value) if isinstance(value, float) or abs(value) < 2**1023 else math.inf
        if not math.isfinite(number):
            raise self.fail(
                f"Expected a finite {expected[2:]}. Got {_show(number)} instead.", path, where
            )
        if not number > minimum:
            raise self.fail(f"Expected {expected}. Got {_show(value)} instead.", path, where)
        return number

    def as_int(
        self,
        value: Any,
        path: str,
        where: Node | int,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        if minimum is not None and maximum is not None and maximum <= 3:
            expected = f"an integer from {minimum} to {maximum}"
        elif minimum is not None:
            expected = f"an integer >= {minimum}"
        else:
            expected = "an integer"
        integral_float = isinstance(value, float) and math.isfinite(value) and value == int(value)
        if isinstance(value, bool) or not (isinstance(value, int) or integral_float):
            raise self.fail(f"Expected {expected}. Got {_show(value)} instead.", path, where)
        number = int(value)
        if minimum is not None and number < minimum:
            raise self.fail(f"Expected {expected}. Got {_show(value)} instead.", path, where)
        if maximum is not None and number > maximum:
            if maximum > 3:
                expected = f"an integer <= {maximum:,}"
            raise self.fail(f"Expected {expected}. Got {_show(value)} instead.", path, where)
        return number

    def as_choice(self, value: Any, choices: Sequence[str], path: str, where: Node | int) -> str:
        if not isinstance(value, str) or value not in choices:
            hint = _suggest(value, choices) if isinstance(value, str) else "."
            options = ", ".join(repr(choice) for choice in choices)
            raise self.fail(
                f"Expected one of {options}. Got {_show(value)} instead{hint}", path, where
            )
        return value

    def element(self, key: str, value: Any, path: str, where: Node | int) -> Any:
        """One value of ``key`` (a fixed model value or one value of an axis)."""
        kind = _KINDS[key]
        if kind.type == "choice":
            return self.as_choice(value, kind.choices, path, where)
        if kind.type == "int":
            return self.as_int(value, path, where, int(kind.minimum), kind.maximum)
        return self.as_float(value, path, where, kind.minimum)

    # ---- axes

    def axis_spec(self, key: str, path: str, node: Node) -> _AxisSpec:
        """Read the axis ``key`` at ``node``: a scalar, a list or a generating form."""
        if isinstance(node, ScalarNode):
            value = _scalar(node)
            if value is None:
                raise self.fail(
                    "Expected a value, a list of values or a mapping such as "
                    "{linspace: [a, b], num: n}. Got None instead.",
                    path,
                    node,
                )
            values = [self.element(key, value, path, node)]
            return _AxisSpec(key, path, node, 1, lambda: values)
        if isinstance(node, SequenceNode):
            if not node.value:
                raise self.fail(
                    "Expected at least one value. Got an empty list instead.", path, node
                )
            values = []
            first_index: dict[Any, int] = {}
            for i, item in enumerate(node.value):
                item_path = f"{path}[{i}]"
                value = self.element(
                    key, self.value(item, item_path, "a single value"), item_path, item
                )
                if value in first_index:
                    raise self.fail(
                        f"Expected unique values. Got {_show(value)} again "
                        f"(it is also at index {first_index[value]}) instead.",
                        item_path,
                        item,
                    )
                first_index[value] = i
                values.append(value)
            return _AxisSpec(key, path, node, len(values), lambda: values)
        return self.axis_form(key, path, node)

    def axis_form(self, key: str, path: str, node: Node) -> _AxisSpec:
        kind = _KINDS[key]
        entries = self.entries(node, path, _FORM_KEYS)
        forms = [form for form in ("linspace", "geomspace", "range") if form in entries]
        if kind.type == "choice":
            raise self.fail(
                f"Expected a name or a list of names. Got {_describe(node)} instead.", path, node
            )
        if len(forms) != 1:
            got = "none of them" if not forms else " and ".join(forms)
            raise self.fail(
                f"Expected exactly one of linspace, geomspace or range. Got {got} instead.",
                path,
                node,
            )
        form = forms[0]
        form_key, form_node = entries[form]
        form_path = f"{path}.{form}"
        if form == "range":
            if "num" in entries:
                raise self.fail(
                    "num goes with linspace or geomspace; range takes [start, stop, step].",
                    f"{path}.num",
                    entries["num"][0],
                )
            return self.range_spec(key, form_path, form_node)

        if "num" not in entries:
            raise self.fail(
                f"Missing key 'num' (how many values {form} gives).", f"{path}.num", form_key
            )
        num_node = entries["num"][1]
        num = self.as_int(
            self.value(num_node, f"{path}.num", "an integer"),
            f"{path}.num",
            num_node,
            1,
            MAX_AXIS_LENGTH,
        )
        bounds = self.sequence(form_node, form_path, 2, "[start, stop]")
        ends = []
        for i, bound in enumerate(bounds):
            bound_path = f"{form_path}[{i}]"
            value = self.value(bound, bound_path, "a number")
            if form == "geomspace":
                self.as_float(value, bound_path, bound)
            ends.append(self.element(key, value, bound_path, bound))

        def materialise() -> list[Any]:
            make = np.linspace if form == "linspace" else np.geomspace
            array = make(float(ends[0]), float(ends[1]), num)
            if kind.type == "int":
                rounded = np.rint(array)
                if not np.allclose(array, rounded, rtol=1e-9, atol=0.0):
                    bad = array[~np.isclose(array, rounded, rtol=1e-9, atol=0.0)][0]
                    raise self.fail(
                        f"Expected whole numbers. Got {bad:.6g} among the {num} values of "
                        f"{form} instead; use range or a list.",
                        form_path,
                        form_node,
                    )
                values: list[Any] = [int(v) for v in rounded.tolist()]
            else:
                values = [float(v) for v in array.tolist()]
            if len(set(values)) != len(values):
                duplicate = next(v for i, v in enumerate(values) if v in values[:i])
                raise self.fail(
                    f"Expected unique values. Got {_show(duplicate)} more than once from "
                    f"{form} {ends} with num {num} instead.",
                    form_path,
                    form_node,
                )
            return values

        return _AxisSpec(key, path, node, num, materialise)

    def range_spec(self, key: str, path: str, node: Node) -> _AxisSpec:
        parts = self.sequence(node, path, (2, 3), "[start, stop, step]")
        numbers = [
            self.as_int(self.value(part, f"{path}[{i}]", "an integer"), f"{path}[{i}]", part)
            for i, part in enumerate(parts)
        ]
        if len(numbers) == 3 and numbers[2] == 0:
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
        if not isinstance(node, SequenceNode) or len(node.value) not in allowed:
            got = (
                f"a list of {len(node.value)}"
                if isinstance(node, SequenceNode)
                else _describe(node)
            )
            raise self.fail(f"Expected a list {layout}. Got {got} instead.", path, node)
        return list(node.value)

    # ---- the document

    def parse(self) -> Sweep:
        root = self.compose()
        self.check_tree(root)
        if not isinstance(root, MappingNode):
            raise self.fail(
                "Expected a mapping with name, model and sweep at the top level. "
                f"Got {_describe(root)} instead.",
                None,
                root,
            )
        top = self.entries(root, "", _TOP_KEYS)
        for required in ("name", "model", "sweep"):
            if required not in top:
                raise self.fail("Missing required key.", required, root)

        name = self.parse_name(top["name"][1])
        description = self.parse_description(top.get("description"))
        model_key, model_node = top["model"]
        sweep_key, sweep_node = top["sweep"]
        model_entries = self.entries(model_node, "model", MODEL_KEYS)
        sweep_entries = self.entries(sweep_node, "sweep", _SWEEP_KEYS)

        fixed: dict[str, Any] = {}
        specs: list[_AxisSpec] = []
        where: dict[str, tuple[str, Node]] = {}  # model key -> (path, node) where it is set
        for key in MODEL_KEYS:
            if key in model_entries and key in sweep_entries:
                raise self.fail(
                    f"Model key {key!r} is set in model (line {_line(model_entries[key][0])}) "
                    "and swept here; give it in one place.",
                    f"sweep.{key}",
                    sweep_entries[key][0],
                )
            if key in sweep_entries:
                specs.append(self.axis_spec(key, f"sweep.{key}", sweep_entries[key][1]))
                where[key] = (f"sweep.{key}", sweep_entries[key][0])
            elif key in model_entries:
                key_node, value_node = model_entries[key]
                where[key] = (f"model.{key}", key_node)
                if isinstance(value_node, ScalarNode):
                    fixed[key] = self.element(key, _scalar(value_node), f"model.{key}", value_node)
                else:
                    specs.append(self.axis_spec(key, f"model.{key}", value_node))
            else:
                fixed[key] = _MODEL_DEFAULTS[key]

        if "coefficient" not in sweep_entries:
            raise self.fail("Missing required key.", "sweep.coefficient", sweep_key)
        specs.append(
            self.axis_spec("coefficient", "sweep.coefficient", sweep_entries["coefficient"][1])
        )
        given = [key for key in STEP_AXES if key in sweep_entries]
        if len(given) == 2:
            raise self.fail(
                "Expected exactly one of step_size or cfl. Got both instead.",
                "sweep.cfl",
                sweep_entries["cfl"][0],
            )
        if not given:
            raise self.fail(
                "Missing required key: give the time step as step_size, or as cfl (r = D*dt/dx**2).",
                "sweep.step_size",
                sweep_key,
            )
        step_axis = given[0]
        specs.append(self.axis_spec(step_axis, f"sweep.{step_axis}", sweep_entries[step_axis][1]))
        if "steps" not in sweep_entries:
            raise self.fail("Missing required key.", "sweep.steps", sweep_key)
        specs.append(self.axis_spec("steps", "sweep.steps", sweep_entries["steps"][1]))

        # Size first, values after: a {num: 1e12} must never be allocated.
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
            if spec.name == "steps":
                values = sorted(values)
            axes.append(Axis(spec.name, tuple(values)))
        axis_lengths = {axis.name: len(axis.values) for axis in axes}

        chunks = self.parse_chunks(top.get("chunks"), axis_lengths)
        criteria = self.parse_criteria(self.optional_section(top, "criteria", _CRITERIA_KEYS))
        output_entries = self.optional_section(top, "output", _OUTPUT_KEYS)
        output = self.parse_output(output_entries, axis_lengths)

        model = Model(**{key: fixed.get(key) for key in MODEL_KEYS})
        sweep = Sweep(
            name=name,
            description=description,
            model=model,
            axes=tuple(axes),
            chunks=chunks,
            criteria=criteria,
            output=output,
            text=self.text,
            source=self.source,
        )
        self.check_memory(sweep, where, top.get("chunks"), model_key)
        return sweep

    def parse_name(self, node: Node) -> str:
        name = self.value(node, "name", "a name")
        if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
            raise self.fail(
                "Expected a name of letters, digits, '.', '_' and '-' (at most 128, starting "
                f"with a letter or digit; it names files). Got {_show(name)} instead.",
                "name",
                node,
            )
        return name

    def parse_description(self, entry: tuple[ScalarNode, Node] | None) -> str:
        if entry is None or _is_null(entry[1]):
            return ""
        description = self.value(entry[1], "description", "text")
        if not isinstance(description, str):
            raise self.fail(
                f"Expected text. Got {_show(description)} instead (quote it).",
                "description",
                entry[1],
            )
        return description

    def parse_chunks(
        self, entry: tuple[ScalarNode, Node] | None, axis_lengths: dict[str, int]
    ) -> tuple[tuple[str, int], ...]:
        if entry is None or _is_null(entry[1]):
            return ()
        node = entry[1]
        if not isinstance(node, MappingNode):
            raise self.fail(
                f"Expected a mapping of axis names to runs per task. Got {_describe(node)} instead.",
                "chunks",
                node,
            )
        sizes: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            path = f"chunks.{key}"
            if key == "steps":
                raise self.fail(
                    "The step-count axis is never chunked: one trajectory serves every checkpoint.",
                    path,
                    key_node,
                )
            if key not in axis_lengths:
                chunkable = [name for name in axis_lengths if name != "steps"]
                hint = (
                    " (it is not swept here)." if key in _SWEEP_KEYS else _suggest(key, chunkable)
                )
                raise self.fail(
                    f"Expected an axis name. Got {key!r} instead{hint} "
                    f"Axes that can be chunked: {', '.join(chunkable)}.",
                    path,
                    key_node,
                )
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

    def parse_criteria(self, entries: dict[str, tuple[ScalarNode, Node]]) -> Criteria:
        values: dict[str, float] = {}
        for key, minimum in (("tolerance", 0.0), ("divergence", 1.0)):
            if key in entries:
                path = f"criteria.{key}"
                node = entries[key][1]
                values[key] = self.as_float(self.value(node, path, "a number"), path, node, minimum)
        return Criteria(**values)

    def parse_output(
        self, entries: dict[str, tuple[ScalarNode, Node]], axis_lengths: dict[str, int]
    ) -> Output:
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

    def check_memory(
        self,
        sweep: Sweep,
        where: dict[str, tuple[str, Node]],
        chunks_entry: tuple[ScalarNode, Node] | None,
        model_key: ScalarNode,
    ) -> None:
        limit = _human_bytes(self.memory_limit)
        per_run = sweep.memory_per_run()
        if per_run > self.memory_limit:
            path, node = where.get("cells") or where.get("dims") or ("model", model_key)
            grid = f"{sweep.dims_max}-D grid of {sweep.cells_max} cells per dimension"
            raise self.fail(
                f"One run on a {grid} needs about {_human_bytes(per_run)} "
                f"(output.fields {sweep.output.fields!r}), more than the memory limit of "
                f"{limit} per task.",
                path,
                node,
            )
        if sweep.chunks and chunks_entry is not None:
            per_task = sweep.memory_per_task()
            if per_task > self.memory_limit:
                shape = " x ".join(
                    f"{size} {axis.name}"
                    for axis, size in zip(sweep.axes[:-1], sweep.chunk_shape[:-1], strict=True)
                )
                raise self.fail(
                    f"One task of {sweep.runs_per_task:,} runs ({shape}) needs about "
                    f"{_human_bytes(per_task)} ({_human_bytes(per_run)} per run), more than "
                    f"the memory limit of {limit} per task; use smaller chunks.",
                    "chunks",
                    chunks_entry[0],
                )


def _yaml_line(error: yaml.MarkedYAMLError) -> int | None:
    mark = error.problem_mark or error.context_mark
    return None if mark is None else int(mark.line) + 1


def _yaml_problem(error: yaml.MarkedYAMLError) -> str:
    """One line from PyYAML's problem and context, e.g. an unclosed bracket's line."""
    problem = " ".join(str(error.problem or "malformed document").split())
    problem = problem.removeprefix("but ")
    if error.context:
        context = " ".join(str(error.context).split())
        if error.context_mark is not None:
            context += f", line {error.context_mark.line + 1}"
        problem += f" ({context})"
    return f"Invalid YAML: {problem}."


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL
