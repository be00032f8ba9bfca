"""The ``locore`` command: parses the command line and dispatches to :mod:`locore.commands`.

One error path for every command (README, "Errors and limits"). Exit codes:

- 0: success;
- 1: a known error at run time: bad file content (``FormatError`` and the other ``ValueError``
  classes of the library), a missing or unreadable file, permission, disk full, a missing
  package, an ONNX Runtime / OpenCV / HDF5 failure, out of memory;
- 2: a usage error: argparse's, or :class:`locore.errors.UsageError` (a bad flag value, an
  unusable output path: :class:`~locore.errors.OutputError`);
- 70: an unexpected exception, i.e. a bug: the traceback is printed, with a request to report it;
- 130: interrupted (Ctrl-C), 143: terminated (SIGTERM); outputs are left as they were;
- 141: stdout closed by its reader (``locore info | head``), silently.

Known errors print one line, ``locore COMMAND: error: MESSAGE``, and no traceback unless
``--debug`` is given (``--debug`` re-raises). ``-v/--verbose`` logs debug messages.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from locore import __version__
from locore.commands import COMMANDS
from locore.errors import UsageError

__all__ = ["COMMANDS", "EXIT_CODES", "Terminated", "build_parser", "describe_error", "main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 70, 130, 143
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell pipeline reports it
EXIT_CODES = {
    "ok": EXIT_OK,
    "error": EXIT_ERROR,
    "usage": EXIT_USAGE,
    "bug": EXIT_BUG,
    "interrupted": EXIT_INTERRUPTED,
    "terminated": EXIT_TERMINATED,
    "broken pipe": EXIT_BROKEN_PIPE,
}
ISSUES_URL = "https://github.com/locore-edge/locore-edge/issues"

# errno -> what to tell the user (the file name is added)
_ERRNO_TEXT = {
    errno.ENOSPC: "no space left on the device (disk full)",
    errno.EDQUOT: "disk quota exceeded (disk full for this user)",
    errno.EFBIG: "file too large (the file-size limit, `ulimit -f`, was reached)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "not a folder",
    errno.EIO: "input/output error (a failing disk or a network file system)",
}
# module of a third-party exception class -> how to name it in the one line
_FOREIGN = {
    "onnxruntime": "ONNX Runtime",
    "cv2": "OpenCV",
    "safetensors": "safetensors (checkpoint weights)",
    "google.protobuf": "not a valid protobuf/ONNX file",
    "onnx": "ONNX",
    "h5py": "HDF5",
    "tensorrt": "TensorRT",
}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that clean-up (temporary files) runs."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    prog = "locore" + next((f" {a}" for a in argv if a in COMMANDS), "")
    try:
        full = build_parser(argv)  # imports the command's module: it may miss a package
        args = full.parse_args(argv)
        debug, prog = args.debug, f"locore {args.command}" if args.command else "locore"
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
        )
        if not args.command:
            full.print_help()
            return EXIT_OK
        with _sigterm_raises():
            module = importlib.import_module(args._module)
            return int(module.run(args) or 0)
    except BaseException as exc:  # noqa: BLE001 - the one place every error is mapped
        if isinstance(exc, SystemExit | GeneratorExit) or debug:
            raise
        return _report(exc, prog)


def _report(exc: BaseException, prog: str) -> int:
    """Print what ``exc`` means for the user; the exit code."""
    if isinstance(exc, BrokenPipeError):  # `locore info | head`: the reader left, not an error
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    described = describe_error(exc)
    if described is None:  # a bug: say so, with the traceback
        traceback.print_exc()
        print(
            f"{prog}: internal error: {type(exc).__name__}: {exc}\n"
            f"This is a bug in locore-edge {__version__}; please report it with the "
            f"traceback above at {ISSUES_URL}",
            file=sys.stderr,
        )
        return EXIT_BUG
    code, message = described
    print(f"{prog}: {message}", file=sys.stderr)
    return code


def describe_error(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) of a known error; None for an unexpected one (a bug)."""
    if isinstance(exc, Terminated):
        return EXIT_TERMINATED, "terminated; outputs left as they were"
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted; outputs left as they were"
    if isinstance(exc, UsageError):
        return EXIT_USAGE, f"error: {_one_line(exc)}"
    if isinstance(exc, OSError):
        foreign = _foreign_name(exc)  # h5py raises plain OSErrors
        prefix = f"{foreign}: " if foreign and exc.errno is None else ""
        return EXIT_ERROR, f"error: {prefix}{_os_error_text(exc)}"
    if isinstance(exc, MemoryError):
        detail = f" ({_one_line(exc)})" if str(exc) else ""
        return EXIT_ERROR, (
            f"error: out of memory{detail}; use smaller inputs or a shorter --window/--topk"
        )
    if isinstance(exc, ImportError):
        text = _one_line(exc)
        if type(exc) is ModuleNotFoundError:
            text += " (`locore info` lists what is missing and the extra that brings it)"
        return EXIT_ERROR, f"error: {text}"
    foreign = _foreign_name(exc)
    if foreign is not None:
        return EXIT_ERROR, f"error: {foreign}: {_one_line(exc)}"
    if isinstance(exc, RecursionError | AssertionError):
        return None
    if isinstance(exc, NotImplementedError):  # a stated limit (e.g. a backend not built yet)
        return EXIT_ERROR, f"error: not implemented: {_one_line(exc) or type(exc).__name__}"
    if isinstance(exc, ValueError | RuntimeError | EOFError):
        return EXIT_ERROR, f"error: {_one_line(exc) or type(exc).__name__}"
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        return EXIT_ERROR, f"error: not a readable pickle ({_one_line(exc)})"
    return None


