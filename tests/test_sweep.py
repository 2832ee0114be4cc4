"""Tests of pipeline.sweep: parsing, normalisation, hashing and every refusal."""

from __future__ import annotations

import dataclasses
import pickle
import re
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from sweep_cases import BAD_SWEEPS, BAD_SWEEPS_DIR, GOOD_MINIMAL, PWNED_MARKER

from pipeline import sweep as sweep_module
from pipeline.errors import DiffsweepError, SweepError
from pipeline.sweep import (
    DEFAULT_MEMORY_LIMIT,
    MODEL_KEYS,
    Axis,
    Criteria,
    Model,
    Output,
    Sweep,
    Units,
    load_sweep,
    parse_sweep,
    yamltree,
)

DESIGN_EXAMPLE = """\
name: ftcs-1d-stability
description: Where does explicit FTCS stop being stable in 1-D?
model:
  scheme: ftcs          # ftcs | backward-euler | crank-nicolson
  dims: 1               # 1, 2 or 3
  cells: 128            # cells per dimension (cell-centred grid, dx = length / cells)
  length: 1.0           # edge length of the square/cubic domain
  boundary: neumann     # neumann (no flux) | periodic | dirichlet (u = 0 on the walls)
  initial: step         # step | gaussian | random
  seed: 0               # for `random`
sweep:                  # every axis becomes a dimension of the results
  coefficient: {geomspace: [1.0e-3, 1.0], num: 16}
  step_size:   {linspace: [1.0e-6, 2.0e-4], num: 32}
  steps:       [10, 100, 1000, 10000]
chunks: {coefficient: 4, step_size: 16}   # runs per task along each axis
criteria:
  tolerance: 1.0e-3     # equilibrium when distance <= tolerance
  divergence: 1.0e3     # divergent when deviation grows past this factor
output:
  fields: final         # none | final | checkpoints  (store the field itself)
"""

# The same definition: other comments, layout, key order, flow/block style, 1 for 1.0.
DESIGN_EXAMPLE_REWRITTEN = """\
# rewritten by hand
sweep:
  steps: [10, 100, 1000, 10000]
  step_size:
    num: 32
    linspace: [0.000001, 0.0002]
  coefficient: {num: 16, geomspace: [0.001, 1]}
model: {seed: 0, initial: step, boundary: neumann, length: 1, cells: 128, dims: 1, scheme: ftcs}
output: {fields: final}
criteria: {divergence: 1000, tolerance: 0.001}
chunks:
  step_size: 16
  coefficient: 4
description: "Where does explicit FTCS stop being stable in 1-D?"
name: ftcs-1d-stability
"""


def minimal(**replace: str) -> str:
    """A small valid definition with some lines replaced (by their start)."""
    lines = [
        "name: t",
        "model:",
        "  cells: 16",
        "sweep:",
        "  coefficient: [0.1, 1.0]",
        "  step_size: [1.0e-4, 2.0e-4]",
        "  steps: [10, 100]",
    ]
    for start, new in replace.items():
        start = start.replace("__", " ")
        matches = [i for i, line in enumerate(lines) if line.startswith(start)]
        assert len(matches) == 1, start
        lines[matches[0]] = new
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- valid


def test_design_example_parses_to_the_expected_axes():
    sweep = parse_sweep(DESIGN_EXAMPLE, source="design.yaml")

    assert sweep.name == "ftcs-1d-stability"
    assert sweep.description == "Where does explicit FTCS stop being stable in 1-D?"
    assert sweep.model == Model("ftcs", 1, 128, 1.0, "neumann", "step", 0)
    assert sweep.axis_names == ("coefficient", "step_size", "steps")
    assert sweep.shape == (16, 32, 4)
    assert sweep.n_runs == 16 * 32
    assert sweep.n_results == 16 * 32 * 4
    assert sweep.step_axis == "step_size"
    coefficient = sweep.axis("coefficient").values
    assert coefficient[0] == 1e-3 and coefficient[-1] == 1.0
    assert coefficient[1] == pytest.approx(1e-3 * 1000 ** (1 / 15))
    step_size = sweep.axis("step_size").values
    assert step_size[0] == 1e-6 and step_size[-1] == 2e-4
    assert step_size[1] - step_size[0] == pytest.approx((2e-4 - 1e-6) / 31)
    assert sweep.checkpoints == sweep.axis("steps").values == (10, 100, 1000, 10000)
    assert sweep.chunks == (("coefficient", 4), ("step_size", 16))
    assert sweep.chunk_shape == (4, 16, 4)
    assert sweep.runs_per_task == 64
    # `1.0e3` is a string to PyYAML's YAML 1.1 resolver; it is read as the number meant
    assert sweep.criteria == Criteria(tolerance=1e-3, divergence=1e3)
    assert sweep.output == Output("final")
    assert sweep.text == DESIGN_EXAMPLE
    assert sweep.source == "design.yaml"


def test_values_are_python_scalars_in_tuples():
    sweep = parse_sweep(DESIGN_EXAMPLE)
    for axis in sweep.axes:
        assert isinstance(axis.values, tuple)
    assert all(type(v) is float for v in sweep.axis("coefficient").values)
    assert all(type(v) is int for v in sweep.axis("steps").values)


