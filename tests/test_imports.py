"""eqgen's modules import each other in one direction: no cycles, counting the imports inside functions too
(a function-level import can hide a cycle that a module-level one would break on)."""
import ast
from pathlib import Path

import eqgen

SOURCE = Path(eqgen.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(module: str, package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement runs: each named one and its parent packages."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = module.split(".")[: len(module.split(".")) - node.level + package] if node.level else []
        prefix = ".".join(base + ([node.module] if node.module else []))
        names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
    return [".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 2)]


def import_graph() -> dict[str, set[str]]:
    files = {_module(path): path for path in SOURCE.rglob("*.py")}
    graph = {}
    for module, path in files.items():
        nodes = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))]
        targets = {t for n in nodes for t in _imported(module, path.name == "__init__.py", n)}
        # A module's own packages are already running when it runs: importing them is no cycle.
        graph[module] = {t for t in targets if t in files and t != module and not module.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: a path from a module back to itself, one per module that starts one."""
    found = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    found.append(path + [start])
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    return found


def test_the_checker_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"], ["b", "c", "a", "b"],
                                                                        ["c", "a", "b", "c"]]
    graph = import_graph()
    assert "eqgen.checkpoint" in graph["eqgen.pipeline"] and "eqgen.files" in graph["eqgen.checkpoint"]


def test_no_import_cycles():
    assert cycles(import_graph()) == []
