"""The names the compiler, tuning and the runtimes agree on: a lowered module's functions, its
gather kernels and their arguments. Every other module uses these, never string literals.

A module from `wv.lower` holds, for a plan with tasks T:

- `task_<t>` per task t, a Relax function, attribute `num_input` = its input count, then
  - materialize mode: `(inputs..., transformed weights...)`, what `wv_transform_task_<t>`
    returns;
  - fused mode: `(inputs..., pool [S, P] float32, page_table [n] uint16)` (int32 where a
    plan has more than 65,536 page ids: `PagePlan.page_table_dtype`);
- materialize mode only, the PrimFuncs a switch calls (`weight_pages` [n, P] float32 is the
  last argument, the output, and the name of the block that writes it):
  - `wv_gather_pages(pool, page_table, weight_pages)` (float32 pages);
  - `wv_gather_coded_pages(codes, bases, page_table, weight_pages)` (SmartDeal pages: codes
    [S, row_words] uint32, bases [S, 3, 3] float16);
  - `wv_gather_pages_exclusive(pool, exclusive, page_table, weight_pages)` (exclusive pages);
- materialize mode only, `wv_transform_task_<t>(weights)` per task that has weight-only ops
  (LiftWeightTransforms): the task's weight-only ops (transposes of dense weights, reshapes of
  biases, ...) that a switch runs once after the gather; it takes the weights, in the layout's
  order, as one tuple and returns the task function's arguments after its inputs (a task
  without, e.g. one in kernel layout, takes its weights as they are);
- the module attribute `wv.mode` = "materialize" or "fused".
"""

from __future__ import annotations

MODES = ("materialize", "fused")
MODE_ATTR = "wv.mode"
# a module lowered for SmartDeal pages: its gather's code format, "<width>,<min_exponent>"
CODE_FORMAT_ATTR = "wv.code_format"

TASK_PREFIX = "task_"

GATHER_FUNC = "wv_gather_pages"
CODED_GATHER_FUNC = "wv_gather_coded_pages"
EXCLUSIVE_GATHER_FUNC = "wv_gather_pages_exclusive"
CODED_EXCLUSIVE_GATHER_FUNC = "wv_gather_coded_pages_exclusive"
GATHER_FUNCS = (GATHER_FUNC, CODED_GATHER_FUNC, EXCLUSIVE_GATHER_FUNC, CODED_EXCLUSIVE_GATHER_FUNC)
GATHER_OUTPUT = "weight_pages"  # a gather's output buffer and the block that writes it

WEIGHT_TRANSFORM_PREFIX = "wv_transform_"


def task_function(task: str) -> str:
    """The name of task `task`'s Relax function."""
    return TASK_PREFIX + task


def task_of(function: str) -> str | None:
    """The task whose function this is, or None for any other function."""
    return function[len(TASK_PREFIX) :] if function.startswith(TASK_PREFIX) else None


def weight_transform_function(function: str) -> str:
    """The name of the function that computes `function`'s weight-only ops (see the top)."""
    return WEIGHT_TRANSFORM_PREFIX + function
