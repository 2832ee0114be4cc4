"""Recommendation tables (text, CSV) and the one-page HTML report of ``diffsweep map --html``.

The tables are :class:`pandas.DataFrame` s written by pandas (``to_string``,
``to_csv``, ``to_html``). The HTML page is self-contained: the figures are embedded as
base64 ``data:`` URIs and the only links are relative ones to files ``diffsweep map``
wrote beside it.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "conclusions",
    "edge_cell",
    "format_table",
    "summary_frame",
    "table_frame",
    "table_notes",
    "write_csv",
    "write_html",
    "write_text",
]

#: recommendation keys shown in the tables, with their column titles
COLUMNS = (
    ("coefficient", "D"),
    ("divergence_edge", "largest Δt not divergent"),
    ("bound_step_size", "exact bound Δt*"),
    ("oscillation_edge", "largest Δt not oscillating"),
    ("min_steps_to_equilibrium", "min steps to eq."),
    ("predicted_steps_to_equilibrium", "predicted"),
    ("cheapest", "cheapest (Δt × steps)"),
    ("stable_fraction", "stable"),
)
#: keys of a recommendation that are numbers rather than an axis value
_VALUES = {key for key, _ in COLUMNS} | {
    "max_stable_step_size", "first_unstable_step_size", "theory_max_step_size", "max_stable_cfl",
    "theory_max_cfl", "bound_cfl", "computed_fraction",
}
#: what a cell without a number says, per column (never a bare "-")
_MISSING = {
    "divergence_edge": "not computed",
    "oscillation_edge": "not computed",
    "bound_step_size": "none (implicit)",
    "theory_max_step_size": "none (implicit)",
    "min_steps_to_equilibrium": "not reached",
    "predicted_steps_to_equilibrium": "n/a",
    "cheapest": "none at eq.",
    "stable_fraction": "not computed",
}
#: recommendation keys holding an edge (a dict), flattened in the CSV
_EDGE_KEYS = ("divergence_edge", "oscillation_edge")
#: step counts: whole numbers, missing ones empty
_COUNTS = ("min_steps_to_equilibrium", "predicted_steps_to_equilibrium", "cheapest_steps")


def summary_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The recommendations as numbers, one row each, ``cheapest`` flattened.

    Examples
    --------
    >>> frame = summary_frame([{"coefficient": 1.0, "min_steps_to_equilibrium": None,
    ...                         "cheapest": {"step_size": 1e-3, "cfl": 0.25, "steps": 700}}])
    >>> frame.to_csv(index=False).splitlines()
    ['coefficient,min_steps_to_equilibrium,cheapest_step_size,cheapest_cfl,cheapest_steps', '1.0,,0.001,0.25,700']
    """
    rows = []
    for record in records:
        row = {k: v for k, v in record.items() if k not in ("cheapest", *_EDGE_KEYS)}
        cheapest = record.get("cheapest") or {}
        row.update({f"cheapest_{key}": cheapest.get(key) for key in ("step_size", "cfl", "steps")})
        for name in _EDGE_KEYS:
            if name in record:
                edge = record[name] or {}
                low, high = edge.get("bracket") or [None, None]
                row.update({
                    f"{name}_step_size": edge.get("step_size"), f"{name}_low": low, f"{name}_high": high,
                    f"{name}_censored": edge.get("censored"), f"{name}_refined": edge.get("refined"),
                })
        rows.append(row)
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=[key for key, _ in COLUMNS])
    for name in _COUNTS:
        if name in frame:
            frame[name] = frame[name].astype("Int64")
    return frame


def edge_cell(edge: Mapping[str, Any]) -> str:
    """An edge for reading: the value, or a censored bound marked as such.

    Examples
    --------
    >>> edge_cell({"step_size": 2e-4, "bracket": [2e-4, None], "censored": True, "refined": False, "limit": "sweep"})
    '≥ 0.0002 (edge of sweep)'
    >>> edge_cell({"step_size": 1e-6, "bracket": [None, 1e-6], "censored": True, "refined": False, "limit": "sweep"})
    '< 1e-06 (below sweep)'
    >>> edge_cell({"step_size": 3.05e-5, "bracket": [3.05e-5, 3.06e-5], "censored": False, "refined": False})
    '3.05e-05 (grid: < 3.06e-05)'
    """
    value = edge.get("step_size")
    if value is None:
        return _MISSING["divergence_edge"]
    where = "search" if edge.get("limit") == "search" else "sweep"
    low, high = edge.get("bracket", [None, None])
    if edge.get("censored"):
        if low is None:
            return f"< {value:.4g} (below {where})"
        return f"≥ {value:.4g} (edge of {where})"
    if edge.get("refined"):
        return f"{value:.5g}"
    return f"{value:.4g} (grid: < {high:.4g})"


