"""Sweep definitions shared by the tests: one small valid sweep and the bad ones.

``BAD_SWEEPS`` lists the files in ``tests/bad_sweeps/`` with a substring every error
message must contain: ``:LINE: KEY.PATH: start of the message``.  Each one must be
refused before anything is computed (the CLI: exit status 2, one line, no traceback).
"""

from __future__ import annotations

from pathlib import Path

BAD_SWEEPS_DIR = Path(__file__).parent / "bad_sweeps"

#: Written by the ``python_tag*`` cases if a YAML tag were ever executed.
PWNED_MARKER = Path("/tmp/diffsweep-pwned-by-yaml")

#: A 1-D FTCS sweep of 3 x 4 runs on 32 cells, up to 200 steps: well under a second.
GOOD_MINIMAL = """\
name: minimal
description: A tiny 1-D FTCS sweep for tests.
model:
  scheme: ftcs
  dims: 1
  cells: 32
  boundary: neumann
  initial: step
sweep:
  coefficient: [0.1, 0.5, 1.0]
  step_size: {linspace: [1.0e-4, 1.0e-3], num: 4}
  steps: [10, 50, 200]
chunks: {coefficient: 3, step_size: 2}
criteria:
  tolerance: 1.0e-3
  divergence: 1.0e+3
output:
  fields: final
"""

