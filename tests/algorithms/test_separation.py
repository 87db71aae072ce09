"""Weight separation: WS's exclusive-page rule, byte budgets, exclusive pages in their own
tensors, loaded from level-2 storage (and prefetched) by the runtime."""

import os
import re
import shutil

import numpy as np
import pytest
import torch
from packed_accuracy import assert_runtime_reproduces_the_report
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt.algorithms.optimize import OptimizeConfig, sharing_loss_terms
from tvm_weightvirt.algorithms.pipeline import PackConfig
from tvm_weightvirt.algorithms.separation import (
    NOTHING_LOST,
    WORST_DOES_NOT_FIT,
    SeparationConfig,
    level1_bytes,
    next_whole_task,
    parse_bytes,
    refined_task_weights,
    select_exclusive,
    select_exclusive_by_bytes,
    select_exclusive_evenly,
    select_keeping_whole,
    shared_pages_for_budget,
    tpr_for_target_accuracy,
)
from tvm_weightvirt.apps import suite
from tvm_weightvirt.frontend.packing import pack

TASKS = ["wine", "iris", "breast_cancer"]


def test_parse_bytes():
    assert parse_bytes("256KiB") == 262_144
    assert parse_bytes("4MiB") == 4 * 1024**2
    assert parse_bytes("1.5MB") == 1_500_000
    assert parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="cannot read '12 parsecs' as bytes"):
        parse_bytes("12 parsecs")


def _pages(cd):
    """A page-Fisher matrix whose pages have contribution densities `cd` (P = 2)."""
    return np.array([[c / 2, c / 2] for c in cd])


def test_exclusive_selection_follows_ws_rule():
    fisher = _pages([0.15, 0.5, 0.05, 0.3])  # by CD: pages 1, 3, 0, 2
    # tpr 1.0, margin 0.1: take while 1.0 - covered >= 0.1: 1 (0.5), 3 (0.8), 0 (0.95), stop
    np.testing.assert_array_equal(select_exclusive(fisher), [0, 1, 3])
    np.testing.assert_array_equal(select_exclusive(fisher, tpr=0.7), [1, 3])  # 0.7, 0.2, stop
    # forced: with room for 1 shared page, the next-highest pages become exclusive too
    np.testing.assert_array_equal(select_exclusive(fisher, tpr=0.3, max_shared=1), [0, 1, 3])
    np.testing.assert_array_equal(select_exclusive(fisher, max_shared=0), [0, 1, 2, 3])


def test_byte_rule_spends_the_budget_on_the_most_fisher_share_per_byte():
    """Across tasks by CD (each task's mass normalised): a's 0.5, b's 0.45, a's 0.3 (a tie
    with b's 0.3 goes to the earlier task), ...; a page without Fisher mass is never bought; a
    task over the pool keeps its top pages first."""
    a, b = _pages([0.15, 0.5, 0.05, 0.3, 0.0]), _pages([0.3, 0.1, 0.45, 0.15])
    chosen = select_exclusive_by_bytes([a, b], page_bytes=8, budget_bytes=24)
    assert [c.tolist() for c in chosen] == [[1, 3], [2]]
    chosen = select_exclusive_by_bytes([a, b], page_bytes=8, budget_bytes=1000)
    assert [c.tolist() for c in chosen] == [[0, 1, 2, 3], [0, 1, 2, 3]]  # a's page 4: CD 0
    # room for 3 shared pages: a must keep 2 exclusive (its top 2), b 1; 1 page more to buy
    chosen = select_exclusive_by_bytes([a, b], page_bytes=8, budget_bytes=32, max_shared=3)
    assert [c.tolist() for c in chosen] == [[1, 3], [0, 2]]
    with pytest.raises(ValueError, match=r"\(3, 2 of them 'a'\) need 24 B .* budget of 16 B"):
        select_exclusive_by_bytes([a, b], 8, 16, max_shared=3, names=["a", "b"])


def test_byte_rule_never_passes_its_budget_and_more_bytes_keep_no_fewer_pages():
    rng = np.random.default_rng(0)
    fishers = [rng.exponential(size=(n, 4)) ** 3 for n in (7, 30, 12)]
    previous = None
    for budget in range(0, 49 * 16 + 1, 16):  # pages of 16 B: 0 .. 49 pages
        chosen = select_exclusive_by_bytes(fishers, page_bytes=16, budget_bytes=budget + 5)
        assert 16 * sum(len(c) for c in chosen) <= budget + 5
        assert 16 * sum(len(c) for c in chosen) == min(budget, 49 * 16)  # the budget is spent
        if previous is not None:
            for now, before in zip(chosen, previous):
                assert set(before) <= set(now)
        previous = chosen


