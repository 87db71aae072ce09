"""Move each function's weight-only ops into a function of their own that runs once per
weight change (a context switch, a model load) instead of at every inference."""

from __future__ import annotations

import tvm
from tvm import relax

from tvm_weightvirt.abi import weight_transform_function

# the name TVM's LiftTransformParams gives the function it lifts out of `f`: f + this
_TVM_SUFFIX = "_transform_params"


@tvm.transform.module_pass(opt_level=0, name="LiftWeightTransforms")
class LiftWeightTransforms:
    """TVM's `LiftTransformParams` under the project's names: for every Relax function `f` with
    a `num_input` attribute, the bindings that depend only on its weights (the parameters after
    the first `num_input`) move to `wv_transform_<f>(weights)`, which takes the weights as one
    tuple and returns what `f` now takes after its inputs. A function without weight-only ops
    gets no such function (it takes its weights as they are). The outputs are unchanged bit for
    bit: each op runs the same kernel, only earlier.

    .. code-block:: python

        # before                                # after
        def f(x, w):                            def f(x, wt):
            R.func_attr({"num_input": 1})           R.func_attr({"num_input": 1})
            wt = R.permute_dims(w)                  y = R.matmul(x, wt)
            y = R.matmul(x, wt)                     return y
            return y
                                                def wv_transform_f(weights: R.Tuple(w)):
                                                    wt = R.permute_dims(weights[0])
                                                    return (wt,)
    """

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        lifted_from = {
            gv.name_hint
            for gv, func in mod.functions_items()
            if isinstance(func, relax.Function) and "num_input" in (func.attrs or {})
        }
        lifted = relax.transform.LiftTransformParams()(mod)
        out = {}
        for gv, func in lifted.functions_items():
            source = gv.name_hint.removesuffix(_TVM_SUFFIX)
            if source != gv.name_hint and source in lifted_from:
                if _returns_its_weights(func):
                    continue  # no weight-only op: `source` takes the weights as they are
                name = weight_transform_function(source)
                gv, func = relax.GlobalVar(name), func.with_attr("global_symbol", name)
            out[gv] = func
        return tvm.IRModule(out, attrs=mod.attrs)


def _returns_its_weights(func: relax.Function) -> bool:
    """The lifted function does nothing: it returns the tuple of weights it takes."""
    body = func.body
    result = body.body if isinstance(body, relax.SeqExpr) and not body.blocks else body
    return result.same_as(func.params[0])
