"""Minibatch training of a CaptioningRNN (CS231n ``CaptioningSolver``), with checkpoints.

    solver = CaptioningSolver(model, data, update_rule="adam",
                              optim_config={"learning_rate": 5e-3}, lr_decay=0.95,
                              batch_size=25, num_epochs=50, checkpoint_dir="run")
    solver.train()
    solver.loss_history       # one loss per iteration
    solver.iter_times         # seconds per iteration

    solver = CaptioningSolver.resume("run/checkpoint.npz", data)   # after a Ctrl-C
    solver.train()            # continues exactly where it stopped

One iteration draws a minibatch with the solver's own seeded
``np.random.Generator`` (with no ``seed``, seeded from NumPy's global random
state when the solver is built, so ``np.random.seed`` makes a run repeat as in
CS231n), computes the loss and gradients, and updates every
parameter. An epoch is ``max(num_train // batch_size, 1)`` iterations; after
each one the learning rate is multiplied by ``lr_decay``, ``eval_fn`` (if any)
is called and a checkpoint is written.

Resuming is bit for bit: the checkpoint holds the weights, every optimizer
state, the generator state and the counters, and an iteration is applied all
at once (a Ctrl-C in the middle of one discards it), so an interrupted and
resumed run makes exactly the updates of an uninterrupted one.

Adam ('adam' or ``optim.adam``) runs fused and in place (``optim.adam_in_place``
on the active backend's kernel): one pass over each weight and its moments
instead of a chain of full-size temporaries. It only writes arrays the solver
allocated itself during the current ``train()`` call: on the first step of each
call the weights and moments are copied, so arrays a caller holds (the model's
weights as passed in, a loaded checkpoint's, those of an earlier call) never
change. While training runs, ``model.params`` and the moments change in place:
an ``eval_fn`` that wants to keep weights must copy them. Other rules are called
as values, as in CS231n.
"""
import contextlib
import logging
import numbers
import os
import signal
import threading
import time

import numpy as np
from tqdm import tqdm

from fastrnn import optim, threads
from fastrnn.captioning import checkpoint
from fastrnn.captioning.data import sample_coco_minibatch
from fastrnn.captioning.data.coco import seed_from_global_state

__all__ = ["CaptioningSolver", "TrainingDiverged"]

CHECKPOINT_NAME = "checkpoint.npz"

# Library notices go through logging; the CS231n per-iteration lines stay prints
# (``verbose``), as notebooks expect them.
logger = logging.getLogger(__name__)


class TrainingDiverged(FloatingPointError):
    """The loss or a gradient became NaN or infinite; no update was applied."""


