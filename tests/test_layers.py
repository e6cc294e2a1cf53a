"""The package's layer order, read from the source: no upward import, no cycle (issue 14).

The order follows the method (paper Fig. 1) with the shared pieces below it; a module may import
its own package and any lower layer, never a higher one or a sibling of its own layer. The README's
"Architecture" section states the same order.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cganseg"

#: lowest first; the names are top-level modules or folders of src/cganseg
LAYERS: list[tuple[str, ...]] = [
    ("__init__", "errors"),
    ("checks",),  # one rule per user-facing value (issue 27)
    ("optionspec",),  # options declared once, as dataclass fields with a Spec (issue 28)
    ("runtime",),
    ("pretrained",),  # the shipped starting models and their cards (issue 29)
    ("data",),
    ("models",),
    ("losses", "augment"),
    ("instances",),  # how outputs become cells: one object per mode (issue 28)
    ("checkpoint", "options"),
    ("reports",),  # drawing helpers: plots, grids, overlays
    ("inference",),
    ("evaluation",),
    ("synth",),
    ("export",),  # trained models for other tools (bioimage.io)
    ("training",),
    ("experiment",),
    ("demo", "api", "verbs"),  # api: the notebook entry point; verbs: each command's options
    ("cli", "napari_plugin"),  # the two user interfaces
    ("__main__",),
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
#: where a module may import inside a function: the CLI loads only what a command runs
LOCAL_IMPORTS_ALLOWED = {"cli"}
#: the one import that goes up: the package root hands out ``cganseg.segment``/``load`` from
#: ``api`` on first use (PEP 562 ``__getattr__``), so ``import cganseg`` stays light
FACADE = {("cganseg.__init__", "cganseg.api"), ("cganseg.__init__", "cganseg")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(("cganseg", *parts))] = path
    return out


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported cganseg module, imported inside a function?) for each import of ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name == "cganseg" or name.startswith("cganseg."):
                found.append((name, id(node) in nested))
    return found


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_of_the_package_has_a_layer():
    components = {_component(m) for m in _modules()}
    assert components <= set(LAYER), sorted(components - set(LAYER))


def test_no_import_goes_up_or_sideways():
    wrong = []
    for module, path in _modules().items():
        source = _component(module)
        for target, _ in _imports(path):
            dest = _component(target)
            if dest == source or dest not in LAYER or (module, target) in FACADE:
                continue
            if LAYER[dest] >= LAYER[source]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_imports_are_at_module_top_except_in_the_cli():
    local = [
        f"{module} -> {target}"
        for module, path in _modules().items()
        if _component(module) not in LOCAL_IMPORTS_ALLOWED
        for target, nested in _imports(path)
        if nested and (module, target) not in FACADE
    ]
    assert not local, "\n".join(local)


def test_no_import_cycle():
    modules = _modules()
    graph = {
        m: {t for t, _ in _imports(p) if t in modules and t != m} for m, p in modules.items()
    }
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt) :] + [node, nxt] if nxt in stack else [node])
                return True
            if nxt not in state and visit(nxt, [*stack, node]):
                return True
        state[node] = 2
        return False

    for module in sorted(graph):
        if module not in state and visit(module, []):
            break
    assert not cycle, " -> ".join(cycle)
