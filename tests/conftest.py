import numpy as np
import pytest

import fastrnn

BACKENDS = fastrnn.available_backends()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Run the test once per available backend, with that backend active."""
    with fastrnn.use_backend(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(231)
