"""A Cortex-M project that does not fit its part is refused with the numbers and the option that
would make it fit: its data when generated, code, data and stack together when linked. Graphs
with constant kernel arguments, kernels of several outputs, TVM's infinite literals and libm
intrinsics run."""

import dataclasses

import numpy as np
import pytest
import torch

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples
from tvm_weightvirt.targets import mcu

needs_arm = pytest.mark.skipif(
    bool(mcu.missing_tools()), reason="no Arm toolchain / QEMU (`make arm-toolchain`)"
)


@pytest.fixture(scope="module")
def task():
    model, x = examples.torch_model("cnn2d", 0)
    return wv.Task.from_torch(model, (x,), name="cnn")


def _data_bytes(manifest: dict, memory: str) -> int:
    return sum(manifest["data_bytes"][memory].values())


@pytest.mark.parametrize("page_aligned", [False, True])
def test_data_that_does_not_fit_names_zero_copy_from_flash(task, tmp_path, page_aligned):
    plan = wv.PagePlan.lossless([task], page_size=64, page_aligned=page_aligned)
    needed = _data_bytes(mcu.generate_project([task], plan, str(tmp_path), check_fit=False), "ram")
    small = dataclasses.replace(mcu.TARGETS["cortex-m4"], ram_bytes=needed - 1)
    with pytest.raises(ValueError, match=rf"RAM needs {needed} B \(.*\) > {needed - 1} B") as err:
        mcu.generate_project([task], plan, str(tmp_path / "small"), target=small)
    advice = str(err.value)
    assert "`wvirt build --zero-copy flash`" in advice
    assert ("pack with `--page-aligned`" in advice) is not page_aligned
    assert not (tmp_path / "small").exists()  # nothing written


@needs_arm
def test_code_data_and_stack_that_overflow_the_part_fail_to_link_with_the_numbers(task, tmp_path):
    plan = wv.PagePlan.lossless([task], page_size=64)
    needed = _data_bytes(mcu.generate_project([task], plan, str(tmp_path), check_fit=False), "ram")
    # The data fit; the runtime's own variables and the executors' tensor tables do not.
    tight = dataclasses.replace(mcu.TARGETS["cortex-m4"], ram_bytes=needed)
    mcu.generate_project([task], plan, str(tmp_path / "tight"), target=tight)
    with pytest.raises(mcu.McuFitError, match=rf"RAM needs \d+ B more than its {needed} B"):
        mcu.compile_project(str(tmp_path / "tight"))


class _ConstantsSplitAndInfinity(torch.nn.Module):
    """A -1 index (a constant kernel argument once normalized), a chunk (one kernel, two
    outputs), a max pool (TVM starts it from -inf), a clamp with one bound, the abs of a float
    (`fabs`, which TVM's C codegen leaves unresolved) and a max along an axis."""

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        pooled = torch.nn.functional.max_pool1d(a * b, 2)
        return torch.clamp(pooled[..., -1], max=0.5) + x[:, 1:3, 3] + a.abs().max(-1).values


@needs_arm
def test_constants_split_and_infinite_literals_run_on_qemu_as_in_torch(tmp_path):
    x = np.random.default_rng(0).normal(size=(1, 4, 8)).astype(np.float32)
    task = wv.Task.from_torch(_ConstantsSplitAndInfinity(), (torch.from_numpy(x),), name="consts")
    plan = wv.PagePlan.lossless([task], page_size=64)
    mcu.generate_project([task], plan, str(tmp_path))
    mcu.write_requests(str(tmp_path), [("consts", [x])])
    (out,) = mcu.run_project(str(tmp_path)).outputs[0]
    expected = _ConstantsSplitAndInfinity()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=0)