class CaptioningSolver:
    """Trains a CaptioningRNN on a COCO-layout data dict (see fastrnn.captioning.data.load_coco_data).

    Parameters
    ----------
    model : CaptioningRNN
    data : dict
        Needs ``train_captions``, ``train_image_idxs``, ``train_features`` (and
        ``train_urls``, as returned by ``load_coco_data``).
    update_rule : str or callable
        A name in ``fastrnn.optim.RULES`` ('sgd', 'sgd_momentum', 'rmsprop',
        'adam') or a function with the same signature. 'adam' (and
        ``optim.adam`` itself) runs fused and in place, see the module docstring.
    optim_config : dict
        Hyperparameters given to the update rule (e.g. ``learning_rate``);
        each parameter gets its own copy, which also holds its optimizer state.
        Checked up front by ``fastrnn.optim.check_config`` (an unknown key such
        as ``lr``, a NaN learning rate or a beta outside [0, 1) is a ValueError).
    lr_decay : float
        The learning rate is multiplied by this after every epoch: a finite
        number > 0 (above 1 the rate grows; 0 would stop learning after one epoch).
    batch_size, num_epochs, print_every, verbose :
        As in CS231n: a line "(Iteration i / n) loss: ..." for i = 1,
        print_every + 1, 2 * print_every + 1, ... when ``verbose``.
    seed : int or None
        Seed of the generator that draws the minibatches. None (the default):
        a seed drawn from NumPy's global random state now; it is kept in
        ``seed`` and in checkpoints, so a resumed run draws what it would have.
    checkpoint_dir : str or None
        Folder of ``checkpoint.npz``, written after every epoch and on Ctrl-C,
        only from finite weights, optimizer state and learning rate: otherwise
        training stops with TrainingDiverged and the last good checkpoint stays.
    eval_fn : callable or None
        ``eval_fn(solver) -> dict`` called after every epoch; the results, with
        ``epoch`` and ``iteration`` added, go to ``eval_history``.
    progress : bool
        Show a tqdm progress bar with the loss and seconds per iteration.
    on_record : callable or None
        ``on_record(record)`` receives one plain dict (JSON-ready) per logged
        iteration (the ``print_every`` cadence, whether or not ``verbose``):
        ``event='iteration'``, ``iteration``, ``epoch`` (iteration / iterations per
        epoch), ``loss``, ``learning_rate``, ``seconds_per_iteration``; and one per
        evaluation: ``event='eval'``, ``iteration``, ``epoch`` and ``eval_fn``'s
        results. ``fastrnn-train`` writes them to ``metrics.jsonl``.
    """

    # optim_config={} is CS231n's signature; it is only read (copied below), never mutated.
    def __init__(self, model, data, update_rule="sgd", optim_config={}, lr_decay=1.0,  # noqa: B006
                 batch_size=100, num_epochs=10, print_every=10, verbose=True, *, seed=None,
                 checkpoint_dir=None, eval_fn=None, progress=True, on_record=None):
        _check_data(data)
        for name, value, lowest in (("batch_size", batch_size, 1), ("num_epochs", num_epochs, 0),
                                    ("print_every", print_every, 1)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < lowest:
                raise ValueError(f"CaptioningSolver: {name} must be an integer >= {lowest}, "
                                 f"got {value!r}")
        if isinstance(lr_decay, bool) or not isinstance(lr_decay, numbers.Real) \
                or not np.isfinite(lr_decay) or lr_decay <= 0:
            raise ValueError(f"CaptioningSolver: lr_decay must be a finite number > 0, "
                             f"got {lr_decay!r}")
        if not isinstance(optim_config, dict):
            raise TypeError(f"CaptioningSolver: optim_config must be a dict, "
                            f"got {type(optim_config).__name__}")
        self.model = model
        self.data = data
        self.update_rule = update_rule if callable(update_rule) else optim.get_rule(update_rule)
        optim.check_config(self.update_rule, optim_config)
        # The same numbers as optim.adam (to rounding), one fused pass, no temporaries.
        self.fused_adam = self.update_rule is optim.adam
        self.optim_config = dict(optim_config)
        self.lr_decay = float(lr_decay)
        self.batch_size = int(batch_size)
        self.num_epochs = int(num_epochs)
        self.print_every = int(print_every)
        self.verbose = verbose
        self.seed = seed_from_global_state() if seed is None else seed
        self.checkpoint_dir = checkpoint_dir
        self.eval_fn = eval_fn
        self.progress = progress
        self.on_record = on_record
        self.checkpoint_num_threads = None   # set by load_checkpoint
        self._reset()

    def _reset(self):
        self.rng = np.random.default_rng(self.seed)
        self.iteration = 0        # completed iterations
        self.epochs_closed = 0    # epochs whose eval_fn and checkpoint have run
        self.loss_history = []
        self.iter_times = []
        self.eval_history = []
        # Each parameter gets its own config: it carries that parameter's optimizer state.
        # The learning rate is filled in now so that lr_decay can act on it from epoch 1.
        default_lr = self.update_rule(np.zeros(1), np.zeros(1), {})[1].get("learning_rate")
        config = dict(self.optim_config)
        if default_lr is not None:
            config.setdefault("learning_rate", default_lr)
        self.optim_configs = {name: dict(config) for name in self.model.params}
        self._in_place = {}   # name -> (w, m, v) this train() call allocated (fused Adam)

    # --------------------------------------------------------------- properties

    @property
    def num_train(self):
        return int(self.data["train_captions"].shape[0])

    @property
    def iterations_per_epoch(self):
        return max(self.num_train // self.batch_size, 1)

    @property
    def num_iterations(self):
        return self.num_epochs * self.iterations_per_epoch

    @property
    def epoch(self):
        """Completed epochs."""
        return self.iteration // self.iterations_per_epoch

    @property
    def learning_rate(self):
        """The current learning rate (the same for every parameter)."""
        return next(iter(self.optim_configs.values())).get("learning_rate")

    @property
    def update_rule_name(self):
        return getattr(self.update_rule, "__name__", repr(self.update_rule))

    @property
    def checkpoint_path(self):
        if self.checkpoint_dir is None:
            return None
        return os.path.join(self.checkpoint_dir, CHECKPOINT_NAME)

    # ----------------------------------------------------------------- training

    def train(self):
        """Run the remaining iterations up to ``num_epochs`` epochs; returns self.

        Ctrl-C writes a checkpoint of the last completed iteration (when
        ``checkpoint_dir`` is set), then re-raises KeyboardInterrupt. A NaN or
        infinite loss raises TrainingDiverged and leaves the checkpoint alone.
        """
        total = self.num_iterations
        self._in_place = {}   # arrays from before this call are the caller's: copy, never write
        bar = tqdm(total=total, initial=self.iteration, desc="training", unit="it",
                   disable=not self.progress, dynamic_ncols=True)
        try:
            if self.epochs_closed < self.epoch:   # resumed before an epoch's end-of-epoch work
                self._end_epoch(bar)
            while self.iteration < total:
                learning_rate = self.learning_rate   # the rate this iteration uses
                start = time.perf_counter()
                loss = self._step()
                seconds = time.perf_counter() - start
                self.iter_times.append(seconds)
                bar.set_postfix(loss=f"{loss:.4f}", s_per_it=f"{seconds:.3f}", refresh=False)
                bar.update(1)
                # CS231n counts t from 0 and prints t + 1 when t % print_every == 0.
                if (self.iteration - 1) % self.print_every == 0:
                    if self.verbose:
                        bar.write(f"(Iteration {self.iteration} / {total}) loss: {loss:.6f}  "
                                  f"[{seconds:.3f} s/it]")
                    self._record(event="iteration", loss=loss, seconds_per_iteration=seconds,
                                 learning_rate=learning_rate)
                if self.iteration % self.iterations_per_epoch == 0:
                    self._end_epoch(bar)
        except KeyboardInterrupt:
            bar.close()
            if self.checkpoint_dir is not None:
                path = self.save_checkpoint()
                logger.warning("interrupted after iteration %d; checkpoint saved to %s (resume "
                               "with CaptioningSolver.resume or fastrnn-train --resume)",
                               self.iteration, path)
            raise
        finally:
            bar.close()
        return self

    def _step(self):
        """One iteration, applied all at once; returns its loss."""
        rng_state = self.rng.bit_generator.state
        try:
            captions, features, _ = sample_coco_minibatch(
                self.data, batch_size=self.batch_size, split="train", rng=self.rng)
            loss, grads = self._loss_and_grads(features, captions)
            loss = float(loss)
            self._check_finite(loss, grads)
            if self.fused_adam:
                new_params, new_configs = self._fused_adam_arrays(grads)
            else:
                new_params, new_configs = {}, {}
                for name, w in self.model.params.items():
                    new_params[name], new_configs[name] = self.update_rule(
                        w, grads[name], dict(self.optim_configs[name]))
        except BaseException:
            # Nothing of this iteration was kept, so its minibatch must not be either.
            self.rng.bit_generator.state = rng_state
            raise
        with _sigint_deferred():
            self.model.params.update(new_params)
            if self.fused_adam:   # checked above, so no step can fail half-way through
                for name, w in new_params.items():
                    optim.adam_in_place(w, grads[name], new_configs[name])
                    self._in_place[name] = (w, new_configs[name]["m"], new_configs[name]["v"])
            self.optim_configs = new_configs
            self.loss_history.append(loss)
            self.iteration += 1
            if self.iteration % self.iterations_per_epoch == 0:
                for config in self.optim_configs.values():
                    if "learning_rate" in config:
                        config["learning_rate"] = float(config["learning_rate"]) * self.lr_decay
        return loss

    def _fused_adam_arrays(self, grads):
        """The weights and configs the fused Adam step will update in place.

        Modifies nothing, so an interruption here loses nothing. Every weight or
        moment this train() call has not allocated itself is swapped for a private
        C-contiguous copy; missing moments become zeros; all are checked
        (``optim.adam_state``) before the first one is written.
        """
        params, configs = {}, {}
        for name, w in self.model.params.items():
            own_w, own_m, own_v = self._in_place.get(name, (None, None, None))
            config = dict(self.optim_configs[name])
            params[name] = w if w is own_w else _private_copy(w)
            for key, own in (("m", own_m), ("v", own_v)):
                if key in config and config[key] is not own:
                    config[key] = _private_copy(config[key])
            configs[name] = optim.adam_state(params[name], grads[name], config)
        return params, configs

    def _loss_and_grads(self, features, captions):
        """Loss and gradients of one global minibatch (data-parallel training overrides it)."""
        return self.model.loss(features, captions)

    def _check_finite(self, loss, grads):
        bad = None if np.isfinite(loss) else f"loss is {loss}"
        if bad is None:
            bad = next((f"gradient of {name} has non-finite values"
                        for name, g in grads.items() if not np.isfinite(g).all()), None)
        if bad is not None:
            where = (f"iteration {self.iteration + 1} (epoch {self.epoch + 1}, "
                     f"learning rate {self.learning_rate})")
            kept = (f"the last good checkpoint {self.checkpoint_path} is untouched"
                    if self.checkpoint_path and os.path.exists(self.checkpoint_path)
                    else "no update was applied")
            raise TrainingDiverged(f"training diverged at {where}: {bad}; {kept}. "
                                   f"Try a lower learning rate.")

    def _record(self, event, **fields):
        if self.on_record is not None:
            self.on_record({"event": event, "iteration": self.iteration,
                            "epoch": self.iteration / self.iterations_per_epoch, **fields})

    def _end_epoch(self, bar):
        epoch = self.epoch
        if self.eval_fn is not None:
            results = dict(self.eval_fn(self))
            self.eval_history.append({"epoch": epoch, "iteration": self.iteration, **results})
            self._record(event="eval", **results)
            if self.verbose:
                shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in results.items())
                bar.write(f"(Epoch {epoch} / {self.num_epochs}) {shown}")
        self.epochs_closed = epoch
        if self.checkpoint_dir is not None:
            self.save_checkpoint()

    # -------------------------------------------------------------- checkpoints

    def _settings(self):
        return {"update_rule": self.update_rule_name, "optim_config": self.optim_config,
                "lr_decay": self.lr_decay, "batch_size": self.batch_size,
                "num_epochs": self.num_epochs, "print_every": self.print_every,
                "seed": self.seed}

    def save_checkpoint(self, path=None):
        """Write the full training state (default: ``checkpoint_dir/checkpoint.npz``)."""
        path = path or self.checkpoint_path
        if path is None:
            raise ValueError("save_checkpoint: give a path or set checkpoint_dir")
        bad = checkpoint.nonfinite_state(self.model.params, self.optim_configs)
        if bad:
            kept = (f"the last good checkpoint {path} is kept" if os.path.isfile(path)
                    else "no checkpoint was written")
            raise TrainingDiverged(
                f"training diverged by iteration {self.iteration} (epoch {self.epoch}, learning "
                f"rate {self.learning_rate}): non-finite {', '.join(bad[:3])}"
                f"{' ...' if len(bad) > 3 else ''}; not saving it, {kept}. Try a lower "
                f"learning rate.")
        state = {"settings": self._settings(), "iteration": self.iteration,
                 "epochs_closed": self.epochs_closed, "eval_history": self.eval_history,
                 "num_threads": threads.get_num_threads()}
        written = checkpoint.save_checkpoint(
            path, self.model, optim_configs=self.optim_configs,
            rng_state=self.rng.bit_generator.state, solver=state,
            loss_history=self.loss_history, iter_times=self.iter_times)
        logger.info("checkpoint of iteration %d written to %s", self.iteration, written)
        return written

    def load_checkpoint(self, path):
        """Continue from a checkpoint: weights, optimizer states, generator, counters, histories."""
        saved = checkpoint.read_checkpoint(path)
        restored = checkpoint.model_from_checkpoint(saved)   # checks names and shapes
        if restored.config() != self.model.config():
            raise ValueError(f"checkpoint {path!r} holds a model configured as "
                             f"{_describe(restored.config())}, but this solver's model is "
                             f"{_describe(self.model.config())}")
        self.model.params.update(restored.params)
        self.optim_configs = {name: saved["optim_configs"].get(name, {})
                              for name in self.model.params}
        state = saved["solver"]
        try:
            self.rng.bit_generator.state = saved["rng_state"]
            self.iteration = int(state["iteration"])
            self.epochs_closed = int(state["epochs_closed"])
            self.eval_history = list(state["eval_history"])
        except (KeyError, TypeError, ValueError) as err:
            raise checkpoint.CheckpointError(
                f"checkpoint {path}: its solver state is incomplete or damaged "
                f"({type(err).__name__}: {err}); it cannot be resumed") from None
        # The thread count that wrote it (None before it was stored): bit-exact resume needs it.
        self.checkpoint_num_threads = state.get("num_threads")
        self.loss_history = saved["loss_history"]
        self.iter_times = saved["iter_times"]
        return self

    @classmethod
    def resume(cls, path, data, learning_rate=None, **overrides):
        """A solver that continues the run saved at ``path``.

        The saved settings (update rule, batch size, num_epochs, ...) are used
        unless overridden, e.g. ``num_epochs=20`` to train longer. Checkpoints
        keep going to the checkpoint's folder unless ``checkpoint_dir`` is given.
        The optimizer state comes from the checkpoint, and so does the learning
        rate unless ``learning_rate`` (a finite number > 0) replaces it.
        """
        if learning_rate is not None and (
                isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real)
                or not np.isfinite(learning_rate) or learning_rate <= 0):
            raise ValueError(f"CaptioningSolver.resume: learning_rate must be a finite number "
                             f"> 0, got {learning_rate!r}")
        saved = checkpoint.read_checkpoint(path)
        model = checkpoint.model_from_checkpoint(saved)
        settings = saved["solver"].get("settings")
        if not isinstance(settings, dict):
            raise checkpoint.CheckpointError(f"checkpoint {path}: it holds no solver settings; "
                                             f"it cannot be resumed")
        settings = dict(settings)
        settings["checkpoint_dir"] = os.path.dirname(os.path.abspath(os.fspath(path)))
        settings.update(overrides)
        try:
            solver = cls(model, data, **settings)
        except TypeError as err:
            raise checkpoint.CheckpointError(f"checkpoint {path}: unusable solver settings "
                                             f"({err})") from None
        solver.load_checkpoint(path)
        if learning_rate is not None:
            for config in solver.optim_configs.values():
                config["learning_rate"] = float(learning_rate)
        elif solver.learning_rate is not None and not np.isfinite(solver.learning_rate):
            raise checkpoint.CheckpointError(
                f"checkpoint {path} holds the learning rate {solver.learning_rate}; give a new "
                f"one to resume (learning_rate=..., fastrnn-train --lr)")
        return solver


def _private_copy(array):
    """A C-contiguous copy of an array (anything else is left for the checks to name)."""
    return np.array(array, order="C") if isinstance(array, np.ndarray) else array


def _check_data(data):
    missing = [k for k in ("train_captions", "train_image_idxs", "train_features")
               if k not in data]
    if missing:
        raise ValueError(f"CaptioningSolver: data lacks {missing}; expected the dict returned "
                         f"by fastrnn.captioning.data.load_coco_data")
    if len(data["train_captions"]) == 0:
        raise ValueError("CaptioningSolver: data['train_captions'] is empty")


def _describe(config):
    return ", ".join(f"{k}={v}" for k, v in config.items() if k != "word_to_idx") + \
        f", {len(config['word_to_idx'])} words"


@contextlib.contextmanager
def _sigint_deferred():
    """Hold back Ctrl-C for the few statements that apply an iteration, then deliver it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, received[0])
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt
