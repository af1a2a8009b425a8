"""Every module a stage runs is one of its DVC deps, so editing it makes `dvc repro` rerun the stage.

The import closure of each stage script is computed from the source (ast; nothing is
imported): every ``import``/``from ... import`` anywhere in a reached module, lazy ones
inside functions included, with the packages' ``__init__.py`` files on the way.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "fishseg"


def _module_file(name: str, root: Path) -> Path | None:
    """The file that ``import name`` executes last (a module, or a package's ``__init__``)."""
    base = root.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _with_parents(name: str, root: Path) -> list[Path]:
    """The files executed by ``import a.b.c``: ``a/__init__``, ``a/b/__init__``, then ``a/b/c``."""
    parts = name.split(".")
    files = [_module_file(".".join(parts[:i]), root) for i in range(1, len(parts) + 1)]
    return [f for f in files if f is not None]


def _imported_names(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (``from m import x`` also tries ``m.x``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_closure(script: Path, root: Path = REPO) -> set[Path]:
    """Files of the project (the script's folder and the package) that running ``script`` executes."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path):
            if name.split(".")[0] == PACKAGE:
                todo.extend(_with_parents(name, root))
            elif (local := _module_file(name, script.parent)) is not None:
                todo.append(local)  # a helper beside the script (stages/_bootstrap.py)
    return seen


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _script(stage: dict) -> Path:
    match = re.search(r"python\s+(stages/\S+\.py)", stage["cmd"])
    assert match, f"cannot find the stage script in {stage['cmd']!r}"
    return REPO / match.group(1)


def uncovered(stage: dict) -> list[str]:
    deps = [str(d) for d in stage.get("deps", [])]
    files = sorted(p.relative_to(REPO).as_posix() for p in import_closure(_script(stage)))
    return [f for f in files if not _covered(f, deps)]


@pytest.mark.parametrize("name", sorted(_stages()))
def test_every_module_a_stage_runs_is_a_dep(name: str) -> None:
    missing = uncovered(_stages()[name])
    assert not missing, f"stage {name!r} runs these files but does not list them in dvc.yaml deps: {missing}"


def test_the_guard_sees_lazy_imports_and_packages(tmp_path: Path) -> None:
    """A lazy import inside a function, a package ``__init__`` and a script-local helper count."""
    (tmp_path / "fishseg" / "sub").mkdir(parents=True)
    (tmp_path / "fishseg" / "__init__.py").write_text("")
    (tmp_path / "fishseg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "fishseg" / "sub" / "leaf.py").write_text("X = 1\n")
    (tmp_path / "fishseg" / "core.py").write_text("def f():\n    from fishseg.sub import leaf\n")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "_helper.py").write_text("")
    script = tmp_path / "stages" / "s.py"
    script.write_text("import _helper\nimport json\nfrom fishseg.core import f\n")
    found = {p.relative_to(tmp_path).as_posix() for p in import_closure(script, tmp_path)}
    assert found == {
        "stages/s.py",
        "stages/_helper.py",
        "fishseg/__init__.py",
        "fishseg/core.py",
        "fishseg/sub/__init__.py",
        "fishseg/sub/leaf.py",
    }
    stage = {"cmd": "python stages/s.py", "deps": ["stages/s.py", "stages/_helper.py", "fishseg/core.py"]}
    assert not _covered("fishseg/sub/leaf.py", stage["deps"])
    assert _covered("fishseg/sub/leaf.py", [*stage["deps"], "fishseg/sub"])
