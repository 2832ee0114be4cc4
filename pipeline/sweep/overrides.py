"""Overrides of a sweep definition, ``KEY=VALUE`` as on a command line (``model.cells=64``).

``KEY`` is a dotted path of mapping keys (``model.cells``, ``sweep.coefficient``,
``sweep.step_size.num``, ``criteria.tolerance``); ``VALUE`` is YAML
(``[0.1, 1]``, ``{geomspace: [1.0e-3, 1.0], num: 8}``).  Each override replaces the
value at ``KEY`` in the node tree, creating missing mappings on the way, before the
tree is checked: an override is validated exactly as the same value written in the
file, and its errors name the override instead of a line.  A model key lives in
``model`` or in ``sweep`` and a sweep has ``step_size`` or ``cfl``: setting one removes
the other, so ``sweep.cfl=[0.1, 0.2]`` replaces a ``step_size`` axis.

With overrides, the definition recorded (:attr:`Sweep.text`, stored with the results)
is the effective one: the tree serialised back to YAML under a comment naming the
file and the overrides, so that it parses to the same :class:`~pipeline.sweep.Sweep`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.errors import SweepError
from pipeline.sweep import yamltree
from pipeline.sweep.definition import MODEL_KEYS, STEP_AXES

__all__ = ["Override", "apply_overrides", "effective_text", "parse_override"]

#: Longest key path: ``sweep.coefficient.linspace`` is three keys.
MAX_PATH_KEYS = 4

# Keys of which a definition holds only one: setting one removes the others.
_EXCLUSIVE: dict[tuple[str, ...], tuple[tuple[str, ...], ...]] = {
    **{("model", key): (("sweep", key),) for key in MODEL_KEYS},
    **{("sweep", key): (("model", key),) for key in MODEL_KEYS},
    **{
        ("sweep", key): tuple(("sweep", other) for other in STEP_AXES if other != key)
        for key in STEP_AXES
    },
}


@dataclass(frozen=True)
class Override:
    """One parsed ``KEY=VALUE``: the key path, the value's node tree, and its label."""

    text: str
    path: tuple[str, ...]
    value: Node

    @property
    def label(self) -> str:
        """How errors name it: ``override 'model.cells=64'``."""
        return f"override {yamltree.show(self.text)}"


def parse_override(text: str) -> Override:
    """Read ``KEY=VALUE``; the value is YAML.

    Raises
    ------
    SweepError
        If there is no ``=``, the key path is not one, or the value is no YAML.

    Examples
    --------
    >>> override = parse_override("sweep.coefficient=[0.1, 1]")
    >>> override.path, type(override.value).__name__
    (('sweep', 'coefficient'), 'SequenceNode')
    """
    if not isinstance(text, str):
        raise TypeError(f"an override must be str, not {type(text).__name__}")
    label = f"override {yamltree.show(text)}"
    key, equals, value = text.partition("=")
    key = key.strip()
    if not equals or not key:
        raise SweepError(
            "Expected KEY=VALUE, such as model.cells=64 or sweep.coefficient='[0.1, 1]'.",
            source=label,
        )
    parts = tuple(part.strip() for part in key.split("."))
    if not all(parts) or len(parts) > MAX_PATH_KEYS:
        raise SweepError(
            f"Expected a dotted path of at most {MAX_PATH_KEYS} keys, such as model.cells. "
            f"Got {yamltree.show(key)} instead.",
            source=label,
        )
    if not value.strip():
        raise SweepError(
            "Expected a value after '='. Got nothing instead (write null to clear a key).",
            key=key,
            source=label,
        )
    try:
        node = yamltree.compose(value, label, empty="a value")
    except SweepError as error:
        raise SweepError(error.message, key=key, source=label) from None
    return Override(text, parts, node)


def apply_overrides(root: MappingNode, overrides: Sequence[Override]) -> dict[int, str]:
    """Apply ``overrides`` to ``root`` in place, in order.

    Mappings on the way to a key are copied before they change, so a mapping that
    YAML aliases elsewhere keeps its other uses.  Returns the ``id`` of every node an
    override put into the tree, mapped to the override's label (for error messages).
    """
    labels: dict[int, str] = {}
    for override in overrides:
        for other in _EXCLUSIVE.get(override.path, ()):
            parent = _descend(root, other[:-1], override, labels, create=False)
            if parent is not None:
                parent.value[:] = [entry for entry in parent.value if entry[0].value != other[-1]]
        parent = _descend(root, override.path[:-1], override, labels, create=True)
        assert parent is not None
        key_node = _key(override.path[-1], override, labels)
        _label_tree(override.value, override.label, labels)
        _set(parent, key_node, override.value)
    return labels


def effective_text(root: Node, source: str, overrides: Sequence[Override]) -> str:
    """The definition with ``overrides`` applied, as YAML under a comment naming them."""
    header = [f"# The effective sweep definition: {json.dumps(source)} with these overrides"]
    header += [f"#   {json.dumps(override.text, ensure_ascii=False)}" for override in overrides]
    body = yaml.serialize(root, Dumper=yaml.SafeDumper, allow_unicode=True)
    return "\n".join(header) + "\n" + body


def _descend(
    root: MappingNode,
    path: tuple[str, ...],
    override: Override,
    labels: dict[int, str],
    *,
    create: bool,
) -> MappingNode | None:
    """The mapping at ``path`` (copied into place), made when missing if ``create``."""
    node = root
    for depth, part in enumerate(path):
        entry = next(
            (e for e in node.value if isinstance(e[0], ScalarNode) and e[0].value == part), None
        )
        if entry is None or yamltree.is_null(entry[1]):
            if not create:
                return None
            child = MappingNode(
                yamltree.MAP, [], override.value.start_mark, override.value.end_mark
            )
            labels[id(child)] = override.label
            _set(node, entry[0] if entry else _key(part, override, labels), child)
        elif isinstance(entry[1], MappingNode):
            original = entry[1]
            child = MappingNode(
                original.tag,
                list(original.value),
                original.start_mark,
                original.end_mark,
                flow_style=original.flow_style,
            )
            _set(node, entry[0], child)
        else:
            raise SweepError(
                f"Expected a mapping to set {'.'.join(override.path[depth + 1 :])} in. "
                f"Got {yamltree.describe(entry[1])} instead.",
                key=".".join(path[: depth + 1]),
                source=override.label,
            )
        node = child
    return node


def _key(name: str, override: Override, labels: dict[int, str]) -> ScalarNode:
    mark = override.value.start_mark
    node = ScalarNode(yamltree.STR, name, mark, mark)
    labels[id(node)] = override.label
    return node


def _set(mapping: MappingNode, key_node: ScalarNode, value: Node) -> None:
    """Replace the entry of ``key_node.value`` in ``mapping``, or append one."""
    for i, (existing, _) in enumerate(mapping.value):
        if isinstance(existing, ScalarNode) and existing.value == key_node.value:
            mapping.value[i] = (key_node, value)
            return
    mapping.value.append((key_node, value))


def _label_tree(node: Node, label: str, labels: dict[int, str]) -> None:
    stack = [node]
    while stack:
        current = stack.pop()
        if id(current) in labels:
            continue
        labels[id(current)] = label
        if isinstance(current, MappingNode):
            stack.extend(item for entry in current.value for item in entry)
        elif isinstance(current, SequenceNode):
            stack.extend(current.value)
