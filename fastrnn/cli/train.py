"""fastrnn-train: train the image-captioning LSTM, then report BLEU and sample captions.

    fastrnn-train                        # built-in synthetic COCO set, a few minutes
    fastrnn-train --data ~/coco_captioning --preset baseline    # the full-COCO reference configuration
    fastrnn-train --resume runs/20260101-120000/checkpoint.npz  # continue after Ctrl-C
    torchrun --nproc-per-node 2 -m fastrnn.cli.train --distributed   # data-parallel

Writes to --out: checkpoint.npz (every epoch, on Ctrl-C and at the end, only
from finite weights and learning rate), loss.png, metrics.json, metrics.jsonl (one
JSON object per logged iteration and per evaluation) and run.json (the
settings, read back by --resume). --out is checked to be writable before the
data is loaded.
"""
import argparse
import json
import os
import sys
import textwrap
import time

import numpy as np

import fastrnn
from fastrnn import gemm
from fastrnn._io import atomic_write
from fastrnn.captioning import checkpoint, metrics
from fastrnn.captioning.distributed import (
    DistributedContext,
    distributed_solver,
    launched_by_torchrun,
)
from fastrnn.captioning.evaluation import check_compatible, evaluate, read_oracle, sample_captions
from fastrnn.captioning.model import CELL_TYPES, CaptioningRNN
from fastrnn.captioning.presets import TRAINING_PRESETS
from fastrnn.captioning.solver import CaptioningSolver
from fastrnn.cli._common import (
    CliError,
    Parser,
    as_usage_error,
    check_threads,
    check_writable_dir,
    non_negative_int,
    positive_float,
    positive_int,
    run_main,
    write_json,
)
from fastrnn.cli.evaluate import (
    load_data,
    print_samples,
    print_scores,
    resolve_data_dir,
    setup_compute,
)
from fastrnn.gemm import GEMM_PROVIDERS
from fastrnn.optim import RULES

PROG = "fastrnn-train"

# Everything a preset can set; the rest of the flags have plain defaults.
PRESET_KEYS = tuple(TRAINING_PRESETS["default"])
DEFAULT_EVAL_SAMPLES = 1000


def _preset_help(key, text):
    values = " / ".join(f"{TRAINING_PRESETS[name][key]}" for name in sorted(TRAINING_PRESETS))
    return f"{text} ({' / '.join(sorted(TRAINING_PRESETS))} preset: {values})"


