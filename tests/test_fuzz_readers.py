"""Random byte damage over every file reader (issue 9): a few hundred damaged files, fixed seeds.

Each case flips bits, zeroes a run of bytes, or truncates a valid file, then reads it. The
reader must either read it (the damage hit bytes that do not matter, or produced other valid
values) or raise a known error: the library's ValueError subclasses (FormatError,
FeatureError, CheckpointError, ConfigError, CodebookError, UsageError...), or an OSError whose
message names the file. Anything else (KeyError from h5py, a raw numpy ValueError, SystemError,
a segfault) fails, and so does a case that runs longer than CASE_SECONDS (a SIGALRM for Python
code; faulthandler ends the process, with a traceback, if C code hangs past HARD_SECONDS).
"""

from __future__ import annotations

import faulthandler
import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx_toy import random_rows, toy_config

from locore.checkpoint_format import CheckpointError, read_checkpoint_config
from locore.config import ConfigError
from locore.errors import UsageError
from locore.runtime.ames import FeatureFile, FormatError, write_features
from locore.runtime.global_descriptors import CodebookError, read_global_descriptors
from locore.runtime.images import load_image
from locore.runtime.local_features import FeatureError, LocalFeatures
from locore.runtime.shortlist import read_shortlist, write_shortlist

CASE_SECONDS = 5
HARD_SECONDS = 60
LIBRARY_ERRORS = (
    FormatError,
    FeatureError,
    CheckpointError,
    ConfigError,
    CodebookError,
    UsageError,
)
CONFIG = toy_config()


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"a case ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    faulthandler.dump_traceback_later(HARD_SECONDS, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def damaged(data: bytes, rng: np.random.Generator, protect: int = 0) -> bytes:
    """``data`` with one kind of damage: bit flips, a zeroed run, or a truncation (bytes before
    ``protect`` are left alone, to get past a magic number now and then)."""
    buf = bytearray(data)
    kind = rng.integers(3)
    if kind == 0:
        for _ in range(int(rng.integers(1, 9))):
            pos = int(rng.integers(protect, len(buf)))
            buf[pos] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        start = int(rng.integers(protect, len(buf)))
        buf[start : start + int(rng.integers(1, 65))] = b"\x00" * min(64, len(buf) - start)
        del buf[len(data) :]
    else:
        del buf[int(rng.integers(0, len(buf))) :]
    return bytes(buf)


def fuzz(
    tmp_path: Path,
    name: str,
    clean: bytes,
    read: Callable[[Path], object],
    cases: int,
    seed: int,
    allowed: tuple[type[BaseException], ...] = LIBRARY_ERRORS,
    protect: int = 0,
) -> dict[str, int]:
    """Read ``cases`` damaged copies of ``clean``; return counts of the outcomes."""
    rng = np.random.default_rng(seed)
    outcomes = {"read": 0, "error": 0}
    path = tmp_path / name
    path.write_bytes(clean)
    read(path)  # the undamaged file reads (and lazy imports are done before the clock runs)
    for case in range(cases):
        path.write_bytes(damaged(clean, rng, protect if case % 2 else 0))
        try:
            with time_limit(CASE_SECONDS):
                read(path)
        except allowed:
            outcomes["error"] += 1
        except OSError as exc:
            assert path.name in str(exc), f"case {case}: OSError without the file name: {exc!r}"
            outcomes["error"] += 1
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{name}, case {case} (seed {seed}): {type(exc).__name__}: {exc}")
        else:
            outcomes["read"] += 1
    return outcomes


# ---- the readers ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clean_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    import cv2

    folder = tmp_path_factory.mktemp("clean")
    rng = np.random.default_rng(0)
    write_features(folder / "f.h5", LocalFeatures(**random_rows(rng, 12, 6, CONFIG)))
    (folder / "g.f32").write_bytes(rng.standard_normal((10, 8)).astype(np.float32).tobytes())
    np.save(folder / "g.npy", rng.standard_normal((10, 8)).astype(np.float32))
    sims = np.sort(rng.random((4, 7)))[:, ::-1].astype(np.float32)
    write_shortlist(folder / "s.npy", sims, rng.integers(0, 50, size=(4, 7)))
    config = {
        "format": "locore-edge-checkpoint",
        "format_version": 1,
        "config": toy_config().to_dict(),
        "extra": {"fusion": {"alpha": 0.25, "temperature": 0.3}},
    }
    photo = cv2.resize(
        rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (96, 72), interpolation=cv2.INTER_CUBIC
    )
    return {
        "f.h5": (folder / "f.h5").read_bytes(),
        "g.f32": (folder / "g.f32").read_bytes(),
        "g.npy": (folder / "g.npy").read_bytes(),
        "s.npy": (folder / "s.npy").read_bytes(),
        "config.json": json.dumps(config, indent=2).encode(),
        "p.png": cv2.imencode(".png", photo)[1].tobytes(),
        "p.jpg": cv2.imencode(".jpg", photo)[1].tobytes(),
    }


def _read_features(path: Path) -> None:
    with FeatureFile(path) as ff:
        ff.read_all()
        ff.read([0, len(ff) - 1], num_desc=3)


def test_fuzz_hdf5_features(tmp_path: Path, clean_files: dict[str, bytes]) -> None:
    out = fuzz(tmp_path, "f.h5", clean_files["f.h5"], _read_features, 160, seed=1, protect=8)
    assert out["error"] > 0 and out["read"] > 0, out  # both kinds of outcome happen


def test_fuzz_global_descriptors(tmp_path: Path, clean_files: dict[str, bytes]) -> None:
    raw = fuzz(
        tmp_path, "g.f32", clean_files["g.f32"], lambda p: read_global_descriptors(p, dim=8), 50, 2
    )
    npy = fuzz(tmp_path, "g.npy", clean_files["g.npy"], read_global_descriptors, 60, 3, protect=6)
    assert raw["error"] > 0 and npy["error"] > 0


def test_fuzz_checkpoint_config(tmp_path: Path, clean_files: dict[str, bytes]) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()

    def read(path: Path) -> None:
        (folder / "config.json").write_bytes(path.read_bytes())
        read_checkpoint_config(folder)

    out = fuzz(tmp_path, "config.json", clean_files["config.json"], read, 80, 4)
    assert out["error"] > 0


def test_fuzz_shortlist_npy(tmp_path: Path, clean_files: dict[str, bytes]) -> None:
    # runtime.shortlist is another module's reader; any ValueError (with a message) is accepted
    out = fuzz(tmp_path, "s.npy", clean_files["s.npy"], read_shortlist, 60, 5, (ValueError,), 6)
    assert out["error"] > 0


@pytest.mark.parametrize("name", ["p.png", "p.jpg"])
def test_fuzz_images(tmp_path: Path, clean_files: dict[str, bytes], name: str) -> None:
    def read(path: Path) -> None:
        image = load_image(path)
        assert image.dtype == np.uint8 and image.ndim == 3

    out = fuzz(tmp_path, name, clean_files[name], read, 60, 6 + len(name), protect=4)
    assert out["error"] > 0


def test_fuzz_safetensors_checkpoint(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from locore.config import LocoreConfig
    from locore.model import LocoreReranker, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    config = LocoreConfig.preset("tiny", desc_dim=8, num_desc=6, num_scales=4, n_layers=1)
    folder = save_checkpoint(LocoreReranker(config), tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    clean = weights.read_bytes()

    def read(path: Path) -> None:
        weights.write_bytes(path.read_bytes())
        load_checkpoint(folder)

    out = fuzz(tmp_path, "model.safetensors", clean, read, 40, 7, protect=8)
    assert out["error"] > 0
