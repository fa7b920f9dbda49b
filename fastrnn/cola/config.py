"""``TrainConfig``: every setting of a CoLA training run, one field per ``fastrnn-cola`` flag.

This module needs no torch, so the command line can build its parser (choices and
defaults come from here) and check a configuration before torch is imported.
``TrainConfig(...)`` checks its fields in ``__post_init__`` and raises
``ConfigError`` (a ValueError) naming the field; ``dataclasses.asdict(config)``
is plain data, which is how a checkpoint stores it.
"""
import math
import os
from dataclasses import dataclass, fields

from fastrnn.cola.data import MAX_LENGTH, N_TRAIN, SPLITS

__all__ = ["TrainConfig", "ConfigError", "POOLINGS", "SCHEDULES", "MEMBER_SEED_STRIDE"]

POOLINGS = ("flatten", "cls", "mean", "max")
SCHEDULES = ("constant", "cosine", "linear")
# Ensemble member k uses seed + 1000 k, so runs with seeds 0, 1, 2 share no member.
MEMBER_SEED_STRIDE = 1000


class ConfigError(ValueError):
    """A bad TrainConfig field. ``str(err)`` names the fields as in Python
    (``swa_start``), ``err.with_flags()`` as on the command line (``--swa-start``)."""

    def __init__(self, names, template, got):
        self.names = tuple(names)
        self.template, self.got = template, got
        super().__init__(self._format(self.names))

    def with_flags(self):
        return self._format(["--" + name.replace("_", "-") for name in self.names])

    def _format(self, names):
        return f"{self.template.format(*names)}, got {self.got}"


@dataclass
class TrainConfig:
    """Data, model and training settings of one CoLA run; the defaults are the recipe.

    The meaning of each field is that of the ``fastrnn-cola`` flag of the same
    name (``fastrnn-cola --help``; ``progress=False`` is ``--no-progress``).
    ``subwords`` is None (off) or (MIN, MAX) character n-gram lengths (the
    strings 'off' and 'MIN-MAX' are accepted too); ``threshold`` is a
    probability in (0, 1) or 'tune'.
    """

    # data
    data: str | None = None
    split_seed: int = 0
    n_train: int = N_TRAIN
    split: str = "random"
    max_train: int | None = None
    min_count: int = 2
    max_length: int = MAX_LENGTH
    subwords: tuple[int, int] | None = None
    subword_min_count: int = 2
    lm_features: bool = False
    lm_order: int = 3
    lm_folds: int = 5
    # model
    hidden_dim: int = 128
    heads: int = 2
    head_dim: int = 96
    dim_feedforward: int = 512
    pooling: str = "flatten"
    mask: bool = True
    # training
    epochs: int = 20
    batch_size: int = 64
    bucket: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.01
    schedule: str = "cosine"
    warmup: float = 0.05
    dropout: float = 0.3
    embed_dropout: float = 0.1
    word_dropout: float = 0.0
    augment: float = 0.0
    label_smoothing: float = 0.0
    ema: float = 0.0
    swa_start: int = 0
    pretrain_epochs: int = 0
    mask_prob: float = 0.15
    patience: int = 5
    time_limit: float = 0.0
    threshold: float | str = 0.5
    seed: int = 0
    ensemble: int = 1
    # run
    out: str | None = None
    threads: int = 2
    bench_batches: int = 20
    progress: bool = True

    def __post_init__(self):
        if self.data is not None:
            self.data = os.fspath(self.data)
        if self.out is not None:
            self.out = os.fspath(self.out)
        self.subwords = _subword_range(self.subwords)
        self.threshold = _threshold(self.threshold)
        for name in ("split_seed", "bucket", "swa_start", "pretrain_epochs", "patience", "seed",
                     "bench_batches"):
            _integer(self, name, 0)
        for name in ("n_train", "min_count", "max_length", "subword_min_count", "lm_order",
                     "hidden_dim", "heads", "head_dim", "dim_feedforward", "epochs",
                     "batch_size", "ensemble", "threads"):
            _integer(self, name, 1)
        _integer(self, "lm_folds", 2)
        if self.max_train is not None:
            _integer(self, "max_train", 1)
        for name in ("lm_features", "mask", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError([name], "{} must be True or False", repr(getattr(self, name)))
        _number(self, "lr", lambda v: v > 0, "a finite number > 0")
        for name in ("weight_decay", "time_limit"):
            _number(self, name, lambda v: v >= 0, "a finite number >= 0")
        for name in ("warmup", "dropout", "embed_dropout", "word_dropout", "label_smoothing",
                     "ema"):
            _number(self, name, lambda v: 0 <= v < 1, "a number in [0, 1)")
        _number(self, "augment", lambda v: 0 <= v <= 1, "a number in [0, 1]")
        _number(self, "mask_prob", lambda v: 0 < v < 1, "in (0, 1)")
        for name, choices in (("split", SPLITS), ("pooling", POOLINGS),
                              ("schedule", SCHEDULES)):
            if getattr(self, name) not in choices:
                raise ConfigError([name], "{} must be one of " + ", ".join(choices),
                                  repr(getattr(self, name)))
        if self.swa_start and self.ema:
            raise ConfigError(["swa_start", "ema"], "{} cannot be combined with {}",
                              f"swa_start={self.swa_start} and ema={self.ema}")
        if self.lm_features and self.augment:
            raise ConfigError(["augment", "lm_features"], "{} cannot be combined with {} (the "
                              "corrupted copies have no LM features)", f"augment={self.augment}")

    @property
    def tuned_threshold(self):
        """True when the decision threshold is chosen on validation."""
        return self.threshold == "tune"

    @classmethod
    def field_names(cls):
        return [f.name for f in fields(cls)]


def _integer(config, name, minimum):
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError([name], "{} must be >= " + str(minimum) + " (an integer)", repr(value))


def _number(config, name, accept, expected):
    value = getattr(config, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and accept(value)
    if not ok:
        raise ConfigError([name], "{} must be " + expected, repr(value))
    setattr(config, name, float(value))


def _subword_range(value):
    """None / 'off' -> None; 'MIN-MAX' or (MIN, MAX) -> (MIN, MAX) n-gram lengths."""
    if value is None or value == "off":
        return None
    given = value
    if isinstance(value, str):
        try:
            value = tuple(int(part) for part in value.split("-"))
        except ValueError:
            value = None
    try:
        n_min, n_max = value
        ok = all(isinstance(n, int) and not isinstance(n, bool) for n in (n_min, n_max))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(["subwords"], "{} must be 'off' or MIN-MAX n-gram lengths such as "
                          "3-5", repr(given))
    if not 1 <= n_min <= n_max:
        raise ConfigError(["subwords"], "{}: need 1 <= MIN <= MAX", f"{n_min}-{n_max}")
    return n_min, n_max


def _threshold(value):
    if value == "tune":
        return value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(["threshold"], "{} must be a number in (0, 1) or 'tune'",
                              repr(value)) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 < value < 1:
        raise ConfigError(["threshold"], "{} must be in (0, 1)", repr(value))
    return float(value)
