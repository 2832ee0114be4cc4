"""What differs between two sweep definitions, key by key, in words a user can act on.

A store records the definition it was made from; resuming it with a different one is
refused, and the refusal should say *what* changed (``model.cells: 128 -> 64``), not
only that two hashes differ.  The comparison is of the normalised definitions
(:meth:`Sweep.to_dict <pipeline.sweep.Sweep.to_dict>`), so comments, layout and the
spelling of an axis (``linspace`` or a list) never count as a change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.sweep.definition import Sweep

__all__ = ["changes", "describe_value"]

#: lists longer than this are shown by their length and ends
SHORT_LIST = 5

#: stands for a key that one of the definitions does not have
ABSENT = "(not set)"


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def describe_value(value: Any) -> str:
    """A value as a change line shows it: short lists whole, long ones by length and ends.

    Examples
    --------
    >>> describe_value([10, 100, 1000])
    '[10, 100, 1000]'
    >>> describe_value([0.001 * k for k in range(1, 17)])
    '16 values 0.001 ... 0.016'
    >>> describe_value("neumann")
    'neumann'
    """
    if isinstance(value, list | tuple):
        if len(value) <= SHORT_LIST:
            return "[" + ", ".join(describe_value(item) for item in value) + "]"
        return f"{len(value)} values {describe_value(value[0])} ... {describe_value(value[-1])}"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def changes(old: Sweep, new: Sweep) -> list[str]:
    """One ``key: old -> new`` line per key whose value differs, in definition order.

    Keys present in only one definition (a model key that became an axis, say) show
    :data:`ABSENT` on the other side.

    Examples
    --------
    >>> from pipeline.sweep import parse_sweep
    >>> text = '''
    ... name: s
    ... model: {scheme: ftcs, dims: 1, cells: 128}
    ... sweep: {coefficient: [0.5, 1.0], step_size: [1.0e-5], steps: [10, 100]}
    ... '''
    >>> changes(parse_sweep(text), parse_sweep(text.replace("128", "64")))
    ['model.cells: 128 -> 64']
    """
    before, after = _flatten(old.to_dict()), _flatten(new.to_dict())
    lines = []
    for key in [*before, *(k for k in after if k not in before)]:
        if key not in after or key not in before or before[key] != after[key]:
            was = describe_value(before[key]) if key in before else ABSENT
            now = describe_value(after[key]) if key in after else ABSENT
            if was == now:  # the difference hides inside a long list or beyond 6 digits
                was, now = _first_difference(before[key], after[key])
            lines.append(f"{key}: {was} -> {now}")
    return lines


def _first_difference(old: Any, new: Any) -> tuple[str, str]:
    """Both sides of the first element that differs, in full precision."""
    if isinstance(old, list | tuple) and isinstance(new, list | tuple) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                return f"value {index + 1} of {len(old)} {a!r}", repr(b)
    return repr(old), repr(new)
