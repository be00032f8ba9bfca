"""The C++ runtime's AMES HDF5 reader (runtime/cpp, locore::Hdf5FeatureFile) against Python's.

Python writes a feature file (:func:`locore.runtime.ames.write_features`, through h5py); the C++
test binary built by CMake (``locore_runtime_hdf5_tests --dump``) prints what the C++ reader gets
from it, and that is compared with :class:`locore.runtime.ames.FeatureFile` (another reader, in
another language, of the same file). The binary's own unit tests (files written with the HDF5 C
API, every refusal) run as well. Skipped, saying why, without cmake, h5py or the HDF5 C library
(Debian/Ubuntu: ``apt-get install libhdf5-dev``).

The binaries are built incrementally in ``build/runtime-cpp`` (the folder .ci/native builds and
tests/test_cpp_runtime.py uses; configured here when absent), or ``$LOCORE_RUNTIME_TEST_BUILD``;
-j from ``LOCORE_CI_JOBS`` (default 2).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="the feature file is written with h5py")

from locore.runtime.ames import FeatureFile, FormatError, write_features  # noqa: E402
from locore.runtime.local_features import LocalFeatures  # noqa: E402
from tests.cpp_build import build_runtime_targets, built_binary  # noqa: E402


@pytest.fixture(scope="module")
def hdf5_binary() -> Path:
    return built_binary(
        build_runtime_targets("locore_runtime_hdf5_tests"), "locore_runtime_hdf5_tests"
    )


def _features(n: int, t: int, d: int, seed: int = 0) -> LocalFeatures:
    """A batch [n, t, d] with padding at the end of each image (random counts, image 1 none
    valid) and descriptors that are not round numbers."""
    rng = np.random.default_rng(seed)
    valid = rng.integers(1, t + 1, size=n)
    valid[1] = 0
    mask = np.arange(t)[None, :] < valid[:, None]
    return LocalFeatures(
        descriptors=rng.standard_normal((n, t, d)).astype(np.float32),
        scales=rng.integers(0, 7, size=(n, t)).astype(np.int64),
        xy=rng.random((n, t, 2), dtype=np.float32),
        weights=np.sort(rng.random((n, t), dtype=np.float32), axis=-1)[:, ::-1].copy(),
        mask=mask,
    )


def _dump(binary: Path, path: Path, rows: int | None = None) -> dict:
    cmd = [str(binary), "--dump", str(path)] + ([str(rows)] if rows is not None else [])
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cpp_unit_tests(hdf5_binary: Path, tmp_path: Path) -> None:
    result = subprocess.run([str(hdf5_binary)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize("rows", [None, 5, 1, 40])
def test_cpp_reads_what_python_wrote(hdf5_binary: Path, tmp_path: Path, rows: int | None) -> None:
    path = tmp_path / "db.h5"
    write_features(path, _features(6, 9, 24))
    got = _dump(hdf5_binary, path, rows)
    with FeatureFile(path) as db:
        assert (got["num_images"], got["num_rows"], got["desc_dim"]) == (6, 9, 24)
        for i, image in enumerate(got["images"]):
            want = db.read(i, num_desc=rows)
            t = want.descriptors.shape[0]
            assert image["num_rows"] == t == min(rows or 9, 9)
            np.testing.assert_array_equal(
                np.asarray(image["descriptors"], np.float32).reshape(t, 24), want.descriptors
            )
            np.testing.assert_array_equal(image["scales"], want.scales)
            np.testing.assert_array_equal(np.asarray(image["mask"], bool), want.mask)
            np.testing.assert_array_equal(
                np.asarray(image["xy"], np.float32).reshape(t, 2), want.xy
            )
            np.testing.assert_array_equal(np.asarray(image["weights"], np.float32), want.weights)
    assert sum(image["mask"].count(1) for image in got["images"]) > 0
    assert got["images"][1]["mask"] == [0] * min(rows or 9, 9)  # an image with no valid row


def test_cpp_hand_written_rows(hdf5_binary: Path, tmp_path: Path) -> None:
    """Rows written with h5py directly, values chosen by hand: column 3 is inverted into the
    mask, scale ids come back as integers, padding rows keep what they hold."""
    rows = np.array(
        [[[0.5, 0.25, 2.0, 0.0, 0.9, 1.0, -2.0], [0.0, 1.0, 3.0, 1.0, 0.0, 7.0, 8.0]]],
        dtype=np.float32,
    )
    path = tmp_path / "hand.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", data=rows)
    image = _dump(hdf5_binary, path)["images"][0]
    assert image["mask"] == [1, 0]
    assert image["scales"] == [2, 3]
    assert image["xy"] == [0.5, 0.25, 0.0, 1.0]
    assert image["weights"] == [pytest.approx(0.9, abs=1e-7), 0.0]
    assert image["descriptors"] == [1.0, -2.0, 7.0, 8.0]


def test_cpp_and_python_refuse_the_same_files(hdf5_binary: Path, tmp_path: Path) -> None:
    cases = {
        "no_dataset.h5": ("desc", np.zeros((2, 3, 8), np.float32), "has no dataset 'features'"),
        "rank2.h5": ("features", np.zeros((6, 8), np.float32), "must be [N, T, 5 + D]"),
        "ints.h5": ("features", np.zeros((2, 3, 8), np.int32), "must hold float32 rows"),
    }
    for name, (dataset, data, message) in cases.items():
        path = tmp_path / name
        with h5py.File(path, "w") as handle:
            handle.create_dataset(dataset, data=data)
        result = subprocess.run(
            [str(hdf5_binary), "--dump", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 1 and message in result.stderr, (name, result.stderr)
        with pytest.raises(FormatError, match=re.escape(message)):
            FeatureFile(path)
    bad = _features(2, 4, 8).descriptors  # any rows; then a mask value of 0.5 in image 1, row 2
    rows = np.zeros((2, 4, 13), np.float32)
    rows[..., 5:] = bad
    rows[1, 2, 3] = 0.5
    path = tmp_path / "mask.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", data=rows)
    result = subprocess.run([str(hdf5_binary), "--dump", str(path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "image 1" in result.stderr and "row 2" in result.stderr and "mask" in result.stderr
    with FeatureFile(path) as db, pytest.raises(FormatError, match="mask"):
        db.read(1)
