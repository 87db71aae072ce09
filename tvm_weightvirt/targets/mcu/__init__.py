"""Cortex-M: a self-contained C project (TVM's C kernels, a static executor per task, the
switch runtime), built with the Arm toolchain and run on QEMU or the host."""
