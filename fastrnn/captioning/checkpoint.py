"""Training checkpoints: one ``.npz`` file, written atomically.

A checkpoint holds everything needed to continue training bit for bit: the
model's weights and configuration, every optimizer state (Adam's m, v, t ...),
the minibatch generator's state, the iteration count, the loss history and the
solver settings. Arrays are stored as npz entries; everything else is one JSON
document in the entry ``meta``, so loading never unpickles anything.

    param/<name>           model weights
    optim/<param>/<key>    array-valued optimizer state
    history/<name>         loss_history, iter_times (float64)
    meta                   JSON: format, model config, solver settings and
                           counters, optimizer scalars, RNG state, eval history,
                           the precision trained in (fastrnn.precision)

The file is first written to a temporary file in the same folder, flushed to
disk, then renamed over the old one (``os.replace`` is atomic), so a crash, a
Ctrl-C or a full disk while saving leaves the previous checkpoint whole. The
temporary file is named ``.tmp-<name>-<pid>@<host>-<random>``; one left behind by
a writer that was killed (kill -9) is removed by the next write of that file
from the same host once its pid is no longer alive. The writer is
``fastrnn._io.write_atomically``, the one every file fastrnn writes goes through.

Only finite state is saved: ``save_checkpoint`` refuses weights, optimizer
arrays or a learning rate that hold NaN or infinity (``NonFiniteState``), so a
checkpoint on disk is always one that training can continue from. Reading a
file that is not a whole checkpoint of this format raises ``CheckpointError``
(a ValueError) naming the file.
"""
import errno
import json
import math
import numbers
import os
import zipfile
import zlib

import numpy as np

# The atomic writer lives in fastrnn._io (one for every file fastrnn writes); its names
# stay importable from here.
from fastrnn._io import (  # noqa: F401
    _PROCESS_START,
    _fsync_folder,
    _owner,
    _pid_alive,
    _temp_prefix,
    json_default,
    remove_stale_temp_files,
    write_atomically,
)
from fastrnn.captioning.model import CaptioningRNN

__all__ = ["save_checkpoint", "read_checkpoint", "read_meta", "load_model",
           "model_from_checkpoint", "nonfinite_state", "saved_precision", "write_atomically",
           "remove_stale_temp_files", "CheckpointError", "CheckpointWriteError",
           "NonFiniteState", "FORMAT", "VERSION"]

FORMAT = "fastrnn-captioning-checkpoint"
VERSION = 1
_META_KEYS = {"model": dict, "optim": dict, "solver": dict}
_HISTORY_KEYS = ("history/loss_history", "history/iter_times")
# Everything np.load and the zip reader raise on a truncated, empty or corrupted file.
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
                UnicodeDecodeError)


class CheckpointError(ValueError):
    """The file is not a readable checkpoint of this format (the message names it)."""


class NonFiniteState(ValueError):
    """save_checkpoint was given weights, optimizer state or a learning rate with NaN/inf."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (e.g. the disk is full); the previous one is untouched."""

    def __str__(self):
        return self.strerror or super().__str__()


def nonfinite_state(params, optim_configs=None):
    """Names of the non-finite parts of a training state ([] when all is finite):
    'param <name>', 'optim <name>/<key>', 'learning_rate of <name> = nan'."""
    bad = [f"param {name}" for name, w in params.items() if not np.isfinite(w).all()]
    for name, config in (optim_configs or {}).items():
        for key, value in config.items():
            if isinstance(value, np.ndarray) and value.dtype.kind in "fc":
                if not np.isfinite(value).all():
                    bad.append(f"optim {name}/{key}")
            elif isinstance(value, numbers.Real) and not isinstance(value, bool) \
                    and not math.isfinite(value):
                bad.append(f"{key} of {name} = {value}")
    return bad


def save_checkpoint(path, model, optim_configs=None, rng_state=None, solver=None,
                    loss_history=(), iter_times=(), precision=None):
    """Write a checkpoint to ``path`` atomically; returns ``path``.

    model: a CaptioningRNN. optim_configs: {param name: config dict} as kept by
    the solver. rng_state: ``Generator.bit_generator.state``. solver: a
    JSON-serialisable dict of solver settings and counters. precision: 'fp32' or
    'bf16' (default: the one in force, ``fastrnn.get_precision()``).

    Raises NonFiniteState (nothing written) if a weight, an optimizer array or
    scalar is NaN or infinite, and CheckpointWriteError if the file cannot be
    written; in both cases a checkpoint already at ``path`` is left as it was.
    """
    bad = nonfinite_state(model.params, optim_configs)
    if bad:
        raise NonFiniteState(f"not writing checkpoint {os.fspath(path)}: non-finite "
                             f"{', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}")
    from fastrnn.precision import get_precision
    arrays = {f"param/{k}": v for k, v in model.params.items()}
    optim_scalars = {}
    for name, config in (optim_configs or {}).items():
        optim_scalars[name] = {}
        for key, value in config.items():
            if isinstance(value, np.ndarray):
                arrays[f"optim/{name}/{key}"] = value
            else:
                optim_scalars[name][key] = value
    arrays["history/loss_history"] = np.asarray(loss_history, dtype=np.float64)
    arrays["history/iter_times"] = np.asarray(iter_times, dtype=np.float64)
    meta = {"format": FORMAT, "version": VERSION, "model": model.config(),
            "optim": optim_scalars, "rng_state": rng_state, "solver": solver or {},
            "precision": precision or get_precision()}
    arrays["meta"] = np.array(json.dumps(meta, default=to_builtin))
    try:
        write_atomically(path, lambda f: np.savez(f, **arrays))
    except OSError as err:
        kept = ("the previous checkpoint is kept" if os.path.isfile(path)
                else "no checkpoint was written")
        raise CheckpointWriteError(err.errno or errno.EIO,
                                   f"cannot write checkpoint {os.fspath(path)}: "
                                   f"{err.strerror or err}; {kept}") from err
    return path


