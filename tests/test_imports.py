"""The package has no import circle, not even through imports made inside functions, and every
module imports on its own (a fresh interpreter each) and stays small enough to read in one sitting."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import gantool

ROOT = Path(gantool.__file__).parent
# A ceiling, not a target: modules are split where their responsibility splits (issue 32); this only
# catches one that has grown past what can be read in one sitting.
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
NOT_ALONE = {"gantool.__main__", "gantool.export.triton_python_model"}


def _packages_above(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _imports(name: str, path: Path) -> set[str]:
    """gantool modules that `name` imports anywhere in its body (top level or inside functions).
    `from gantool.x import y` counts as gantool.x.y when that is a module, else gantool.x.
    Importing gantool.x.y also runs gantool/x/__init__.py first, so gantool.x counts too, unless
    `name` lies inside gantool.x itself (that package was initialised before `name` could run):
    without this, export -> verify.artifacts -> export.manifest hid the circle through export."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in (t for t in targets if t in MODULES):
            out.update({t} | (_packages_above(t) - _packages_above(name)))
    out.discard(name)
    return {t for t in out if t in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = {n: _imports(n, p) for n, p in MODULES.items()}
    assert graph["gantool.cli.export_cmd"], "the walker found no imports at all: it is broken"
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_importing_a_submodule_counts_as_importing_its_package():
    # verify.artifacts imports gantool.export.manifest, which runs gantool/export/__init__.py first
    graph = {n: _imports(n, p) for n, p in MODULES.items()}
    assert {"gantool.export.manifest", "gantool.export"} <= graph["gantool.verify.artifacts"]
    assert "gantool.export" not in graph["gantool.export.onnx"]  # its own package ran before it did
    assert not any(n.startswith("gantool.verify") for n in graph["gantool.export"])


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_imports_alone_in_a_fresh_interpreter():
    # A new interpreter a module would cost ~2 s each (torch): instead one subprocess drops every
    # gantool module before importing the next, so each runs its imports with nothing preloaded.
    # Left out: gantool.__main__ (importing it runs the CLI) and the Triton Python-backend model,
    # which export copies into a model repository and only Triton's python stub can import.
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    for m in [k for k in sys.modules if k == 'gantool' or k.startswith('gantool.')]:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module(name)\n")
    r = subprocess.run([sys.executable, "-c", code, *(m for m in MODULES if m not in NOT_ALONE)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small_enough_to_read(name):
    n = len(MODULES[name].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[name]} has {n} lines (> {MAX_LINES}): too long to read in one sitting; split it where its responsibilities part"
