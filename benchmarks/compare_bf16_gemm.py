"""Side by side: GFLOP/s of the bf16 GEMM providers (``fastrnn.gemm.bf16_provider``)
and of the float32 one, at the fused engine's full-scale product shapes.

    python benchmarks/compare_bf16_gemm.py [--rounds 3] [--threads N]

Each round times every provider once per shape (round robin, so load from
elsewhere hits all alike); the table shows the median. The 'cast' column is the
time to convert both float32 operands to the provider's operand form, which the
engine pays once per operand (weights once per iteration).
"""
import argparse
import time

import numpy as np

from fastrnn import gemm, precision

# (name, m, k, n) of the engine's products at N=1024, T=16, H=2048, V=1004 (R ~ 11,600 rows)
SHAPES = [
    ("recurrent step  h @ Wh", 1024, 2048, 8192),
    ("vocabulary      h @ W_vocab", 11648, 2048, 1004),
    ("weight grad     P^T @ dA", 2048, 11648, 8192),
]


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        from fastrnn import threads
        threads.set_num_threads(args.threads)
    providers = {f"float32 ({gemm.gemm_provider().uses})": None}
    for name in ("emulated", "mkl", "torch"):
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
        ops = {}
        for pname, p in providers.items():
            ops[pname] = (a, b) if p is None else (p.cast(a), p.cast(b))
            mm = (gemm.gemm_provider() if p is None else p).mm
            mm(ops[pname][0][:64], ops[pname][1], out=out[:64])     # warm up
        rates, casts = {p: [] for p in providers}, {p: [] for p in providers}
        for _ in range(args.rounds):
            for pname, p in providers.items():
                mm = (gemm.gemm_provider() if p is None else p).mm
                x, y = ops[pname]
                rates[pname].append(2 * m * k * n / _time(lambda: mm(x, y, out=out)) / 1e9)
                casts[pname].append(0.0 if p is None else
                                    _time(lambda: (p.cast(a), p.cast(b))))
        print(f"\n{label}: m x k x n = {m} x {k} x {n}")
        for pname in providers:
            print(f"  {pname:44s} {np.median(rates[pname]):7.1f} GFLOP/s   cast "
                  f"{1e3 * np.median(casts[pname]):6.1f} ms")


if __name__ == "__main__":
    main()
