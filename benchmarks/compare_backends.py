"""Side-by-side check of the backends' speed targets: backend time / NumPy time.

    python benchmarks/compare_backends.py               # all targets, 5 interleaved repeats
    python benchmarks/compare_backends.py --repeats 9 --skip-full
    python benchmarks/compare_backends.py --only softmax

The compiled backends compute their products through fastrnn's default GEMM
provider (``auto``: oneDNN for large float32 products when PyTorch is installed);
``FASTRNN_GEMM=numpy python benchmarks/compare_backends.py`` measures them with
NumPy's BLAS, as the reference uses, so that only the fused elementwise work differs.

Each case runs every backend once per repeat, in rotating order (``fastrnn.bench.timer``),
after one warm-up round, and reports the median; the ratio is that median over NumPy's
median (< 1 is faster). The machine may be shared: the spread column shows how noisy
each median is.

Targets (float32):
  temporal_softmax_loss, N*T = 16384, V = 1004 ........ ratio <= 0.20 (>= 5x faster)
  lstm_step_forward + backward, N 1024, D 256, H 2048 .. ratio <= 0.77 (>= 1.3x faster)
  the same pair at the tiny size N 3, D 4, H 5 ......... ratio <= 3
  import fastrnn, warm caches .......................... < 1 s
"""
import os
import subprocess
import sys

import numpy as np

import fastrnn
from fastrnn.backends import load_backend
from fastrnn.bench.timer import time_interleaved
from fastrnn.cli._common import Parser, positive_int


def softmax_case(be, rng):
    N, T, V = 1024, 16, 1004
    x = rng.standard_normal((N, T, V)).astype(np.float32)
    y, mask = rng.integers(0, V, (N, T)), rng.random((N, T)) < 0.9
    return lambda: be.temporal_softmax_loss(x, y, mask)


def lstm_pair_case(N, D, H, calls):
    def make(be, rng):
        f32 = np.float32
        x, h, c = (rng.standard_normal(s).astype(f32) for s in ((N, D), (N, H), (N, H)))
        Wx = (rng.standard_normal((D, 4 * H)) / np.sqrt(D)).astype(f32)
        Wh = (rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype(f32)
        b = np.zeros(4 * H, f32)
        dh, dc = rng.standard_normal((N, H)).astype(f32), rng.standard_normal((N, H)).astype(f32)

        def run():
            for _ in range(calls):
                _, _, cache = be.lstm_step_forward(x, h, c, Wx, Wh, b)
                be.lstm_step_backward(dh, dc, cache)
        return run
    return make


CASES = [
    # name, builder, seconds are divided by this many calls, target ratio
    ("temporal_softmax_loss N*T=16384 V=1004", softmax_case, 1, 0.20),
    ("lstm_step fwd+bwd N=1024 D=256 H=2048", lstm_pair_case(1024, 256, 2048, 1), 1, 1 / 1.3),
    ("lstm_step fwd+bwd tiny N=3 D=4 H=5", lstm_pair_case(3, 4, 5, 2000), 2000, 3.0),
]


def compare(names, case, repeats, progress):
    title, make, calls, target = case
    runs = {name: make(load_backend(name), np.random.default_rng(0)) for name in names}
    # One warm-up round: JIT, caches, page faults.
    timing = time_interleaved(runs, repeats, warmup=1, baseline="numpy", progress=progress,
                              desc=title, leave=False)
    rows = []
    for name, stats in timing.summary().items():
        med = stats["median"] / calls
        spread = (stats["max"] - stats["min"]) / stats["median"]
        ratio = stats["ratio"]
        verdict = "" if name == "numpy" else ("ok" if ratio <= target else "MISSED")
        rows.append((title, name, med, spread, ratio, target if name != "numpy" else None, verdict))
    return rows


def import_time(repeats):
    """Seconds for ``import fastrnn`` in a fresh interpreter (after one warm-up run)."""
    code = "import time; t = time.perf_counter(); import fastrnn; print(time.perf_counter() - t)"
    env = {k: v for k, v in os.environ.items() if k != "FASTRNN_BACKEND"}
    runs = [float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True).stdout) for _ in range(repeats + 1)]
    return float(np.median(runs[1:]))


def main(argv=None):
    parser = Parser(prog=os.path.basename(__file__), description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="interleaved timings per backend and case (default 5)")
    parser.add_argument("--backends", default=",".join(b for b in fastrnn.available_backends()
                                                       if b != "numpy"),
                        help="comma-separated compiled backends to compare with numpy "
                             "(default: every available one)")
    parser.add_argument("--skip-full", action="store_true",
                        help="skip the full-size LSTM step case (by far the slowest)")
    parser.add_argument("--only", default="",
                        help="run only the cases whose name contains this text, e.g. softmax")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    names = ["numpy"] + [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in names if b not in fastrnn.available_backends()]
    if unknown:
        parser.error(f"--backends: {unknown} not available here; available: "
                     f"{fastrnn.available_backends()}")

    from fastrnn.backends import cython_backend
    from fastrnn.gemm import describe
    print(f"fastrnn {fastrnn.__version__}, numpy {np.__version__}, {os.cpu_count()} cores, "
          f"cython kernels build: {cython_backend.KERNELS_BUILD}; compiled backends' GEMM "
          f"provider: {describe()}; FASTRNN_GEMM=numpy for NumPy's BLAS; OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    rows = []
    for case in CASES:
        if (args.skip_full and "N=1024" in case[0]) or args.only not in case[0]:
            continue
        rows += compare(names, case, args.repeats, not args.no_progress)

    print(f"\n{'case':42} {'backend':8} {'median':>11} {'spread':>7} {'ratio':>7} {'target':>7}")
    for title, name, med, spread, ratio, target, verdict in rows:
        tgt = "" if target is None else f"<={target:.2f}"
        print(f"{title:42} {name:8} {med * 1e3:9.3f}ms {spread:6.0%} {ratio:7.2f} {tgt:>7} {verdict}")
    seconds = import_time(args.repeats)
    print(f"{'import fastrnn (warm)':42} {'':8} {seconds * 1e3:9.1f}ms {'':7} {'':7} {'<1000ms':>7} "
          f"{'ok' if seconds < 1 else 'MISSED'}")


if __name__ == "__main__":
    main()
