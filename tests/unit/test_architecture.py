"""House rules, checked on the source: no import cycle, a docstring on every module, small
files, packages only at the root, a torch-free control plane that loads no worker module, the
contract on its own and the only reader of its files' keys."""

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
# Each package (or module) on its side, the longest prefix deciding: the control plane runs
# where only it is installed and must start instantly; the workers run on every rank.
SIDES = {"launcher.cli": "control", "launcher.ops": "control", "launcher.ui": "control",
         "launcher.contract": "control", "launcher.recipe": "control",
         "launcher.planner": "control", "launcher.render": "control",
         "launcher.backends": "control", "launcher.data": "control",
         "launcher.tasks.registry": "control", "launcher.tasks.spec": "control",
         # eval, predict and export load a finished run's model in the launching process, and
         # an `hf:` dataset is fetched where the run is planned: the training stack inside their
         # functions, nothing of it when they are imported.
         "launcher.ops.predict": "on demand", "launcher.ops.export": "on demand",
         "launcher.data.hub_data": "on demand",
         "launcher.worker": "worker", "launcher.tasks": "worker", "launcher.data.encode": "worker",
         # package data; the trackers run on the workers, but the sweep's MLflow parent run and
         # the W&B key check run on the control plane
         "launcher.templates": "both", "launcher.trackers": "both"}
# The package root holds packages only, so its listing reads as the architecture does.
ROOT_MODULES = {"launcher", "launcher.__main__"}


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imported(node: ast.AST, names: dict[str, Path]) -> set[str]:
    """What one statement imports (absolute names); `from P import M` of a submodule M counts as
    importing P.M only."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.module:
        subs = {f"{node.module}.{alias.name}" for alias in node.names} & set(names)
        return subs | ({node.module} if len(subs) < len(node.names) else set())
    return set()


def imports(path: Path) -> set[str]:
    """Modules `path` imports at its top level or inside functions."""
    names = modules()
    return {m for node in ast.walk(ast.parse(path.read_text())) for m in imported(node, names)}


def project_graph() -> dict[str, set[str]]:
    names = modules()
    return {name: {m for m in imports(path) if m in names and m != name}
            for name, path in names.items()}


def side(name: str) -> str | None:
    """`name`'s side in SIDES (its longest matching prefix), None for modules of neither."""
    owners = [p for p in SIDES if name == p or name.startswith(f"{p}.")]
    return SIDES[max(owners, key=len)] if owners else None


def import_time(path: Path) -> set[str]:
    """Modules `path` imports when it is itself imported: not those in the bodies of its
    functions nor in its `if TYPE_CHECKING:` block."""
    names = modules()
    found: set[str] = set()
    pending = list(ast.parse(path.read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending += node.orelse
            continue
        found |= imported(node, names)
        pending += ast.iter_child_nodes(node)
    return found


def bare_package(name: str) -> bool:
    """A package whose `__init__` imports nothing: loading it (with a module of another side
    that it holds) loads none of its modules."""
    path = modules().get(name)
    return path is not None and path.name == "__init__.py" and not import_time(path)


def loaded_with(name: str) -> set[str]:
    """Every module (of the project or not) that importing `name` imports, through the project
    modules it imports; a package's `__init__` is imported with each of its modules."""
    names = modules()
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in names:
            parents = [".".join(current.split(".")[:n]) for n in range(1, current.count(".") + 1)]
            pending += [*parents, *sorted(import_time(names[current]))]
    return seen - {name}


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


def test_the_package_root_holds_packages_only() -> None:
    """Every module lives in the package of what it is (`ops/`, `ui/`, `data/`, ...)."""
    loose = {name for name, path in modules().items()
             if name.count(".") == 1 and path.name != "__init__.py"} - ROOT_MODULES
    assert not loose, f"move these into a package: {sorted(loose)}"


def test_every_package_has_a_side() -> None:
    """A new package says here which side it is on, so the rules below cover it."""
    packages = {".".join(name.split(".")[:2]) for name in modules() if name.count(".") >= 1}
    unplaced = {p for p in packages - ROOT_MODULES if side(p) is None}
    assert not unplaced, f"add these to SIDES: {sorted(unplaced)}"


def test_the_control_plane_never_imports_the_training_stack() -> None:
    for name, path in modules().items():
        if side(name) == "control":
            heavy = {m.split(".")[0] for m in imports(path)} & HEAVY
            assert not heavy, f"{name} imports {heavy}"


def test_the_control_plane_loads_no_worker_module() -> None:
    """Importing a control-plane module (eval, predict and export included) loads neither a
    worker module (`worker/`, `tasks/`, `data/encode/`) nor the training stack."""
    found = []
    for name in modules():
        if side(name) in ("control", "on demand"):
            loaded = loaded_with(name)
            found += [f"{name} loads {m}" for m in sorted(loaded)
                      if (side(m) == "worker" and not bare_package(m))
                      or m.split(".")[0] in HEAVY]
    assert not found, "\n".join(found)


def test_the_contract_stands_on_its_own() -> None:
    for name, path in modules().items():
        if name.startswith("launcher.contract"):
            project = {m for m in imports(path) if m.startswith("launcher")}
            outside = {m for m in project if not m.startswith("launcher.contract")}
            assert not outside, f"{name} imports {outside}"


# What the rest of the project may know of the backends: `backend_for` and the protocol.
BACKENDS_FACE = {"launcher.backends", "launcher.backends.base"}
# What draws or talks to the user: a backend reports states, never shows them.
UI = ("launcher.ui", "launcher.cli", "rich", "typer")


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
    """Waiting for a job and drawing its progress live outside the backends (`ui/waiting`)."""
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
