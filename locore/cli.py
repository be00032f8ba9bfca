"""The ``locore`` command: parses the command line and dispatches to :mod:`locore.commands`.

Known errors (bad input, missing file, missing package) print one line and exit 2;
``--verbose`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from locore import __version__
from locore.commands import COMMANDS

__all__ = ["COMMANDS", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    full = build_parser(argv)
    args = full.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "command", None):
        full.print_help()
        return 0
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        if args.verbose:
            raise
        print(f"locore {args.command}: error: {exc}", file=sys.stderr)
        return 2


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser, with arguments of the subcommand named in ``argv`` (if any)."""
    parser = argparse.ArgumentParser(
        prog="locore",
        description="LOCORE-style list-wise image re-ranking for NVIDIA edge and desktop GPUs.",
    )
    parser.add_argument("--version", action="version", version=f"locore-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module)
        if name in argv:
            importlib.import_module(module).add_arguments(cmd)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
