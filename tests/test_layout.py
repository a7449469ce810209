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


def test_no_front_end_name_branches_outside_the_registries():
    """Front ends are picked once (frontends.py, FRONTEND_CONFIGS); nothing else compares a front end's name."""
    offenders = []
    for module, path in package_modules().items():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for word in ("audio_frontend", "downsample"):
                if f"{word} ==" in line or f"{word} !=" in line or f"{word} in (" in line:
                    offenders.append(f"{module}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def external_imports(path: Path) -> set[str]:
    """Absolute (non-package) modules a file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.update({node.module, *(f"{node.module}.{a.name}" for a in node.names)})
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_the_config_is_the_ground_floor_of_the_core():
    """The configuration imports only the front ends' options classes, and they import nothing but their base: no
    torch, no nn.Module front end, no modeling file (loading a config or a processor pulls in no encoder)."""
    graph, modules = import_graph(), package_modules()
    below = closure(graph, "configuration_audio_minichat")
    options_files = {m for m in modules if m.startswith("frontend_") and m.endswith("_config")}
    assert "frontend_config" in options_files and len(options_files) >= 6
    assert below == options_files, sorted(below ^ options_files)
    for module in below | {"configuration_audio_minichat"}:
        imported = external_imports(modules[module])
        assert not {m for m in imported if m == "torch" or m.startswith(("torch.", "transformers.modeling"))
                    or ".modeling_" in m}, module
        assert closure(graph, module) <= options_files, module


def test_loading_a_config_or_processor_imports_no_modeling_code():
    import subprocess
    import sys

    code = ("import sys; from audio_minichat.configuration_audio_minichat import AudioMiniChatConfig; "
            "from audio_minichat.processing_audio_minichat import AudioMiniChatProcessor; AudioMiniChatConfig(); "
            "print(sorted(m for m in sys.modules if 'modeling_whisper' in m or 'modeling_llama' in m "
            "or m.startswith(('audio_minichat.frontend_base', 'audio_minichat.frontends', 'audio_minichat.modeling')) "
            "or (m.startswith('audio_minichat.frontend_') and not m.endswith('_config'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def option_mentions(path: Path, names: set[str]) -> set[str]:
    """Which of ``names`` a file uses in code (attributes, keywords, names, strings equal to one, dataclass fields)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            found.add(node.arg)
        elif isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
    return found & names


def test_every_front_end_option_lives_in_its_own_files():
    """An option of a front end is read only in that front end's two files (options class and module): the config,
    the layout, the processor, the model and the other front ends never name it."""
    from audio_minichat.configuration_audio_minichat import FRONTEND_CONFIGS
    from audio_minichat.frontends import AUDIO_FRONTENDS

    assert sorted(FRONTEND_CONFIGS) == sorted(AUDIO_FRONTENDS)
    assert all(AUDIO_FRONTENDS[name].config_class is cls for name, cls in FRONTEND_CONFIGS.items())
    modules = package_modules()
    wrong = []
    for name, cls in FRONTEND_CONFIGS.items():
        own = {f"frontend_{name}_config", f"frontend_{name}"}
        assert own <= set(modules), name
        options = set(cls.option_names())
        for module, path in modules.items():
            if layer_of(module) == "core" and module not in own:
                wrong += [f"{module} names {option} (audio_frontend={name!r})" for option in option_mentions(path, options)]
    assert not wrong, "\n".join(sorted(wrong))


def test_the_loss_terms_are_computed_in_one_function():
    """training/losses.py's response_losses is the only place of the package that computes a distillation loss term (the
    cached and uncached steps prepare its inputs); the posterior's alignment stage has its one CTC loss beside it (and
    the retrieval probe's matrix of the same loss), in the same module."""
    loss_ops = {"cross_entropy", "log_softmax", "kl_div", "mse_loss"}
    places = []
    for module, path in package_modules().items():
        if not module.startswith("training"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(func):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in loss_ops:
                    places.append(f"{module}.{func.name}")
    assert places and set(places) == {"training.losses.response_losses", "training.losses.transcript_ctc_loss",
                                      "training.losses.transcript_ctc_matrix"}, places


def test_what_two_layers_share_is_defined_once_below_both():
    """Weight application (the build and training), the span check (the processor, the data builder and training) and
    the pipeline's task name each have one definition, below all their users; training reaches into no data builder."""
    wanted = {"apply_trained_weights": "utils.trained_weights", "check_spans": "audio_spans",
              "PIPELINE_TASK": "configuration_audio_minichat", "response_losses": "training.losses"}
    found: dict[str, list[str]] = {name: [] for name in wanted}
    graph = import_graph()
    for module, path in package_modules().items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
                [t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign) else []
            found.update({n: [*found[n], module] for n in names if n in found})
    assert found == {name: [module] for name, module in wanted.items()}
    assert not {t for m, targets in graph.items() if m.startswith("training") for t in targets if t.startswith("dataprep")}
