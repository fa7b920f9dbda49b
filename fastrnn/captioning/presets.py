"""Named configurations of the captioning LSTM: the training presets of ``fastrnn-train``
and the benchmark shapes of ``fastrnn-bench``.

``TRAINING_PRESETS``: name -> the settings ``fastrnn-train --preset NAME`` starts from
(each has a flag that overrides it): cell type, hidden and word-vector sizes, weight
dtype, batch size, epochs, update rule, learning rate and its decay per epoch, and how
often the loss is logged.

- ``"default"`` learns the built-in synthetic COCO set in minutes;
- ``"baseline"`` is the full-COCO reference run: 3 epochs of all 400,135 training
  captions in batches of 1,024 (1,170 iterations).

``BENCHMARK_SHAPES``: name -> the shape of one timed training iteration (LSTM, Adam):
``N`` captions of ``T`` timesteps, ``D``-dimensional image features, ``W``-dimensional
word vectors, ``H`` hidden units and ``V`` words; ``iters`` timed iterations after
``warmup`` untimed ones, and ``sgemm``, the side of the square float32 product timed
beside them as the machine's reference rate.

- ``"full"`` is the model and batch of the ``"baseline"`` preset (its ``N``, ``W`` and
  ``H`` are read from it, so the two cannot drift apart), on COCO's shapes: 512-d PCA
  features, captions of 17 tokens (16 steps), 1,004 words;
- ``"small"`` and ``"tiny"`` shrink it for a quick run and for smoke tests.
"""

TRAINING_PRESETS = {
    "default": dict(cell_type="lstm", hidden_dim=512, wordvec_dim=256, batch_size=100,
                    num_epochs=6, update_rule="adam", lr=5e-3, lr_decay=0.95,
                    dtype="float32", print_every=100),
    "baseline": dict(cell_type="lstm", hidden_dim=2048, wordvec_dim=256, batch_size=1024,
                     num_epochs=3, update_rule="adam", lr=1e-4, lr_decay=0.9,
                     dtype="float32", print_every=10),
}

_BASELINE = TRAINING_PRESETS["baseline"]

BENCHMARK_SHAPES = {
    "full": dict(N=_BASELINE["batch_size"], T=16, D=512, W=_BASELINE["wordvec_dim"],
                 H=_BASELINE["hidden_dim"], V=1004, iters=5, warmup=1, sgemm=4096),
    "small": dict(N=512, T=16, D=512, W=256, H=768, V=1004, iters=5, warmup=1, sgemm=2048),
    "tiny": dict(N=16, T=16, D=32, W=16, H=32, V=1004, iters=2, warmup=1, sgemm=256),
}
