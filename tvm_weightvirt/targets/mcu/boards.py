"""The Cortex-M parts a project is built for, and the facts of the mps2 boards QEMU emulates."""

from __future__ import annotations

from dataclasses import dataclass

RAM_BASE = 0x20000000  # on both mps2 boards: flash (code) below, SRAM from here
STACK_BYTES = 8 * 1024
LOADED_RAM_SECTIONS = (".data", ".wv_pool")  # RAM sections whose initial image sits in flash
# SysTick counts the 25 MHz CPU clock of the mps2 boards; `-icount shift=0` runs one instruction
# per ns of virtual time, so each tick is 40 instructions.
INSTRUCTIONS_PER_TICK = 40
# Semihosting writes to stdout through a chardev (without one it goes to stderr); -icount shift=0:
# one instruction per ns of virtual time, so counts are deterministic.
QEMU_FLAGS = (
    "-nographic -monitor none -serial none -chardev stdio,id=wv "
    "-semihosting-config enable=on,target=native,chardev=wv -icount shift=0"
)


@dataclass(frozen=True)
class McuTarget:
    """A Cortex-M part: compiler flags, the QEMU board that emulates it, its memory budget."""

    name: str
    cpu_flags: str
    qemu_machine: str
    ram_bytes: int = 256 * 1024
    flash_bytes: int = 1024 * 1024


TARGETS = {
    "cortex-m4": McuTarget(
        "cortex-m4", "-mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mfloat-abi=hard -mthumb", "mps2-an386"
    ),
    "cortex-m7": McuTarget(
        "cortex-m7", "-mcpu=cortex-m7 -mfpu=fpv5-d16 -mfloat-abi=hard -mthumb", "mps2-an500"
    ),
}
