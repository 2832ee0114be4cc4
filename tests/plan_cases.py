"""Generated sweep definitions for the planner's and the layout's property tests."""

from __future__ import annotations

from hypothesis import strategies as st

SCHEME_CHOICES = ("ftcs", "crank-nicolson", "backward-euler")


@st.composite
def sweep_texts(draw: st.DrawFn) -> str:
    """A valid sweep definition: axis lengths, swept model keys, step axis, zipped or
    product coefficient and step axis, chunks and stored fields all vary; grids range
    from tiny to ~10^8 bytes per run."""
    dims = draw(st.sampled_from([1, 2, 3]))
    cells = draw(st.sampled_from([4, 16, 64, 128] if dims < 3 else [4, 16, 64]))
    fields = draw(st.sampled_from(["none", "final", "checkpoints"]))
    n_steps = draw(st.integers(1, 4))
    steps = sorted(draw(st.sets(st.sampled_from([1, 2, 5, 10, 100, 1000, 3000]), min_size=n_steps, max_size=n_steps)))
    step_axis = draw(st.sampled_from(["step_size", "cfl"]))
    n_coefficient, n_step = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    model = {"scheme": "ftcs", "dims": dims, "cells": cells}
    swept: dict[str, list] = {}
    if draw(st.booleans()):
        swept["scheme"] = draw(st.lists(st.sampled_from(SCHEME_CHOICES), min_size=1, max_size=3, unique=True))
        del model["scheme"]
    if fields == "none" and draw(st.booleans()):
        swept["cells"] = draw(st.lists(st.sampled_from([8, 16, 32]), min_size=1, max_size=3, unique=True))
        del model["cells"]
    if draw(st.booleans()):
        swept["seed"] = list(range(draw(st.integers(1, 3))))
    zipped = draw(st.booleans())  # coefficient and the step axis vary together along case
    if zipped:
        n_step = n_coefficient
    step_values = (
        f"{{linspace: [0.01, 0.4], num: {n_step}}}" if step_axis == "cfl"
        else f"{{linspace: [1.0e-6, 1.0e-4], num: {n_step}}}"
    )
    indent = "    " if zipped else "  "
    lines = [
        "name: generated",
        "model: {" + ", ".join(f"{k}: {v}" for k, v in model.items()) + "}",
        "sweep:",
        *(f"  {key}: [{', '.join(map(str, values))}]" for key, values in swept.items()),
        *(["  zip:"] if zipped else []),
        f"{indent}coefficient: {{geomspace: [0.01, 1.0], num: {n_coefficient}}}",
        f"{indent}{step_axis}: {step_values}",
        f"  steps: [{', '.join(map(str, steps))}]",
        f"output: {{fields: {fields}}}",
    ]
    if draw(st.booleans()):
        # at most 8 x 8 runs a task, so that even 3-D 64^3 runs stay within the parser's memory limit
        if zipped:
            chunks = {"case": draw(st.integers(1, min(n_coefficient, 64)))}
        else:
            chunks = {"coefficient": draw(st.integers(1, min(n_coefficient, 8))), step_axis: draw(st.integers(1, min(n_step, 8)))}
        lines.append("chunks: {" + ", ".join(f"{k}: {v}" for k, v in chunks.items()) + "}")
    return "\n".join(lines) + "\n"
