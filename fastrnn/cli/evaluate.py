"""fastrnn-eval: score a saved captioning model (BLEU) and show some of its captions.

    fastrnn-eval runs/20260101-120000/checkpoint.npz --beam-size 3

The scores come from ``fastrnn.captioning.evaluation``; the helpers here (data
folder resolution, printing the BLEU table and the sample captions) are shared
with fastrnn-train.
"""
import os
import sys

import fastrnn
from fastrnn import config
from fastrnn.captioning import checkpoint
from fastrnn.captioning.data import load_coco_data
from fastrnn.captioning.evaluation import (
    check_compatible,
    evaluate,
    pca_for,
    read_oracle,
    sample_captions,
)
from fastrnn.cli._common import (
    CliError,
    Parser,
    as_usage_error,
    check_threads,
    check_writable_file,
    non_negative_int,
    positive_int,
    run_main,
    write_json,
)

PROG = "fastrnn-eval"


# ------------------------------------------------------------ shared helpers

def setup_compute(backend=None, threads=None):
    """Select the backend and thread count; returns (backend name, threads)."""
    if threads is not None:
        threads = check_threads(threads, "--threads")
        fastrnn.set_num_threads(threads)
    if backend is not None:
        try:
            fastrnn.set_backend(backend)
        except (ValueError, ImportError) as err:
            raise CliError(str(err)) from None
    return fastrnn.get_backend(), fastrnn.get_num_threads()


def resolve_data_dir(data_arg, prog, progress=True):
    """--data, else $FASTRNN_DATA, else the built-in synthetic set (generated on first use,
    with a progress bar unless ``progress`` is False)."""
    if data_arg is None:
        data_arg = config.get(config.DATA)
        if data_arg is not None:
            print(f"{prog}: data from $FASTRNN_DATA = {data_arg}")
    if data_arg is None:
        from fastrnn.captioning.data import default_data_dir
        print(f"{prog}: no --data given; using the built-in synthetic COCO set "
              f"(generated and cached on first use)")
        return default_data_dir(progress=progress)
    if not os.path.isdir(data_arg):
        raise CliError(f"data folder {data_arg} does not exist. Pass --data with the CS231n "
                       f"coco_captioning folder, or write a synthetic one with "
                       f"`fastrnn-data synth --out {data_arg}`")
    return data_arg


def load_data(data_dir, max_train=None, pca_features=True, seed=0):
    try:
        return load_coco_data(data_dir, max_train=max_train, pca_features=pca_features, seed=seed)
    except (OSError, ValueError, KeyError) as err:
        raise CliError(f"--data {data_dir}: {err}") from None


def load_checkpoint_model(path):
    """The model of a checkpoint; a missing or damaged file is a CliError naming it."""
    try:
        return checkpoint.load_model(path)
    except (OSError, ValueError) as err:
        raise CliError(str(err)) from None


def print_scores(scores, oracle, split, num_samples, beam_size):
    decoding = "greedy" if beam_size == 1 else f"beam {beam_size}"
    print(f"\n{split} BLEU ({num_samples} samples, {decoding} decoding):")
    header = f"  {'metric':<34}{'model':>8}"
    if oracle:
        header += f"{'oracle':>9}"
    print(header)
    names = {"reference_bleu": "reference (unigram sentence BLEU)"}
    for key, value in scores.items():
        line = f"  {names.get(key, key.upper() + ' (corpus)'):<34}{value:>8.4f}"
        if oracle and oracle.get(key) is not None:
            line += f"{oracle[key]:>9.4f}"
        print(line)
    if oracle:
        print("  oracle: one held-out ground-truth caption scored like the model "
              "(synthetic_info.json), the ceiling to read the model against")


def print_samples(samples):
    print("\nsample captions:")
    for s in samples:
        print(f"  image {s['image']} ({s['url']})")
        print(f"    model:  {s['generated']}")
        for truth in s["ground_truth"][:3]:
            print(f"    truth:  {truth}")


# ------------------------------------------------------------------- command

def build_parser():
    parser = Parser(
        prog=PROG,
        description="Load a captioning model saved by fastrnn-train (checkpoint.npz), print its "
                    "BLEU scores on a split (the reference unigram BLEU and corpus BLEU-1..4, "
                    "next to the synthetic generator's oracle when the folder has one) and a few "
                    "of its captions next to the ground truth.")
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint.npz file")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="COCO captioning folder, real or synthetic (default: $FASTRNN_DATA, "
                             "else the built-in synthetic set)")
    parser.add_argument("--split", choices=("train", "val"), default="val",
                        help="split to score (default: val)")
    parser.add_argument("--num-samples", type=positive_int, default=1000, metavar="N",
                        help="captions for the reference BLEU and images for the corpus BLEU "
                             "(default: 1000)")
    parser.add_argument("--beam-size", type=positive_int, default=1, metavar="K",
                        help="1 = greedy decoding, K > 1 = beam search (default: 1)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the scored captions and shown images (default: 0)")
    parser.add_argument("--backend", default=None, choices=fastrnn.available_backends(),
                        help="compute backend (default: $FASTRNN_BACKEND, else the fastest)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="threads for the compiled kernels and BLAS (default: all cores)")
    parser.add_argument("--json", metavar="FILE", default=None,
                        help="also write the scores and sample captions to FILE as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    return run_main(PROG, build_parser(), run, argv)


def run(args):
    if args.json:   # before the minutes of scoring, not after
        check_writable_file(args.json, "--json")
    model = load_checkpoint_model(args.checkpoint)
    backend, threads = setup_compute(args.backend, args.threads)
    print(f"fastrnn-eval: {model.cell_type.upper()} hidden {model.hidden_dim}, word vectors "
          f"{model.wordvec_dim}, {model.dtype.name}; backend {backend}, threads {threads}")
    data_dir = resolve_data_dir(args.data, "fastrnn-eval", not args.no_progress)
    data = load_data(data_dir, max_train=None,
                     pca_features=as_usage_error(pca_for, model, data_dir))
    as_usage_error(check_compatible, model, data, data_dir)

    progress = not args.no_progress
    scores = evaluate(model, data, args.split, args.num_samples, args.beam_size, args.seed,
                      progress)
    oracle = as_usage_error(read_oracle, data_dir)
    print_scores(scores, oracle, args.split, args.num_samples, args.beam_size)
    samples = sample_captions(model, data, args.split, beam_size=args.beam_size, seed=args.seed)
    print_samples(samples)
    if args.json:
        write_json(args.json, {"checkpoint": os.path.abspath(args.checkpoint), "data": data_dir,
                               "split": args.split, "beam_size": args.beam_size,
                               "scores": scores, "oracle": oracle, "samples": samples})
    return 0


if __name__ == "__main__":
    sys.exit(main())
