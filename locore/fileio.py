"""Atomic file writes (a reader never sees a half-written file, a failure leaves none behind)
and the pickle policy: pickles are loaded only with the caller's explicit permission."""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    If the body raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# ---- pickles ----------------------------------------------------------------------------------
PICKLE_SUFFIXES = (".pkl", ".pickle")


class PickleNotAllowedError(ValueError):
    """A pickle was about to be loaded without the caller's explicit permission."""


def load_pickle(path: str | Path, allow_pickle: bool, what: str) -> Any:
    """The object pickled in ``path`` (``what`` names it in errors), if ``allow_pickle``.

    Loading a pickle can execute arbitrary code, so without ``allow_pickle`` this raises
    :class:`PickleNotAllowedError` (the CLI's ``--allow-pickle`` sets it).
    """
    if not allow_pickle:
        raise PickleNotAllowedError(
            f"{path} is a pickle ({what}); loading a pickle can execute arbitrary code, so it is "
            "refused by default. If you trust the file, pass allow_pickle=True (CLI: "
            "--allow-pickle), or convert it once to .npy"
        )
    with open(path, "rb") as handle:
        return pickle.load(handle)


def atomic_write_pickle(path: str | Path, obj: Any) -> None:
    """Pickle ``obj`` to ``path`` (highest protocol), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
