"""The one map between fastrnn's LSTM gate order (i, f, o, g) and PyTorch's (i, f, g, o)."""
import numpy as np

from fastrnn.backends.gate_order import GATES, TORCH_GATES, from_torch_order, to_torch_order


def test_blocks_move_by_name_and_the_map_round_trips():
    H, D = 3, 2
    # Column block k of w holds the value k + 1 everywhere, so a block is known by value.
    w = np.repeat(np.arange(1.0, 5.0), H)[None, :].repeat(D, axis=0)   # (D, 4H)
    t = to_torch_order(w, H)
    for j, gate in enumerate(TORCH_GATES):
        assert (t[:, j * H:(j + 1) * H] == GATES.index(gate) + 1).all()
    np.testing.assert_array_equal(from_torch_order(t, H), w)
    # Along another axis (PyTorch's weights are (4H, D)), and on a bias vector.
    np.testing.assert_array_equal(to_torch_order(w.T, H, axis=0), t.T)
    np.testing.assert_array_equal(to_torch_order(w[0], H), t[0])