def test_even_rule_gives_the_least_covered_task_the_next_page():
    """a's 0.5 (a tie at 0 goes to the earlier task), then b's 0.45 and 0.3 (b is below a
    until 0.75), then a's 0.3: where the byte rule buys a's 0.5 and 0.3 and b's 0.45 only."""
    a, b = _pages([0.15, 0.5, 0.05, 0.3, 0.0]), _pages([0.3, 0.1, 0.45, 0.15])
    chosen = select_exclusive_evenly([a, b], page_bytes=8, budget_bytes=24)
    assert [c.tolist() for c in chosen] == [[1], [0, 2]]
    chosen = select_exclusive_evenly([a, b], page_bytes=8, budget_bytes=32)
    assert [c.tolist() for c in chosen] == [[1, 3], [0, 2]]
    chosen = select_exclusive_evenly([a, b], page_bytes=8, budget_bytes=1000)
    assert [c.tolist() for c in chosen] == [[0, 1, 2, 3], [0, 1, 2, 3]]  # a's page 4: CD 0
    # room for 3 shared pages: a keeps its top 2 exclusive first, b its top 1 (as the byte rule)
    chosen = select_exclusive_evenly([a, b], page_bytes=8, budget_bytes=24, max_shared=3)
    assert [c.tolist() for c in chosen] == [[1, 3], [2]]
    with pytest.raises(ValueError, match=r"\(3, 2 of them 'a'\) need 24 B .* budget of 16 B"):
        select_exclusive_evenly([a, b], 8, 16, max_shared=3, names=["a", "b"])


def test_even_rule_never_passes_its_budget_and_its_least_covered_task_beats_the_byte_rules():
    """Within the budget, spent whole; a larger budget keeps every page a smaller one kept;
    and the least covered task covers at least as much as under the byte rule (water-filling
    over concave coverage curves maximises the minimum)."""
    rng = np.random.default_rng(0)
    fishers = [rng.exponential(size=(n, 4)) ** 3 for n in (7, 30, 12)]
    fishers[1] = np.ones((30, 4))  # one task's mass spread evenly: the byte rule starves it

    def least_covered(chosen):
        return min(f[c].sum() / f.sum() for f, c in zip(fishers, chosen))

    previous = None
    for budget in range(0, 49 * 16 + 1, 16):  # pages of 16 B: 0 .. 49 pages
        chosen = select_exclusive_evenly(fishers, page_bytes=16, budget_bytes=budget + 5)
        assert 16 * sum(len(c) for c in chosen) == min(budget, 49 * 16)
        by_bytes = select_exclusive_by_bytes(fishers, page_bytes=16, budget_bytes=budget + 5)
        assert least_covered(chosen) >= least_covered(by_bytes) - 1e-12
        if previous is not None:
            for now, before in zip(chosen, previous):
                assert set(before) <= set(now)
        previous = chosen
    at_20 = select_exclusive_evenly(fishers, 16, 20 * 16)
    assert least_covered(at_20) > least_covered(select_exclusive_by_bytes(fishers, 16, 20 * 16))


def _assert_a_larger_weight_keeps_no_fewer_pages(select):
    """Raising one task's weight never takes a page from it, and the budget is spent the same."""
    rng = np.random.default_rng(1)
    fishers = [rng.exponential(size=(n, 4)) ** 3 for n in (7, 30, 12)]
    previous = None
    for weight in (0.5, 1.0, 2.0, 8.0, 100.0):
        chosen = select(fishers, 16, 20 * 16, task_weights=[1.0, 1.0, weight])
        assert sum(len(c) for c in chosen) == 20
        if previous is not None:
            assert set(previous[2]) <= set(chosen[2])
        previous = chosen


def test_task_weights_move_the_byte_budget_and_a_larger_weight_keeps_no_fewer_pages():
    """Task weights scale a task's Fisher share: b at weight 2 outbids a's 0.5 with its
    0.3 (0.6) and its 0.45 (0.9); raising one task's weight never takes a page from it, and the
    budget is spent the same."""
    a, b = _pages([0.15, 0.5, 0.05, 0.3, 0.0]), _pages([0.3, 0.1, 0.45, 0.15])
    assert select_exclusive_by_bytes([a, b], 8, 24, task_weights=[1.0, 1.0])[0].tolist() == [1, 3]
    chosen = select_exclusive_by_bytes([a, b], page_bytes=8, budget_bytes=24, task_weights=[1, 2])
    assert [c.tolist() for c in chosen] == [[1], [0, 2]]
    _assert_a_larger_weight_keeps_no_fewer_pages(select_exclusive_by_bytes)


