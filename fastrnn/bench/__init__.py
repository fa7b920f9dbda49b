"""Benchmarks of whole training iterations: fastrnn's engines against the NumPy reference
and PyTorch, side by side in one run (``training``), and data-parallel scaling under
torchrun (``distributed``). ``fastrnn-bench`` is the command line over them."""
