"""docs/api.md is the reference of every public name, generated from the signatures and
docstrings; this test fails when the file and the code disagree.

Regenerate after changing the public API:  PYTHONPATH=python python tests/test_api_docs.py
"""
from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"

# Modules whose names are public API, and what is taken from each: the top level keeps its
# functions, classes and constants (its submodules are documented by their own entries).
MODULES = {
    "accord": None,
    "accord.ops": "__all__",
    "accord.hooks": "__all__",
    "accord.comm": "__all__",
    "accord.testing": "__all__",
}
LAZY = ("DistributedOptimizer", "broadcast_optimizer_state")


def public_names(module_name: str) -> list:
    module = importlib.import_module(module_name)
    if MODULES[module_name] == "__all__":
        return list(module.__all__)
    names = [n for n in dir(module) if not n.startswith("_")
             and not inspect.ismodule(getattr(module, n))]
    return sorted(set(names) | set(LAZY))


def _summary(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.split("\n\n")[0].replace("\n", " ").strip()


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""


def entry(module_name: str, name: str) -> str:
    obj = getattr(importlib.import_module(module_name), name)
    full = f"{module_name}.{name}"
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
        kind = "class" if inspect.isclass(obj) else "function"
        text = f"### `{full}{_signature(obj)}`\n\n*{kind}*. {_summary(obj) or '(no docstring)'}\n"
    else:
        text = f"### `{full}`\n\n*{type(obj).__name__}*: `{obj!r}`\n"
    return text


def render() -> str:
    parts = ["# API reference\n",
             "Every public name, with its signature and the first paragraph of its docstring "
             "(`help(accord.x)` has the rest). Guides: `docs/index.md`. This file is generated "
             "by `tests/test_api_docs.py`, which also checks that it matches the code.\n"]
    for module_name in MODULES:
        parts.append(f"## `{module_name}`\n")
        parts.extend(entry(module_name, n) for n in public_names(module_name))
    return "\n".join(parts)


def test_every_public_name_is_documented():
    pytest.importorskip("torch")
    pytest.importorskip("mpi4py")
    assert DOC.exists(), "docs/api.md is missing: run python tests/test_api_docs.py"
    expected = render()
    assert DOC.read_text() == expected, (
        "docs/api.md is out of date with the public API: regenerate it with "
        "`PYTHONPATH=python python tests/test_api_docs.py`")


def test_every_public_name_has_a_docstring():
    pytest.importorskip("torch")
    missing = []
    for module_name in MODULES:
        for n in public_names(module_name):
            obj = getattr(importlib.import_module(module_name), n)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
                missing.append(f"{module_name}.{n}")
    assert not missing, f"public names without a docstring: {missing}"


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC}", file=sys.stderr)
