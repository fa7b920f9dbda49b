"""Mixed precision (fastrnn.precision): the setting, bf16 conversion, the bf16 GEMM
providers, and the fused engine under bf16 against fp32 on every backend."""
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import gemm, precision
from fastrnn.captioning import engine
from fastrnn.captioning.model import CaptioningRNN

pytestmark = pytest.mark.filterwarnings("ignore:fastrnn precision 'bf16'")


def _bf16_providers():
    names = []
    for name in ("emulated", "onednn", "mkl", "torch"):
        try:
            gemm.bf16_provider(name)
            names.append(name)
        except ImportError:
            pass
    return names


BF16_PROVIDERS = _bf16_providers()


# ------------------------------------------------------------------ the setting

def test_default_is_fp32_and_set_precision_applies_to_every_thread(monkeypatch):
    monkeypatch.delenv("FASTRNN_PRECISION", raising=False)
    assert fastrnn.get_precision() == "fp32"
    seen = []
    try:
        fastrnn.set_precision("bf16")
        t = threading.Thread(target=lambda: seen.append(fastrnn.get_precision()))
        t.start()
        t.join()
        assert fastrnn.get_precision() == "bf16" and seen == ["bf16"]
    finally:
        fastrnn.set_precision(None)
    assert fastrnn.get_precision() == "fp32"


def test_environment_variable_and_its_errors(monkeypatch):
    monkeypatch.setenv("FASTRNN_PRECISION", "bf16")
    assert fastrnn.get_precision() == "bf16"
    monkeypatch.setenv("FASTRNN_PRECISION", "fp16")
    with pytest.raises(ValueError, match=r"FASTRNN_PRECISION='fp16' must be one of \('fp32', 'bf16'\)"):
        fastrnn.get_precision()


def test_use_precision_is_per_thread_and_restores():
    seen = []
    with fastrnn.use_precision("bf16"):
        t = threading.Thread(target=lambda: seen.append(fastrnn.get_precision()))
        t.start()
        t.join()
        assert fastrnn.get_precision() == "bf16"
        with fastrnn.use_precision("fp32"):
            assert fastrnn.get_precision() == "fp32"
        assert fastrnn.get_precision() == "bf16"
    assert seen == ["fp32"] and fastrnn.get_precision() == "fp32"


@pytest.mark.parametrize("call", [fastrnn.set_precision, fastrnn.use_precision])
def test_unknown_names_list_the_valid_ones(call):
    with pytest.raises(ValueError, match=r"one of \('fp32', 'bf16'\), got 'float16'"):
        with call("float16") if call is fastrnn.use_precision else _noop(call("float16")):
            pass


def _noop(_):
    import contextlib
    return contextlib.nullcontext()


def test_capability_detection_reads_cpu_flags():
    assert precision.bf16_capability({"amx_bf16", "amx_tile", "avx512_bf16"}) == \
        ("amx-bf16", "avx512-bf16")
    assert precision.bf16_capability({"avx512_bf16", "avx2"}) == ("avx512-bf16",)
    assert precision.bf16_capability({"avx2", "fma"}) == ()
    assert "none" in precision.describe_capability({"avx2"})
    assert "AMX-BF16" in precision.describe_capability({"amx_bf16", "amx_tile"})
    assert gemm.auto_bf16_choice(()) == "emulated"


@pytest.mark.parametrize("onednn, mkl, want", [(True, True, "onednn"), (True, False, "onednn"),
                                               (False, True, "mkl"), (False, False, "onednn")])
def test_auto_prefers_onednn_on_bf16_hardware(monkeypatch, onednn, mkl, want):
    from fastrnn import _onednn
    monkeypatch.setattr(_onednn, "find_library", lambda: "libdnnl.so.3" if onednn else None)
    monkeypatch.setattr(gemm, "_find_mkl", lambda: "libmkl_rt.so.2" if mkl else None)
    for capability in (("amx-bf16",), ("avx512-bf16",)):
        assert gemm.auto_bf16_choice(capability) == want


