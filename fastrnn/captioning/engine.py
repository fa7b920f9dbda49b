"""The fused training path of the captioning model: one call, loss and every gradient.

``captioning_loss`` computes exactly what ``CaptioningRNN._loss_reference``
computes (same loss, same gradients up to float rounding), with the work laid
out for speed instead of readability:

- **Packed, shrinking batch.** A caption stops mattering after its last
  unmasked target: later steps cannot change the loss. Rows are sorted by that
  length (longest first), so the rows still active at step t are the first
  ``n_t`` ones, and step t works on a contiguous block of ``n_t`` rows, as
  packed sequences do. Masked targets *before* the last unmasked one (holes)
  still run through the recurrence; they only get no loss.
- **Embedding folded into the input projection.** ``W_embed[w] @ Wx + b`` is row
  w of the table ``E = W_embed @ Wx + b`` (V, G): the forward gathers rows of E
  instead of multiplying. Backward, the pre-activation gradients are summed per
  token once (``S`` (V, G)), then ``dWx = W_embed^T S``, ``dW_embed = S Wx^T``,
  ``db = sum(S)``.
- **One product per weight gradient.** The states entering every step are kept
  packed (``P``), so ``dWh = P^T dA`` is one product after the backward loop.
- **Vocabulary only where it counts.** Scores, softmax and their gradient are
  computed for the unmasked positions only.
- **Mixed precision** (``fastrnn.precision``). Under 'bf16' every product's
  operands are bfloat16 casts from a bf16 GEMM provider (``fastrnn.gemm``),
  accumulated in float32: the weights are cast once per call; a hidden state is
  cast right after its step writes it (the packed states ``P`` are then copies
  of casts), the gate gradients right after their step, the score gradients
  once. Gates, cell state, softmax, loss and every gradient stay float32.
  float64 params ignore the setting (they are for gradient checks).
- **Fused elementwise kernels** from the active backend (``lstm_gates_forward``,
  ``lstm_gates_backward``, ``softmax_cross_entropy_rows``, ``scatter_add_rows``),
  and preallocated workspaces reused across calls: no temporaries inside the
  time loop.

G is the width of the gate block: 4H for the LSTM, H for the vanilla RNN.
Packed row ``offsets[t] + i`` holds sorted row i at step t.
"""
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from fastrnn._validate import Signature
from fastrnn.gemm import GEMM_PROVIDERS, bf16_provider, gemm_provider
from fastrnn.precision import get_precision, to_operand, warn_if_slow

__all__ = ["captioning_loss", "plan_batch", "Workspace", "CELL_TYPES", "GEMM_PROVIDERS"]

CELL_TYPES = ("rnn", "lstm")   # the one list; the model imports it
PARAM_NAMES = ("W_embed", "W_proj", "b_proj", "Wx", "Wh", "b", "W_vocab", "b_vocab")


# ------------------------------------------------------------------ batch plan

class BatchPlan:
    """Where the work is, for one minibatch of captions (independent of the weights).

    order (N,)        rows sorted by length, longest first
    lengths (N,)      sorted lengths: 1 + index of the last unmasked target, 0 if none
    active (T,)       n_t, how many sorted rows step t runs (non-increasing)
    offsets (T+1,)    packed row offset of each step; offsets[-1] = R packed rows
    tokens (R,)       input word of every packed row
    targets (M,)      target word of every unmasked packed row
    selected (M,)     packed rows with an unmasked target, or None when that is all R rows
    """

    def __init__(self, captions, null_idx):
        inputs, targets = captions[:, :-1], captions[:, 1:]
        N, T = targets.shape
        mask = targets != null_idx
        any_target = mask.any(axis=1)
        last = T - 1 - np.argmax(mask[:, ::-1], axis=1)
        lengths = np.where(any_target, last + 1, 0)

        self.order = np.argsort(-lengths, kind="stable")
        self.lengths = lengths[self.order]
        self.active = (self.lengths[None, :] > np.arange(T)[:, None]).sum(axis=1)
        self.offsets = np.concatenate([[0], np.cumsum(self.active)])
        # Time-major boolean picks of the sorted batch list the packed rows in order.
        packed = (self.lengths[None, :] > np.arange(T)[:, None])        # (T, N)
        self.tokens = inputs[self.order].T[packed].astype(np.intp)
        unmasked = mask[self.order].T[packed]
        self.targets = targets[self.order].T[packed][unmasked].astype(np.intp)
        self.selected = None if unmasked.all() else np.flatnonzero(unmasked)
        self.N, self.T = N, T

    @property
    def rows(self):
        """R, the number of packed rows (steps actually run, summed over the batch)."""
        return int(self.offsets[-1])

    @property
    def steps(self):
        """How many timesteps run at all (the longest caption's length)."""
        return int(np.count_nonzero(self.active))


