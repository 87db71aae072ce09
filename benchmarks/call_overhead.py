"""Where the time of one request goes: `MultitaskRuntime.run` (numpy in, numpy out) against a
direct call of the task's VM function on tensors made beforehand, and each kernel of that call
timed alone (TVM's `time_evaluator` on the arguments the VM passed it), for the 5-task suite
(batch 1, llvm, materialize mode, each task's own weights). run - VM call is what the runtime
adds per request (input checks and copies, the lock, counters, outputs to numpy); VM call -
the kernels' sum is the VM's dispatch and its intermediate allocations. The plain model
(`StandaloneModel`, the task compiled alone) is timed the same two ways, interleaved, for
virtualized / plain."""

from __future__ import annotations

import time

import numpy as np

from benchmarks._common import run


def launched_kernels(executable, function: str, args: list) -> list[tuple[str, list]]:
    """The kernels one call of `function(*args)` launches, in order, with (copies of) the
    arguments each got."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    launched: list[tuple[str, list]] = []

    def record(func, symbol, before, result, *arguments):
        if before and not symbol.startswith("vm.builtin"):
            copies = [a.numpy() if isinstance(a, tvm.runtime.Tensor) else a for a in arguments]
            launched.append((symbol, copies))
        return 0  # VMInstrumentReturnKind.NoOp

    vm = VirtualMachine(executable, tvm.cpu())
    vm.set_instrument(record)
    vm[function](*args)
    return launched


def kernel_times(
    executable, function: str, args: list, repeat: int, number: int = 100
) -> dict[str, float]:
    """Each kernel a call of `function(*args)` launches, timed alone on the arguments it got
    (median us over `repeat` runs of `number` calls; a kernel launched twice is summed)."""
    import tvm

    library = executable.mod.imports[0]
    times: dict[str, float] = {}
    for symbol, arguments in launched_kernels(executable, function, args):
        tensors = [tvm.runtime.tensor(a) if isinstance(a, np.ndarray) else a for a in arguments]
        timer = library.time_evaluator(symbol, tvm.cpu(), number=number, repeat=repeat)
        times[symbol] = times.get(symbol, 0.0) + 1e6 * float(np.median(timer(*tensors).results))
    return times


def measure(quick: bool) -> dict:
    import tvm
    from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

    import tvm_weightvirt as wv
    from tvm_weightvirt.abi import task_function
    from tvm_weightvirt.apps import suite

    tasks = suite.load_suite(suite.FIVE_TASKS)
    graphs = [t.task for t in tasks]
    plan = wv.PagePlan.lossless(graphs)
    library = wv.build(wv.lower(graphs, plan))
    runtime = MultitaskRuntime(plan, library)
    calls = 300 if quick else 3000
    numbers: dict = {"calls": calls, "tasks": {}}
    for t in tasks:
        x = t.example_input().numpy()
        x_tensor = tvm.runtime.tensor(x)
        runtime.run(t.name, x)  # switched in: the task's (transformed) weights are ready
        # the same function on the same weights that `run` calls
        function, weights = runtime.vm[task_function(t.name)], runtime._arguments
        plain = StandaloneModel(t.task)
        plain_function = plain.vm["main"]
        systems = {
            "run": lambda: runtime.run(t.name, x),
            "vm_call": lambda: function(x_tensor, *weights),
            "plain_run": lambda: plain.run(x),
            "plain_vm_call": lambda: plain_function(x_tensor, *plain.weights),
        }
        times = {k: [] for k in systems}
        for i in range(calls):  # every other round backwards: none always follows another
            for label, call in list(systems.items())[:: 1 if i % 2 else -1]:
                start = time.perf_counter()
                call()
                times[label].append(time.perf_counter() - start)
        median = {k: 1e6 * float(np.median(v)) for k, v in times.items()}
        run_us, vm_us = median["run"], median["vm_call"]
        kernels = kernel_times(
            library.executable, task_function(t.name), [x_tensor, *weights], 3 if quick else 10
        )
        numbers["tasks"][t.name] = {
            "run_us": run_us,
            "vm_call_us": vm_us,
            "overhead_us": run_us - vm_us,
            "kernels_us": kernels,
            "vm_dispatch_us": vm_us - sum(kernels.values()),
            "plain_run_us": median["plain_run"],
            "plain_vm_call_us": median["plain_vm_call"],
            "virtualized_vs_plain": {
                "run": run_us / median["plain_run"],
                "vm_call": vm_us / median["plain_vm_call"],
            },
        }
    return numbers


def format_table(numbers: dict) -> str:
    lines = [
        f"{'task':14s} {'run':>8s} {'VM call':>8s} {'kernels':>8s} {'dispatch':>9s} "
        f"{'run overhead':>13s} {'virt/plain run':>15s} {'VM call':>8s}  (medians, us)"
    ]
    for name, t in numbers["tasks"].items():
        ratio = t["virtualized_vs_plain"]
        lines.append(
            f"{name:14s} {t['run_us']:8.1f} {t['vm_call_us']:8.1f} "
            f"{sum(t['kernels_us'].values()):8.1f} {t['vm_dispatch_us']:9.1f} "
            f"{t['overhead_us']:13.1f} {ratio['run']:15.3f} {ratio['vm_call']:8.3f}"
        )
    for name, t in numbers["tasks"].items():
        slowest = sorted(t["kernels_us"].items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"{name}: " + ", ".join(f"{k} {us:.1f}" for k, us in slowest))
    return "\n".join(lines)


if __name__ == "__main__":
    run(__doc__, measure, format_table)
