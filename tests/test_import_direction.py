"""Algorithm-side modules import without TVM (the design's direction of imports)."""

import subprocess
import sys

import pytest

TVM_FREE = [
    "tvm_weightvirt",
    "tvm_weightvirt.layout",
    "tvm_weightvirt.plan",
    "tvm_weightvirt.artifact",
    "tvm_weightvirt.importance",
    "tvm_weightvirt.matching",
    "tvm_weightvirt.optimize",
    "tvm_weightvirt.pipeline",
    "tvm_weightvirt.data",
    "tvm_weightvirt.objectives",
    "tvm_weightvirt.determinism",
    "tvm_weightvirt.manifest",
    "tvm_weightvirt.suite",
    "tvm_weightvirt.separation",
    "tvm_weightvirt.smartdeal",
]


@pytest.mark.parametrize("module", TVM_FREE)
def test_imports_without_tvm(module):
    code = (
        "import sys; sys.modules['tvm'] = None; sys.modules['tvm_ffi'] = None\n"
        f"import {module}\n"
        "assert 'tvm' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_passes_do_not_import_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import tvm_weightvirt.passes, tvm_weightvirt.compiler\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_public_functions_are_not_shadowed_by_submodules():
    """Regression: a submodule named like a public function (`build`) replaced it on import."""
    import tvm_weightvirt.runtime  # noqa: F401

    import tvm_weightvirt as wv
    import tvm_weightvirt.compiler  # noqa: F401

    for name in wv.__all__:
        assert not type(getattr(wv, name)).__name__ == "module", name
