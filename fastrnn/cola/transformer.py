"""A one-block Transformer sentence classifier (PyTorch), the CS7643 assignment's model.

``ClassificationTransformer`` reads a ``[CLS]``-first sequence of token ids
(N, T), T <= max_length, and returns the probability that each sentence is
acceptable, shape (N, 1):

    embed               token + learned position embeddings       (N,T) -> (N,T,H)
    multi_head_attention LayerNorm(x + W_o concat_h softmax(Q_h K_h^T / sqrt(dk)) V_h)
    feedforward_layer   LayerNorm(x + W2 relu(W1 x))
    final_layer         pool -> linear -> sigmoid                 (N,T,H) -> (N,1)

The heads are computed together: Q, K and V of all heads come from one linear
map each and are reshaped to (N, heads, T, d), so there is no Python loop over
heads. An optional boolean ``pad_mask`` (N, T), true at pad positions, removes
pad keys from every softmax and zeroes the pad rows before pooling, so the
output does not depend on what the pad positions hold.

The constructor defaults are the assignment's (no dropout, flatten pooling, no
subwords). The options after them (dropout, pooling, subwords, seed) exist for
training on CoLA; see ``fastrnn.cola.training`` for the recipe that uses them.

Subwords (``num_subwords > 0``): ``embed`` also takes ``subwords`` (N, T, S),
the ids of each token's character n-grams (0: empty slot), and adds the mean of
their embeddings to the token embedding, fastText style. A word unseen in
training is ``<unk>`` as a word but still carries its n-grams.
"""
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fastrnn.cola.config import POOLINGS

__all__ = ["ClassificationTransformer", "POOLINGS"]


