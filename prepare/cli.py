"""The installed ``pcgnet`` command: every package's sub-commands, dispatched by :mod:`pcgnet.cli`.

It lives here, not in ``pcgnet``, because it names modules of every package (the package DAG,
tests/test_architecture.py): ``pcgnet`` may not import ``extractors`` or ``stream``, ``prepare`` may.
``python -m prepare.cli COMMAND`` runs any of them without the installed script.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pcgnet import cli as pcgnet_cli

# Sub-command modules, in the order `pcgnet --help` lists them.
COMMANDS: list[str] = [
    *pcgnet_cli.COMMANDS,  # train, evaluate, synth
    "prepare.meld",  # prepare-meld
    "prepare.extract",  # extract
    "extractors.cli",  # extractors
    "stream.report",  # report
]


LIGHT: dict[str, str] = {"report": "stream.report"}
"""Sub-commands that need no model: only their module is imported (``pcgnet report`` starts in well under
a second instead of importing torch, sklearn and every other command's dependencies first)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args if not a.startswith("-")), None)
    return pcgnet_cli.main(args, [LIGHT[command]] if command in LIGHT else COMMANDS)


if __name__ == "__main__":
    raise SystemExit(main())