def test_task_weights_move_the_even_budget_and_a_larger_weight_keeps_no_fewer_pages():
    """The even rule with weights: the next page goes to the largest weighted uncovered share.
    b at weight 2 takes its 0.45 (2 x 1.0 over a's 1.0), its 0.3 (2 x 0.55 over a's 1.0), and
    a its 0.5 third (1.0 over 2 x 0.25); weights of 1 are the unweighted rule; raising one
    task's weight never takes a page from it, and the budget is spent the same."""
    a, b = _pages([0.15, 0.5, 0.05, 0.3, 0.0]), _pages([0.3, 0.1, 0.45, 0.15])
    for weights in (None, [1.0, 1.0]):
        chosen = select_exclusive_evenly([a, b], 8, 24, task_weights=weights)
        assert [c.tolist() for c in chosen] == [[1], [0, 2]]
    chosen = select_exclusive_evenly([a, b], 8, 16, task_weights=[1.0, 2.0])
    assert [c.tolist() for c in chosen] == [[], [0, 2]]
    chosen = select_exclusive_evenly([a, b], 8, 24, task_weights=[1.0, 2.0])
    assert [c.tolist() for c in chosen] == [[1], [0, 2]]
    _assert_a_larger_weight_keeps_no_fewer_pages(select_exclusive_evenly)


def test_whole_tasks_keep_every_page_and_the_rule_spends_what_they_leave():
    a, b, c = _pages([0.6, 0.3, 0.1]), _pages([0.5, 0.5]), _pages([0.7, 0.2, 0.1, 0.0])
    # b whole: its 2 pages take 16 B of 40; the even rule spends 24 B on a and c: a's 0.6
    # (a tie of uncovered shares goes to the earlier task), c's 0.7, then a (0.4 > 0.3)
    chosen = select_keeping_whole(select_exclusive_evenly, [1], [a, b, c], 8, 40)
    assert [x.tolist() for x in chosen] == [[0, 1], [0, 1], [0]]
    for rule in (select_exclusive_by_bytes, select_exclusive_evenly):
        rest = rule([a, c], 8, 24, task_weights=[2.0, 1.0])
        chosen = select_keeping_whole(rule, [1], [a, b, c], 8, 40, None, None, [2.0, 3.0, 1.0])
        assert [x.tolist() for x in chosen] == [rest[0].tolist(), [0, 1], rest[1].tolist()]
    # a whole task keeps its pages without Fisher mass too
    chosen = select_keeping_whole(select_exclusive_by_bytes, [0, 2], [a, b, c], 8, 56)
    assert [x.tolist() for x in chosen] == [[0, 1, 2], [], [0, 1, 2, 3]]


def test_whole_task_refinement_takes_the_task_that_lost_most_while_it_fits():
    n_pages, some = [4, 10, 6], [1, 2, 3]  # tasks with some pages exclusive
    assert next_whole_task([1.0, 3.0, 2.0], [], n_pages, some, 8, 200) == 1
    with_1 = [1, 10, 3]  # task 1 whole
    assert next_whole_task([1.0, 3.0, 2.0], [1], n_pages, with_1, 8, 200) == 2  # 16 pages
    assert next_whole_task([2.0, 1.0, 2.0], [], n_pages, some, 8, 200) == 0  # a tie: the earlier
    assert next_whole_task([0.0, 3.0, 0.0], [1], n_pages, with_1, 8, 200) == NOTHING_LOST
    # a task with every page exclusive without being kept whole is not taken: the same plan
    assert next_whole_task([1.0, 3.0, 2.0], [], n_pages, [1, 10, 3], 8, 200) == 2
    assert next_whole_task([0.0, 3.0, 0.0], [], n_pages, [1, 10, 3], 8, 200) == NOTHING_LOST
    assert next_whole_task([1.0, 3.0, 2.0], [], n_pages, some, 8, 79) == WORST_DOES_NOT_FIT  # 80 B
    # the others' pages beyond a pool of 3 must be exclusive too: 10 + 1 + 3 pages, 112 B
    assert next_whole_task([1.0, 3.0, 2.0], [], n_pages, some, 8, 112, max_shared=3) == 1
    too_few = next_whole_task([1.0, 3.0, 2.0], [], n_pages, some, 8, 111, max_shared=3)
    assert too_few == WORST_DOES_NOT_FIT


def test_refined_weights_grow_with_the_loss():
    assert refined_task_weights([1.0, 2.0, 1.0], [0.0, 1.5, 4.0]) == [1.0, 5.0, 5.0]
    assert refined_task_weights([3.0], [-2.0]) == [3.0]  # a gain counts as no loss