def plan_batch(captions, null_idx):
    """The ``BatchPlan`` of ``captions`` int (N, T+1) with ``<NULL>`` = ``null_idx``."""
    return BatchPlan(captions, null_idx)


# ------------------------------------------------------------------- workspace

class Workspace:
    """Preallocated buffers for one model shape and dtype, reused across calls.

    Packed buffers hold ``N*T`` rows, the most a batch can need; a batch uses a
    prefix of them. ``np.empty`` leaves untouched pages unallocated by the OS, so
    short batches do not pay in resident memory for the capacity.
    """

    def __init__(self, N, T, H, G, V, dtype, operand=None):
        R = N * T
        self.key = _key(N, T, H, G, V, dtype, operand)
        e = lambda *shape: np.empty(shape, dtype=dtype)  # noqa: E731
        op = np.dtype(dtype) if operand is None else np.dtype(operand)
        # Under bf16 with operands of their own dtype, the float32 gate gradients live
        # one step at a time (their token sums are taken step by step) and so, for the
        # LSTM, does the float32 h (nothing reads it after its step): only their
        # operands span the batch, so bf16 needs less memory than fp32.
        self.split = op != np.dtype(dtype)
        lstm = G == 4 * H          # the LSTM backward does not read h, the RNN's does
        self.gates = e(R, G)       # pre-activations, then activations, of every packed row
        self.dgates = None if self.split else e(R, G)   # their gradients
        self.dgates_step = e(N, G) if self.split else None
        self.h_per_step = self.split and lstm
        self.h = e(N if self.h_per_step else R, H)   # the hidden state leaving each step
        self.c = e(R, H) if G == 4 * H else None   # LSTM cell state leaving it
        self.dh = e(R, H)          # gradient of self.h
        self.picked = e(R, H)      # rows of h with a loss (only used with holes in the mask)
        self.scores = e(R, V)      # vocabulary scores, then their gradient
        self.row_g = e(N, G)       # one step's recurrent product (when the provider takes scratch)
        self.row_h = e(N, H)       # one step's dprev_h before it is accumulated
        self.zeros_h = np.zeros((N, H), dtype=dtype)  # c0
        self.dc = (e(N, H), e(N, H))                   # dnext_c / dprev_c, swapped each step
        self.table = e(V, G)       # E = W_embed @ Wx + b
        # The product operands: the arrays above in fp32; under bf16 their casts, in
        # place where the float32 value is not needed again.
        o = lambda *shape: np.empty(shape, dtype=op)  # noqa: E731
        same = not self.split
        self.prev_h = o(R, H)      # P: the hidden state entering each packed row's step
        self.hb = self.h if operand is None or (same and lstm) else o(R, H)
        self.picked_out = self.picked if same else e(R, H)   # dh rows of picked (holes)
        if not same:
            self.picked = o(R, H)
        self.scores_b = self.scores if same else o(R, V)
        self.dgates_b = self.dgates if same else o(R, G)

    def h_rows(self, lo, hi):
        """Where the float32 h of packed rows [lo, hi) goes: the batch-long buffer, or
        the one-step one when only h's operand spans the batch."""
        return self.h[:hi - lo] if self.h_per_step else self.h[lo:hi]

    def dgates_rows(self, lo, hi):
        """Where the float32 gate gradients of packed rows [lo, hi) go."""
        return self.dgates_step[:hi - lo] if self.split else self.dgates[lo:hi]


def _key(N, T, H, G, V, dtype, operand=None):
    return (N, T, H, G, V, np.dtype(dtype)) + (() if operand is None else (np.dtype(operand),))


# Idle workspaces, by key. A call checks one out and gives it back when done, so
# concurrent calls (several Python threads, same shapes or not) never share
# buffers; one thread calling repeatedly keeps reusing the same one.
_workspaces = OrderedDict()        # key -> list of idle workspaces, least recent key first
_workspaces_lock = threading.Lock()
MAX_CACHED_WORKSPACES = 2          # distinct shapes kept idle


