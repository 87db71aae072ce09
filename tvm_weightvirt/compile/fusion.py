"""Legalize and fuse as TVM's default pipeline does: the one pass list behind the kernels that
tuning searches and the kernels a Cortex-M project compiles."""

from __future__ import annotations

import tvm
from tvm import relax


def legalize_and_fuse() -> list[tvm.transform.Pass]:
    """Relax ops to TIR, then fused into one PrimFunc per fusion group."""
    return [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
