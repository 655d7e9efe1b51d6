"""The package layering, read from the source (every import, module-level or function-local):

    leaf modules (errors, options, output_dir, configuration)
      <- runtime <- models <- checkpoint <- convert <- data <- training
      <- applications (evaluation, harbor, taskgen) <- entry points (commands, cli, testing)

A package may import its own layer and the layers below it, never one above; and no two
packages import each other, directly or around a longer cycle. docs/architecture.md draws this.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import nemo_terminal

PACKAGE = Path(nemo_terminal.__file__).resolve().parent
LEAVES = {"errors", "options", "output_dir", "configuration"}
CORE = ("runtime", "models", "checkpoint", "convert", "data", "training")
APPLICATIONS = {"evaluation", "harbor", "taskgen"}
ENTRY_POINTS = {"commands", "cli", "testing", "__main__", "__init__"}


def _unit(path: Path) -> str:
    """The package (or top-level module) a source file belongs to."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_units(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "nemo_terminal" and len(parts) > 1:
                found.add(parts[1])
    return found


def import_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> the files that import it."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _unit(path)
        for dst in _imported_units(path) - {src}:
            graph[src][dst].append(str(path.relative_to(PACKAGE)))
    return graph


def _level(unit: str) -> float:
    if unit in LEAVES:
        return -1
    if unit in CORE:
        return CORE.index(unit)
    if unit in APPLICATIONS:
        return len(CORE)
    assert unit in ENTRY_POINTS, f"nemo_terminal/{unit} is in no layer: add it here and to docs/architecture.md"
    return len(CORE) + 1


def test_no_package_imports_a_layer_above_it():
    upward = [f"{src} imports {dst} ({', '.join(files)})"
              for src, deps in import_graph().items() for dst, files in deps.items()
              if _level(dst) > _level(src)]
    assert upward == []


def test_no_import_cycle_between_packages():
    graph = {src: set(deps) for src, deps in import_graph().items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(unit: str, path: list[str]) -> list[str]:
        state[unit] = 1
        for dst in sorted(graph.get(unit, ())):
            if state.get(dst) == 1:
                return path + [unit, dst]
            if dst not in state and (cycle := visit(dst, path + [unit])):
                return cycle
        state[unit] = 2
        return []

    cycles = [c for unit in sorted(graph) if unit not in state and (c := visit(unit, []))]
    assert cycles == []


def test_the_reader_sees_local_and_top_level_imports():
    graph = import_graph()
    assert "models" in graph["training"] and "runtime" in graph["models"]  # module-level imports
    assert "training" in graph["commands"]  # the CLI's function-local imports
    assert "models" not in graph["runtime"] and "training" not in graph["data"]
    assert "data" not in graph["models"] and "convert" not in graph["checkpoint"]


def test_no_cuda_question_outside_runtime():
    """runtime/device.py answers it; everything else takes a Device (see its docstring)."""
    asks = ("torch.cuda", ".cuda(", '"cuda"', "'cuda'", "on_gpu(")
    found = [f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}"
             for path in sorted(PACKAGE.rglob("*.py")) if _unit(path) != "runtime"
             for i, line in enumerate(path.read_text().splitlines(), 1) if any(a in line for a in asks)]
    assert found == []
