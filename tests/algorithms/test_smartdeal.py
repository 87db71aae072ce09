"""SmartDeal's decomposition (power-of-two C times a 3x3 basis), its blocking and its storage
formula."""

import numpy as np
import pytest

from tvm_weightvirt.algorithms.smartdeal import (
    BlockFit,
    DecomposedWeight,
    decode_codes,
    decompose_block,
    decompose_weight,
    encode_codes,
    quantize_pow2,
    smartdeal_weights,
    storage_bits,
    stored_bytes,
)
from tvm_weightvirt.coded_pages import CodedPages, stored_bases


def _is_pow2_or_zero(c: np.ndarray, max_c: float = 32.0) -> bool:
    m = np.abs(c[c != 0])
    return bool(np.all(m <= max_c) and np.allclose(2.0 ** np.round(np.log2(m)), m))


def test_quantize_pow2_snaps_to_the_nearer_power_in_linear_distance():
    c = np.array([3.0, 0.7, 100.0, -6.0, 0.0, -0.3, 1.0])
    # 3: 2 and 4 tie -> 2; 0.7: 0.5 (0.2) vs 1 (0.3); 100 -> clipped to 32; -6: -4 and -8 tie;
    # 0 stays 0; -0.3: 0.25 (0.05) vs 0.5 (0.2); 1 is a power of two
    np.testing.assert_array_equal(quantize_pow2(c), [2.0, 0.5, 32.0, -4.0, 0.0, -0.25, 1.0])


@pytest.mark.parametrize("rows", [9, 66, 192])
def test_decompose_block_properties(rows):
    a = np.random.default_rng(rows).normal(0, 0.1, (rows, 3))
    fit = decompose_block(a)
    assert fit.c.shape == (rows, 3) and fit.b.shape == (3, 3)
    assert _is_pow2_or_zero(fit.c)
    error = float(np.linalg.norm(a - fit.c.astype(np.float64) @ fit.b.astype(np.float64)))
    assert error == pytest.approx(min(fit.errors), rel=1e-5)
    # no worse than the loop's own final answer, nor than quantizing A with B = I
    assert error <= fit.errors[-1] + 1e-9 and error <= fit.errors[0] + 1e-9
    assert error < np.linalg.norm(a)


def test_blocking_follows_smartdeal():
    rng = np.random.default_rng(0)
    conv = decompose_weight("c", rng.normal(size=(2, 128, 3, 3)))
    assert conv.kind == "conv3x3" and [f.c.shape for f in conv.fits] == [(192, 3)] * 4  # 2 x 2
    stem = decompose_weight("s", rng.normal(size=(4, 3, 3, 3)))
    assert [f.c.shape for f in stem.fits] == [(9, 3)] * 4
    conv1d = decompose_weight("d", rng.normal(size=(2, 16, 3)))
    assert conv1d.kind == "conv1d3" and [f.c.shape for f in conv1d.fits] == [(16, 3)] * 2
    fc = decompose_weight("f", rng.normal(size=(2, 64)))
    assert fc.pad == 2 and [f.c.shape for f in fc.fits] == [(22, 3)] * 2  # 64 -> 66 = 22 x 3
    wide = decompose_weight("w", rng.normal(size=(1, 600)))
    assert [f.c.shape for f in wide.fits] == [(171, 3), (29, 3)]  # 600 = 200 x 3 rows
    for d, shape in [(conv, (2, 128, 3, 3)), (fc, (2, 64)), (wide, (1, 600))]:
        assert d.reconstruct().shape == shape
    assert decompose_weight("k5", rng.normal(size=(4, 3, 5, 5))) is None


def test_storage_formula_on_a_hand_computed_layer():
    c = np.array([[1.0, 0.0, -2.0], [0.5, 0.0, 0.0]], np.float32)
    layer = DecomposedWeight("w", (1, 6), "rows", [BlockFit(c, np.eye(3, dtype=np.float32), [])], 0)
    # nnz 3; |C| levels {0.5, 1, 2}: ceil(log2 3) + 1 = 3 bits; mask 6 bits; basis 9 x 32 bits
    assert storage_bits([layer]) == 3 * 3 + 6 + 9 * 32
    assert stored_bytes([layer]) == 6 * 1 + 9 * 4  # int8 codes + float32 basis