def build_parser():
    p = Parser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Train the CS231n image-captioning RNN/LSTM with fastrnn, then print val BLEU (the "
            "reference unigram BLEU and corpus BLEU-1..4, next to the synthetic generator's "
            "oracle), sample captions next to their ground truth, and write checkpoint.npz, "
            "loss.png, metrics.json, metrics.jsonl and run.json to --out.", 79),
        epilog="Presets (explicit flags override them):\n" + "\n".join(
            textwrap.fill(", ".join(f"{k}={v}" for k, v in values.items()), 79,
                          initial_indent=f"  {name:<9} ", subsequent_indent=" " * 12)
            for name, values in TRAINING_PRESETS.items()) +
        "\n\nCtrl-C saves a checkpoint; continue with --resume OUT/checkpoint.npz\n"
        "(add --num-epochs to train longer, --lr to replace the saved learning rate).\n"
        "Errors are one line: exit status 2 for a bad flag or file, 1 if training fails.")
    data = p.add_argument_group("data")
    data.add_argument("--data", metavar="DIR",
                      help="COCO captioning folder, real (CS231n coco_captioning) or synthetic "
                           "(fastrnn-data synth). Default: $FASTRNN_DATA, else the built-in "
                           "synthetic set (20,000 captions, generated and cached on first use)")
    data.add_argument("--max-train", type=positive_int, metavar="N",
                      help="train on N captions drawn at random (default: all)")
    data.add_argument("--raw-features", action="store_true",
                      help="use the raw 4096-d fc7 features instead of the 512-d PCA ones")

    model = p.add_argument_group("model and training (defaults from --preset)")
    model.add_argument("--preset", choices=sorted(TRAINING_PRESETS), default="default",
                       help="default: a few minutes on the built-in synthetic set; baseline: "
                            "the full-COCO reference configuration (LSTM 2048, adam 1e-4, batch 1024, 3 epochs)")
    model.add_argument("--cell-type", choices=CELL_TYPES,
                       help=_preset_help("cell_type", "recurrent cell"))
    model.add_argument("--hidden-dim", type=positive_int, metavar="H",
                       help=_preset_help("hidden_dim", "hidden state size"))
    model.add_argument("--wordvec-dim", type=positive_int, metavar="W",
                       help=_preset_help("wordvec_dim", "word vector size"))
    model.add_argument("--dtype", choices=("float32", "float64"),
                       help=_preset_help("dtype", "weight and activation dtype"))
    model.add_argument("--batch-size", type=positive_int, metavar="B",
                       help=_preset_help("batch_size", "captions per iteration"))
    model.add_argument("--num-epochs", type=non_negative_int, metavar="E",
                       help=_preset_help("num_epochs", "epochs of max(num_train // batch_size, 1) "
                                         "iterations; with --resume, the total to reach"))
    model.add_argument("--update-rule", choices=sorted(RULES),
                       help=_preset_help("update_rule", "optimizer"))
    model.add_argument("--lr", type=positive_float, metavar="LR",
                       help=_preset_help("lr", "learning rate, a finite number > 0; with "
                                         "--resume it replaces the saved one"))
    model.add_argument("--lr-decay", type=positive_float, metavar="F",
                       help=_preset_help("lr_decay", "learning rate multiplier after every "
                                         "epoch, a finite number > 0 (above 1 the rate grows)"))
    model.add_argument("--seed", type=non_negative_int, default=0,
                       help="seed of the weights, the minibatches and --max-train (default: 0)")
    model.add_argument("--print-every", type=positive_int, metavar="N",
                       help=_preset_help("print_every", "log the loss every N iterations"))

    run = p.add_argument_group("evaluation, compute and output")
    run.add_argument("--eval-samples", type=non_negative_int, metavar="N",
                     help="val captions (reference BLEU) and images (corpus BLEU) scored after "
                          "every epoch and at the end; 0 skips evaluation (default: "
                          f"{DEFAULT_EVAL_SAMPLES}; with --resume, the resumed run's)")
    run.add_argument("--beam-size", type=positive_int, default=1, metavar="K",
                     help="decoding for the final scores and samples: 1 = greedy, K > 1 = beam "
                          "search (default: 1)")
    run.add_argument("--backend", choices=fastrnn.available_backends(),
                     help="compute backend (default: $FASTRNN_BACKEND, else the fastest available)")
    run.add_argument("--gemm", choices=GEMM_PROVIDERS,
                     help="who computes the matrix products of the fast path (fastrnn.gemm): auto "
                          "sends large products to oneDNN inside PyTorch when NumPy's OpenBLAS "
                          "runs narrower kernels than the CPU has, else NumPy's BLAS (default: "
                          "$FASTRNN_GEMM, else auto)")
    run.add_argument("--precision", choices=fastrnn.precision.PRECISIONS,
                     help="arithmetic of the fast path (fastrnn.precision): fp32, or bf16 "
                          "(matrix-product operands in bfloat16, float32 accumulation, weights "
                          "and optimizer in float32). Recorded in metrics.json and the "
                          "checkpoint; --resume keeps the saved one unless this is given "
                          "(default: $FASTRNN_PRECISION, else fp32)")
    run.add_argument("--threads", type=positive_int, metavar="N",
                     help="threads for the compiled kernels and BLAS (default: all cores; with "
                          "--resume, the count stored in the checkpoint, which a bit-exact "
                          "resume needs)")
    run.add_argument("--out", metavar="DIR",
                     help="output folder (default: runs/<date-time>; with --resume: the "
                          "checkpoint's folder)")
    run.add_argument("--resume", metavar="CHECKPOINT",
                     help="continue the run saved in CHECKPOINT (model, optimizer, minibatch "
                          "generator and counters), bit for bit with the same --threads")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--distributed", action="store_true",
                     help="train data-parallel over the processes of a torchrun launch (gloo): "
                          "each rank computes the gradients of its shard of every global batch, "
                          "one all-reduce per iteration, rank 0 writes checkpoints and reports. "
                          "Automatic when WORLD_SIZE > 1. Default threads per rank: cores / "
                          "ranks on the machine")
    return p


def settings_from(args):
    """The preset's values with every explicitly given flag on top."""
    settings = dict(TRAINING_PRESETS[args.preset])
    for key in PRESET_KEYS:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    return settings


def main(argv=None):
    return run_main(PROG, build_parser(), _run_in_precision, argv)


def _run_in_precision(args):
    with fastrnn.use_precision(_precision(args)):
        return run(args)


