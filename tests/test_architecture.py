"""The layers of docs/architecture.md hold: no module imports a layer above its own (at the top or inside a
function), read from the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"diffface": "diffface", "renderers": "diffface.renderers", "fitting": "diffface.fitting",
           "networks": "diffface.networks"}
LAYERS = [  # (module prefix, layer), the longest prefix wins; the rest of diffface/ (loaders included) is the core, 0
    ("diffface.renderers", 1), ("diffface.landmarks", 1),
    ("diffface.fitting", 2), ("diffface.evaluation", 2), ("diffface.data", 2),
    ("diffface.networks", 3), ("diffface.app", 4), ("diffface.cli", 5), ("diffface.demo", 6),
]
ALLOWED = {("diffface.__main__", "diffface.cli.main"), ("diffface.cli.demo", "diffface.demo")}


def layer(module: str) -> int:
    matches = [(len(prefix), level) for prefix, level in LAYERS
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else 0


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imported(module: str, path: Path) -> set[str]:
    """The diffface modules ``path`` imports, resolved to absolute names."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "diffface" or n.startswith("diffface.")}


def test_layer_table_classifies_the_examples():
    assert [layer(m) for m in ("diffface.params", "diffface.renderers.rasterize", "diffface.fitting.job.batch",
                               "diffface.networks.train", "diffface.app.dataset.build", "diffface.cli.fit",
                               "diffface.demo")] == [0, 1, 2, 3, 4, 5, 6]


def test_no_module_imports_a_layer_above_its_own():
    found = modules()
    assert len(found) > 100 and "diffface.app.synth_benchmark" in found
    upward = sorted(f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
                    for module, path in found.items() for target in imported(module, path)
                    if layer(target) > layer(module) and (module, target) not in ALLOWED)
    assert upward == []


def test_networks_and_the_command_line_start_without_the_renderers():
    """``import diffface.networks`` (exporting a network) and ``diffface --help`` do not pull in the renderers or the
    networks' training stack: those load when a command or loss needs them."""
    import subprocess
    import sys

    code = ("import sys, diffface.networks; r = 'diffface.renderers' in sys.modules; "
            "import diffface.cli.main as m; m.build_parser(); "
            "print(r, 'diffface.renderers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["False", "False"], result.stderr
