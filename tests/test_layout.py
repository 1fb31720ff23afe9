"""The package's architecture, checked: imports flow one way and every module says what it is for.

Layers, bottom up: the shared leaves (errors, console, text, tasks, checkpoints), `engine`,
then `serve` and `evals` side by side, then `train`, `scale` (Ray: runs `evals` and `serve`) and
`watch` (which may read answers with `evals`' readers) side by side, then the top (cli, bench).
A module may import its own layer and the layers below, never above; `serve` and `evals` never
import each other, nor do `train`, `scale` and `watch`. Imports under `if TYPE_CHECKING:` are
annotations only and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import smolsight

PACKAGE = Path(smolsight.__file__).parent
LEAVES = {"errors", "console", "text", "tasks", "checkpoints"}
ALLOWED = {
    "leaf": {"leaf"},
    "engine": {"leaf", "engine"},
    "serve": {"leaf", "engine", "serve"},
    "evals": {"leaf", "engine", "evals"},
    "train": {"leaf", "engine", "evals", "train"},
    "scale": {"leaf", "engine", "serve", "evals", "scale"},
    "watch": {"leaf", "engine", "evals", "watch"},
    "top": {"leaf", "engine", "serve", "evals", "train", "scale", "watch", "top"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "top"  # the package's front door re-exports the engine
    if parts[1] in LEAVES:
        return "leaf"
    if parts[1] in ALLOWED:
        return parts[1]
    return "top"  # cli, bench, __main__


def runtime_imports(path: Path, module: str | None = None) -> set[str]:
    """The smolsight modules `path` (module `module`) imports, anywhere in it, except under
    `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for child in node.body for n in ast.walk(child)}  # fmt: skip
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("smolsight"):
                continue
            for alias in node.names:  # `from . import x` may name a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists()
                          or (PACKAGE.parent / candidate.replace(".", "/")).is_dir() else target)  # fmt: skip
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("smolsight")}
    found.discard(module)
    return found


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_imports_flow_one_way():
    wrong = []
    for module, path in modules().items():
        for target in runtime_imports(path):
            if layer(target) not in ALLOWED[layer(module)]:
                wrong.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    graph = {module: {t for t in runtime_imports(path) if t in modules()} for module, path in modules().items()}
    # A package's __init__ may name its own modules (lazy exports); that is not a circle.
    graph = {m: {t for t in targets if not t.startswith(m + ".")} for m, targets in graph.items()}
    state: dict[str, str] = {}
    circles = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(" -> ".join(trail[trail.index(target):] + [target]) if target in trail else f"{module} -> {target}")
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)


def test_the_layout_reads_as_the_architecture():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert {"engine", "serve", "evals", "train", "scale", "watch"} <= subpackages
    assert len([p for p in PACKAGE.glob("*.py")]) <= 12, "the top level is for entry points and shared leaves"


def test_every_module_says_what_it_is_for():
    silent = [name for name, path in modules().items() if ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) is None
              and name != "smolsight.__main__"]  # fmt: skip
    assert not silent, f"modules without a docstring: {silent}"


def test_the_front_door():
    from smolsight import Engine, Request, Result
    from smolsight.engine.engine import Engine as Core

    assert Engine is Core and Request.__name__ == "Request" and Result.__name__ == "Result"


def test_the_layer_rules_catch_a_wrong_import(tmp_path):
    """The checker itself: an engine module importing the server is flagged."""
    probe = tmp_path / "probe.py"
    probe.write_text('"""probe"""\nfrom ..serve import app\nfrom ..errors import MediaError\n', encoding="utf-8")
    found = runtime_imports(probe, "smolsight.engine.probe")
    assert found == {"smolsight.serve.app", "smolsight.errors"}
    assert [t for t in found if layer(t) not in ALLOWED["engine"]] == ["smolsight.serve.app"]
