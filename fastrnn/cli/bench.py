"""fastrnn-bench: time whole training iterations of the captioning LSTM, every engine side by side.

The command line over ``fastrnn.bench.training`` (and ``fastrnn.bench.distributed`` for
``--ranks``): argument parsing and printing only.
"""
import sys

from fastrnn import gemm
from fastrnn.bench.training import (
    PRECISIONS,
    TORCH_CONTENDERS,
    available_contenders,
    format_header,
    format_table,
    run,
)
from fastrnn.captioning.presets import BENCHMARK_SHAPES
from fastrnn.cli._common import (
    Parser,
    check_threads,
    check_writable_file,
    non_negative_int,
    positive_int,
    run_main,
    write_json,
)

_positive, _non_negative = positive_int, non_negative_int
PROG = "fastrnn-bench"


def build_parser():
    parser = Parser(
        prog=PROG,
        description="Time training iterations (loss + gradients + Adam) of the captioning LSTM "
                    "for the NumPy reference, each compiled fastrnn backend (fused engine) and a "
                    "PyTorch CPU model of the same architecture (plain and packed), taking turns, "
                    "on minibatches with COCO-like caption lengths. Prints median seconds per "
                    "iteration, speed-ups, GFLOP/s counted on the dense reference formulation, "
                    "the machine's measured sgemm rate, peak memory and the projected time of the "
                    "1,170-iteration full-COCO run.")
    parser.add_argument("--preset", choices=sorted(BENCHMARK_SHAPES), default="full",
                        help="full: N=1024, T=16, D=512, W=256, H=2048, V=1004 (the full-COCO reference configuration; "
                             "several minutes); small: N=512, H=768 (about a minute); tiny: "
                             "N=16, H=32 (seconds, for smoke tests). Default: full")
    parser.add_argument("--iters", type=_positive, default=None,
                        help="timed iterations per contender (default: 5, tiny: 2)")
    parser.add_argument("--warmup", type=_non_negative, default=None,
                        help="untimed iterations per contender first (default: 1)")
    parser.add_argument("--threads", type=_positive, default=None,
                        help="threads for BLAS, Numba, OpenMP and PyTorch (default: each "
                             "library's default, all cores)")
    parser.add_argument("--backends", default=None, metavar="LIST",
                        help="comma-separated contenders among numpy (the reference), the "
                             "compiled fastrnn backends (numba, cython), torch and torch-packed "
                             "(default: every one this install can run). A compiled backend may "
                             "name its GEMM provider: cython/numpy runs the fused engine with "
                             "NumPy's BLAS, cython/onednn with oneDNN (default: the default "
                             "provider, see fastrnn.gemm and $FASTRNN_GEMM)")
    parser.add_argument("--precision", default="fp32", metavar="LIST",
                        help="comma-separated precisions among fp32 and bf16 (default: fp32). "
                             "Every compiled backend and PyTorch model runs in each: fastrnn's "
                             "mixed precision (fastrnn.precision; bf16 product operands, float32 "
                             "accumulation) and PyTorch under torch.autocast('cpu', "
                             "dtype=torch.bfloat16); the reference runs in fp32 only. The header "
                             "then also prints the measured bf16 GEMM rate and the CPU's bf16 "
                             "hardware")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the results (every timing, the table's columns, the "
                             "configuration) to this JSON file")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the weights and minibatches (default: 0)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurement (it reruns 2 iterations of each "
                             "contender alone in a fresh process)")
    parser.add_argument("--profile", action="store_true",
                        help="also print where the fused engine's time goes, phase by phase")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--ranks", type=_positive, default=None, metavar="N",
                        help="instead of the table above: data-parallel scaling check. Runs the "
                             "fused fast path under torchrun with 1 rank and with N ranks (cores / "
                             "N threads each) and reports seconds per iteration, the speed-up, "
                             "whether the losses match the 1-rank run and whether every rank ends "
                             "with identical parameters. On one machine the ranks share its "
                             "cores: a correctness-under-load check, not a speed-up")
    return parser


def _contender_names(parser, text):
    available = available_contenders()
    if text is None:
        return available
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = ["numpy", "numba", "cython"] + list(TORCH_CONTENDERS)
    for n in names:
        base, slash, provider = n.partition("/")
        if base not in known:
            parser.error(f"--backends: unknown contender {n!r}; choose among {known}")
        if base not in available:
            parser.error(f"--backends: {n!r} cannot run in this install; available: {available}")
        if slash and (base in ("numpy",) + TORCH_CONTENDERS
                      or provider not in gemm.GEMM_PROVIDERS):
            parser.error(f"--backends: {n!r}: only a compiled backend takes /GEMM, with GEMM "
                         f"one of {gemm.GEMM_PROVIDERS}")
        if slash:
            try:
                gemm.gemm_provider(provider)
            except ImportError as err:
                parser.error(f"--backends: {n!r}: {err}")
    if not names:
        parser.error("--backends: name at least one contender")
    return list(dict.fromkeys(names))


def _precisions(parser, text):
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    bad = [n for n in names if n not in PRECISIONS]
    if bad or not names:
        parser.error(f"--precision: expected a comma-separated list of {PRECISIONS}, got {text!r}")
    if "bf16" in names:
        try:
            gemm.bf16_provider()
        except (ImportError, ValueError) as err:
            parser.error(f"--precision bf16: {err}")
    return names


def main(argv=None):
    parser = build_parser()
    return run_main(PROG, parser, lambda args: _main(parser, args), argv)


def _main(parser, args):
    if args.threads is not None:
        check_threads(args.threads, "--threads")
    if args.json:   # before the minutes of timing, not after
        check_writable_file(args.json, "--json")
    if args.ranks is not None:
        from fastrnn.bench.distributed import scaling_report
        cfg = BENCHMARK_SHAPES[args.preset]
        summary, text = scaling_report(args.ranks, args.preset,
                                       cfg["iters"] if args.iters is None else args.iters,
                                       cfg["warmup"] if args.warmup is None else args.warmup,
                                       args.seed, cores=args.threads)
        print(text)
        _write_json(args.json, summary)
        return 0
    names = _contender_names(parser, args.backends)
    precisions = _precisions(parser, args.precision)
    result = run(args.preset, args.iters, args.warmup, args.threads, names, args.seed,
                 memory=not args.no_memory, profile=args.profile, progress=not args.no_progress,
                 precisions=precisions)
    profile = result.pop("_profile")
    print(format_header(args.preset, {**BENCHMARK_SHAPES[args.preset]}, result, args.threads,
                        (result["load_average_start"], result["load_average_end"])))
    print(format_table(result))
    if profile:
        print(profile)
    _write_json(args.json, result)
    return 0


def _write_json(path, doc):
    """--json: write ``doc`` to ``path`` (when given)."""
    if path:
        write_json(path, doc)
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
