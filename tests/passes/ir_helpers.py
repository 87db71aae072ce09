"""IR helpers the pass tests share."""

import tvm


def without(mod: tvm.IRModule, name: str) -> tvm.IRModule:
    """`mod` less its function `name` (which must be there)."""
    assert name in [gv.name_hint for gv in mod.get_global_vars()]
    kept = {gv: f for gv, f in mod.functions_items() if gv.name_hint != name}
    return tvm.IRModule(kept, attrs=mod.attrs)