def test_codes_round_trip():
    c = quantize_pow2(np.random.default_rng(1).normal(0, 4, (50, 3)))
    c[::7] = 0
    codes = encode_codes(c)
    assert codes.dtype == np.int8
    np.testing.assert_array_equal(decode_codes(codes), c)


def test_uncovered_weights_stay_dense_and_are_reported():
    rng = np.random.default_rng(2)
    weights = {
        "k5.weight": rng.normal(size=(4, 3, 5, 5)).astype(np.float32),
        "k5.bias": rng.normal(size=(4,)).astype(np.float32),
        "fc.weight": rng.normal(size=(10, 30)).astype(np.float32),
    }
    out, report = smartdeal_weights(weights)
    assert report.dense == ["k5.weight", "k5.bias"] and report.dense_elems == 4 * 3 * 25 + 4
    np.testing.assert_array_equal(out["k5.weight"], weights["k5.weight"])
    assert [d.name for d in report.decomposed] == ["fc.weight"]
    assert out["fc.weight"].shape == (10, 30)


@pytest.mark.slow
def test_train_then_project_keeps_the_best_projected_model_on_validation():
    import copy

    from tvm_weightvirt.algorithms.smartdeal import train_then_project
    from tvm_weightvirt.apps import suite

    task = suite.load_task("wine")
    train, val = task.splits["train"], task.splits["val"]
    model, report, history = train_then_project(
        copy.deepcopy(task.model), (train.x, train.y), (val.x, val.y), rounds=2, iterations=30
    )
    assert len(history) == 3
    assert task.accuracy("val", model) == max(history)
    # the kept weights are exactly the reconstructions C @ B of the kept report
    state = model.state_dict()
    for d in report.decomposed:
        np.testing.assert_array_equal(state[d.name].numpy(), d.reconstruct())


# **** SmartDeal pages: codes in the shared pool ****


def _coded_plan(page_size: int = 96):
    """Three example tasks on float pages, then every pool page as C @ B (no training)."""
    import tvm_weightvirt as wv
    from tvm_weightvirt.algorithms.smartdeal import encode_pages
    from tvm_weightvirt.apps import examples

    tasks, inputs = [], {}
    for name, kind, seed in [("a", "cnn2d", 0), ("b", "cnn1d", 1), ("m", "mlp", 2)]:
        model, x = examples.torch_model(kind, seed)
        tasks.append(wv.Task.from_torch(model, (x,), name=name))
        inputs[name] = x.numpy()
    dense = wv.PagePlan.lossless(tasks, page_size=page_size)
    plan = wv.PagePlan.from_coded(page_size, encode_pages(dense.pool), dense.tasks)
    return tasks, inputs, dense, plan


