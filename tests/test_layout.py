"""Issue 19: the layout shows the architecture. operations/core/ is the pure core (settings, planner, version
tables, fleet roles) and imports no pyinfra, not even through another module; the components and shared pieces
in operations/ import the core, never the other way; no import circle anywhere in operations/."""

from __future__ import annotations

import ast
from pathlib import Path

OPS = Path(__file__).resolve().parent.parent / "operations"


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (function-level imports count too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            if node.module in ("operations", "operations.core"):
                out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def graph() -> dict[str, set[str]]:
    mods = {}
    for f in OPS.rglob("*.py"):
        name = ".".join(f.relative_to(OPS.parent).with_suffix("").parts).removesuffix(".__init__")
        mods[name] = imports(f)
    return {m: {i for i in deps if i in mods} | {i for i in deps if not i.startswith("operations")}
            for m, deps in mods.items()}


def test_the_core_imports_no_pyinfra_even_indirectly():
    g = graph()
    for mod in [m for m in g if m.startswith("operations.core")]:
        seen, todo = set(), [mod]
        while todo:
            m = todo.pop()
            for dep in g.get(m, ()):
                assert not dep.startswith("pyinfra"), f"{mod} reaches pyinfra through {m}"
                assert not dep.startswith("operations") or dep.startswith("operations.core"), \
                    f"the core module {m} imports the component {dep}"
                if dep in g and dep not in seen:
                    seen.add(dep)
                    todo.append(dep)


def test_no_import_circle_in_operations():
    g = {m: {d for d in deps if d.startswith("operations")} for m, deps in graph().items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in g.get(m, ()):
            assert state.get(d) != 1, " -> ".join(path + [m, d])
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in g:
        if m not in state:
            visit(m, [])


def test_facts_py_holds_only_shared_facts_and_each_components_own_fact_lives_in_it():
    """The layout's rule for facts (docs/reference.md "Layout"): operations/facts.py holds the facts preflight reads
    (it decides what the components share), that shared_ops' operations read, or that more than one module uses; a
    fact one component alone reads is
    defined in that component (verify.Probe, openwebui_service.EnvValuesMatch). A fact nobody reads is gone."""
    tree = ast.parse((OPS / "facts.py").read_text())
    facts = [n.name for n in tree.body if isinstance(n, ast.ClassDef)
             and any(getattr(b, "id", None) == "FactBase" for b in n.bases)]
    assert len(facts) >= 10
    users = {f: {p.stem for p in OPS.rglob("*.py") if p.name != "facts.py"
                 and any(isinstance(n, ast.Name) and n.id == f for n in ast.walk(ast.parse(p.read_text())))}
             for f in facts}
    for fact, mods in users.items():
        assert mods, f"facts.{fact} is read by nothing"
        assert mods & {"preflight", "shared_ops"} or len(mods) >= 2, f"facts.{fact} is read only by {mods}: define it there"
