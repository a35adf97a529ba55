"""The installed ``pcgnet`` command (prepare.cli): every package's sub-commands, in one parser."""

from __future__ import annotations

import importlib
import subprocess
import sys

from pcgnet import cli as pcgnet_cli
from prepare import cli


def test_every_command_module_imports_and_registers() -> None:
    mods, broken = pcgnet_cli.load_command_modules(cli.COMMANDS)
    assert broken == [], broken
    assert [m.__name__ for m in mods] == cli.COMMANDS
    for name in cli.COMMANDS:
        assert hasattr(importlib.import_module(name), "register"), name
    sub = next(a for a in pcgnet_cli.build_parser(cli.COMMANDS)._actions if a.dest == "command")
    assert list(sub.choices) == ["train", "evaluate", "synth", "prepare-meld", "extract", "extractors", "report"]
    # the model package's own dispatcher lists only the model's commands
    sub = next(a for a in pcgnet_cli.build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == ["train", "evaluate", "synth"]


def test_python_m_prepare_cli(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "prepare.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "prepare-meld" in r.stdout and "report" in r.stdout
    assert cli.main([]) == 2  # no command: help, status 2 (as before)
