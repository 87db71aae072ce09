"""Tutorial 11: deploy a pack without Python: the C++ runtime (libwvirt_runtime) and an app on it.

Run: python tutorials/11_deploy_without_python.py [OUT_DIR]

On the build machine (Python, TVM's compiler): pack the three models of tutorial 2 with some
pages exclusive (kept in the .wvpack file, read at each switch), build the library, and build
`examples/cpp` with CMake: `libwvirt_runtime.so` (the C API in `runtime/cpp/include/wvirt.h`:
`wv_open`, `wv_switch`, `wv_prefetch`, `wv_run`, `wv_close`) and `wv_serve`, an app on it that
answers requests from .npy files. On the device: the library folder, the .wvpack, the two
shared objects and TVM's runtime libraries (`libtvm_runtime.so`, `libtvm_ffi.so`); no Python.
The C++ runtime's outputs are the Python runtime's, bit for bit (checked). Last, the same pack
built for an arm64 CPU (a Jetson's: `--target aarch64`), the app cross-built for it and run
under QEMU: the x86 outputs up to float32 rounding. Then the same pack as a Cortex-M firmware
library (wvirt.h, CMake), and a firmware on it run on QEMU.
"""

import os
import shlex
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from tvm_weightvirt.runtime import MultitaskRuntime, cpp_app

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples
from tvm_weightvirt.targets import mcu
from tvm_weightvirt.targets.mcu.boards import SEMIHOSTING_QEMU_FLAGS
from tvm_weightvirt.targets.mcu.firmware_library import build_example_firmware

out_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()


def shell(*command: str) -> str:
    print("$", shlex.join(command))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


# 1. Pack and build on the build machine (no retraining here: tutorial 2 shows it); the pages
#    with the most Fisher share per byte exclusive, 4 KiB of them (level 2).
files = examples.write_user_models(out_dir)
pack, library = os.path.join(out_dir, "packed.wvpack"), os.path.join(out_dir, "library")
wvirt = [sys.executable, "-m", "tvm_weightvirt.apps.cli"]
options = "--rounds 0 --separation-rule bytes --l2-budget 4KiB".split()
shell(*wvirt, "pack", os.path.join(out_dir, "suite.toml"), *options, "-o", pack)
shell(*wvirt, "build", pack, "-o", library)

# 2. The C++ runtime and the app: `cmake -S examples/cpp -B BUILD && cmake --build BUILD`
#    (cpp_app does exactly that, against this Python's TVM wheel; on a device without Python,
#    give CMake TVM_FFI_INCLUDE_DIR, DLPACK_INCLUDE_DIR and TVM_LIBRARY_DIRS instead).
wv_serve = cpp_app.build_wv_serve()  # kept in the cache: a second call rebuilds nothing
print(f"built {wv_serve}")

# 3. Requests: one line per request, `TASK INPUT.npy...`; outputs land in --out as
#    request<k>.out<i>.npy. Each task twice, switching every time.
requests_dir = os.path.join(out_dir, "requests")
os.makedirs(os.path.join(requests_dir, "outputs"), exist_ok=True)
requests, lines = [], []
for k, name in enumerate(["sensors", "gestures", "friedman", "sensors", "gestures", "friedman"]):
    x = np.load(files[name]["data"])["x_train"][k : k + 1].astype(np.float32)
    path = os.path.join(requests_dir, f"request{k}.in0.npy")
    np.save(path, x)
    requests.append((name, [x]))
    lines.append(f"{name} {path}")
request_file, outputs = (os.path.join(requests_dir, f) for f in ("requests.txt", "outputs"))
with open(request_file, "w") as f:
    f.write("\n".join(lines) + "\n")
print(f"{request_file}: {lines[0]} ...")
print(shell(wv_serve, library, pack, request_file, "--out", outputs).strip())

