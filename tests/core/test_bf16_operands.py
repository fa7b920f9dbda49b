"""bf16 product operands written by the gate kernels in the pass that makes the
activation (``h_op`` of lstm_gates_forward, ``da_op`` of lstm_gates_backward), on every
backend, against the conversion rule of ``fastrnn.precision``."""
import numpy as np
import pytest

import fastrnn
from fastrnn import precision
from fastrnn.backends import load_backend

BACKENDS = fastrnn.available_backends()
OPERAND_DTYPES = (np.uint16, np.float32)
SHAPES = [(1, 1), (7, 3), (37, 29), (300, 600)]   # the last one goes parallel

# Bit patterns where rounding is delicate: zeros, infinities, NaNs (quiet, signalling,
# negative), the largest finite values (round to infinity), ties to even both ways,
# denormals.
SPECIAL_BITS = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000,
                         0x7F800001, 0xFFFFFFFF, 0x7FFFFFFF, 0x7F7FFFFF, 0xFF7FFFFF,
                         0x3F808000, 0x3F818000, 0x3F808001, 0x00008000, 0x00018000,
                         0x0000FFFF, 0x807FFFFF], dtype=np.uint32)


def _operand(x, dtype):
    return precision.to_operand(x, np.empty(x.shape, dtype))


def _implementations():
    """Whole-array conversions: the Cython kernels (when built) and the Numba fallback."""
    return (["cython"] if "cython" in BACKENDS else []) + ["numba"]


