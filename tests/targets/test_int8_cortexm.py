"""int8 tasks on a Cortex-M: the C kernels on QEMU compute the host's int8 outputs bit for bit
(integer sums and requantization; the input's quantization and the output's dequantization are
IEEE float32 on both; a float op after the int8 ones, a softmax's exp, is libm's and may differ
by an ulp), and the weights take a byte each in flash."""

import numpy as np
import pytest
from int8_tasks import example_tasks, samples
from tvm_weightvirt.runtime.standalone import StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.targets import mcu

pytestmark = [
    pytest.mark.slow,  # QEMU
    pytest.mark.skipif(bool(mcu.missing_tools()), reason="no Arm toolchain / QEMU"),
]


@pytest.mark.parametrize("target", ["cortex-m4"])  # M7: benchmarks.cortexm --int8
def test_int8_kernels_on_qemu_compute_the_hosts_bits(tmp_path, target):
    tasks = [wv.quantize_int8(t, samples(t, 64)) for t in example_tasks()]
    plan = wv.PagePlan.lossless(tasks, page_size=64)
    manifest = mcu.generate_project(tasks, plan, str(tmp_path), target=target)
    requests = [(t.name, [samples(t, t.input_types[0][0][0], seed=7)]) for t in tasks]
    mcu.write_requests(str(tmp_path), requests)
    run = mcu.run_project(str(tmp_path), timeout=300)
    for (name, inputs), outputs, task in zip(requests, run.outputs, tasks):
        expected = StandaloneModel(task).run(*inputs)
        for got, want in zip(outputs, expected):
            if name == "padded":  # ends in a float32 softmax: newlib's expf vs the host's
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=name)
            else:
                np.testing.assert_array_equal(got, want, err_msg=name)
    # conv / dense weights a byte each; per output channel an int32 multiplier and an int64
    # offset (bias and rounding) beside them
    n_weights = sum(t.n_weights for t in example_tasks())
    channels = sum(
        w.shape[0] for t in example_tasks() for n, w in t.weights.items() if n.endswith("bias")
    )
    assert manifest["data_bytes"]["flash"]["constants"] <= n_weights + 12 * channels + 1024
