"""Where tvm-weightvirt keeps what it makes once and reuses: trained suite baselines, downloaded
pretrained models, the built C++ runtime. `WVIRT_CACHE`, else ~/.cache/tvm_weightvirt."""

from __future__ import annotations

import os


def cache_dir() -> str:
    return os.environ.get("WVIRT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "tvm_weightvirt"
    )