def test_coded_pages_decode_to_powers_of_two_times_a_basis_and_count_their_bytes():
    from tvm_weightvirt.algorithms.smartdeal import (
        coded_to_latent,
        decode_latent,
        encode_pages,
    )

    torch = pytest.importorskip("torch")
    pages = np.random.default_rng(0).normal(0, 0.1, (5, 96)).astype(np.float32)
    coded = encode_pages(pages)
    assert coded.codes.shape == (5, 96) and coded.codes.dtype == np.int8
    assert coded.bases.shape == (5, 3, 3) and coded.bases.dtype == np.float16
    c = decode_codes(coded.codes)
    assert _is_pow2_or_zero(c)
    np.testing.assert_allclose(
        coded.decode(), np.matmul(c.reshape(5, 32, 3), coded.bases).reshape(5, 96), atol=1e-7
    )
    # each page's error is SED's on that page seen as a 32 x 3 block
    for page, got in zip(pages, coded.decode()):
        fit = decompose_block(page.reshape(32, 3))
        assert np.linalg.norm(page - got) == pytest.approx(min(fit.errors), rel=1e-4)
    # stored: codes packed in the fewest bits that hold zero and both signs of every exponent
    # from the smallest to the largest, + 18 B per float16 basis; formula: nnz * (ceil(log2
    # levels) + 1) + mask + B (as float32)
    exponents = np.abs(coded.codes[coded.codes != 0].astype(int))
    width = int(np.ceil(np.log2(2 * (exponents.max() - exponents.min() + 1) + 1)))
    assert coded.format.width == width <= 8
    assert coded.stored_bytes == 5 * 4 * -(-96 // (32 // width)) + 5 * 18  # 32-bit words
    levels = len(np.unique(np.abs(c[c != 0])))
    bits = np.count_nonzero(c) * (int(np.ceil(np.log2(levels))) + 1) + 5 * 96 + 32 * 45
    assert coded.formula_bytes == bits / 8
    # the trainable latent decodes to the same pages (the projection is idempotent on codes)
    with torch.no_grad():
        latent = decode_latent(torch.from_numpy(coded_to_latent(coded))).numpy()
    np.testing.assert_allclose(latent, coded.decode(), atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 3, got 100"):
        encode_pages(np.zeros((1, 100), np.float32))
    assert CodedPages(coded.codes[:0], coded.bases[:0]).stored_bytes == 0


def test_projection_gives_straight_through_gradients_and_stores_what_training_saw():
    from tvm_weightvirt.algorithms.smartdeal import decode_latent, latent_to_coded

    torch = pytest.importorskip("torch")
    latent = torch.tensor(np.random.default_rng(1).normal(0, 0.5, (2, 12 + 9)), requires_grad=True)
    decode_latent(latent.float()).sum().backward()
    assert latent.grad is not None and bool((latent.grad[:, :12] != 0).any())
    assert bool((latent.grad[:, 12:] != 0).all())  # bases: straight through their rounding
    coded = latent_to_coded(latent.detach().float().numpy())
    with torch.no_grad():
        seen = decode_latent(latent.detach().float()).numpy()
    # the bases are stored float16, and training saw them rounded so
    np.testing.assert_allclose(coded.decode(), seen, atol=1e-6)
    # SED's sparsify step: exactly the entries below delta = 1e-3 are zero
    c = decode_codes(coded.codes)
    np.testing.assert_array_equal(c == 0, np.abs(latent.detach().numpy()[:, :12]) < 1e-3)
    assert _is_pow2_or_zero(c)


def test_bases_are_stored_float16_and_one_beyond_its_range_is_refused():
    codes = np.full((1, 6), 64, np.int8)  # every coefficient 2^0
    with pytest.raises(ValueError, match="bases are float32: SmartDeal pages store them as"):
        CodedPages(codes, np.ones((1, 3, 3), np.float32))
    assert stored_bases(np.full((1, 3, 3), 0.1)).tolist() == [[[np.float16(0.1)] * 3] * 3]
    with pytest.raises(ValueError, match="basis value of 70000 is beyond float16's range"):
        stored_bases(np.full((1, 3, 3), 7e4))


def test_coded_plan_compiles_and_runs_as_its_decoded_weights(tmp_path):
    """The switch kernel decodes the task's pages; outputs equal the model run alone with the
    plan's (decoded) weights, <= 1e-5; the coded pool round-trips through the artifact."""
    from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

    import tvm_weightvirt as wv
    from tvm_weightvirt.coded_pages import CodedPages

    tasks, inputs, dense, plan = _coded_plan()
    row_bytes = plan.coded.format.row_bytes(96)  # codes packed in the pool's format
    assert plan.pool_bytes == plan.pool.shape[0] * (row_bytes + 18) < dense.pool_bytes
    wv.save_wvpack(tmp_path / "coded.wvpack", plan, tasks)
    loaded = wv.load_wvpack(tmp_path / "coded.wvpack")
    np.testing.assert_array_equal(loaded.plan.coded.codes, plan.coded.codes)
    np.testing.assert_array_equal(loaded.plan.pool, plan.pool)
    library = wv.build(wv.lower(loaded.tasks, loaded.plan))
    runtime = MultitaskRuntime(loaded.plan, library)
    for name in ["a", "b", "a", "m"]:
        expected = StandaloneModel(_with_weights(tasks, name, plan)).run(inputs[name])[0]
        np.testing.assert_allclose(runtime.run(name, inputs[name])[0], expected, atol=1e-5)
    with pytest.raises(ValueError, match="plan's pool is float32 pages, the library was lowered"):
        MultitaskRuntime(dense, library)
    # the same codes one exponent up: the same width, another format; the library's gather
    # would decode them wrong, so the runtime refuses the pair
    codes = plan.coded.codes.astype(np.int16)
    shifted = np.where(codes == 0, 0, codes + np.sign(codes)).astype(np.int8)
    other = wv.PagePlan.from_coded(96, CodedPages(shifted, plan.coded.bases), plan.tasks)
    assert other.coded.format.width == plan.coded.format.width
    with pytest.raises(ValueError, match="codes are stored as CodeFormat.*the library decodes"):
        MultitaskRuntime(other, library)
    with pytest.raises(NotImplementedError, match="SmartDeal pages are lowered for materialize"):
        wv.lower(tasks, plan, mode="fused")


def _with_weights(tasks, name, plan):
    import tvm_weightvirt as wv

    task = next(t for t in tasks if t.name == name)
    return wv.Task(task.name, task.mod, plan.read(name))


def test_structured_row_sparsity_zeroes_the_weakest_rows_of_each_group_of_32_filters():
    from tvm_weightvirt.algorithms.smartdeal import prune_rows

    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 4, 3, 3)).astype(np.float32)  # 2 groups, 12 rows per filter
    w[:32, 1, 2, :] *= 1e-3  # group 0: row (channel 1, kernel row 2) is the weakest ...
    w[32:, 3, 0, :] *= 1e-3  # ... group 1: row (channel 3, kernel row 0)
    pruned = prune_rows(w, 0.25)  # 3 of 12 rows per filter
    rows = pruned.reshape(64, 12, 3)
    zero_rows = [set(np.flatnonzero(~rows[f].any(axis=1))) for f in range(64)]
    assert all(len(z) == 3 for z in zero_rows)
    assert all(z == zero_rows[0] for z in zero_rows[:32])  # one pattern per group
    assert all(z == zero_rows[32] for z in zero_rows[32:])
    assert 1 * 3 + 2 in zero_rows[0] and 3 * 3 + 0 in zero_rows[32]
    kept = rows.reshape(64, 12, 3).any(axis=2)
    np.testing.assert_array_equal(rows[kept], w.reshape(64, 12, 3)[kept])
    # 1-D k=3 convs prune input channels; the decomposition keeps pruned rows at zero
    conv1d = prune_rows(rng.normal(size=(8, 10, 3)), 0.5)
    assert int((~conv1d.any(axis=2)).sum()) == 8 * 5
    out, report = smartdeal_weights({"c": conv1d}, row_fractions={"c": 0.5})
    assert not out["c"][~conv1d.any(axis=2)].any()
    with pytest.raises(ValueError, match=r"not a weight of shape \(4, 3, 5\)"):
        prune_rows(np.zeros((4, 3, 5)), 0.5)
    with pytest.raises(ValueError, match=r"row fractions for \['nope'\]"):
        smartdeal_weights({"c": conv1d}, row_fractions={"nope": 0.5})


