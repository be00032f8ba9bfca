"""Output files: checked before the work, written atomically, committed together; the pickle
policy (pickles are loaded only with the caller's explicit permission).

The promise (README, "Errors and limits"):

- :func:`check_outputs` refuses, before any work, an output that cannot be written (folder not
  writable, read-only file system, a folder where a file is wanted, the disk already full) or
  that is the same file as an input or as another output.
- :func:`atomic_outputs` writes a *set* of files (e.g. ranks + scores): each into a temporary
  file beside its target, named ``.NAME.<pid>.<random>.tmp``; only when every one is complete
  and on disk (fsync) are they renamed onto their targets, all under an exclusive lock of the
  target folders, so concurrent writers commit one whole set after another and the files on
  disk always come from the same run. If the body raises (bad input, disk full, Ctrl-C) the
  temporary files are removed and the targets are left as they were. An interrupt that arrives
  during the renames is held until they are done.
- A process killed with SIGKILL (or a power loss) cannot clean up: its temporary files stay,
  the targets are each complete (old or new). The next write of the same target removes the
  stale temporaries (their writer's pid is gone and their lock is free), see
  :func:`remove_stale_temps`.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import pickle
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from locore.errors import OutputError, UsageError

try:  # POSIX only; elsewhere writes are still atomic per file, without locks
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "PICKLE_SUFFIXES",
    "PickleNotAllowedError",
    "atomic_outputs",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_pickle",
    "atomic_write_text",
    "check_outputs",
    "load_pickle",
    "locked_folder",
    "naming",
    "remove_stale_temps",
    "write_npy",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
TEMP_SUFFIX = ".tmp"


# ---- checks before the work -------------------------------------------------------------------
def check_outputs(
    outputs: Mapping[str, PathLike | None],
    inputs: Mapping[str, PathLike | None] | None = None,
    *,
    folders: Mapping[str, PathLike | None] | None = None,
) -> None:
    """Refuse unusable outputs before any work is done.

    Args:
        outputs: ``flag -> file`` to be written (``None`` entries are ignored), e.g.
            ``{"--output": args.output, "--scores-output": args.scores_output}``.
        inputs: ``flag -> file or folder`` that is read; each must exist.
        folders: ``flag -> folder`` to be written into (created if missing), e.g. a checkpoint.

    Raises:
        OutputError: an output is a folder where a file is wanted (or a file where a folder
            is), lies under a file, cannot be written (permission, read-only file system), or is
            the same file as an input or as another output; the message names both flags.
        FileNotFoundError: an input does not exist.
        OSError: ``ENOSPC`` when the output's folder is on a full disk.
    """
    files = _given(outputs)
    dirs = _given(folders or {})
    reads = _given(inputs or {})
    for flag, path in reads.items():
        if not path.exists():
            raise FileNotFoundError(f"{flag} {path}: no such file or folder")
    for flag, path in files.items():
        real = Path(os.path.realpath(path))  # a symlink is written through, to its target
        if real.is_dir():
            raise OutputError(
                f"{flag} {path} is a folder; give a file name (e.g. {path / 'out'}{path.suffix})"
            )
        if real.exists() and not real.is_file():
            raise OutputError(
                f"{flag} {path} is not a regular file (a device, pipe or socket); outputs are "
                "written to a temporary file and renamed onto their path, which would replace "
                "it. Give a file path"
            )
        _check_writable(flag, path, real.parent)
    for flag, path in dirs.items():
        if path.exists() and not path.is_dir():
            raise OutputError(f"{flag} {path} is a file; give a folder (new or existing)")
        _check_writable(flag, path, path)
    written = list(files.items()) + list(dirs.items())
    for i, (flag, path) in enumerate(written):
        for other, other_path in written[:i]:
            if _same_file(path, other_path):
                raise OutputError(
                    f"{other} and {flag} are the same file ({path}); give each output its own path"
                )
        for other, other_path in reads.items():
            if _same_file(path, other_path):
                raise OutputError(
                    f"{flag} is the same file as the input {other} ({other_path}); writing it "
                    "would destroy the input. Write the output elsewhere"
                )


def _given(paths: Mapping[str, PathLike | None]) -> dict[str, Path]:
    return {flag: Path(p) for flag, p in paths.items() if p is not None and str(p) != ""}


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _check_writable(flag: str, path: Path, folder: Path) -> None:
    """Create (and remove) a one-byte file in ``folder``, or in the nearest existing folder
    above it when it is still to be created."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{flag} {path}: {existing} is a file, so no folder can be made there")
    try:
        fd, name = tempfile.mkstemp(prefix=".locore-write-check.", suffix=TEMP_SUFFIX, dir=existing)
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(
                exc.errno, f"{flag} {path}: no space left on the disk of {existing} (disk full)"
            ) from exc
        raise OutputError(
            f"{flag} {path}: cannot write in {existing} ({exc.strerror or exc}); "
            "choose a folder you can write to"
        ) from exc


# ---- atomic writes ----------------------------------------------------------------------------
def _temp_glob(path: Path) -> str:
    return os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*{TEMP_SUFFIX}")