def test_slow_cpu_warns_once():
    code = ("import warnings, fastrnn.precision as p\n"
            "p._cpu_flags = lambda: {'avx2'}\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    p.warn_if_slow(); p.warn_if_slow()\n"
            "print(len(w), 'AVX512-BF16' in str(w[0].message))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "True"]


# ------------------------------------------------------------------ conversion

def _reference_bits(x):
    """Round to nearest even, by exact arithmetic on the float64 value."""
    out = np.empty(x.shape, dtype=np.uint16)
    with np.errstate(invalid="ignore"):
        wide = x.astype(np.float64)
    for i, v in enumerate(wide):
        if np.isnan(v):
            out[i] = 0x7FC0 | (0x8000 if np.signbit(v) else 0)
            continue
        bits = int(x.view(np.uint32)[i])
        lo, hi = bits & 0xFFFF0000, (bits & 0xFFFF0000) + 0x10000
        down = float(np.uint32(lo).view(np.float32))
        # Rounding up past the largest finite bf16 gives inf: compare with 2**128 then.
        up = float(np.uint32(hi & 0xFFFFFFFF).view(np.float32))
        if np.isinf(up):
            up = np.copysign(2.0 ** 128, v)
        if bits & 0xFFFF == 0 or np.isinf(v):
            pick = lo
        elif abs(v - down) < abs(up - v) or (abs(v - down) == abs(up - v) and not (lo >> 16) & 1):
            pick = lo
        else:
            pick = hi
        out[i] = pick >> 16
    return out


def test_conversion_rounds_to_nearest_even_and_keeps_nan_and_inf(rng):
    special = np.array([0.0, -0.0, 1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20,
                        -(1 + 2 ** -8), np.inf, -np.inf, np.nan, -np.nan, 3.4e38, -3.4e38,
                        1e-40, -1e-42, 65504.0], dtype=np.float32)
    x = np.concatenate([special, (rng.standard_normal(3000) * 10.0 ** rng.integers(-30, 30, 3000))
                        .astype(np.float32),
                        rng.integers(0, 2 ** 32, 200, dtype=np.uint64).astype(np.uint32)
                        .view(np.float32)])
    want = _reference_bits(x)
    want_nan = np.isnan(x)
    for n in (x.size, precision.PARALLEL_MIN_SIZE + 5):     # one thread, and the pool
        xs = np.resize(x, n)
        bits = precision.to_bf16_bits(xs)
        rounded = precision.round_bf16(xs)
        ref = np.resize(want, n)
        nan = np.resize(want_nan, n)
        assert np.array_equal(bits[~nan], ref[~nan])
        assert np.array_equal(rounded.view(np.uint32) >> 16, bits)
        got = precision.from_bf16_bits(bits)
        assert np.isnan(got[nan]).all() and not np.isnan(got[~nan]).any()
        assert np.array_equal(np.signbit(got[nan]), np.signbit(xs[nan]))
    assert precision.round_bf16(np.float32([3.4e38]))[0] == np.inf   # past the largest bf16


def test_conversion_of_views_in_place_and_errors(rng):
    x = rng.standard_normal((40, 30), dtype=np.float32)
    want = precision.round_bf16(x.copy())
    assert np.array_equal(precision.round_bf16(x.T), want.T)             # non-contiguous
    assert np.array_equal(precision.to_bf16_bits(x[:, ::2]), precision.to_bf16_bits(x)[:, ::2])
    y = x.copy()
    assert precision.round_bf16(y, out=y) is y and np.array_equal(y, want)
    with pytest.raises(TypeError, match="must be float32"):
        precision.round_bf16(x.astype(np.float64))


# ------------------------------------------------------------------ providers

@pytest.mark.parametrize("name", BF16_PROVIDERS)
def test_bf16_provider_matches_float64_product_of_rounded_operands(name, rng):
    p = gemm.bf16_provider(name)
    # torch.mm rounds its output to bf16: a looser bound for it.
    tol = 1e-2 if name == "torch" else 1e-5
    for m, k, n in [(1, 1, 1), (7, 33, 5), (64, 300, 129), (3, 0, 4)]:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((n, k), dtype=np.float32).T        # a transposed operand
        ra, rb = precision.round_bf16(a), precision.round_bf16(np.ascontiguousarray(b))
        want = ra.astype(np.float64) @ rb.astype(np.float64)
        A, B = p.cast(a), p.cast(np.ascontiguousarray(b)).T.copy().T   # B stays transposed
        assert A.dtype == p.operand_dtype
        got = p.mm(A, B)
        scale = max(np.abs(want).max(initial=0), 1)
        assert got.dtype == np.float32 and got.shape == (m, n)
        assert np.abs(got - want).max() <= tol * scale
        out = rng.standard_normal((m, n), dtype=np.float32)
        acc = out.copy()
        p.mm_add(A, B, acc, np.empty_like(acc))
        assert np.abs(acc - (out + want)).max() <= tol * scale
        assert np.abs(p.product(A, B, np.empty((m, n), np.float32)) - want).max() <= tol * scale


def test_bf16_provider_names_and_missing_libraries(monkeypatch):
    from fastrnn import _onednn
    with pytest.raises(ValueError, match="bf16 gemm must be one of"):
        gemm.bf16_provider("fp8")
    monkeypatch.setattr(gemm, "_find_mkl", lambda: None)
    monkeypatch.setattr(_onednn, "find_library", lambda: None)
    saved = {k: gemm._cache.pop(k) for k in [("bf16", "mkl"), ("bf16", "onednn")]
             if k in gemm._cache}
    try:
        with pytest.raises(ImportError, match="pip install mkl"):
            gemm.bf16_provider("mkl")
        with pytest.raises(ImportError, match=r"pip install 'fastrnn\[bf16\]'"):
            gemm.bf16_provider("onednn")
    finally:
        gemm._cache.update(saved)


BITS_PROVIDERS = [n for n in BF16_PROVIDERS if n in ("onednn", "mkl")]


@pytest.mark.parametrize("name", BITS_PROVIDERS)
def test_library_providers_refuse_what_they_would_read_or_write_past(name):
    """A compiled library call trusts the shapes it is given; the provider must check."""
    p = gemm.bf16_provider(name)
    a, b = np.zeros((6, 4), np.uint16), np.zeros((4, 5), np.uint16)
    bad_outs = [np.empty((5, 5), np.float32), np.empty((6, 4), np.float32),
                np.empty((6, 5), np.float64), np.empty((6, 5), np.float32)[:, ::-1],
                np.empty(30, np.float32), [[0.0] * 5] * 6]
    ro = np.empty((6, 5), np.float32)
    ro.flags.writeable = False
    for out in bad_outs + [ro]:
        with pytest.raises(ValueError, match="out must"):
            p.mm(a, b, out=out)
        with pytest.raises(ValueError, match="out must"):
            p.mm_add(a, b, out, None)
    with pytest.raises(ValueError, match="inner sizes differ"):
        p.mm(a, np.zeros((5, 5), np.uint16))
    for x in (a.astype(np.float32), a[0], a.astype(np.int16), a.tolist()):
        with pytest.raises(ValueError, match="uint16 array"):
            p.mm(x, b)
        with pytest.raises(ValueError, match="uint16 array"):
            p.mm(b.T, x)


@pytest.mark.parametrize("name", BITS_PROVIDERS)
def test_library_providers_take_any_operand_layout(name, rng):
    p = gemm.bf16_provider(name)
    big = precision.to_bf16_bits(rng.standard_normal((40, 50), dtype=np.float32))
    ref = precision.from_bf16_bits
    operands = [big[:7, :9], big[::3, 1:10], big[:9, :7].T, big[::-2, ::-3][:7, :9],
                big[:1, :9], big[:7, :1], np.broadcast_to(big[0, :9], (7, 9)),
                np.lib.stride_tricks.as_strided(big, (7, 9), (0, 2))]
    for a in operands:
        rows = a.shape[1]
        for b in (big[10:10 + rows, 3:8], big[20:25, :rows].T, big[:rows, :1]):
            want = ref(a).astype(np.float64) @ ref(b).astype(np.float64)
            got = p.mm(a, b)
            assert np.abs(got - want).max() <= 1e-5 * max(np.abs(want).max(), 1)
            wide = np.full((a.shape[0], b.shape[1] + 3), 7.0, np.float32)
            out = wide[:, :b.shape[1]]                         # rows longer than n
            p.mm_add(a, b, out, None)
            assert np.abs(out - 7.0 - want).max() <= 1e-5 * max(np.abs(want).max(), 1)
            assert (wide[:, b.shape[1]:] == 7.0).all()        # nothing written past n


def test_onednn_from_many_threads_with_a_small_primitive_cache(monkeypatch, rng):
    """Concurrent products of many shapes, with the primitive cache evicting all the
    time: every result is the serial one."""
    if "onednn" not in BF16_PROVIDERS:
        pytest.skip("oneDNN is not installed")
    from fastrnn import _onednn
    monkeypatch.setattr(_onednn, "_CACHE_SIZE", 3)
    dnnl = _onednn.OneDnnMatmul()
    shapes = [(m, 16 + m, 3 + 2 * m) for m in range(1, 12)]
    ops = [(precision.to_bf16_bits(rng.standard_normal((m, k), dtype=np.float32)),
            precision.to_bf16_bits(rng.standard_normal((k, n), dtype=np.float32)))
           for m, k, n in shapes]
    want = [dnnl.matmul(a, b, np.empty((a.shape[0], b.shape[1]), np.float32)) for a, b in ops]
    errors = []

    def work(seed):
        order = np.random.default_rng(seed).permutation(len(ops) * 4) % len(ops)
        for i in order:
            a, b = ops[i]
            got = dnnl.matmul(a, b, np.empty((a.shape[0], b.shape[1]), np.float32))
            if not np.array_equal(got, want[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(dnnl._primitives) <= 3


# ------------------------------------------------------------------ the engine

def _model(cell, N, T, V, D, W, H, seed, holes=True):
    words = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i for i in range(3, V)}}
    m = CaptioningRNN(words, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell, seed=seed)
    rng = np.random.default_rng(seed)
    for k in m.params:       # weights far from zero-mean init, so gradients are not tiny
        m.params[k] += 0.05 * rng.standard_normal(m.params[k].shape).astype(np.float32)
    features = rng.standard_normal((N, D)).astype(np.float32)
    captions = rng.integers(3, V, (N, T + 1))
    captions[:, 0] = 1
    lengths = rng.integers(1, T + 1, N)
    for n, L in enumerate(lengths):
        captions[n, L + 1:] = 0
        if holes and L > 2:
            captions[n, rng.integers(2, L)] = 0      # a hole before the end
    return m, features, captions


def _cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


SHAPES = [  # cell, N, T, V, D, W, H
    ("lstm", 1, 5, 23, 7, 5, 9),
    ("lstm", 13, 7, 41, 19, 11, 17),
    ("rnn", 9, 6, 37, 12, 8, 15),
    ("rnn", 1, 3, 19, 5, 3, 4),
]


@pytest.mark.parametrize("cell, N, T, V, D, W, H", SHAPES)
def test_bf16_loss_and_gradients_close_to_fp32(backend, cell, N, T, V, D, W, H):
    m, features, captions = _model(cell, N, T, V, D, W, H, seed=N * 100 + H)
    with fastrnn.use_precision("fp32"):
        loss32, grads32 = m.loss(features, captions)
    with fastrnn.use_precision("bf16"):
        loss16, grads16 = m.loss(features, captions)
    assert abs(loss16 - loss32) <= 1e-2 * abs(loss32)
    for k in m.params:
        assert grads16[k].dtype == np.float32 and grads16[k].shape == m.params[k].shape
        assert _cosine(grads16[k], grads32[k]) >= 0.999, k


@pytest.mark.parametrize("name", BF16_PROVIDERS)
def test_every_bf16_provider_in_the_engine(name):
    m, features, captions = _model("lstm", 11, 6, 31, 10, 6, 12, seed=5)
    loss32, grads32 = engine.captioning_loss(m.params, features, captions, null_idx=0,
                                             precision="fp32")
    loss16, grads16 = engine.captioning_loss(m.params, features, captions, null_idx=0,
                                             precision="bf16", bf16_gemm=name)
    assert abs(loss16 - loss32) <= 1e-2 * abs(loss32)
    assert min(_cosine(grads16[k], grads32[k]) for k in m.params) >= 0.999


def test_bf16_differs_from_fp32_so_the_comparison_can_fail():
    m, features, captions = _model("lstm", 8, 5, 29, 9, 7, 11, seed=3)
    l32, g32 = engine.captioning_loss(m.params, features, captions, null_idx=0, precision="fp32")
    l16, g16 = engine.captioning_loss(m.params, features, captions, null_idx=0, precision="bf16",
                                      bf16_gemm="emulated")
    assert l16 != l32 and not np.array_equal(g16["Wh"], g32["Wh"])


def test_fp32_is_unchanged_by_the_setting(backend):
    m, features, captions = _model("lstm", 10, 6, 33, 8, 6, 10, seed=9)
    with fastrnn.use_precision("fp32"):
        a = m.loss(features, captions)
    b = m.loss(features, captions)     # the default
    assert a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in m.params)


