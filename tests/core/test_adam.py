"""The fused, in-place Adam (optim.adam_in_place, the backends' adam_update kernels, the
solver's use of them) against the reference rule optim.adam."""
import numpy as np
import pytest

import fastrnn
from fastrnn import optim
from fastrnn.backends import load_backend
from fastrnn.captioning.model import CaptioningRNN
from fastrnn.captioning.solver import CaptioningSolver

BACKENDS = fastrnn.available_backends()
COMPILED = [name for name in BACKENDS if name != "numpy"]
RTOL = {np.float64: 1e-10, np.float32: 1e-5}
CONFIG = {"learning_rate": 3e-2, "beta1": 0.8, "beta2": 0.99, "epsilon": 1e-7}

# (shape, layout): odd sizes, one element, 2-D and 3-D, a size above every parallel
# threshold (numba: 2**19 elements, cython: 2**18) and non-contiguous arrays.
CASES = [((1,), "C"), ((7,), "C"), ((13, 5), "C"), ((3, 4, 5), "C"), ((600_001,), "C"),
         ((13, 5), "F"), ((6, 9), "strided")]


def arrays(shape, layout, dtype, rng):
    """Fresh standard-normal array of ``shape`` in the given memory layout."""
    if layout == "strided":      # every other column of a wider array
        return rng.standard_normal((shape[0], 2 * shape[1])).astype(dtype)[:, ::2]
    return np.asarray(rng.standard_normal(shape).astype(dtype), order=layout)


def run_both(shape, layout, dtype, steps=4, seed=0):
    """``steps`` steps of optim.adam and of optim.adam_in_place (on the active backend)
    from the same weights and gradients -> (reference w, config), (fused w, config)."""
    rng = np.random.default_rng(seed)
    w = arrays(shape, layout, dtype, rng)
    ref_w, ref_config = w.copy(), dict(CONFIG)
    fused_w, fused_config = w, dict(CONFIG)
    for _ in range(steps):
        dw = arrays(shape, layout, dtype, rng) * rng.uniform(0.1, 3)
        ref_w, ref_config = optim.adam(ref_w, dw, ref_config)
        same, fused_config = optim.adam_in_place(fused_w, dw, fused_config)
        assert same is fused_w
    return (ref_w, ref_config), (fused_w, fused_config)


def assert_matches_reference(ref, fused, dtype):
    (ref_w, ref_config), (fused_w, fused_config) = ref, fused
    assert fused_config.keys() == ref_config.keys() and fused_config["t"] == ref_config["t"]
    rtol = RTOL[dtype]
    for got, want, what in ((fused_w, ref_w, "w"), (fused_config["m"], ref_config["m"], "m"),
                            (fused_config["v"], ref_config["v"], "v")):
        assert got.dtype == dtype
        scale = np.abs(want).max()
        err = np.abs(got.astype(np.float64) - want).max() / scale
        assert err <= rtol, f"{what}: max error {err:.2e} of its largest value (rtol {rtol})"


# ------------------------------------------------------------------------- kernels

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape, layout", CASES, ids=[f"{s}-{l}" for s, l in CASES])
def test_every_backend_matches_the_reference_rule(backend, shape, layout, dtype):
    ref, fused = run_both(shape, layout, dtype)
    assert_matches_reference(ref, fused, dtype)


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_backends_have_their_own_kernel(name):
    kernel = load_backend(name).adam_update
    assert kernel.__module__ == f"fastrnn.backends.{name}_backend"


@pytest.mark.skipif("numba" not in COMPILED, reason="numba is not installed")
@pytest.mark.parametrize("variant", ["parallel", "serial"])
def test_numba_parallel_and_serial_kernels(monkeypatch, variant):
    import fastrnn.backends.numba_backend as numba_backend
    threshold = 0 if variant == "parallel" else 2 ** 62
    monkeypatch.setattr(numba_backend, "PARALLEL_MIN_ELEMENTS", threshold)
    with fastrnn.use_backend("numba"):
        for dtype in (np.float64, np.float32):
            assert_matches_reference(*run_both((5000,), "C", dtype), dtype)