def test_pool_for_a_budget_sits_beside_uint16_tables_until_the_ids_need_int32():
    """Two tasks of 500 pages, pages of 400 B: tables of 2 B an entry while the pool plus the
    largest task (all of whose pages may be exclusive) stays within 65,536 page ids."""
    assert shared_pages_for_budget(402_000, 400, [500, 500]) == 1000  # (402,000 - 2,000) / 400
    last_uint16 = 2_000 + 400 * 65_036  # 65,036 pool pages + 500 = 65,536 ids
    assert shared_pages_for_budget(last_uint16, 400, [500, 500]) == 65_036
    # one page more passes the ids: int32 tables, whose 2,000 B more the budget must hold too
    first_int32 = 4_000 + 400 * 65_037
    assert shared_pages_for_budget(first_int32 - 1, 400, [500, 500]) == 65_036
    assert shared_pages_for_budget(first_int32, 400, [500, 500]) == 65_037
    for budget in (402_000, last_uint16, first_int32 - 1, first_int32, 10**8):
        most = shared_pages_for_budget(budget, 400, [500, 500])  # the most that fit
        assert level1_bytes(most, 400, [500, 500]) <= budget
        assert level1_bytes(most + 1, 400, [500, 500]) > budget


def test_byte_rule_needs_a_level2_budget():
    with pytest.raises(ValueError, match="'bytes' separation rule spends a level-2 budget"):
        SeparationConfig(rule="bytes")
    with pytest.raises(ValueError, match="'bytes_even' separation rule spends a level-2 budget"):
        SeparationConfig(rule="bytes_even")
    assert SeparationConfig(l2_budget_bytes=1, rule="bytes_even", refine_rounds=1).refine_rounds
    with pytest.raises(ValueError, match="rule must be one of"):
        SeparationConfig(rule="fisher")
    with pytest.raises(ValueError, match="refine_rounds re-spends .* nothing with rule 'tpr'"):
        SeparationConfig(refine_rounds=1)
    with pytest.raises(ValueError, match="refine_rounds must be >= 0, got -1"):
        SeparationConfig(l2_budget_bytes=1, rule="bytes", refine_rounds=-1)
    with pytest.raises(ValueError, match="refine_by must be one of .*, got 'pages'"):
        SeparationConfig(l2_budget_bytes=1, rule="bytes", refine_rounds=1, refine_by="pages")


def test_target_accuracy_rule():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])
    labels = np.array([0, 0, 1, 1])
    normalised_at_label = [
        0.9 / np.hypot(0.9, 0.1),
        0.4 / np.hypot(0.4, 0.6),
        0.3 / np.hypot(0.7, 0.3),
        0.8 / np.hypot(0.2, 0.8),
    ]
    low = np.array(normalised_at_label) <= 0.5  # samples 1 and 2
    loss = np.mean(-np.log([0.4, 0.3]))
    acc_alpha = 1 - low.mean()
    target = loss * (acc_alpha + 1 - 0.9)
    expected = 1 - (target - loss) / loss
    assert tpr_for_target_accuracy(probs, labels, 0.9) == pytest.approx(expected)


@pytest.fixture(scope="module")
def separated(tmp_path_factory):
    tasks = suite.load_suite(TASKS)
    config = PackConfig(
        separation=SeparationConfig(l1_budget_bytes=parse_bytes("64KiB")),
        optimize=OptimizeConfig(rounds=1, iterations=50, lam=0.1),
    )
    result = pack(*suite.packable(tasks), config)
    graphs = [t.task for t in tasks]
    path = str(tmp_path_factory.mktemp("sep") / "suite.wvpack")
    wv.save_wvpack(path, result.plan, graphs, result.report)
    return tasks, result, path


@pytest.mark.slow
def test_budget_sets_the_pool_and_exclusives_are_their_own(separated):
    tasks, result, path = separated
    plan = result.plan
    n_table_entries = 268 + 257 + 208
    # 64 KiB - uint16 tables, in pages of 100 float32
    assert plan.n_pool_pages == (65_536 - 2 * n_table_entries) // 400 == 160
    assert result.report["l1_bytes"] == plan.pool_bytes + 2 * n_table_entries <= 65_536
    for t in tasks:
        task_pages = plan.task(t.name)
        exclusive_ids = np.flatnonzero(task_pages.page_table >= plan.n_pool_pages)
        shared_ids = np.flatnonzero(task_pages.page_table < plan.n_pool_pages)
        assert len(exclusive_ids) == task_pages.n_exclusive_pages > 0
        assert len(shared_ids) <= plan.n_pool_pages  # what is left fits the pool
        # exclusive pages are bit-identical to the task's weights read through its table
        flat = task_pages.layout.flatten(plan.read(t.name)).reshape(-1, 100)
        np.testing.assert_array_equal(
            flat[exclusive_ids],
            task_pages.exclusive_pages[task_pages.page_table[exclusive_ids] - plan.n_pool_pages],
        )
    assert result.report["l2_bytes"] == plan.exclusive_bytes
    # the pack keeps exclusive pages in their own tensors
    loaded = wv.load_wvpack(path).plan
    for t in tasks:
        np.testing.assert_array_equal(
            loaded.task(t.name).exclusive_pages, plan.task(t.name).exclusive_pages
        )