def test_good_minimal_is_small():
    sweep = parse_sweep(GOOD_MINIMAL)
    assert sweep.model.scheme == "ftcs" and sweep.model.dims == 1 and sweep.model.cells == 32
    assert sweep.n_runs <= 20
    assert max(sweep.checkpoints) <= 1000
    assert sweep.memory_per_task() < 2**20


def test_defaults():
    sweep = parse_sweep("name: d\nmodel: {}\nsweep: {coefficient: 1, step_size: 0.001, steps: 5}\n")
    assert sweep.model == Model()
    assert sweep.model == Model("ftcs", 1, 128, 1.0, "neumann", "step", 0)
    assert sweep.criteria == Criteria(1e-3, 1e3)
    assert sweep.output == Output("none")
    assert sweep.chunks == ()
    assert sweep.description == ""
    assert sweep.shape == (1, 1, 1)


def test_empty_optional_sections_mean_defaults():
    sweep = parse_sweep(minimal() + "description:\nchunks:\ncriteria:\noutput:\n")
    assert sweep == parse_sweep(minimal())


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("0.5", (0.5,)),
        ("1", (1.0,)),
        ("[0.5, 0.25, 1]", (0.5, 0.25, 1.0)),
        ("1e-3", (1e-3,)),  # a string in YAML 1.1, a number in YAML 1.2 and here
        ("[1.0e3, 2E2]", (1000.0, 200.0)),
        ("{linspace: [0.1, 0.4], num: 4}", (0.1, 0.2, 0.30000000000000004, 0.4)),
        ("{geomspace: [0.01, 1.0], num: 3}", (0.01, 0.1, 1.0)),
        ("{linspace: [0.5, 0.7], num: 1}", (0.5,)),
        ("{range: [1, 4, 1]}", (1.0, 2.0, 3.0)),
        ("{range: [5, 0, -2]}", (5.0, 3.0, 1.0)),
    ],
)
def test_axis_forms_for_a_float_axis(text, values):
    sweep = parse_sweep(minimal(**{"  coefficient": f"  coefficient: {text}"}))
    assert sweep.axis("coefficient").values == pytest.approx(values)
    assert all(type(v) is float for v in sweep.axis("coefficient").values)


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("1000", (1000,)),
        ("[1000, 10, 100]", (10, 100, 1000)),  # sorted
        ("[1e3, 1e2]", (100, 1000)),  # whole floats are accepted for integers
        ("{range: [10, 40, 10]}", (10, 20, 30)),
        ("{range: [40, 0, -10]}", (10, 20, 30, 40)),
        ("{geomspace: [10, 10000], num: 4}", (10, 100, 1000, 10000)),
        ("{linspace: [100, 400], num: 4}", (100, 200, 300, 400)),
    ],
)
def test_axis_forms_for_steps(text, values):
    sweep = parse_sweep(minimal(**{"  steps": f"  steps: {text}"}))
    assert sweep.axis("steps").values == values
    assert all(type(v) is int for v in sweep.checkpoints)


def test_cfl_axis_instead_of_step_size():
    sweep = parse_sweep(minimal(**{"  step_size": "  cfl: {linspace: [0.1, 0.6], num: 6}"}))
    assert sweep.step_axis == "cfl"
    assert sweep.axis_names == ("coefficient", "cfl", "steps")
    assert sweep.shape == (2, 6, 2)
    with pytest.raises(KeyError, match="step_size"):
        sweep.axis("step_size")


def test_model_key_as_axis_in_model_or_in_sweep_is_the_same_sweep():
    in_model = parse_sweep(minimal(**{"  cells": "  cells: [16, 32, 64]"}))
    in_sweep = parse_sweep(minimal(**{"  cells": "  dims: 1"}) + "  cells: [16, 32, 64]\n")
    assert in_model.model.cells is None
    assert in_model.axis_names == ("cells", "coefficient", "step_size", "steps")
    assert in_model.axis("cells").values == (16, 32, 64)
    assert in_model == in_sweep
    assert in_model.sha256 == in_sweep.sha256
    assert in_model.cells_max == 64
    assert in_model.run_model({"cells": 32}).cells == 32
    assert in_model.run_model({"cells": 32}).dims == 1
    assert [model.cells for model in in_model.run_models()] == [16, 32, 64]
    assert in_model.model_values("cells") == (16, 32, 64)
    assert in_model.model_values("scheme") == ("ftcs",)
    with pytest.raises(KeyError, match="swept model keys need a value: cells"):
        in_model.run_model()


def test_model_axis_forms_in_model_section():
    sweep = parse_sweep(minimal(**{"  cells": "  cells: {geomspace: [16, 128], num: 4}"}))
    assert sweep.axis("cells").values == (16, 32, 64, 128)
    single = parse_sweep(minimal(**{"  cells": "  cells: [16]"}))
    assert single.axis_names[0] == "cells" and single.model.cells is None


