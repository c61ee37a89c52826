"""The layer arrows of ARCHITECTURE.md, checked by walking every import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> top-level modules it must never import
FORBIDDEN = {
    "curation": {"flask", "celery", "kombu", "webui", "workers", "datasets", "werkzeug"},
    "datasets": {"flask", "celery", "kombu", "webui", "workers"},
    "workers": {"flask", "webui"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_its_layer(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if _imports(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_webui_imports_workers_only_to_enqueue() -> None:
    # The web layer may import workers.tasks (to call .delay), nothing else of workers.
    for path in (ROOT / "webui").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("workers")
            ):
                assert node.module == "workers.tasks", f"{path}: imports {node.module}"


def test_importing_the_celery_app_starts_nothing(monkeypatch, tmp_path) -> None:
    import importlib
    import sys

    monkeypatch.setenv("CURATION_DATA_DIR", str(tmp_path))
    for name in [m for m in sys.modules if m == "workers" or m.startswith("workers.")]:
        monkeypatch.delitem(sys.modules, name)
    tasks = importlib.import_module("workers.tasks")
    runtime_module = importlib.import_module("workers.runtime")
    # The runtime (engine, store) is built on the first task, not on import.
    assert runtime_module.worker_runtime.cache_info().currsize == 0
    assert "curation.store.collect_orphans" in tasks.celery_app.tasks
