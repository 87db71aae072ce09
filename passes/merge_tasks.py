"""Merge several task modules into one module with one Relax function per task."""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax, tirx

from tvm_weightvirt.abi import task_function


@tvm.transform.module_pass(opt_level=0, name="MergeTasks")
class MergeTasks:
    """Add each task's module to the module the pass runs on (usually empty).

    A task's `main` becomes `task_<name>`, its other functions `<name>_<function>`. PrimFuncs
    that are structurally identical (ignoring `global_symbol`) to one already in the module are
    not copied: the task calls the existing one, so tuning and codegen see each kernel once.

    Parameters
    ----------
    modules : dict[str, IRModule]
        Task name -> module with a Relax function `main`.

    .. code-block:: python

        # before: {"a": Module_a, "b": Module_b}, each with main + add (PrimFunc)
        # after:
        @I.ir_module
        class Merged:
            @T.prim_func
            def a_add(...): ...                  # b's identical `add` is not copied
            @R.function
            def task_a(x): ... R.call_tir(a_add, ...)
            @R.function
            def task_b(x): ... R.call_tir(a_add, ...)
    """

    def __init__(self, modules: dict[str, tvm.IRModule]) -> None:
        for name, mod in modules.items():
            if "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
                raise ValueError(f"task '{name}': module has no Relax function 'main'")
        self.modules = modules

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        # BlockBuilder.add_func gives each new GlobalVar its function's type.
        bb = relax.BlockBuilder(tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs))
        for name, task_mod in self.modules.items():
            renamed: dict[str, tvm.ir.GlobalVar] = {}
            # Step 1. PrimFuncs: reuse a structurally equal one, else add under a new name.
            for gv, func in task_mod.functions_items():
                if isinstance(func, tirx.PrimFunc):
                    renamed[gv.name_hint] = _add_prim_func(bb, f"{name}_{gv.name_hint}", func)
            # Step 2. Relax functions: declare the new names first (they may call each other).
            relax_funcs = [
                (gv, f) for gv, f in task_mod.functions_items() if isinstance(f, relax.Function)
            ]
            for gv, func in relax_funcs:
                new_name = (
                    task_function(name) if gv.name_hint == "main" else f"{name}_{gv.name_hint}"
                )
                if new_name in bb.get():
                    raise ValueError(f"task '{name}': function '{new_name}' already in the module")
                renamed[gv.name_hint] = bb.add_func(func, new_name)
            # Step 3. Point every call at the renamed functions.
            for gv, func in relax_funcs:
                new_gv = renamed[gv.name_hint]
                func = _GlobalVarRenamer(renamed).visit_expr(func)
                if func.attrs is not None and "global_symbol" in func.attrs:
                    func = func.with_attr("global_symbol", new_gv.name_hint)
                bb.update_func(new_gv, func)
        return bb.get()


def _add_prim_func(bb: relax.BlockBuilder, name: str, func: tirx.PrimFunc) -> tvm.ir.GlobalVar:
    key = _without_symbol(func)
    for gv, existing in bb.get().functions_items():
        if isinstance(existing, tirx.PrimFunc) and tvm_ffi.structural_equal(
            _without_symbol(existing), key
        ):
            return gv
    # A different function may hold the name already (task "a"'s kernel "b_x", task "a_b"'s
    # "x"): the block builder then picks a fresh name, which the exported symbol must follow.
    gv = bb.add_func(func, name)
    if func.attrs is not None and "global_symbol" in func.attrs:
        bb.update_func(gv, func.with_attr("global_symbol", gv.name_hint))
    return gv


def _without_symbol(func: tirx.PrimFunc) -> tirx.PrimFunc:
    if func.attrs is not None and "global_symbol" in func.attrs:
        return func.without_attr("global_symbol")
    return func


@relax.expr_functor.mutator
class _GlobalVarRenamer(relax.PyExprMutator):
    def __init__(self, renamed: dict[str, tvm.ir.GlobalVar]) -> None:
        super().__init__()
        self.renamed = renamed

    def visit_global_var_(self, gv: tvm.ir.GlobalVar) -> relax.Expr:
        return self.renamed.get(gv.name_hint, gv)
