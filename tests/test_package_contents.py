"""herd ships only what herd runs: every module under `herd/` is imported by another one (or is an entry point:
the CLI, a package's `__main__`, a file herd runs by path). Code only tests and benchmarks use lives in
`benchmarks/` (workloads) or `tests/`, where both import it through pytest's `pythonpath`."""

from __future__ import annotations

import ast
from pathlib import Path

HERD = Path(__file__).resolve().parent.parent / "herd"
ENTRY_POINTS = {"herd.cli": "pyproject's [project.scripts]", "herd.eval.sandbox_init": "read by path in sandbox.py"}


def _name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path, root: Path) -> set[str]:
    """Every dotted name the file imports: modules and `from m import x` as `m.x`, relative ones resolved."""
    here = _name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return names


def _unused(root: Path = HERD) -> list[str]:
    modules = {_name(path, root): path for path in root.rglob("*.py")}
    imported = set().union(*(_imported(path, root) for path in modules.values()))
    return sorted(name for name in modules if name not in imported and name not in ENTRY_POINTS
                  and not name.endswith(".__main__") and not any(other.startswith(name + ".") for other in imported))


def test_every_module_is_imported_by_herd():
    unused = _unused()
    assert not unused, f"no herd module imports {unused}: move test- or benchmark-only code to benchmarks/ or tests/"


def test_checker_sees_relative_and_from_imports(tmp_path):
    (tmp_path / "herd" / "data").mkdir(parents=True)
    (tmp_path / "herd" / "__init__.py").write_text("from .data import readers\n")
    (tmp_path / "herd" / "data" / "__init__.py").write_text("")
    (tmp_path / "herd" / "data" / "readers.py").write_text("")
    (tmp_path / "herd" / "data" / "synthetic.py").write_text("")
    assert _unused(tmp_path / "herd") == ["herd.data.synthetic"]
