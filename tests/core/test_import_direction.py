"""The rooms of the tree and the direction of their imports (docs/design.md): each folder
imports only from itself and the rooms listed for it, whether at the top of a file or inside a
function; the core and the algorithms never import TVM, the passes never torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "tvm_weightvirt"

# room -> the rooms it may import from (besides itself)
ALLOWED = {
    "core": set(),
    "algorithms": {"core"},
    "passes": {"core"},
    "frontend": {"core", "algorithms", "passes"},
    "compile": {"core", "passes", "frontend"},
    "runtime": {"core", "passes", "frontend", "compile"},
    "targets": {"core", "passes", "frontend", "compile"},
    "apps": {"core", "algorithms", "passes", "frontend", "compile", "runtime", "targets"},
}
NEVER = {"core": {"tvm", "tvm_ffi", "torch"}, "algorithms": {"tvm", "tvm_ffi"}, "passes": {"torch"}}
SUBPACKAGES = {"algorithms", "frontend", "compile", "targets", "apps", "passes", "runtime"}


def _files() -> dict[Path, str]:
    """Every source file of the package -> its module name."""
    out = {}
    for folder, prefix in [
        ("tvm_weightvirt", PACKAGE),
        ("passes", f"{PACKAGE}.passes"),
        ("runtime", f"{PACKAGE}.runtime"),
    ]:
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            out[path] = ".".join([prefix, *parts])
    return out


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in SUBPACKAGES else "core"


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of everything the file imports, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.add(name)  # and what it names, which may be modules (`from . import x`)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("room", ALLOWED)
def test_each_room_imports_only_from_the_rooms_below_it(room):
    wrong = []
    for path, module in _files().items():
        if _room(module) != room or path.name == "__init__.py" and module == PACKAGE:
            continue  # the package's __init__ names the public API lazily
        for name in _imports(path, module):
            top = name.split(".")[0]
            if top in NEVER.get(room, set()):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
            if top == PACKAGE and name != PACKAGE:
                other = _room(name)
                if other != room and other not in ALLOWED[room]:
                    wrong.append(f"{path.relative_to(ROOT)} ({room}) imports {name} ({other})")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_rooms_cover_the_package():
    rooms = {_room(m) for m in _files().values()}
    assert rooms == set(ALLOWED)


@pytest.mark.parametrize(
    "module",
    [
        f"{PACKAGE}",
        f"{PACKAGE}.plan",
        f"{PACKAGE}.coded_pages",
        f"{PACKAGE}.abi",
        f"{PACKAGE}.algorithms.pipeline",
        f"{PACKAGE}.frontend.artifact",
        f"{PACKAGE}.apps.suite",
        f"{PACKAGE}.apps.manifest",
    ],
)
def test_imports_without_tvm(module):
    """What needs no TVM loads where TVM is missing (the artifact's graphs load it on use)."""
    code = (
        "import sys; sys.modules['tvm'] = None; sys.modules['tvm_ffi'] = None\n"
        f"import {module}\n"
        "assert 'tvm' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_public_functions_are_not_shadowed_by_submodules():
    """Regression: a submodule named like a public function (`build`) replaced it on import."""
    import tvm_weightvirt.runtime  # noqa: F401

    import tvm_weightvirt as wv
    import tvm_weightvirt.compile.compiler  # noqa: F401

    for name in wv.__all__:
        assert not type(getattr(wv, name)).__name__ == "module", name