def test_axis_order_is_fixed_whatever_the_order_written():
    text = """\
name: order
model: {initial: [step, gaussian], dims: [1, 2]}
sweep:
  steps: [1]
  cfl: [0.1]
  seed: [1, 2]
  coefficient: [1.0]
  boundary: [periodic, dirichlet]
  length: [1.0, 2.0]
  cells: [8, 16]
  confinement: [0.0, 1.0]
  scheme: [ftcs, crank-nicolson, backward-euler, langevin]
  particles: [100, 200]
"""
    sweep = parse_sweep(text)
    assert sweep.axis_names == (*MODEL_KEYS, "coefficient", "cfl", "steps")
    assert sweep.model == Model(*[None] * len(MODEL_KEYS))
    assert sweep.swept_model_keys == MODEL_KEYS
    assert sweep.axis("scheme").values == ("ftcs", "crank-nicolson", "backward-euler", "langevin")
    assert sweep.dims_max == 2 and sweep.cells_max == 16
    assert sweep.shape == (4, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1)


def test_output_fields_with_a_swept_scheme_is_fine():
    sweep = parse_sweep(
        minimal(**{"  cells": "  scheme: [ftcs, crank-nicolson]"})
        + "output: {fields: checkpoints}\n"
    )
    assert sweep.output.fields == "checkpoints"


# --------------------------------------------------------------------------- identity


def test_hash_ignores_comments_layout_and_key_order():
    first = parse_sweep(DESIGN_EXAMPLE)
    second = parse_sweep(DESIGN_EXAMPLE_REWRITTEN)
    assert first.text != second.text
    assert first == second
    assert hash(first) == hash(second)
    assert first.sha256 == second.sha256
    assert re.fullmatch(r"[0-9a-f]{64}", first.sha256)


def test_hash_ignores_source():
    assert parse_sweep(GOOD_MINIMAL, source="a.yaml").sha256 == parse_sweep(GOOD_MINIMAL).sha256


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("num: 16}", "num: 17}"),
        ("[10, 100, 1000, 10000]", "[10, 100, 1000, 10001]"),
        ("tolerance: 1.0e-3", "tolerance: 1.0e-4"),
        ("fields: final", "fields: checkpoints"),
        ("chunks: {coefficient: 4, step_size: 16}", "chunks: {coefficient: 4}"),
        ("scheme: ftcs", "scheme: crank-nicolson"),
        ("name: ftcs-1d-stability", "name: ftcs-1d-stability-2"),
        ("coefficient: {geomspace", "coefficient: {linspace"),
    ],
)
def test_hash_changes_with_any_value(old, new):
    assert old in DESIGN_EXAMPLE
    changed = parse_sweep(DESIGN_EXAMPLE.replace(old, new))
    original = parse_sweep(DESIGN_EXAMPLE)
    assert changed != original
    assert changed.sha256 != original.sha256


def test_hash_is_stable_across_releases():
    # The canonical form is part of the store contract (resume refuses a different
    # hash); changing it orphans every existing store.
    sweep = parse_sweep("name: h\nmodel: {}\nsweep: {coefficient: 1, step_size: 0.5, steps: 2}\n")
    assert sweep.canonical_json() == (
        '{"axes":[["coefficient",[1.0]],["step_size",[0.5]],["steps",[2]]],"chunks":[],'
        '"criteria":{"divergence":1000.0,"tolerance":0.001},"description":"",'
        '"format":"diffsweep-sweep-1","model":{"boundary":"neumann","cells":128,"dims":1,'
        '"initial":"step","length":1.0,"scheme":"ftcs","seed":0},"name":"h",'
        '"output":{"fields":"none"}}'
    )


