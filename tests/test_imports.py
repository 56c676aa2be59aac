"""No import circles in the package: every import counts, also one inside a function (a lazy import
hides a circle from Python, not from the reader). Reads the sources with ast; imports nothing."""
import ast
from pathlib import Path

import iterseg

PACKAGE = Path(iterseg.__file__).parent

def module_names(package=PACKAGE):
    """{dotted module name: path} of every .py file under ``package``."""
    names = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported(module, path, node):
    """The dotted names ``node`` (an Import or ImportFrom in ``module``) may refer to."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module
    if node.level:
        parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(package=PACKAGE):
    """{module: set of the package's modules it imports anywhere in its body}; a package's own
    __init__ imported by one of its modules is not an edge (Python runs it first anyway)."""
    names = module_names(package)

    def owner(name):
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name

    graph = {module: set() for module in names}
    for module, path in names.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in _imported(module, path, node):
                    target = owner(name) if name.split(".")[0] == package.name else None
                    if target and target != module and not module.startswith(target + "."):
                        graph[module].add(target)
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan), each a frozenset."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.add(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "iterseg.training.assemble" in graph["iterseg.training.loop"]  # from .assemble import ...
    assert "iterseg.api" in graph["iterseg.cluster"]  # inside a function: from .api import load
    assert "iterseg.cluster" in graph["iterseg.batch"]  # inside a function: from . import cluster


def test_a_circle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_no_import_circle():
    found = [sorted(c) for c in cycles(import_graph())]
    assert not found, f"import circles (lazy imports count): {found}"
