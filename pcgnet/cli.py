"""The ``pcgnet`` command's dispatcher: one sub-command per module name, each exposing ``register(subparsers)``.

``COMMANDS`` here lists the model's own commands (``python -m pcgnet.cli train|evaluate|synth``); the installed
``pcgnet`` command (:mod:`prepare.cli`) passes the full list, adding dataset preparation, the extractor listing
and ``report`` from the packages that may import this one (the package DAG, tests/test_architecture.py).
Modules are imported when the parser is built. A module that does not exist (yet) is skipped, so one
part of the project can ship without another; a module that exists but fails to import is reported on
stderr with its error, and tests/pcgnet/test_cli.py imports every existing one so such a break fails CI.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

# The model's sub-command modules, in the order `pcgnet --help` lists them.
COMMANDS: list[str] = [
    "pcgnet.train",
    "pcgnet.evaluate",
    "pcgnet.synth",
]


class UsageError(ValueError):
    """Contradictory or invalid command-line input; printed as one line, exit status 2."""


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package itself is missing
        return False


def load_command_modules(names: Sequence[str] = COMMANDS) -> tuple[list, list[tuple[str, BaseException]]]:
    """Import the command modules; returns (modules, [(name, error) for those that exist but are broken])."""
    mods, broken = [], []
    for name in names:
        if not _module_exists(name):
            logging.getLogger(__name__).debug("command module %s not installed; skipped", name)
            continue
        try:
            mods.append(importlib.import_module(name))
        except Exception as e:  # noqa: BLE001 - reported loudly below, other commands keep working
            broken.append((name, e))
    return mods, broken


def build_parser(names: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pcgnet",
        description="PCGNet: train, evaluate and prepare data for multimodal emotion recognition with "
                    "emotion-shift detection in conversations.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods, broken = load_command_modules(names)
    for name, err in broken:
        print(f"pcgnet: warning: command module {name} failed to import: {type(err).__name__}: {err}",
              file=sys.stderr)
    for mod in mods:
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None, names: Sequence[str] = COMMANDS) -> int:
    parser = build_parser(names)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from pcgnet.checkpoint import CheckpointError
    from pcgnet.data import DataError

    try:
        rc = args.func(args)
    except (DataError, CheckpointError, UsageError) as e:
        # Bad input is the user's to fix: one line naming the file/flag and the problem, no traceback.
        print(f"pcgnet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pcgnet: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    # Re-import so the error classes are the ones the command modules raise (not __main__'s copies).
    from pcgnet.cli import main as _main

    raise SystemExit(_main())