def test_sweep_is_immutable_and_hashable():
    sweep = parse_sweep(DESIGN_EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sweep.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sweep.model.cells = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sweep.axes[0].values = ()  # type: ignore[misc]
    assert isinstance(sweep.axes, tuple) and isinstance(sweep.chunks, tuple)
    assert len({sweep, parse_sweep(DESIGN_EXAMPLE_REWRITTEN), parse_sweep(GOOD_MINIMAL)}) == 2
    assert {sweep: 1}[parse_sweep(DESIGN_EXAMPLE_REWRITTEN)] == 1


def test_to_dict_round_trips():
    for text in (DESIGN_EXAMPLE, GOOD_MINIMAL, minimal(**{"  cells": "  cells: [16, 32]"})):
        sweep = parse_sweep(text)
        again = parse_sweep(yaml.safe_dump(sweep.to_dict()))
        assert again == sweep
        assert again.sha256 == sweep.sha256


def test_units_block_sets_length_and_time_and_enters_the_hash_only_when_given():
    base = "name: u\nmodel: {}\nsweep: {coefficient: 1, step_size: 0.5, steps: 2}\n"
    plain = parse_sweep(base)
    assert plain.units == Units() and plain.units.of(length=2, time=-1) == "1"
    # spelling out the default is the same definition (the stable hash above stays)
    assert parse_sweep(base + "units: {length: 1, time: '1'}\n").sha256 == plain.sha256
    physical = parse_sweep(base + "units: {length: mm, time: s}\n")
    assert physical.units == Units(length="mm", time="s") and physical.sha256 != plain.sha256
    assert physical.units.of(length=2, time=-1) == "mm2 s-1"
    assert parse_sweep(yaml.safe_dump(physical.to_dict())) == physical
    # only length: the coefficient is length squared per nondimensional time
    assert parse_sweep(base + "units: {length: m}\n").units.of(length=2, time=-1) == "m2"
    # an override sets them like any key
    assert parse_sweep(base, overrides=["units.time=h"]).units == Units(time="h")
    with pytest.raises(SweepError, match=r"override 'units.time=fortnight': units.time: Expected a time unit"):
        parse_sweep(base, overrides=["units.time=fortnight"])


def test_sweep_pickles():
    sweep = parse_sweep(DESIGN_EXAMPLE)
    assert sweep.sha256  # cached on the instance; must not break pickling
    again = pickle.loads(pickle.dumps(sweep))
    assert again == sweep and again.sha256 == sweep.sha256 and again.text == sweep.text


def test_axis_dataclass():
    axis = Axis("steps", (1, 2, 3))
    assert len(axis) == 3
    assert axis == Axis("steps", (1, 2, 3))
    assert hash(axis) == hash(Axis("steps", (1, 2, 3)))


def test_constants_agree_with_numerics():
    import pipeline.numerics as numerics
    from pipeline.numerics.particles import PARTICLE_SCHEMES

    for name in ("BOUNDARIES", "INITIALS"):
        assert tuple(getattr(numerics, name)) == getattr(sweep_module, name)
    assert tuple(numerics.SCHEMES) + PARTICLE_SCHEMES == sweep_module.SCHEMES
    assert PARTICLE_SCHEMES == sweep_module.PARTICLE_SCHEMES


# --------------------------------------------------------------------------- memory


def test_memory_per_run_model():
    sweep = parse_sweep(DESIGN_EXAMPLE)
    size = 128
    per_checkpoint = 5 * 8 + 1
    assert sweep.memory_per_run("none") == 6 * size * 8 + 4 * per_checkpoint
    assert sweep.memory_per_run("final") == 7 * size * 8 + 4 * per_checkpoint
    assert sweep.memory_per_run("checkpoints") == (6 + 4) * size * 8 + 4 * per_checkpoint
    assert sweep.memory_per_run() == sweep.memory_per_run("final")
    assert sweep.memory_per_task() == 64 * sweep.memory_per_run()
    with pytest.raises(ValueError, match="fields"):
        sweep.memory_per_run("all")


def test_memory_limit_option():
    text = minimal(**{"  cells": "  cells: 1000"}) + "chunks: {coefficient: 2}\n"
    sweep = parse_sweep(text)
    assert sweep.memory_per_task() > 50_000
    with pytest.raises(
        SweepError,
        match=r"<string>:8: chunks: One task of 4 runs .* more than the memory limit of 48\.83 kiB per task",
    ):
        parse_sweep(text, memory_limit=50_000)
    with pytest.raises(
        SweepError, match=r"<string>:3: model\.cells: One run on a 1-D grid of 1000 cells"
    ):
        parse_sweep(text, memory_limit=10_000)
    with pytest.raises(ValueError, match="memory_limit"):
        parse_sweep(text, memory_limit=0)
    assert DEFAULT_MEMORY_LIMIT == 2 * 2**30


def test_without_chunks_only_a_single_run_is_checked():
    # planning chooses the blocks when none are given; a big sweep of small runs is fine
    text = minimal(**{"  coefficient": "  coefficient: {geomspace: [1.0e-3, 1.0], num: 100000}"})
    assert parse_sweep(text).n_runs == 200_000


def test_single_run_limit_uses_the_largest_swept_grid():
    text = minimal(**{"  cells": "  cells: [16, 1024]"}).replace("model:\n", "model:\n  dims: 3\n")
    with pytest.raises(
        SweepError,
        match=r":4: model\.cells: One run on a 3-D grid of 1024 cells per dimension needs about 48\.00 GiB",
    ):
        parse_sweep(text)


# --------------------------------------------------------------------------- refusals


def test_every_bad_sweep_file_is_listed():
    assert {path.name for path in BAD_SWEEPS_DIR.glob("*.yaml")} == {name for name, _ in BAD_SWEEPS}


@pytest.mark.parametrize(("filename", "expected"), BAD_SWEEPS, ids=[name for name, _ in BAD_SWEEPS])
def test_bad_sweep_is_refused_with_file_line_and_key(filename, expected):
    path = BAD_SWEEPS_DIR / filename
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    message = str(info.value)
    assert expected in message
    assert message.startswith(f"{path}:{info.value.line}: ")
    assert "\n" not in message
    assert info.value.source == str(path)
    line = int(expected.split(":")[1])
    assert info.value.line == line
    if info.value.key:
        assert f": {info.value.key}: " in expected
    assert isinstance(info.value, DiffsweepError) and isinstance(info.value, ValueError)


def test_python_tag_in_a_file_is_never_executed():
    PWNED_MARKER.unlink(missing_ok=True)
    for name in ("python_tag.yaml", "python_tag_nested.yaml"):
        with pytest.raises(SweepError, match=r"python/object/apply:os\.system"):
            load_sweep(BAD_SWEEPS_DIR / name)
    assert not PWNED_MARKER.exists()


@pytest.mark.parametrize(
    "payload",
    [
        '!!python/object/apply:os.system ["touch {marker}"]',
        '!!python/object/apply:subprocess.check_call [["touch", "{marker}"]]',
        '!!python/object/new:os.system ["touch {marker}"]',
        "!!python/name:os.system",
        '{{key: !!python/object/apply:os.system ["touch {marker}"]}}',
    ],
)
@pytest.mark.parametrize("where", ["name", "  coefficient", "  steps"])
def test_python_tags_anywhere_are_refused_and_not_run(tmp_path, payload, where):
    marker = tmp_path / "pwned"
    value = payload.format(marker=marker)
    text = minimal(**{where: f"{where}: {value}"})
    with pytest.raises(
        SweepError, match=r"<string>:\d+: .*Expected plain YAML data. Got the tag '!!python/"
    ):
        parse_sweep(text)
    assert not marker.exists()


def test_python_tag_under_an_unknown_key_is_refused_as_a_tag(tmp_path):
    marker = tmp_path / "pwned"
    text = minimal() + f'extra: !!python/object/apply:os.system ["touch {marker}"]\n'
    with pytest.raises(SweepError, match=r"<string>:8: extra: Expected plain YAML data"):
        parse_sweep(text)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("axis", "key"),
    [
        ("{geomspace: [1.0e-3, 1.0], num: 1e12}", "sweep.coefficient.num"),
        ("{linspace: [1.0e-3, 1.0], num: 1000000000000000000000000}", "sweep.coefficient.num"),
        ("{range: [1, 1000000000000000, 1]}", "sweep.coefficient.range"),
    ],
)
def test_huge_axis_is_refused_before_anything_is_allocated(axis, key):
    text = minimal(**{"  coefficient": f"  coefficient: {axis}"})
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(
            SweepError,
            match=rf"<string>:5: {re.escape(key)}: Expected (an integer <=|at most) 1,000,000",
        ):
            parse_sweep(text)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 10 * 2**20


