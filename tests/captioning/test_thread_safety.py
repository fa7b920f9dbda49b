"""Several Python threads at once: every result equals the one computed alone first.

``CaptioningRNN.loss`` on the compiled backends runs the fused engine, whose
workspaces are cached by shape; two threads must never share one. Each test
computes every job's loss and gradients on one thread first, then runs the jobs
from 4 threads at once (same shapes, different shapes, different backends),
started together, and compares every call with exact equality: each product and
kernel gives the same bits whatever runs beside it (BLAS and the kernels split
work over output rows, never over a summed axis).
"""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import layers
from fastrnn.captioning.model import CaptioningRNN

BACKENDS = fastrnn.available_backends()
COMPILED = [b for b in BACKENDS if b != "numpy"]
NULL, START, END = 0, 1, 2
THREADS = 4


def _vocab(V):
    return {w: i for i, w in enumerate(["<NULL>", "<START>", "<END>"] +
                                       [f"w{i}" for i in range(V - 3)])}


def _job(seed, cell, dtype, N, T, V, D=12, W=8, H=10):
    """A model and one minibatch of captions (with <NULL> holes and padding)."""
    rng = np.random.default_rng(seed)
    model = CaptioningRNN(_vocab(V), input_dim=D, wordvec_dim=W, hidden_dim=H,
                          cell_type=cell, dtype=dtype, seed=seed)
    for k, v in model.params.items():
        model.params[k] = (v + 0.3 * rng.standard_normal(v.shape)).astype(dtype)
    features = rng.standard_normal((N, D)).astype(dtype)
    captions = rng.integers(3, V, (N, T + 1))
    captions[:, 0] = START
    for n, length in enumerate(rng.integers(1, T + 1, N)):
        captions[n, length] = END
        captions[n, length + 1:] = NULL
    captions[:, 1:][rng.random((N, T)) < 0.1] = NULL
    return model, features, captions


def _jobs():
    return [
        _job(1, "lstm", np.float64, N=6, T=7, V=20),
        _job(2, "lstm", np.float64, N=6, T=7, V=20),     # same shape as the first
        _job(3, "lstm", np.float32, N=6, T=7, V=20),     # same shape, other dtype
        _job(4, "rnn", np.float64, N=9, T=5, V=25),
        # Enough vocabulary rows for the parallel softmax kernels (> 2**19 scores).
        _job(5, "lstm", np.float32, N=48, T=12, V=1100, H=16),
    ]


def _run_in_threads(work, n_threads=THREADS):
    """Run work(k) for k < n_threads, all started together; re-raise the first error.
    The GIL changes hands often (every 10 µs instead of 5 ms), so that calls interleave."""
    start = threading.Barrier(n_threads)
    errors = []

    def body(k):
        try:
            start.wait()
            work(k)
        except BaseException as err:   # noqa: BLE001 (reported in the main thread)
            errors.append(err)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n_threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    if errors:
        raise errors[0]


def _differences(got, want):
    (loss, grads), (want_loss, want_grads) = got, want
    bad = [] if loss == want_loss else ["loss"]
    return bad + [k for k in want_grads if not np.array_equal(grads[k], want_grads[k])]


@pytest.mark.filterwarnings("ignore:fastrnn precision 'bf16'")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_from_threads_equals_single_thread(backend, precision):
    """Under bf16 too: the bf16 provider (oneDNN on bf16 hardware) from several threads."""
    jobs = _jobs()
    with fastrnn.use_backend(backend), fastrnn.use_precision(precision):
        want = [model.loss(f, c) for model, f, c in jobs]
    calls = 4
    wrong = []

    def work(k):
        with fastrnn.use_backend(backend), fastrnn.use_precision(precision):
            for i in range(calls * len(jobs)):
                j = (i + k) % len(jobs)      # every thread cycles through every job
                got = jobs[j][0].loss(jobs[j][1], jobs[j][2])
                bad = _differences(got, want[j])
                if bad:
                    wrong.append((k, j, bad))

    _run_in_threads(work)
    assert not wrong, f"{len(wrong)} of {THREADS * calls * len(jobs)} calls differ: {wrong[:5]}"


