"""Layers only look down (DESIGN.md): every `herd` import in `herd/` goes to a lower layer or the same package.

DESIGN.md's order is errors < model, tokenizer < checkpoint, generation < data, train < post, eval, serve,
safety < speedrun, scaling < cli. Inside a layer the packages that do build on one another get a fixed order
(below), the rest are siblings that must not import each other; imports inside functions count too, and
there is no exceptions list. Where DESIGN.md's layers share a rung, the order chosen is the one the stages'
work implies: training reads data; post-training scores with eval's answer checks; safety evaluates with
eval's judge and trains its guard with post's SFT; the server's guardrails run safety's Llama Guard and Code
Shield; scaling runs the speedrun's recipe. `corpus` (generated raw text, imports only errors) sits with data.
"""

from __future__ import annotations

import ast
from pathlib import Path

HERD = Path(__file__).resolve().parent.parent / "herd"

# Lowest first. Packages in one set are siblings. `` is `herd` itself, the lazy public facade
# (herd.load / herd.save / herd.generate): above what it re-exports, used by the CLI.
ORDER: list[set[str]] = [
    {"errors", "run_dir"},
    {"config_overrides"},
    {"model", "tokenizer"},
    {"checkpoint", "generation"},
    {"data", "corpus"},
    {"train"},
    {"eval"},
    {"post"},
    {"safety"},
    {"serve", "chat"},
    {"speedrun"},
    {"scaling"},
    {""},
    {"cli"},
]
LAYERS = {package: rank for rank, packages in enumerate(ORDER) for package in packages}


def _package(module: str) -> str:
    """`herd.train.pretrain` -> `train`; `herd` -> `` (the facade)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, imported herd module) for every import in the file, at any depth, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "herd":  # `from herd import checkpoint` imports the named subpackages
                found += [(node.lineno, f"herd.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, name) for line, name in found if name == "herd" or name.startswith("herd.")]


def _violations(root: Path = HERD) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        source = _package(_module_name(path, root))
        for line, target in _imports(path, root):
            dest = _package(target)
            if dest == source:
                continue
            if dest not in LAYERS or source not in LAYERS:
                bad.append(f"{path.relative_to(root.parent)}:{line} imports {target} (package without a layer)")
                continue
            if LAYERS[dest] > LAYERS[source]:
                kind = ">"
            elif LAYERS[dest] == LAYERS[source]:
                kind = "= sibling of"
            else:
                continue
            bad.append(
                f"{path.relative_to(root.parent)}:{line} imports {target} "
                f"(layer {LAYERS[dest]} {dest or 'herd'} {kind} layer {LAYERS[source]} {source or 'herd'})"
            )
    return bad


def test_every_package_has_a_layer():
    packages = {_package(_module_name(p, HERD)) for p in HERD.rglob("*.py")}
    assert packages <= set(LAYERS), f"give these a layer in LAYERS: {sorted(packages - set(LAYERS))}"


def test_imports_only_look_down():
    bad = _violations()
    assert not bad, f"{len(bad)} imports look up or sideways:\n" + "\n".join(bad)


def test_checker_sees_function_level_and_relative_imports(tmp_path):
    fake = tmp_path / "herd"
    (fake / "model").mkdir(parents=True)
    (fake / "model" / "__init__.py").write_text("def f():\n    from herd.train import x\n")
    (fake / "model" / "a.py").write_text("from . import b\nimport herd.serve.engine\n")
    assert _violations(fake) == [
        "herd/model/__init__.py:2 imports herd.train (layer 5 train > layer 2 model)",
        "herd/model/a.py:2 imports herd.serve.engine (layer 9 serve > layer 2 model)",
    ]