# 4. The same requests through the Python runtime: every output bit-identical.
plan = wv.load_wvpack(pack, graphs=False).plan
python = MultitaskRuntime(plan, wv.Library.load(library), level2=pack)
expected = python.run_many(requests)
for k, (name, _) in enumerate(requests):
    got = np.load(os.path.join(outputs, f"request{k}.out0.npy"))
    assert np.array_equal(got, expected[k][0]), name
    print(f"{name}: C++ output {got.ravel().round(3)} == Python's, bit for bit")
exclusive = {n: t.n_exclusive_pages for n, t in plan.tasks.items()}
print(f"exclusive pages read from {os.path.basename(pack)} at each switch: {exclusive}")

# 5. A Jetson (or any arm64 Linux): `wvirt build --target aarch64` links the library with
#    aarch64-linux-gnu-g++, and the app cross-builds against TVM's aarch64 runtime libraries
#    (from the aarch64 wheels). Here QEMU runs it; on the device, copy the library folder, the
#    .wvpack, wv_serve, libwvirt_runtime.so and the two TVM libraries.
triple = "aarch64-linux-gnu"
if shutil.which(f"{triple}-g++") and shutil.which("qemu-aarch64"):
    arm_library = os.path.join(out_dir, "library-aarch64")
    shell(*wvirt, "build", pack, "--target", "aarch64", "-o", arm_library)
    arm_serve = cpp_app.build_wv_serve(triple=triple)
    arm_outputs = os.path.join(requests_dir, "outputs-aarch64")
    os.makedirs(arm_outputs)
    run = [*cpp_app.emulator(triple), arm_serve, arm_library, pack, request_file]
    print(shell(*run, "--out", arm_outputs).strip())
    for k, (name, _) in enumerate(requests):
        arm = np.load(os.path.join(arm_outputs, f"request{k}.out0.npy"))
        x86 = np.load(os.path.join(outputs, f"request{k}.out0.npy"))
        print(f"{name}: aarch64 vs x86, max |difference| {np.abs(arm - x86).max():.1e}")
        assert np.allclose(arm, x86, rtol=1e-6, atol=1e-6)
else:
    print("no aarch64 cross compiler or QEMU here: `make aarch64-toolchain` installs them")

# 6. A microcontroller: `wvirt build --target cortex-m4` writes a C project that is also a
#    static library for your firmware: `add_subdirectory(PROJECT)`, link `wvirt`, include
#    wvirt.h (WV_TASK_<NAME>, each task's input and output bytes, wv_switch, wv_run).
#    examples/firmware is such a firmware, built with the project's toolchain.cmake; QEMU runs it.
project = os.path.join(out_dir, "firmware-project")
shell(*wvirt, "build", pack, "--target", "cortex-m4", "-o", project)
header = open(os.path.join(project, "wvirt.h")).read().splitlines()
print("\n".join(line for line in header if "WV_TASK_" in line or "_BYTES " in line))
if not mcu.missing_tools():
    firmware = build_example_firmware(project, os.path.join(out_dir, "firmware"))
    qemu = ["qemu-system-arm", "-M", "mps2-an386", *SEMIHOSTING_QEMU_FLAGS.split()]
    printed = shell(*qemu, "-kernel", firmware)
    print(printed.strip())
    # its input pattern through the Python runtime: the same outputs, up to float32 rounding
    for line in printed.splitlines()[:-1]:
        _, name, _, _, *words = line.split()
        (shape, _), *_ = python.library.tasks[name].inputs
        x = (0.25 * (np.arange(np.prod(shape)) % 7) - 0.75).astype(np.float32).reshape(shape)
        on_mcu = np.array([int(w, 16) for w in words], np.uint32).view(np.float32)
        assert np.allclose(on_mcu, python.run(name, x)[0].ravel(), rtol=1e-5, atol=1e-6), name
    print("the firmware's outputs == the Python runtime's on its inputs (within 1e-5)")
else:
    print("no Arm toolchain or QEMU here: `make arm-toolchain` installs them")
