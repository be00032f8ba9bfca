"""Calibration sets (locore.calibration.sets): drawn from AMES-layout files, reproducible, with
provenance, written atomically, and refused with a clear message when they do not fit a model."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from locore.calibration import CalibrationSet, CalibrationSetError, build_calibration_set
from locore.config import LocoreConfig, graph_io
from locore.errors import UsageError
from locore.runtime.ames import write_features
from locore.runtime.local_features import LocalFeatures
from locore.runtime.shortlist import write_shortlist

ND, DL, NQ, NDB, K = 6, 8, 5, 23, 15


def _features(rng: np.random.Generator, n: int, empty: tuple[int, ...] = ()) -> LocalFeatures:
    mask = rng.random((n, ND)) > 0.2
    mask[:, 0] = True
    for i in empty:
        mask[i] = False
    return LocalFeatures(
        descriptors=rng.standard_normal((n, ND, DL)).astype(np.float32),
        scales=rng.integers(0, 4, (n, ND)).astype(np.float32),
        xy=rng.random((n, ND, 2)).astype(np.float32),
        weights=rng.random((n, ND)).astype(np.float32),
        mask=mask,
    )


@pytest.fixture(scope="module")
def ames_files(tmp_path_factory):
    """Query/db feature files (query 2 has no valid descriptor) and a shortlist (query 4's
    is too short for a window of 10: half its slots are -1)."""
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("ames")
    write_features(folder / "q.h5", _features(rng, NQ, empty=(2,)))
    write_features(folder / "db.h5", _features(rng, NDB))
    ids = np.stack([rng.permutation(NDB)[:K] for _ in range(NQ)]).astype(np.float64)
    ids[4, 7:] = -1
    sims = -np.sort(-rng.random((NQ, K)), axis=1)
    write_shortlist(folder / "nn.npy", sims, ids)
    return folder


def _config() -> LocoreConfig:
    return LocoreConfig(desc_dim=DL, num_desc=ND, num_scales=4, name="toy")


def _build(files, **kw):
    return build_calibration_set(_config(), files / "q.h5", files / "db.h5", files / "nn.npy", **kw)


def test_windows_follow_the_files_and_the_graph_io(ames_files):
    cal = _build(ames_files, num_windows=9, window=10, seed=3)
    assert cal.num_windows == 9
    assert cal.feeds["query_desc"].shape == (9, ND, DL)
    assert cal.feeds["gallery_desc"].shape == (9, 10, ND, DL)
    assert cal.feeds["gallery_mask"].dtype == np.bool_
    cal.check_fits(graph_io(_config()).inputs)
    # Oracle: window i is the query and the 10 consecutive shortlist entries the provenance names.
    from locore.runtime.ames import FeatureFile

    short = np.load(ames_files / "nn.npy")[1].astype(int)
    with FeatureFile(ames_files / "q.h5") as qf, FeatureFile(ames_files / "db.h5") as dbf:
        for i, (q, start) in enumerate(cal.provenance["windows"]):
            assert q not in (2, 4)  # no valid descriptor / shortlist too short
            want_q = qf.read(q)
            np.testing.assert_array_equal(cal.feeds["query_mask"][i], want_q.mask)
            np.testing.assert_array_equal(
                cal.feeds["query_desc"][i], np.where(want_q.mask[:, None], want_q.descriptors, 0)
            )
            gallery = dbf.read(short[q, start : start + 10].tolist())
            np.testing.assert_array_equal(cal.feeds["gallery_mask"][i], gallery.mask)
    windows = list(cal.windows())
    assert len(windows) == 9 and windows[0]["gallery_desc"].shape == (1, 10, ND, DL)


def test_draw_is_reproducible_and_records_its_provenance(ames_files, tmp_path):
    a = _build(ames_files, num_windows=6, window=8, seed=11)
    b = _build(ames_files, num_windows=6, window=8, seed=11)
    c = _build(ames_files, num_windows=6, window=8, seed=12)
    for name in a.feeds:
        np.testing.assert_array_equal(a.feeds[name], b.feeds[name])
    assert a.provenance["windows"] != c.provenance["windows"]
    prov = a.provenance
    assert (prov["seed"], prov["num_windows"], prov["window"]) == (11, 6, 8)
    digest = hashlib.sha256((ames_files / "nn.npy").read_bytes()).hexdigest()
    assert prov["sources"]["shortlist"]["sha256"] == digest
    assert prov["sources"]["query_features"]["path"].endswith("q.h5")
    path = a.save(tmp_path / "set.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.npz"]  # no temp file left
    back = CalibrationSet.load(path)
    assert back.provenance == json.loads(json.dumps(prov))
    for name in a.feeds:
        np.testing.assert_array_equal(back.feeds[name], a.feeds[name])


def test_set_that_does_not_fit_the_model_names_the_input_and_both_shapes(ames_files):
    cal = _build(ames_files, num_windows=2, window=4)
    other = LocoreConfig(desc_dim=16, num_desc=ND, num_scales=4)
    with pytest.raises(CalibrationSetError) as err:
        cal.check_fits(graph_io(other).inputs, "model.onnx")
    text = str(err.value)
    assert "query_desc" in text and "[2, 6, 8]" in text and "['?', 6, 16]" in text
    assert isinstance(err.value, UsageError)
    fewer = CalibrationSet({k: v for k, v in cal.feeds.items() if k != "gallery_scale"})
    with pytest.raises(CalibrationSetError, match="no input 'gallery_scale'"):
        fewer.check_fits(graph_io(_config()).inputs)
    wrong = CalibrationSet({**cal.feeds, "query_desc": cal.feeds["query_desc"].astype(np.float64)})
    with pytest.raises(CalibrationSetError, match="float64 but"):
        wrong.check_fits(graph_io(_config()).inputs)


def test_bad_arguments_and_files(ames_files, tmp_path):
    with pytest.raises(UsageError, match="no query .* has 16 valid shortlist entries"):
        _build(ames_files, num_windows=2, window=16)
    with pytest.raises(UsageError, match="num_windows must be a positive integer"):
        _build(ames_files, num_windows=0)
    with pytest.raises(FileNotFoundError):
        CalibrationSet.load(tmp_path / "missing.npz")
    bogus = tmp_path / "bogus.npz"
    np.savez(bogus, query_desc=np.zeros((1, 2)))
    with pytest.raises(CalibrationSetError, match="not a calibration set"):
        CalibrationSet.load(bogus)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CalibrationSetError, match="not a calibration set"):
        CalibrationSet.load(tmp_path / "text.npz")
