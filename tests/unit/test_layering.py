"""The package layering, read from the source (every import, module-level or function-local):

    leaf modules (errors, options, output_dir, configuration)
      <- runtime <- models <- checkpoint <- convert <- data <- training
      <- applications (evaluation, harbor, taskgen) <- entry points (commands, cli, testing)

A package may import its own layer and the layers below it, never one above; and no two
packages import each other, directly or around a longer cycle. docs/architecture.md draws this.
"""

from __future__ import annotations

import ast
import subprocess
import sys
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


def _function_local_imports(path: Path) -> list[ast.stmt]:
    tree = ast.parse(path.read_text())
    found = {}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found[node.lineno] = node
    return list(found.values())


def test_imports_are_at_module_top_unless_a_reason_is_given():
    """A function-local import hides a dependency; each one left says why on its line (`# lazy: ...`).
    The subcommand modules are the exception: the CLI imports each only when it runs."""
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if _unit(path) == "commands":
            continue
        lines = path.read_text().splitlines()
        unexplained += [f"{path.relative_to(PACKAGE)}:{n.lineno}: {lines[n.lineno - 1].strip()}"
                        for n in _function_local_imports(path) if "# lazy:" not in lines[n.lineno - 1]]
    assert unexplained == []


def test_commands_without_megatron_do_not_import_it():
    """megatron-core costs 2.5 s to import: export, plan, prepare and eval do not need it."""
    modules = ["nemo_terminal.convert.exporter", "nemo_terminal.commands.plan", "nemo_terminal.training.planner",
               "nemo_terminal.data.pipeline.prepare", "nemo_terminal.evaluation.run", "nemo_terminal.models.qwen3",
               "nemo_terminal.checkpoint.directory", "nemo_terminal.checkpoint.source"]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'megatron'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
