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


@pytest.fixture
def write_cola(tmp_path):
    """A function that writes a CoLA folder (GLUE layout: train.tsv and dev.tsv)
    from lists of (sentence, label) pairs and returns its path. Every record has
    source ``src`` and mark ``*`` when unacceptable, as the real files do."""
    def write(train, dev):
        folder = tmp_path / "cola"
        folder.mkdir()
        for name, pairs in (("train.tsv", train), ("dev.tsv", dev)):
            (folder / name).write_text(
                "".join(f"src\t{int(label)}\t{'' if label else '*'}\t{sentence}\n"
                        for sentence, label in pairs), encoding="utf-8")
        return folder
    return write
