"""The LSTM gate order, and the one map between fastrnn's and PyTorch's.

fastrnn stacks the four gate blocks of ``Wx (D, 4H)``, ``Wh (H, 4H)`` and
``b (4H,)`` as i, f, o, g (input, forget, output, cell candidate) along the last
axis; PyTorch's ``nn.LSTM`` stacks them i, f, g, o. The permutation swaps the last
two blocks, so it is its own inverse; both names are kept for readable call sites.
"""
import numpy as np

GATES = ("i", "f", "o", "g")
TORCH_GATES = ("i", "f", "g", "o")
# PyTorch's block j is fastrnn's block TORCH_FROM_FASTRNN[j] (and the other way round).
TORCH_FROM_FASTRNN = tuple(GATES.index(gate) for gate in TORCH_GATES)


def _permute(w, H, axis):
    blocks = np.split(np.asarray(w), [H, 2 * H, 3 * H], axis=axis)
    return np.concatenate([blocks[k] for k in TORCH_FROM_FASTRNN], axis=axis)


def to_torch_order(w, H, axis=-1):
    """Gate blocks (each H wide along ``axis``) from fastrnn's i, f, o, g to PyTorch's i, f, g, o."""
    return _permute(w, H, axis)


def from_torch_order(w, H, axis=-1):
    """Gate blocks from PyTorch's i, f, g, o to fastrnn's i, f, o, g."""
    return _permute(w, H, axis)
