"""The error vocabulary shared by the library and the CLI (stdlib only).

The library raises these (or the ``ValueError`` / ``OSError`` subclasses of each module, e.g.
``FormatError`` for a malformed file) with a message that says what was expected, what was
received and what to do. The CLI (:func:`locore.cli.describe_error`) maps them to exit codes:
:class:`UsageError` (a bad argument value) exits 2, like argparse's own errors; every other known
error (bad file content, missing file, permission, disk full, a missing package) exits 1; an
interrupt exits 130 (SIGTERM 143); an unexpected exception is a bug and exits 70 with its
traceback.
"""

from __future__ import annotations

__all__ = ["OutputError", "UsageError"]


class UsageError(ValueError):
    """An argument value the caller gave is invalid (CLI: exit 2)."""


class OutputError(UsageError):
    """An output path cannot be used: equal to an input or to another output, not writable."""
