# The same kernels as _cython_kernels.pyx, compiled with -mavx2 -mfma (setup.py
# adds those flags for every kernels/*_avx2.pyx on x86-64). cython_backend.py
# uses this build when cpu_has_avx2_fma() says the CPU can run it: the float32
# exp/tanh loops then run 8 lanes wide with fused multiply-adds.
include "_cython_kernels.pyx"
