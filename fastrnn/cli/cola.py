"""fastrnn-cola: train the Transformer sentence classifier on CoLA and report dev MCC.

A thin layer over ``fastrnn.cola``: the flags become a ``TrainConfig`` (one
field per flag, same defaults), ``fastrnn.cola.train`` runs it, and the report
is printed. torch is imported only when a run starts, so ``--help`` and
``--version`` work without it. docs/cola.md describes the recipe and the options.
"""
import argparse
import sys
from dataclasses import fields

from fastrnn.cli._common import (
    RUNTIME,
    CliError,
    Parser,
    check_threads,
    check_writable_file,
    int_at_least,
    non_negative_float,
    non_negative_int,
    open_unit_interval,
    positive_float,
    positive_int,
    printing_log,
    run_main,
    strict_unit_interval,
    unit_interval,
)
from fastrnn.cola.config import POOLINGS, SCHEDULES, ConfigError, TrainConfig
from fastrnn.cola.data import SPLITS

PROG = "fastrnn-cola"
DEFAULTS = TrainConfig()
TORCH_HINT = ("fastrnn-cola needs PyTorch, which is not installed: pip install 'fastrnn[torch]' "
              "(or a CPU build of torch from https://pytorch.org)")


def build_parser():
    p = Parser(
        prog=PROG,
        description="Train the Transformer classifier on CoLA (from scratch) and report accuracy "
                    "and Matthews correlation (MCC) of the best-on-validation checkpoint on the "
                    "held-out dev.tsv, next to the majority-class baseline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--data", metavar="DIR", default=None,
                      help="CoLA folder with train.tsv and dev.tsv (GLUE layout); default "
                           "$FASTRNN_COLA")
    data.add_argument("--split-seed", type=non_negative_int, default=0,
                      help="seed of the shuffle that splits train.tsv into train / validation")
    data.add_argument("--n-train", type=positive_int, default=DEFAULTS.n_train,
                      help="sentences of train.tsv to fit on; the rest is the validation split")
    data.add_argument("--split", choices=SPLITS, default="random",
                      help="validation split: a random share of train.tsv, or whole held-out "
                           "sources (first column) totalling about the same size, which mimics "
                           "dev's out-of-domain half")
    data.add_argument("--max-train", type=positive_int, default=None,
                      help="use only this many training sentences (quick runs)")
    data.add_argument("--min-count", type=positive_int, default=2,
                      help="words seen fewer times in the training split become <unk>")
    data.add_argument("--max-length", type=positive_int, default=DEFAULTS.max_length,
                      help="[CLS] + tokens are truncated/padded to this length")
    data.add_argument("--subwords", default="off", metavar="MIN-MAX",
                      help="add the mean embedding of each token's character n-grams of these "
                           "lengths (e.g. 3-5; fastText style, so unseen words keep their "
                           "spelling), or 'off'")
    data.add_argument("--subword-min-count", type=positive_int, default=2,
                      help="character n-grams seen in fewer training word tokens are dropped")
    data.add_argument("--lm-features", action=argparse.BooleanOptionalAction, default=False,
                      help="add language-model surprisal features of each sentence (Kneser-Ney "
                           "n-gram LMs fitted on the acceptable and on the unacceptable "
                           "training sentences: mean/min log-prob, SLOR, their ratio, length, "
                           "unseen-word share; cross-fitted on train) through a linear term "
                           "added to the classifier's logit")
    data.add_argument("--lm-order", type=positive_int, default=3, help="n-gram order of those LMs")
    data.add_argument("--lm-folds", type=int_at_least(2), default=5,
                      help="cross-fitting folds for the training sentences' LM features")

    model = p.add_argument_group("model")
    model.add_argument("--hidden-dim", type=positive_int, default=128, help="model width H")
    model.add_argument("--heads", type=positive_int, default=2, help="attention heads")
    model.add_argument("--head-dim", type=positive_int, default=96,
                       help="per-head dim_q = dim_k = dim_v")
    model.add_argument("--dim-feedforward", type=positive_int, default=512,
                       help="hidden width of the feed-forward block")
    model.add_argument("--pooling", choices=POOLINGS, default="flatten",
                       help="how the (N, T, H) states become one vector per sentence: flatten "
                            "(the assignment's: every position side by side), cls (the [CLS] "
                            "row), or the mean or feature-wise max over the real tokens")
    model.add_argument("--mask", action=argparse.BooleanOptionalAction, default=True,
                       help="keep pad positions out of attention and pooling")

    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=positive_int, default=20, help="maximum training epochs")
    train.add_argument("--batch-size", type=positive_int, default=64)
    train.add_argument("--bucket", type=non_negative_int, default=0, metavar="B",
                       help="length bucketing: sort each pool of B batches of a shuffled epoch "
                            "by sentence length, so batches hold similar lengths and carry less "
                            "padding (faster with --mask); 0: plain shuffled batches")
    train.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate (Adam)")
    train.add_argument("--weight-decay", type=non_negative_float, default=0.01,
                       help="decoupled weight decay (AdamW); 0 is plain Adam")
    train.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                       help="learning rate after warmup: constant, cosine or linear decay to 0")
    train.add_argument("--warmup", type=open_unit_interval, default=0.05,
                       help="fraction of all steps spent warming the learning rate up from 0")
    train.add_argument("--dropout", type=open_unit_interval, default=0.3,
                       help="dropout on attention weights, block outputs and pooled features")
    train.add_argument("--embed-dropout", type=open_unit_interval, default=0.1,
                       help="dropout on the summed token + position embeddings")
    train.add_argument("--word-dropout", type=open_unit_interval, default=0.0,
                       help="probability of replacing a training word by <unk>")
    train.add_argument("--augment", type=unit_interval, default=0.0,
                       help="probability of adding, for each acceptable training sentence of a "
                            "batch, a corrupted copy labelled unacceptable (two neighbouring "
                            "words swapped, a word dropped or a word repeated)")
    train.add_argument("--label-smoothing", type=open_unit_interval, default=0.0,
                       help="targets become y(1-s) + s/2")
    train.add_argument("--ema", type=open_unit_interval, default=0.0,
                       help="if > 0, validate, select and test an exponential moving average of "
                            "the weights with this decay per step (e.g. 0.999); 0: the raw weights")
    train.add_argument("--swa-start", type=non_negative_int, default=0, metavar="E",
                       help="if > 0, from epoch E on validate, select and test the mean of the "
                            "weights at the end of epochs E, E+1, ... (stochastic weight "
                            "averaging); 0: off")
    train.add_argument("--pretrain-epochs", type=non_negative_int, default=0,
                       help="self-supervised epochs before the classifier is trained: predict "
                            "randomly hidden words of the training sentences (masked-token "
                            "prediction; labels unused, no other data)")
    train.add_argument("--mask-prob", type=strict_unit_interval, default=0.15,
                       help="share of words hidden (replaced by <unk>) in each pre-training "
                            "sentence")
    train.add_argument("--patience", type=non_negative_int, default=5,
                       help="stop after this many epochs without a better validation MCC "
                            "(0: never stop early)")
    train.add_argument("--time-limit", type=non_negative_float, default=0.0,
                       help="stop after the epoch that ends past this many seconds of training "
                            "and validation (0: no limit); keeps a run inside 10 minutes on a "
                            "busy machine")
    train.add_argument("--threshold", default="0.5",
                       help="decision threshold on the probability: a number, or 'tune' to pick "
                            "the one that maximises validation MCC")
    train.add_argument("--seed", type=non_negative_int, default=0,
                       help="seed of initial weights, batch order and dropout")
    train.add_argument("--ensemble", type=positive_int, default=1, metavar="K",
                       help="train K models (seeds SEED + 1000 k), each selected on validation as "
                            "usual, and predict with the mean of their probabilities (threshold "
                            "chosen on validation for the ensemble); the checkpoint holds all K; "
                            "costs K times the training time")

    run = p.add_argument_group("run")
    run.add_argument("--out", metavar="PATH", default=None,
                     help="write the best-on-validation checkpoint here (atomically)")
    run.add_argument("--threads", type=positive_int, default=2,
                     help="torch intra-op threads; on a machine busy with other jobs 1 can be "
                          "much faster than 2")
    run.add_argument("--bench-batches", type=non_negative_int, default=20,
                     help="training batches timed with and without the padding mask after "
                          "training, side by side (0: skip)")
    run.add_argument("--no-progress", dest="progress", action="store_false",
                     help="hide the progress bar")
    return p


