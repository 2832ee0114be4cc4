"""Output folders that lose nothing: write only where nothing else is, replace only what we wrote.

A command that writes several files into a folder (``diffsweep map -o DIR``) goes
through :class:`OutputFolder`:

* a folder that does not exist, or is empty, is written freely;
* a folder that holds anything is refused, unless ``overwrite``; and then only the
  entries that this tool wrote there earlier are replaced. They are recognised by the
  marker file :data:`MARKER`, which lists every entry written with the SHA-256 of each
  of its files: an entry the user has changed since (an edited ``summary.csv``, a file
  added inside ``maps.zarr``) is not ours any more and is refused as well;
* a zarr store is never written into and a diffsweep results store never removed.

Every check happens before anything is written, so a refusal leaves the folder as it
was. Entries are marked *pending* in the marker before they are created, so a write
that is interrupted half-way is still recognised as ours next time.

Examples
--------
>>> import tempfile, pathlib
>>> folder = OutputFolder(pathlib.Path(tempfile.mkdtemp()) / "maps", writer="example")
>>> folder.prepare(["summary.csv"])
>>> _ = (folder.path / "summary.csv").write_text("a,b\\n1,2\\n")
>>> folder.commit()
>>> OutputFolder(folder.path, writer="example").prepare(["summary.csv"])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pipeline.outputs.OutputError: ... already holds summary.csv, written by example earlier; pass `overwrite` to replace it
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import ArgumentNaming, DiffsweepError

__all__ = ["MARKER", "OutputError", "OutputFolder"]

#: the file, in an output folder, that lists what was written there and its digests
MARKER = ".diffsweep-outputs.json"
_FORMAT = 1


class OutputError(ArgumentNaming, DiffsweepError, FileExistsError):
    """Writing would replace or delete something this tool did not write.

    A message that suggests the ``overwrite`` argument names it ```overwrite```
    (:meth:`naming` turns it into ``--overwrite`` on the command line).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, arguments=("overwrite",) if "`overwrite`" in message else ())


def _digests(path: Path) -> dict[str, str]:
    """SHA-256 of every file at ``path`` (a file, or a folder's files by relative path)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink())
    digests = {}
    for file in files:
        name = "." if file == path else file.relative_to(path).as_posix()
        digests[name] = "symlink" if file.is_symlink() else hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def _is_zarr(path: Path) -> bool:
    return (path / "zarr.json").is_file() or (path / ".zgroup").is_file() or (path / ".zarray").is_file()


def _is_results_store(path: Path) -> bool:
    """A diffsweep results store: a zarr group with a ``sweep_hash`` attribute (a maps
    dataset, marked ``diffsweep_maps_format``, carries its store's hash too but is not one)."""
    try:
        metadata = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(metadata, dict):
        return False
    consolidated = metadata.get("consolidated_metadata")
    for attributes in (metadata.get("attributes"), consolidated.get("attributes") if isinstance(consolidated, dict) else None):
        if isinstance(attributes, dict) and "sweep_hash" in attributes:
            return "diffsweep_maps_format" not in attributes
    return False


class OutputFolder:
    """A folder that a command writes several entries into (files or zarr stores).

    Parameters
    ----------
    path
        The folder; created by :meth:`prepare` if missing.
    writer
        Who writes, recorded in the marker and named in messages (``"diffsweep map"``).
    overwrite
        Replace entries this writer wrote earlier (only those, and only unchanged).
    """

    def __init__(self, path: str | Path, *, writer: str, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.writer = writer
        self.overwrite = overwrite
        self._names: list[str] = []

    # -- what is there -------------------------------------------------------------------

    def _marker(self) -> dict[str, Any]:
        try:
            marker = json.loads((self.path / MARKER).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            raise OutputError(f"{self.path / MARKER} is unreadable; move it away to write into {self.path}") from None
        return marker if isinstance(marker, dict) and isinstance(marker.get("entries"), dict) else {}

    def _ours(self, name: str, entries: Mapping[str, Any]) -> bool:
        """Whether ``name`` is exactly as this writer left it (or was pending when interrupted)."""
        if name not in entries:
            return False
        recorded = entries[name]
        target = self.path / name
        if recorded is None:  # pending: created by an interrupted write
            return not _is_results_store(target)
        return isinstance(recorded, dict) and _digests(target) == recorded

    def prepare(self, names: Sequence[str]) -> None:
        """Check that ``names`` may be written, remove our own earlier ones, mark them pending.

        Raises
        ------
        OutputError
            The folder is a zarr store; it holds anything and ``overwrite`` is off; or
            an entry to replace (or an earlier one of ours left over) was not written
            by this writer, or has changed since.
        """
        path = self.path
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path} is a file, not a folder")
        if path.is_dir() and _is_zarr(path):
            kind = "a diffsweep results store" if _is_results_store(path) else "a zarr store"
            raise OutputError(f"{path} is {kind}; choose another folder for the output")
        present = sorted(p.name for p in path.iterdir() if p.name not in (MARKER, MARKER + ".tmp")) if path.is_dir() else []
        entries: dict[str, Any] = dict(self._marker().get("entries", {}))
        if present and not self.overwrite:
            ours = [n for n in names if n in entries and (path / n).exists()]
            if ours and set(present) <= set(entries):
                raise OutputError(
                    f"{path} already holds {', '.join(ours[:3])}{' …' if len(ours) > 3 else ''}, "
                    f"written by {self.writer} earlier; pass `overwrite` to replace it"
                )
            raise OutputError(
                f"{path} is not empty ({len(present)} entries, e.g. {present[0]!r}); "
                f"choose an empty or new folder, or pass `overwrite` to replace what {self.writer} wrote there"
            )
        # everything we would replace, and every earlier entry of ours no longer written
        # (stale maps of other facets), must be exactly as we left it
        to_remove = []
        for name in sorted({*names, *entries}):
            target = path / name
            if not (target.exists() or target.is_symlink()):
                continue
            if _is_results_store(target):
                raise OutputError(f"{target} is a diffsweep results store; it is never replaced, choose another folder")
            if not self._ours(name, entries):
                if name not in names:
                    continue  # an old entry of ours the user changed: leave it alone
                why = "has changed since" if name in entries else "was not written by " + self.writer
                raise OutputError(f"{target} {why}; move it away (nothing was written)")
            to_remove.append(target)
        for target in to_remove:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
            entries.pop(target.name, None)
        path.mkdir(parents=True, exist_ok=True)
        self._names = list(names)
        entries.update(dict.fromkeys(names))  # pending until commit
        self._write_marker(entries)

    def commit(self, names: Iterable[str] | None = None) -> None:
        """Record the digests of what was written (``names``, default those prepared)."""
        entries: dict[str, Any] = dict(self._marker().get("entries", {}))
        for name in names if names is not None else self._names:
            target = self.path / name
            if target.exists():
                entries[name] = _digests(target)
            else:
                entries.pop(name, None)
        for name in [n for n, recorded in entries.items() if recorded is None and not (self.path / n).exists()]:
            del entries[name]
        self._write_marker(entries)

    def _write_marker(self, entries: Mapping[str, Any]) -> None:
        marker = {"format": _FORMAT, "writer": self.writer, "entries": dict(entries)}
        temporary = self.path / (MARKER + ".tmp")
        temporary.write_text(json.dumps(marker, indent=1, sort_keys=True), encoding="utf-8")
        temporary.replace(self.path / MARKER)
