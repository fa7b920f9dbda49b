"""The PyTorch CPU baseline: the captioning LSTM written the way a PyTorch user would.

Same architecture and loss as ``fastrnn.captioning.model.CaptioningRNN`` with an LSTM cell:
``h0 = Linear(features)``, ``nn.Embedding`` -> ``nn.LSTM(batch_first=True)`` (cell
state starts at zero) -> ``nn.Linear`` to the vocabulary, cross-entropy over the
targets that are not ``<NULL>``, summed and divided by the batch size. With
``packed=True`` the LSTM runs on a ``pack_padded_sequence`` of each caption up to
its last non-``<NULL>`` target, which is what a user does to skip padding.

It is the baseline of ``fastrnn-bench``; ``load_params`` copies a fastrnn
parameter dict in (PyTorch orders the LSTM gates i, f, g, o; fastrnn i, f, o, g),
so both models can be checked to compute the same loss.
"""
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fastrnn.backends.gate_order import to_torch_order

__all__ = ["TorchCaptioningLSTM", "TorchTrainer"]

# torch.backends.mkldnn.flags() warns on every CPU build that TF32 needs an Intel GPU:
# true, and of no use to a CPU benchmark's output.
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN",
                        category=UserWarning)



class TorchCaptioningLSTM(nn.Module):
    """features (N, D), captions int (N, T+1) -> masked cross-entropy summed / N."""

    def __init__(self, vocab_size, input_dim, wordvec_dim, hidden_dim, null_idx=0, packed=False,
                 dtype=torch.float32):
        super().__init__()
        self.null_idx, self.packed = null_idx, packed
        self.proj = nn.Linear(input_dim, hidden_dim, dtype=dtype)
        self.embed = nn.Embedding(vocab_size, wordvec_dim, dtype=dtype)
        self.lstm = nn.LSTM(wordvec_dim, hidden_dim, batch_first=True, dtype=dtype)
        self.vocab = nn.Linear(hidden_dim, vocab_size, dtype=dtype)

    def forward(self, features, captions):
        inputs, targets = captions[:, :-1], captions[:, 1:]
        N, T = targets.shape
        h0 = self.proj(features).unsqueeze(0)              # (1, N, H)
        c0 = torch.zeros_like(h0)
        x = self.embed(inputs)                              # (N, T, W)
        if self.packed:
            mask = targets != self.null_idx
            last = T - mask.flip(1).int().argmax(dim=1)     # 1 + last unmasked target
            lengths = torch.where(mask.any(dim=1), last, torch.ones_like(last))  # >= 1 for packing
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed, (h0, c0))
            h, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        else:
            h, _ = self.lstm(x, (h0, c0))                   # (N, T, H)
        scores = self.vocab(h)                              # (N, T, V)
        loss = nn.functional.cross_entropy(scores.reshape(N * T, -1), targets.reshape(N * T),
                                           ignore_index=self.null_idx, reduction="sum")
        return loss / N

    @torch.no_grad()
    def load_params(self, params):
        """Copy in a fastrnn ``CaptioningRNN`` LSTM parameter dict (numpy arrays)."""
        def t(a):
            return torch.as_tensor(np.asarray(a), dtype=self.proj.weight.dtype)

        H = params["Wh"].shape[0]

        def reorder(w):  # (..., 4H) fastrnn gate blocks -> PyTorch's order
            return to_torch_order(w, H)

        self.proj.weight.copy_(t(params["W_proj"].T))
        self.proj.bias.copy_(t(params["b_proj"]))
        self.embed.weight.copy_(t(params["W_embed"]))
        self.lstm.weight_ih_l0.copy_(t(reorder(params["Wx"]).T))
        self.lstm.weight_hh_l0.copy_(t(reorder(params["Wh"]).T))
        self.lstm.bias_ih_l0.copy_(t(reorder(params["b"])))
        self.lstm.bias_hh_l0.zero_()
        self.vocab.weight.copy_(t(params["W_vocab"].T))
        self.vocab.bias.copy_(t(params["b_vocab"]))


class TorchTrainer:
    """One training iteration = loss, backward, Adam step (``torch.optim.Adam``).

    ``bf16=True`` runs the forward and the loss under ``torch.autocast("cpu",
    dtype=torch.bfloat16)``, as a PyTorch user turns on mixed precision; the
    backward and the optimizer step stay outside it, as autocast's documentation
    prescribes. Where oneDNN has no bf16 LSTM for the CPU (no AVX-512), the model
    runs with oneDNN switched off (``torch.backends.mkldnn.flags(enabled=False)``),
    PyTorch's own bf16 kernels.
    """

    def __init__(self, model, learning_rate=1e-4, bf16=False):
        self.model = model
        self.bf16 = bf16
        self.mkldnn = torch.backends.mkldnn.is_available()
        self.optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)

    def step(self, features, captions):
        """features (N, D) float numpy, captions int (N, T+1) numpy -> the loss (float)."""
        features = torch.from_numpy(np.ascontiguousarray(features))
        captions = torch.from_numpy(np.ascontiguousarray(captions).astype(np.int64, copy=False))
        self.optimizer.zero_grad(set_to_none=True)
        with torch.backends.mkldnn.flags(enabled=self.mkldnn):
            try:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                    loss = self.model(features, captions)
            except RuntimeError as err:
                # oneDNN's bf16 LSTM primitive needs AVX-512; elsewhere PyTorch raises
                # "could not create a primitive descriptor" and the user's fix is to
                # run the LSTM on PyTorch's own kernels (still bf16 under autocast).
                if not (self.bf16 and self.mkldnn and "primitive descriptor" in str(err)):
                    raise
                self.mkldnn = False
                return self.step(features.numpy(), captions.numpy())
            loss.backward()
        self.optimizer.step()
        return loss.item()
