"""Side-by-side GFLOP/s of fastrnn's GEMM providers on the full-scale training products.

    python benchmarks/compare_gemm.py                  # every provider, 5 interleaved repeats
    python benchmarks/compare_gemm.py --repeats 9 --providers numpy,onednn

The shapes are the products of one full-scale iteration (N=1024,
H=2048, 4H=8192, V=1004, about 11,000 packed rows at COCO-like caption lengths),
float32. Each repeat runs every provider once per shape in rotating order
(``fastrnn.bench.timer``), after one warm-up round; the table shows the median GFLOP/s
and the ratio to NumPy's median. The machine may be shared: compare the ratios, not the
absolute rates. OPENBLAS_CORETYPE from the environment (if any) is printed: it decides
which kernels numpy's OpenBLAS runs.
"""
import functools
import os

import numpy as np

from fastrnn.bench.timer import time_interleaved
from fastrnn.cli._common import Parser, positive_int
from fastrnn.gemm import GEMM_PROVIDERS, gemm_provider

R, N, H, G, V = 11_000, 1024, 2048, 8192, 1004
SHAPES = [
    # name, a shape, b shape, transpose a (a is a view of a (k, m) array)
    ("forward h @ Wh", (N, H), (H, G), False),
    ("backward dA @ Wh^T", (N, G), (G, H), False),
    ("dWh = P^T dA", (H, R), (R, G), True),
    ("scores h @ W_vocab", (R, H), (H, V), False),
]


def operands(rng, a_shape, b_shape, transposed):
    a = rng.standard_normal(a_shape[::-1] if transposed else a_shape, dtype=np.float32)
    return (a.T if transposed else a), rng.standard_normal(b_shape, dtype=np.float32)


def measure(providers, repeats, progress):
    rng = np.random.default_rng(0)
    rows = []
    for title, a_shape, b_shape, transposed in SHAPES:
        a, b = operands(rng, a_shape, b_shape, transposed)
        flop = 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
        products = {name: functools.partial(gemm_provider(name).mm, a, b) for name in providers}
        timing = time_interleaved(products, repeats, warmup=1, progress=progress, desc=title,
                                  leave=False)
        rates = {name: flop / timing.median(name) / 1e9 for name in providers}
        rows.append((title, a.shape, b.shape, rates))
    return rows


def main(argv=None):
    parser = Parser(prog=os.path.basename(__file__), description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="interleaved repeats per shape (default: 5)")
    parser.add_argument("--providers", default=",".join(p for p in GEMM_PROVIDERS if p != "auto"),
                        help="comma-separated providers among " + ", ".join(GEMM_PROVIDERS))
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    for p in providers:
        gemm_provider(p)          # unknown names and a missing PyTorch fail here, clearly
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, float32, "
          f"median of {args.repeats} interleaved repeats; GFLOP/s (ratio to numpy)")
    rows = measure(providers, args.repeats, not args.no_progress)
    print(f"{'product':22} {'m x k x n':22} " + " ".join(f"{p:>16}" for p in providers))
    for title, a_shape, b_shape, rates in rows:
        base = rates.get("numpy")
        cells = [f"{rates[p]:7.0f}" + (f" ({rates[p] / base:4.2f}x)" if base else "")
                 for p in providers]
        dims = f"{a_shape[0]} x {a_shape[1]} x {b_shape[1]}"
        print(f"{title:22} {dims:22} " + " ".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
