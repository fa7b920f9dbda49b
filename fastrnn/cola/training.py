"""Training the CoLA classifier: fit, select on validation, score on the held-out dev set.

``train(TrainConfig(...))`` is the whole run behind ``fastrnn-cola``: it reads
CoLA (``prepare_data``), fits the model with AdamW on binary cross-entropy,
keeps the epoch with the best validation Matthews correlation (early stopping
with ``patience``), scores that model once on the held-out split next to the
majority-class baseline, and optionally writes the checkpoint
(``fastrnn.cola.checkpoint``) and times training with and without the padding
mask side by side. The steps are public too: ``build_model``, ``pretrain``
(masked-token pre-training on the training sentences), ``fit_and_select``,
``select_ensemble``, ``evaluate``, ``score_on_test``, ``benchmark_mask``.

The defaults of ``TrainConfig`` are the recipe; docs/cola.md describes the
options and docs/experiments/cola.md the recipes tried.
"""
import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from fastrnn.cola.checkpoint import save_checkpoint
from fastrnn.cola.config import MEMBER_SEED_STRIDE, TrainConfig
from fastrnn.cola.data import PAD, UNK, ColaData, load_cola
from fastrnn.cola.lm import lm_features
from fastrnn.cola.metrics import accuracy, matthews_corrcoef
from fastrnn.cola.models import MeanEnsemble, WithFeatures
from fastrnn.cola.transformer import ClassificationTransformer

# Progress lines (members, epochs) go through logging; fastrnn-cola prints them.
logger = logging.getLogger(__name__)

__all__ = ["train", "TrainResult", "prepare_data", "attach_lm_features", "build_model",
           "pretrain", "fit_and_select", "select_ensemble", "evaluate", "score_on_test",
           "benchmark_mask", "train_step", "epoch_batches", "add_corrupted_copies",
           "trim_padding", "tune_threshold", "lr_lambda", "to_tensors"]


@dataclass
class TrainResult:
    """What ``train`` returns: the selected model (a ``MeanEnsemble`` for an
    ensemble, in eval mode), the data it was trained on, and ``report``: the
    scores on the held-out split, the selection on validation, the per-epoch
    history and the timings (the dict the checkpoint stores as ``result``)."""
    model: torch.nn.Module
    data: ColaData
    report: dict


def train(config=None, data=None):
    """Run ``config`` (a TrainConfig; default: the recipe) and return a TrainResult.

    data: a ColaData to train on instead of reading ``config.data``
    (``prepare_data``). torch's intra-op thread count is ``config.threads``
    while training and is restored afterwards.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train: config must be a TrainConfig, got {type(config).__name__}")
    if data is None:
        data = prepare_data(config)
    elif config.lm_features and data.train.features is None:
        attach_lm_features(data, config)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        model, report = _train_and_evaluate(data, config)
        report["threads"] = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    return TrainResult(model.eval(), data, report)


def prepare_data(config):
    """CoLA read, split and encoded as ``config`` says, with LM features if asked for."""
    data = load_cola(config.data, max_length=config.max_length, n_train=config.n_train,
                     split_seed=config.split_seed, min_count=config.min_count,
                     split=config.split, max_train=config.max_train, subwords=config.subwords,
                     subword_min_count=config.subword_min_count)
    if config.lm_features:
        attach_lm_features(data, config)
    return data


def attach_lm_features(data, config):
    """Compute the LM features of every split and store them, standardised with
    the training split's mean and deviation, as ``split.features`` (N, F)."""
    train, val, test = lm_features(data.train.sentences, data.train.labels,
                                   [data.val.sentences, data.test.sentences],
                                   folds=config.lm_folds, order=config.lm_order,
                                   seed=config.split_seed)
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
    for split, features in ((data.train, train), (data.val, val), (data.test, test)):
        split.features = (features - mean) / std


def _threshold(config):
    """The fixed decision threshold, or None: tune it on validation."""
    return None if config.tuned_threshold else config.threshold


