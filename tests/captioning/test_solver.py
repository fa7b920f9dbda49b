"""CaptioningSolver: learning, learning-rate schedule, checkpoints, resume, divergence."""
import hashlib
import os
import signal

import numpy as np
import pytest

import fastrnn
from fastrnn.captioning import checkpoint
from fastrnn.captioning.model import CaptioningRNN
from fastrnn.captioning.solver import CaptioningSolver, TrainingDiverged, _sigint_deferred


@pytest.fixture(autouse=True)
def one_thread():
    """These models are small: threads only add synchronisation (and on a busy machine,
    oversubscription), so every test here runs on one thread."""
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(1)
    yield
    fastrnn.set_num_threads(before)


def toy_data(num_images=40, num_captions=120, num_classes=5, dim=16, vocab=20, seed=0):
    """Captions that depend on the image: each image's class fixes its word sequence."""
    rng = np.random.default_rng(seed)
    words = ["<NULL>", "<START>", "<END>"] + [f"w{i}" for i in range(vocab - 3)]
    classes = rng.integers(0, num_classes, num_images)
    features = np.eye(num_classes)[classes] @ rng.standard_normal((num_classes, dim))
    features += 0.1 * rng.standard_normal((num_images, dim))
    sentences = [rng.integers(3, vocab, 5 + c % 10) for c in range(num_classes)]
    image_idxs = rng.integers(0, num_images, num_captions)
    captions = np.zeros((num_captions, 17), dtype=np.int32)
    captions[:, 0] = 1
    for n, c in enumerate(classes[image_idxs]):
        words_of_c = sentences[c]
        captions[n, 1:1 + len(words_of_c)] = words_of_c
        captions[n, 1 + len(words_of_c)] = 2
    return {"train_captions": captions, "train_image_idxs": image_idxs,
            "train_features": features.astype(np.float32),
            "train_urls": np.array([f"img{i}" for i in range(num_images)]),
            "idx_to_word": words, "word_to_idx": {w: i for i, w in enumerate(words)}}


def toy_model(data, cell_type="lstm", seed=0, **dims):
    dims = {"wordvec_dim": 16, "hidden_dim": 32, **dims}
    return CaptioningRNN(data["word_to_idx"], input_dim=data["train_features"].shape[1],
                         cell_type=cell_type, seed=seed, **dims)


def toy_solver(data, **kwargs):
    settings = dict(update_rule="adam", optim_config={"learning_rate": 5e-3}, lr_decay=0.9,
                    batch_size=25, num_epochs=3, verbose=False, progress=False, seed=0)
    settings.update(kwargs)
    return CaptioningSolver(toy_model(data), data, **settings)


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def interrupt_at(solver, call):
    """Make the model's loss raise KeyboardInterrupt on its ``call``-th use (1-based)."""
    real_loss, calls = solver.model.loss, [0]

    def loss(features, captions):
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt
        return real_loss(features, captions)

    solver.model.loss = loss


def assert_same_training(a, b):
    assert a.iteration == b.iteration
    assert a.loss_history == b.loss_history
    assert a.eval_history == b.eval_history
    assert a.rng.bit_generator.state == b.rng.bit_generator.state
    for name in a.model.params:
        np.testing.assert_array_equal(a.model.params[name], b.model.params[name])
        assert a.optim_configs[name].keys() == b.optim_configs[name].keys()
        for key, value in a.optim_configs[name].items():
            np.testing.assert_array_equal(value, b.optim_configs[name][key])


# ----------------------------------------------------------------- learning

@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    from fastrnn.captioning.data import load_coco_data, synthetic
    folder = tmp_path_factory.mktemp("coco") / "tiny"
    synthetic.generate(folder, size="tiny", seed=0, progress=False)
    return load_coco_data(folder)