def test_float64_models_ignore_bf16():
    words = {"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3}
    m = CaptioningRNN(words, input_dim=4, wordvec_dim=3, hidden_dim=5, cell_type="lstm",
                      dtype=np.float64, seed=0)
    features = np.ones((2, 4))
    captions = np.array([[1, 3, 2, 0], [1, 3, 3, 2]])
    a = m.loss(features, captions)
    with fastrnn.use_precision("bf16"):
        b = m.loss(features, captions)
    assert a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in m.params)


def test_solver_honours_bf16_and_tracks_fp32():
    from fastrnn.captioning.solver import CaptioningSolver
    histories = {}
    for prec in ("fp32", "bf16"):
        m, features, captions = _model("lstm", 40, 6, 31, 10, 8, 16, seed=1, holes=False)
        data = {"train_captions": captions, "train_image_idxs": np.arange(40),
                "train_features": features,
                "train_urls": np.array([f"img{i}" for i in range(40)]),
                "idx_to_word": m.idx_to_word, "word_to_idx": m.word_to_idx}
        np.random.seed(0)    # the solver's minibatches follow the global state
        with fastrnn.use_precision(prec):
            solver = CaptioningSolver(m, data, update_rule="adam",
                                      optim_config={"learning_rate": 1e-3}, batch_size=20,
                                      num_epochs=8, verbose=False)
            solver.train()
        histories[prec] = np.array(solver.loss_history)
    assert len(histories["fp32"]) == 16 and np.isfinite(histories["bf16"]).all()
    assert not np.array_equal(histories["bf16"], histories["fp32"])  # bf16 did run
    np.testing.assert_allclose(histories["bf16"], histories["fp32"], rtol=1e-2)


