# `make demo` and `make test` work on a fresh machine: they create the virtualenv if missing.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast clean arm-toolchain aarch64-toolchain

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --editable '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/wvirt demo --out out/demo

# The Cortex-M tests need the Arm toolchain and QEMU (Debian/Ubuntu packages).
ARM_TOOLS := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

arm-toolchain:
	command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends $(ARM_TOOLS); }

# The C++ runtime's aarch64 (Jetson) builds: the cross compiler, and QEMU to run them here.
AARCH64_TOOLS := g++-aarch64-linux-gnu qemu-user

aarch64-toolchain:
	command -v aarch64-linux-gnu-g++ >/dev/null && command -v qemu-aarch64 >/dev/null || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends $(AARCH64_TOOLS); }

# Lint, then the fast tier (stops at its first failure), then the slow tests.
test: $(STAMP) arm-toolchain aarch64-toolchain
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q -x -m "not slow"
	$(VENV)/bin/python -m pytest -q -m slow --durations=15

# The edit loop: seconds-scale tests (no suite training, no QEMU, no tuning), under 2 minutes.
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) out build *.egg-info
