"""Side by side: GFLOP/s of the bf16 GEMM providers (``fastrnn.gemm.bf16_provider``)
and of the float32 one, at the fused engine's full-scale product shapes.

    python benchmarks/compare_bf16_gemm.py [--rounds 3] [--threads N]

Each round times every provider once per shape (round robin, ``fastrnn.bench.timer``,
so load from elsewhere hits all alike); the table shows the median. The 'cast' column
is the time to convert both float32 operands to the provider's operand form, which
the engine pays once per operand (weights once per iteration).
"""
import functools
import os

import numpy as np

from fastrnn import gemm, precision
from fastrnn.bench.timer import time_interleaved
from fastrnn.cli._common import Parser, positive_int

# (name, m, k, n) of the engine's products at N=1024, T=16, H=2048, V=1004 (R ~ 11,600 rows)
SHAPES = [
    ("recurrent step  h @ Wh", 1024, 2048, 8192),
    ("vocabulary      h @ W_vocab", 11648, 2048, 1004),
    ("weight grad     P^T @ dA", 2048, 11648, 8192),
]


def main(argv=None):
    parser = Parser(prog=os.path.basename(__file__), description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="timed rounds, each timing every provider once per shape "
                             "(default: 3)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads of the Numba, OpenMP and BLAS pools (default: fastrnn's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        from fastrnn import threads
        try:
            threads.set_num_threads(args.threads)
        except ValueError as err:      # above fastrnn.threads.MAX_THREADS
            parser.error(str(err).replace("set_num_threads: n", "--threads"))
    providers = {f"float32 ({gemm.gemm_provider().uses})": None}
    for name in (n for n in gemm.BF16_PROVIDERS if n != "auto"):
        try:
            providers[f"bf16 {name}"] = gemm.bf16_provider(name)
        except ImportError as err:
            print(f"skipping bf16 {name}: {err}")
    print(precision.describe_capability())
    rng = np.random.default_rng(0)
    for label, m, k, n in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), dtype=np.float32)
        products, casts = {}, {}
        for pname, p in providers.items():
            x, y = (a, b) if p is None else (p.cast(a), p.cast(b))
            mm = (gemm.gemm_provider() if p is None else p).mm
            # A 64-row product warms the thread pools and first-call paths for a fraction
            # of what a warm-up round of full-size products would take.
            mm(x[:64], y, out=out[:64])
            products[pname] = functools.partial(mm, x, y, out=out)
            if p is not None:
                casts[f"cast {pname}"] = lambda p=p: (p.cast(a), p.cast(b))
        timing = time_interleaved({**products, **casts}, args.rounds)
        print(f"\n{label}: m x k x n = {m} x {k} x {n}")
        for pname, p in providers.items():
            cast = 0.0 if p is None else timing.median(f"cast {pname}")
            print(f"  {pname:44s} {2 * m * k * n / timing.median(pname) / 1e9:7.1f} GFLOP/s   "
                  f"cast {1e3 * cast:6.1f} ms")


if __name__ == "__main__":
    main()
