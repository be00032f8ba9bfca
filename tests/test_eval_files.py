"""Files that round-trip with AMES and LOCORE: shortlists (numpy or pickled torch tensors, -1
padding, validation), ground truth (revisitop lists, GLDv2 'ok'), and the writers read back the
way AMES's and LOCORE's loaders read them (re-implemented here from their code's reads)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from locore.fileio import PickleNotAllowedError
from locore.runtime.ames import FormatError
from locore.runtime.ground_truth import (
    GroundTruth,
    ground_truth_from_labels,
    read_ground_truth,
    write_ground_truth,
)
from locore.runtime.shortlist import PAD_ID, Shortlist, read_shortlist, write_shortlist


def faiss_like(rng: np.random.Generator, nq: int, ndb: int, k: int) -> tuple[np.ndarray, ...]:
    """(D float32, I int64) [nq, k] as faiss's IndexFlatIP.search returns them when k > ndb:
    the empty slots hold id -1 and similarity -FLT_MAX (-3.4e38)."""
    sims = rng.random((nq, ndb)).astype(np.float32)
    order = np.argsort(-sims, axis=1)[:, :k]
    d = np.full((nq, k), -np.finfo(np.float32).max, np.float32)
    i = np.full((nq, k), -1, np.int64)
    n = min(k, ndb)
    d[:, :n] = np.take_along_axis(sims, order, 1)[:, :n]
    i[:, :n] = order[:, :n]
    return d, i


# ---- shortlist readers ------------------------------------------------------------------------
def test_torch_pickled_nn_file_is_read(tmp_path: Path) -> None:
    """LOCORE's prepare_topk_global.py: pickle_save(path, torch.from_numpy(np.stack(scores)))
    where scores = index.search(...) = (D float32, I int64) -> a float64 tensor [2, Nq, K]."""
    rng = np.random.default_rng(0)
    d, i = faiss_like(rng, 5, 9, 12)  # 9 images, K = 12: three padded slots per row
    path = tmp_path / "nn_dinov2.pkl"
    with open(path, "wb") as f:
        pickle.dump(torch.from_numpy(np.stack((d, i))), f)
    with pytest.raises(PickleNotAllowedError):
        read_shortlist(path)
    got = read_shortlist(path, allow_pickle=True)
    np.testing.assert_array_equal(got.ids, i)
    assert got.num_padded == 15 and got.valid.sum() == 45
    ids, sims = got.row(2)
    np.testing.assert_array_equal(ids, i[2, :9])
    np.testing.assert_array_equal(sims, d[2, :9])
    # the numpy variant (LOCORE writes GLDv2's nn as a numpy array) and a float32 tensor
    with open(path, "wb") as f:
        pickle.dump(np.stack((d, i)), f)
    np.testing.assert_array_equal(read_shortlist(path, allow_pickle=True).ids, i)
    with open(path, "wb") as f:
        pickle.dump(torch.from_numpy(np.stack((d, i.astype(np.float32)))), f)
    np.testing.assert_array_equal(read_shortlist(path, allow_pickle=True).ids, i)


NO_TORCH = """
import sys
sys.modules["torch"] = None  # torch absent: any import of it fails
from locore.deps import MissingDependencyError
from locore.runtime.shortlist import read_shortlist, write_shortlist
import numpy as np
try:
    read_shortlist(sys.argv[1], allow_pickle=True)
except MissingDependencyError as exc:
    print("READ:", exc)
try:
    write_shortlist(sys.argv[2], np.zeros((1, 2)), np.zeros((1, 2), np.int64), format="ames")
except MissingDependencyError as exc:
    print("WRITE:", exc)