def _cell(key: str, value: Any) -> str:
    if value is None:
        return _MISSING.get(key, "n/a")
    if key in ("divergence_edge", "oscillation_edge"):
        return edge_cell(value)
    if key == "cheapest":
        mark = " (edge of search)" if value.get("censored") else ""
        return f"{value['step_size']:.4g} × {value['steps']}{mark}"
    if key in ("stable_fraction", "computed_fraction"):
        return f"{value:.0%}"
    if key == "bound_step_size":  # as many digits as a refined edge beside it
        return f"{value:.5g}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The recommendations for reading: titled columns, formatted cells; other axes first."""
    leading = [k for k in records[0] if k not in _VALUES] if records else []
    columns = [(key, key) for key in leading] + list(COLUMNS)
    return pd.DataFrame(
        [[_cell(key, record.get(key)) for key, _ in columns] for record in records],
        columns=[title for _, title in columns],
    )


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The recommendations as an aligned plain-text table."""
    return str(table_frame(records).to_string(index=False))


def table_notes(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sentences saying what the table's marks mean (only those that appear), and how refined it is."""
    edges = [r[k] for r in records for k in ("divergence_edge", "oscillation_edge") if r.get(k)]
    cheapest = [r["cheapest"] for r in records if r.get("cheapest")]
    steps = next((e["steps"] for e in edges), None)
    notes = [
        f"Edges at {steps} steps (the largest step count): the largest step size seen not divergent "
        "(not oscillating), i.e. the lower end of the bracket around the edge."
        if steps is not None else "No edges: nothing computed yet.",
    ]
    if any(e["refined"] and not e["censored"] for e in edges):
        notes.append("Plain numbers are refined by `diffsweep refine`: the edge lies within rtol above them.")
    if any(not e["refined"] and not e["censored"] for e in edges):
        notes.append("'grid: < x': read off the swept grid: the edge lies between the value and x; "
                     "`diffsweep refine STORE` narrows it.")
    if any(e["censored"] and e["bracket"][1] is None for e in edges):
        notes.append("'≥ x (edge of sweep/search)': stable up to the largest step size tried, so the edge is "
                     "above it (censored); refine extends the search up to 10^4 times the swept range.")
    if any(e["censored"] and e["bracket"][0] is None for e in edges):
        notes.append("'< x (below sweep/search)': unstable down to the smallest step size tried (censored).")
    if any(r.get("bound_step_size") is None for r in records):
        notes.append("'none (implicit)': backward Euler and Crank–Nicolson are unconditionally stable; "
                     "what they show past an edge is oscillation (the maximum principle broken), never divergence.")
    if any(r.get("min_steps_to_equilibrium") is None for r in records):
        notes.append("'not reached' / 'none at eq.': no stable setting of that coefficient reached "
                     "equilibrium within the largest step count.")
    if any(r.get("predicted_steps_to_equilibrium") is None and r.get("cheapest") is None for r in records):
        notes.append("'n/a' in predicted: the prediction is shown at the cheapest setting, and there is none.")
    if any(c.get("refined") for c in cheapest):
        notes.append("Cheapest settings refined by `diffsweep refine --target cheapest` (fewest steps to equilibrium).")
    return notes