class ClassificationTransformer(nn.Module):
    """Binary sentence classifier: one attention block, one feed-forward block.

    word_to_ix: dict word -> id, only measured: V = len(word_to_ix), as in the
    assignment (its ids may be strings, as ``csv.reader`` gives them).
    hidden_dim H, num_heads h, dim_q/dim_k/dim_v: per-head query/key/value sizes
    (dim_q must equal dim_k: queries and keys meet in a dot product).
    max_length: longest sequence accepted, and the flatten width T*H.
    dropout: on attention weights, on each block's output before its residual
    sum and on the pooled features; embed_dropout: on the summed embeddings.
    pooling: 'flatten' (the assignment's: (N, max_length*H) -> linear), 'cls' (row 0),
    'mean' (mean over non-pad rows) or 'max' (feature-wise max over non-pad rows).
    num_subwords: size of the character n-gram table (id 0 = empty slot); 0
    (default) means no subwords.
    seed: None (the default) gives the initial weights of the assignment's
    reference implementation for the same arguments: PyTorch's default
    initialisers after ``torch.manual_seed(0)``, drawn in the reference's order
    (token and position embeddings; for each head a k, a v and a q
    ``Linear(H, d)``, copied into that head's rows of the fused W_k, W_v, W_q;
    the head projection, its LayerNorm, the two feed-forward linears, their
    LayerNorm, the output linear; a subword table, which the reference lacks,
    last). An integer seed draws the weights, module by module, from a
    generator seeded with it. Either way the global torch RNG is left untouched
    (the reference's constructor reseeds it, and NumPy's and ``random``'s, to
    0; this one does not), so equal arguments give equal models.
    """

    def __init__(self, word_to_ix, hidden_dim=128, num_heads=2, dim_feedforward=2048,
                 dim_k=96, dim_v=96, dim_q=96, max_length=43, *,
                 dropout=0.0, embed_dropout=0.0, pooling="flatten", num_subwords=0,
                 seed=None):
        super().__init__()
        _check_config(word_to_ix, hidden_dim, num_heads, dim_feedforward, dim_k, dim_v,
                      dim_q, max_length, dropout, embed_dropout, pooling, num_subwords)
        self.word_to_ix = dict(word_to_ix)
        self.vocab_size = len(word_to_ix)
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.dim_feedforward = dim_feedforward
        self.dim_k, self.dim_v, self.dim_q = dim_k, dim_v, dim_q
        self.max_length = max_length
        self.pooling = pooling
        # The layers draw their default weights from the global CPU RNG: fork it, so
        # that its state afterwards is what it was before.
        with torch.random.fork_rng(devices=[]):
            self._build(dropout, embed_dropout, num_subwords)
            if seed is None:
                torch.manual_seed(0)
                self._init_like_the_reference()
            else:
                self._init_parameters(torch.Generator().manual_seed(int(seed)))

    def _build(self, dropout, embed_dropout, num_subwords):
        H, num_heads = self.hidden_dim, self.num_heads
        dim_q, dim_k, dim_v = self.dim_q, self.dim_k, self.dim_v
        dim_feedforward = self.dim_feedforward
        self.token_embedding = nn.Embedding(self.vocab_size, H)
        self.position_embedding = nn.Embedding(self.max_length, H)
        self.num_subwords = num_subwords
        self.subword_embedding = nn.Embedding(num_subwords, H, padding_idx=0) \
            if num_subwords else None
        self.embed_dropout = nn.Dropout(embed_dropout)

        # All heads side by side: output features [i*d, (i+1)*d) belong to head i.
        self.W_q = nn.Linear(H, num_heads * dim_q)
        self.W_k = nn.Linear(H, num_heads * dim_k)
        self.W_v = nn.Linear(H, num_heads * dim_v)
        self.attention_projection = nn.Linear(num_heads * dim_v, H)
        self.attention_dropout = nn.Dropout(dropout)
        self.norm_attention = nn.LayerNorm(H)

        self.feedforward_in = nn.Linear(H, dim_feedforward)
        self.feedforward_out = nn.Linear(dim_feedforward, H)
        self.norm_feedforward = nn.LayerNorm(H)

        self.block_dropout = nn.Dropout(dropout)
        pooled_dim = self.max_length * H if self.pooling == "flatten" else H
        self.classifier = nn.Linear(pooled_dim, 1)
        self.classifier_dropout = nn.Dropout(dropout)

    def config(self):
        """Constructor arguments (except word_to_ix) that rebuild this model."""
        return dict(hidden_dim=self.hidden_dim, num_heads=self.num_heads,
                    dim_feedforward=self.dim_feedforward, dim_k=self.dim_k, dim_v=self.dim_v,
                    dim_q=self.dim_q, max_length=self.max_length, pooling=self.pooling,
                    dropout=self.attention_dropout.p, embed_dropout=self.embed_dropout.p,
                    num_subwords=self.num_subwords)

    # ------------------------------------------------------------------ stages

    def embed(self, inputs, subwords=None):
        """Token plus position embeddings (plus the mean n-gram embedding of each
        token when the model has subwords). inputs int (N, T), subwords int
        (N, T, S) -> (N, T, H)."""
        inputs = self._check_inputs("embed", inputs)
        subwords = self._check_subwords("embed", subwords, inputs.shape)
        positions = torch.arange(inputs.shape[1], device=inputs.device)
        x = self.token_embedding(inputs) + self.position_embedding(positions)  # (N,T,H)
        if subwords is not None:
            counts = (subwords > 0).sum(dim=2, keepdim=True).clamp(min=1)      # (N,T,1)
            # The padding row (id 0) is zero, so the sum counts real n-grams only.
            x = x + self.subword_embedding(subwords).sum(dim=2) / counts
        return self.embed_dropout(x)

    def multi_head_attention(self, x, pad_mask=None):
        """LayerNorm(x + attention(x)). x (N, T, H), pad_mask bool (N, T) -> (N, T, H)."""
        self._check_hidden("multi_head_attention", x)
        pad_mask = self._check_pad_mask("multi_head_attention", pad_mask, x.shape[:2])
        N, T, _ = x.shape
        h = self.num_heads
        q = self.W_q(x).view(N, T, h, self.dim_q).transpose(1, 2)   # (N,h,T,dq)
        k = self.W_k(x).view(N, T, h, self.dim_k).transpose(1, 2)   # (N,h,T,dk)
        v = self.W_v(x).view(N, T, h, self.dim_v).transpose(1, 2)   # (N,h,T,dv)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dim_k)    # (N,h,T,T)
        if pad_mask is not None:
            # -inf on pad keys: they get weight exactly 0 after the softmax.
            scores = scores.masked_fill(pad_mask[:, None, None, :], float("-inf"))
        weights = self.attention_dropout(torch.softmax(scores, dim=-1))
        heads = (weights @ v).transpose(1, 2).reshape(N, T, h * self.dim_v)
        attended = self.attention_projection(heads)                 # (N,T,H)
        return self.norm_attention(x + self.block_dropout(attended))

    def feedforward_layer(self, x):
        """LayerNorm(x + W2 relu(W1 x)). x (N, T, H) -> (N, T, H)."""
        self._check_hidden("feedforward_layer", x)
        hidden = self.feedforward_out(F.relu(self.feedforward_in(x)))
        return self.norm_feedforward(x + self.block_dropout(hidden))

    def final_layer(self, x, pad_mask=None):
        """Pool, linear, sigmoid. x (N, T, H) -> probabilities (N, 1)."""
        return torch.sigmoid(self.final_logits(x, pad_mask))

    def final_logits(self, x, pad_mask=None):
        """``final_layer`` before the sigmoid (what a logit loss wants)."""
        self._check_hidden("final_layer", x)
        pad_mask = self._check_pad_mask("final_layer", pad_mask, x.shape[:2])
        if pad_mask is not None:
            x = x.masked_fill(pad_mask[..., None], 0.0)
        return self.classifier(self.classifier_dropout(self._pool(x, pad_mask)))

    def forward(self, inputs, pad_mask=None, subwords=None):
        """inputs int (N, T), pad_mask bool (N, T) or None, subwords int (N, T, S)
        (required iff the model has subwords) -> probabilities (N, 1)."""
        return torch.sigmoid(self.logits(inputs, pad_mask, subwords))

    def logits(self, inputs, pad_mask=None, subwords=None):
        """``forward`` before the sigmoid; train on this with a logit loss."""
        x = self.encode(inputs, pad_mask, subwords)
        return self.final_logits(x, pad_mask)

    def encode(self, inputs, pad_mask=None, subwords=None):
        """The token states before pooling: embed, attention, feed-forward. -> (N, T, H)."""
        x = self.embed(inputs, subwords)
        pad_mask = self._check_pad_mask("forward", pad_mask, x.shape[:2])
        x = self.multi_head_attention(x, pad_mask)
        return self.feedforward_layer(x)

    # ---------------------------------------------------------------- helpers

    def _pool(self, x, pad_mask):
        """(N, T, H) with pad rows already zeroed -> (N, P)."""
        N, T, H = x.shape
        if self.pooling == "cls":
            return x[:, 0]
        if self.pooling == "mean":
            if pad_mask is None:
                return x.mean(dim=1)
            counts = (~pad_mask).sum(dim=1, keepdim=True).clamp(min=1).to(x.dtype)
            return x.sum(dim=1) / counts
        if self.pooling == "max":
            if pad_mask is not None:
                x = x.masked_fill(pad_mask[..., None], float("-inf"))
            return x.amax(dim=1)
        if T < self.max_length:
            # A shorter sequence reads as one whose remaining rows are zero,
            # which is what masked padding to max_length gives.
            x = F.pad(x, (0, 0, 0, self.max_length - T))
        return x.reshape(N, self.max_length * H)

    @torch.no_grad()
    def _init_like_the_reference(self):
        """Re-draw every parameter from the global RNG in the reference's order, with
        PyTorch's default initialisers (``reset_parameters``, or a fresh per-head
        ``nn.Linear`` whose weights fill that head's rows of the fused map)."""
        self.token_embedding.reset_parameters()
        self.position_embedding.reset_parameters()
        H = self.hidden_dim
        for i in range(self.num_heads):
            for fused, d in ((self.W_k, self.dim_k), (self.W_v, self.dim_v),
                             (self.W_q, self.dim_q)):
                head = nn.Linear(H, d)
                fused.weight[i * d:(i + 1) * d] = head.weight
                fused.bias[i * d:(i + 1) * d] = head.bias
        for module in (self.attention_projection, self.norm_attention, self.feedforward_in,
                       self.feedforward_out, self.norm_feedforward, self.classifier):
            module.reset_parameters()
        if self.subword_embedding is not None:
            self.subword_embedding.reset_parameters()

    def _init_parameters(self, generator):
        """PyTorch's default initialisation, drawn from ``generator``."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Embedding):
                    module.weight.normal_(0.0, 1.0, generator=generator)
                    if module.padding_idx is not None:
                        module.weight[module.padding_idx].zero_()
                elif isinstance(module, nn.Linear):
                    bound = 1.0 / math.sqrt(module.in_features)
                    module.weight.uniform_(-bound, bound, generator=generator)
                    module.bias.uniform_(-bound, bound, generator=generator)
                elif isinstance(module, nn.LayerNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()

    def _check_inputs(self, fn, inputs):
        if isinstance(inputs, np.ndarray):
            inputs = torch.from_numpy(inputs)
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"{fn}: inputs must be an integer torch.Tensor of token ids (N, T), "
                            f"got {type(inputs).__name__}")
        if not _holds_integers(inputs):
            raise TypeError(f"{fn}: inputs must hold integer token ids, got dtype {inputs.dtype}")
        if inputs.ndim != 2:
            raise ValueError(f"{fn}: inputs must be 2-D (N, T), got shape {tuple(inputs.shape)}")
        T = inputs.shape[1]
        if not 1 <= T <= self.max_length:
            raise ValueError(f"{fn}: inputs has length T={T}; it must be between 1 and "
                             f"max_length={self.max_length}")
        _check_id_range(fn, "inputs", inputs, "token id", "vocabulary", self.vocab_size)
        return inputs.long()

    def _check_subwords(self, fn, subwords, shape):
        if not self.num_subwords:
            if subwords is not None:
                raise ValueError(f"{fn}: this model has no subword table (num_subwords=0) "
                                 f"but subwords were given")
            return None
        if subwords is None:
            raise ValueError(f"{fn}: this model has subwords (num_subwords="
                             f"{self.num_subwords}); pass subwords (N, T, S) n-gram ids")
        if isinstance(subwords, np.ndarray):
            subwords = torch.from_numpy(subwords)
        if not isinstance(subwords, torch.Tensor) or not _holds_integers(subwords):
            got = subwords.dtype if isinstance(subwords, torch.Tensor) else type(subwords).__name__
            raise TypeError(f"{fn}: subwords must be an integer torch.Tensor (N, T, S), got {got}")
        if subwords.ndim != 3 or tuple(subwords.shape[:2]) != tuple(shape):
            raise ValueError(f"{fn}: subwords must have shape (N, T, S) with (N, T) = "
                             f"{tuple(shape)}, got {tuple(subwords.shape)}")
        _check_id_range(fn, "subwords", subwords, "n-gram id", "subword table",
                        self.num_subwords)
        return subwords.long()

    def _check_hidden(self, fn, x):
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"{fn}: x must be a floating-point torch.Tensor (N, T, H), got {got}")
        if x.ndim != 3 or x.shape[2] != self.hidden_dim:
            raise ValueError(f"{fn}: x must have shape (N, T, H={self.hidden_dim}), "
                             f"got {tuple(x.shape)}")
        if x.shape[1] > self.max_length:
            raise ValueError(f"{fn}: x has length T={x.shape[1]} > max_length={self.max_length}")

    @staticmethod
    def _check_pad_mask(fn, pad_mask, shape):
        if pad_mask is None:
            return None
        if isinstance(pad_mask, np.ndarray):
            pad_mask = torch.from_numpy(pad_mask)
        if not isinstance(pad_mask, torch.Tensor) or pad_mask.dtype != torch.bool:
            got = pad_mask.dtype if isinstance(pad_mask, torch.Tensor) else type(pad_mask).__name__
            raise TypeError(f"{fn}: pad_mask must be a boolean torch.Tensor (N, T), true at "
                            f"pad positions, got {got}")
        if tuple(pad_mask.shape) != tuple(shape):
            raise ValueError(f"{fn}: pad_mask must have shape (N, T) = {tuple(shape)}, "
                             f"got {tuple(pad_mask.shape)}")
        if pad_mask.numel() and bool(pad_mask.all(dim=1).any()):
            row = int(pad_mask.all(dim=1).nonzero()[0])
            raise ValueError(f"{fn}: pad_mask marks every position of sequence {row} as "
                             f"padding; each sequence needs at least one real token")
        return pad_mask


def _holds_integers(t):
    """True for a tensor of an integer dtype (not float, complex or bool)."""
    return not (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool)


def _check_id_range(fn, name, ids, kind, table, size):
    """Every id of ``ids`` must lie in [0, size); the error names the first offender."""
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{fn}: {name} holds {kind} {bad}, outside the {table} "
                             f"range [0, {size})")


def _check_config(word_to_ix, hidden_dim, num_heads, dim_feedforward, dim_k, dim_v, dim_q,
                  max_length, dropout, embed_dropout, pooling, num_subwords=0):
    fn = "ClassificationTransformer"
    if not isinstance(word_to_ix, dict) or not word_to_ix:
        raise TypeError(f"{fn}: word_to_ix must be a non-empty dict word -> id")
    sizes = dict(hidden_dim=hidden_dim, num_heads=num_heads, dim_feedforward=dim_feedforward,
                 dim_k=dim_k, dim_v=dim_v, dim_q=dim_q, max_length=max_length)
    for name, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{fn}: {name} must be a positive integer, got {value!r}")
    if dim_q != dim_k:
        raise ValueError(f"{fn}: dim_q ({dim_q}) must equal dim_k ({dim_k}); "
                         f"queries and keys meet in a dot product")
    for name, p in (("dropout", dropout), ("embed_dropout", embed_dropout)):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{fn}: {name} must be in [0, 1), got {p!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"{fn}: pooling must be one of {POOLINGS}, got {pooling!r}")
    if not isinstance(num_subwords, (int, np.integer)) or isinstance(num_subwords, bool) \
            or num_subwords < 0 or num_subwords == 1:
        raise ValueError(f"{fn}: num_subwords must be 0 (no subwords) or an integer >= 2 "
                         f"(id 0 is the empty slot), got {num_subwords!r}")
