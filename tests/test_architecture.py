"""The house: wings import one way, only the app imports Streamlit or plotly, no engine code lives for tests alone."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = sorted((ROOT / "slsviz").rglob("*.py"))
# The rank of each part of slsviz: a module may import parts of a lower rank and its own part.
SHARED = {"data", "device", "errors", "storage", "environment", "defaults", "choices", "progress", "__init__"}
RANKS = {"shared": 0, "models": 1, "layers": 2, "pruning": 3, "scheduler": 4, "export": 5, "study": 6,
         "sweep": 7, "app": 8, "cli": 9}  # the CLI starts every face, the app's server (`slsviz app`) included
WINGS = ("models", "layers", "pruning")  # pure: functions and plain objects
# What runs work or holds state across threads: the scheduler's alone.
CONCURRENCY = ("threading", "_thread", "concurrent", "multiprocessing", "queue", "asyncio", "slsviz.scheduler")


def _part(module: str) -> str:
    """``slsviz.layers.rule`` -> ``layers``; ``slsviz.data`` -> ``shared``."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    return "shared" if head in SHARED else "cli" if head == "__main__" else head


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "slsviz":  # from slsviz import defaults
                found |= {f"slsviz.{alias.name}" for alias in node.names}
    return found


def test_every_part_is_a_known_wing():
    assert {_part(_module(path)) for path in ENGINE} <= set(RANKS)


def test_only_the_app_imports_streamlit_or_plotly():
    offenders = {_module(path): sorted(m for m in _imports(path) if m.split(".")[0] in ("streamlit", "plotly"))
                 for path in ENGINE if _part(_module(path)) != "app"}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_imports_run_one_way():
    wrong = []
    for path in ENGINE:
        here = _part(_module(path))
        for imported in _imports(path):
            if imported.startswith("slsviz.") and imported != "slsviz.__version__":
                there = _part(imported)
                if there != here and RANKS[there] >= RANKS[here]:
                    wrong.append(f"{_module(path)} imports {imported}")
    assert wrong == []


def test_the_engine_wings_hold_no_lock_and_start_no_thread():
    offenders = {_module(path): sorted(m for m in _imports(path) if m.split(".")[0] in CONCURRENCY or m in CONCURRENCY)
                 for path in ENGINE if _part(_module(path)) in WINGS}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_engine_function_or_class_is_called_only_from_tests():
    """Every function and class the engine defines is referred to by the engine, the faces or the benchmarks."""
    callers = ENGINE + [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    refs: collections.Counter[str] = collections.Counter()
    for path in callers:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Name):
                refs[node.id] += 1
            elif isinstance(node, ast.Attribute):
                refs[node.attr] += 1
            elif isinstance(node, ast.alias):
                refs[node.name.split(".")[-1]] += 1
    unused = []
    for path in ENGINE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("__"):
                if node.name != "forward" and refs[node.name] == 0:  # torch calls forward
                    unused.append(f"{_module(path)}.{node.name}")
    assert unused == []


def test_the_study_facade_stays_thin():
    """The Study had 31 public members and 10 hand-wired caches; the parts hold the work now."""
    path = ROOT / "slsviz" / "study" / "facade.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    study = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Study")
    methods = {node.name for node in study.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    attributes = {target.attr for node in ast.walk(study) if isinstance(node, ast.Assign)
                  for target in node.targets if isinstance(target, ast.Attribute)
                  and isinstance(target.value, ast.Name) and target.value.id == "self"}
    public = {name for name in methods | attributes if not name.startswith("_")}
    assert len(public) <= 15, sorted(public)
    assert study.end_lineno - study.lineno + 1 <= 250