def run(args):
    settings = settings_from(args)
    if args.threads is not None:
        check_threads(args.threads, "--threads")
    meta = _checkpoint_meta(args.resume) if args.resume else None
    saved_run = _saved_run(args.resume) if args.resume else {}
    out = args.out or (os.path.dirname(os.path.abspath(args.resume)) if args.resume
                       else os.path.join("runs", time.strftime("%Y%m%d-%H%M%S")))
    check_writable_dir(out, "--out" if args.out else "--resume (its folder, the default --out)")
    if args.eval_samples is None:
        args.eval_samples = saved_run.get("eval_samples", DEFAULT_EVAL_SAMPLES)
    context = None
    if args.distributed or launched_by_torchrun():
        context = DistributedContext()
        if args.threads is None:   # share the machine's cores between its ranks
            local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", context.world_size))
            args.threads = max(1, (os.cpu_count() or 1) // local_ranks)
    if meta is not None:
        _resume_threads(args, meta.get("solver", {}).get("num_threads"), context)
    backend, threads = setup_compute(args.backend, args.threads)
    if args.gemm is not None:
        try:
            gemm.set_default_provider(args.gemm)
        except ImportError as err:
            raise CliError(f"--gemm {args.gemm}: {err}") from None

    data_arg = args.data if args.data is not None else saved_run.get("data")
    raw_features = args.raw_features or saved_run.get("raw_features", False)
    max_train = args.max_train if args.max_train is not None else saved_run.get("max_train")
    data_dir = resolve_data_dir(data_arg, PROG, not args.no_progress)
    data = load_data(data_dir, max_train=max_train, pca_features=not raw_features, seed=args.seed)
    eval_fn = _epoch_eval(args) if args.eval_samples else None
    progress = not args.no_progress

    if args.resume:
        solver = _resume(args, data, out, eval_fn, progress, context)
        as_usage_error(check_compatible, solver.model, data, data_dir)
    else:
        model = CaptioningRNN(data["word_to_idx"], input_dim=data["train_features"].shape[1],
                              wordvec_dim=settings["wordvec_dim"],
                              hidden_dim=settings["hidden_dim"],
                              cell_type=settings["cell_type"], dtype=np.dtype(settings["dtype"]),
                              seed=args.seed)
        solver_kwargs = dict(
            update_rule=settings["update_rule"],
            optim_config={"learning_rate": settings["lr"]}, lr_decay=settings["lr_decay"],
            batch_size=settings["batch_size"], num_epochs=settings["num_epochs"],
            print_every=settings["print_every"], verbose=True, seed=args.seed,
            checkpoint_dir=out, eval_fn=eval_fn, progress=progress)
        solver = (CaptioningSolver(model, data, **solver_kwargs) if context is None
                  else distributed_solver(context, model, data, **solver_kwargs))
    if context is not None and not context.is_main:
        solver.train()     # rank 0 alone writes files and reports
        context.close()
        return 0
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "run.json"), {
        "data": os.path.abspath(data_dir), "max_train": max_train, "raw_features": raw_features,
        "seed": args.seed, "preset": args.preset, "settings": settings,
        "eval_samples": args.eval_samples})

    # One JSON object per logged iteration and per evaluation, appended (a resumed
    # run continues the same file), flushed as written so a crash loses nothing.
    metrics_log = open(os.path.join(out, "metrics.jsonl"), "a", encoding="utf-8")
    solver.on_record = lambda record: _append_record(metrics_log, record)
    try:
        return _train_and_report(args, solver, context, data, data_dir, out, backend, threads)
    finally:
        metrics_log.close()


def _append_record(stream, record):
    stream.write(json.dumps(record, default=float) + "\n")
    stream.flush()


def _train_and_report(args, solver, context, data, data_dir, out, backend, threads):
    _print_plan(solver, data_dir, backend, threads, out)
    if context is not None:
        print(f"{PROG}: data-parallel over {context.world_size} ranks (gloo); global batch "
              f"{solver.batch_size}, about {solver.batch_size // context.world_size} per rank")
    first_iteration, start = solver.iteration, time.perf_counter()
    if first_iteration >= solver.num_iterations:
        print(f"{PROG}: nothing to train: the run is at iteration {first_iteration}, "
              f"{solver.num_epochs} epochs end at {solver.num_iterations} (raise --num-epochs)")
    with np.errstate(over="ignore", invalid="ignore"):   # divergence is reported, not warned
        solver.train()
    train_seconds = time.perf_counter() - start
    if context is not None:
        context.close()
    path = solver.save_checkpoint()
    return _report(args, solver, data, data_dir, out, path, backend, threads, train_seconds,
                   first_iteration)