BAD_SWEEPS: list[tuple[str, str]] = [
    # YAML itself
    ("malformed_yaml.yaml", ":7: Invalid YAML: expected ',' or ']', but got ':'"),
    ("bad_indentation.yaml", ":8: Invalid YAML: expected <block end>"),
    ("multiple_documents.yaml", ":9: Invalid YAML: found another document"),
    ("empty_file.yaml", ":1: Expected a mapping with name, model and sweep. Got an empty document"),
    (
        "top_level_list.yaml",
        ":1: Expected a mapping with name, model and sweep at the top level. Got a list",
    ),
    (
        "top_level_scalar.yaml",
        ":1: Expected a mapping with name, model and sweep at the top level. Got 'just a sentence'",
    ),
    ("duplicate_key.yaml", ":9: name: Duplicate key 'name' (first given on line 1)"),
    ("duplicate_key_nested.yaml", ":9: sweep.steps: Duplicate key 'steps' (first given on line 8)"),
    ("non_text_key.yaml", ":9: 1: Expected a text key. Got 1"),
    ("merge_key.yaml", ":4: model: YAML merge keys ('<<') are not supported"),
    (
        "python_tag.yaml",
        ":1: name: Expected plain YAML data. Got the tag '!!python/object/apply:os.system'",
    ),
    (
        "python_tag_nested.yaml",
        ":8: sweep.steps[1]: Expected plain YAML data. Got the tag '!!python/object/apply:os.system'",
    ),
    (
        "deep_nesting.yaml",
        ":4: Expected at most 20 levels of nested lists and mappings (a sweep definition needs four)",
    ),
    (
        "cfl_flow_comma.yaml",
        ":7: sweep.cfl: Expected a key. Got the number 0.7 instead: in a {...} mapping a comma ends an entry, so 'linspace: 0.1, 0.7' reads as two entries",
    ),
    ("custom_tag.yaml", ":9: output: Expected plain YAML data. Got the tag '!include'"),
    # top-level keys
    ("unknown_top_key.yaml", ":9: outptu: Unknown key; did you mean 'output'?"),
    ("missing_name.yaml", ":1: name: Missing required key"),
    ("missing_model.yaml", ":1: model: Missing required key"),
    ("missing_sweep.yaml", ":1: sweep: Missing required key"),
    ("bad_name.yaml", ":1: name: Expected a name of letters, digits"),
    ("description_not_text.yaml", ":2: description: Expected text. Got a list"),
    # model
    ("model_not_mapping.yaml", ":2: model: Expected a mapping. Got a list"),
    ("unknown_model_key.yaml", ":5: model.shceme: Unknown key; did you mean 'scheme'?"),
    (
        "scheme_unknown.yaml",
        ":3: model.scheme: Expected one of 'ftcs', 'backward-euler', 'crank-nicolson', 'random-walk', 'langevin'. Got 'crank-nicholson' instead; did you mean 'crank-nicolson'?",
    ),
    ("scheme_linspace.yaml", ":3: model.scheme: Expected a name or a list of names. Got a mapping"),
    (
        "boundary_axis_unknown.yaml",
        ":5: model.boundary[1]: Expected one of 'neumann', 'periodic', 'dirichlet'. Got 'periodc' instead; did you mean 'periodic'?",
    ),
    ("dims_four.yaml", ":5: model.dims: Expected an integer from 1 to 3. Got 4"),
    ("dims_bool.yaml", ":5: model.dims: Expected an integer from 1 to 3. Got True"),
    ("cells_two.yaml", ":4: model.cells: Expected an integer >= 3. Got 2"),
    ("cells_fraction.yaml", ":4: model.cells: Expected an integer >= 3. Got 32.5"),
    ("cells_geomspace_fraction.yaml", ":4: model.cells.linspace: Expected whole numbers. Got 18.5"),
    (
        "length_overflow.yaml",
        ":5: model.length: Expected a length whose cell width dx = length / cells lies between 1e-150 and 1e+150 (dx**2 and 1/dx**2 must be float64 numbers). Got 1e+300",
    ),
    (
        "length_underflow.yaml",
        ":5: model.length: Expected a length whose cell width dx = length / cells lies between 1e-150 and 1e+150 (dx**2 and 1/dx**2 must be float64 numbers). Got 1e-300",
    ),
    ("length_negative.yaml", ":5: model.length: Expected a number > 0. Got -1.0"),
    ("seed_negative.yaml", ":5: model.seed: Expected an integer >= 0. Got -1"),
    # particle schemes
    ("particles_zero.yaml", ":5: model.particles: Expected an integer >= 1. Got 0"),
    (
        "particles_memory.yaml",
        ":6: model.particles: One run of 400,000,000 particles in 3-D needs about 9.",
    ),
    (
        "particles_with_ftcs.yaml",
        ":6: sweep.particles: particles applies only to the random-walk and langevin schemes; this sweep's scheme is ftcs.",
    ),
    ("confinement_negative.yaml", ":5: model.confinement: Expected a number >= 0. Got -2.0"),
    (
        "confinement_random_walk.yaml",
        ":6: model.confinement: confinement applies only to the langevin scheme; this sweep's scheme is random-walk.",
    ),
    (
        "model_key_twice.yaml",
        ":9: sweep.cells: Model key 'cells' is set in model (line 4) and swept here",
    ),
    # sweep axes
    ("unknown_sweep_key.yaml", ":7: sweep.step-size: Unknown key; did you mean 'step_size'?"),
    ("missing_coefficient.yaml", ":5: sweep.coefficient: Missing required key"),
    (
        "missing_step_axis.yaml",
        ":5: sweep.step_size: Missing required key: give the time step as step_size, or as cfl",
    ),
    ("both_step_axes.yaml", ":8: sweep.cfl: Expected exactly one of step_size or cfl. Got both"),
    ("missing_steps.yaml", ":5: sweep.steps: Missing required key"),
    ("bool_coefficient.yaml", ":6: sweep.coefficient[1]: Expected a number > 0. Got True"),
    ("string_coefficient.yaml", ":6: sweep.coefficient[1]: Expected a number > 0. Got 'fast'"),
    ("nan_coefficient.yaml", ":6: sweep.coefficient[1]: Expected a finite number > 0. Got nan"),
    ("inf_step_size.yaml", ":7: sweep.step_size[1]: Expected a finite number > 0. Got inf"),
    ("negative_step_size.yaml", ":7: sweep.step_size[0]: Expected a number > 0. Got -0.0001"),
    ("zero_coefficient.yaml", ":6: sweep.coefficient: Expected a number > 0. Got 0"),
    ("empty_axis.yaml", ":6: sweep.coefficient: Expected at least one value. Got an empty list"),
    ("null_axis.yaml", ":6: sweep.coefficient: Expected a value, a list of values or a mapping"),
    ("nested_list.yaml", ":6: sweep.coefficient[0]: Expected a single value. Got a list"),
    ("duplicate_values.yaml", ":8: sweep.steps[2]: Expected unique values. Got 10 again"),
    (
        "duplicate_linspace.yaml",
        ":6: sweep.coefficient.linspace: Expected unique values. Got 0.5 more than once",
    ),
    ("steps_float.yaml", ":8: sweep.steps[1]: Expected an integer >= 1. Got 10.5"),
    (
        "steps_huge.yaml",
        ":8: sweep.steps[1]: Expected an integer <= 1,000,000,000 (the most steps one run may take",
    ),
    (
        "cfl_time_overflow.yaml",
        ":7: sweep.cfl: Expected values whose final time steps*dt is a float64 number for every run. Got 1e+308",
    ),
    ("steps_zero.yaml", ":8: sweep.steps[0]: Expected an integer >= 1. Got 0"),
    (
        "unknown_form_key.yaml",
        ":6: sweep.coefficient.linspce: Unknown key; did you mean 'linspace'?",
    ),
    (
        "logspace.yaml",
        ":7: sweep.step_size.logspace: Unknown key: write geomspace, which takes the end values themselves, not their base-10 exponents as numpy's logspace does ({logspace: [-6, -4]} means {geomspace: [1e-06, 0.0001]})",
    ),
    (
        "two_forms.yaml",
        ":6: sweep.coefficient: Expected exactly one of linspace, geomspace or range. Got linspace and geomspace",
    ),
    ("num_missing.yaml", ":6: sweep.coefficient.num: Missing key 'num'"),
    ("num_zero.yaml", ":6: sweep.coefficient.num: Expected an integer >= 1. Got 0"),
    ("num_float.yaml", ":6: sweep.coefficient.num: Expected an integer >= 1. Got 2.5"),
    ("num_bool.yaml", ":6: sweep.coefficient.num: Expected an integer >= 1. Got True"),
    (
        "num_huge.yaml",
        ":6: sweep.coefficient.num: Expected an integer <= 1,000,000. Got 1000000000000.0",
    ),
    ("num_with_range.yaml", ":8: sweep.steps.num: num goes with linspace or geomspace"),
    (
        "linspace_arity.yaml",
        ":7: sweep.step_size.linspace: Expected a list [start, stop]. Got a list of 1",
    ),
    ("geomspace_nonpositive.yaml", ":5: model.seed.geomspace[0]: Expected a number > 0. Got 0"),
    ("range_float.yaml", ":8: sweep.steps.range[1]: Expected an integer. Got 100.5"),
    ("range_zero_step.yaml", ":8: sweep.steps.range[2]: Expected a step other than 0. Got 0"),
    (
        "range_without_step.yaml",
        ":8: sweep.steps.range: Expected a list [start, stop, step]. Got [500, 2000] without a step instead, which would mean all 1,500 integers from 500 to 1999; give the step, e.g. [500, 2000, 500]",
    ),
    (
        "range_empty.yaml",
        ":8: sweep.steps.range: Expected at least one value. Got an empty range [100, 10, 10]",
    ),
    (
        "too_many_results.yaml",
        ":5: sweep: Expected at most 1,000,000,000 results (runs x checkpoints). Got 20,000,000,000",
    ),
    # zipped axes
    (
        "zip_unequal_lengths.yaml",
        ":8: sweep.zip.step_size: Expected 3 values, as many as sweep.zip.coefficient (line 7): zipped axes pair their values one by one. Got 2 instead.",
    ),
    (
        "zip_key_also_swept.yaml",
        ":9: sweep.coefficient: 'coefficient' varies in zip (line 7) and is swept here too; give it in one place.",
    ),
    (
        "zip_and_other_step_axis.yaml",
        ":9: sweep.cfl: Expected exactly one of step_size or cfl. Got step_size in zip (line 8) and cfl here instead.",
    ),
    (
        "zip_unknown_key.yaml",
        ":8: sweep.zip.stepsize: Unknown key; did you mean 'step_size'? Allowed here: coefficient, step_size, cfl.",
    ),
    (
        "zip_model_key.yaml",
        ":6: sweep.zip.cells: Only coefficient and step_size or cfl vary together; cells changes the arrays of a run",
    ),
    ("zip_steps.yaml", ":9: sweep.zip.steps: steps are the checkpoints of every run, not a setting of one run"),
    (
        "zip_one_key.yaml",
        ":6: sweep.zip: Expected the axes that vary together: coefficient and step_size or cfl. Got coefficient instead; add step_size or cfl.",
    ),
    (
        "zip_same_case_twice.yaml",
        ":6: sweep.zip: Expected every case once. Got coefficient 0.1 with step_size 0.0001 at positions 0 and 2 instead",
    ),
    ("zip_not_mapping.yaml", ":6: sweep.zip: Expected a mapping of the axes that vary together"),
    (
        "chunks_zipped_axis.yaml",
        ":10: chunks.coefficient: Expected an axis name. Got 'coefficient' instead (it is zipped: its runs lie along 'case'; chunk case).",
    ),
    # units
    (
        "units_unknown_symbol.yaml",
        ":10: units.length: Expected a length unit, one of '1', 'm', 'km', 'cm', 'mm', 'um', 'nm' (UDUNITS symbols; '1': nondimensional). Got 'meter' instead; write 'm'.",
    ),
    (
        "units_unparseable.yaml",
        ":11: units.time: Expected a time unit, one of '1', 's', 'ms', 'us', 'ns', 'min', 'h', 'd' (UDUNITS symbols; '1': nondimensional). Got 'length^2 / time' instead.",
    ),
    ("units_unknown_key.yaml", ":11: units.mass: Unknown key. Allowed here: length, time."),
    # chunks, criteria, output, memory
    (
        "chunks_not_mapping.yaml",
        ":9: chunks: Expected a mapping of axis names to runs per task. Got a list",
    ),
    ("chunks_steps.yaml", ":9: chunks.steps: The step-count axis is never chunked"),
    (
        "chunks_too_large.yaml",
        ":9: chunks.coefficient: Expected at most 2 (the length of axis coefficient). Got 4",
    ),
    (
        "chunks_unknown_axis.yaml",
        ":9: chunks.coeficient: Expected an axis name. Got 'coeficient' instead; did you mean 'coefficient'?",
    ),
    (
        "chunks_not_swept.yaml",
        ":9: chunks.cells: Expected an axis name. Got 'cells' instead (it is not swept here)",
    ),
    ("chunks_zero.yaml", ":9: chunks.step_size: Expected an integer >= 1. Got 0"),
    ("criteria_tolerance_zero.yaml", ":10: criteria.tolerance: Expected a number > 0. Got 0"),
    ("criteria_divergence_one.yaml", ":10: criteria.divergence: Expected a number > 1. Got 1"),
    (
        "criteria_unknown_key.yaml",
        ":10: criteria.tolerence: Unknown key; did you mean 'tolerance'?",
    ),
    (
        "output_fields_bad.yaml",
        ":10: output.fields: Expected one of 'none', 'final', 'checkpoints'. Got 'all'",
    ),
    (
        "output_fields_with_cells_axis.yaml",
        ":10: output.fields: Expected 'none' when cells is swept",
    ),
    (
        "memory_per_run.yaml",
        ":4: model.cells: One run on a 3-D grid of 1024 cells per dimension needs about 48.00 GiB",
    ),
    (
        "memory_per_task.yaml",
        ":10: chunks: One task of 8 runs (4 coefficient x 2 step_size) needs about 6.00 GiB (768.00 MiB per run), more than the ",
    ),
]


#: 24 blocks of a fraction of a second each: long enough to interrupt in the middle
INTERRUPTIBLE = """\
name: interruptible
description: 24 blocks of about a quarter of a second each
model: {scheme: ftcs, dims: 1, cells: 128, boundary: periodic, initial: random, seed: 3}
sweep:
  coefficient: {geomspace: [0.1, 1.0], num: 6}
  cfl: {linspace: [0.1, 0.6], num: 8}
  steps: [1000, 100000, 400000]
chunks: {coefficient: 1, cfl: 2}
"""
