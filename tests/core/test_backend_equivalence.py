"""Every compiled backend against the NumPy reference (the oracle), function by function.

Each function of ``fastrnn.backends.API`` runs forward and backward on the same
inputs under the reference and under each other available backend, on shapes
that catch indexing slips (N=1, T=1, H not a multiple of 8, odd D) and on
inputs that are C-ordered, Fortran-ordered, strided (step-2 slices) or
transposed views. The in-place ``KERNELS`` are compared the same way, and bad
input must fail with the same exception and message on every backend.

Tolerances: float64 agrees to 1e-10 relative (``rel_error``). float32 agrees to
1e-4 relative on every entry of at least 1% of its array's largest magnitude,
and to 1e-4 of that magnitude elsewhere: entries far below the array's scale
come out of cancelling sums and carry the float32 rounding of the reference
itself (the reference in float32 is ~1e-3 elementwise from float64 there).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn import layers
from fastrnn.backends import API, KERNELS, load_backend
from fastrnn.gradcheck import rel_error

REFERENCE = "numpy"
COMPILED = [name for name in fastrnn.available_backends() if name != REFERENCE]
if not COMPILED:
    pytest.skip("only the numpy backend is available: nothing to compare with it",
                allow_module_level=True)

DTYPES = [np.float64, np.float32]
LAYOUTS = ["C", "F", "strided", "transposed"]
# (N, T, D, H, V): N=1 and T=1, H not a multiple of 8, odd D, a vocabulary-sized V
SHAPES = [(1, 1, 3, 5, 7), (2, 3, 7, 13, 11), (4, 2, 1, 8, 5), (3, 5, 9, 13, 1004)]


# -------------------------------------------------------------------- helpers

def arrange(a, layout):
    """The same values as ``a`` in the requested memory layout (a view where the layout is one)."""
    if layout == "C" or a.ndim == 0:
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if layout == "transposed":
        return np.ascontiguousarray(a.T).T
    raise ValueError(layout)


class Inputs:
    """Random inputs of one dtype and layout; weights scaled like a real initialisation."""

    def __init__(self, seed, dtype, layout):
        self.rng = np.random.default_rng(seed)
        self.dtype, self.layout = dtype, layout

    def floats(self, *shape, fan_in=1):
        a = self.rng.standard_normal(shape) / np.sqrt(fan_in)
        return arrange(a.astype(self.dtype), self.layout)

    def tokens(self, high, *shape):
        return arrange(self.rng.integers(high, size=shape), self.layout)

    def mask(self, *shape):
        return arrange(self.rng.random(shape) < 0.7, self.layout)


def assert_close(got, ref, what):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != reference {ref.dtype}"
    if ref.dtype == np.float64:
        err = rel_error(got, ref)
        assert err < 1e-10, f"{what}: rel_error {err:.2e} vs the reference"
        return
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    big = np.abs(ref) >= 0.01 * scale
    err = rel_error(got[big], ref[big]) if big.any() else 0.0
    assert err < 1e-4, f"{what}: rel_error {err:.2e} vs the reference"
    abs_err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    assert abs_err <= 1e-4 * scale, f"{what}: max error {abs_err:.2e} > 1e-4 * {scale:.2e}"


def run(backend, fn, args):
    """Call ``layers.<fn>`` on ``backend``; the arguments must come back unchanged."""
    before = [np.copy(a) if isinstance(a, np.ndarray) else None for a in args]
    with fastrnn.use_backend(backend):
        result = getattr(layers, fn)(*args)
    for k, (a, old) in enumerate(zip(args, before)):
        if old is not None:
            np.testing.assert_array_equal(a, old, err_msg=f"{backend} {fn} changed argument {k}")
    return result


# ----------------------------------------------------- forward/backward pairs
# Each case: (forward name, backward name, build(inputs, N, T, D, H, V) -> forward args,
# number of forward outputs before the cache).

def _affine(i, N, T, D, H, V):
    return [i.floats(N, D), i.floats(D, H, fan_in=D), i.floats(H)]


def _rnn_step(i, N, T, D, H, V):
    return [i.floats(N, D), i.floats(N, H), i.floats(D, H, fan_in=D),
            i.floats(H, H, fan_in=H), i.floats(H)]


def _rnn(i, N, T, D, H, V):
    return [i.floats(N, T, D), i.floats(N, H), i.floats(D, H, fan_in=D),
            i.floats(H, H, fan_in=H), i.floats(H)]


def _embedding(i, N, T, D, H, V):
    x = i.tokens(min(V, 4), N, T)  # few distinct words: repeats must accumulate
    return [x, i.floats(V, D)]


def _lstm_step(i, N, T, D, H, V):
    return [i.floats(N, D), i.floats(N, H), i.floats(N, H), i.floats(D, 4 * H, fan_in=D),
            i.floats(H, 4 * H, fan_in=H), i.floats(4 * H)]


def _lstm(i, N, T, D, H, V):
    return [i.floats(N, T, D), i.floats(N, H), i.floats(D, 4 * H, fan_in=D),
            i.floats(H, 4 * H, fan_in=H), i.floats(4 * H)]


def _temporal_affine(i, N, T, D, H, V):
    return [i.floats(N, T, D), i.floats(D, V, fan_in=D), i.floats(V)]


PAIRS = {
    "affine": ("affine_forward", "affine_backward", _affine, 1),
    "rnn_step": ("rnn_step_forward", "rnn_step_backward", _rnn_step, 1),
    "rnn": ("rnn_forward", "rnn_backward", _rnn, 1),
    "word_embedding": ("word_embedding_forward", "word_embedding_backward", _embedding, 1),
    "lstm_step": ("lstm_step_forward", "lstm_step_backward", _lstm_step, 2),
    "lstm": ("lstm_forward", "lstm_backward", _lstm, 1),
    "temporal_affine": ("temporal_affine_forward", "temporal_affine_backward",
                        _temporal_affine, 1),
}


def test_every_api_function_is_covered():
    covered = {f for fwd, bwd, _, _ in PAIRS.values() for f in (fwd, bwd)}
    covered.add("temporal_softmax_loss")
    assert covered == set(API)


def _compare_pair(backend, pair, shape, dtype, layout, seed=0):
    fwd, bwd, build, n_out = PAIRS[pair]
    inputs = Inputs(seed, dtype, layout)
    args = build(inputs, *shape)
    ref_out = run(REFERENCE, fwd, args)
    got_out = run(backend, fwd, args)
    assert got_out[-1].backend == backend
    for k in range(n_out):
        assert_close(got_out[k], ref_out[k], f"{fwd} output {k}")
    # the same upstream gradient (in the same layout) for both backward passes
    douts = [inputs.floats(*out.shape) for out in ref_out[:n_out]]
    ref_grads = run(REFERENCE, bwd, douts + [ref_out[-1]])
    got_grads = run(backend, bwd, douts + [got_out[-1]])
    if isinstance(ref_grads, np.ndarray):
        ref_grads, got_grads = [ref_grads], [got_grads]
    assert len(got_grads) == len(ref_grads)
    for k, (g, r) in enumerate(zip(got_grads, ref_grads)):
        assert_close(g, r, f"{bwd} gradient {k}")


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-T{}-D{}-H{}-V{}".format(*s))
@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_forward_and_backward_match_reference(backend, pair, shape, dtype):
    _compare_pair(backend, pair, shape, dtype, "C")


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("layout", ["F", "strided", "transposed"])
@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_non_contiguous_inputs_match_reference(backend, pair, layout, dtype):
    _compare_pair(backend, pair, (3, 4, 5, 13, 9), dtype, layout, seed=1)


@pytest.fixture
def onednn_products():
    """Every product of the compiled backends through oneDNN (not only the large ones
    that the default 'auto' provider sends there)."""
    from fastrnn import gemm
    try:
        gemm.set_default_provider("onednn")
    except ImportError as err:
        pytest.skip(str(err))
    yield
    gemm.set_default_provider(None)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("layout", ["C", "F", "strided", "transposed"])
@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_pairs_match_reference_with_onednn_products(backend, pair, layout, onednn_products):
    _compare_pair(backend, pair, (3, 4, 5, 13, 9), np.float32, layout, seed=2)
    _compare_pair(backend, pair, (1, 1, 3, 5, 7), np.float32, layout, seed=3)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-T{}-D{}-H{}-V{}".format(*s))
def test_temporal_softmax_loss_matches_reference(backend, shape, layout, dtype):
    N, T, D, H, V = shape
    i = Inputs(2, dtype, layout)
    x = arrange((3 * i.rng.standard_normal((N, T, V))).astype(dtype), layout)
    args = [x, i.tokens(V, N, T), i.mask(N, T)]
    ref_loss, ref_dx = run(REFERENCE, "temporal_softmax_loss", args)
    loss, dx = run(backend, "temporal_softmax_loss", args)
    assert type(loss) is type(ref_loss)
    assert_close(loss, ref_loss, "loss")
    assert_close(dx, ref_dx, "dx")


@pytest.mark.parametrize("backend", COMPILED)
def test_softmax_loss_is_stable_for_huge_scores(backend):
    x = np.array([[[1000.0, -1000.0, 0.0], [-1e4, 1e4, 3.0]]])
    args = [x, np.array([[0, 0]]), np.array([[True, True]])]
    ref = run(REFERENCE, "temporal_softmax_loss", args)
    got = run(backend, "temporal_softmax_loss", args)
    assert np.isfinite(got[0]) and np.all(np.isfinite(got[1]))
    assert_close(got[0], ref[0], "loss")
    assert_close(got[1], ref[1], "dx")


@settings(max_examples=12, deadline=None)
@given(N=st.integers(1, 4), T=st.integers(1, 4), D=st.integers(1, 9), H=st.integers(1, 17),
       seed=st.integers(0, 2 ** 16))
def test_lstm_sequence_property(N, T, D, H, seed):
    for backend in COMPILED:
        _compare_pair(backend, "lstm", (N, T, D, H, 2), np.float64, "C", seed)


# -------------------------------------------------------------------- KERNELS

def _kernel_args(name, i, n, H, R, V):
    if name == "lstm_gates_forward":
        return [i.floats(n, 4 * H) * 2, i.floats(n, H), np.empty((n, H), i.dtype),
                np.empty((n, H), i.dtype)], (0, 2, 3)
    if name == "lstm_gates_backward":
        a = i.floats(n, 4 * H) * 2
        prev_c = i.floats(n, H)
        next_c, next_h = np.empty((n, H), i.dtype), np.empty((n, H), i.dtype)
        load_backend(REFERENCE).lstm_gates_forward(a, prev_c, next_c, next_h)
        return [a, prev_c, next_c, i.floats(n, H), i.floats(n, H),
                np.empty((n, 4 * H), i.dtype), np.empty((n, H), i.dtype)], (5, 6)
    if name == "softmax_cross_entropy_rows":
        return [3 * i.floats(R, V), i.tokens(V, R), 0.25], (0,)
    if name == "scatter_add_rows":   # few distinct tokens among 3n rows: repeats accumulate
        return [i.tokens(min(V, 3), 3 * n), i.floats(3 * n, 4 * H), i.floats(V, 4 * H)], (2,)
    raise AssertionError(name)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("n, H", [(1, 1), (3, 5), (7, 13)])
@pytest.mark.parametrize("name", KERNELS)
def test_kernels_match_reference(backend, name, n, H, dtype):
    args, written = _kernel_args(name, Inputs(3, dtype, "C"), n, H, R=n, V=4 * H + 1)
    ref_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    got_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    ref_ret = getattr(load_backend(REFERENCE), name)(*ref_args)
    got_ret = getattr(load_backend(backend), name)(*got_args)
    if ref_ret is None:
        assert got_ret is None
    else:
        assert type(got_ret) is type(ref_ret)
        # a float loss computed in float32 is only float32-accurate
        assert_close(np.asarray(got_ret, dtype), np.asarray(ref_ret, dtype), f"{name} return value")
    for k in written:
        assert_close(got_args[k], ref_args[k], f"{name} argument {k}")


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("n, H", [(1, 1), (7, 13)])
def test_lstm_gates_forward_adds_the_addend(backend, dtype, n, H):
    """lstm_gates_forward(a, ..., addend) is lstm_gates_forward(a + addend, ...)."""
    args, written = _kernel_args("lstm_gates_forward", Inputs(5, dtype, "C"), n, H, R=n, V=0)
    addend = Inputs(6, dtype, "C").floats(n, 4 * H)
    ref_args = [a.copy() for a in args]
    ref_args[0] += addend
    got_args = [a.copy() for a in args]
    load_backend(REFERENCE).lstm_gates_forward(*ref_args)
    load_backend(backend).lstm_gates_forward(*got_args, addend)
    for k in written:
        assert_close(got_args[k], ref_args[k], f"lstm_gates_forward argument {k}")


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_lstm_gates_backward_may_update_dc_in_place(backend, dtype):
    """dprev_c may be dnext_c itself, as in the reference (which reads before it writes)."""
    args, _ = _kernel_args("lstm_gates_backward", Inputs(4, dtype, "C"), 6, 13, R=0, V=0)
    ref_args = [a.copy() for a in args]
    got_args = [a.copy() for a in args]
    load_backend(REFERENCE).lstm_gates_backward(*ref_args)
    got_args[6] = got_args[4]  # dprev_c is dnext_c
    load_backend(backend).lstm_gates_backward(*got_args)
    assert_close(got_args[5], ref_args[5], "da")
    assert_close(got_args[4], ref_args[6], "dprev_c")


# The numba backend runs small work on serial twins of its parallel kernels;
# the tests above are small, so here each side of the threshold is forced.

@pytest.mark.skipif("numba" not in COMPILED, reason="numba is not installed")
@pytest.mark.parametrize("variant", ["parallel", "serial"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_numba_parallel_and_serial_kernels_match_reference(monkeypatch, variant, dtype):
    import fastrnn.backends.numba_backend as numba_backend
    threshold = 0 if variant == "parallel" else 2 ** 62
    monkeypatch.setattr(numba_backend, "PARALLEL_MIN_ELEMENTS", threshold)
    for pair in ("rnn_step", "rnn", "lstm_step", "lstm"):
        _compare_pair("numba", pair, (3, 4, 5, 13, 9), dtype, "C", seed=5)
    test_temporal_softmax_loss_matches_reference("numba", (3, 4, 5, 13, 9), "C", dtype)
    for name in KERNELS:
        test_kernels_match_reference("numba", name, 3, 5, dtype)


# ------------------------------------------------------------------ bad input

def _bad_calls():
    f64, f32 = np.zeros((2, 3)), np.zeros((2, 3), np.float32)
    w = np.zeros((3, 4))
    lstm = [np.zeros((2, 3, 5)), np.zeros((2, 4)), np.zeros((5, 16)), np.zeros((4, 16)),
            np.zeros(16)]
    _, affine_cache = layers.affine_forward(f64, w, np.zeros(4))
    return {
        "shape": lambda: layers.affine_forward(f64, np.zeros((4, 4)), np.zeros(4)),
        "dtype": lambda: layers.affine_forward(f64.astype(int), w, np.zeros(4)),
        "mixed dtypes": lambda: layers.affine_forward(f32, w, np.zeros(4)),
        "not an array": lambda: layers.rnn_step_forward([[0.0]], f64, w, w, np.zeros(4)),
        "lstm hidden size": lambda: layers.lstm_forward(*lstm[:3], np.zeros((4, 12)), lstm[4]),
        "token out of range": lambda: layers.word_embedding_forward(np.array([[0, 9]]), w),
        "float tokens": lambda: layers.temporal_softmax_loss(
            np.zeros((1, 2, 3)), np.zeros((1, 2)), np.ones((1, 2), bool)),
        "mask shape": lambda: layers.temporal_softmax_loss(
            np.zeros((1, 2, 3)), np.zeros((1, 2), int), np.ones((2, 1), bool)),
        "wrong cache": lambda: layers.lstm_backward(np.zeros((2, 4)), affine_cache),
        "dout shape": lambda: layers.affine_backward(np.zeros((2, 5)), affine_cache),
    }


def _error_of(call):
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("case", [
    "shape", "dtype", "mixed dtypes", "not an array", "lstm hidden size", "token out of range",
    "float tokens", "mask shape", "wrong cache", "dout shape"])
def test_bad_input_fails_the_same_way(backend, case):
    with fastrnn.use_backend(REFERENCE):
        expected = _error_of(_bad_calls()[case])
    with fastrnn.use_backend(backend):
        got = _error_of(_bad_calls()[case])
    assert expected[0] in (TypeError, ValueError)
    assert got == expected
