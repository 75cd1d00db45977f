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
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "jaxmedgan"

# Import statements of our own modules inside function bodies today (118 before the drivers moved
# to studies/ and the data modules were untangled, 62 before the trainers drew through
# trainers/drawing.py and the studies called training.py instead of main.py). What is left keeps
# JAX or TFDS out of a light import (main.py's commands, the reader study, the data stack a trainer
# loads when it starts). A lower number is progress: lower this ceiling with it. A higher one means
# a file sits on the wrong floor: move the file (or the piece both sides need) instead of hiding the
# import in a function. The goal is 20.
FUNCTION_BODY_IMPORTS_CEILING = 15

# Top-level modules that import none of ours: any floor may use them.
UTILITIES = {"atomic_io", "batching", "checkpointing", "subcommands", "workdir_lock"}

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


# The family contract (STYLE.md "Floors"): outside jaxmedgan/trainers/ a family's capabilities are
# read from its typed `Family` (`trainers.family(name)`, jaxmedgan/trainers/contract.py), never
# probed with `hasattr` on a trainer module or family, nor told apart by comparing trainer names.
CONTRACT_SCAN = ("jaxmedgan", "benchmarks")
CONTRACT_FREE = "jaxmedgan/trainers/"  # the registry and the families themselves
# Files still comparing trainer names, each with the reason; every entry must still be needed.
CONTRACT_EXCEPTIONS = {
    "jaxmedgan/models/trained_classifier.py":
        "models/ sits below the registry: the loader refuses a workdir whose config.json is not a classifier's",
}
# An expression that names a trainer module or family (what a hasattr probe would probe).
_FAMILY_LIKE = re.compile(r"\b(trainer|trainers|module|family|fam|FAMILY)\b")
# Variables holding a family's name (inside jaxmedgan; benchmarks key their own presets by family).
_NAME_VARIABLES = {"jaxmedgan": {"trainer", "family"}, "benchmarks": {"trainer"}}


def _names_a_trainer(node: ast.AST, variables: set[str]) -> bool:
    """`x.trainer`, `x.get("trainer")`, `x["trainer"]`, `family.name` / `FAMILY.name`, or a variable in `variables`."""
    if isinstance(node, ast.Attribute):
        return node.attr == "trainer" or (node.attr == "name" and bool(_FAMILY_LIKE.search(ast.unparse(node.value))))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "trainer"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "trainer"
    return isinstance(node, ast.Name) and node.id in variables


def contract_breaks(source: str, path: str, variables: set[str]) -> list[str]:
    """One line per `hasattr` probe of a trainer module / family and per comparison of a trainer name
    (==, !=, in, not in) in `source`."""
    out = []
    for node in ast.walk(ast.parse(source, path)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr"
                and node.args and _FAMILY_LIKE.search(ast.unparse(node.args[0]))):
            out.append(f"{path}:{node.lineno}: {ast.unparse(node)} (probe: read a typed Family field)")
        elif isinstance(node, ast.Compare) and all(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                   for op in node.ops):
            if any(_names_a_trainer(side, variables) for side in [node.left, *node.comparators]):
                out.append(f"{path}:{node.lineno}: {ast.unparse(node)} (a trainer name: read a typed Family field)")
    return out


def _contract_scan(root: pathlib.Path = ROOT) -> dict[str, list[str]]:
    found = {}
    for top in CONTRACT_SCAN:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel.startswith(CONTRACT_FREE):
                continue
            breaks = contract_breaks(path.read_text(), rel, _NAME_VARIABLES[top])
            if breaks:
                found[rel] = breaks
    return found


CONTRACT_FOUND = _contract_scan()


def test_no_family_probes_or_name_branches_outside_the_trainers():
    assert [line for rel, lines in CONTRACT_FOUND.items() if rel not in CONTRACT_EXCEPTIONS for line in lines] == []


def test_every_contract_exception_is_still_needed():
    assert [rel for rel in CONTRACT_EXCEPTIONS if rel not in CONTRACT_FOUND] == []


def test_the_contract_scan_catches_planted_probes_and_branches():
    planted = "\n".join([
        'if hasattr(trainer, "draw"): pass',
        'if hasattr(trainers.get(config.trainer), "FAMILY"): pass',
        'if config.trainer == "pix2pix": pass',
        'if config.get("trainer") in ("gan", "stylegan2"): pass',
        'if cfg["trainer"] != "dual_gan": pass',
        'if family != "stylegan2": pass',
        'if trainer.FAMILY.name == "stylegan2": pass',
    ])
    assert len(contract_breaks(planted, "planted.py", _NAME_VARIABLES["jaxmedgan"])) == 7
    clean = "\n".join([
        'if family.draw is not None: pass',
        'if "z" in trainers.family(config.trainer).latent_spaces: pass',
        'if hasattr(section, "get"): pass',
        'if name in trainers.TRAINERS: pass',
        'if config.model.arch == "cnn": pass',
    ])
    assert contract_breaks(clean, "clean.py", _NAME_VARIABLES["jaxmedgan"]) == []
    assert contract_breaks('if family == "pggan": pass', "bench.py", _NAME_VARIABLES["benchmarks"]) == []
