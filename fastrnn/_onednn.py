"""A minimal ctypes binding of oneDNN's matmul primitive: bf16 sources, float32 destination.

``matmul(a, b, out, accumulate)`` computes ``out = a @ b`` (or ``out += a @ b``
with a sum post-op) for 2-D uint16 arrays holding bfloat16 bit patterns, any
strides, and a float32 ``out`` with contiguous rows. oneDNN picks its kernel from
the CPU's features at run time (AMX-BF16, AVX512-BF16, or a float32 fallback).

The library is the ``onednn-cpu-gomp`` wheel (``libdnnl.so.3``, threaded with GNU
OpenMP, the runtime of the Cython kernels). Primitives are created once per
shape, layout and accumulate flag and kept in a bounded cache; they run with a
user-provided scratchpad, so one primitive may execute in several threads at
once. Each thread has its own stream.
"""
import collections
import ctypes
import ctypes.util
import functools
import glob
import os
import sys
import threading

import numpy as np

INSTALL_HINT = "pip install 'fastrnn[bf16]' (or: pip install onednn-cpu-gomp)"

# Values from oneDNN's C headers (dnnl_types.h, dnnl_common_types.h), stable across 3.x.
_SUCCESS = 0
_BF16, _F32, _U8 = 2, 3, 6
_CPU_ENGINE = 1
_STREAM_IN_ORDER = 1
_SCRATCHPAD_USER = 1
_QUERY_EXEC_ARG_MD = 255
_ARG_SRC, _ARG_DST, _ARG_WEIGHTS, _ARG_SCRATCHPAD = 1, 17, 33, 80
_MAX_NDIMS = 12
_CACHE_SIZE = 512

_Dims = ctypes.c_int64 * _MAX_NDIMS
_p = ctypes.c_void_p


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", _p)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint),
                ("gpu_runtime", ctypes.c_uint)]


