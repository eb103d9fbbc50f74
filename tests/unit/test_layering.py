"""The layers of docs/architecture.md, checked on every module of the four packages.

datasets <- trainers <- study <- analysis (an arrow points at what may be imported), the shell (`thoraxmae/`:
`cli/` and `demo.py`) on top. Inside study/, the rooms: base (errors, schema, storage, registry) <- spec <-
tracking <- run; each room imports only the rooms below it. Two views of the same code:
- static: the AST of each file, every import of a `thoraxmae.*` module (module level, under
  `if TYPE_CHECKING:`, inside functions, and module names written as strings for importlib, as the lazy
  `__init__` files do), checked for direction, bare top-level names and cycles;
- runtime: every module imported in a fresh interpreter from this checkout (mapped as pyproject.toml's
  package-dir maps it), then sys.modules is inspected (no `ray` under analysis, nothing from the repo
  loaded under a bare name such as `datasets`).
The checks take the repository root as an argument; `test_checks_catch_planted_violations` runs them on a
tiny planted tree, so they cannot pass vacuously. `python tests/unit/test_layering.py` prints the map.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("datasets", "trainers", "study", "analysis")  # bottom to top
SHELL = "shell"  # thoraxmae/cli/ and thoraxmae/demo.py, the composition root: may import everything
ROOMS = ("base", "spec", "tracking", "run", "facade")  # study/'s rooms, bottom to top; facade: study/__init__
LAYER = {**{p: i for i, p in enumerate(PACKAGES)}, SHELL: len(PACKAGES)}
CONTEXTS = ("module", "type_checking", "function", "lazy")  # lazy: a module name as a string (importlib)

# CLI registration modules that may import a higher layer, lazily (inside a function) and nothing else.
ALLOWED_UPWARD: dict[str, set[str]] = {}  # none: `thoraxmae demo` lives in the shell (thoraxmae/demo.py)
# Circles being opened right now (issue 10); each one's xfail(strict) test turns red once it is gone,
# as a reminder to delete its entry here.
KNOWN_CIRCLES: dict[str, frozenset[str]] = {}  # none left: spec/validate/coverage opened (issue 10)


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (thoraxmae.*), or a bare package name
    context: str  # one of CONTEXTS
    line: int


def package_dirs(root: Path) -> dict[str, Path]:
    """pyproject.toml's [tool.setuptools.package-dir]: import name -> folder (the install's mapping)."""
    table = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {name: root / folder for name, folder in table.items()}


def discover(root: Path) -> dict[str, Path]:
    """Every module of the four packages and of the shell: dotted name -> file."""
    out = {}
    for name, folder in package_dirs(root).items():
        if name != "thoraxmae" and name.split(".")[1] not in PACKAGES:
            continue
        for file in sorted(folder.rglob("*.py")):
            rel = file.relative_to(folder).with_suffix("").parts
            if "__pycache__" in rel or (name == "thoraxmae" and len(rel) > 1 and rel[0] != "cli"):
                continue  # the shell's other sub-folders would be the mapped packages themselves
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            out[".".join((name, *parts))] = file
    return out


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else SHELL


def room_of(module: str) -> str | None:
    """The room of a study module (None outside study/): its sub-package, `base` for the modules at study/'s
    root, `facade` for the package itself (its lazy `__init__` names what it re-exports)."""
    parts = module.split(".")
    if layer_of(module) != "study":
        return None
    if len(parts) == 2:
        return "facade"
    return parts[2] if parts[2] in ROOMS else "base"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def scan(module: str, file: Path, known: set[str]) -> list[Import]:
    """The imports of one file that name a thoraxmae module or a bare package name, with their context."""
    is_pkg = file.name == "__init__.py"
    found: list[Import] = []

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
        return ".".join([*base, *([node.module] if node.module else [])])

    def add(target: str, context: str, line: int) -> None:
        top = target.split(".")[0]
        if top == "thoraxmae" and target != "thoraxmae" or top in PACKAGES:
            found.append(Import(module, target, context, line))

    def visit(node: ast.AST, context: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, context, child.lineno)
            elif isinstance(child, ast.ImportFrom):
                base = resolve(child)
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    add(sub if sub in known else base, context, child.lineno)
            elif lazy and isinstance(child, ast.Constant) and child.value in known and child.value != module:
                found.append(Import(module, child.value, "lazy", child.lineno))  # e.g. a lazy __init__'s map
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, "function")
            elif isinstance(child, ast.If) and _is_type_checking(child.test) and context == "module":
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), "type_checking")
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), context)
            else:
                visit(child, context)

    tree = ast.parse(file.read_text(), str(file))
    # module names written as strings count only in a file that imports by name (importlib.import_module)
    lazy = any(isinstance(n, ast.Attribute | ast.Name)
               and getattr(n, "attr", getattr(n, "id", "")) == "import_module"
               for n in ast.walk(tree))
    visit(tree, "module")
    return found


def import_graph(root: Path) -> list[Import]:
    modules = discover(root)
    return [imp for name, file in modules.items() for imp in scan(name, file, set(modules))]


def violations(imports: list[Import]) -> list[str]:
    """Upward imports (all contexts), imports of the shell, and bare top-level names."""
    out = []
    for imp in imports:
        where = f"{imp.source}:{imp.line} ({imp.context})"
        if imp.target.split(".")[0] in PACKAGES:
            out.append(f"{where} imports bare `{imp.target}`; write `thoraxmae.{imp.target}`")
            continue
        src, dst = layer_of(imp.source), layer_of(imp.target)
        src_room, dst_room = room_of(imp.source), room_of(imp.target)
        if src_room and dst_room and ROOMS.index(dst_room) > ROOMS.index(src_room):
            out.append(f"{where} imports `{imp.target}`: study room {src_room} may not import {dst_room} "
                       f"(rooms: {' <- '.join(ROOMS[:-1])})")
        elif dst == SHELL and src != SHELL:
            out.append(f"{where} imports the shell `{imp.target}`; only thoraxmae/cli/__init__.py composes "
                       "the packages")
        elif LAYER[dst] > LAYER[src]:
            allowed = dst in ALLOWED_UPWARD.get(imp.source, ()) and imp.context == "function"
            if not allowed:
                out.append(f"{where} imports `{imp.target}`: {src} may not import {dst} (layers: "
                           f"{' <- '.join(PACKAGES)})")
    return out


def stale_allowances(imports: list[Import]) -> list[tuple[str, str]]:
    used = {(i.source, layer_of(i.target)) for i in imports}
    return sorted((m, pkg) for m, pkgs in ALLOWED_UPWARD.items() for pkg in pkgs if (m, pkg) not in used)


def cycles(imports: list[Import], contexts: tuple[str, ...]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (or a self-import), Tarjan's algorithm."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.context in contexts:
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                out.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def report(imports: list[Import], modules: dict[str, Path]) -> str:
    """One line per module: the packages it imports at import time, and those it imports deferred."""
    lines = []
    for name in sorted(modules):
        now = sorted({layer_of(i.target) for i in imports if i.source == name and i.context == "module"})
        later = sorted({layer_of(i.target) for i in imports if i.source == name and i.context != "module"})
        lines.append(f"{name:<40} module: {','.join(now) or '-':<28} deferred: {','.join(later) or '-'}")
    return "\n".join(lines)


# --- runtime: import everything in a fresh interpreter, mapped from `root` ---------------------------
_RUNTIME = textwrap.dedent("""
    import importlib, importlib.abc, importlib.machinery, importlib.util, json, sys, traceback
    from pathlib import Path
    root, mapping, modules, forbidden = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]

    class RootFinder(importlib.abc.MetaPathFinder):  # pyproject.toml's package-dir, resolved in `root`
        def find_spec(self, name, path, target=None):
            if name not in mapping:
                return None
            folder = Path(mapping[name])
            if (folder / "__init__.py").is_file():
                return importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                              submodule_search_locations=[str(folder)])
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(folder)]
            return spec

    sys.meta_path.insert(0, RootFinder())
    sys.path.insert(0, str(root))  # as under pytest or in the checkout: bare folder names are importable
    failed, first_forbidden = {}, None
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            failed[name] = traceback.format_exception_only(exc)[-1].strip()
        if first_forbidden is None and forbidden in sys.modules:
            first_forbidden = name
    folders = tuple(str(Path(f)) + "/" for f in mapping.values())
    strays = sorted(n for n, m in list(sys.modules.items()) if not n.startswith("thoraxmae")
                    and str(getattr(m, "__file__", None) or "").startswith(folders))
    print(json.dumps({"failed": failed, "first_forbidden": first_forbidden, "strays": strays}))
