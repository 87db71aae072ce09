"""Replace each task's weight parameters by gathers from one shared page pool."""

from __future__ import annotations

import tvm
from tvm import relax

from tvm_weightvirt.abi import task_function
from tvm_weightvirt.layout import PageLayout, WeightSpan
from tvm_weightvirt.plan import PagePlan


@tvm.transform.module_pass(opt_level=0, name="VirtualizeWeights")
class VirtualizeWeights:
    """Make every weight of every task a gather from the page pool through the task's page table.

    Each `task_<name>(inputs..., weights...)` becomes `task_<name>(inputs..., pool, page_table)`:
    `pool` is `[S, P]` float32 and the same input for every task; `page_table` is the task's
    `[n_pages]` table (`plan.page_table_dtype`: uint16 where the ids fit). A weight spanning
    pages `p0..p1` at offset `o` is
    `take(pool, page_table[p0:p1]) -> reshape [-1] -> slice [o - p0*P, +numel] -> reshape`.
    Both stay inputs (never bound constants), so `FoldConstant` cannot undo the sharing and a
    new page table needs no recompile. This is the fused mode: the gather runs inside every
    call. (`relax.transform.LiftTransformParams` could lift it into a per-switch function, but
    that runs one small op per weight; materialize mode uses `AddPageGather` instead.)

    Note: run `MergeTasks` first. Functions of tasks not in the plan are left unchanged.

    Parameters
    ----------
    plan : PagePlan
        Page size, pool page count and each task's layout; the pool contents are not read.

    .. code-block:: python

        # before                                  # after (P = 100, S = 7)
        def task_a(x, w: R.Tensor((4, 30))):       def task_a(x, pool: R.Tensor((7, 100)),
            R.func_attr({"num_input": 1})                     page_table: R.Tensor((2,), "uint16")):
            y = R.matmul(x, w)                         ids = R.strided_slice(page_table, [0], [0], [2])
                                                       pages = R.take(pool, ids, axis=0)
                                                       flat = R.reshape(pages, [200])
                                                       w = R.reshape(R.strided_slice(flat, [0], [0], [120]), [4, 30])
                                                       y = R.matmul(x, w)
    """

    def __init__(self, plan: PagePlan) -> None:
        with_exclusive = [n for n, t in plan.tasks.items() if t.n_exclusive_pages]
        if with_exclusive:
            raise NotImplementedError(
                f"tasks {with_exclusive} have exclusive pages: fused mode gathers from the pool "
                "only; lower them in materialize mode (AddPageGather, ExclusivePageLoader)"
            )
        self.plan = plan

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        names = [gv.name_hint for gv in mod.get_global_vars()]
        missing = [n for n in self.plan.tasks if task_function(n) not in names]
        if missing:
            raise ValueError(f"tasks {missing} of the page plan have no function in the module")
        pool_ty = relax.TensorType((self.plan.n_pool_pages, self.plan.page_size), "float32")
        for name, task_pages in self.plan.tasks.items():
            func = mod[task_function(name)]
            out[task_function(name)] = _virtualize(
                func, name, task_pages.layout, pool_ty, self.plan.page_table_dtype.name
            )
        # The new SeqExprs carry no types yet; normalization derives them.
        return relax.transform.Normalize()(out)


def _virtualize(
    func: relax.Function,
    task: str,
    layout: PageLayout,
    pool_ty: relax.TensorType,
    table_dtype: str,
) -> relax.Function:
    n_in = int(func.attrs["num_input"])
    inputs, weight_params = list(func.params[:n_in]), list(func.params[n_in:])
    # Step 1. Check that the function's weight parameters are the layout, in order.
    if len(weight_params) != len(layout.spans):
        raise ValueError(
            f"task '{task}': function has {len(weight_params)} weight parameters, "
            f"the layout has {len(layout.spans)}"
        )
    for param, span in zip(weight_params, layout.spans):
        shape = tuple(int(d) for d in param.ty.shape.values)
        if shape != span.shape or str(param.ty.dtype) != span.dtype:
            raise ValueError(
                f"task '{task}': weight '{span.name}' is {span.shape} {span.dtype} in the layout "
                f"but parameter '{param.name}' is {shape} {param.ty.dtype}"
            )
    # Step 2. Bind each old weight parameter to its gather, ahead of the original body.
    pool = relax.Var("pool", pool_ty)
    page_table_ty = relax.TensorType((layout.n_pages,), table_dtype)
    page_table = relax.Var("page_table", page_table_ty)
    bb = relax.BlockBuilder()
    bindings = []
    for param, span in zip(weight_params, layout.spans):
        bindings.extend(_gather_bindings(bb, param, span, layout.page_size, pool, page_table))
    body = func.body
    new_body = relax.SeqExpr([relax.DataflowBlock(bindings)] + list(body.blocks), body.body)
    return relax.Function(
        inputs + [pool, page_table], new_body, func.ret_ty, func.is_pure, func.attrs
    )


def _gather_bindings(
    bb: relax.BlockBuilder,
    weight: relax.Var,
    span: WeightSpan,
    page_size: int,
    pool: relax.Var,
    page_table: relax.Var,
) -> list[relax.VarBinding]:
    first_page = span.offset_elems // page_size
    end_page = -(-span.end_elems // page_size)
    start = span.offset_elems - first_page * page_size
    steps = [
        ("ids", lambda x: relax.op.strided_slice(page_table, [0], [first_page], [end_page])),
        ("pages", lambda ids: relax.op.take(pool, ids, axis=0)),
        ("flat", lambda pages: relax.op.reshape(pages, [(end_page - first_page) * page_size])),
        ("span", lambda flat: relax.op.strided_slice(flat, [0], [start], [start + span.numel])),
    ]
    bindings, prev = [], None
    for suffix, make in steps:
        call = bb.normalize(make(prev))
        prev = relax.DataflowVar(f"{weight.name}_{suffix}", call.ty)
        bindings.append(relax.VarBinding(prev, call))
    bindings.append(relax.VarBinding(weight, bb.normalize(relax.op.reshape(prev, span.shape))))
    return bindings
