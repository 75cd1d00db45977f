"""The floors of the package (STYLE.md "Floors", docs/architecture.md): which area may import which.

Every module's imports of our own modules are read with `ast`, at module level and inside
function bodies (a body import still runs upward, it only runs later), and checked against the
direction rules below; the import graph must have no cycle; and the count of function-body
imports of our own modules may only go down. `test_the_checks_can_fail` feeds the same checks a
made-up graph that breaks every rule.
"""
from __future__ import annotations

import ast
import collections
import dataclasses
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "jaxmedgan"

# Import statements of our own modules inside function bodies today (118 before the drivers moved
# to studies/ and the data modules were untangled). A lower number is progress:
# lower this ceiling with it. A higher one means a file sits on the wrong floor: move the file (or
# the piece both sides need) instead of hiding the import in a function. The goal is 20.
FUNCTION_BODY_IMPORTS_CEILING = 67

# Top-level modules that import none of ours: any floor may use them.
UTILITIES = {"atomic_io", "batching", "checkpointing", "workdir_lock"}

# The DP mechanism and accounting (STYLE.md habit 6: DP never touches model code).
PRIVACY_MECHANISM = {f"{PACKAGE}.privacy.{name}" for name in (
    "dp_sgd", "ghost", "noise", "sampling", "accounting", "config", "secret", "plan", "canaries", "checks",
    "monitoring")}

# Known breaks of a rule, each with the reason it stays for now; every entry must still be needed.
EXCEPTIONS = {
    (f"{PACKAGE}.privacy.checks", f"{PACKAGE}.models.layers"):
        "BATCH_MIXING_NORMS / modules_using: which norms mix examples is the layer library's to say",
}


@dataclasses.dataclass(frozen=True)
class Import:
    """One import of our module `dst` by module `src` (line `line`; `in_function`: inside a def)."""

    src: str
    dst: str
    in_function: bool
    line: int


def _module_names(root: pathlib.Path) -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _resolve(name: str, known: dict[str, pathlib.Path]) -> str | None:
    """The longest known module that `name` (a module, or a module plus an attribute) names."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in known:
            return ".".join(parts)
        parts.pop()
    return None


def read_imports(root: pathlib.Path = ROOT) -> tuple[list[Import], int, set[str]]:
    """(every import of our modules, number of function-body import statements of ours, modules)."""
    known = _module_names(root)
    edges: list[Import] = []
    body_statements = 0
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        for node, in_function in _walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [_resolve(a.name, known) for a in node.names if a.name.split(".")[0] == PACKAGE]
            else:  # ast.ImportFrom
                base = node.module or ""
                if node.level:  # relative: from the package of `module`
                    anchor = module.split(".") if is_package else module.split(".")[:-1]
                    base = ".".join(anchor[:len(anchor) - node.level + 1] + ([base] if base else []))
                if base.split(".")[0] != PACKAGE:
                    continue
                targets = [_resolve(f"{base}.{a.name}", known) for a in node.names]
            targets = [t for t in targets if t and t != module]
            edges += [Import(module, t, in_function, node.lineno) for t in dict.fromkeys(targets)]
            body_statements += bool(in_function and targets)
    return edges, body_statements, set(known)


def _walk(tree: ast.AST):
    """(import node, whether it sits inside a function body) for every import in `tree`."""
    stack = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            stack.append((child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                     ast.Lambda))))


def area(module: str) -> str:
    """'jaxmedgan.trainers.common' -> 'trainers'; a top-level module -> its name ('sampling')."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def rule_breaks(edges: list[Import]) -> list[str]:
    """One line per import that breaks a direction rule (the EXCEPTIONS left out)."""
    # An evaluator that imports a trainer or a study is a driver (it belongs in studies/).
    drivers = {e.src for e in edges if area(e.src) == "evaluators" and area(e.dst) in ("trainers", "studies")}
    rules = [
        ("ops import only ops and the utilities",
         lambda s, d: area(s) == "ops" and area(d) not in {"ops", *UTILITIES}),
        ("models import only models, ops and the utilities",
         lambda s, d: area(s) == "models" and area(d) not in {"models", "ops", *UTILITIES}),
        ("losses, augment and data import no trainer, evaluator or study",
         lambda s, d: area(s) in ("losses", "augment", "data") and area(d) in ("trainers", "evaluators", "studies")),
        ("trainers import no study and no evaluator that drives trainers",
         lambda s, d: area(s) == "trainers" and (area(d) == "studies" or d in drivers)),
        ("evaluators import no trainer or study",
         lambda s, d: area(s) == "evaluators" and area(d) in ("trainers", "studies")),
        ("the DP mechanism imports no model, trainer or data module",
         lambda s, d: s in PRIVACY_MECHANISM and area(d) in ("models", "trainers", "data")),
    ]
    out = []
    for e in edges:
        if (e.src, e.dst) in EXCEPTIONS:
            continue
        out += [f"{e.src} -> {e.dst} (line {e.line}{', in a function' if e.in_function else ''}): {name}"
                for name, broken in rules if broken(e.src, e.dst)]
    return out