def _checkpoint_meta(path):
    """The metadata of the --resume checkpoint: a damaged file is refused before any work."""
    try:
        return checkpoint.read_meta(path, verify=True)
    except (OSError, ValueError) as err:
        raise CliError(f"--resume: {err}") from None


# run.json keys --resume reads, with the types they must have
_RUN_KEYS = {"data": (str, type(None)), "max_train": (int, type(None)), "raw_features": bool,
             "eval_samples": int}


def _precision(args):
    """--precision, else (on --resume) the checkpoint's, else the one in force."""
    name = args.precision
    if name is None and args.resume and os.path.isfile(args.resume):
        try:
            name = checkpoint.saved_precision(args.resume)
        except (OSError, ValueError, KeyError):
            name = None      # an unreadable checkpoint is reported by the resume itself
    try:
        name = name or fastrnn.get_precision()
        if name == "bf16":
            gemm.bf16_provider()
    except (ImportError, ValueError) as err:
        raise CliError(f"--precision {name}: {err}") from None
    return name


def _saved_run(resume):
    """run.json next to the checkpoint: the data settings of the run being resumed."""
    path = os.path.join(os.path.dirname(os.path.abspath(resume)), "run.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as err:
        raise CliError(f"--resume: {path} is not a readable run.json ({err}); fix or remove "
                       f"it and pass --data") from None
    if not isinstance(saved, dict):
        raise CliError(f"--resume: {path} must hold a JSON object; fix or remove it and pass "
                       f"--data")
    for key, kinds in _RUN_KEYS.items():
        value = saved.get(key)
        if key in saved and (not isinstance(value, kinds) or
                             (isinstance(value, bool) and kinds is not bool) or
                             (isinstance(value, int) and value < 0)):
            raise CliError(f"--resume: {path}: '{key}' is {value!r}, not a valid value; fix or "
                           f"remove it")
    return saved


def _resume_threads(args, saved, context):
    """Default to the checkpoint's thread count; warn when another one is asked for."""
    if saved is None:
        return
    if args.threads is None and context is None:
        args.threads = saved
    elif args.threads is not None and args.threads != saved:
        print(f"{PROG}: warning: the checkpoint was written with {saved} threads and this run "
              f"uses {args.threads}; a bit-exact resume needs --threads {saved}")


def _resume(args, data, out, eval_fn, progress, context=None):
    overrides = {"checkpoint_dir": out, "eval_fn": eval_fn, "progress": progress, "verbose": True}
    if args.num_epochs is not None:
        overrides["num_epochs"] = args.num_epochs
    ignored = [f"--{k.replace('_', '-')}" for k in PRESET_KEYS
               if k not in ("num_epochs", "print_every", "lr") and getattr(args, k) is not None]
    if ignored:
        print(f"{PROG}: --resume continues the saved run as it was; ignoring {', '.join(ignored)}")
    if args.print_every is not None:
        overrides["print_every"] = args.print_every
    if args.lr is not None:
        overrides["learning_rate"] = args.lr
    try:
        solver = (CaptioningSolver.resume(args.resume, data, **overrides) if context is None
                  else distributed_solver(context, None, data, resume=args.resume, **overrides))
    except (OSError, ValueError) as err:
        raise CliError(f"--resume: {err}") from None
    if context is None or context.is_main:
        print(f"{PROG}: resuming {args.resume} at iteration {solver.iteration} "
              f"(epoch {solver.epoch} of {solver.num_epochs})")
        if args.lr is not None:
            print(f"{PROG}: --lr {args.lr:g} replaces the checkpoint's learning rate "
                  f"{_saved_learning_rate(args.resume):g}")
    return solver


def _saved_learning_rate(path):
    configs = checkpoint.read_meta(path)["optim"].values()
    return float(next((c["learning_rate"] for c in configs if "learning_rate" in c), "nan"))


def _epoch_eval(args):
    """eval_fn for the solver: val reference BLEU after every epoch."""
    def eval_fn(solver):
        bleu = metrics.reference_bleu(
            solver.model, solver.data, split="val", num_samples=args.eval_samples, seed=args.seed,
            progress=False)
        return {"val_reference_bleu": bleu, "learning_rate": solver.learning_rate}
    return eval_fn


def _print_plan(solver, data_dir, backend, threads, out):
    m = solver.model
    print(f"{PROG}: data {data_dir}: {solver.num_train} train captions, "
          f"{len(solver.data['val_captions'])} val captions, vocabulary {m.vocab_size}, "
          f"{m.input_dim}-d features")
    print(f"{PROG}: {m.cell_type.upper()} hidden {m.hidden_dim}, word vectors {m.wordvec_dim}, "
          f"{m.dtype.name}; {solver.update_rule_name} lr {solver.learning_rate:g} "
          f"(x{solver.lr_decay:g} per epoch), batch {solver.batch_size}, {solver.num_epochs} "
          f"epochs of {solver.iterations_per_epoch} iterations")
    print(f"{PROG}: backend {backend} (available: {', '.join(fastrnn.available_backends())}), "
          f"threads {threads}{_gemm_label(backend)}, precision {fastrnn.get_precision()}; "
          f"writing to {os.path.abspath(out)}")


def _gemm_label(backend):
    """', GEMM provider ...' for the fused path (the reference path multiplies in NumPy)."""
    return "" if backend == "numpy" else f", GEMM provider {gemm.describe()}"


def _report(args, solver, data, data_dir, out, checkpoint_path, backend, threads, train_seconds,
            first_iteration):
    this_run = solver.iter_times[first_iteration:]
    times = this_run[1:] or this_run   # the first iteration includes warm-up (JIT, caches)
    s_per_it = float(np.median(times)) if times else None
    if s_per_it is not None:
        print(f"\n{PROG}: trained iterations {first_iteration + 1}..{solver.iteration} in "
              f"{train_seconds:.1f} s on backend {backend}: {s_per_it:.4f} s/iteration "
              f"(median), {np.mean(times):.4f} mean")
    metrics_doc = {
        "backend": backend, "threads": threads, "gemm": gemm.default_provider(),
        "precision": fastrnn.get_precision(),
        "data": os.path.abspath(data_dir),
        "model": {k: v for k, v in solver.model.config().items() if k != "word_to_idx"},
        "solver": solver._settings(), "iterations": solver.iteration,
        "num_train": solver.num_train, "train_seconds_this_run": train_seconds,
        "seconds_per_iteration": {"median": s_per_it,
                                  "mean": float(np.mean(times)) if times else None},
        "final_loss": solver.loss_history[-1] if solver.loss_history else None,
        "eval_history": solver.eval_history, "checkpoint": os.path.abspath(checkpoint_path),
    }
    if args.eval_samples:
        progress = not args.no_progress
        scores = evaluate(solver.model, data, "val", args.eval_samples, args.beam_size,
                          args.seed, progress)
        oracle = as_usage_error(read_oracle, data_dir)
        print_scores(scores, oracle, "val", args.eval_samples, args.beam_size)
        samples = sample_captions(solver.model, data, "val", beam_size=args.beam_size,
                                  seed=args.seed)
        print_samples(samples)
        metrics_doc.update({"val": scores, "oracle": oracle, "beam_size": args.beam_size,
                            "eval_samples": args.eval_samples, "samples": samples})
    write_json(os.path.join(out, "metrics.json"), metrics_doc)
    plot_losses(solver, os.path.join(out, "loss.png"))
    print(f"\n{PROG}: wrote {os.path.join(out, 'loss.png')}, {os.path.join(out, 'metrics.json')}, "
          f"{os.path.join(out, 'metrics.jsonl')} and {checkpoint_path}")
    print(f"{PROG}: evaluate again with `fastrnn-eval {checkpoint_path}`; train longer with "
          f"`fastrnn-train --resume {checkpoint_path} --num-epochs N`")
    return 0


def plot_losses(solver, path):
    """loss.png: the training loss per iteration (and its running mean), val BLEU per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.asarray(solver.loss_history)
    fig, (ax_loss, ax_bleu) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(np.arange(1, len(losses) + 1), losses, lw=0.6, alpha=0.5, label="minibatch")
    window = max(1, min(50, len(losses) // 10))
    if len(losses) >= window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax_loss.plot(np.arange(window, len(losses) + 1), smooth, lw=1.5,
                     label=f"mean of {window}")
    ax_loss.set(xlabel="iteration", ylabel="training loss", title="loss")
    ax_loss.legend()
    evals = [e for e in solver.eval_history if "val_reference_bleu" in e]
    if evals:
        ax_bleu.plot([e["epoch"] for e in evals], [e["val_reference_bleu"] for e in evals], "o-")
    ax_bleu.set(xlabel="epoch", ylabel="val unigram BLEU", title="val BLEU")
    m = solver.model
    fig.suptitle(f"{m.cell_type.upper()} H={m.hidden_dim} W={m.wordvec_dim}, "
                 f"{solver.update_rule_name} batch {solver.batch_size}")
    fig.tight_layout()
    try:
        with atomic_write(path) as f:   # a half-drawn plot never replaces a whole one
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)



if __name__ == "__main__":
    sys.exit(main())
