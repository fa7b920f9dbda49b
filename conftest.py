"""Make ``python -m pytest`` from the checkout test the installed fastrnn, as ``pytest`` does.

``python -m`` puts the working directory first on ``sys.path``, so the source
folder ``fastrnn/`` (which has no compiled extension after a regular
``pip install .``) would shadow the installed package and half the suite would
silently skip. This file is read before any test imports fastrnn: it drops the
checkout from ``sys.path`` (an editable install still finds the checkout through
its own import hook), makes the interpreters the tests start do the same, and
stops with one line when fastrnn is not installed.
"""
import importlib.util
import os
import sys

import pytest

_ROOT = os.path.dirname(os.path.abspath(__file__))

sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _ROOT]
# The interpreters that tests start (`python -c ...`, `python -m ...`) inherit this: they
# must not put the working directory (the checkout) first on sys.path either.
os.environ.setdefault("PYTHONSAFEPATH", "1")
if sys.version_info < (3, 11) and os.path.abspath(os.getcwd()) == _ROOT:
    # PYTHONSAFEPATH arrived in 3.11; before it, run from an empty folder instead, so the
    # working directory those interpreters put first holds no fastrnn. (Tests locate
    # their files from __file__, never from the working directory.)
    import atexit
    import shutil
    import tempfile

    _neutral = tempfile.mkdtemp(prefix="fastrnn-tests-")
    os.chdir(_neutral)
    atexit.register(shutil.rmtree, _neutral, True)
if "fastrnn" not in sys.modules and importlib.util.find_spec("fastrnn") is None:
    raise pytest.UsageError(
        'fastrnn is not installed in this environment: run `pip install ".[test]"` from the '
        "checkout first (the tests run against the installed package)")