def get_workspace(N, T, H, G, V, dtype, operand=None):
    """An idle cached workspace for these shapes, or a new one (not checked out:
    the caller must not share it with a concurrent call; ``captioning_loss`` checks
    one out instead). ``operand``: the dtype of bf16 product operands (None: fp32)."""
    key = _key(N, T, H, G, V, dtype, operand)
    with _workspaces_lock:
        idle = _workspaces.get(key)
        if idle:
            _workspaces.move_to_end(key)
            return idle[-1]
    ws = Workspace(N, T, H, G, V, dtype, operand)
    _give_back(ws)
    return ws


def _check_out(N, T, H, G, V, dtype, operand=None):
    """A workspace that no other call holds until it is given back (``_give_back``)."""
    key = _key(N, T, H, G, V, dtype, operand)
    with _workspaces_lock:
        idle = _workspaces.get(key)
        ws = idle.pop() if idle else None
    return ws if ws is not None else Workspace(N, T, H, G, V, dtype, operand)


def _give_back(ws):
    """Cache ``ws`` as idle; keep the idle ones of at most MAX_CACHED_WORKSPACES shapes
    (as many per shape as were in use at once), least recently used shape dropped."""
    with _workspaces_lock:
        idle = _workspaces.setdefault(ws.key, [])
        if not any(w is ws for w in idle):
            idle.append(ws)
        _workspaces.move_to_end(ws.key)
        while len(_workspaces) > MAX_CACHED_WORKSPACES:
            _workspaces.popitem(last=False)


def clear_workspaces():
    """Free every cached workspace."""
    with _workspaces_lock:
        _workspaces.clear()


# ------------------------------------------------------------------- timings

class _Clock:
    """Adds the seconds spent in each phase to a dict (or does nothing without one)."""

    def __init__(self, timings):
        self.timings = timings

    @contextmanager
    def __call__(self, phase):
        if self.timings is None:
            yield
            return
        t0 = time.perf_counter()
        yield
        self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - t0


# ----------------------------------------------------------------- the loss

