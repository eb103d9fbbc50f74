"""The analysis package has no import circle (imports inside functions included) and never imports
Ray or torch: read from the source, so a lazy import cannot hide one."""
from __future__ import annotations

import ast
from pathlib import Path

import thoraxmae.analysis

PACKAGE = "thoraxmae.analysis"
FOLDER = Path(thoraxmae.analysis.__file__).parent


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in FOLDER.glob("*.py") if p.stem != "__init__"}
    return {m: {i.split(".")[2] for i in _imports(FOLDER / f"{m}.py")
                if i.startswith(PACKAGE + ".") and i.split(".")[2] in modules} - {m} for m in modules}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*path[path.index(n):], n] if n in path else [m, n]
            if n not in state and (found := visit(n, [*path, n])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_no_import_circle_in_analysis():
    graph = _graph()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_numbers_are_computed_below_the_words():
    """Compute modules never import the modules that word or draw the report."""
    graph = _graph()
    words = {"document", "claims", "sections", "pretrain_section", "render", "plots", "report", "cli"}
    for compute in ("tables", "load", "importance", "effects", "recipe", "confirm", "cost", "pretraining",
                    "analyze"):
        assert not graph[compute] & words, compute
    assert graph["recipe"] == {"errors", "tables"}


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_analysis_never_imports_ray_or_torch():
    for path in FOLDER.glob("*.py"):
        roots = {i.split(".")[0] for i in _imports(path)}
        assert not roots & {"ray", "torch"}, path.name