def test_too_many_results_is_refused_before_anything_is_allocated():
    text = minimal(
        **{
            "  coefficient": "  coefficient: {geomspace: [1.0e-3, 1.0], num: 1000000}",
            "  step_size": "  step_size: {linspace: [1.0e-6, 1.0e-4], num: 1000000}",
        }
    )
    started = time.perf_counter()
    with pytest.raises(
        SweepError, match=r"<string>:4: sweep: Expected at most 1,000,000,000 results"
    ):
        parse_sweep(text)
    assert time.perf_counter() - started < 0.5


def test_oversized_text_is_refused(tmp_path):
    text = minimal() + "#" * 2**20 + "\n"
    with pytest.raises(
        SweepError,
        match=r"^<string>: The sweep definition is 1,048,\d+ bytes; at most 1,048,576 bytes \(1\.00 MiB\)",
    ):
        parse_sweep(text)
    path = tmp_path / "big.yaml"
    path.write_text(text)
    with pytest.raises(SweepError, match=r"big\.yaml: The sweep definition is"):
        load_sweep(path)


def test_unreadable_files_are_refused(tmp_path):
    with pytest.raises(SweepError, match=r"missing\.yaml: Cannot read the sweep definition"):
        load_sweep(tmp_path / "missing.yaml")
    with pytest.raises(SweepError, match="Cannot read the sweep definition"):
        load_sweep(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(SweepError, match=r"binary\.yaml: Expected UTF-8 text"):
        load_sweep(binary)


def test_load_sweep_keeps_the_text_and_source(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD_MINIMAL)
    sweep = load_sweep(path)
    assert sweep.text == GOOD_MINIMAL
    assert sweep.source == str(path)
    assert sweep == parse_sweep(GOOD_MINIMAL)


def test_unknown_key_without_close_match_lists_the_allowed_keys():
    with pytest.raises(
        SweepError, match=r"<string>:8: zzz: Unknown key\. Allowed here: name, description, model"
    ):
        parse_sweep(minimal() + "zzz: 1\n")


def test_error_carries_key_line_and_source():
    with pytest.raises(SweepError) as info:
        parse_sweep(minimal(**{"  steps": "  steps: [10, -1]"}), source="x.yaml")
    error = info.value
    assert (error.source, error.line, error.key) == ("x.yaml", 7, "sweep.steps[1]")
    assert str(error) == "x.yaml:7: sweep.steps[1]: Expected an integer >= 1. Got -1 instead."


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (
            {
                "  cells": "  cells: [16, 32]",
                "  steps": "  steps: [10, 100]\noutput: {fields: final}",
            },
            r":8: output\.fields: Expected 'none' when cells is swept",
        ),
        (
            {
                "  cells": "  dims: [1, 2]",
                "  steps": "  steps: [10, 100]\noutput: {fields: checkpoints}",
            },
            r":8: output\.fields: Expected 'none' when dims is swept",
        ),
        (
            {"  steps": "  steps: [10, 100]\nchunks: {steps: 2}"},
            r":8: chunks\.steps: The step-count axis is never chunked",
        ),
        ({"  cells": '  cells: "16"'}, r":3: model\.cells: Expected an integer >= 3\. Got '16'"),
        (
            {"  cells": "  cells: 1.0e+20"},
            r":3: model\.cells: Expected an integer <= 9,223,372,036,854,775,807\. Got 1e\+20",
        ),
        (
            {"  cells": "  seed: 99999999999999999999"},
            r":3: model\.seed: Expected an integer <= 9,223,372,036,854,775,807",
        ),
        (
            {"  cells": "  length: .nan"},
            r":3: model\.length: Expected a finite number > 0\. Got nan",
        ),
        (
            {"  cells": "  scheme: [ftcs, ftcs]"},
            r":3: model\.scheme\[1\]: Expected unique values\. Got 'ftcs' again",
        ),
        (
            {"  cells": "  initial: 2024-01-01"},
            r":3: model\.initial: Expected one of 'step', 'gaussian', 'random'\. Got datetime\.date",
        ),
        ({"name": "name: 42"}, r":1: name: Expected a name of letters, digits"),
        ({"name": "name: ''"}, r":1: name: Expected a name"),
        ({"name": "name: .hidden"}, r":1: name: Expected a name"),
        ({"name": "name: a b"}, r":1: name: Expected a name"),
        (
            {"  coefficient": "  coefficient: {}"},
            r":5: sweep\.coefficient: Expected exactly one of linspace, geomspace or range\. Got none of them",
        ),
        (
            {"  coefficient": "  coefficient: {linspace: 0.1, num: 2}"},
            r":5: sweep\.coefficient\.linspace: Expected a list \[start, stop\]\. Got 0\.1",
        ),
        (
            {"  coefficient": "  coefficient: {linspace: [0.1, x], num: 2}"},
            r":5: sweep\.coefficient\.linspace\[1\]: Expected a number > 0\. Got 'x'",
        ),
        (
            {"  coefficient": "  coefficient: {range: [0, 3, 1]}"},
            r":5: sweep\.coefficient\.range: Expected a number > 0\. Got 0",
        ),
        (
            {"  coefficient": "  coefficient: {range: [1, 2, 3, 4]}"},
            r":5: sweep\.coefficient\.range: Expected a list \[start, stop, step\]\. Got a list of 4",
        ),
        ({"  coefficient": "  coefficient: {geomspace: [1.0, 1.0e-3], num: 1e3}"}, None),
        (
            {"  steps": "  steps:\n    - 10\n    - 20\n    - 10"},
            r":10: sweep\.steps\[2\]: Expected unique values\. Got 10 again \(it is also at index 0\)",
        ),
        (
            {"  steps": "  steps: [10, [20]]"},
            r":7: sweep\.steps\[1\]: Expected a single value\. Got a list",
        ),
        (
            {"  steps": "  steps: 10\ncriteria: {divergence: .inf}"},
            r":8: criteria\.divergence: Expected a finite number > 1\. Got inf",
        ),
        ({"  steps": "  steps: 10\ncriteria: 3"}, r":8: criteria: Expected a mapping\. Got 3"),
        (
            {"  steps": "  steps: 10\noutput: {fields: [final]}"},
            r":8: output\.fields: Expected a name\. Got a list",
        ),
        (
            {"model:": "model: null", "  cells": "# no cells"},
            r":2: model: Expected a mapping\. Got None",
        ),
        (
            {"  step_size": "  step_size: [1.0e-4, 1.0e-4]"},
            r":6: sweep\.step_size\[1\]: Expected unique values",
        ),
    ],
)
def test_more_refusals(replace, expected):
    text = minimal(**replace)
    if expected is None:  # a valid variant, kept beside its neighbours for contrast
        assert parse_sweep(text).shape[0] == 1000
        return
    with pytest.raises(SweepError, match=expected):
        parse_sweep(text)


