"""House rules, checked on the source: no import cycle, a docstring on every module, small
files, a torch-free control plane and contract, and the contract as the only reader of its
files' keys."""

from __future__ import annotations

import ast
import dataclasses
import functools
import re
from pathlib import Path

import pytest

from launcher.contract import events, job, plan, reports
from launcher.tasks.registry import TASKS
from tests.conftest import REPO

PACKAGE = REPO / "launcher"
MAX_LINES = 300
HEAVY = {"torch", "transformers", "accelerate", "deepspeed", "datasets", "peft", "wandb",
         "mlflow", "tensorboard"}
# Modules that run where only the control plane is installed or must start instantly.
CONTROL_PLANE = ("launcher.cli", "launcher.jobs", "launcher.progress", "launcher.waiting",
                 "launcher.errors",
                 "launcher.contract", "launcher.recipe", "launcher.plan", "launcher.render",
                 "launcher.tasks.registry", "launcher.tasks.spec",
                 "launcher.backends", "launcher.data.files", "launcher.data.formats",
                 "launcher.data.splits", "launcher.data.labels", "launcher.data.mixing",
                 "launcher.data.errors", "launcher.data.messages", "launcher.data.fields")


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> set[str]:
    """Modules `path` imports at its top level or inside functions (absolute names); `from P
    import M` of a submodule M counts as importing P.M only."""
    names = modules()
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & set(names)
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(node.module)
    return found


def project_graph() -> dict[str, set[str]]:
    names = modules()
    return {name: {m for m in imports(path) if m in names and m != name}
            for name, path in names.items()}


def test_no_import_cycle() -> None:
    graph = project_graph()
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycle = [*trail[trail.index(target):], target] if target in trail else [
                    node, target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*trail, target])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_says_what_it_owns(name: str) -> None:
    docstring = ast.get_docstring(ast.parse(modules()[name].read_text()))
    assert docstring, f"{name} has no module docstring"
    assert docstring.splitlines()[0].strip(), f"{name}: the docstring starts with a blank line"


def test_no_file_is_over_300_lines() -> None:
    files = [*PACKAGE.rglob("*.py"), *(REPO / "tests").rglob("*.py"),
             *(REPO / "bench").rglob("*.py"), *(REPO / "slurm").glob("*.sh")]
    long = {str(p.relative_to(REPO)): n for p in files
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these files: {long}"


def test_the_control_plane_never_imports_the_training_stack() -> None:
    names = modules()
    for name, path in names.items():
        if name.startswith(CONTROL_PLANE):
            heavy = {m.split(".")[0] for m in imports(path)} & HEAVY
            assert not heavy, f"{name} imports {heavy}"


def test_the_contract_stands_on_its_own() -> None:
    for name, path in modules().items():
        if name.startswith("launcher.contract"):
            project = {m for m in imports(path) if m.startswith("launcher")}
            outside = {m for m in project if not m.startswith(("launcher.contract",
                                                               "launcher.errors"))}
            assert not outside, f"{name} imports {outside}"


# What the rest of the project may know of the backends: `backend_for` and the protocol.
BACKENDS_FACE = {"launcher.backends", "launcher.backends.base"}
# What draws or talks to the user: a backend reports states, never shows them.
UI = ("launcher.progress", "launcher.waiting", "launcher.cli", "rich", "typer")


def test_only_the_backends_know_a_backend() -> None:
    """A new backend is one module in launcher/backends/: outside it, sweeps, jobs, the CLI and
    the rest reach a backend through `backend_for` and the `Backend` protocol only."""
    found = [f"{name} imports {module}" for name, path in modules().items()
             if not name.startswith("launcher.backends")
             for module in sorted(imports(path))
             if module.startswith("launcher.backends") and module not in BACKENDS_FACE]
    assert not found, "use launcher.backends.backend_for and the Backend protocol:\n" + \
        "\n".join(found)


def test_the_backends_draw_nothing() -> None:
    """Waiting for a job and drawing its progress live outside the backends (`waiting`)."""
    found = [f"{name} imports {module}" for name, path in modules().items()
             if name.startswith("launcher.backends")
             for module in sorted(imports(path))
             if any(module == ui or module.startswith(f"{ui}.") for ui in UI)]
    assert not found, "\n".join(found)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module's module, classes and functions."""
    owners = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, owners) and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}


def test_only_the_registry_names_a_task_kind() -> None:
    """A task kind's name is its registry entry's: no other module spells one in code (a
    comparison, a table key, a message); what differs by kind is read from its `TaskSpec`."""
    kind = re.compile(r"\b(" + "|".join(map(re.escape, TASKS)) + r")\b")
    found = []
    for name, path in modules().items():
        if name == "launcher.tasks.registry":
            continue
        tree = ast.parse(path.read_text())
        docstrings = _docstrings(tree)
        found += [f"{name}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and id(node) not in docstrings and kind.search(node.value)]
    assert not found, "read these from the task's TaskSpec:\n" + "\n".join(found)


# Field names that are also the vocabulary of data rows and batches (a row's "text", a batch's
# "labels"): reading those by key is data, not the contract.
DATA_WORDS = {"text", "label", "labels", "tokens", "tags", "metrics", "time", "data", "eval",
              "names", "process", "error", "loss", "lr", "precision"}


def contract_keys() -> set[str]:
    records = [reports.Summary, reports.RankReport, reports.DataStats, reports.HeldBytes,
               job.JobRecord, plan.Plan, plan.MemoryPlan, plan.MemoryEstimate,
               *events.EVENT_KINDS.values()]
    return ({f.name for cls in records for f in dataclasses.fields(cls)} | {"event"}) - DATA_WORDS


def test_contract_files_are_read_through_the_contract_only() -> None:
    """No `x["eval_loss"]` / `.get("job_id")` on a contract key outside the contract itself."""
    keys = contract_keys()
    pattern = re.compile(r"""(?:\[|\.get\()\s*["']([a-z_]+)["']""")
    files = [p for p in [*PACKAGE.rglob("*.py"), *(REPO / "tests").rglob("*.py"),
                         *(REPO / "bench").rglob("*.py")]
             if "contract" not in p.parts and p.name != "test_architecture.py"]
    found = [f"{p.relative_to(REPO)}:{n}: {line.strip()}"
             for p in files for n, line in enumerate(p.read_text().splitlines(), 1)
             if any(m in keys for m in pattern.findall(line))]
    assert not found, "read these through launcher.contract:\n" + "\n".join(found)


def test_no_test_module_imports_another() -> None:
    """What tests share lives in conftest.py or tests/helpers/, never in a test module."""
    test_module = re.compile(r"^tests\.(?:\w+\.)*test_\w+$")
    found = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [])
            found += [f"{path.relative_to(REPO)}: {name}" for name in names
                      if test_module.match(name)]
    assert not found, "move what these share to tests/helpers/:\n" + "\n".join(found)


def test_test_modules_have_distinct_names() -> None:
    """pytest imports test modules by basename (the test folders are not packages)."""
    names = [path.name for path in (REPO / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