def _train_and_evaluate(data, config):
    """Fit, select on validation, score the best model on test: (model, report).

    With ``ensemble`` K the K members are fitted one after another, each
    selected on validation, and the ensemble is what gets scored and saved.
    """
    run_started, cpu_started = time.perf_counter(), time.process_time()
    members, fits = [], []
    for k in range(config.ensemble):
        member = dataclasses.replace(config, seed=config.seed + MEMBER_SEED_STRIDE * k)
        if config.ensemble > 1:
            logger.info("ensemble member %d of %d (seed %d)", k + 1, config.ensemble, member.seed)
            member = dataclasses.replace(member, out=None)  # only the whole ensemble is written
        torch.manual_seed(member.seed)
        model = build_model(data, member)
        pretrain_losses = pretrain(model, data, member) if config.pretrain_epochs else []
        best, fit = fit_and_select(model, data, member)
        fit["pretrain_losses"] = pretrain_losses
        model.load_state_dict(best["state"])
        members.append(model)
        fits.append((best, fit))
    if config.ensemble == 1:
        (best, fit), = fits
    else:
        model = MeanEnsemble(members)
        best, fit = select_ensemble(model, data, config, fits)
    report = dict(fit, **score_on_test(model, data, config, best["threshold"]),
                  best_epoch=best["epoch"], val_mcc=best["val_mcc"],
                  threshold=best["threshold"],
                  # Wall time depends on what else runs on the machine; CPU time much less so.
                  run_seconds=time.perf_counter() - run_started,
                  run_cpu_seconds=time.process_time() - cpu_started)
    if config.bench_batches:
        # Throughput of one model: an ensemble's training costs K times this.
        report["throughput"] = benchmark_mask(members[0], to_tensors(data.train), config)
    if config.out:
        save_checkpoint(config.out, model, best, config, report, data)
    return model, report


def select_ensemble(ensemble, data, config, fits):
    """The ensemble's validation MCC and threshold, and its members' fits combined."""
    probs = evaluate(ensemble, data.val, config.mask)["probs"]
    threshold = _threshold(config)
    if threshold is None:
        threshold = tune_threshold(probs, data.val.labels)
    best = dict(state=copy.deepcopy(ensemble.state_dict()), threshold=threshold,
                epoch=[b["epoch"] for b, _ in fits],
                val_mcc=matthews_corrcoef(data.val.labels, probs >= threshold),
                member_val_mcc=[b["val_mcc"] for b, _ in fits])
    train_seconds = sum(f["train_seconds"] for _, f in fits)
    epochs = sum(len(f["history"]) for _, f in fits)
    fit = dict(history=[f["history"] for _, f in fits],
               stopped_by_time=any(f["stopped_by_time"] for _, f in fits),
               train_seconds=train_seconds,
               train_sentences_per_s=epochs * len(data.train) / train_seconds,
               member_val_mcc=best["member_val_mcc"])
    return best, fit


def build_model(data, config):
    """A fresh classifier for ``data`` as ``config`` says (with the LM-feature term,
    fitted and frozen, when the data carries features)."""
    model = ClassificationTransformer(
        data.word_to_ix, hidden_dim=config.hidden_dim, num_heads=config.heads,
        dim_feedforward=config.dim_feedforward, dim_k=config.head_dim, dim_v=config.head_dim,
        dim_q=config.head_dim, max_length=config.max_length, dropout=config.dropout,
        embed_dropout=config.embed_dropout, pooling=config.pooling,
        num_subwords=len(data.subword_to_ix) if data.subword_to_ix else 0, seed=config.seed)
    if data.train.features is not None:
        model = WithFeatures(model, data.train.features.shape[1])
        train = to_tensors(data.train)
        model.fit_features(train["features"], train["labels"])
    return model


class MaskedTokenHead(torch.nn.Module):
    """Predicts hidden words from the token states: a transform, then scores tied to
    the model's token embedding (BERT's masked-LM head). Used only in pre-training."""

    def __init__(self, model):
        super().__init__()
        H = model.hidden_dim
        self.embedding = model.token_embedding          # shared, not copied
        self.transform = torch.nn.Sequential(torch.nn.Linear(H, H), torch.nn.GELU(),
                                             torch.nn.LayerNorm(H))
        self.bias = torch.nn.Parameter(torch.zeros(model.vocab_size))

    def forward(self, states):
        """states (M, H) -> scores (M, V)."""
        # The embedding rows have unit-variance entries: scale the dot products
        # down by sqrt(H) so the first scores are O(1), not O(sqrt(H)).
        H = self.embedding.weight.shape[1]
        return self.transform(states) @ self.embedding.weight.T / math.sqrt(H) + self.bias