def _os_error_text(exc: OSError) -> str:
    """``FILE: what happened``: strerror (or our words for it) and the file name; a message of
    our own (an OSError built from one string) as it is."""
    if exc.errno is None or exc.strerror is None:
        text = _one_line(exc)
        if exc.errno in _ERRNO_TEXT and _ERRNO_TEXT[exc.errno] not in text:
            text += f" ({_ERRNO_TEXT[exc.errno]})"
        return text or type(exc).__name__
    standard = exc.strerror == os.strerror(exc.errno)
    what = _ERRNO_TEXT.get(exc.errno, exc.strerror) if standard else exc.strerror
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    if not names:  # the system's words alone, or a message of our own with an errno
        return what
    return f"{' -> '.join(names)}: {what}"


def _foreign_name(exc: BaseException) -> str | None:
    """The library that defines ``exc``'s class, or (a builtin class) that raised it last."""
    modules = [type(exc).__module__ or ""]
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        modules.append(str(tb.tb_frame.f_globals.get("__name__", "")))
    for module in modules:
        for prefix, name in _FOREIGN.items():
            if module == prefix or module.startswith(prefix + "."):
                return name
    return None


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (ONNX Runtime's ``[ONNXRuntimeError] : 2 :
    INVALID_ARGUMENT :`` prefix removed)."""
    text = str(exc).strip()
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(" : ", 3)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while the command runs: temporary files get removed."""

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser, with arguments of the subcommand named in ``argv`` (if any)."""
    parser = argparse.ArgumentParser(
        prog="locore",
        description="LOCORE-style list-wise image re-ranking for NVIDIA edge and desktop GPUs.",
        epilog="exit codes: 0 ok, 1 error, 2 usage error, 70 internal error (a bug), "
        "130 interrupted, 143 terminated",
    )
    parser.add_argument("--version", action="version", version=f"locore-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error instead of one line"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module)
        # the global switches are accepted after the command too (SUPPRESS: no default there
        # that would hide the value given before the command)
        cmd.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
        if name in argv:
            importlib.import_module(module).add_arguments(cmd)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