def main(argv=None):
    return run_main(PROG, build_parser(), run, argv)


def config_from_args(args):
    """The TrainConfig of parsed flags; a bad combination is a CliError naming the flags."""
    try:
        return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    except ConfigError as err:
        raise CliError(err.with_flags()) from None


def run(args):
    check_threads(args.threads, "--threads")
    if args.out:   # before the minutes of training, not after
        check_writable_file(args.out, "--out")
    config = config_from_args(args)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CliError(TORCH_HINT, RUNTIME) from None
    from fastrnn.cola.training import prepare_data, train
    try:
        data = prepare_data(config)
    except (OSError, ValueError) as e:
        raise CliError(str(e)) from None
    with printing_log("fastrnn.cola"):
        result = train(config, data)
    print_report(data, config, result.report)
    return 0


def print_report(data, config, r):
    test = len(data.test)
    print(f"CoLA from {data.data_dir}: train {len(data.train)}, validation {len(data.val)}, "
          f"held-out dev {test} sentences; vocabulary {len(data.word_to_ix)}")
    stopped = ' (stopped by --time-limit)' if r['stopped_by_time'] else ''
    if config.ensemble == 1:
        print(f"best epoch {r['best_epoch']} of {len(r['history'])}{stopped}: validation MCC "
              f"{r['val_mcc']:.4f} at threshold {r['threshold']:.2f}")
    else:
        members = ", ".join(f"{m:.4f} (epoch {e} of {len(h)})" for m, e, h in
                            zip(r["member_val_mcc"], r["best_epoch"], r["history"]))
        print(f"{config.ensemble}-member ensemble (mean of probabilities){stopped}: validation "
              f"MCC {r['val_mcc']:.4f} at threshold {r['threshold']:.2f}; members {members}")
    print(f"held-out dev ({test} sentences)        accuracy    MCC")
    print(f"  model (threshold {r['threshold']:.2f})           {r['test_accuracy']:8.4f} "
          f"{r['test_mcc']:7.4f}")
    print(f"  majority class ({r['majority_class']})             {r['majority_accuracy']:8.4f} "
          f"{r['majority_mcc']:7.4f}")
    print(f"  (model at threshold 0.50: MCC {r['test_mcc_at_half']:.4f})")
    print(f"training{' (all members)' if config.ensemble > 1 else ''}: "
          f"{r['train_sentences_per_s']:.0f} sentences/s over "
          f"{r['train_seconds']:.1f} s (mask {'on' if config.mask else 'off'}, "
          f"{r['threads']} threads); whole fit {r['run_seconds']:.0f} s wall, "
          f"{r['run_cpu_seconds']:.0f} s CPU")
    if "throughput" in r:
        t = r["throughput"]
        print(f"throughput side by side ({config.bench_batches} batches of {config.batch_size}"
              f"{', one member' if config.ensemble > 1 else ''}): "
              f"with mask {t['with_mask']:.0f} sentences/s, without {t['without_mask']:.0f} "
              f"sentences/s (ratio {t['with_mask'] / t['without_mask']:.2f})")
    if config.out:
        print(f"checkpoint: {config.out}")


if __name__ == "__main__":
    sys.exit(main())