@pytest.mark.slow
@pytest.mark.parametrize("cell_type, threshold", [("lstm", 0.5), ("rnn", 0.1)])
def test_overfits_100_captions(tiny_coco, cell_type, threshold):
    """The CS231n overfitting check: word vectors 256, hidden 512, Adam 5e-3, batch 25,
    50 epochs over 100 captions. They are of 100 different images, as CS231n's random
    few of 400,135 captions almost surely are: the loss can then reach zero."""
    data = tiny_coco
    _, first_of_each_image = np.unique(data["train_image_idxs"], return_index=True)
    keep = np.random.default_rng(0).choice(first_of_each_image, 100, replace=False)
    small = dict(data, train_captions=data["train_captions"][keep],
                 train_image_idxs=data["train_image_idxs"][keep])
    model = CaptioningRNN(data["word_to_idx"], input_dim=512, wordvec_dim=256, hidden_dim=512,
                          cell_type=cell_type, seed=0)
    solver = CaptioningSolver(model, small, update_rule="adam",
                              optim_config={"learning_rate": 5e-3}, lr_decay=0.995,
                              batch_size=25, num_epochs=50, verbose=False, progress=False,
                              seed=0)
    solver.train()
    assert len(solver.loss_history) == 200
    assert solver.loss_history[0] > 50            # starts near chance: ~11 words x ln(1004)
    assert np.mean(solver.loss_history[-4:]) < threshold


def test_iterations_per_epoch_and_lr_decay():
    data = toy_data(num_captions=120)
    solver = toy_solver(data, batch_size=25, num_epochs=3, lr_decay=0.5).train()
    assert solver.iterations_per_epoch == 4 and len(solver.loss_history) == 12
    assert solver.learning_rate == pytest.approx(5e-3 * 0.5 ** 3)
    small = toy_solver(toy_data(num_captions=10), batch_size=25, num_epochs=2).train()
    assert small.iterations_per_epoch == 1 and len(small.loss_history) == 2


def test_default_learning_rate_is_decayed_too():
    solver = toy_solver(toy_data(), optim_config={}, lr_decay=0.5, num_epochs=1).train()
    assert solver.learning_rate == pytest.approx(1e-3 * 0.5)  # adam's default


def test_same_seed_same_run_other_seed_other_batches():
    data = toy_data()
    a = toy_solver(data, seed=5).train()
    b = toy_solver(data, seed=5).train()
    c = toy_solver(data, seed=6).train()
    assert a.loss_history == b.loss_history
    assert a.loss_history[1:] != c.loss_history[1:]
    assert len(a.iter_times) == len(a.loss_history) and all(t > 0 for t in a.iter_times)


def test_eval_fn_runs_after_every_epoch():
    seen = []

    def eval_fn(solver):
        seen.append(solver.iteration)
        return {"last_loss": solver.loss_history[-1]}

    solver = toy_solver(toy_data(), eval_fn=eval_fn).train()
    assert seen == [4, 8, 12]
    assert [e["epoch"] for e in solver.eval_history] == [1, 2, 3]
    assert solver.eval_history[-1]["last_loss"] == solver.loss_history[-1]


def test_bad_settings_are_named():
    data = toy_data()
    with pytest.raises(ValueError, match="batch_size"):
        toy_solver(data, batch_size=0)
    with pytest.raises(ValueError, match="unknown update rule 'adamw'"):
        toy_solver(data, update_rule="adamw")
    with pytest.raises(ValueError, match="train_features"):
        CaptioningSolver(toy_model(data), {"train_captions": data["train_captions"],
                                           "train_image_idxs": data["train_image_idxs"]})


# ------------------------------------------------------- checkpoints/resume