def test_anchors_and_aliases_are_followed():
    text = """\
name: aliases
model: {}
sweep:
  coefficient: &values [0.5, 1.0]
  cfl: *values
  steps: [1]
"""
    sweep = parse_sweep(text)
    assert sweep.axis("coefficient").values == sweep.axis("cfl").values == (0.5, 1.0)


def test_billion_laughs_is_cheap():
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 30)
    ]
    started = time.perf_counter()
    with pytest.raises(SweepError, match="a0: Unknown key"):
        parse_sweep("\n".join(lines) + "\n")
    assert time.perf_counter() - started < 1.0


def test_same_result_without_libyaml(monkeypatch):
    with_libyaml = parse_sweep(DESIGN_EXAMPLE)
    monkeypatch.setattr(yamltree, "FAST_LOADER", yaml.SafeLoader)
    assert parse_sweep(DESIGN_EXAMPLE) == with_libyaml
    plain = parse_sweep(minimal(**{"  coefficient": "  coefficient: [1e-3, 2]"}))
    assert plain.axis("coefficient").values == (1e-3, 2.0)
    with pytest.raises(
        SweepError,
        match=r"<string>:6: Invalid YAML: expected ',' or '\]', but got ':' \(while parsing a flow sequence, line 5\)",
    ):
        parse_sweep(minimal(**{"  coefficient": "  coefficient: [0.1, 1.0"}))


def test_quoted_numbers_stay_text():
    with pytest.raises(
        SweepError, match=r"<string>:5: sweep\.coefficient\[0\]: Expected a number > 0\. Got '1e-3'"
    ):
        parse_sweep(minimal(**{"  coefficient": "  coefficient: ['1e-3']"}))