def captioning_loss(params, features, captions, *, null_idx, cell_type="lstm", kernels=None,
                    gemm=None, workspace=None, timings=None, precision=None, bf16_gemm=None):
    """Loss and gradients of the captioning model, fused; equal to the reference path.

    Parameters
    ----------
    params : dict
        ``W_embed (V, W)``, ``W_proj (D, H)``, ``b_proj (H,)``, ``Wx (W, G)``,
        ``Wh (H, G)``, ``b (G,)``, ``W_vocab (H, V)``, ``b_vocab (V,)``, all of one
        float dtype; G = 4H for 'lstm', H for 'rnn'.
    features : (N, D) array of that dtype
    captions : int (N, T+1)
        Inputs are ``captions[:, :-1]``, targets ``captions[:, 1:]``; a target
        equal to ``null_idx`` has no loss (anywhere, not only at the end).
    null_idx : int
        The ``<NULL>`` token id.
    cell_type : {'lstm', 'rnn'}
    kernels : object with ``lstm_gates_forward``, ``lstm_gates_backward``,
        ``softmax_cross_entropy_rows`` and ``scatter_add_rows`` (a
        ``fastrnn.backends`` Backend or module); default: the active backend.
    gemm : {'auto', 'numpy', 'torch', 'onednn'}, optional
        Who computes the matrix products (``fastrnn.gemm``). Default: the default
        provider, 'auto' unless changed, which sends large products to oneDNN inside
        PyTorch when it is installed and everything else to NumPy's BLAS.
    workspace : Workspace, optional
        Buffers to use (never by two calls at once); default: a cached one for
        these shapes that no concurrent call is using, so any number of Python
        threads may call this at once.
    timings : dict, optional
        If given, seconds spent per phase are added to it.
    precision : {'fp32', 'bf16'}, optional
        Default: ``fastrnn.get_precision()``. 'bf16' computes every product on
        bfloat16 operands with float32 accumulation (float32 params only: float64
        params always run in float64).
    bf16_gemm : {'auto', 'emulated', 'onednn', 'mkl', 'torch'}, optional
        Under 'bf16', who computes the products (``fastrnn.gemm.bf16_provider``);
        'emulated' runs on the float32 provider ``gemm``.

    Returns
    -------
    loss : scalar of the params' dtype
        Masked cross-entropy summed over the batch, divided by N.
    grads : dict
        A fresh gradient array for every key of ``PARAM_NAMES``.
    """
    _check(params, features, captions, null_idx, cell_type)
    if kernels is None:
        from fastrnn.backends import active
        kernels = active()
    gemm = gemm_provider(gemm)
    p = {k: np.ascontiguousarray(params[k]) for k in PARAM_NAMES}
    N, T = captions.shape[0], captions.shape[1] - 1
    (V, _), (H, G) = p["W_embed"].shape, p["Wh"].shape
    dtype = p["Wh"].dtype
    precision = get_precision() if precision is None else precision
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"captioning_loss: precision must be 'fp32' or 'bf16', "
                         f"got {precision!r}")
    bf16 = precision == "bf16" and dtype == np.float32
    if bf16:
        warn_if_slow()
        gemm = bf16_provider(bf16_gemm, fp32=gemm)
    operand = gemm.operand_dtype if bf16 else None
    key = _key(N, T, H, G, V, dtype, operand)
    # Checked out, so that no concurrent call shares these buffers; given back at the end
    # (after an exception it is simply not cached again).
    ws = workspace if workspace is not None else _check_out(N, T, H, G, V, dtype, operand)
    if ws.key != key:
        raise ValueError(f"captioning_loss: workspace was made for (N, T, H, G, V, dtype"
                         f"[, operand]) = {ws.key}, this batch needs {key}")
    clock = _Clock(timings)
    cell = _LSTM(kernels) if cell_type == "lstm" else _RNN()
    cast = gemm.cast if bf16 else _no_cast

    with clock("plan"):
        plan = BatchPlan(captions, null_idx)
        features = np.ascontiguousarray(features[plan.order[:plan.active[0]]]) \
            if plan.rows else features[:0]
    with clock("bf16 casts of the weights" if bf16 else "plan"):
        # The product operands of the weights (under fp32, the weights themselves).
        w = {k: cast(p[k]) for k in ("W_proj", "Wx", "W_embed", "Wh", "W_vocab")}
        w["features"] = cast(features)
        del features
    with clock("forward: h0 + embedding table"):
        h0 = gemm.mm(w["features"], w["W_proj"])
        h0 += p["b_proj"]
        gemm.mm(w["W_embed"], w["Wx"], out=ws.table)
        ws.table += p["b"]
    with clock("forward: recurrence"):
        _forward(plan, w, ws, cast(h0), cell, gemm, cast)
    with clock("vocabulary + softmax"):
        loss, grads = _vocabulary(plan, p, w, ws, kernels, gemm, N, cast)
    with clock("backward: recurrence"):
        dh0, S = _backward(plan, w, ws, cell, gemm, cast, kernels)
    # Only the features' operand goes on: the weights' are not held through the weight
    # gradients (those still needed are cast again after the token sums).
    w = {"features": w["features"]}
    with clock("weight gradients"):
        grads.update(_weight_grads(plan, p, w, ws, dh0, S, gemm, kernels, clock, cast))
    if workspace is None:
        _give_back(ws)   # grads and loss are fresh objects: nothing returned aliases ws
    return dtype.type(loss), grads


def _no_cast(x, out=None):
    """fp32: a product operand is the array itself."""
    return x


def _check(params, features, captions, null_idx, cell_type):
    fn = "captioning_loss"
    if cell_type not in CELL_TYPES:
        raise ValueError(f"{fn}: cell_type must be one of {CELL_TYPES}, got {cell_type!r}")
    if not isinstance(params, dict):
        raise TypeError(f"{fn}: params must be a dict of arrays, got {type(params).__name__}")
    missing = [k for k in PARAM_NAMES if k not in params]
    if missing:
        raise ValueError(f"{fn}: params lacks {missing}")
    gate = "4H" if cell_type == "lstm" else "H"
    s = Signature(fn)
    s.floats("W_embed", params["W_embed"], "V", "W")
    s.floats("W_proj", params["W_proj"], "D", "H")
    s.floats("b_proj", params["b_proj"], "H")
    s.floats("Wx", params["Wx"], "W", gate)
    s.floats("Wh", params["Wh"], "H", gate)
    s.floats("b", params["b"], gate)
    s.floats("W_vocab", params["W_vocab"], "H", "V")
    s.floats("b_vocab", params["b_vocab"], "V")
    s.floats("features", features, "N", "D")
    s.tokens("captions", captions, "N", "T+1", high=s.dims["V"])
    if captions.shape[1] < 2:
        raise ValueError(f"{fn}: captions must have shape (N, T+1) with T+1 >= 2, "
                         f"got {captions.shape}")
    if not isinstance(null_idx, (int, np.integer)) or not 0 <= null_idx < s.dims["V"]:
        raise ValueError(f"{fn}: null_idx must be a token id in [0, {s.dims['V']}), "
                         f"got {null_idx!r}")


