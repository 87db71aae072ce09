"""`python -m tvm_weightvirt.apps.cli` (as torchrun starts `wvirt pack` processes)."""

import sys

from . import main

sys.exit(main())
