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
disk, then renamed over the old one (``os.replace`` is atomic), so a crash or a
Ctrl-C while saving leaves the previous checkpoint whole.
"""
import json
import os
import tempfile

import numpy as np

from fastrnn.model import CaptioningRNN

__all__ = ["save_checkpoint", "read_checkpoint", "load_model", "model_from_checkpoint",
           "saved_precision", "FORMAT", "VERSION"]

FORMAT = "fastrnn-captioning-checkpoint"
VERSION = 1


def save_checkpoint(path, model, optim_configs=None, rng_state=None, solver=None,
                    loss_history=(), iter_times=(), precision=None):
    """Write a checkpoint to ``path`` atomically; returns ``path``.

    model: a CaptioningRNN. optim_configs: {param name: config dict} as kept by
    the solver. rng_state: ``Generator.bit_generator.state``. solver: a
    JSON-serialisable dict of solver settings and counters. precision: 'fp32' or
    'bf16' (default: the one in force, ``fastrnn.get_precision()``).
    """
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
    arrays["meta"] = np.array(json.dumps(meta, default=_to_builtin))
    _write_atomically(path, lambda f: np.savez(f, **arrays))
    return path


def read_checkpoint(path):
    """Read a checkpoint -> dict with keys model (config), params, optim_configs,
    rng_state, solver, loss_history, iter_times (Python lists), precision."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist (fastrnn-train writes "
                                f"checkpoint.npz into its --out folder)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path!r} is not a readable fastrnn checkpoint (.npz): {err}") from err
    meta = json.loads(str(arrays.pop("meta"))) if "meta" in arrays else {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a fastrnn captioning checkpoint (no '{FORMAT}' "
                         f"metadata)")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path!r} is checkpoint format version {meta.get('version')}; this "
                         f"fastrnn reads version {VERSION}")

    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    optim_configs = {name: dict(scalars) for name, scalars in meta["optim"].items()}
    for key, value in arrays.items():
        if key.startswith("optim/"):
            _, name, field = key.split("/", 2)
            optim_configs.setdefault(name, {})[field] = value
    return {"model": meta["model"], "params": params, "optim_configs": optim_configs,
            "rng_state": meta["rng_state"], "solver": meta["solver"],
            "loss_history": arrays["history/loss_history"].tolist(),
            "iter_times": arrays["history/iter_times"].tolist(),
            "precision": meta.get("precision", "fp32")}


def saved_precision(path):
    """The precision a checkpoint was trained in ('fp32' for checkpoints older than the
    setting), reading only its metadata."""
    with np.load(os.fspath(path), allow_pickle=False) as f:
        return json.loads(str(f["meta"])).get("precision", "fp32") if "meta" in f.files \
            else "fp32"


def model_from_checkpoint(checkpoint):
    """A CaptioningRNN with the configuration and weights of a read checkpoint."""
    config = dict(checkpoint["model"])
    model = CaptioningRNN(config.pop("word_to_idx"), dtype=np.dtype(config.pop("dtype")), **config)
    for name, value in model.params.items():
        saved = checkpoint["params"].get(name)
        if saved is None or saved.shape != value.shape:
            raise ValueError(f"checkpoint parameter {name} is "
                             f"{'missing' if saved is None else saved.shape}; the model "
                             f"configuration needs shape {value.shape}")
        model.params[name] = saved.astype(model.dtype, copy=False)
    return model


def load_model(path):
    """The CaptioningRNN saved in the checkpoint at ``path``."""
    return model_from_checkpoint(read_checkpoint(path))


def _write_atomically(path, write):
    """write(file) into a temporary file next to ``path``, fsync, rename it over ``path``."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make the rename itself durable (best effort: not every OS can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _to_builtin(value):
    """JSON fallback for numpy scalars and small arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint's JSON metadata")
