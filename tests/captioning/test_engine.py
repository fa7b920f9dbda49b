"""The fused training path (fastrnn.captioning.engine) against the reference captioning model.

The oracle is ``CaptioningRNN._loss_reference`` run on the NumPy backend. The
engine runs with the NumPy reference kernels (so its own logic is tested on any
install) and with every compiled backend's kernels that this install has.
"""
import importlib.util
import tracemalloc

import numpy as np
import pytest

import fastrnn
from fastrnn import gemm as gemm_module
from fastrnn.backends import load_backend
from fastrnn.captioning import engine
from fastrnn.captioning.model import CaptioningRNN
from fastrnn.gradcheck import rel_error

KERNELS = fastrnn.available_backends()          # 'numpy' always, compiled ones when built
GEMMS = ["auto", "numpy"] + (["torch", "onednn"] if importlib.util.find_spec("torch") else [])
NULL, START, END = 0, 1, 2


def _vocab(V):
    words = ["<NULL>", "<START>", "<END>", "<UNK>"] + [f"w{i}" for i in range(V - 4)]
    return {w: i for i, w in enumerate(words)}


def _model(rng, cell, dtype, V=13, D=7, W=5, H=6):
    model = CaptioningRNN(_vocab(V), input_dim=D, wordvec_dim=W, hidden_dim=H,
                          cell_type=cell, dtype=dtype, seed=int(rng.integers(1 << 30)))
    # Non-zero biases and larger weights, so that every term of the gradient matters.
    for k, v in model.params.items():
        model.params[k] = (v + 0.3 * rng.standard_normal(v.shape)).astype(dtype)
    return model


def _captions(rng, N, T, V, holes=True):
    """<START> words <END> then <NULL> padding, of random lengths; with holes,
    some <NULL> targets also sit in the middle of a caption."""
    captions = np.full((N, T + 1), NULL, dtype=np.int64)
    captions[:, 0] = START
    for n in range(N):
        length = int(rng.integers(0, T + 1))
        captions[n, 1:length + 1] = rng.integers(3, V, length)
        if length < T:
            captions[n, length + 1] = END
    if holes:
        hole = rng.random((N, T)) < 0.2
        captions[:, 1:][hole] = NULL
    return captions


def _reference(model, features, captions):
    with fastrnn.use_backend("numpy"):
        return model._loss_reference(features, captions)


def _assert_equal_to_reference(model, features, captions, kernels="numpy", gemm="numpy"):
    loss0, grads0 = _reference(model, features, captions)
    loss1, grads1 = engine.captioning_loss(model.params, features, captions, null_idx=NULL,
                                           cell_type=model.cell_type,
                                           kernels=load_backend(kernels), gemm=gemm)
    assert type(loss1) is model.dtype.type
    assert sorted(grads1) == sorted(model.params)
    for k in grads0:
        assert grads1[k].shape == grads0[k].shape and grads1[k].dtype == model.dtype, k
    if model.dtype == np.float64:
        assert rel_error(np.float64(loss0), np.float64(loss1)) < 1e-10
        for k in grads0:
            assert rel_error(grads0[k], grads1[k]) < 1e-8, (k, rel_error(grads0[k], grads1[k]))
    else:
        assert abs(loss1 - loss0) <= 1e-5 * abs(loss0)
        for k in grads0:
            err = np.linalg.norm(grads1[k] - grads0[k]) / max(np.linalg.norm(grads0[k]), 1e-12)
            assert err < 1e-4, (k, err)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_equals_reference_on_random_shapes_with_holes(kernels, dtype, cell):
    rng = np.random.default_rng(5)
    for _ in range(3):
        V, D, W, H = (int(rng.integers(5, 20)), int(rng.integers(1, 9)),
                      int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        N, T = int(rng.integers(1, 12)), int(rng.integers(1, 9))
        model = _model(rng, cell, dtype, V=V, D=D, W=W, H=H)
        features = rng.standard_normal((N, D)).astype(dtype)
        _assert_equal_to_reference(model, features, _captions(rng, N, T, V), kernels)


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gemm_providers_agree_with_reference(gemm, dtype):
    rng = np.random.default_rng(6)
    model = _model(rng, "lstm", dtype)
    features = rng.standard_normal((8, 7)).astype(dtype)
    _assert_equal_to_reference(model, features, _captions(rng, 8, 6, 13), gemm=gemm)


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
@pytest.mark.parametrize("N,T", [(1, 1), (1, 5), (6, 1)])
def test_single_row_and_single_step(cell, N, T):
    rng = np.random.default_rng(N * 10 + T)
    model = _model(rng, cell, np.float64)
    features = rng.standard_normal((N, 7))
    captions = _captions(rng, N, T, 13, holes=False)
    captions[0, 1] = 5  # at least one target with a loss
    _assert_equal_to_reference(model, features, captions)


def test_rows_without_any_target_get_no_gradient():
    rng = np.random.default_rng(7)
    model = _model(rng, "lstm", np.float64)
    features = rng.standard_normal((5, 7))
    captions = _captions(rng, 5, 6, 13)
    captions[[1, 3], 1:] = NULL  # all-NULL rows, between real ones
    captions[0, 1:4] = [4, 5, END]
    _assert_equal_to_reference(model, features, captions)


def test_batch_without_any_target_has_zero_loss_and_gradients():
    rng = np.random.default_rng(8)
    model = _model(rng, "lstm", np.float64)
    captions = np.full((4, 6), NULL)
    captions[:, 0] = START
    loss, grads = engine.captioning_loss(model.params, rng.standard_normal((4, 7)), captions,
                                         null_idx=NULL, kernels=load_backend("numpy"))
    assert loss == 0
    assert all(not g.any() for g in grads.values())
    _assert_equal_to_reference(model, rng.standard_normal((4, 7)), captions)


def test_a_hole_mid_caption_still_runs_through_the_recurrence():
    # The state passes through the masked position (the word fed in there is
    # <NULL>); the targets after the hole depend on that step.
    rng = np.random.default_rng(9)
    model = _model(rng, "lstm", np.float64)
    features = rng.standard_normal((2, 7))
    captions = np.array([[START, 4, NULL, 6, 7, END],
                         [START, 4, 9, 6, 7, END]])
    _assert_equal_to_reference(model, features, captions)


def test_batch_plan_matches_a_brute_force_listing():
    rng = np.random.default_rng(10)
    captions = _captions(rng, 9, 7, 13)
    plan = engine.plan_batch(captions, NULL)
    mask = captions[:, 1:] != NULL
    lengths = [max([t + 1 for t in range(7) if mask[n, t]], default=0) for n in range(9)]
    assert sorted(lengths, reverse=True) == list(plan.lengths)
    assert [lengths[n] for n in plan.order] == list(plan.lengths)
    tokens, targets, rows = [], [], []
    for t in range(7):
        active = [n for n in plan.order if lengths[n] > t]
        assert plan.active[t] == len(active)
        for n in active:
            if mask[n, t]:
                rows.append(len(tokens))
                targets.append(captions[n, t + 1])
            tokens.append(captions[n, t])
    assert list(plan.tokens) == tokens and list(plan.targets) == targets
    assert plan.rows == len(tokens)
    assert (plan.selected is None and rows == list(range(len(tokens)))) or \
        list(plan.selected) == rows


def test_workspace_is_reused_and_memory_does_not_grow():
    rng = np.random.default_rng(11)
    model = _model(rng, "lstm", np.float32, V=30, D=16, W=8, H=32)
    features = rng.standard_normal((64, 16)).astype(np.float32)
    batches = [_captions(rng, 64, 12, 30) for _ in range(3)]
    engine.clear_workspaces()
    kernels = load_backend("numpy")

    def step(captions):
        engine.captioning_loss(model.params, features, captions, null_idx=NULL, kernels=kernels)

    step(batches[0])
    ws = engine.get_workspace(64, 12, 32, 128, 30, np.float32)
    step(batches[1])
    assert engine.get_workspace(64, 12, 32, 128, 30, np.float32) is ws
    tracemalloc.start()
    try:
        step(batches[2])
        baseline = tracemalloc.get_traced_memory()[0]
        for i in range(6):
            step(batches[i % 3])
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"memory grew by {grown} bytes over 6 calls"


def test_at_most_two_workspaces_are_cached():
    engine.clear_workspaces()
    for N in (2, 3, 4):
        engine.get_workspace(N, 3, 4, 16, 10, np.float64)
    assert len(engine._workspaces) == engine.MAX_CACHED_WORKSPACES == 2
    engine.clear_workspaces()


def test_explicit_workspace_of_the_wrong_shape_is_refused():
    rng = np.random.default_rng(12)
    model = _model(rng, "lstm", np.float64)
    ws = engine.Workspace(3, 5, 6, 24, 13, np.float64)
    with pytest.raises(ValueError, match="workspace was made for"):
        engine.captioning_loss(model.params, rng.standard_normal((4, 7)), _captions(rng, 4, 5, 13),
                               null_idx=NULL, workspace=ws, kernels=load_backend("numpy"))


def test_bad_input_is_refused_with_the_argument_named():
    rng = np.random.default_rng(13)
    model = _model(rng, "lstm", np.float64)
    features, captions = rng.standard_normal((4, 7)), _captions(rng, 4, 5, 13)
    call = lambda **kw: engine.captioning_loss(**{  # noqa: E731
        "params": model.params, "features": features, "captions": captions,
        "null_idx": NULL, **kw})
    with pytest.raises(ValueError, match="cell_type"):
        call(cell_type="gru")
    with pytest.raises(ValueError, match="Wx"):
        call(cell_type="rnn")  # LSTM weights are 4H wide
    with pytest.raises(TypeError, match="features.*float32.*float64|features is float32"):
        call(features=features.astype(np.float32))
    with pytest.raises(ValueError, match="captions holds token id 13"):
        call(captions=np.where(captions == END, 13, captions))
    with pytest.raises(ValueError, match="captions must have shape"):
        call(captions=captions[:, :1])
    with pytest.raises(ValueError, match="null_idx"):
        call(null_idx=99)
    with pytest.raises(ValueError, match="params lacks"):
        call(params={k: v for k, v in model.params.items() if k != "Wh"})
    with pytest.raises(ValueError, match="gemm must be one of"):
        call(gemm="mkl")


def test_timings_name_every_phase():
    rng = np.random.default_rng(14)
    model = _model(rng, "lstm", np.float64)
    timings = {}
    engine.captioning_loss(model.params, rng.standard_normal((4, 7)), _captions(rng, 4, 5, 13),
                           null_idx=NULL, kernels=load_backend("numpy"), timings=timings)
    assert {"forward: recurrence", "backward: recurrence", "vocabulary + softmax",
            "weight gradients"} <= set(timings)
    assert all(v >= 0 for v in timings.values())


COMPILED = [name for name in KERNELS if name != "numpy"]


@pytest.mark.parametrize("backend_name", COMPILED or [pytest.param("none", marks=pytest.mark.skip(
    reason="no compiled backend in this install"))])
def test_model_uses_the_fast_path_on_compiled_backends(backend_name, monkeypatch):
    rng = np.random.default_rng(15)
    model = _model(rng, "lstm", np.float64)
    features, captions = rng.standard_normal((6, 7)), _captions(rng, 6, 5, 13)
    calls = []
    fused = engine.captioning_loss
    monkeypatch.setattr(engine, "captioning_loss", lambda *a, **kw: calls.append(1) or fused(*a, **kw))
    loss0, grads0 = _reference(model, features, captions)
    with fastrnn.use_backend(backend_name):
        loss1, grads1 = model.loss(features, captions)
    assert calls == [1]
    assert rel_error(loss0, loss1) < 1e-10
    assert all(rel_error(grads0[k], grads1[k]) < 1e-8 for k in grads0)


def test_model_keeps_the_reference_path_on_the_numpy_backend(monkeypatch):
    rng = np.random.default_rng(16)
    model = _model(rng, "rnn", np.float64)
    monkeypatch.setattr(engine, "captioning_loss", lambda *a, **kw: pytest.fail("fast path used"))
    with fastrnn.use_backend("numpy"):
        model.loss(rng.standard_normal((3, 7)), _captions(rng, 3, 4, 13))


@pytest.mark.parametrize("gemm", GEMMS)
def test_gemm_providers_agree_where_auto_takes_its_fast_route(gemm):
    """Big enough (n * H * 4H >= AUTO_MIN_FLOP) that 'auto' sends the recurrent and
    vocabulary products to oneDNN when PyTorch is installed."""
    rng = np.random.default_rng(26)
    model = _model(rng, "lstm", np.float32, V=40, D=9, W=11, H=256)
    N = 150
    assert N * 256 * 1024 >= gemm_module.AUTO_MIN_FLOP
    features = rng.standard_normal((N, 9)).astype(np.float32)
    _assert_equal_to_reference(model, features, _captions(rng, N, 5, 40), gemm=gemm)


def test_default_gemm_needs_no_pytorch(monkeypatch):
    """Without a usable PyTorch, 'auto' quietly uses NumPy; asking for torch or onednn
    by name raises an ImportError that says what is missing."""
    def no_torch(self):
        raise ImportError("No module named 'torch'")
    monkeypatch.setattr(gemm_module.TorchGemm, "__init__", no_torch)
    monkeypatch.setattr(gemm_module.OneDnnGemm, "__init__", no_torch)
    gemm_module.clear_cache()
    try:
        assert gemm_module.gemm_provider("auto").uses == "numpy"
        rng = np.random.default_rng(17)
        model = _model(rng, "lstm", np.float32)
        _assert_equal_to_reference(model, rng.standard_normal((5, 7)).astype(np.float32),
                                   _captions(rng, 5, 6, 13), gemm="auto")
        for name in ("torch", "onednn"):
            with pytest.raises(ImportError, match=f"gemm='{name}' needs PyTorch"):
                gemm_module.gemm_provider(name)
    finally:
        gemm_module.clear_cache()


@pytest.mark.parametrize("R, V", [(0, 5), (1, 1), (40, 3), (257, 1004)])
def test_scatter_add_rows_equals_add_at(R, V):
    """The reference kernel against np.add.at; repeated tokens must accumulate, onto
    what ``out`` already holds."""
    rng = np.random.default_rng(R)
    tokens, rows = rng.integers(0, V, R), rng.standard_normal((R, 6))
    out = rng.standard_normal((V, 6))
    want = out.copy()
    np.add.at(want, tokens, rows)
    load_backend("numpy").scatter_add_rows(tokens, rows, out)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