# ------------------------------------------------------------------ the cells

class _LSTM:
    """Elementwise part of an LSTM step, from the backend's fused kernels."""

    def __init__(self, kernels):
        self.k = kernels

    def forward(self, ws, lo, hi, prev_lo, n, recurrent, h_op):
        """Step rows [lo, hi) of the packed buffers, whose gates hold the input
        projection; recurrent (n, G) = prev_h @ Wh is added in the kernel's pass.
        prev_lo = packed start of the previous step (None at t = 0, where the cell
        state enters as zero); h_op: where the kernel also writes h's bf16 operand
        (None under fp32)."""
        prev_c = ws.zeros_h[:n] if prev_lo is None else ws.c[prev_lo:prev_lo + n]
        self.k.lstm_gates_forward(ws.gates[lo:hi], prev_c, ws.c[lo:hi], ws.h_rows(lo, hi),
                                  recurrent, h_op)

    def backward(self, ws, lo, hi, prev_lo, n, dnext_c, dprev_c, da_op):
        prev_c = ws.zeros_h[:n] if prev_lo is None else ws.c[prev_lo:prev_lo + n]
        self.k.lstm_gates_backward(ws.gates[lo:hi], prev_c, ws.c[lo:hi], ws.dh[lo:hi],
                                   dnext_c, ws.dgates_rows(lo, hi), dprev_c, da_op)


class _RNN:
    """Elementwise part of a vanilla-RNN step: h = tanh(a); da = dh * (1 - h^2)."""

    def forward(self, ws, lo, hi, prev_lo, n, recurrent, h_op):
        a = ws.gates[lo:hi]
        np.add(a, recurrent, out=a)
        h = ws.h_rows(lo, hi)
        np.tanh(a, out=h)
        if h_op is not None:
            to_operand(h, h_op)

    def backward(self, ws, lo, hi, prev_lo, n, dnext_c, dprev_c, da_op):
        h, da = ws.h_rows(lo, hi), ws.dgates_rows(lo, hi)
        np.multiply(h, h, out=da)
        np.subtract(1, da, out=da)
        np.multiply(da, ws.dh[lo:hi], out=da)
        if da_op is not None:
            to_operand(da, da_op)


# ------------------------------------------------------------- forward, backward

def _forward(plan, w, ws, h0, cell, gemm, cast):
    """Run the recurrence over the packed rows: fills gates, prev_h, h (and c), and
    hb, the operand of h (h itself under fp32; under bf16 the cell writes it in the pass
    that makes h)."""
    Wh, off, active = w["Wh"], plan.offsets, plan.active
    operands = cast is not _no_cast
    for t in range(plan.steps):
        lo, n = off[t], active[t]
        hi = lo + n
        # The state entering step t: h0, or the first n rows of step t-1's output.
        prev = h0[:n] if t == 0 else ws.hb[off[t - 1]:off[t - 1] + n]
        ws.prev_h[lo:hi] = prev
        # mode="clip": take's default mode copies through a temporary of the output's
        # size; the ids were checked (and scatter_add_rows checks its copy again)
        np.take(ws.table, plan.tokens[lo:hi], axis=0, out=ws.gates[lo:hi], mode="clip")
        recurrent = gemm.product(ws.prev_h[lo:hi], Wh, ws.row_g[:n])
        # bf16: h's operand, in place (hb is h) when nothing reads the float32 h later
        cell.forward(ws, lo, hi, None if t == 0 else off[t - 1], n, recurrent,
                     ws.hb[lo:hi] if operands else None)


def _vocabulary(plan, p, w, ws, kernels, gemm, N, cast):
    """Scores, softmax loss and their gradients for the unmasked rows only.

    Returns the loss and grads W_vocab, b_vocab; leaves dL/dh (from the loss) in ws.dh.
    """
    R, M = plan.rows, len(plan.targets)
    W_vocab = w["W_vocab"]
    if plan.selected is None:
        h_sel = ws.hb[:R]
    else:
        h_sel = np.take(ws.hb[:R], plan.selected, axis=0, out=ws.picked[:M], mode="clip")
    scores = ws.scores[:M]
    gemm.mm(h_sel, W_vocab, out=scores)
    scores += p["b_vocab"]
    loss = kernels.softmax_cross_entropy_rows(scores, plan.targets, 1.0 / N) / N if M else 0.0
    grads = {"b_vocab": scores.sum(axis=0)}
    scores = cast(scores, out=ws.scores_b[:M])   # in place under fp32 and emulated bf16
    grads["W_vocab"] = gemm.mm(h_sel.T, scores)
    if plan.selected is None:
        gemm.mm(scores, W_vocab.T, out=ws.dh[:R])
    else:
        ws.dh[:R] = 0
        ws.dh[plan.selected] = gemm.mm(scores, W_vocab.T, out=ws.picked_out[:M])
    return loss, grads


