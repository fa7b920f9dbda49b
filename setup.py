"""Build script for the compiled kernels.

Every ``kernels/NAME.pyx`` becomes the extension module ``fastrnn.backends.NAME``,
compiled with ``-O3 -fopenmp``. Package metadata lives in pyproject.toml.
"""
import glob
import os
import sys

from setuptools import setup


def cython_extensions():
    sources = sorted(glob.glob(os.path.join("kernels", "*.pyx")))
    if not sources:
        return []
    import numpy
    from Cython.Build import cythonize
    from setuptools import Extension

    if sys.platform == "darwin":  # Apple clang needs libomp; keep flags simple
        compile_args, link_args = ["-O3", "-Xpreprocessor", "-fopenmp"], ["-lomp"]
    else:
        compile_args, link_args = ["-O3", "-fopenmp"], ["-fopenmp"]
    extensions = [
        Extension(
            "fastrnn.backends." + os.path.splitext(os.path.basename(src))[0],
            [src],
            include_dirs=[numpy.get_include()],
            extra_compile_args=compile_args,
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


setup(ext_modules=cython_extensions())