# ------------------------------------------------------------------ fastrnn-train

def test_train_records_precision_and_resume_keeps_it(tmp_path, capsys):
    from fastrnn.captioning import checkpoint
    from fastrnn.captioning.data import synthetic
    from fastrnn.cli import train
    data = tmp_path / "coco"
    synthetic.generate(data, size="tiny", seed=0, progress=False)
    fast = ["--hidden-dim", "16", "--wordvec-dim", "8", "--batch-size", "300",
            "--eval-samples", "0", "--no-progress"]
    out = tmp_path / "run"
    assert train.main(["--data", str(data), "--num-epochs", "1", "--out", str(out),
                       "--precision", "bf16", *fast]) == 0
    assert "precision bf16" in capsys.readouterr().out
    assert fastrnn.get_precision() == "fp32"          # the flag does not outlive the run
    ckpt = out / "checkpoint.npz"
    assert json.loads((out / "metrics.json").read_text())["precision"] == "bf16"
    assert checkpoint.read_checkpoint(ckpt)["precision"] == "bf16"
    assert checkpoint.saved_precision(ckpt) == "bf16"

    assert train.main(["--resume", str(ckpt), "--num-epochs", "2", "--out", str(tmp_path / "r1"),
                       "--eval-samples", "0", "--no-progress"]) == 0
    assert json.loads((tmp_path / "r1" / "metrics.json").read_text())["precision"] == "bf16"
    assert train.main(["--resume", str(ckpt), "--num-epochs", "2", "--out", str(tmp_path / "r2"),
                       "--eval-samples", "0", "--no-progress", "--precision", "fp32"]) == 0
    assert json.loads((tmp_path / "r2" / "metrics.json").read_text())["precision"] == "fp32"
    assert checkpoint.saved_precision(tmp_path / "r2" / "checkpoint.npz") == "fp32"

    with pytest.raises(SystemExit):
        train.main(["--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
