"""docs/cli.md is the --help text of every console script: each ``## `fastrnn-X ...` ``
section's code block must equal what that command prints, at the 96-column width the
page was generated with (paste the command's output over a block that differs)."""
import importlib
import os
import re

import pytest

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "docs",
                   "cli.md")
WIDTH = "96"
SCRIPTS = {"fastrnn-train": "fastrnn.cli.train", "fastrnn-eval": "fastrnn.cli.evaluate",
           "fastrnn-data": "fastrnn.cli.data", "fastrnn-bench": "fastrnn.cli.bench",
           "fastrnn-cola": "fastrnn.cli.cola"}


def sections():
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    return dict(re.findall(r"^## `([^`]+)`\n\n```\n(.*?)\n```", text, flags=re.S | re.M))


def test_every_script_has_a_section():
    assert set(SCRIPTS) <= set(sections())


@pytest.mark.parametrize("command", sorted(sections()))
def test_section_is_the_help_text(command, monkeypatch, capsys):
    prog, *subcommand = command.split()
    monkeypatch.setenv("COLUMNS", WIDTH)
    main = importlib.import_module(SCRIPTS[prog]).main
    with pytest.raises(SystemExit) as exit_info:
        main([*subcommand, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.rstrip("\n") == sections()[command], (
        f"docs/cli.md is out of date: paste `COLUMNS={WIDTH} {command} --help` over its "
        f"'{command}' section")