""")


def import_all(root: Path, modules: list[str], forbidden: str = "ray", timeout: float = 300) -> dict:
    """Import `modules` in order in a fresh interpreter; which failed, which one first loaded `forbidden`, and
    which modules were loaded from the repository under a name outside thoraxmae.* (`strays`)."""
    mapping = {name: str(folder) for name, folder in package_dirs(root).items()}
    proc = subprocess.run([sys.executable, "-c", _RUNTIME, str(root), json.dumps(mapping),
                           json.dumps(modules),
                           forbidden], check=False, capture_output=True, text=True, cwd=root, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def importable(root: Path) -> list[str]:
    return [m for m in discover(root) if m != "thoraxmae.__main__"]  # __main__ runs the CLI


# --- the tests ------------------------------------------------------------------------------------------
def test_every_module_is_seen():
    modules = discover(ROOT)
    for pkg in PACKAGES:
        assert f"thoraxmae.{pkg}" in modules and len([m for m in modules if layer_of(m) == pkg]) > 3, pkg
    assert "thoraxmae.cli" in modules and "thoraxmae.datasets.sources.nih" in modules


def test_imports_point_down_the_layers():
    imports = import_graph(ROOT)
    found = violations(imports)
    assert not found, "\n".join(found) + "\n\n" + report(imports, discover(ROOT))


def test_allowances_are_still_needed():
    assert stale_allowances(import_graph(ROOT)) == []


def test_no_cycle_at_import_time():
    found = cycles(import_graph(ROOT), ("module",))
    assert not found, [sorted(c) for c in found]


def test_no_unknown_cycle_with_deferred_imports():
    imports = import_graph(ROOT)
    unknown = [c for c in cycles(imports, CONTEXTS) if c not in KNOWN_CIRCLES.values()]
    edges = sorted({f"{i.source} -> {i.target} ({i.context}, line {i.line})" for c in unknown for i in imports
                    if i.source in c and i.target in c})
    assert not unknown, ("cycles not in KNOWN_CIRCLES (a known circle that grew counts too):\n"
                         + "\n".join(edges))


@pytest.mark.parametrize("circle", sorted(KNOWN_CIRCLES))
@pytest.mark.xfail(strict=True, reason="known circle, being opened under issue 10; delete it from "
                                       "KNOWN_CIRCLES")
def test_known_circle_is_open(circle):
    found = cycles(import_graph(ROOT), CONTEXTS)
    assert not any(KNOWN_CIRCLES[circle] <= c for c in found), circle


def test_every_module_imports_under_thoraxmae_only():
    result = import_all(ROOT, importable(ROOT))
    # strays: modules of this repository loaded under a bare name such as `datasets.config`
    assert {"failed": result["failed"], "strays": result["strays"]} == {"failed": {}, "strays": []}


def test_analysis_never_loads_ray():
    analysis = [m for m in importable(ROOT) if layer_of(m) == "analysis"]
    result = import_all(ROOT, analysis)
    assert result["failed"] == {}
    assert result["first_forbidden"] is None, f"`ray` loaded by importing {result['first_forbidden']}"


def _plant(root: Path) -> Path:
    """A tiny tree laid out like this repository, with one violation of every kind."""
    (root / "pyproject.toml").write_text('[tool.setuptools.package-dir]\n"thoraxmae" = '
                                         '"thoraxmae"\n' + "".join(
        f'"thoraxmae.{p}" = "{p}"\n' for p in PACKAGES))
    files = {
        "thoraxmae/__init__.py": "", "thoraxmae/cli/__init__.py": "from thoraxmae.analysis import report\n",
        "datasets/__init__.py": "", "datasets/config.py": "X = 1\n",
        "trainers/__init__.py": "", "trainers/config.py": "from thoraxmae.datasets.config import X\n",
        "trainers/loop.py": "def run():\n    from thoraxmae.study import schema\n",  # upward, deferred
        "study/__init__.py": "", "study/schema.py": "", "study/spec/__init__.py": "",
        "study/spec/model.py": "from thoraxmae.study.spec import space\n",
        "study/spec/space.py": "import thoraxmae.study.spec.model\n",  # circle at import time
        "study/spec/checks.py": "def check():\n    from thoraxmae.study.run import tune\n",  # room upward
        "study/run/__init__.py": "", "study/run/tune.py": "from thoraxmae.study.spec import model\n",  # fine
        "study/run/trial.py": "from datasets.config import X\n",  # bare name
        "analysis/__init__.py": "", "analysis/report.py": "from thoraxmae.study import schema\nimport wave\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_checks_catch_planted_violations(tmp_path):
    root = _plant(tmp_path)
    assert {"thoraxmae.cli", "thoraxmae.study.run.tune"} <= set(discover(root))
    imports = import_graph(root)
    found = violations(imports)
    assert sorted(found) == [
        ("thoraxmae.study.run.trial:1 (module) imports bare `datasets.config`; write "
         "`thoraxmae.datasets.config`"),
        ("thoraxmae.study.spec.checks:2 (function) imports `thoraxmae.study.run.tune`: study room spec may "
         "not import run (rooms: base <- spec <- tracking <- run)"),
        ("thoraxmae.trainers.loop:2 (function) imports `thoraxmae.study.schema`: trainers may not import "
         "study (layers: datasets <- trainers <- study <- analysis)")]
    assert cycles(imports, ("module",)) == [frozenset({"thoraxmae.study.spec.model",
                                                       "thoraxmae.study.spec.space"})]
    result = import_all(root, importable(root), forbidden="wave")
    assert result["failed"] == {} and result["strays"] == ["datasets", "datasets.config"]
    analysis = import_all(root, [m for m in importable(root) if layer_of(m) == "analysis"], forbidden="wave")
    assert analysis["first_forbidden"] == "thoraxmae.analysis.report"


if __name__ == "__main__":
    print(report(import_graph(ROOT), discover(ROOT)))