@pytest.mark.parametrize("dtype", OPERAND_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("impl", _implementations())
@pytest.mark.parametrize("size", [1, 4095, 4097, 200_000])   # block edges; serial / parallel
def test_whole_array_conversion_follows_the_rule_bit_for_bit(impl, size, dtype, rng):
    bits = np.concatenate([SPECIAL_BITS, rng.integers(0, 2**32, size, dtype=np.uint64)
                           .astype(np.uint32)])[-size:]
    x = bits.view(np.float32)
    want = precision._rounded_bits_numpy(x)
    got = np.full(x.shape, 7, dtype)
    precision._convert(x, got, use_cython=impl == "cython")
    got_bits = got.astype(np.uint32) << 16 if dtype == np.uint16 else got.view(np.uint32)
    assert np.array_equal(got_bits, want)


@pytest.mark.parametrize("impl", _implementations())
def test_whole_array_conversion_in_place(impl, rng):
    x = rng.standard_normal(10_001, dtype=np.float32)
    want = precision._rounded_bits_numpy(x).view(np.float32)
    precision._convert(x, x, use_cython=impl == "cython")
    assert np.array_equal(x, want)


def test_special_values_convert_as_documented():
    x = SPECIAL_BITS.view(np.float32)
    bits = precision.to_bf16_bits(x)
    back = precision.from_bf16_bits(bits)
    normal = np.isfinite(x) & (np.abs(x) < 3.3e38) & (np.abs(x) >= np.finfo(np.float32).tiny)
    assert np.all(np.isnan(back) == np.isnan(x))
    assert np.all(np.signbit(back[~np.isnan(x)]) == np.signbit(x[~np.isnan(x)]))
    assert np.all(np.abs(back[normal] - x[normal]) <= np.abs(x[normal]) * 2.0 ** -8)
    assert np.isinf(precision.round_bf16(np.float32([np.finfo(np.float32).max]))).all()


@pytest.mark.parametrize("dtype", OPERAND_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, H", SHAPES)
@pytest.mark.parametrize("with_addend", [False, True])
def test_forward_operand_is_the_rounding_of_h(backend, n, H, dtype, with_addend, rng):
    k = load_backend(backend)
    a = rng.standard_normal((n, 4 * H), dtype=np.float32)
    prev_c = rng.standard_normal((n, H), dtype=np.float32)
    addend = rng.standard_normal((n, 4 * H), dtype=np.float32) if with_addend else None
    outs = []
    for h_op in (None, np.full((n, H), 7, dtype)):
        a1, c, h = a.copy(), np.empty_like(prev_c), np.empty_like(prev_c)
        k.lstm_gates_forward(a1, prev_c, c, h, addend, h_op)
        outs.append((a1, c, h, h_op))
    (a0, c0, h0, _), (a1, c1, h1, h_op) = outs
    # the operand changes nothing else, and is exactly the conversion of h
    assert np.array_equal(a0, a1) and np.array_equal(c0, c1) and np.array_equal(h0, h1)
    assert np.array_equal(h_op, _operand(h0, dtype))


@pytest.mark.parametrize("n, H", SHAPES[:3])
def test_forward_operand_in_place_rounds_h_itself(backend, n, H, rng):
    k = load_backend(backend)
    a = rng.standard_normal((n, 4 * H), dtype=np.float32)
    prev_c = rng.standard_normal((n, H), dtype=np.float32)
    c, h = np.empty_like(prev_c), np.empty_like(prev_c)
    k.lstm_gates_forward(a.copy(), prev_c, c, h)
    c2, h2 = np.empty_like(prev_c), np.empty_like(prev_c)
    k.lstm_gates_forward(a.copy(), prev_c, c2, h2, None, h2)
    assert np.array_equal(h2, precision.round_bf16(h)) and not np.array_equal(h2, h)


@pytest.mark.parametrize("dtype", OPERAND_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, H", SHAPES)
def test_backward_operand_is_the_rounding_of_da(backend, n, H, dtype, rng):
    k = load_backend(backend)
    gates = rng.uniform(0.05, 0.95, (n, 4 * H)).astype(np.float32)
    prev_c, next_c, dh, dc = (rng.standard_normal((n, H), dtype=np.float32) for _ in range(4))
    outs = []
    for da_op in (None, np.full((n, 4 * H), 7, dtype)):
        da, dprev_c = np.empty_like(gates), np.empty_like(prev_c)
        k.lstm_gates_backward(gates, prev_c, next_c, dh, dc.copy(), da, dprev_c, da_op)
        outs.append((da, dprev_c, da_op))
    (da0, dp0, _), (da1, dp1, da_op) = outs
    assert np.array_equal(da0, da1) and np.array_equal(dp0, dp1)
    assert np.array_equal(da_op, _operand(da0, dtype))


@pytest.mark.parametrize("bad", ["wrong shape", "wrong dtype", "float64 data"])
def test_bad_operand_buffers_raise_instead_of_writing_out_of_bounds(backend, bad, rng):
    k = load_backend(backend)
    n, H = 5, 4
    dtype = np.float64 if bad == "float64 data" else np.float32
    a = rng.standard_normal((n, 4 * H)).astype(dtype)
    prev_c = rng.standard_normal((n, H)).astype(dtype)
    h_op = {"wrong shape": np.empty((n - 1, H), np.uint16),
            "wrong dtype": np.empty((n, H), np.int64),
            "float64 data": np.empty((n, H), np.uint16)}[bad]
    with pytest.raises((ValueError, TypeError)):
        k.lstm_gates_forward(a, prev_c, np.empty_like(prev_c), np.empty_like(prev_c), None,
                             h_op)
    da_op = np.empty((n + 1, 4 * H), np.uint16) if bad == "wrong shape" else \
        np.empty((n, 4 * H), h_op.dtype)
    with pytest.raises((ValueError, TypeError)):
        k.lstm_gates_backward(np.abs(a) % 1, prev_c, prev_c, prev_c, prev_c.copy(),
                              np.empty_like(a), np.empty_like(prev_c), da_op)


@pytest.mark.parametrize("fn, good", [(precision.round_bf16, np.float32),
                                      (precision.to_bf16_bits, np.uint16)],
                         ids=["round_bf16", "to_bf16_bits"])
@pytest.mark.parametrize("bad", ["smaller", "wider dtype", "narrower dtype", "read-only"])
def test_conversion_refuses_an_out_it_would_overrun(fn, good, bad, rng):
    x = rng.standard_normal((64, 33), dtype=np.float32)
    out = {"smaller": np.zeros((63, 33), good),
           "wider dtype": np.zeros(x.shape, np.float64),
           "narrower dtype": np.zeros(x.shape, np.uint8),
           "read-only": np.zeros(x.shape, good)}[bad]
    out.flags.writeable = bad != "read-only"
    before = out.copy()
    with pytest.raises(ValueError, match=f"{fn.__name__}: out"):
        fn(x, out)
    assert np.array_equal(out, before)
