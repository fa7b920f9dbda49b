"""No kernel reads or writes outside its buffers, whatever it is passed.

Each case runs in a fresh Python process (a crash there fails the test instead of
killing pytest): the process runs the calls, prints one line per case, and exits 0
only if every bad call raised the expected error and every good one matched the
NumPy reference.
"""
import subprocess
import sys
import textwrap

import pytest

import fastrnn

BACKENDS = fastrnn.available_backends()


PRELUDE = """
import numpy as np
import fastrnn
from fastrnn import layers
from fastrnn.backends import load_backend

def expect(error, fn, *args):
    try:
        fn(*args)
    except error as err:
        print("raised", type(err).__name__, err)
        return
    raise SystemExit(f"{fn.__name__}: expected {error.__name__}, nothing raised")
"""


def run_child(body):
    """Run PRELUDE then ``body`` (indented source) in a fresh interpreter; its stdout."""
    code = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (f"child exited with {proc.returncode}\nstdout:\n{proc.stdout}\n"
                                  f"stderr:\n{proc.stderr[-3000:]}")
    return proc.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_backward_uses_the_ids_forward_saw(backend):
    """The caller overwrites its id array between forward and backward (with ids
    out of range, negative, huge): the backward still scatters the original ids."""
    out = run_child(f"""
    rng = np.random.default_rng(0)
    V, D = 6, 5
    W = rng.standard_normal((V, D))
    for bad in (6, 1000, -1, -7, 10**9, 7):
        x = rng.integers(0, V, (3, 4))
        want = np.zeros((V, D))
        with fastrnn.use_backend({backend!r}):
            out, cache = layers.word_embedding_forward(x, W)
        dout = rng.standard_normal(out.shape)
        np.add.at(want, x.copy(), dout)
        x[...] = bad
        x[0, 0] = -1
        dW = layers.word_embedding_backward(dout, cache)
        assert np.allclose(dW, want, rtol=0, atol=1e-12), bad
        print("ok", bad)
    """)
    assert out.count("ok") == 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_engine_kernels_refuse_bad_ids_and_shapes(backend):
    """The KERNELS entries the fused path calls, given ids out of range or of the
    wrong length, or arrays that disagree in shape: ValueError, never a crash."""
    out = run_child(f"""
    k = load_backend({backend!r})
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        R, V, G = 7, 5, 8
        scores = rng.standard_normal((R, V)).astype(dtype)
        for y in (np.full(R, V), np.full(R, -1), np.full(R, 10**9), np.zeros(R + 3, int),
                  np.zeros(2, int)):
            expect(ValueError, k.softmax_cross_entropy_rows, scores.copy(), y, 1.0)
        rows = rng.standard_normal((R, G)).astype(dtype)
        out = np.zeros((V, G), dtype=dtype)
        for tokens in (np.full(R, V), np.full(R, -1), np.full(R, -10**9), np.zeros(R + 1, int)):
            expect(ValueError, k.scatter_add_rows, tokens, rows, out)
        assert not out.any()
        # good ids still give the reference
        y = rng.integers(0, V, R)
        got, want = scores.copy(), scores.copy()
        assert np.isclose(k.softmax_cross_entropy_rows(got, y, 0.5),
                          load_backend("numpy").softmax_cross_entropy_rows(want, y, 0.5))
        assert np.allclose(got, want, atol=1e-5)
        n, H = 4, 3
        a = rng.standard_normal((n, 4 * H)).astype(dtype)
        c = rng.standard_normal((n, H)).astype(dtype)
        e = lambda *shape: np.empty(shape, dtype=dtype)  # noqa: E731
        expect(ValueError, k.lstm_gates_forward, a[:, :3 * H].copy(), c, e(n, H), e(n, H))
        expect(ValueError, k.lstm_gates_forward, a.copy(), c, e(1, H), e(n, H))
        expect(ValueError, k.lstm_gates_forward, a.copy(), c, e(n, H), e(n, 1))
        expect(ValueError, k.lstm_gates_backward, a, c, c, c, c, e(n, 4 * H), e(1, H))
        if k.name != "numpy":   # the reference broadcasts a single row (in bounds)
            expect(ValueError, k.lstm_gates_backward, a, c, c, c[:1], c, e(n, 4 * H), e(n, H))
        expect(ValueError, k.lstm_gates_backward, a, c, c, c, c, e(n, H), e(n, H))
    print("done")
    """)
    assert out.rstrip().endswith("done")


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba is not installed")
def test_numba_kernels_check_their_arguments():
    """The jitted kernels themselves (not only their Python wrappers)."""
    out = run_child("""
    from fastrnn.backends import _numba_kernels as nk
    rng = np.random.default_rng(0)
    dW = np.zeros((6, 5))
    dout = rng.standard_normal((4, 5))
    for tokens in ([0, 1, 6, 2], [0, -1, 2, 3], [10**9] * 4, [0, 1, 2]):
        expect(ValueError, nk.embedding_scatter_add, np.array(tokens, dtype=np.intp), dout, dW)
    expect(ValueError, nk.embedding_scatter_add, np.zeros(4, np.intp), dout, np.zeros((6, 4)))
    assert not dW.any()
    scores = rng.standard_normal((4, 6))
    for run in (nk.softmax_xent_rows, nk.softmax_xent_rows_serial):
        for y, w, rl in (([0, 6, 1, 2], 4, 4), ([0, -3, 1, 2], 4, 4), ([0, 1], 4, 4),
                         ([0, 1, 2, 3], 3, 4), ([0, 1, 2, 3], 4, 2)):
            expect(ValueError, run, scores, np.array(y, dtype=np.intp), np.ones(w), 1.0,
                   np.empty_like(scores), np.empty(rl))
    h = np.zeros((3, 2))
    for run in (nk.rnn_cell_forward, nk.rnn_cell_forward_serial):
        expect(ValueError, run, np.zeros((2, 2)), h, np.zeros(2), h.copy())
        expect(ValueError, run, h, h, np.zeros(1), h.copy())
    for run in (nk.lstm_cell_forward, nk.lstm_cell_forward_serial):
        expect(ValueError, run, np.zeros((3, 8)), np.zeros((2, 8)), np.zeros(8), h, h.copy(),
               h.copy())
    for run in (nk.adam_update, nk.adam_update_serial):
        expect(ValueError, run, np.zeros(5), np.zeros(4), np.zeros(5), np.zeros(5),
               1e-3, 0.9, 0.999, 1e-8, 0.1, 0.001)
    print("done")
    """)
    assert out.rstrip().endswith("done")


@pytest.mark.skipif("cython" not in BACKENDS, reason="the Cython extension is not built")
def test_cython_kernels_check_their_ids():
    out = run_child("""
    from fastrnn.backends import cython_backend
    k = cython_backend._k
    rng = np.random.default_rng(0)
    dW = np.zeros((6, 5))
    dout = rng.standard_normal((4, 5))
    for tokens in ([0, 1, 6, 2], [0, -1, 2, 3], [10**9] * 4, [0, 1, 2]):
        expect(ValueError, k.embedding_backward, np.array(tokens, dtype=np.intp), dout, dW)
    assert not dW.any()
    scores = rng.standard_normal((4, 6))
    for y in ([0, 6, 1, 2], [0, -3, 1, 2], [0, 1]):
        expect(ValueError, k.softmax_xent_rows, scores, np.array(y, dtype=np.intp), None,
               np.empty_like(scores), np.empty(4), 1.0)
    print("done")
    """)
    assert out.rstrip().endswith("done")
