"""The package's tree shows the DAG: one subpackage per stage, no import circles, no stage importing a
later one (issue 17). Imports are read with ``ast`` from every module, at module and function level
alike (``if TYPE_CHECKING:`` blocks included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "crossdiff"

# The shared core, then the stages in DAG order. A module may import the core, its own stage and
# earlier stages, never a later stage.
CORE = {"crossdiff", "crossdiff.cli", "crossdiff.config", "crossdiff.io", "crossdiff.errors", "crossdiff.slugs", "crossdiff.hub",
        "crossdiff.compute"}
STAGES = ["items", "responses", "irt", "bins", "prompts", "study", "models", "finetune", "evaluate", "results", "runtime",
          "plan"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Package modules that ``path`` imports anywhere in its body (``from a.b import c`` counts as a.b.c
    where that is a module, else a.b)."""
    here = module_name(path)
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".") if is_pkg else here.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # import crossdiff.x.y as z -> the deepest known module
                name = name.rpartition(".")[0]
            if name.startswith("crossdiff") and name != here:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = all_modules()
    return {m: imports_of(p, set(mods)) for m, p in mods.items()}


def stage_of(module: str) -> str | None:
    if module in CORE:
        return None
    parts = module.split(".")
    assert len(parts) >= 2 and parts[1] in STAGES, f"{module}: not in the core ({sorted(CORE)}) nor in a stage folder {STAGES}"
    return parts[1]


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_every_module_is_in_the_core_or_a_stage_folder():
    for m in all_modules():
        stage_of(m)
    top = {p.name for p in PACKAGE.iterdir() if p.suffix == ".py"}
    core_files = {f"{m.rpartition('.')[2]}.py" for m in CORE if m != "crossdiff"} | {"__init__.py"}
    assert top <= core_files, f"top-level modules outside the core: {sorted(top - core_files)}"


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_stages_import_only_earlier_stages_and_the_core():
    bad = []
    for m, targets in graph().items():
        s = stage_of(m)
        for t in targets:
            ts = stage_of(t)
            if ts is None:
                if s is None and t != "crossdiff" and m != "crossdiff" and t not in CORE:
                    bad.append(f"{m} -> {t}")
                continue
            if s is None or STAGES.index(ts) > STAGES.index(s):
                bad.append(f"{m} ({s or 'core'}) -> {t} ({ts})")
    assert not bad, "imports of a later stage:\n" + "\n".join(sorted(bad))


def test_each_stage_package_says_what_it_reads_writes_and_runs():
    for stage in STAGES:
        init = PACKAGE / stage / "__init__.py"
        assert init.is_file(), f"{stage}/ has no __init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and 2 <= len(doc.strip().splitlines()) <= 12, f"{init}: expected a docstring of a few lines"
        assert "CLI" in doc, f"{init}: the docstring should name the stage's CLI subcommands"


def test_cli_subcommands_point_at_existing_stage_modules():
    from crossdiff.cli import COMMANDS

    mods = all_modules()
    for name, (module, _) in COMMANDS.items():
        assert module in mods, f"crossdiff {name}: {module} does not exist"


@pytest.mark.parametrize("edges, cycle", [({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True), ({"a": {"b"}, "b": {"c"}}, False)])
def test_cycle_finder_finds_cycles(edges, cycle):
    assert (find_cycle(edges) is not None) == cycle


def test_import_reader_sees_function_level_and_type_checking_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "crossdiff"
    (pkg / "bins").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "bins" / "__init__.py").write_text("")
    (pkg / "bins" / "make.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from crossdiff.bins import other\n"
        "def f():\n    from crossdiff.errors import CrossdiffError\n")
    known = {"crossdiff", "crossdiff.bins", "crossdiff.bins.make", "crossdiff.bins.other", "crossdiff.errors"}
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    assert imports_of(pkg / "bins" / "make.py", known) == {"crossdiff.bins.other", "crossdiff.errors"}