np.save(sys.argv[3], np.stack((np.zeros((1, 2)), np.ones((1, 2)))))
print("NPY:", read_shortlist(sys.argv[3]).ids.tolist())
"""


def test_torch_pickle_without_torch_names_the_extra(tmp_path: Path) -> None:
    path = tmp_path / "nn.pkl"
    with open(path, "wb") as f:
        pickle.dump(torch.zeros(2, 1, 3, dtype=torch.float64), f)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_TORCH,
            str(path),
            str(tmp_path / "w.pkl"),
            str(tmp_path / "n.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "READ:" in out and "pickled torch tensor" in out and "locore-edge[export]" in out
    assert "WRITE:" in out and "torch" in out.split("WRITE:")[1]
    assert "NPY: [[1, 1]]" in out
    assert not (tmp_path / "w.pkl").exists()


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        (np.array([[1, 2**64 - 1]], np.uint64), "must fit int64"),
        (np.array([[1.0, 1e19]]), "must fit int64"),
        (np.array([[1.0, 224.7]]), "whole numbers"),
        (np.array([[1.0, np.nan]]), "finite whole numbers"),
        (np.array([[1, -2]]), r"-2 in query row 0, slot 1"),
        (np.array([[True, False]]), "must be integers"),
    ],
)
def test_shortlist_ids_are_validated(ids: np.ndarray, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        Shortlist.from_array((np.zeros(ids.shape), ids), "nn.npy")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_non_finite_similarities_name_the_row(bad: float) -> None:
    sims = np.zeros((3, 4))
    sims[2, 1] = bad
    with pytest.raises(FormatError, match=r"query row 2, slot 1 .*must be finite"):
        Shortlist(sims, np.arange(12).reshape(3, 4))
    # ...but a padded slot's similarity is never looked at (faiss puts -FLT_MAX or -inf there)
    ids = np.arange(12).reshape(3, 4)
    ids[2, 1] = PAD_ID
    assert Shortlist(sims, ids).num_padded == 1


def test_validate_ids_against_the_database() -> None:
    shortlist = Shortlist(np.zeros((2, 3)), np.array([[0, 4, -1], [2, 1, -1]]), "nn.npy")
    shortlist.validate_ids(5)
    with pytest.raises(FormatError, match=r"row 0, slot 1 refers to database image 4.* holds 4"):
        shortlist.validate_ids(4, "db.h5")


def test_padding_round_trips_through_the_writers(tmp_path: Path) -> None:
    d, i = faiss_like(np.random.default_rng(1), 3, 4, 6)
    for name, fmt in (("a.npy", "numpy"), ("b.pkl", "numpy"), ("c.pkl", "ames")):
        write_shortlist(tmp_path / name, d, i, format=fmt)
        got = read_shortlist(tmp_path / name, allow_pickle=True)
        np.testing.assert_array_equal(got.ids, i)
        assert got.num_padded == 6
    with pytest.raises(FormatError, match="as pickles"):
        write_shortlist(tmp_path / "x.npy", d, i, format="ames")


# ---- ground truth -------------------------------------------------------------------------
def test_gldv2_ok_only_ground_truth(tmp_path: Path) -> None:
    path = tmp_path / "gnd_gldv2-test.pkl"
    with open(path, "wb") as f:
        pickle.dump({"gnd": [{"ok": [3, 1]}, {"ok": []}], "qimlist": ["a", "b"]}, f)
    gt = read_ground_truth(path, allow_pickle=True)
    assert gt.positives(0).tolist() == [3, 1] and gt.positives(1).size == 0
    assert gt.gnd[0]["easy"].size == 0 and gt.gnd[0]["junk"].size == 0
    gt.validate_ids(4)
    with pytest.raises(FormatError, match=r"gnd\[0\]\['ok'\] holds database index 3"):
        gt.validate_ids(3)


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"easy": [1.5], "hard": [], "junk": []}, "whole numbers"),
        ({"easy": [1], "hard": [-3], "junk": []}, r"gnd\[0\]\['hard'\] must hold .* >= 0"),
        ({"easy": [1], "hard": [], "junk": [2**64 - 1]}, "must fit int64"),
        ({"bbx": [0, 0, 1, 1]}, "must be a dict with keys"),
    ],
)
def test_ground_truth_ids_are_validated(tmp_path: Path, entry: dict, match: str) -> None:
    path = tmp_path / "gnd.pkl"
    if "junk" in entry and entry["junk"] == [2**64 - 1]:
        entry = {**entry, "junk": np.array(entry["junk"], np.uint64)}
    with open(path, "wb") as f:
        pickle.dump({"gnd": [entry]}, f)
    with pytest.raises(FormatError, match=match):
        read_ground_truth(path, allow_pickle=True)


def test_ground_truth_from_labels() -> None:
    # SOP/CUB style: the queries are the database images 0..3 themselves
    gt = ground_truth_from_labels([7, 7, 9, 8], [7, 7, 9, 8, 7, 9], query_db_ids=np.arange(4))
    assert gt.positives(0).tolist() == [1, 4] and gt.gnd[0]["junk"].tolist() == [0]
    assert gt.positives(2).tolist() == [5] and gt.positives(3).size == 0
    # In-Shop style: separate query set
    gt = ground_truth_from_labels([9], [7, 9, 9])
    assert gt.positives(0).tolist() == [1, 2] and gt.gnd[0]["junk"].size == 0


# ---- their loaders' reads, re-implemented ---------------------------------------------------
def ames_loader_reads(nn_path: Path, gnd_path: Path, hard: bool) -> tuple[torch.Tensor, ...]:
    """What AMES (src/utils/metrics.py ``rerank``) and LOCORE
    (common_utils/eval_data_utils_hdf5.py) do with the files: pickle.load both, ``['gnd']``,
    ``cache_nn.clone()``, junk ids ``gnd[i]['junk'] + gnd[i]['easy']`` for Hard, np.in1d on
    ``nn[1, i]``, junk moved last with torch.cat, then ``nn[0]`` sims and ``nn[1].long()``."""
    with open(gnd_path, "rb") as f:
        gnd = pickle.load(f)["gnd"]
    with open(nn_path, "rb") as f:
        cache_nn = pickle.load(f)
    nn = cache_nn.clone()
    assert nn.shape[1] == len(gnd)
    if "junk" in gnd[0]:
        for i in range(len(cache_nn[0])):
            junk_ids = gnd[i]["junk"] + gnd[i]["easy"] if hard else gnd[i]["junk"]
            is_junk = np.isin(cache_nn[1, i].numpy(), junk_ids)  # their np.in1d (numpy < 2)
            nn[:, i] = torch.cat((cache_nn[:, i, ~is_junk], cache_nn[:, i, is_junk]), dim=1)
    return nn[0], nn[1].long()


def test_ames_format_files_load_in_their_loaders(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    d, i = faiss_like(rng, 3, 10, 12)
    gnd = [
        {"easy": np.array([i[0, 3]]), "hard": np.array([i[0, 0]]), "junk": np.array([i[0, 1]])},
        {
            "easy": np.array([i[1, 5], i[1, 6]]),
            "hard": np.array([], np.int64),
            "junk": np.array([i[1, 2]]),
        },
        {
            "easy": np.array([], np.int64),
            "hard": np.array([i[2, 4]]),
            "junk": np.array([], np.int64),
        },
    ]
    write_shortlist(tmp_path / "nn.pkl", d, i, format="ames")
    write_ground_truth(tmp_path / "gnd.pkl", GroundTruth(gnd))
    with open(tmp_path / "gnd.pkl", "rb") as f:
        raw = pickle.load(f)["gnd"]
    assert all(type(raw[q][k]) is list for q in range(3) for k in ("easy", "hard", "junk"))
    assert all(type(x) is int for x in raw[1]["easy"])
    for hard in (False, True):
        sims, ids = ames_loader_reads(tmp_path / "nn.pkl", tmp_path / "gnd.pkl", hard)
        assert ids.dtype == torch.int64 and tuple(ids.shape) == (3, 12)
        for q, g in enumerate(gnd):
            junk = set(g["junk"].tolist()) | (set(g["easy"].tolist()) if hard else set())
            row = ids[q].tolist()
            moved = [x for x in i[q].tolist() if x not in junk] + [
                x for x in i[q].tolist() if x in junk
            ]
            assert row == moved  # the concatenated junk list is the right one
            np.testing.assert_array_equal(
                sims[q].numpy()[: 10 - len(junk)],
                d[q][np.isin(i[q], list(junk), invert=True)][: 10 - len(junk)],
            )
    # int64 arrays (the old writer's output) are what breaks their Hard protocol:
    arr = {"junk": np.array([1, 2]), "easy": np.array([5, 6])}
    assert (arr["junk"] + arr["easy"]).tolist() == [6, 8]  # element-wise: a wrong junk list