@pytest.mark.parametrize("width", range(1, 9))
def test_bit_packed_codes_round_trip_exactly_at_every_width(width):
    """Codes whose exponents span (2^width - 1) // 2 levels pack into `width` bits a code (zero
    and both signs of each level; 1 bit: all zeros), 32 // width codes to a 32-bit word, and
    unpack to the same int8 codes; the format's value table decodes every symbol as
    `decode_codes` does."""
    from tvm_weightvirt.coded_pages import CodeFormat

    levels = ((1 << width) - 1) // 2
    first = -(levels // 2)
    rng = np.random.default_rng(width)
    exponents = rng.integers(first, first + max(levels, 1), size=(4, 96))
    signs = rng.choice([-1, 0, 1], size=(4, 96)) if levels else np.zeros((4, 96), int)
    if levels:  # every level present
        exponents.flat[:levels], signs.flat[:levels] = np.arange(first, first + levels), 1
    codes = (signs * (exponents + 64)).astype(np.int8)
    fmt = CodeFormat.of(codes)
    assert fmt == CodeFormat(width, first if levels else 0)
    packed = fmt.pack(codes)
    assert packed.shape == (4, -(-96 // (32 // width))) and packed.dtype == np.uint32
    np.testing.assert_array_equal(fmt.unpack(packed, 96), codes)
    np.testing.assert_array_equal(fmt.values()[fmt.symbols(codes)], decode_codes(codes))