@pytest.mark.skipif("cython" not in COMPILED, reason="the Cython extension is not built")
def test_cython_kernel_names_a_bad_argument():
    from fastrnn.backends import cython_backend
    kernel = cython_backend._k.adam_update
    w = np.zeros((4, 6))
    good = [w, np.ones_like(w), np.zeros_like(w), np.zeros_like(w)]
    scalars = (1e-3, 0.9, 0.999, 1e-8, 0.1, 0.001)
    for index, name, bad in ((1, "dw", np.ones((4, 6)).T), (2, "m", np.zeros((4, 5))),
                             (3, "v", np.zeros((4, 6), np.float32))):
        args = list(good)
        args[index] = bad
        with pytest.raises(ValueError, match=f"{name} must be a C-contiguous float64 array"):
            kernel(*args, *scalars)
    frozen = np.zeros_like(w)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="m is read-only"):
        kernel(w, good[1], frozen, good[3], *scalars)


# ---------------------------------------------------------------------- bad input

def test_bad_input_is_named_and_changes_nothing(backend):
    w, dw = np.ones((3, 4), np.float32), np.full((3, 4), 0.5, np.float32)
    frozen = w.copy()
    frozen.flags.writeable = False
    shared = np.zeros_like(w)
    calls = {
        "dw is float64; w is float32": lambda: optim.adam_in_place(w, dw.astype(np.float64)),
        r"dw has shape \(2, 4\); w has \(3, 4\)": lambda: optim.adam_in_place(w, dw[:2]),
        "w must be float32 or float64, got int64": lambda: optim.adam_in_place(
            w.astype(np.int64), dw),
        "w must be a numpy.ndarray, got list": lambda: optim.adam_in_place(w.tolist(), dw),
        r"config\['v'\] has shape \(4,\)": lambda: optim.adam_in_place(
            w, dw, {"v": np.zeros(4, np.float32)}),
        "w is read-only": lambda: optim.adam_in_place(frozen, dw),
        "w and dw share memory": lambda: optim.adam_in_place(w, w),
        r"config\['m'\] and config\['v'\] share memory": lambda: optim.adam_in_place(
            w, dw, {"m": shared, "v": shared}),
    }
    for message, call in calls.items():
        with pytest.raises((TypeError, ValueError), match=f"adam_in_place: {message}"):
            call()
    np.testing.assert_array_equal(w, 1)
    np.testing.assert_array_equal(shared, 0)


# ------------------------------------------------------------------------- solver

def toy_data(num_images=30, num_captions=90, dim=12, vocab=15, seed=0):
    rng = np.random.default_rng(seed)
    words = ["<NULL>", "<START>", "<END>"] + [f"w{i}" for i in range(vocab - 3)]
    captions = np.zeros((num_captions, 9), dtype=np.int32)
    captions[:, 0] = 1
    captions[:, 1:7] = rng.integers(3, vocab, (num_captions, 6))
    captions[:, 7] = 2
    return {"train_captions": captions,
            "train_image_idxs": rng.integers(0, num_images, num_captions),
            "train_features": rng.standard_normal((num_images, dim)).astype(np.float32),
            "train_urls": np.array([f"img{i}" for i in range(num_images)]),
            "word_to_idx": {w: i for i, w in enumerate(words)}}


def toy_solver(data, update_rule="adam", dtype=np.float64, **kwargs):
    model = CaptioningRNN(data["word_to_idx"], input_dim=data["train_features"].shape[1],
                          wordvec_dim=8, hidden_dim=16, cell_type="lstm", dtype=dtype, seed=1)
    settings = dict(update_rule=update_rule, optim_config={"learning_rate": 1e-2},
                    lr_decay=0.9, batch_size=20, num_epochs=3, verbose=False, progress=False,
                    seed=0)
    return CaptioningSolver(model, data, **{**settings, **kwargs})