def _not_a_checkpoint(path, why):
    return CheckpointError(f"{path} is not a fastrnn captioning checkpoint: {why} (expected a "
                           f"checkpoint.npz written by fastrnn-train or CaptioningSolver)")


def _open(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist (fastrnn-train writes "
                                f"checkpoint.npz into its --out folder)")
    if not os.path.isfile(path):
        raise _not_a_checkpoint(path, "is not a file")
    try:
        return np.load(path, allow_pickle=False)
    except _READ_ERRORS as err:
        raise _not_a_checkpoint(path, f"not a readable .npz file ({_reason(err)})") from None


def _reason(err):
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _meta_of(path, f):
    if not hasattr(f, "files") or "meta" not in f.files:
        raise _not_a_checkpoint(path, "no 'meta' entry")
    try:
        meta = json.loads(str(f["meta"]))
    except _READ_ERRORS as err:
        raise _not_a_checkpoint(path, f"unreadable 'meta' entry ({_reason(err)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _not_a_checkpoint(path, f"no '{FORMAT}' format in its metadata")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} is format version {meta.get('version')}; "
                              f"this fastrnn reads version {VERSION}")
    for key, kind in _META_KEYS.items():
        if not isinstance(meta.get(key), kind):
            raise _not_a_checkpoint(path, f"its metadata lacks '{key}'")
    return meta


def read_meta(path, verify=False):
    """The JSON metadata of a checkpoint (format, model config, solver state ...),
    without reading its arrays: a cheap check that ``path`` is a checkpoint.
    ``verify``: also check every entry's CRC (reads the whole file once)."""
    path = os.fspath(path)
    with _open(path) as f:
        meta = _meta_of(path, f)
    if verify:
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except _READ_ERRORS as err:
            raise _not_a_checkpoint(path, f"corrupted entry ({_reason(err)})") from None
        if bad is not None:
            raise _not_a_checkpoint(path, f"corrupted entry (Bad CRC-32 for {bad!r})")
    return meta


def read_checkpoint(path):
    """Read a checkpoint -> dict with keys model (config), params, optim_configs,
    rng_state, solver, loss_history, iter_times (Python lists), precision and path.

    FileNotFoundError if there is no file; CheckpointError (a ValueError naming
    the file) if it is truncated, empty, corrupted, of another format or version.
    """
    path = os.fspath(path)
    with _open(path) as f:
        meta = _meta_of(path, f)
        try:
            arrays = {k: f[k] for k in f.files if k != "meta"}
        except _READ_ERRORS as err:
            raise _not_a_checkpoint(path, f"corrupted entry ({_reason(err)})") from None
    missing = [k for k in _HISTORY_KEYS if k not in arrays]
    if missing:
        raise _not_a_checkpoint(path, f"entries {missing} are missing")
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    optim_configs = {name: dict(scalars) for name, scalars in meta["optim"].items()
                     if isinstance(scalars, dict)}
    for key, value in arrays.items():
        if key.startswith("optim/"):
            _, name, field = (key.split("/", 2) + ["", ""])[:3]
            optim_configs.setdefault(name, {})[field] = value
    return {"model": meta["model"], "params": params, "optim_configs": optim_configs,
            "rng_state": meta.get("rng_state"), "solver": meta["solver"],
            "loss_history": arrays["history/loss_history"].tolist(),
            "iter_times": arrays["history/iter_times"].tolist(), "path": path,
            "precision": meta.get("precision", "fp32")}


def saved_precision(path):
    """The precision a checkpoint was trained in ('fp32' for checkpoints older than the
    setting), reading only its metadata."""
    return read_meta(path).get("precision", "fp32")


def model_from_checkpoint(checkpoint):
    """A CaptioningRNN with the configuration and weights of a read checkpoint."""
    path = checkpoint.get("path", "(in memory)")
    config = dict(checkpoint["model"])
    try:
        # seed=0: the weights drawn here are overwritten below; an explicit seed keeps
        # loading from advancing NumPy's global random state.
        if config.get("seed") is None:
            config["seed"] = 0
        model = CaptioningRNN(config.pop("word_to_idx"), dtype=np.dtype(config.pop("dtype")),
                              **config)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: its model configuration is not usable "
                              f"({_reason(err)})") from None
    for name, value in model.params.items():
        saved = checkpoint["params"].get(name)
        if saved is None or saved.shape != value.shape:
            raise CheckpointError(f"checkpoint {path}: parameter {name} is "
                                  f"{'missing' if saved is None else saved.shape}; the model "
                                  f"configuration needs shape {value.shape}")
        model.params[name] = saved.astype(model.dtype, copy=False)
    return model


def load_model(path):
    """The CaptioningRNN saved in the checkpoint at ``path``."""
    return model_from_checkpoint(read_checkpoint(path))


_write_atomically = write_atomically   # the earlier private name


def to_builtin(value):
    """JSON fallback for numpy scalars and small arrays (of a checkpoint's metadata):
    ``fastrnn._io.json_default``, with an error that names the checkpoint."""
    try:
        return json_default(value)
    except TypeError:
        raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint's JSON "
                        f"metadata") from None
