"""Input checks at the public boundary of ``fastrnn.layers``.

They cost a few microseconds per call: ndim/shape/dtype comparisons, plus one
min/max pass over integer token arrays and one pass over a non-boolean mask.
Every dimension must be at least 1: empty batches (N = 0), sequences (T = 0) and
other empty axes are refused with a ValueError on every backend, rather than
each backend returning its own kind of empty or NaN result. Errors name the function, the argument,
what was expected and what was received.
"""
import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Signature:
    """Checks the arrays of one call against symbolic shapes such as ("N", "4H").

    The first argument that uses a dimension name binds it; every later use must
    agree. A name with a numeric prefix ("4H") is that multiple of the dimension.
    """

    def __init__(self, fn):
        self.fn = fn
        self.dims = {}
        self.bound_by = {}
        self.dtype = None
        self._dtype_from = None

    def array(self, name, a, *spec):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{self.fn}: {name} must be a numpy.ndarray, got {type(a).__name__}")
        if a.ndim != len(spec):
            raise ValueError(f"{self.fn}: {name} must be {len(spec)}-D with shape "
                             f"({', '.join(spec)}), got shape {a.shape}")
        expected = []
        for size, dim in zip(a.shape, spec):
            factor, base = _split(dim)
            if base not in self.dims:
                if size % factor:
                    raise ValueError(f"{self.fn}: {name} has shape {a.shape}; its {dim} axis "
                                     f"({size}) must be a multiple of {factor}")
                self.dims[base] = size // factor
                self.bound_by[base] = name
            expected.append(factor * self.dims[base])
        if tuple(expected) != a.shape:
            clash = [_split(d)[1] for d, e, g in zip(spec, expected, a.shape) if e != g]
            why = ", ".join(f"{self.bound_by[d]} ({d}={self.dims[d]})" for d in dict.fromkeys(clash))
            raise ValueError(f"{self.fn}: {name} must have shape ({', '.join(spec)}) = "
                             f"{tuple(expected)} to match {why}, got {a.shape}")
        if 0 in a.shape:
            dim = spec[a.shape.index(0)]
            raise ValueError(f"{self.fn}: {name} has shape {a.shape}, an empty {dim} axis; "
                             f"every dimension must be at least 1 (empty batches, sequences "
                             f"and vocabularies are refused on every backend)")
        return a

    def floats(self, name, a, *spec):
        """A float32/float64 array whose dtype matches every other float argument."""
        self.array(name, a, *spec)
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{self.fn}: {name} must be float32 or float64, got {a.dtype}")
        if self.dtype is None:
            self.dtype, self._dtype_from = a.dtype, name
        elif a.dtype != self.dtype:
            raise TypeError(f"{self.fn}: {name} is {a.dtype} but {self._dtype_from} is "
                            f"{self.dtype}; all float arguments must share one dtype")
        return a

    def tokens(self, name, a, *spec, high):
        """An integer array with every value in [0, high)."""
        self.array(name, a, *spec)
        return check_ids(self.fn, name, a, high)

    def mask(self, name, a, *spec):
        """A boolean array, or numbers that are all 0 or 1 (a mask selects; it does not weigh)."""
        self.array(name, a, *spec)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{self.fn}: {name} must be boolean (or 0/1 numbers), got {a.dtype}")
        if a.dtype.kind != "b":
            other = (a != 0) & (a != 1)
            if other.any():
                where = np.argwhere(other)[0]
                raise ValueError(f"{self.fn}: {name} must be boolean or hold only 0 and 1, "
                                 f"got {a[tuple(where)].item()!r} at {where.tolist()}")
        return a


def check_ids(fn, name, ids, high):
    """``ids`` must be an integer array with every value in [0, high); returns it.

    Also the safety net of the kernels that index with caller ids (scatters,
    softmax targets): a wrong id raises instead of wrapping around (-1) or
    writing outside a buffer.
    """
    if not isinstance(ids, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray of integer token ids, "
                        f"got {type(ids).__name__}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{fn}: {name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.size:
        lo, hi = ids.min(), ids.max()
        if lo < 0 or hi >= high:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{fn}: {name} holds token id {bad}, outside the valid "
                             f"range [0, {high}) set by the vocabulary size {high}")
    return ids


def _split(dim):
    digits = len(dim) - len(dim.lstrip("0123456789"))
    return (int(dim[:digits]) if digits else 1), dim[digits:]
