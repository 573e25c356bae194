"""The layout's import rules (README "Layout"), read from the source: dependencies point one way, and no module
imports itself back through a cycle (imports inside functions count too)."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sld", "models", "sampling")
CORE = ("sld", "sld.api", "sld.pipeline", "sld.options", "sld.settings", "sld.__main__")
# module prefix -> module prefixes it must not import
FORBIDDEN = {
    "models": ("sld", "sampling"),
    "sampling": ("sld", "models"),
    "sld.hooks": ("sld.cli", "sld.eval", "sld.toy", "sld.io"),
    "sld.io": ("sld.cli", "sld.eval", "sld.toy"),
    "sld.eval": ("sld.cli",),
    "sld.toy": ("sld.cli",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules that `path` imports: `from a.b import c` is a.b.c when that is a module, else a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                      for alias in node.names}
    return {name for name in found if name in known}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_dependencies_point_one_way(graph):
    broken = [f"{source} imports {target}" for source, targets in graph.items() for target in targets
              for prefix, forbidden in FORBIDDEN.items() if within(source, prefix)
              and any(within(target, no) for no in forbidden)]
    core = [f"{source} imports {target}" for source in CORE for target in graph.get(source, ())
            if any(within(target, no) for no in ("sld.cli", "sld.eval", "sld.toy", "sld.io"))
            and source != "sld.__main__"]
    assert broken + core == []


def test_no_import_cycles(graph):
    """Tarjan's strongly connected components: every one is a single module without a self-import."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_rules_see_the_modules(graph):
    """The checks above read real edges (a parser that found nothing would pass them)."""
    assert "sld.pipeline" in graph["sld"] and "sampling.guidance" in graph["sld.pipeline"]
    assert "sld.hooks.resolve" in graph["sld.eval.generate"] and "sld.io.records" in graph["sld.eval.generate"]