def pretrain(model, data, config):
    """Masked-token pre-training on the training sentences (labels unused).

    Each epoch hides a random ``config.mask_prob`` share of every sentence's words
    (never [CLS]): the word becomes <unk> and, with subwords on, loses its
    n-grams; the model learns to predict the hidden words from their context.
    Returns the mean loss of each epoch.
    """
    model = getattr(model, "transformer", model)  # the LM-feature term plays no part
    head = MaskedTokenHead(model)
    params = list(model.parameters()) + [p for n, p in head.named_parameters()
                                         if not n.startswith("embedding.")]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(data.train) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda("cosine", config.warmup, steps_per_epoch * config.pretrain_epochs))
    rng = np.random.default_rng(config.seed + 1)
    train = to_tensors(data.train)
    unk = model.word_to_ix[UNK]
    losses = []
    for epoch in tqdm(range(1, config.pretrain_epochs + 1), desc="pre-training", unit="epoch",
                      disable=not config.progress, leave=False):
        model.train()
        epoch_losses = []
        for rows in np.array_split(rng.permutation(len(data.train)), steps_per_epoch):
            rows = torch.from_numpy(rows)
            ids, pad_mask = train["ids"][rows], train["pad_mask"][rows]
            subwords = train["subwords"][rows] if "subwords" in train else None
            ids, pad_mask, subwords = trim_padding(ids, pad_mask, subwords)
            hidden = (torch.rand(ids.shape) < config.mask_prob) & ~pad_mask & (ids != unk)
            hidden[:, 0] = False                                 # [CLS] stays
            if not hidden.any():
                continue
            inputs = ids.masked_fill(hidden, unk)
            if subwords is not None:
                subwords = subwords.masked_fill(hidden[..., None], 0)
            states = model.encode(inputs, pad_mask if config.mask else None, subwords)
            loss = F.cross_entropy(head(states[hidden]), ids[hidden])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            epoch_losses.append(loss.item())
        losses.append(float(np.mean(epoch_losses)))
        logger.info("pre-training epoch %3d  masked-token loss %.4f", epoch, losses[-1])
    return losses


def fit_and_select(model, data, config):
    """Train epoch by epoch; keep the weights with the best validation MCC.

    Returns (best, fit): best holds the kept state_dict, its epoch, validation
    MCC and decision threshold; fit the per-epoch history and timings. With
    ``config.out`` set, each new best is written there as it is found.
    """
    threshold = _threshold(config)
    batch_rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(data.train) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.schedule, config.warmup, steps_per_epoch * config.epochs))
    # The averaged copy is what gets validated, kept and tested: it smooths the
    # step-to-step noise of a small, noisy training set.
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema)) \
        if config.ema else None
    evaluated = averaged.module if averaged else model
    # Stochastic weight averaging: the plain mean of the epoch-end weights from
    # epoch ``swa_start`` on (Izmailov et al. 2018); before that, the raw weights.
    swa = AveragedModel(model) if config.swa_start else None
    train = to_tensors(data.train)
    lengths = (~data.train.pad_mask).sum(axis=1)
    best = {"val_mcc": -np.inf, "epoch": 0}
    history, train_seconds, stopped_by_time = [], 0.0, False
    started = time.perf_counter()
    bar = tqdm(total=steps_per_epoch * config.epochs, desc="fastrnn-cola", unit="batch",
               disable=not config.progress, leave=False)
    for epoch in range(1, config.epochs + 1):
        model.train()
        epoch_started = time.perf_counter()
        losses = []
        for rows in epoch_batches(batch_rng, lengths, steps_per_epoch, config.bucket):
            losses.append(train_step(model, optimizer, train, torch.from_numpy(rows), config))
            scheduler.step()
            if averaged:
                averaged.update_parameters(model)
            bar.update(1)
        train_seconds += time.perf_counter() - epoch_started

        if swa and epoch >= config.swa_start:
            swa.update_parameters(model)
            evaluated = swa.module
        val = evaluate(evaluated, data.val, config.mask)
        val_threshold = threshold if threshold is not None else \
            tune_threshold(val["probs"], data.val.labels)
        val_mcc = matthews_corrcoef(data.val.labels, val["probs"] >= val_threshold)
        history.append(dict(epoch=epoch, train_loss=float(np.mean(losses)),
                            val_loss=val["loss"], val_mcc=val_mcc, threshold=val_threshold))
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_mcc=f"{val_mcc:.3f}")
        logger.info("epoch %3d  train loss %.4f  val loss %.4f  val MCC %.4f  (%.0f s)", epoch,
                    np.mean(losses), val["loss"], val_mcc, time.perf_counter() - started)
        if val_mcc > best["val_mcc"]:
            best = dict(val_mcc=val_mcc, epoch=epoch, threshold=val_threshold,
                        state=copy.deepcopy(evaluated.state_dict()))
            if config.out:
                save_checkpoint(config.out, model, best, config, data=data)
        elif config.patience and epoch - best["epoch"] >= config.patience:
            break
        if config.time_limit and time.perf_counter() - started > config.time_limit:
            stopped_by_time = True
            break
    bar.close()
    fit = dict(history=history, stopped_by_time=stopped_by_time, train_seconds=train_seconds,
               train_sentences_per_s=len(history) * len(data.train) / train_seconds)
    return best, fit


