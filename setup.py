"""Build script for the compiled kernels.

Every ``kernels/NAME.pyx`` becomes the extension module ``fastrnn.backends.NAME``,
compiled with ``-O3 -fno-trapping-math -fopenmp``. Package metadata lives in
pyproject.toml.

``-fno-trapping-math`` only tells the compiler that no code watches the
floating-point exception flags; results are unchanged. Without it gcc will not
turn the branch-free selects of the float32 exp/tanh into SIMD code.

``kernels/*_avx2.pyx`` are x86-64 builds of the same kernels with ``-mavx2
-mfma`` added; they are skipped on other machines, and the backend only imports
one after asking the CPU (``cpu_has_avx2_fma``), so the package stays portable.

The kernels are required by default: without a C compiler with OpenMP the build
stops with a message saying what to install. ``FASTRNN_NO_EXTENSIONS=1`` installs
without them (the ``cython`` backend is then not listed; numpy and numba remain).
"""
import glob
import os
import platform
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

X86_64 = platform.machine().lower() in ("x86_64", "amd64")
AVX2_FLAGS = ["-mavx2", "-mfma"]


NO_EXTENSIONS_ENV = "FASTRNN_NO_EXTENSIONS"
COMPILER_HINT = (
    "fastrnn: compiling the Cython/OpenMP kernels (kernels/*.pyx) failed. They need a C "
    "compiler with OpenMP and the Python headers: on Debian/Ubuntu `apt-get install gcc "
    "python3-dev`, on Fedora `dnf install gcc python3-devel`, on macOS Xcode's clang plus "
    "`brew install libomp`. To install without them (no 'cython' backend; 'numpy' and "
    "'numba' still work), set FASTRNN_NO_EXTENSIONS=1."
)


class BuildKernels(build_ext):
    """build_ext whose failure says what to install instead of a bare compiler error."""

    def run(self):
        try:
            super().run()
        except Exception as err:  # CompileError, LinkError, a missing compiler, ...
            raise SystemExit(f"{COMPILER_HINT}\n(underlying error: {err})") from err

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as err:
            raise SystemExit(f"{COMPILER_HINT}\n(underlying error: {err})") from err


def cython_extensions():
    if os.environ.get(NO_EXTENSIONS_ENV, "").strip() not in ("", "0"):
        print(f"fastrnn: {NO_EXTENSIONS_ENV} is set: installing without the compiled kernels "
              "(no 'cython' backend)", file=sys.stderr)
        return []
    sources = sorted(glob.glob(os.path.join("kernels", "*.pyx")))
    if not X86_64:
        sources = [src for src in sources if not src.endswith("_avx2.pyx")]
    if not sources:
        return []
    import numpy
    from Cython.Build import cythonize
    from setuptools import Extension

    # -fno-math-errno: the kernels never read errno, and keeping it stops gcc from
    # vectorising sqrt, which fused Adam's update is bound by.
    optimise = ["-O3", "-fno-trapping-math", "-fno-math-errno"]
    if sys.platform == "darwin":  # Apple clang needs libomp; keep flags simple
        compile_args, link_args = optimise + ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    else:
        compile_args, link_args = optimise + ["-fopenmp"], ["-fopenmp"]
    extensions = [
        Extension(
            "fastrnn.backends." + os.path.splitext(os.path.basename(src))[0],
            [src],
            include_dirs=[numpy.get_include()],
            extra_compile_args=compile_args + (AVX2_FLAGS if src.endswith("_avx2.pyx") else []),
            extra_link_args=link_args,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
        for src in sources
    ]
    return cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


setup(ext_modules=cython_extensions(), cmdclass={"build_ext": BuildKernels})