def reference_adam(w, dw, config=None):
    """optim.adam behind another name: the solver calls it as a value rule."""
    return optim.adam(w, dw, config)


def test_solver_fused_adam_follows_the_reference_rule(backend):
    data = toy_data()
    fused = toy_solver(data)
    reference = toy_solver(data, update_rule=reference_adam)
    assert fused.fused_adam and not reference.fused_adam
    fused.train()
    reference.train()
    assert len(fused.loss_history) == 12
    np.testing.assert_allclose(fused.loss_history, reference.loss_history, rtol=1e-12)
    for name, w in reference.model.params.items():
        np.testing.assert_allclose(fused.model.params[name], w, rtol=1e-10, atol=1e-14)
        for key in ("m", "v"):
            np.testing.assert_allclose(fused.optim_configs[name][key],
                                       reference.optim_configs[name][key], rtol=1e-10, atol=1e-14)
        assert fused.optim_configs[name]["t"] == reference.optim_configs[name]["t"] == 12
    if backend == "numpy":   # the NumPy kernel rounds exactly as optim.adam does
        assert fused.loss_history == reference.loss_history


def test_solver_never_writes_the_callers_arrays(tmp_path):
    data = toy_data()
    solver = toy_solver(data, num_epochs=1, checkpoint_dir=tmp_path)
    given = dict(solver.model.params)
    given_copy = {name: w.copy() for name, w in given.items()}
    seen = []
    solver.eval_fn = lambda s: seen.append(s.model.params["Wh"]) or {}
    solver.train()
    for name, w in given.items():   # the model's weights as passed in
        np.testing.assert_array_equal(w, given_copy[name])
        assert solver.model.params[name] is not w

    # within one train() call the solver's own arrays are updated in place ...
    solver.num_epochs = 3
    after_first = {name: w.copy() for name, w in solver.model.params.items()}
    held = dict(solver.model.params)
    held_m = solver.optim_configs["Wh"]["m"]
    held_m_copy = held_m.copy()
    solver.train()
    assert seen[1] is seen[2] is solver.model.params["Wh"]
    # ... while arrays from an earlier call, which a caller may hold, stay as they were
    for name, w in held.items():
        np.testing.assert_array_equal(w, after_first[name])
    np.testing.assert_array_equal(held_m, held_m_copy)
    assert solver.iteration == 12


def test_resume_is_bit_for_bit_with_the_fused_adam(tmp_path, backend):
    data = toy_data()
    reference = toy_solver(data).train()
    toy_solver(data, num_epochs=2, checkpoint_dir=tmp_path).train()
    resumed = CaptioningSolver.resume(tmp_path / "checkpoint.npz", data, num_epochs=3,
                                      verbose=False, progress=False)
    assert resumed.fused_adam and resumed.optim_configs["Wh"]["t"] == 8
    loaded = [resumed.model.params["Wh"], resumed.optim_configs["Wh"]["m"],
              resumed.optim_configs["Wh"]["v"]]
    loaded_copy = [a.copy() for a in loaded]
    resumed.train()
    assert resumed.loss_history == reference.loss_history
    for name, w in reference.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], w)
        for key in ("m", "v", "t"):
            np.testing.assert_array_equal(resumed.optim_configs[name][key],
                                          reference.optim_configs[name][key])
    for array, copy in zip(loaded, loaded_copy):   # copied before the first in-place step
        np.testing.assert_array_equal(array, copy)


def test_other_rules_still_get_values():
    data = toy_data()
    calls = []

    def halving(w, dw, config=None):
        calls.append(w)
        return w - 0.5 * dw, config or {}

    solver = toy_solver(data, update_rule=halving, num_epochs=1)
    calls.clear()                    # the solver's probe for a default learning rate
    before = dict(solver.model.params)
    snapshot = {name: w.copy() for name, w in before.items()}
    solver.train()
    assert not solver.fused_adam and len(calls) == 4 * len(before)
    for name, w in before.items():
        np.testing.assert_array_equal(w, snapshot[name])
        assert solver.model.params[name] is not w