def epoch_batches(rng, lengths, n_batches, bucket=0):
    """One epoch's batches of row indices (a shuffle of all rows).

    bucket > 0: the shuffle is cut into pools of ``bucket`` batches, each pool is
    sorted by sentence length before being cut into batches, and the batches are
    shuffled; similar lengths share a batch, so less padding is computed (the mask
    trims each batch to its longest sentence).
    """
    order = rng.permutation(len(lengths))
    if not bucket:
        return np.array_split(order, n_batches)
    size = -(-len(lengths) // n_batches)
    batches = []
    for start in range(0, len(order), size * bucket):
        pool = order[start:start + size * bucket]
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        batches += [pool[i:i + size] for i in range(0, len(pool), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def score_on_test(model, data, config, threshold):
    """Accuracy and MCC on the held-out split, and the majority-class baseline's."""
    probs = evaluate(model, data.test, config.mask)["probs"]
    labels = data.test.labels
    predictions = probs >= threshold
    majority = int(np.mean(data.train.labels) >= 0.5)
    return dict(
        test_accuracy=accuracy(labels, predictions),
        test_mcc=matthews_corrcoef(labels, predictions),
        test_mcc_at_half=matthews_corrcoef(labels, probs >= 0.5),
        majority_class=majority,
        majority_accuracy=accuracy(labels, np.full(len(labels), majority)),
        majority_mcc=matthews_corrcoef(labels, np.full(len(labels), majority)))


def train_step(model, optimizer, train, rows, config):
    """One Adam step on the sentences ``rows``; returns the batch loss."""
    ids, pad_mask, labels = train["ids"][rows], train["pad_mask"][rows], train["labels"][rows]
    subwords = train["subwords"][rows] if "subwords" in train else None
    if config.augment:
        ids, pad_mask, labels, subwords = add_corrupted_copies(
            ids, pad_mask, labels, config.augment, model.word_to_ix[PAD], subwords)
    if config.mask:
        ids, pad_mask, subwords = trim_padding(ids, pad_mask, subwords)
    if config.word_dropout:
        # Teaches the model to cope with <unk>, which unseen test words become
        # (their n-grams, with subwords on, stay).
        drop = torch.rand(ids.shape) < config.word_dropout
        drop[:, 0] = False  # keep [CLS]
        ids = ids.masked_fill(drop & ~pad_mask, model.word_to_ix[UNK])
    targets = labels * (1 - config.label_smoothing) + 0.5 * config.label_smoothing
    extra = {"features": train["features"][rows]} if "features" in train else {}
    logits = model.logits(ids, pad_mask if config.mask else None, subwords, **extra)[:, 0]
    loss = F.binary_cross_entropy_with_logits(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def add_corrupted_copies(ids, pad_mask, labels, p, pad, subwords=None):
    """Append, for a random share p of the acceptable rows, a copy with one local error.

    CoLA's unacceptable sentences are mostly small edits of acceptable ones; these
    synthetic negatives teach word-order and missing/extra-word cues that 7,000
    labelled sentences alone barely show a model trained from scratch. The first
    token ([CLS]) and the last (usually the full stop) are never touched.
    subwords (N, T, S), if given, follow their tokens. Returns (ids, pad_mask,
    labels, subwords) with the copies appended.
    """
    lengths = (~pad_mask).sum(dim=1)                   # [CLS] + words
    chosen = ((labels == 1) & (lengths >= 5) & (torch.rand(len(labels)) < p)).nonzero()[:, 0]
    if not len(chosen):
        return ids, pad_mask, labels, subwords
    T = ids.shape[1]
    # Each copy is its original read through a list of source positions;
    # position T (one past the end) reads as padding.
    ids_ext = F.pad(ids[chosen], (0, 1), value=pad)                       # (C, T+1)
    sources = torch.full((len(chosen), T), T, dtype=torch.long)           # (C, T)
    for row, n in enumerate(lengths[chosen].tolist()):
        positions = list(range(n))
        i = int(torch.randint(1, n - 2, ()))           # a word, never [CLS] or the last token
        edit = int(torch.randint(3, ()))
        if edit == 0:                                  # swap words i and i+1
            positions[i], positions[i + 1] = positions[i + 1], positions[i]
        elif edit == 1:                                # drop word i
            del positions[i]
        elif n < T:                                    # repeat word i
            positions.insert(i, positions[i])
        sources[row, :len(positions)] = torch.tensor(positions)
    copies = ids_ext.gather(1, sources)
    copy_mask = sources == T
    if subwords is not None:
        sub_ext = F.pad(subwords[chosen], (0, 0, 0, 1))                   # (C, T+1, S)
        copy_sub = sub_ext.gather(1, sources[..., None].expand(-1, -1, subwords.shape[2]))
        subwords = torch.cat([subwords, copy_sub])
    return (torch.cat([ids, copies]), torch.cat([pad_mask, copy_mask]),
            torch.cat([labels, torch.zeros(len(chosen), dtype=labels.dtype)]), subwords)


@torch.no_grad()
def evaluate(model, split, mask, batch_size=512):
    """Probabilities and mean BCE of ``model`` on an encoded split (eval mode)."""
    model.eval()
    tensors = to_tensors(split)
    probs = []
    for start in range(0, len(split), batch_size):
        ids = tensors["ids"][start:start + batch_size]
        pad_mask = tensors["pad_mask"][start:start + batch_size]
        subwords = tensors["subwords"][start:start + batch_size] if "subwords" in tensors else None
        extra = {"features": tensors["features"][start:start + batch_size]} \
            if "features" in tensors else {}
        if mask:
            probs.append(model(*trim_padding(ids, pad_mask, subwords), **extra)[:, 0])
        else:
            probs.append(model(ids, None, subwords, **extra)[:, 0])
    probs = torch.cat(probs)
    loss = F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), tensors["labels"])
    return dict(probs=probs.numpy(), loss=float(loss))


def trim_padding(ids, pad_mask, subwords=None):
    """Drop the pad columns that every sentence of the batch has (and their subwords).

    With the mask on this changes no output (pad keys get no attention, pad rows
    are zeroed before pooling, flatten pooling zero-fills up to max_length), and
    CoLA batches are mostly padding, so it saves most of the work.
    """
    longest = max(1, int((~pad_mask).sum(dim=1).max()))
    return ids[:, :longest], pad_mask[:, :longest], \
        None if subwords is None else subwords[:, :longest]


def tune_threshold(probs, labels):
    """The decision threshold (on a fixed grid) with the best MCC on these labels."""
    grid = np.linspace(0.05, 0.95, 91)
    scores = [matthews_corrcoef(labels, probs >= t) for t in grid]
    return float(grid[int(np.argmax(scores))])


def lr_lambda(schedule, warmup, total_steps):
    """Multiplier of the peak learning rate at each step: linear warmup, then decay."""
    warmup_steps = int(warmup * total_steps)

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if schedule == "cosine":
            return 0.5 * (1 + np.cos(np.pi * min(progress, 1.0)))
        if schedule == "linear":
            return max(0.0, 1 - progress)
        return 1.0
    return factor


def benchmark_mask(model, train, config):
    """Training sentences/s with and without the padding mask, measured side by side.

    Runs on a copy of the model with a throwaway optimizer, alternating the two
    settings batch by batch so that load from other processes hits both alike.
    """
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    rng = np.random.default_rng(config.seed)
    seconds = {True: 0.0, False: 0.0}
    settings = {mask: dataclasses.replace(config, mask=mask) for mask in (True, False)}
    for _ in range(config.bench_batches):
        rows = torch.from_numpy(rng.choice(len(train["labels"]), config.batch_size, replace=False)
                                if len(train["labels"]) >= config.batch_size
                                else np.arange(len(train["labels"])))
        for mask in (True, False):
            started = time.perf_counter()
            train_step(model, optimizer, train, rows, settings[mask])
            seconds[mask] += time.perf_counter() - started
    sentences = config.bench_batches * len(rows)
    return {"with_mask": sentences / seconds[True], "without_mask": sentences / seconds[False]}


def to_tensors(split):
    """An encoded split as torch tensors (ids, pad_mask, labels float; subwords,
    features when present)."""
    tensors = dict(ids=torch.from_numpy(split.ids), pad_mask=torch.from_numpy(split.pad_mask),
                   labels=torch.from_numpy(split.labels).float())
    if split.subwords is not None:
        tensors["subwords"] = torch.from_numpy(split.subwords)
    if split.features is not None:
        tensors["features"] = torch.from_numpy(split.features)
    return tensors
