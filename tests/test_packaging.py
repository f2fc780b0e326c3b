"""The installed layout: one top-level package, every task/operator subpackage and data file in it."""

from __future__ import annotations

import fnmatch
import os
import tomllib

import evo_rules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setuptools() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def _installed_name(folder: str) -> str:
    """The import name a repository folder installs as, through package-dir."""
    for name, src in _setuptools()["package-dir"].items():
        if folder == src or folder.startswith(src + "/"):
            return name + folder[len(src):].replace("/", ".")
    return folder.replace("/", ".")


def test_every_package_installs_under_evo_rules():
    packages = _setuptools()["packages"]
    assert all(p == "evo_rules" or p.startswith("evo_rules.") for p in packages), packages


def test_every_task_and_operator_subpackage_is_listed():
    packages = set(_setuptools()["packages"])
    for top in ("operators", "fitness"):
        for here, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            if "__init__.py" in files:
                rel = os.path.relpath(here, ROOT).replace(os.sep, "/")
                assert _installed_name(rel) in packages, f"{rel} would not be installed"


def test_every_shipped_data_file_is_package_data():
    data = _setuptools()["package-data"]["evo_rules.fitness.data"]
    folder = os.path.join(ROOT, "fitness", "data")
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            rel = os.path.relpath(os.path.join(here, f), folder).replace(os.sep, "/")
            if rel.endswith((".py", ".pyc")):
                continue
            assert any(fnmatch.fnmatch(rel, g) for g in data), f"fitness/data/{rel} would not be installed"


def test_the_namespaced_names_reach_the_code():
    import evo_rules.fitness.registry as registry
    import evo_rules.operators as ops

    assert "and-match" in registry.task_names()
    assert callable(ops.random_rule)
    assert os.path.dirname(registry.__file__).startswith(tuple(evo_rules.__path__))