def test_resume_after_ctrl_c_is_bit_for_bit(tmp_path, backend):
    data = toy_data()
    eval_fn = lambda s: {"mean_loss": float(np.mean(s.loss_history))}  # noqa: E731
    reference = toy_solver(data, eval_fn=eval_fn).train()

    stopped = toy_solver(data, eval_fn=eval_fn, checkpoint_dir=tmp_path)
    interrupt_at(stopped, call=7)   # in the middle of epoch 2, after 6 completed iterations
    with pytest.raises(KeyboardInterrupt):
        stopped.train()
    assert stopped.iteration == 6

    resumed = CaptioningSolver.resume(tmp_path / "checkpoint.npz", data, eval_fn=eval_fn,
                                      verbose=False, progress=False)
    assert resumed.iteration == 6 and len(resumed.loss_history) == 6
    resumed.train()
    assert_same_training(reference, resumed)


def test_interruption_and_checkpoints_are_logged_not_printed(tmp_path, caplog, capsys):
    import logging
    solver = toy_solver(toy_data(), checkpoint_dir=tmp_path)
    interrupt_at(solver, call=7)
    with caplog.at_level(logging.INFO, logger="fastrnn.captioning.solver"):
        with pytest.raises(KeyboardInterrupt):
            solver.train()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "fastrnn.captioning.solver"]
    assert (logging.INFO, f"checkpoint of iteration 4 written to {tmp_path / 'checkpoint.npz'}") \
        in messages   # the end of epoch 1
    assert messages[-1][0] == logging.WARNING
    assert messages[-1][1].startswith("interrupted after iteration 6; checkpoint saved to")
    assert "interrupted" not in capsys.readouterr().out