@pytest.mark.slow
def test_overlap_loss_covers_shared_positions_only(separated):
    tasks, result, _ = separated
    memory, tables = result.plan.stacked_pages(TASKS)
    from tvm_weightvirt.algorithms.optimize import PoolTask

    pool_tasks = [
        PoolTask(
            n,
            None,
            result.plan.task(n).layout,
            tables[i],
            np.ones((len(tables[i]), 100)),
            np.zeros((len(tables[i]), 100)),
            None,
            None,
            None,
        )
        for i, n in enumerate(TASKS)
    ]
    for t in range(len(TASKS)):
        a, *_ = sharing_loss_terms(pool_tasks, t, memory.shape)
        own_exclusive = tables[t][tables[t] >= result.plan.n_pool_pages]
        assert float(a[own_exclusive].abs().sum()) == 0.0  # no other task weighs on them


def _reference(task, plan, x):
    with torch.no_grad():
        return task.model_from_plan(plan)(torch.from_numpy(x)).numpy()


@pytest.mark.slow
def test_outputs_with_exclusive_pages_from_level2_equal_torch(separated):
    tasks, result, path = separated
    pack = wv.load_wvpack(path)
    runtime = MultitaskRuntime(pack.plan, wv.build(wv.lower(pack.tasks, pack.plan)), level2=path)
    for t in tasks + tasks[::-1]:
        x = t.splits["test"].x[:1]
        np.testing.assert_allclose(
            runtime.run(t.name, x)[0], _reference(t, pack.plan, x), atol=1e-5
        )
    # each switch (wine, iris, breast_cancer, iris, wine) read the task's exclusive pages
    switched = ["wine", "iris", "breast_cancer", "iris", "wine"]
    assert runtime.counters.switches == 5
    assert runtime.counters.bytes_read_l2 == sum(
        pack.plan.task(n).exclusive_pages.nbytes for n in switched
    )


@pytest.mark.slow
def test_prefetch_never_serves_stale_pages(separated):
    tasks, result, path = separated
    pack = wv.load_wvpack(path)
    runtime = MultitaskRuntime(pack.plan, wv.build(wv.lower(pack.tasks, pack.plan)), level2=path)
    by_name = {t.name: t for t in tasks}
    x = {n: by_name[n].splits["test"].x[:1] for n in TASKS}
    expected = {n: _reference(by_name[n], pack.plan, x[n]) for n in TASKS}
    runtime.prefetch("iris")
    np.testing.assert_allclose(runtime.run("wine", x["wine"])[0], expected["wine"], atol=1e-5)
    np.testing.assert_allclose(runtime.run("iris", x["iris"])[0], expected["iris"], atol=1e-5)
    np.testing.assert_allclose(runtime.run("wine", x["wine"])[0], expected["wine"], atol=1e-5)
    assert runtime.counters.prefetch_hits == 1
    sequence = ["wine", "iris", "wine", "breast_cancer", "iris", "wine"] * 3
    outputs = runtime.run_many([(n, (x[n],)) for n in sequence])
    for name, out in zip(sequence, outputs):
        np.testing.assert_allclose(out[0], expected[name], atol=1e-5)
    # wine was current; 5 switches per repeat (w-i-w-b-i-w, none between repeats): every one
    # of them found its pages prefetched while the previous task ran
    assert runtime.counters.prefetch_hits == 1 + 15


@pytest.mark.slow
def test_level2_file_missing_or_truncated_at_run_time(separated, tmp_path):
    tasks, result, path = separated
    copy = str(tmp_path / "l2.wvpack")
    shutil.copy(path, copy)
    pack = wv.load_wvpack(copy)
    runtime = MultitaskRuntime(pack.plan, wv.build(wv.lower(pack.tasks, pack.plan)), level2=copy)
    ranges = {name: r for name, (r,) in runtime.store.ranges.items()}  # one float32 range each
    last = max(ranges, key=lambda n: ranges[n][1])
    other = next(n for n in TASKS if n != last and ranges[n][1] <= ranges[last][0])
    x = {t.name: t.splits["test"].x[:1] for t in tasks}
    os.truncate(copy, ranges[last][0] + 10)
    with pytest.raises(ValueError, match=f"task '{last}': level-2 file '.*l2.wvpack' is truncated"):
        runtime.run(last, x[last])
    out = runtime.run(other, x[other])[0]  # still serving the others
    np.testing.assert_allclose(
        out, _reference(next(t for t in tasks if t.name == other), pack.plan, x[other]), atol=1e-5
    )
    os.remove(copy)
    with pytest.raises(
        ValueError, match=f"task '{last}': cannot read its exclusive pages from level-2 file"
    ):
        runtime.run(last, x[last])