def write_csv(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """One row per recommendation (``cheapest`` flattened); empty cells for missing values."""
    path = Path(path)
    summary_frame(records).to_csv(path, index=False, na_rep="")
    return path


def write_text(records: Sequence[Mapping[str, Any]], path: str | Path, header: Sequence[str] = ()) -> Path:
    """The plain-text table with a few header lines (sweep, completeness) and what its marks mean."""
    path = Path(path)
    notes = [f"  {note}" for note in table_notes(records)]
    path.write_text("\n".join([*header, "", format_table(records), "", *notes, ""]), encoding="utf-8")
    return path


def _relative_deviation(edge: Mapping[str, Any], bound: float) -> float:
    """Largest |x / bound - 1| over the ends of the edge's bracket."""
    return max(abs(x / bound - 1) for x in edge["bracket"] if x is not None)


def conclusions(records: Sequence[Mapping[str, Any]], attrs: Mapping[str, Any] | None = None) -> list[str]:
    """What the results say, in sentences: the measured edge against the exact bound, the
    coefficients that never became unstable, whether equilibrium is reached, the cheapest settings."""
    attrs = attrs or {}
    if not records:
        return ["Nothing has been computed yet."]
    sentences = []
    keys = [k for k in records[0] if k not in _VALUES and k not in ("coefficient", "cheapest", *_EDGE_KEYS)]

    def name(record: Mapping[str, Any]) -> str:
        extra = ", ".join(f"{k} {record[k]}" for k in keys)
        return f"D = {record['coefficient']:.4g}" + (f" ({extra})" if extra else "")

    steps = next((r["divergence_edge"]["steps"] for r in records if r.get("divergence_edge")), None)
    explicit = [r for r in records if r.get("bound_step_size") is not None and r.get("divergence_edge")]
    measured = [r for r in explicit if not r["divergence_edge"]["censored"]]
    if measured:
        worst = max(measured, key=lambda r: _relative_deviation(r["divergence_edge"], r["bound_step_size"]))
        deviation = _relative_deviation(worst["divergence_edge"], worst["bound_step_size"])
        refined = all(r["divergence_edge"]["refined"] for r in measured)
        how = (f"refined by diffsweep refine to rtol {attrs['divergence_rtol']:g}" if refined and "divergence_rtol" in attrs
               else "refined by diffsweep refine" if refined else "read off the swept grid (run diffsweep refine to narrow it)")
        sentences.append(
            f"The measured divergence edge at {steps} steps lies within {deviation:.2%} of the exact bound "
            f"2/λ_max of the discrete operator for all {len(measured)} coefficients where it was found "
            f"(largest relative deviation {deviation:.1e}, at {name(worst)}); {how}."
        )
    never = [r for r in records if r.get("divergence_edge") and r["divergence_edge"]["censored"] and r["divergence_edge"]["bracket"][1] is None]
    if explicit and not any(r.get("bound_step_size") is not None for r in never):
        sentences.append(f"Every one of the {len(explicit)} explicit-scheme coefficients became unstable within the sweep.")
    if never:
        implicit = [r for r in never if r.get("bound_step_size") is None]
        explicit_never = [r for r in never if r.get("bound_step_size") is not None]
        if explicit_never:
            limit = max(r["divergence_edge"]["step_size"] for r in explicit_never)
            where = "search" if any(r["divergence_edge"].get("limit") == "search" for r in explicit_never) else "sweep"
            sentences.append(
                f"{len(explicit_never)} of {len(explicit)} explicit-scheme coefficients never became unstable within the "
                f"{where} (step sizes up to {limit:.3g}): their edge lies beyond it, so the value shown is a lower bound."
            )
        if implicit:
            oscillating = [r for r in implicit if r.get("oscillation_edge") and not r["oscillation_edge"]["censored"]]
            sentences.append(
                f"The implicit schemes never diverged ({len(implicit)} of {len(implicit)} coefficients), as they are "
                "unconditionally stable; " + (
                    f"{len(oscillating)} of them break the maximum principle (oscillate) above a step size, which is "
                    "oscillation, not instability." if oscillating else "none of them oscillated either."
                )
            )
    reached = [r for r in records if r.get("min_steps_to_equilibrium") is not None]
    sentences.append(
        f"Equilibrium (distance ≤ {attrs.get('tolerance', 'tolerance')}) is reached within the largest step count"
        + (f" ({steps})" if steps else "")
        + f" for {len(reached)} of {len(records)} coefficients"
        + ("." if len(reached) == len(records) else
           "; not for " + ", ".join(name(r) for r in records if r.get("min_steps_to_equilibrium") is None) + ".")
    )
    cheapest = [r for r in records if r.get("cheapest")]
    if cheapest:
        refined = any(r["cheapest"].get("refined") for r in cheapest)
        sentences.append(
            "Cheapest setting per coefficient (fewest steps to equilibrium"
            + (", refined" if refined else ", on the swept grid") + "): "
            + "; ".join(f"{name(r)}: Δt = {r['cheapest']['step_size']:.4g} × {r['cheapest']['steps']} steps" for r in cheapest)
            + "."
        )
    return sentences


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; }
figure { margin: 1em 0; } img { max-width: 100%; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
.warning { background: #fff3cd; padding: 0.6em; border: 1px solid #e0c36a; }
dt { font-weight: bold; float: left; width: 12em; } dd { margin-left: 13em; }
"""


def write_html(
    path: str | Path,
    *,
    attrs: Mapping[str, Any],
    images: Sequence[Path],
    records: Sequence[Mapping[str, Any]],
    note: str | None = None,
    links: Sequence[str] = (),
    store: str | None = None,
    refinement_attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write the one-page report.

    Parameters
    ----------
    path
        The ``.html`` file to write.
    attrs
        The results store's attributes (sweep name, hash, definition, versions).
    images
        PNG files to embed, in order.
    records
        :func:`pipeline.maps.recommend` output.
    note
        A warning shown at the top (e.g. the store is incomplete).
    links
        File names, relative to ``path``'s folder, written beside the report.
    store
        Where the results came from, for the provenance list.
    refinement_attrs
        Attributes of the store's ``refine`` group, when it has one (its tolerances).
    """
    path = Path(path)
    name = str(attrs.get("sweep_name", "diffsweep"))
    table = table_frame(records).to_html(index=False, border=0, classes="recommendations")
    try:
        versions = json.loads(str(attrs.get("versions", "{}")))
    except json.JSONDecodeError:
        versions = {}
    provenance = {
        "store": store or "",
        "sweep": name,
        "description": attrs.get("sweep_description", ""),
        "sweep hash": attrs.get("sweep_hash", ""),
        "created": attrs.get("created", ""),
        "host": attrs.get("host", ""),
        "criteria": f"equilibrium when distance ≤ {attrs.get('tolerance')}, divergent past {attrs.get('divergence')}",
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "report written": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>diffsweep report: {html.escape(name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Stability maps: {html.escape(name)}</h1>",
    ]
    if attrs.get("sweep_description"):
        parts.append(f"<p>{html.escape(str(attrs['sweep_description']))}</p>")
    if note:
        parts.append(f'<p class="warning">{html.escape(note)}</p>')
    parts += [
        "<p>Each map colours every setting by its stability class at that step count: "
        "blue shades are stable (dark: at equilibrium, mid: still transient), warm ones "
        "unstable (light orange: oscillating, breaking the maximum principle; dark red: divergent), "
        "light grey not computed; the legend lists the classes present. The solid black line is "
        "the exact bound 2/λ_max of the discrete operator (FTCS only), the dashed green line the "
        "slowest-mode prediction of where the field reaches equilibrium; markers are the measured "
        "edges (filled: refined, open triangles: censored, the edge lies beyond them).</p>",
        "<h2>Conclusions</h2>",
        "<ul>",
        *(f"<li>{html.escape(sentence)}</li>" for sentence in conclusions(records, {**attrs, **(refinement_attrs or {})})),
        "</ul>",
        "<h2>Recommendations</h2>",
        "<p>Per coefficient: the largest step size not divergent and not oscillating at the largest "
        "step count, the exact bound, the fewest steps at which a stable setting reaches equilibrium "
        "(with the slowest-mode prediction), the cheapest such setting and the share of stable results.</p>",
        table,
        "<ul>",
        *(f"<li>{html.escape(note)}</li>" for note in table_notes(records)),
        "</ul>",
        "<h2>Figures</h2>",
        *(_image(image, image.stem.replace("_", " ")) for image in images),
        "<h2>Provenance</h2>",
        "<dl>",
        *(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in provenance.items()),
        "</dl>",
    ]
    if links:
        parts.append("<p>Written beside this page: " + ", ".join(
            f'<a href="{html.escape(link)}">{html.escape(link)}</a>' for link in links
        ) + "</p>")
    if attrs.get("sweep_definition"):
        parts += ["<h3>Sweep definition</h3>", f"<pre>{html.escape(str(attrs['sweep_definition']))}</pre>"]
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
