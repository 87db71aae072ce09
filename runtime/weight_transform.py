"""A compiled function's weight-only ops, run once when its weights change (see
`LiftWeightTransforms`): after a context switch's gather, or when a model loads."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tvm

from tvm_weightvirt.abi import weight_transform_function


def weight_transform(
    vm: tvm.runtime.vm.VirtualMachine, function: str
) -> Callable[[Sequence[tvm.runtime.Tensor]], list[tvm.runtime.Tensor]]:
    """A callable that maps `function`'s weights to the arguments it takes after its inputs.
    The transformed weights are fresh tensors, the untouched ones the given tensors themselves.
    A library built before weight transforms were lifted has no transform: its functions take
    the weights as they are."""
    name = weight_transform_function(function)
    if not vm.module.implements_function(name, True):
        return list
    transform = vm.module.get_function(name, True)
    return lambda weights: list(transform(list(weights)))