def test_budget_errors_that_need_only_layouts_come_before_fisher(monkeypatch):
    """Untrained nets (nothing trains): an impossible level-1 budget or pool is refused from
    the layouts alone, before any Fisher is computed."""
    from tvm_weightvirt.algorithms import pipeline

    def no_fisher(*args, **kwargs):
        raise AssertionError("Fisher computed before a check that needs only layouts")

    monkeypatch.setattr(pipeline, "fisher_nwv", no_fisher)
    monkeypatch.setattr(pipeline, "fisher_ws", no_fisher)
    tasks = [
        suite.SuiteTask(n, suite.SPECS[n].make_model().eval(), suite.load_splits(n)) for n in TASKS
    ]
    with pytest.raises(
        ValueError,
        match=r"level-1 budget of 1024 B cannot hold the page tables \(1466 B\) and one pool page \(400 B\): the minimum is 1866 B",
    ):  # 1,466 B = 2 B x (268 + 257 + 208) uint16 table entries
        pack(*suite.packable(tasks), PackConfig(separation=SeparationConfig(l1_budget_bytes=1024)))
    with pytest.raises(
        ValueError,
        match=r"a pool of 200 pages cannot hold task 'wine' \(268 pages to share\): the minimum is 268",
    ):
        pack(*suite.packable(tasks), PackConfig(pool_pages=200))
    # 64 KiB leaves 160 pool pages: 108 + 97 + 48 pages must be exclusive, 400 B each
    by_bytes = SeparationConfig(l1_budget_bytes=64 * 1024, l2_budget_bytes=1000, rule="bytes")
    with pytest.raises(
        ValueError,
        match=r"\(253, 108 of them 'wine'\) need 101200 B of level-2 storage, over its budget of 1000 B",
    ):
        pack(*suite.packable(tasks), PackConfig(separation=by_bytes))


@pytest.mark.slow
def test_suggested_budgets_fed_back_pack_and_the_pool_is_the_smallest_that_does():
    """64 KiB leaves 160 pool pages, which forces 108 + 97 + 48 pages of the three tasks
    exclusive: over 100,000 B of level 2 on any machine. Which pool suffices depends on the
    Fisher of the trained nets, so the test checks the suggestion, not a figure."""
    tasks = suite.load_suite(TASKS)

    def pack_with(l1: int, l2: int):
        separation = SeparationConfig(l1_budget_bytes=l1, l2_budget_bytes=l2)
        config = PackConfig(separation=separation, optimize=OptimizeConfig(rounds=0))
        return pack(*suite.packable(tasks), config).plan

    with pytest.raises(ValueError) as err:
        pack_with(parse_bytes("64KiB"), 100_000)
    found = re.fullmatch(
        r"the exclusive pages need (\d+) B of level-2 storage, over its budget of 100000 B: a "
        r"level-1 budget of (\d+) B \((\d+) pool pages\) or a level-2 budget of (\d+) B would work",
        str(err.value),
    )
    assert found, str(err.value)
    needed, l1, n_pool, l2 = map(int, found.groups())
    assert l2 == needed >= 400 * (108 + 97 + 48) and needed % 400 == 0
    assert l1 == 2 * (268 + 257 + 208) + 400 * n_pool  # uint16 tables + pool pages
    plan = pack_with(l1, 100_000)
    assert plan.n_pool_pages == n_pool and plan.exclusive_bytes <= 100_000
    with pytest.raises(ValueError, match="over its budget of 100000 B"):
        pack_with(l1 - 400, 100_000)  # one pool page fewer does not fit
    assert pack_with(parse_bytes("64KiB"), l2).exclusive_bytes == needed
    # at least one page per task is exclusive at tpr 1.0 (WS's rule), so 1,000 B never fits
    with pytest.raises(
        ValueError,
        match="over its budget of 1000 B, at any pool size: lower tpr or raise the budget",
    ):
        pack_with(parse_bytes("64KiB"), 1000)