def find_cycle(edges: list[Import]) -> list[str] | None:
    """One import cycle [a, b, ..., a] of `edges`, or None."""
    graph = collections.defaultdict(set)
    for e in edges:
        graph[e.src].add(e.dst)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


EDGES, BODY_IMPORTS, MODULES = read_imports()


def test_imports_run_down_the_floors():
    assert rule_breaks(EDGES) == []


def test_every_exception_is_still_needed():
    present = {(e.src, e.dst) for e in EDGES}
    assert [pair for pair in EXCEPTIONS if pair not in present] == []


def test_no_import_cycles():
    assert find_cycle([e for e in EDGES if not e.in_function]) is None  # would fail at import time
    assert find_cycle(EDGES) is None  # hidden in function bodies, still a knot


def test_function_body_imports_only_go_down():
    assert BODY_IMPORTS <= FUNCTION_BODY_IMPORTS_CEILING, (
        f"{BODY_IMPORTS} function-body imports of jaxmedgan modules, ceiling {FUNCTION_BODY_IMPORTS_CEILING}: "
        "move the file to its floor instead of importing inside a function")


def test_the_reader_sees_every_kind_of_import():
    """Module-level and body imports and `from package import module` are read (relative imports: in
    `test_the_checks_can_fail`)."""
    assert {"jaxmedgan.trainers.common", "jaxmedgan.studies.quality_cli", "jaxmedgan.models.layers"} <= MODULES
    by_pair = {(e.src, e.dst): e for e in EDGES}
    assert not by_pair["jaxmedgan.trainers.common", "jaxmedgan.evaluators.training_quality"].in_function
    assert by_pair["jaxmedgan.main", "jaxmedgan.studies.inversion"].in_function
    assert BODY_IMPORTS > 0


def test_the_checks_can_fail(tmp_path):
    """A made-up package that breaks every rule, read from files like the real one."""
    files = {
        "ops/a.py": "from jaxmedgan.models import m\n",
        "models/m.py": "from jaxmedgan import sampling\n",
        "losses/l.py": "def f():\n    from jaxmedgan.trainers import t\n",
        "trainers/t.py": "from jaxmedgan.evaluators import driver\nfrom ..studies import s\n",
        "evaluators/driver.py": "def g():\n    from jaxmedgan.trainers import t\n",
        "studies/s.py": "",
        "privacy/noise.py": "from jaxmedgan.data import d\n",
        "data/d.py": "import jaxmedgan.data.e\n",
        "data/e.py": "from jaxmedgan.data import d\n",
        "sampling.py": "",
    }
    for name, text in {"__init__.py": "", **files}.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    edges, body, _ = read_imports(tmp_path)
    broken = "\n".join(rule_breaks(edges))
    for expected in ("ops.a -> jaxmedgan.models.m", "models.m -> jaxmedgan.sampling",
                     "losses.l -> jaxmedgan.trainers.t", "trainers.t -> jaxmedgan.evaluators.driver",
                     "trainers.t -> jaxmedgan.studies.s", "evaluators.driver -> jaxmedgan.trainers.t",
                     "privacy.noise -> jaxmedgan.data.d"):
        assert f"jaxmedgan.{expected}" in broken
    assert body == 2
    assert find_cycle([e for e in edges if not e.in_function]) == ["jaxmedgan.data.d", "jaxmedgan.data.e",
                                                                   "jaxmedgan.data.d"]
    assert find_cycle([e for e in edges if e.src != "jaxmedgan.data.d"]) == [
        "jaxmedgan.evaluators.driver", "jaxmedgan.trainers.t", "jaxmedgan.evaluators.driver"]