def _backward(plan, w, ws, cell, gemm, cast, kernels):
    """Backward through the recurrence: fills dgates (and, when it is a separate
    buffer, their operand dgates_b). Returns dh0 (n_0, H) and, when the float32 gate
    gradients live one step at a time (``ws.split``), their token sums S (V, G),
    taken step by step (else None: ``_weight_grads`` takes them)."""
    Wh_T, off, active = w["Wh"].T, plan.offsets, plan.active
    operands = cast is not _no_cast
    dnext_c, dprev_c = ws.dc
    dh0 = np.zeros((active[0] if plan.rows else 0, Wh_T.shape[1]), dtype=ws.dc[0].dtype)
    S = _token_sums_buffer(ws) if ws.split else None
    n_later = 0  # rows of step t+1: they carry a gradient back into step t
    for t in reversed(range(plan.steps)):
        lo, n = off[t], active[t]
        hi = lo + n
        dnext_c[n_later:n] = 0  # rows whose caption ends at step t get no cell gradient
        # Under bf16 the cell also writes the gate gradients' operand. The float32 ones
        # are summed per token, so an operand that would share their buffer goes to
        # scratch (the forward's row_g) instead.
        da_op = None if not operands else \
            ws.row_g[:n] if ws.dgates_b is ws.dgates else ws.dgates_b[lo:hi]
        cell.backward(ws, lo, hi, None if t == 0 else off[t - 1], n, dnext_c[:n], dprev_c[:n],
                      da_op)
        if S is not None:
            kernels.scatter_add_rows(plan.tokens[lo:hi], ws.dgates_rows(lo, hi), S)
        da = ws.dgates[lo:hi] if da_op is None else da_op
        if t == 0:
            gemm.mm(da, Wh_T, out=dh0)
        else:
            prev = off[t - 1]
            gemm.mm_add(da, Wh_T, ws.dh[prev:prev + n], ws.row_h[:n])
        dnext_c, dprev_c = dprev_c, dnext_c
        n_later = n
    return dh0, S


def _token_sums_buffer(ws):
    """Zeroed (V, G) float sums of the gate gradients per input token."""
    return np.zeros(ws.table.shape, dtype=ws.table.dtype)


def _weight_grads(plan, p, w, ws, dh0, S, gemm, kernels, clock, cast):
    """The products left after the backward loop, one per weight. ``w`` holds the
    features' operand, dropped once used; the operands of ``Wx`` and ``W_embed`` are
    cast from ``p`` after the token sums and dropped once used, so that no bf16 cast is
    held through the token sums or the largest product. ``S``: the token sums of the
    gate gradients, or None to take them here."""
    R = plan.rows
    same = cast is _no_cast or np.dtype(gemm.operand_dtype) == dh0.dtype
    grads = {"b_proj": dh0.sum(axis=0)}
    grads["W_proj"] = gemm.mm(w.pop("features").T, cast(dh0, out=dh0 if same else None))
    del dh0
    if S is None:
        with clock("weight gradients: token sums"):
            S = _token_sums_buffer(ws)
            kernels.scatter_add_rows(plan.tokens, ws.dgates[:R], S)
    if ws.dgates_b is ws.dgates:     # the float32 sums are done: cast in place
        dgates = cast(ws.dgates[:R], out=ws.dgates[:R])
    else:
        dgates = ws.dgates_b[:R]
    grads["b"] = S.sum(axis=0)
    S_op = cast(S, out=S if same else None)       # in place once its sum is taken
    del S
    W_embed = cast(p["W_embed"])
    grads["Wx"] = gemm.mm(W_embed.T, S_op)
    del W_embed
    Wx = cast(p["Wx"])
    grads["W_embed"] = gemm.mm(S_op, Wx.T)
    del Wx, S_op
    grads["Wh"] = gemm.mm(ws.prev_h[:R].T, dgates)
    return grads
