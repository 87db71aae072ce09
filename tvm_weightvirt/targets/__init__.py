"""Targets that need more than `tvm.compile`: a C project per board family."""
