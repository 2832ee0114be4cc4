"""The YAML layer of the parser: a safe, bounded node tree with line numbers.

The text is read with PyYAML's *safe* composer only: the node tree keeps line numbers,
tags are checked before any value is constructed, and no tag that builds a Python
object is ever honoured.  Nesting is bounded before anything is composed (the
composers recurse once per level; libyaml's crashes the interpreter at ~10**5
levels).  Plain scalars that are numbers in YAML 1.2 but strings in PyYAML's YAML 1.1
resolver (``1e3``, ``1.0e3``) are read as numbers, as a scientist writing them means.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.errors import SweepError

#: Deepest nesting of lists and mappings accepted; a sweep definition needs four.
MAX_NESTING = 20

TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (TAG + t for t in ("str", "int", "float", "bool", "null"))
TIMESTAMP, SEQ, MAP, MERGE = (TAG + t for t in ("timestamp", "seq", "map", "merge"))
SCALAR_TAGS = {STR, INT, FLOAT, BOOL, NULL, TIMESTAMP}
# The constructors of the safe scalar tags are pure functions of the node.
_CONSTRUCT: dict[str, Callable[[SafeConstructor, ScalarNode], Any]] = {
    STR: SafeConstructor.construct_yaml_str,
    INT: SafeConstructor.construct_yaml_int,
    FLOAT: SafeConstructor.construct_yaml_float,
    BOOL: SafeConstructor.construct_yaml_bool,
    NULL: SafeConstructor.construct_yaml_null,
    TIMESTAMP: SafeConstructor.construct_yaml_timestamp,
}
_CONSTRUCTOR = SafeConstructor()
_YAML12_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
# libyaml composes ten times faster; both keep line marks and resolve tags alike (the C
# one marks plain scalars with style "" where the Python one uses None).
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Makes the error for a message, a key path and the node it is about.
Fail = Callable[[str, str | None, Node], SweepError]

_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


# --------------------------------------------------------------------------- nodes


def line(node: Node) -> int:
    """1-based line where ``node`` starts."""
    return int(node.start_mark.line) + 1


def join(path: str, key: str) -> str:
    """The dotted key path of ``key`` inside ``path``."""
    return f"{path}.{key}" if path else key


def show(value: Any) -> str:
    """``repr`` of a value, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(node: Node) -> str:
    """What ``node`` is, for a message: ``a mapping``, ``a list`` or the scalar's repr."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return show(scalar(node))


def short_tag(tag: str) -> str:
    return "!!" + tag[len(TAG) :] if tag.startswith(TAG) else tag


def scalar(node: ScalarNode) -> Any:
    """The value of a safe scalar node; plain YAML 1.2 floats (``1e3``) become floats."""
    value = _CONSTRUCT[node.tag](_CONSTRUCTOR, node)
    if node.tag == STR and not node.style and _YAML12_FLOAT.fullmatch(value):
        return float(value)
    return value


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL


def error(source: str, message: str, key: str | None, where: Node | int | None) -> SweepError:
    """A :class:`SweepError` at ``where`` (a node or a line number)."""
    at = line(where) if isinstance(where, Node) else where
    return SweepError(message, key=key or None, source=source, line=at)


# --------------------------------------------------------------------------- composing


def compose(text: str, source: str, empty: str = "a mapping with name, model and sweep") -> Node:
    """The node tree of the single YAML document ``text``; ``empty`` says what was expected.

    Raises
    ------
    SweepError
        For invalid YAML (PyYAML's problem and line), nesting deeper than
        :data:`MAX_NESTING`, or an empty document.
    """
    try:
        _check_nesting(text, source, FAST_LOADER)
        root = yaml.compose(text, Loader=FAST_LOADER)
    except yaml.YAMLError as fast_error:
        # Report what the pure-Python composer says, so messages do not depend on
        # whether PyYAML was built with libyaml.
        try:
            _check_nesting(text, source, yaml.SafeLoader)
            yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as yaml_error:
            raise error(source, _yaml_problem(yaml_error), None, _yaml_line(yaml_error)) from None
        except yaml.YAMLError as yaml_error:
            raise error(
                source, f"Invalid YAML: {' '.join(str(yaml_error).split())}.", None, None
            ) from None
        raise error(
            source, f"Invalid YAML: {' '.join(str(fast_error).split())}.", None, None
        ) from None
    if root is None:
        raise error(
            source,
            f"Expected {empty}. Got an empty document instead.",
            None,
            1,
        )
    return root


def _check_nesting(text: str, source: str, loader: Any) -> None:
    """Refuse nesting deeper than :data:`MAX_NESTING` from the parser's events.

    The event parsers are iterative; the composers are not, so this runs first.
    """
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, _OPEN):
            depth += 1
            if depth > MAX_NESTING:
                raise error(
                    source,
                    f"Expected at most {MAX_NESTING} levels of nested lists and mappings "
                    f"(a sweep definition needs four). Got more than {MAX_NESTING} here instead.",
                    None,
                    int(event.start_mark.line) + 1,
                )
        elif isinstance(event, _CLOSE):
            depth -= 1


def _yaml_line(yaml_error: yaml.MarkedYAMLError) -> int | None:
    mark = yaml_error.problem_mark or yaml_error.context_mark
    return None if mark is None else int(mark.line) + 1


def _yaml_problem(yaml_error: yaml.MarkedYAMLError) -> str:
    """One line from PyYAML's problem and context, e.g. an unclosed bracket's line."""
    problem = " ".join(str(yaml_error.problem or "malformed document").split())
    problem = problem.removeprefix("but ")
    if yaml_error.context:
        context = " ".join(str(yaml_error.context).split())
        if yaml_error.context_mark is not None:
            context += f", line {yaml_error.context_mark.line + 1}"
        problem += f" ({context})"
    return f"Invalid YAML: {problem}."


# --------------------------------------------------------------------------- checking


def check_tree(root: Node, fail: Fail) -> None:
    """Refuse object-building tags, non-text keys and duplicate keys anywhere in the tree.

    Iterative (no recursion), and each node is visited once however often aliases
    repeat it, so an alias bomb costs nothing.  ``fail(message, key, node)`` makes
    the error (the parser's knows which nodes came from overrides).
    """
    seen: set[int] = set()
    stack: list[tuple[Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # an alias of a node already checked
            continue
        seen.add(id(node))
        _check_tag(node, path, fail)
        if isinstance(node, MappingNode):
            children = _mapping_children(node, path, fail)
        elif isinstance(node, SequenceNode):
            children = [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        else:
            children = []
        stack.extend(reversed(children))


def _check_tag(node: Node, path: str, fail: Fail) -> None:
    if isinstance(node, ScalarNode):
        allowed = SCALAR_TAGS
    elif isinstance(node, SequenceNode):
        allowed = {SEQ}
    else:
        allowed = {MAP}
    if node.tag not in allowed:
        raise fail(
            f"Expected plain YAML data. Got the tag {short_tag(node.tag)!r} instead "
            "(tags that build objects are refused, never run).",
            path,
            node,
        )
    if isinstance(node, ScalarNode) and node.tag != STR:
        try:
            scalar(node)
        except (ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError):
            raise fail(
                f"Expected a value of the tag {short_tag(node.tag)!r}. "
                f"Got {show(node.value)} instead.",
                path,
                node,
            ) from None


def _mapping_children(node: MappingNode, path: str, fail: Fail) -> list[tuple[Node, str]]:
    children: list[tuple[Node, str]] = []
    first_line: dict[str, int] = {}
    previous: tuple[ScalarNode, Node] | None = None
    for key_node, value_node in node.value:
        if key_node.tag == MERGE:
            raise fail(
                "YAML merge keys ('<<') are not supported; write the keys out.",
                path,
                key_node,
            )
        if not isinstance(key_node, ScalarNode) or key_node.tag != STR:
            if isinstance(key_node, ScalarNode) and key_node.tag not in SCALAR_TAGS:
                children.append((key_node, path))  # reported as a bad tag
                continue
            shown = describe(key_node)
            hint = flow_comma_hint(node, key_node, value_node, previous)
            raise fail(
                f"Expected a text key. Got {shown} instead{hint}"
                if hint == "."
                else f"Expected a key. Got the number {shown} instead{hint}",
                path if hint != "." else join(path, shown),
                key_node,
            )
        key = key_node.value
        key_path = join(path, key)
        if key in first_line:
            raise fail(
                f"Duplicate key {key!r} (first given on line {first_line[key]}); "
                "YAML would silently keep only the last one.",
                key_path,
                key_node,
            )
        first_line[key] = line(key_node)
        children.append((value_node, key_path))
        previous = (key_node, value_node)
    return children


def flow_comma_hint(
    mapping: MappingNode,
    key_node: ScalarNode,
    value_node: Node,
    previous: tuple[ScalarNode, Node] | None,
) -> str:
    """Explain ``{linspace: 0.1, 0.7, num: 13}``: the comma ended an entry, 0.7 became a key.

    Returns the end of a message (``"."`` when ``key_node`` is not such a number).
    """
    numeric = key_node.tag in (INT, FLOAT) or (
        key_node.tag == STR and not key_node.style and _YAML12_FLOAT.fullmatch(key_node.value)
    )
    if not (mapping.flow_style and is_null(value_node) and numeric):
        return "."
    if previous is None or not isinstance(previous[1], ScalarNode):
        return (
            ": in a {...} mapping a comma ends an entry, so this number became a key; "
            "put lists in brackets."
        )
    name, first = previous[0].value, previous[1].value
    return (
        f": in a {{...}} mapping a comma ends an entry, so '{name}: {first}, {key_node.value}' "
        f"reads as two entries and {key_node.value} became a key. "
        f"Put the list in brackets: {{{name}: [{first}, {key_node.value}], ...}}."
    )
