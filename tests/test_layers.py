"""The package is layered (docs/architecture.md): each layer imports only the layers below
it (and modules of its own layer)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

#: module (or package) -> its layer; a module may import only strictly lower layers
LAYERS = {
    "pipeline": 0,
    "pipeline.errors": 0,
    "pipeline.zarr_warnings": 0,
    "pipeline.numerics": 1,
    "pipeline.numerics.batch": 1,
    "pipeline.criteria": 2,
    "pipeline.diagnostics": 2,
    "pipeline.particle_diagnostics": 2,
    "pipeline.sweep": 3,
    "pipeline.layout": 4,
    "pipeline.planning": 4,
    "pipeline.compute": 4,
    "pipeline.executors": 4,
    "pipeline.search": 4,
    "pipeline.store": 5,
    "pipeline.store_lock": 5,
    "pipeline.consolidate": 5,
    "pipeline.verify": 5,
    "pipeline.runner": 5,
    "pipeline.store_probe": 5,
    "pipeline.refine": 5,
    "pipeline.edges": 6,
    "pipeline.maps": 6,
    "pipeline.plotting": 6,
    "pipeline.report": 6,
    "pipeline.outputs": 6,
    "pipeline.cluster": 7,
    "pipeline.cli": 8,
}


def layer_of(module: str) -> int:
    """The layer of ``module``: its own entry in LAYERS, or its package's (``pipeline.cli.run``
    is ``pipeline.cli``'s); the root ``pipeline`` entry is the package itself, never a default."""
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
        name = ".".join(parts[:end])
        if name in LAYERS:
            return LAYERS[name]
    if module == "pipeline":
        return LAYERS["pipeline"]
    raise KeyError(f"{module} is not assigned a layer: register it in LAYERS in tests/test_layers.py")


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


def imported_pipeline_modules(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            imported.add(module)
            imported |= {f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in LAYERS}
    return {m for m in imported if m == "pipeline" or m.startswith("pipeline.")}


@pytest.mark.parametrize(("name", "path"), modules(), ids=[name for name, _ in modules()])
def test_each_module_imports_only_lower_layers(name: str, path: Path) -> None:
    own = layer_of(name)
    for module in imported_pipeline_modules(name, path):
        # modules of one layer (planning/layout/compute/executors, store/runner, maps/plotting/report, cli/*) may share code
        assert layer_of(module) <= own, f"{name} (layer {own}) imports {module} (layer {layer_of(module)})"


def test_an_unlisted_module_has_no_layer_until_registered() -> None:
    assert layer_of("pipeline") == 0
    assert layer_of("pipeline.cli.run") == LAYERS["pipeline.cli"]
    assert layer_of("pipeline.numerics.grid") == LAYERS["pipeline.numerics"]
    with pytest.raises(KeyError, match=r"pipeline\.brand_new is not assigned a layer: register it in LAYERS"):
        layer_of("pipeline.brand_new")


def test_importing_the_package_and_numerics_is_cheap() -> None:
    code = (
        "import sys, pipeline, pipeline.numerics, pipeline.errors\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'dask', 'distributed', 'xarray', 'zarr', 'matplotlib', 'click'})\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