@functools.cache
def find_library():
    """Path of libdnnl.so.3 (the onednn-cpu-gomp wheel installs it under <prefix>/lib), or
    None; looked up once (the bf16 provider's 'auto' choice asks on every loss)."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, sys.exec_prefix)):
        found = sorted(glob.glob(os.path.join(prefix, "lib", "libdnnl.so.3*")))
        if found:
            return found[0]
    return ctypes.util.find_library("dnnl")


class _Stream:
    """A thread's oneDNN stream, destroyed with the thread's local data."""

    def __init__(self, lib, handle):
        self.lib, self.handle = lib, handle

    def __del__(self):
        self.lib.dnnl_stream_destroy(self.handle)


class _Primitive:
    """A cached matmul primitive, its scratchpad size, its memory descriptors, and how
    many calls are running it (a primitive evicted from the cache is destroyed only
    when the last of them ends)."""

    def __init__(self, primitive, pad_bytes, mds):
        self.primitive, self.pad_bytes, self.mds = primitive, pad_bytes, mds
        self.users, self.retired = 0, False


class OneDnnError(RuntimeError):
    """A oneDNN call failed (the message names the call and its status)."""


class OneDnnMatmul:
    """bf16 x bf16 -> float32 matrix products through oneDNN (see the module docstring)."""

    def __init__(self, path=None):
        path = path or find_library()
        if path is None:
            raise ImportError(f"oneDNN (libdnnl.so.3) is not installed: {INSTALL_HINT}")
        try:
            lib = ctypes.CDLL(path)
            getattr(lib, "dnnl_matmul_primitive_desc_create")   # noqa: B009 (a C symbol check)
        except (OSError, AttributeError) as err:
            raise ImportError(f"oneDNN at {path} cannot be used ({err}); {INSTALL_HINT}") from err
        self.path, self.lib = path, lib
        self._declare()
        lib.dnnl_version.restype = ctypes.POINTER(_Version)
        v = lib.dnnl_version().contents
        if v.major < 3:
            raise ImportError(f"oneDNN at {path} is version {v.major}.{v.minor}; fastrnn needs "
                              f"3.x: {INSTALL_HINT}")
        self.version = f"{v.major}.{v.minor}.{v.patch}"
        self.engine = _p()
        self._call("dnnl_engine_create", ctypes.byref(self.engine), _CPU_ENGINE, 0)
        self._primitives = collections.OrderedDict()   # key -> _Primitive, oldest first
        self._lock = threading.Lock()
        self._local = threading.local()

    def _declare(self):
        lib, i, f = self.lib, ctypes.c_int, ctypes.c_float
        sigs = {
            "dnnl_engine_create": [_p, i, ctypes.c_size_t],
            "dnnl_stream_create": [_p, _p, ctypes.c_uint],
            "dnnl_stream_wait": [_p],
            "dnnl_stream_destroy": [_p],
            "dnnl_memory_desc_create_with_strides": [_p, i, _Dims, i, _Dims],
            "dnnl_memory_desc_destroy": [_p],
            "dnnl_primitive_attr_create": [_p],
            "dnnl_primitive_attr_destroy": [_p],
            "dnnl_primitive_attr_set_scratchpad_mode": [_p, i],
            "dnnl_primitive_attr_set_post_ops": [_p, _p],
            "dnnl_post_ops_create": [_p],
            "dnnl_post_ops_destroy": [_p],
            "dnnl_post_ops_append_sum": [_p, f, ctypes.c_int32, i],
            "dnnl_matmul_primitive_desc_create": [_p, _p, _p, _p, _p, _p, _p],
            "dnnl_primitive_desc_destroy": [_p],
            "dnnl_primitive_create": [_p, _p],
            "dnnl_primitive_destroy": [_p],
            "dnnl_memory_create": [_p, _p, _p, _p],
            "dnnl_memory_destroy": [_p],
            "dnnl_primitive_execute": [_p, _p, i, ctypes.POINTER(_ExecArg)],
        }
        for name, argtypes in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, ctypes.c_int
        lib.dnnl_primitive_desc_query_md.argtypes = [_p, i, i]
        lib.dnnl_primitive_desc_query_md.restype = _p
        lib.dnnl_memory_desc_get_size.argtypes = [_p]
        lib.dnnl_memory_desc_get_size.restype = ctypes.c_size_t

    def _call(self, name, *args):
        status = getattr(self.lib, name)(*args)
        if status != _SUCCESS:
            raise OneDnnError(f"oneDNN {name} failed with status {status}")

    def _md(self, shape, strides, dtype):
        md = _p()
        self._call("dnnl_memory_desc_create_with_strides", ctypes.byref(md), 2,
                   _Dims(*shape), dtype, _Dims(*strides))
        return md

    def _stream(self):
        stream = getattr(self._local, "stream", None)
        if stream is None:
            handle = _p()
            self._call("dnnl_stream_create", ctypes.byref(handle), self.engine, _STREAM_IN_ORDER)
            stream = self._local.stream = _Stream(self.lib, handle)
        return stream.handle

    def _acquire(self, key):
        """The cached primitive for key, made on first use, held until _release_use."""
        with self._lock:
            entry = self._primitives.get(key)
            if entry is not None:
                self._primitives.move_to_end(key)
                entry.users += 1
                return entry
        made = _Primitive(*self._create(key))
        with self._lock:
            entry = self._primitives.get(key)
            if entry is None:
                entry = self._primitives[key] = made
                made = None
                while len(self._primitives) > _CACHE_SIZE:
                    _, old = self._primitives.popitem(last=False)
                    old.retired = True
                    if not old.users:
                        self._destroy(old)
            entry.users += 1
        if made is not None:                      # made meanwhile by another thread
            self._destroy(made)
        return entry

    def _release_use(self, entry):
        with self._lock:
            entry.users -= 1
            if entry.retired and not entry.users:
                self._destroy(entry)

    def _create(self, key):
        (m, k, n), a_strides, b_strides, out_stride, accumulate = key
        mds = (self._md((m, k), a_strides, _BF16), self._md((k, n), b_strides, _BF16),
               self._md((m, n), (out_stride, 1), _F32))
        attr, post_ops, pd, prim, pad_md = _p(), _p(), _p(), _p(), _p()
        try:
            self._call("dnnl_primitive_attr_create", ctypes.byref(attr))
            self._call("dnnl_primitive_attr_set_scratchpad_mode", attr, _SCRATCHPAD_USER)
            if accumulate:
                self._call("dnnl_post_ops_create", ctypes.byref(post_ops))
                self._call("dnnl_post_ops_append_sum", post_ops, 1.0, 0, 0)
                self._call("dnnl_primitive_attr_set_post_ops", attr, post_ops)
            self._call("dnnl_matmul_primitive_desc_create", ctypes.byref(pd), self.engine,
                       mds[0], mds[1], None, mds[2], attr)
            pad = self.lib.dnnl_primitive_desc_query_md(pd, _QUERY_EXEC_ARG_MD, _ARG_SCRATCHPAD)
            pad_bytes = self.lib.dnnl_memory_desc_get_size(pad) if pad else 0
            self._call("dnnl_primitive_create", ctypes.byref(prim), pd)
            if pad_bytes:                                      # u8 scratchpad, 1-D
                self._call("dnnl_memory_desc_create_with_strides", ctypes.byref(pad_md), 1,
                           _Dims(pad_bytes), _U8, _Dims(1))
        except BaseException:
            if prim:
                self.lib.dnnl_primitive_destroy(prim)
            for md in mds:
                self.lib.dnnl_memory_desc_destroy(md)
            raise
        finally:
            for handle, destroy in ((pd, "dnnl_primitive_desc_destroy"),
                                    (post_ops, "dnnl_post_ops_destroy"),
                                    (attr, "dnnl_primitive_attr_destroy")):
                if handle:
                    getattr(self.lib, destroy)(handle)
        return prim, pad_bytes, (*mds, pad_md)

    def _destroy(self, entry):
        self.lib.dnnl_primitive_destroy(entry.primitive)
        for md in entry.mds:
            if md:
                self.lib.dnnl_memory_desc_destroy(md)

    def matmul(self, a, b, out, accumulate=False):
        """out = a @ b (out += a @ b if accumulate). a (m, k), b (k, n): uint16 bf16 bits,
        any strides that are multiples of the item size; out (m, n) float32, unit column
        stride. The caller checks shapes and dtypes."""
        (m, k), n = a.shape, b.shape[1]
        key = ((m, k, n), tuple(s // 2 for s in a.strides), tuple(s // 2 for s in b.strides),
               out.strides[0] // 4, bool(accumulate))
        entry = self._acquire(key)
        scratch = np.empty(entry.pad_bytes, dtype=np.uint8) if entry.pad_bytes else None
        buffers = (a, b, out, scratch)
        tags = (_ARG_SRC, _ARG_WEIGHTS, _ARG_DST, _ARG_SCRATCHPAD)
        mems = []
        try:
            for md, buf in zip(entry.mds, buffers):
                if buf is None:
                    continue
                mem = _p()
                self._call("dnnl_memory_create", ctypes.byref(mem), md, self.engine,
                           buf.ctypes.data)
                mems.append(mem)
            args = (_ExecArg * len(mems))(*(_ExecArg(t, mem) for t, mem in zip(tags, mems)))
            stream = self._stream()
            self._call("dnnl_primitive_execute", entry.primitive, stream, len(mems), args)
            self._call("dnnl_stream_wait", stream)
        finally:
            for mem in mems:
                self.lib.dnnl_memory_destroy(mem)
            self._release_use(entry)
        return out