@pytest.mark.parametrize("value", ["!!int abc", "!!float abc", "!!bool maybe", "!!timestamp soon"])
def test_explicit_tags_with_bad_values_are_refused(value):
    with pytest.raises(
        SweepError, match=r"<string>:3: model\.cells: Expected a value of the tag '!!"
    ):
        parse_sweep(minimal(**{"  cells": f"  cells: {value}"}))


def test_parse_sweep_refuses_bytes():
    with pytest.raises(TypeError):
        parse_sweep(GOOD_MINIMAL.encode())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties

_positive = st.floats(min_value=1e-9, max_value=1e6, allow_nan=False, allow_infinity=False)
_MODEL_STRATEGIES = {
    "scheme": st.sampled_from(sweep_module.SCHEMES),
    "dims": st.integers(1, 3),
    "cells": st.integers(3, 40),
    "length": _positive,
    "boundary": st.sampled_from(sweep_module.BOUNDARIES),
    "initial": st.sampled_from(sweep_module.INITIALS),
    "seed": st.integers(0, 2**63 - 1),
    "particles": st.integers(1, 10**5),
    "confinement": st.floats(min_value=0, max_value=1e3, allow_nan=False, allow_infinity=False),
}


@st.composite
def definitions(draw):
    """A random valid definition as plain data, and the axes it must give."""
    model: dict = {}
    sweep: dict = {}
    axes: dict = {}
    schemes: tuple = ("ftcs",)
    for key in MODEL_KEYS:
        strategy = _MODEL_STRATEGIES[key]
        where = draw(st.sampled_from(["default", "fixed", "model", "sweep"]))
        if key in sweep_module.PARTICLE_KEYS and not set(schemes) & set(sweep_module.PARTICLE_KEYS[key]):
            where = "default"  # a particle key no scheme of the sweep uses is refused
        if where == "fixed":
            model[key] = draw(strategy)
        elif where in ("model", "sweep"):
            values = draw(st.lists(strategy, min_size=1, max_size=3, unique=True))
            (model if where == "model" else sweep)[key] = values
            axes[key] = tuple(values)
        if key == "scheme" and where != "default":
            schemes = axes.get("scheme", (model.get("scheme"),))
    axes["coefficient"] = sweep["coefficient"] = draw(
        st.lists(_positive, min_size=1, max_size=4, unique=True)
    )
    step_axis = draw(st.sampled_from(["step_size", "cfl"]))
    axes[step_axis] = sweep[step_axis] = draw(
        st.lists(_positive, min_size=1, max_size=4, unique=True)
    )
    steps = draw(st.lists(st.integers(1, 10**9), min_size=1, max_size=4, unique=True))
    sweep["steps"] = steps
    axes["steps"] = sorted(steps)
    definition = {
        "name": draw(st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True)),
        "model": model,
        "sweep": dict(draw(st.permutations(list(sweep.items())))),
    }
    if draw(st.booleans()):
        definition["criteria"] = {
            "tolerance": draw(_positive),
            "divergence": draw(st.floats(1.001, 1e9)),
        }
    return definition, {name: tuple(values) for name, values in axes.items()}


@settings(max_examples=75, deadline=None)
@given(definitions())
def test_parse_of_dumped_definition_round_trips(case):
    definition, axes = case
    sweep = parse_sweep(yaml.safe_dump(definition, sort_keys=False))
    assert sweep.axis_names == tuple(axes)  # the expected order is that of MODEL_KEYS first
    assert sweep.shape == tuple(len(values) for values in axes.values())
    for name, values in axes.items():
        assert sweep.axis(name).values == values
    for key, value in definition["model"].items():
        if not isinstance(value, list):
            assert getattr(sweep.model, key) == value
    again = parse_sweep(yaml.safe_dump(sweep.to_dict()))
    assert again == sweep
    assert again.sha256 == sweep.sha256
    assert isinstance(hash(sweep), int)


def test_sweep_constructed_directly_is_usable():
    sweep = Sweep(
        name="direct",
        description="",
        model=Model(),
        axes=(Axis("coefficient", (1.0,)), Axis("cfl", (0.1, 0.2)), Axis("steps", (1, 10))),
        chunks=(),
        criteria=Criteria(),
        output=Output(),
    )
    assert sweep.step_axis == "cfl"
    assert sweep.shape == (1, 2, 2)
    assert parse_sweep(yaml.safe_dump(sweep.to_dict())) == sweep


def test_bad_sweeps_dir_exists():
    assert BAD_SWEEPS_DIR == Path(__file__).parent / "bad_sweeps"
    assert PWNED_MARKER.is_absolute()


@pytest.mark.parametrize(
    "module",
    [
        "pipeline.sweep",
        "pipeline.sweep.definition",
        "pipeline.sweep.parser",
        "pipeline.sweep.overrides",
    ],
)
def test_doctest_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result


# --------------------------------------------------------------------------- overrides


