"""Tutorial 5: pack ImageNet-class models (millions of weights) into one pool, and scale out.

Run: python tutorials/05_pack_at_scale.py

SqueezeNet (1.2 M weights) and ShuffleNet (1.4 M) from the ONNX model zoo (shipped inside the
onnx wheel; seeded weights here, your own trained ones in practice) share one pool of pages
smaller than both. What keeps this affordable at size:
- the Fisher batches per-sample gradients (`fisher_batch`; by default as many samples as keep
  their gradients under 256 MiB);
- `match="fast"` pairs pages by NWV's greedy rule inside windows of 2,048 pages of similar
  Fisher: over a million pages a minute on 2 cores, where greedy's full scan is quadratic;
- retraining runs data-parallel when started under torchrun: `wvirt pack ... --nproc 4`, or
  across machines `torchrun --nnodes ... -m tvm_weightvirt.apps.cli pack ...` (docs/results.md,
  "Scaling out").
`python -m benchmarks.scale` measures all of it on the nine zoo graphs.
"""

import time

import numpy as np
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt.algorithms.optimize import OptimizeConfig
from tvm_weightvirt.algorithms.pipeline import PackConfig
from tvm_weightvirt.apps import examples

tasks = [examples.zoo_task("squeezenet"), examples.zoo_task("shufflenet")]
for t in tasks:
    print(f"{t.name}: {t.n_weights:,} weights")

# No dataset is needed to see the cost: unlabelled inputs are packed by distillation (the
# original models' outputs are the targets). Bring (x, y) splits for real accuracy.
rng = np.random.default_rng(0)
data = {
    t.name: wv.TaskData(*(rng.normal(size=(n, 3, 224, 224)).astype(np.float32) for n in (16, 4, 4)))
    for t in tasks
}
config = PackConfig(
    page_size=512,
    pool_pages=2000,  # SqueezeNet needs 2,414 pages of 512, ShuffleNet 2,776: shared within too
    share_within_task=True,
    match="fast",
    fisher_samples=16,
    optimize=OptimizeConfig(rounds=1, iterations=4, batch_size=4, eval_every=2),
)
start = time.perf_counter()
result = wv.pack(tasks, data, config)
plan = result.plan
print(f"packed in {time.perf_counter() - start:.1f} s\n{plan.summary()}")
# Four retraining steps on random inputs show the cost, not the accuracy: a pool at 2.6x by
# count needs real data and rounds of retraining (`OptimizeConfig()` defaults) to recover.
for name, row in result.report["tasks"].items():
    print(
        f"  {name}: top-1 agreement with the original model {row['matched']:.0f} % after "
        f"matching, {row['packed']:.0f} % after retraining"
    )

runtime = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan, mode="materialize")))
for name in ["squeezenet", "shufflenet", "squeezenet"]:
    start = time.perf_counter()
    runtime.switch(name)
    switched = time.perf_counter()
    (logits,) = runtime.run(name, data[name].test[:1])
    done = time.perf_counter()
    print(
        f"{name}: switch {1e3 * (switched - start):.2f} ms, inference "
        f"{1e3 * (done - switched):.1f} ms, top class {int(logits.argmax())}"
    )