def _temp_pid(path: Path, temp: Path) -> int | None:
    """The writer's pid in ``.NAME.<pid>.<random>.tmp`` (None: not a name this module makes)."""
    middle = temp.name[len(path.name) + 2 : -len(TEMP_SUFFIX)]
    pid, _, rest = middle.partition(".")
    return int(pid) if pid.isdigit() and rest else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temps(path: PathLike) -> list[Path]:
    """Remove the temporary files of ``path`` left by writers that died (SIGKILL, power loss).

    A temporary file ``.NAME.<pid>.<random>.tmp`` is stale when no process ``pid`` runs and no
    process holds its lock (a live writer keeps an exclusive ``flock`` on it until it is
    renamed). Returns the files removed.
    """
    path = Path(path)
    removed = []
    for name in glob.glob(_temp_glob(path)):
        temp = Path(name)
        pid = _temp_pid(path, temp)
        if pid is None or pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            fd = os.open(temp, os.O_RDONLY)
        except OSError:
            continue
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            temp.unlink()
            removed.append(temp)
            log.debug("removed %s, a temporary file of a writer (pid %d) that died", temp, pid)
        except OSError:
            pass  # locked: its writer lives (another pid namespace); or already gone
        finally:
            os.close(fd)
    return removed


def _new_temp(path: Path) -> tuple[Path, int]:
    """A new, locked temporary file beside ``path``: (its path, an open descriptor)."""
    fd, name = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent
    )
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    return Path(name), fd


@contextlib.contextmanager
def locked_folder(folder: PathLike, shared: bool = False) -> Iterator[None]:
    """Hold a lock on ``folder`` (exclusive, or ``shared``) for the body.

    :func:`atomic_outputs` commits under the exclusive lock of each target's folder, so a
    reader that reads several outputs under the shared lock sees them all from the same run.
    On a file system without ``flock`` the body runs unlocked.
    """
    with _locked_folders([Path(folder)], shared=shared):
        yield


@contextlib.contextmanager
def _locked_folders(folders: list[Path], shared: bool = False) -> Iterator[None]:
    fds: list[int] = []
    try:
        for folder in sorted({f.resolve() for f in folders}):  # one order: no deadlock
            if fcntl is None:
                break
            try:
                fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except OSError as exc:
                log.debug("cannot lock %s (%s): committing without the lock", folder, exc)
                continue
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            except OSError as exc:  # e.g. ENOLCK, EOPNOTSUPP on some network file systems
                log.debug("cannot lock %s (%s): committing without the lock", folder, exc)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # releases the lock


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP during the body (main thread only); deliver them after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is None or signal.getsignal(sig) in (None, signal.SIG_IGN):
            continue  # not set from Python, or ignored (e.g. a background job's SIGINT)
        previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_outputs(paths: Mapping[str, PathLike | None]) -> Iterator[dict[str, Path]]:
    """Write a set of files that are committed together.

    Yields ``key -> temporary path`` for every non-None entry of ``paths`` (``key -> target``;
    a target that is a symlink is written through to the file it points to);
    the body writes each temporary file (by name: ``open(tmp, "wb")``). When the body returns,
    every temporary file is flushed to disk, then all are renamed onto their targets under an
    exclusive lock of the target folders (interrupts held until the renames are done), so a
    concurrent writer of the same targets commits its whole set before or after, never in
    between. If the body raises, nothing is renamed and the temporary files are removed.

    >>> with atomic_outputs({"ranks": "ranks.npy", "scores": "scores.npy"}) as tmp:
    ...     write_npy(tmp["ranks"], ranks)
    ...     write_npy(tmp["scores"], scores)
    """
    # a symlinked output is written through to its target (the link stays)
    targets = {key: Path(os.path.realpath(p)) for key, p in paths.items() if p is not None}
    if len(set(targets.values())) != len(targets):
        raise OutputError(
            f"two outputs of one set are the same file: {sorted(map(str, targets.values()))}"
        )
    temps: dict[str, Path] = {}
    fds: list[int] = []
    committed: set[str] = set()
    try:
        for key, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(target)
            temp, fd = _new_temp(target)
            temps[key] = temp
            fds.append(fd)
        yield dict(temps)
        for temp in temps.values():
            _fsync_file(temp)
        folders = [t.parent for t in targets.values()]
        with _locked_folders(folders), _signals_held():
            for key, target in targets.items():
                os.replace(temps[key], target)
                committed.add(key)
            for folder in {f.resolve() for f in folders}:
                _fsync_folder(folder)
    finally:
        for key, temp in temps.items():
            if key not in committed:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
        for fd in fds:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    If the body raises, the temporary file is removed and ``path`` is left as it was. One file
    of :func:`atomic_outputs`: same naming, locking and clean-up.
    """
    with atomic_outputs({"path": path}) as temps:
        yield temps["path"]


@contextlib.contextmanager
def naming(path: PathLike) -> Iterator[None]:
    """Give an ``OSError`` raised in the body without a file name (``write`` on a full disk:
    ``[Errno 28] No space left on device``) the name ``path``, so the message says which file."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc


def write_npy(path: PathLike, array: Any) -> None:
    """Write ``array`` to ``path`` in ``.npy`` format, every byte or an ``OSError``.

    ``np.save`` into an open file writes through C stdio and can lose a short write silently
    (a file-size limit, ``ulimit -f``, left a truncated file and no error); this serializes in
    memory and writes with Python's I/O, which raises on any short write, then checks the size.
    """
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    data = buffer.getbuffer()
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        size = os.fstat(handle.fileno()).st_size
    if size != len(data):  # pragma: no cover - Python's write raises first
        raise OSError(errno.EIO, f"wrote {size} of {len(data)} bytes", str(path))


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# ---- pickles ----------------------------------------------------------------------------------
PICKLE_SUFFIXES = (".pkl", ".pickle")


class PickleNotAllowedError(UsageError):
    """A pickle was about to be loaded without the caller's explicit permission (a usage
    error: the CLI exits 2 and names ``--allow-pickle``)."""


def load_pickle(path: PathLike, allow_pickle: bool, what: str) -> Any:
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


def atomic_write_pickle(path: PathLike, obj: Any) -> None:
    """Pickle ``obj`` to ``path`` (highest protocol), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
