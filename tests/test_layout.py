"""The house rules, checked on the source: imports point down the layers, no cycles, no oversized modules.

Layers, bottom up: utilities (``utils``, ``metrics``) -> the model core (the root files that checkpoints ship as
remote code) -> the middle (``assets`` < ``dataprep`` < ``inference`` < ``training`` < ``eval``: each may use the
ones before it) -> entry points (``app``, ``train_trainer.py``). The core imports only itself, and only relatively.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

MAX_LINES = 600
LAYERS = {"utils": 0, "metrics": 0, "core": 1, "assets": 2.0, "dataprep": 2.1, "inference": 2.2, "training": 2.3,
          "eval": 2.4, "app": 3, "train_trainer": 3}
NOT_PACKAGE = {"tests", "scripts", "examples", "configs", "docs", "benchmarks", "build", "dist", "setup.py"}


def package_modules() -> dict[str, Path]:
    """Dotted module name (relative to the package) -> file, for every module of the package."""
    out = {}
    for path in REPO_ROOT.rglob("*.py"):
        rel = path.relative_to(REPO_ROOT)
        if rel.parts[0] in NOT_PACKAGE or any(p.startswith(".") or p.endswith(".egg-info") for p in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def layer_of(module: str) -> str:
    top = module.split(".")[0] if module else ""
    if top in LAYERS and top != "core":
        return top
    return "core"  # root modules: configuration/processing/modeling/pipeline/frontends, the package __init__


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Package modules that ``module`` imports (relative imports resolved; absolute audio_minichat.* too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and (node.module == "audio_minichat" or node.module.startswith("audio_minichat.")):
                target = node.module.removeprefix("audio_minichat").lstrip(".")
            else:
                continue
            names = [f"{target}.{a.name}" if target else a.name for a in node.names]
            hits = [n for n in names if n in known] or ([target] if target in known else [])
            found.update(hits)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("audio_minichat."):
                    found.add(alias.name.removeprefix("audio_minichat."))
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {m: imports_of(m, p, set(modules)) for m, p in modules.items()}


def test_imports_point_down_the_layers():
    graph = import_graph()
    assert {"modeling_audio_minichat", "training.trainer", "app.cli"} <= set(graph)
    wrong = []
    for module, targets in graph.items():
        here = layer_of(module)
        for target in targets:
            there = layer_of(target)
            if target == "":  # the package __init__ (registrations): an entry-level convenience, not a layer
                if here == "core":
                    wrong.append(f"{module} -> the package __init__")
                continue
            if LAYERS[there] > LAYERS[here]:
                wrong.append(f"{module} ({here}) -> {target} ({there})")
            if here == "core" and there != "core":
                wrong.append(f"{module}: the core (shipped as remote code) imports {target}")
    assert not wrong, "imports that point up (or out of the core):\n" + "\n".join(sorted(wrong))


def test_core_uses_relative_imports_only():
    for module, path in package_modules().items():
        if layer_of(module) != "core" or "." in module:
            continue
        text = path.read_text(encoding="utf-8")
        assert "from audio_minichat" not in text and "import audio_minichat" not in text, module


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt in graph and state.get(nxt) is None:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if state.get(node) is None:
            visit(node)


def test_no_module_over_the_size_limit():
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in package_modules().items()}
    assert not {m: n for m, n in sizes.items() if n > MAX_LINES}, sizes


def test_no_downsample_string_branches_outside_the_registry():
    """Front ends are picked once (frontends.py); nothing else compares config.downsample to a name."""
    offenders = []
    for module, path in package_modules().items():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "downsample ==" in line or "downsample !=" in line or "downsample in (" in line:
                offenders.append(f"{module}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
