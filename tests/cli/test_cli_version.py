"""Every console script answers --version with 'fastrnn-X <version>' from fastrnn.__version__."""
import importlib

import pytest

import fastrnn

SCRIPTS = {"fastrnn-train": "fastrnn.cli.train", "fastrnn-eval": "fastrnn.cli.evaluate",
           "fastrnn-data": "fastrnn.cli.data", "fastrnn-bench": "fastrnn.cli.bench",
           "fastrnn-cola": "fastrnn.cli.cola"}


@pytest.mark.parametrize("prog", sorted(SCRIPTS))
def test_version_prints_the_program_and_the_package_version(prog, capsys):
    main = importlib.import_module(SCRIPTS[prog]).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"{prog} {fastrnn.__version__}\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--version" in capsys.readouterr().out