def test_resume_when_interrupted_during_end_of_epoch_eval(tmp_path):
    data = toy_data()
    calls = []

    def eval_fn(solver):
        calls.append(solver.iteration)
        if len(calls) == 2:           # Ctrl-C while evaluating epoch 2
            raise KeyboardInterrupt
        return {"it": solver.iteration}

    reference = toy_solver(data, eval_fn=lambda s: {"it": s.iteration}).train()
    stopped = toy_solver(data, eval_fn=eval_fn, checkpoint_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        stopped.train()
    resumed = CaptioningSolver.resume(tmp_path / "checkpoint.npz", data, eval_fn=eval_fn,
                                      verbose=False, progress=False).train()
    assert calls == [4, 8, 8, 12]     # epoch 2's evaluation is redone, then epoch 3's
    assert_same_training(reference, resumed)


def test_train_longer_from_an_epoch_checkpoint(tmp_path):
    data = toy_data()
    reference = toy_solver(data, num_epochs=3).train()
    toy_solver(data, num_epochs=2, checkpoint_dir=tmp_path).train()
    resumed = CaptioningSolver.resume(tmp_path / "checkpoint.npz", data, num_epochs=3,
                                      verbose=False, progress=False).train()
    assert_same_training(reference, resumed)


def test_load_checkpoint_into_an_existing_solver(tmp_path):
    data = toy_data()
    first = toy_solver(data, num_epochs=1, checkpoint_dir=tmp_path).train()
    fresh = toy_solver(data)
    fresh.load_checkpoint(tmp_path / "checkpoint.npz")
    assert fresh.iteration == first.iteration
    assert fresh.learning_rate == first.learning_rate
    np.testing.assert_array_equal(fresh.optim_configs["Wx"]["m"], first.optim_configs["Wx"]["m"])
    assert fresh.optim_configs["Wx"]["t"] == first.optim_configs["Wx"]["t"]

    other = CaptioningSolver(toy_model(data, hidden_dim=8), data, verbose=False, progress=False)
    with pytest.raises(ValueError, match="hidden_dim"):
        other.load_checkpoint(tmp_path / "checkpoint.npz")


def test_load_model_round_trip(tmp_path):
    data = toy_data()
    solver = toy_solver(data, num_epochs=1, checkpoint_dir=tmp_path).train()
    model = checkpoint.load_model(tmp_path / "checkpoint.npz")
    assert model.config() == solver.model.config()
    for name, value in solver.model.params.items():
        assert model.params[name].dtype == value.dtype
        np.testing.assert_array_equal(model.params[name], value)
    features = data["train_features"][:5]
    np.testing.assert_array_equal(model.sample(features, beam_size=2),
                                  solver.model.sample(features, beam_size=2))


def test_checkpoint_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        checkpoint.load_model(tmp_path / "nothing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="junk.npz"):
        checkpoint.load_model(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastrnn captioning checkpoint"):
        checkpoint.load_model(tmp_path / "other.npz")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    data = toy_data()
    solver = toy_solver(data, num_epochs=1, checkpoint_dir=tmp_path).train()
    path = tmp_path / "checkpoint.npz"
    before = file_digest(path)

    def broken_savez(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", broken_savez)
    solver.num_epochs = 2
    with pytest.raises(OSError, match="disk full"):
        solver.train()
    assert file_digest(path) == before
    assert os.listdir(tmp_path) == ["checkpoint.npz"]   # no temporary file left behind


# --------------------------------------------------------------- divergence

def test_nan_loss_stops_training_with_the_iteration(tmp_path):
    data = toy_data()
    solver = toy_solver(data, checkpoint_dir=tmp_path)
    real_loss, calls = solver.model.loss, [0]

    def loss(features, captions):
        calls[0] += 1
        value, grads = real_loss(features, captions)
        return (np.float32(np.nan) if calls[0] == 6 else value), grads

    solver.model.loss = loss
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(TrainingDiverged, match="iteration 6 .*epoch 2") as info:
        solver.train()
    assert isinstance(info.value, FloatingPointError)
    assert "untouched" in str(info.value)
    assert solver.iteration == 5 and len(solver.loss_history) == 5

    # the weights are those of iteration 5: an uninterrupted run of 5 iterations agrees
    saved_after_epoch_1 = file_digest(path)
    reference = toy_solver(data)
    interrupt_at(reference, call=6)
    with pytest.raises(KeyboardInterrupt):
        reference.train()
    assert_same_training(reference, solver)
    assert file_digest(path) == saved_after_epoch_1


def test_infinite_gradient_is_caught():
    solver = toy_solver(toy_data())
    real_loss = solver.model.loss

    def loss(features, captions):
        value, grads = real_loss(features, captions)
        grads["Wh"][0, 0] = np.inf
        return value, grads

    solver.model.loss = loss
    with pytest.raises(TrainingDiverged, match="iteration 1 .*gradient of Wh"):
        solver.train()
    assert solver.iteration == 0


def test_ctrl_c_is_held_back_until_an_update_is_applied():
    applied = []
    with pytest.raises(KeyboardInterrupt):
        with _sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            applied.append("rest of the update")
    assert applied == ["rest of the update"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ------------------------------------------------- learning from the images

def zero_features(data):
    zeroed = dict(data)
    zeroed["train_features"] = np.zeros_like(data["train_features"])
    zeroed["val_features"] = np.zeros_like(data["val_features"])
    return zeroed


def val_loss(model, data, num_captions=1000, batch_size=500):
    """Mean cross-entropy per caption of the first ``num_captions`` val captions."""
    captions = data["val_captions"][:num_captions]
    features = data["val_features"][data["val_image_idxs"][:num_captions]]
    total = 0.0
    for start in range(0, len(captions), batch_size):
        loss, _ = model.loss(features[start:start + batch_size],
                             captions[start:start + batch_size])
        total += float(loss) * len(captions[start:start + batch_size])
    return total / len(captions)


@pytest.mark.slow
def test_captions_learn_from_the_image_features(tmp_path):
    """On synthetic COCO the caption content lives in the features, so a trained model must
    do clearly better on val than itself with the features zeroed, and than the same model
    trained on zeroed features (a language model that never sees the image).

    "Better" is judged by the val cross-entropy, which moves smoothly with the weights.
    Measured over model seeds 0-2 and learning rates 4e-3/5e-3/6e-3, in three sweeps that
    round differently (reference Adam before and after a change of the engine's GEMM
    code, fused Adam), in nats:
    seeing 18.2-18.5, features zeroed 23.1-24.2, language model 20.7-21.3, so the
    margins asserted below are under half the smallest seen. BLEU is not smooth: a
    blind model settles on one fixed caption, and which one can change with the float
    rounding of training (features zeroed scored 0.18-0.25, the language model
    0.24-0.25, the seeing model 0.305-0.327), so it only has to be higher by 0.02.
    """
    from fastrnn.captioning.data import load_coco_data, synthetic
    from fastrnn.captioning.metrics import reference_bleu
    synthetic.generate(tmp_path / "coco", size=10_000, seed=0, progress=False)
    data = load_coco_data(tmp_path / "coco")
    blind_data = zero_features(data)

    def trained_on(train_data):
        model = CaptioningRNN(data["word_to_idx"], input_dim=512, wordvec_dim=128,
                              hidden_dim=256, cell_type="lstm", seed=0)
        CaptioningSolver(model, train_data, update_rule="adam",
                         optim_config={"learning_rate": 5e-3}, lr_decay=0.95, batch_size=100,
                         num_epochs=4, verbose=False, progress=False, seed=0).train()
        return model

    def bleu(model, eval_data):
        return reference_bleu(model, eval_data, split="val", num_samples=500, progress=False)

    model = trained_on(data)
    blind = trained_on(blind_data)
    seeing, features_zeroed = val_loss(model, data), val_loss(model, blind_data)
    language_model = val_loss(blind, blind_data)
    assert seeing < features_zeroed - 2.0, (seeing, features_zeroed)
    assert seeing < language_model - 1.0, (seeing, language_model)

    seeing, features_zeroed = bleu(model, data), bleu(model, blind_data)
    language_model = bleu(blind, data)
    assert seeing > features_zeroed + 0.02, (seeing, features_zeroed)
    assert seeing > language_model + 0.02, (seeing, language_model)


def test_on_record_gets_every_logged_iteration_and_evaluation(tmp_path):
    """The records fastrnn-train writes to metrics.jsonl: the print_every cadence
    (1, 4, 7, ... as CS231n prints), whether or not verbose, then each evaluation."""
    import json

    from fastrnn.captioning.data import load_coco_data
    from fastrnn.captioning.data.synthetic import ensure_dataset
    from fastrnn.captioning.model import CaptioningRNN
    from fastrnn.captioning.solver import CaptioningSolver

    data = load_coco_data(ensure_dataset("tiny", 0, cache_dir=tmp_path), max_train=200, seed=0)
    model = CaptioningRNN(data["word_to_idx"], input_dim=data["train_features"].shape[1],
                          wordvec_dim=8, hidden_dim=8, cell_type="lstm", seed=0)
    records = []
    solver = CaptioningSolver(model, data, update_rule="adam",
                              optim_config={"learning_rate": 1e-2}, lr_decay=0.5, batch_size=50,
                              num_epochs=2, print_every=3, verbose=False, seed=0, progress=False,
                              eval_fn=lambda s: {"score": 0.5}, on_record=records.append)
    solver.train()
    iterations = [r for r in records if r["event"] == "iteration"]
    assert [r["iteration"] for r in iterations] == [1, 4, 7]
    assert [r["loss"] for r in iterations] == [solver.loss_history[i - 1] for i in (1, 4, 7)]
    assert [r["learning_rate"] for r in iterations] == [1e-2, 1e-2, 5e-3]
    assert all(r["seconds_per_iteration"] > 0 for r in iterations)
    evals = [r for r in records if r["event"] == "eval"]
    assert [(r["iteration"], r["epoch"], r["score"]) for r in evals] == [(4, 1.0, 0.5), (8, 2.0, 0.5)]
    json.dumps(records)   # plain data