@pytest.mark.skipif(not COMPILED, reason="no compiled backend in this install")
def test_threads_on_different_backends_at_once():
    jobs = _jobs()[:2]
    backends = [COMPILED[k % len(COMPILED)] for k in range(THREADS)]
    want = {}
    for be in set(backends):
        with fastrnn.use_backend(be):
            want[be] = [model.loss(f, c) for model, f, c in jobs]
    wrong = []

    def work(k):
        with fastrnn.use_backend(backends[k]):
            for i in range(10):
                model, f, c = jobs[i % 2]
                bad = _differences(model.loss(f, c), want[backends[k]][i % 2])
                if bad:
                    wrong.append((backends[k], i % 2, bad))

    _run_in_threads(work)
    assert not wrong, wrong[:5]


@pytest.mark.parametrize("backend", BACKENDS)
def test_returned_gradients_are_not_overwritten_by_the_next_call(backend):
    """Nothing returned may alias a cached buffer that the next call reuses."""
    (model, f1, c1), (_, f2, c2) = _jobs()[:2]
    with fastrnn.use_backend(backend):
        loss, grads = model.loss(f1, c1)
        kept = {k: v.copy() for k, v in grads.items()}
        model.loss(f2, c2)              # same shapes: the same workspace
    assert all(np.array_equal(grads[k], kept[k]) for k in kept)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_functions_from_threads(backend):
    rng = np.random.default_rng(0)
    N, T, D, H, V = 5, 6, 7, 8, 11
    inputs = [(rng.integers(0, V, (N, T)), rng.standard_normal((V, D)),
               rng.standard_normal((N, H)), rng.standard_normal((D, 4 * H)),
               rng.standard_normal((H, 4 * H)), rng.standard_normal(4 * H),
               rng.standard_normal((N, T, H))) for _ in range(THREADS)]

    def chain(x, W, h0, Wx, Wh, b, dh):
        emb, c_emb = layers.word_embedding_forward(x, W)
        h, c_lstm = layers.lstm_forward(emb, h0, Wx, Wh, b)
        loss, dscores = layers.temporal_softmax_loss(h, x % H, x % 3 != 0)
        dx, dh0, dWx, dWh, db = layers.lstm_backward(dh + dscores, c_lstm)
        return [h, np.float64(loss), dx, dh0, dWx, dWh, db,
                layers.word_embedding_backward(dx, c_emb)]

    with fastrnn.use_backend(backend):
        want = [chain(*args) for args in inputs]
    wrong = []

    def work(k):
        with fastrnn.use_backend(backend):
            for _ in range(20):
                got = chain(*inputs[k])
                if not all(np.array_equal(g, w) for g, w in zip(got, want[k])):
                    wrong.append(k)

    _run_in_threads(work)
    assert not wrong


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba is not installed")
def test_numba_workqueue_layer_survives_concurrent_parallel_kernels():
    """Numba's fallback threading layer aborts the process on concurrent parallel
    launches; the numba backend makes them take turns there (in a subprocess, so
    that an abort fails this test instead of killing pytest)."""
    code = textwrap.dedent("""
        import threading
        import numba, numpy as np, fastrnn
        from fastrnn import layers
        fastrnn.set_backend("numba")
        x = np.random.default_rng(0).standard_normal((64, 16, 600)).astype(np.float32)
        y, mask = np.zeros((64, 16), int), np.ones((64, 16), bool)   # 614,400 scores: parallel
        want = layers.temporal_softmax_loss(x, y, mask)
        wrong = []
        def work():
            for _ in range(15):
                loss, dx = layers.temporal_softmax_loss(x, y, mask)
                if loss != want[0] or not np.array_equal(dx, want[1]):
                    wrong.append(1)
        threads = [threading.Thread(target=work) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(numba.threading_layer(), len(wrong))
    """)
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["workqueue", "0"]
