"""The package tree keeps its layers: pure cores import no I/O, adapters stay at the edge."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cicd"

# Modules that must stay pure: no Trio, Docker, SQLite, web or CLI, directly or through
# another cicd module.
PURE_CORES = [
    "cicd.errors",
    "cicd.pipeline",
    "cicd.events",
    "cicd.orchestration.states",
    "cicd.orchestration.plan",
    "cicd.orchestration.documents",
    "cicd.scheduling.core",
    "cicd.security.hosts",
]
FORBIDDEN_IN_CORES = {
    "trio", "docker", "sqlite3", "sqlite_utils", "quart", "quart_trio", "hypercorn", "httpx",
    "requests", "asyncio", "cicd.storage", "cicd.workers", "cicd.cli", "cicd.execution",
    "cicd.scheduling.dispatcher", "cicd.orchestration.engine",
}
# Nothing inside depends on the adapters at the edge.
ADAPTERS = {"cicd.cli", "cicd.__main__"}


def _module_file(name: str) -> Path | None:
    relative = Path(*name.split("."))
    for candidate in (PACKAGE.parent / relative / "__init__.py", PACKAGE.parent / f"{relative}.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(name: str) -> set[str]:
    path = _module_file(name)
    if path is None:
        return set()
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _closure(name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if name == current and (path := _module_file(current)) and path.name == "__init__.py":
            todo.extend(f"{current}.{p.stem}" for p in path.parent.glob("*.py") if p.stem != "__init__")
        for imported in _imports(current):
            if imported.startswith("cicd") and _module_file(imported):
                todo.append(imported)
            else:
                seen.add(imported)
    return seen


def _matches(imported: str, banned: str) -> bool:
    return imported == banned or imported.startswith(banned + ".")


@pytest.mark.parametrize("core", PURE_CORES)
def test_pure_core_imports_no_io(core: str) -> None:
    reached = _closure(core)
    bad = sorted(i for i in reached for banned in FORBIDDEN_IN_CORES if _matches(i, banned))
    assert bad == [], f"{core} reaches {bad}"


def test_no_module_imports_adapters_or_asyncio() -> None:
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for imported in _imports(module):
            assert not _matches(imported, "asyncio"), f"{module} imports asyncio"
            if not any(_matches(module, adapter) for adapter in ADAPTERS):
                for adapter in ADAPTERS:
                    assert not _matches(imported, adapter), f"{module} imports {imported}"


def test_closure_sees_indirect_imports() -> None:
    # The check above is only as good as this walk: the engine reaches Trio through
    # cicd.execution, and Docker through nothing (it gets a provider passed in).
    reached = _closure("cicd.orchestration.engine")
    assert "trio" in reached
    assert "cicd.execution.job" in reached
    assert not any(_matches(i, "docker") for i in reached)


# The bounded contexts of the design, one subpackage each, so the tree shows them.
CONTEXTS = ["orchestration", "scheduling", "workers", "execution", "telemetry", "security",
            "artifacts", "console", "pipeline", "storage", "cli"]


@pytest.mark.parametrize("context", CONTEXTS)
def test_each_context_is_a_package_with_code(context: str) -> None:
    package = PACKAGE / context
    assert (package / "__init__.py").is_file()
    modules = [path for path in package.glob("*.py") if path.name != "__init__.py"]
    assert modules, f"cicd.{context} holds no module"