def test_overrides_equal_the_edited_file():
    overridden = parse_sweep(
        DESIGN_EXAMPLE,
        source="design.yaml",
        overrides=[
            "model.cells=64",
            "sweep.coefficient=[0.1, 1]",
            "criteria.tolerance=1e-4",
            "chunks.coefficient=2",
        ],
    )
    edited = parse_sweep(
        DESIGN_EXAMPLE.replace("cells: 128", "cells: 64")
        .replace("coefficient: {geomspace: [1.0e-3, 1.0], num: 16}", "coefficient: [0.1, 1.0]")
        .replace("tolerance: 1.0e-3", "tolerance: 1.0e-4")
        .replace("chunks: {coefficient: 4,", "chunks: {coefficient: 2,")
    )
    assert overridden == edited and overridden.sha256 == edited.sha256
    assert overridden.shape == (2, 32, 4) and overridden.model.cells == 64
    assert overridden.source == "design.yaml"


def test_the_effective_definition_is_recorded_and_parses_to_the_same_sweep():
    overrides = ["model.cells=64", "sweep.steps=[5, 50]"]
    sweep = parse_sweep(DESIGN_EXAMPLE, source="design.yaml", overrides=overrides)
    lines = sweep.text.splitlines()
    assert lines[:3] == [
        '# The effective sweep definition: "design.yaml" with these overrides',
        '#   "model.cells=64"',
        '#   "sweep.steps=[5, 50]"',
    ]
    assert "  cells: 64" in lines and "  steps: [5, 50]" in lines
    again = parse_sweep(sweep.text)
    assert again == sweep and again.sha256 == sweep.sha256
    assert parse_sweep(DESIGN_EXAMPLE, overrides=[]).text == DESIGN_EXAMPLE


def test_overrides_apply_in_order_and_create_sections():
    sweep = parse_sweep(
        minimal(),
        overrides=[
            "model.cells=32",
            "model.cells=48",
            "output.fields=final",
            "criteria.divergence=10",
        ],
    )
    assert sweep.model.cells == 48
    assert sweep.output == Output("final") and sweep.criteria.divergence == 10.0
    assert parse_sweep(minimal(), overrides=["description=null"]).description == ""


def test_an_override_moves_a_model_key_and_swaps_the_step_axis():
    swept = parse_sweep(minimal(), overrides=["sweep.cells=[16, 32]", "sweep.cfl=[0.1, 0.2, 0.3]"])
    assert swept.axis_names == ("cells", "coefficient", "cfl", "steps")
    assert swept.shape == (2, 2, 3, 2)
    fixed = parse_sweep(
        minimal() + "  scheme: [ftcs, crank-nicolson]\n", overrides=["model.scheme=ftcs"]
    )
    assert fixed.model.scheme == "ftcs" and not fixed.is_swept("scheme")


def test_an_override_through_an_alias_changes_only_its_own_path():
    text = """\
name: aliases
model: {}
sweep:
  coefficient: &spaced {linspace: [0.1, 0.4], num: 4}
  cfl: *spaced
  steps: [1]
"""
    sweep = parse_sweep(text, overrides=["sweep.cfl.num=2"])
    assert sweep.axis("cfl").values == (0.1, 0.4)
    assert len(sweep.axis("coefficient")) == 4
    assert parse_sweep(sweep.text) == sweep


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.cells", "override 'model.cells': Expected KEY=VALUE, such as model.cells=64"),
        ("=3", "override '=3': Expected KEY=VALUE"),
        ("model..cells=3", "override 'model..cells=3': Expected a dotted path of at most 4 keys"),
        ("a.b.c.d.e=1", "Expected a dotted path of at most 4 keys"),
        ("model.cells=", "override 'model.cells=': model.cells: Expected a value after '='"),
        (
            "model.cells=[1,",
            "override 'model.cells=[1,': model.cells: Invalid YAML: expected the node content",
        ),
        (
            "model.cells=2",
            "override 'model.cells=2': model.cells: Expected an integer >= 3. Got 2 instead.",
        ),
        (
            "model.shceme=ftcs",
            "override 'model.shceme=ftcs': model.shceme: Unknown key; did you mean 'scheme'?",
        ),
        ("modle.cells=3", "override 'modle.cells=3': modle: Unknown key; did you mean 'model'?"),
        ("name.x=1", "override 'name.x=1': name: Expected a mapping to set x in. Got 't' instead."),
        (
            "sweep.steps=[10, 1e18]",
            "override 'sweep.steps=[10, 1e18]': sweep.steps[1]: Expected an integer <= 1,000,000,000",
        ),
        (
            "model.length=1e300",
            "override 'model.length=1e300': model.length: Expected a length whose cell width",
        ),
        (
            "model.cells=!!python/object/apply:os.system [ls]",
            "model.cells: Expected plain YAML data. Got the tag '!!python/object/apply:os.system'",
        ),
        (
            "model.cells=1000000000",
            "model.cells: One run on a 1-D grid of 1000000000 cells per dimension",
        ),
    ],
)
def test_bad_overrides_are_refused_naming_the_override(override, expected):
    with pytest.raises(SweepError) as info:
        parse_sweep(minimal(), source="t.yaml", overrides=[override])
    assert expected in str(info.value)
    assert str(info.value).startswith("override ")
    assert info.value.line is None and "\n" not in str(info.value)


def test_overrides_must_be_a_sequence_of_strings():
    with pytest.raises(TypeError, match="sequence"):
        parse_sweep(minimal(), overrides="model.cells=32")  # type: ignore[arg-type]
