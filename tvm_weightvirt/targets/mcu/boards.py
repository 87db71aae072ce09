"""The MCU parts a project is built for, each with everything that differs between boards: its
compiler and flags, the emulator and board that run it, the board's memory map, its startup
file and how its tick counter converts to instructions. A second board (e.g. a RISC-V part on
QEMU `virt`) is a new entry in TARGETS, with its own startup file under runtime/mcu/."""

from __future__ import annotations

from dataclasses import dataclass

STACK_BYTES = 8 * 1024
LOADED_RAM_SECTIONS = (".data", ".wv_pool")  # RAM sections whose initial image sits in flash
# SysTick counts the 25 MHz CPU clock of the mps2 boards; `-icount shift=0` runs one instruction
# per ns of virtual time, so each tick is 40 instructions.
INSTRUCTIONS_PER_TICK = 40
# Semihosting writes to stdout through a chardev (without one it goes to stderr); -icount shift=0:
# one instruction per ns of virtual time, so counts are deterministic.
SEMIHOSTING_QEMU_FLAGS = (
    "-nographic -monitor none -serial none -chardev stdio,id=wv "
    "-semihosting-config enable=on,target=native,chardev=wv -icount shift=0"
)
ARM_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "qemu-system-arm")


@dataclass(frozen=True)
class McuTarget:
    """A part (its compiler flags and memory budget) and the emulated board that runs it."""

    name: str
    cpu_flags: str
    qemu_machine: str
    ram_bytes: int = 256 * 1024  # the part's budget, checked by generate_project
    flash_bytes: int = 1024 * 1024
    toolchain: str = "arm-none-eabi-"  # prefix of gcc and size
    qemu: str = "qemu-system-arm"
    qemu_flags: str = SEMIHOSTING_QEMU_FLAGS
    flash_origin: int = 0x00000000  # the board's memory map (code and read-only data)
    ram_origin: int = 0x20000000
    board_bytes: int = 4 * 1024 * 1024  # flash and RAM the board maps (more than the budget)
    startup: str = "startup.c"  # vectors, memory setup, tick counter, output and exit
    instructions_per_tick: int = INSTRUCTIONS_PER_TICK
    packages: tuple[str, ...] = ARM_PACKAGES  # Debian packages of the toolchain and emulator

    @property
    def tools(self) -> list[str]:
        return [f"{self.toolchain}gcc", f"{self.toolchain}size", self.qemu]


# IEEE half precision: SmartDeal bases are float16, which both FPUs widen in one instruction
HALF = "-mfp16-format=ieee"
TARGETS = {
    "cortex-m4": McuTarget(
        "cortex-m4",
        f"-mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mfloat-abi=hard -mthumb {HALF}",
        "mps2-an386",
    ),
    "cortex-m7": McuTarget(
        "cortex-m7",
        f"-mcpu=cortex-m7 -mfpu=fpv5-d16 -mfloat-abi=hard -mthumb {HALF}",
        "mps2-an500",
    ),
}
