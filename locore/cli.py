"""The ``locore`` command: a thin layer over the library API.

Each subcommand lives in the module that implements it; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
command runs, so ``locore --version`` and ``locore info`` never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from locore import __version__

# name -> (module implementing it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("locore.info", "show presets, installed backends and what is missing"),
    "demo": ("locore.runtime.cli_demo", "run the built-in real-photo re-ranking benchmark"),
    "build-plugins": (
        "locore.native",
        "build the SelectiveScan CPU/CUDA libraries and TensorRT plugin",
    ),
    "rerank": ("locore.runtime.cli_rerank", "re-rank shortlists with an exported model"),
    "train": ("locore.model.cli_train", "train a re-ranker on AMES/LOCORE feature files"),
    "export": ("locore.export.cli", "export a checkpoint to ONNX (portable or plugin flavor)"),
}


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
