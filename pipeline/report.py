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

__all__ = ["format_table", "summary_frame", "table_frame", "write_csv", "write_html", "write_text"]

#: recommendation keys shown in the tables, with their column titles
COLUMNS = (
    ("coefficient", "D"),
    ("max_stable_step_size", "max stable Δt"),
    ("theory_max_step_size", "theory Δt*"),
    ("first_unstable_step_size", "first unstable Δt"),
    ("min_steps_to_equilibrium", "min steps to eq."),
    ("predicted_steps_to_equilibrium", "predicted"),
    ("cheapest", "cheapest (Δt × steps)"),
    ("stable_fraction", "stable"),
)
#: keys of a recommendation that are numbers rather than an axis value
_VALUES = {key for key, _ in COLUMNS} | {"max_stable_cfl", "theory_max_cfl", "computed_fraction"}
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
        row = {k: v for k, v in record.items() if k != "cheapest"}
        cheapest = record.get("cheapest") or {}
        row.update({f"cheapest_{key}": cheapest.get(key) for key in ("step_size", "cfl", "steps")})
        rows.append(row)
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=[key for key, _ in COLUMNS])
    for name in _COUNTS:
        if name in frame:
            frame[name] = frame[name].astype("Int64")
    return frame


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-" if key != "theory_max_step_size" else "none (implicit)"
    if key == "cheapest":
        return f"{value['step_size']:.4g} × {value['steps']}"
    if key in ("stable_fraction", "computed_fraction"):
        return f"{value:.0%}"
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


def write_csv(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """One row per recommendation (``cheapest`` flattened); empty cells for missing values."""
    path = Path(path)
    summary_frame(records).to_csv(path, index=False, na_rep="")
    return path


def write_text(records: Sequence[Mapping[str, Any]], path: str | Path, header: Sequence[str] = ()) -> Path:
    """The plain-text table with a few header lines (sweep, completeness)."""
    path = Path(path)
    path.write_text("\n".join([*header, "", format_table(records), ""]), encoding="utf-8")
    return path


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
        "the von Neumann bound (FTCS only), the dashed green line the slowest-mode prediction of "
        "where the field reaches equilibrium.</p>",
        "<h2>Recommendations</h2>",
        "<p>Per coefficient: the largest step size stable at every step count, the theory bound, "
        "the fewest steps at which a stable setting reaches equilibrium (with the slowest-mode "
        "prediction), the cheapest such setting and the share of stable results.</p>",
        table,
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