@pytest.mark.slow
def test_wvirt_pack_separate_then_run(tmp_path, capsys):
    from tvm_weightvirt.apps.cli import main

    pack = tmp_path / "sep.wvpack"
    command = ["pack", "--suite", "wine,iris", "--l1-budget", "48KiB", "--rounds", "0"]
    assert main([*command, "-o", str(pack)]) == 0
    plan = wv.load_wvpack(pack).plan
    assert plan.n_pool_pages == (48 * 1024 - 2 * (268 + 257)) // 400 and plan.exclusive_bytes > 0
    assert main(["run", str(pack), "--tasks", "wine,iris,wine"]) == 0
    printed = capsys.readouterr().out
    read = sum(plan.task(n).exclusive_pages.nbytes for n in ["wine", "iris", "wine"])
    assert f"{read} B read from level 2" in printed
    # SmartDeal pages: the pool sized and level 2 spent in coded bytes, read back coded
    smartdeal = ["--smartdeal", "--page-size", "96", "--share-within-task"]
    by_bytes = ["--separation-rule", "bytes", "--l2-budget", "20000", "--refine-rounds", "1"]
    assert main([*command, *smartdeal, *by_bytes, "-o", str(pack)]) == 0
    printed = capsys.readouterr().out
    assert "refinement, pack 1" in printed and printed.count("(kept)") == 1
    plan = wv.load_wvpack(pack).plan
    widest = 4 * 20 + 18  # 6-bit codes, 5 to a 32-bit word, a float16 3x3 basis: 98 B a page
    assert plan.n_pool_pages == (48 * 1024 - 2 * (279 + 267)) // widest  # uint16 tables
    page_bytes = plan.coded.format.page_bytes(96)
    assert plan.exclusive_bytes == (20000 // widest) * page_bytes
    assert main(["run", str(pack), "--tasks", "wine,iris,wine"]) == 0
    read = sum(plan.task(n).n_exclusive_pages * page_bytes for n in ["wine", "iris", "wine"])
    assert f"{read} B read from level 2" in capsys.readouterr().out


@pytest.mark.slow
def test_target_accuracy_sets_each_tasks_tpr():
    """A lower target accuracy protects fewer pages (WS's rule, per task)."""
    tasks = suite.load_suite(["wine", "iris"])
    counts = {}
    for target in [0.99, 0.5]:
        config = PackConfig(
            separation=SeparationConfig(target_accuracy=target), optimize=OptimizeConfig(rounds=0)
        )
        plan = pack(*suite.packable(tasks), config).plan
        counts[target] = sum(t.n_exclusive_pages for t in plan.tasks.values())
    assert counts[0.5] < counts[0.99]


@pytest.mark.slow
def test_byte_rule_packs_within_its_level2_budget():
    """`rule="bytes"`: the exclusive pages of all tasks fit the level-2 budget, which is spent
    to within a page; a larger budget keeps every page the smaller one kept."""
    tasks = suite.load_suite(TASKS)
    exclusive = {}
    for l2 in (20_000, 60_000):
        separation = SeparationConfig(
            l1_budget_bytes=parse_bytes("96KiB"), l2_budget_bytes=l2, rule="bytes"
        )
        config = PackConfig(separation=separation, optimize=OptimizeConfig(rounds=0))
        plan = pack(*suite.packable(tasks), config).plan
        assert l2 - 400 < plan.exclusive_bytes <= l2
        exclusive[l2] = {
            n: set(np.flatnonzero(t.page_table >= plan.n_pool_pages)) for n, t in plan.tasks.items()
        }
    for name in exclusive[20_000]:
        assert exclusive[20_000][name] <= exclusive[60_000][name]


@pytest.mark.slow
def test_refinement_keeps_the_pack_whose_worst_task_lost_least():
    """`refine_rounds`: each pack after the first weights a task's Fisher share by (1 + its
    loss on the training split in pp) so far, spends the same level-2 budget, and the result
    is the pack whose worst (then mean) loss is lowest: its plan, its report."""
    tasks = suite.load_suite(TASKS)
    l2 = 20_000
    separation = SeparationConfig(
        l1_budget_bytes=parse_bytes("96KiB"), l2_budget_bytes=l2, rule="bytes", refine_rounds=2
    )
    config = PackConfig(separation=separation, optimize=OptimizeConfig(rounds=1, iterations=50))
    result = pack(*suite.packable(tasks), config)
    packs = result.report["refinement"]
    assert [p["pack"] for p in packs] == [0, 1, 2]
    assert packs[0]["task_weights"] == dict.fromkeys(TASKS, 1.0)
    for before, after in zip(packs, packs[1:]):
        weights = refined_task_weights(
            [before["task_weights"][n] for n in TASKS], [before["loss_pp"][n] for n in TASKS]
        )
        assert [after["task_weights"][n] for n in TASKS] == weights
    for p in packs:  # each pack spends the budget (to within a page), never over it
        assert l2 - 400 < 400 * sum(p["exclusive_pages"].values()) <= l2

    def score(p):
        losses = list(p["loss_pp"].values())
        return -max(losses), -np.mean(losses)

    (kept,) = [p for p in packs if p["kept"]]
    assert score(kept) == max(score(p) for p in packs)
    assert {n: t.n_exclusive_pages for n, t in result.plan.tasks.items()} == kept["exclusive_pages"]
    for task in tasks:  # the report's accuracies are the kept plan's
        packed = task.accuracy("test", task.model_from_plan(result.plan))
        assert result.report["tasks"][task.name]["packed"] == pytest.approx(packed)


@pytest.mark.slow
def test_whole_task_refinement_keeps_every_page_of_the_task_that_lost_most():
    """`refine_by="whole_task"`: after a pack, the task furthest from its separate model keeps
    every page exclusive in the next one (not retrained, its outputs are then its separate
    model's), the other task spends what is left of the level-2 budget; the refinement stops
    when the next task to keep whole does not fit beside it."""
    tasks = suite.load_suite(["wine", "iris"])  # 268 and 257 pages of 400 B
    l2 = 110_000  # either task whole (107,200 or 102,800 B), not both
    separation = SeparationConfig(
        l1_budget_bytes=24_000,
        l2_budget_bytes=l2,
        rule="bytes_even",
        refine_rounds=2,
        refine_by="whole_task",
    )
    optimize = OptimizeConfig(rounds=0, distill_temperature=2.0)  # matched pages, far off
    config = PackConfig(share_within_task=True, separation=separation, optimize=optimize)
    result = pack(*suite.packable(tasks), config)
    first, second = result.report["refinement"]  # a third pack would need 210,000 B
    assert second["stopped"] == WORST_DOES_NOT_FIT
    assert max(first["loss_pp"].values()) > 0  # (so a task is kept whole)
    worst = max(first["loss_pp"], key=first["loss_pp"].get)
    assert first["whole_tasks"] == [] and second["whole_tasks"] == [worst]
    assert second["exclusive_pages"][worst] == {"wine": 268, "iris": 257}[worst]
    assert second["loss_pp"][worst] == 0.0
    assert second["task_weights"] == {"wine": 1.0, "iris": 1.0}  # weights stay as they are
    for p in (first, second):  # each pack spends the budget (to within a page)
        assert l2 - 400 < 400 * sum(p["exclusive_pages"].values()) <= l2


@pytest.mark.slow
def test_smartdeal_pages_with_separation_stay_coded_from_pack_to_runtime(tmp_path):
    """SmartDeal pages with separation by bytes: the exclusive pages are coded like the pool
    (one code format), the level-2 budget is spent in coded bytes (at the widest format
    training can produce, so never over it), the .wvpack stores them coded, and the runtime
    that reads them from that file decodes exactly the weights the report evaluated."""
    from tvm_weightvirt.algorithms.smartdeal import WIDEST_FORMAT

    tasks = suite.load_suite(TASKS)
    l1, l2 = 16 * 1024, 20_000
    config = PackConfig(
        page_size=96,
        share_within_task=True,
        smartdeal=True,
        separation=SeparationConfig(l1_budget_bytes=l1, l2_budget_bytes=l2, rule="bytes"),
        optimize=OptimizeConfig(rounds=1, iterations=50, eval_every=25),
    )
    result = pack(*suite.packable(tasks), config)
    plan, report = result.plan, result.report
    page_bytes = plan.coded.format.page_bytes(96)
    n_exclusive = sum(t.n_exclusive_pages for t in plan.tasks.values())
    assert n_exclusive == l2 // WIDEST_FORMAT.page_bytes(96)  # the budget bought whole pages
    assert report["l2_bytes"] == plan.exclusive_bytes == n_exclusive * page_bytes <= l2
    assert report["l1_bytes"] == plan.pool_bytes + plan.page_table_bytes <= l1
    assert all(t.coded.format == plan.coded.format for t in plan.tasks.values())
    path = tmp_path / "coded_separated.wvpack"
    wv.save_wvpack(path, plan, [t.task for t in tasks])
    pack_file = wv.load_wvpack(path)
    runtime = MultitaskRuntime(
        pack_file.plan, wv.build(wv.lower(pack_file.tasks, pack_file.plan)), level2=str(path)
    )
    assert_runtime_reproduces_the_report(runtime, tasks, plan, report)
