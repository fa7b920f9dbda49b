"""The one float32 ``exp`` / ``tanh`` approximation of the compiled backends.

libm's ``expf``/``tanhf`` are scalar calls that neither gcc nor LLVM vectorise
here, and the elementwise kernels are dominated by them; this branch-free form
vectorises and stays within a few ulp of the float64 result. float64 work
always uses libm. The Numba kernels (``_numba_kernels``) build their code from
the constants below; ``kernels/_cython_kernels.pyx`` spells the same constants
in C and exports them as ``FASTMATH_CONSTANTS``, and a test checks that the two
tables are equal. :func:`exp_float32` / :func:`tanh_float32` are the same
algorithm in NumPy, step by step, as a readable statement of it.

exp(x), float32:
    clamp x to [EXP_LO, EXP_HI] (NaN passes through); n = round(x * LOG2E)
    (truncation of x * LOG2E + ROUND_SHIFT, minus ROUND_BIAS: the sum is positive on
    the clamped range, so truncation rounds to nearest); r = x - n*LN2_HI - n*LN2_LO
    (ln 2 split so that n*LN2_HI is exact); p = 1 + r + r^2 * P(r), Horner in
    EXP_P (Cephes ``expf``); the result is p * 2^(n//2) * 2^(n - n//2). Two
    factors keep each power of two a normal float, so results overflow to inf and
    underflow through the denormals like the true exp.

tanh(x), float32:
    |x| < TANH_CUT: x + x^3 * Q(x^2), Horner in TANH_Q (Cephes ``tanhf``), full
    relative precision near 0; otherwise sign(x) * (1 - 2 / (exp(2|x|) + 1)). Both
    branches are computed and one selected, so loops over it vectorise.

Bounds (asserted by tests/core/test_fastmath.py against float64 NumPy over a dense
grid, extremes, denormals, +-inf and NaN, for both compiled backends):
``EXP_MAX_ULP`` for normal results (absolute error below the smallest normal
float32 where the true result is denormal), ``TANH_MAX_ULP`` everywhere.
"""
import numpy as np

EXP_HI = 89.0            # above ln(FLT_MAX) = 88.72: the result is inf, as it should be
EXP_LO = -104.0          # below ln(smallest denormal) = -103.3: the result is 0
LOG2E = 1.44269504088896341
ROUND_SHIFT = 255.5      # x * LOG2E + ROUND_SHIFT > 0 on [EXP_LO, EXP_HI]
ROUND_BIAS = 255
LN2_HI = 0.693359375     # ln 2 = LN2_HI + LN2_LO; n * LN2_HI is exact in float32
LN2_LO = -2.12194440e-4
EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
         1.6666665459e-1, 5.0000001201e-1)
TANH_CUT = 0.625
TANH_Q = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
          -3.33332819422e-1)

EXP_MAX_ULP = 2
TANH_MAX_ULP = 2

CONSTANTS = {
    "EXP_HI": EXP_HI, "EXP_LO": EXP_LO, "LOG2E": LOG2E, "ROUND_SHIFT": ROUND_SHIFT,
    "ROUND_BIAS": ROUND_BIAS, "LN2_HI": LN2_HI, "LN2_LO": LN2_LO, "EXP_P": EXP_P,
    "TANH_CUT": TANH_CUT, "TANH_Q": TANH_Q,
}


def _pow2(k):
    """2^k as float32 for int32 k with -126 <= k <= 127, built from its exponent bits."""
    return ((k + 127).astype(np.int32) << 23).view(np.float32)


def exp_float32(x):
    """The algorithm above in NumPy float32 (no FMA, so it can differ from a kernel
    compiled with FMA by an ulp)."""
    f = np.float32
    x = np.asarray(x, dtype=f)
    with np.errstate(invalid="ignore", over="ignore"):
        x = np.where(x > f(EXP_HI), f(EXP_HI), x)
        x = np.where(x < f(EXP_LO), f(EXP_LO), x)
        n = np.nan_to_num(x * f(LOG2E) + f(ROUND_SHIFT)).astype(np.int32) - np.int32(ROUND_BIAS)
        r = x - n.astype(f) * f(LN2_HI)
        r = r - n.astype(f) * f(LN2_LO)
        p = f(EXP_P[0])
        for c in EXP_P[1:]:
            p = p * r + f(c)
        p = p * r * r + r + f(1)
        n1 = n >> 1
        return p * _pow2(n1) * _pow2(n - n1)


def tanh_float32(x):
    """The algorithm above in NumPy float32."""
    f = np.float32
    x = np.asarray(x, dtype=f)
    with np.errstate(invalid="ignore", over="ignore"):   # the unselected branch may overflow
        z = x * x
        q = f(TANH_Q[0])
        for c in TANH_Q[1:]:
            q = q * z + f(c)
        small = q * z * x + x
        large = f(1) - f(2) / (exp_float32(f(2) * np.abs(x)) + f(1))
    large = np.where(x < 0, -large, large)
    return np.where(np.abs(x) < f(TANH_CUT), small, large)
