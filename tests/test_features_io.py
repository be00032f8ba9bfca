"""AMES/LOCORE files: round trips through readers and writers; `locore rerank` end to end."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from onnx_toy import build_toy_reranker, random_rows, toy_config, toy_scores

from locore.cli import main
from locore.fileio import PickleNotAllowedError
from locore.runtime.ames import FeatureFile, FormatError, from_rows, to_rows, write_features
from locore.runtime.global_descriptors import read_global_descriptors, write_global_descriptors
from locore.runtime.ground_truth import GroundTruth, read_ground_truth, write_ground_truth
from locore.runtime.local_features import FeatureError, LocalFeatures
from locore.runtime.packing import Packer
from locore.runtime.shortlist import Shortlist, read_shortlist, search_shortlist, write_shortlist
from locore.runtime.sliding_windows import RerankParams, sliding_window_rerank

CONFIG = toy_config()


@pytest.fixture
def rows() -> dict[str, np.ndarray]:
    return random_rows(np.random.default_rng(0), 7, 10, CONFIG)


# ---- local features -------------------------------------------------------------------------
def test_features_round_trip(tmp_path: Path, rows: dict[str, np.ndarray]) -> None:
    path = tmp_path / "db.h5"
    write_features(path, LocalFeatures(**rows))
    with h5py.File(path, "r") as raw:  # the file layout of docs/design.md §8
        data = raw["features"][()]
    assert data.shape == (7, 10, 5 + CONFIG.desc_dim) and data.dtype == np.float32
    np.testing.assert_array_equal(data[..., 3], ~rows["mask"])  # 0 valid, 1 padding
    np.testing.assert_array_equal(data[..., 5:], rows["descriptors"])
    with FeatureFile(path) as ff:
        assert (ff.num_images, ff.num_desc, ff.desc_dim, len(ff)) == (7, 10, CONFIG.desc_dim, 7)
        every = ff.read_all(chunk=3)
        for name, value in rows.items():
            np.testing.assert_array_equal(getattr(every, name), value)
        one = ff.read(4, num_desc=6)
        assert not one.is_batch and one.descriptors.shape == (6, CONFIG.desc_dim)
        np.testing.assert_array_equal(one.descriptors, rows["descriptors"][4, :6])
        asked = [5, 1, 5, 0]  # unsorted, repeated
        some = ff.read(asked, num_desc=4)
        assert some.descriptors.shape == (4, 4, CONFIG.desc_dim)
        np.testing.assert_array_equal(some.scales, rows["scales"][asked, :4])
        np.testing.assert_array_equal(some.mask, rows["mask"][asked, :4])
        np.testing.assert_array_equal(ff.read(np.array([[2], [3]])).xy, rows["xy"][[[2], [3]]])
        np.testing.assert_array_equal(ff.read(slice(1, 3)).weights, rows["weights"][1:3])
        assert ff.read([], num_desc=2).descriptors.shape == (0, 2, CONFIG.desc_dim)


def test_feature_rows_and_batches(tmp_path: Path, rows: dict[str, np.ndarray]) -> None:
    batch = LocalFeatures(**rows)
    back = from_rows(to_rows(batch))
    for name, value in rows.items():
        np.testing.assert_array_equal(getattr(back, name), value)
    write_features(tmp_path / "x.h5", to_rows(batch))
    with FeatureFile(tmp_path / "x.h5") as ff:
        np.testing.assert_array_equal(ff.read_all().mask, batch.mask)
    # a list of single images is a batch: for the writer and for the packer, no row round trip
    singles = [batch[i] for i in range(len(batch))]
    write_features(tmp_path / "list.h5", singles)
    with FeatureFile(tmp_path / "list.h5") as ff:
        np.testing.assert_array_equal(ff.read_all().descriptors, batch.descriptors)
    packer = Packer(CONFIG)
    for got, want in zip(
        packer.pack_images([singles[0], singles[3]]), packer.pack_images(batch[[0, 3]]), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeError, match="expected LocalFeatures"):
        packer.pack_images(42)  # type: ignore[arg-type]
    with pytest.raises(FormatError, match=r"write a batch of features \[N, T, D\]"):
        write_features(tmp_path / "one.h5", singles[0])


def test_feature_file_errors(tmp_path: Path, rows: dict[str, np.ndarray]) -> None:
    with pytest.raises(FileNotFoundError):
        FeatureFile(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("feats", data=np.zeros((2, 3, 9), np.float32))
        f.create_dataset("features_2d", data=np.zeros((2, 3), np.float32))
    with pytest.raises(FormatError, match="has no dataset 'features'"):
        FeatureFile(tmp_path / "other.h5")
    with pytest.raises(FormatError, match=r"must be \[N, T, 5 \+ D\]"):
        FeatureFile(tmp_path / "other.h5", dataset="features_2d")
    path = tmp_path / "db.h5"
    write_features(path, LocalFeatures(**rows))
    with FeatureFile(path) as ff:
        with pytest.raises(IndexError, match="image index 7 is out of range .* with 7 images"):
            ff.read([0, 7])
    bad = to_rows(LocalFeatures(**rows))
    bad[0, 0, 2] = 1.5  # a scale id that is not an integer
    write_features(tmp_path / "bad.h5", bad)
    with FeatureFile(tmp_path / "bad.h5") as ff, pytest.raises(FormatError, match="integers"):
        ff.read(0)
    with pytest.raises(FormatError, match=r"rows must be \[N, T, 5 \+ D\]"):
        write_features(tmp_path / "narrow.h5", bad[..., :5])
    with pytest.raises(FeatureError, match="must have shape"):
        LocalFeatures(**{**rows, "mask": rows["mask"][:, :3]})


# ---- global descriptors -----------------------------------------------------------------------
def test_global_descriptors(tmp_path: Path) -> None:
    vectors = np.random.default_rng(1).standard_normal((6, 5)).astype(np.float32)
    raw = tmp_path / "db_global.bin"
    write_global_descriptors(raw, vectors)
    assert raw.stat().st_size == vectors.nbytes
    for kwargs in (dict(dim=5), dict(num_images=6), dict(dim=5, num_images=6)):
        got = read_global_descriptors(raw, **kwargs)  # type: ignore[arg-type]
        assert isinstance(got, np.memmap) and got.shape == (6, 5)
        np.testing.assert_array_equal(got, vectors)
    with pytest.raises(ValueError, match="without a shape"):
        read_global_descriptors(raw)
    with pytest.raises(FormatError, match="not divisible by dim 4"):
        read_global_descriptors(raw, dim=4)
    with pytest.raises(FormatError, match="expected 3 images"):
        read_global_descriptors(raw, dim=5, num_images=3)
    npy = tmp_path / "db_global.npy"
    write_global_descriptors(npy, vectors)
    np.testing.assert_array_equal(read_global_descriptors(npy), vectors)


# ---- shortlists and ground truth ---------------------------------------------------------------
def test_shortlist_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    sims = np.sort(rng.random((3, 8)).astype(np.float32), axis=1)[:, ::-1]
    ids = rng.integers(0, 1000, size=(3, 8))
    for name in ("nn.npy", "nn.pkl"):
        write_shortlist(tmp_path / name, sims, ids)
        got = read_shortlist(tmp_path / name, allow_pickle=name.endswith(".pkl"))
        assert got.ids.dtype == np.int64 and got.sims.dtype == np.float32
        np.testing.assert_array_equal(got.ids, ids)
        np.testing.assert_array_equal(got.sims, sims)
        assert (got.num_queries, got.length) == (3, 8)
    # an AMES-style pickle: np.stack((sims, ids)) in float32
    with open(tmp_path / "ames.pkl", "wb") as f:
        pickle.dump(np.stack((sims, ids.astype(np.float32))), f)
    np.testing.assert_array_equal(read_shortlist(tmp_path / "ames.pkl", allow_pickle=True).ids, ids)


def reference_search(q: np.ndarray, db: np.ndarray, k: int) -> tuple[list, list]:
    """Top k by inner product with plain loops: sort (-similarity, database index)."""
    ids, sims = [], []
    for vec in q:
        scored = [(-float(np.dot(vec, d)), j) for j, d in enumerate(db)]
        best = sorted(scored)[:k]
        ids.append([j for _, j in best])
        sims.append([-s for s, _ in best])
    return ids, sims


def test_search_shortlist() -> None:
    rng = np.random.default_rng(3)
    # small integers: exact float32 dot products with many ties
    q = rng.integers(-2, 3, size=(5, 4)).astype(np.float32)
    db = rng.integers(-2, 3, size=(30, 4)).astype(np.float32)
    for k in (1, 7, 30, 50):
        got = search_shortlist(q, db, k)
        want_ids, want_sims = reference_search(q, db, k)
        assert got.ids.dtype == np.int64 and got.sims.dtype == np.float32
        assert got.ids.shape == (5, min(k, 30))
        assert got.ids.tolist() == want_ids, k
        np.testing.assert_array_equal(got.sims, np.array(want_sims, np.float32))
    real = rng.standard_normal((3, 16)).astype(np.float32), rng.standard_normal((200, 16))
    got = search_shortlist(*real, 10)
    want_ids, want_sims = reference_search(*real, 10)
    assert got.ids.tolist() == want_ids
    np.testing.assert_allclose(got.sims, want_sims, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="same D"):
        search_shortlist(q, db[:, :3], 2)
    with pytest.raises(ValueError, match="positive integer"):
        search_shortlist(q, db, 0)
    with pytest.raises(ValueError, match="NaN"):
        search_shortlist(np.full((1, 4), np.nan, np.float32), db, 2)


def test_pickles_need_permission(tmp_path: Path) -> None:
    write_shortlist(tmp_path / "nn.pkl", np.zeros((1, 2)), np.zeros((1, 2), np.int64))
    with pytest.raises(PickleNotAllowedError, match="allow_pickle=True .*--allow-pickle"):
        read_shortlist(tmp_path / "nn.pkl")
    write_ground_truth(tmp_path / "gnd.pkl", GroundTruth([{"easy": [1], "hard": [], "junk": []}]))
    with pytest.raises(PickleNotAllowedError):
        read_ground_truth(tmp_path / "gnd.pkl")


def test_shortlist_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "bad_shape.npy", np.zeros((3, 2, 4)))
    with pytest.raises(FormatError, match=r"\[2, Nq, K\], got ndarray of shape \[3, 2, 4\]"):
        read_shortlist(tmp_path / "bad_shape.npy")
    np.save(tmp_path / "swapped.npy", np.stack((np.full((1, 3), 7.0), np.full((1, 3), 0.25))))
    with pytest.raises(FormatError, match="whole numbers"):
        read_shortlist(tmp_path / "swapped.npy")
    with pytest.raises(FormatError, match="unknown shortlist format"):
        (tmp_path / "nn.txt").write_text("1 2 3")
        read_shortlist(tmp_path / "nn.txt")
    with pytest.raises(FormatError, match="write shortlists as"):
        write_shortlist(tmp_path / "nn.csv", np.zeros((1, 2)), np.zeros((1, 2), np.int64))
    assert not list(tmp_path.glob(".nn*"))  # no temporary files left behind


def test_ground_truth_round_trip(tmp_path: Path) -> None:
    gnd = [
        {"easy": [3, 4], "hard": [9], "junk": [1], "bbx": [0.0, 0.0, 5.0, 5.0]},
        {"easy": [], "hard": [2, 7], "junk": []},
    ]
    gt = GroundTruth(gnd, qimlist=["q0", "q1"], imlist=[f"im{i}" for i in range(10)])
    write_ground_truth(tmp_path / "gnd_test.pkl", gt)
    got = read_ground_truth(tmp_path / "gnd_test.pkl", allow_pickle=True)
    assert got.num_queries == 2 and got.qimlist == ["q0", "q1"] and got.imlist == gt.imlist
    assert got.gnd[0]["easy"].tolist() == [3, 4] and got.gnd[1]["hard"].tolist() == [2, 7]
    assert got.gnd[0]["bbx"] == [0.0, 0.0, 5.0, 5.0]
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"gnd": [{"easy": [1], "hard": [2], "junk": []}]}, f)  # revisitop minimal
    assert read_ground_truth(tmp_path / "plain.pkl", allow_pickle=True).qimlist is None
    with open(tmp_path / "bad.pkl", "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(FormatError, match="'gnd' list"):
        read_ground_truth(tmp_path / "bad.pkl", allow_pickle=True)


# ---- `locore rerank` end to end ----------------------------------------------------------
@pytest.fixture
def dataset(tmp_path: Path) -> dict[str, Path]:
    """3 queries, 40 database images with 10 rows each, 25-long shortlists, the toy model."""
    rng = np.random.default_rng(5)
    write_features(tmp_path / "q.h5", LocalFeatures(**random_rows(rng, 3, 10, CONFIG)))
    write_features(tmp_path / "db.h5", LocalFeatures(**random_rows(rng, 40, 10, CONFIG)))
    ids = np.stack([rng.permutation(40)[:25] for _ in range(3)])
    sims = np.sort(rng.random((3, 25)), axis=1)[:, ::-1]
    write_shortlist(tmp_path / "nn.pkl", sims, ids)
    write_shortlist(tmp_path / "nn.npy", sims, ids)
    build_toy_reranker(tmp_path / "toy.onnx", CONFIG)
    return {
        "q": tmp_path / "q.h5",
        "db": tmp_path / "db.h5",
        "pkl": tmp_path / "nn.pkl",
        "npy": tmp_path / "nn.npy",
        "model": tmp_path / "toy.onnx",
        "dir": tmp_path,
    }


WINDOW_ARGS = ["--topk", "20", "--window", "8", "--stride", "3", "--order", "end-to-start"]
WINDOW_PARAMS = RerankParams(window=8, topk=20, stride=3, order="end-to-start")


def expected_ranks(data: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """The ranking computed without ONNX Runtime: the toy formula in numpy + the algorithm."""
    shortlist = read_shortlist(data["npy"])
    packer = Packer(CONFIG)
    ranks, scores = [], []
    with FeatureFile(data["q"]) as queries, FeatureFile(data["db"]) as db:
        for q in range(shortlist.num_queries):
            query = queries.read(q)

            def score_fn(window: np.ndarray, query: LocalFeatures = query) -> np.ndarray:
                return toy_scores(packer.pack(query, db.read(window)))[0]

            r, s = sliding_window_rerank(
                shortlist.ids[q], shortlist.sims[q], score_fn, WINDOW_PARAMS
            )
            ranks.append(r)
            scores.append(s)
    return np.stack(ranks), np.stack(scores)


def test_cli_rerank_end_to_end(
    dataset: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = dataset["dir"] / "out" / "ranks.npy"
    scores_out = dataset["dir"] / "scores.npy"
    code = main(
        ["rerank", "--query-features", str(dataset["q"]), "--db-features", str(dataset["db"]),
         "--shortlist", str(dataset["npy"]), "--model", str(dataset["model"]),
         "--output", str(out), "--scores-output", str(scores_out), "--threads", "1", *WINDOW_ARGS]
    )  # fmt: skip
    assert code == 0
    assert "re-ranked 3 queries" in capsys.readouterr().out
    ranks = np.load(out)
    assert ranks.shape == (3, 25) and ranks.dtype == np.int64
    shortlist = read_shortlist(dataset["npy"])
    for q in range(3):
        assert sorted(ranks[q]) == sorted(shortlist.ids[q])
        assert ranks[q, 20:].tolist() == shortlist.ids[q, 20:].tolist()
    want_ranks, want_scores = expected_ranks(dataset)
    np.testing.assert_array_equal(ranks, want_ranks)
    np.testing.assert_allclose(np.load(scores_out), want_scores, rtol=1e-5, atol=1e-6)
    assert not ranks[:, :20].tolist() == shortlist.ids[:, :20].tolist()  # it did re-rank


def test_cli_rerank_refuses_pickle_without_flag(
    dataset: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = dataset["dir"] / "ranks.npy"
    code = main(
        ["rerank", "--query-features", str(dataset["q"]), "--db-features", str(dataset["db"]),
         "--shortlist", str(dataset["pkl"]), "--model", str(dataset["model"]),
         "--output", str(out)]
    )  # fmt: skip
    assert code == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert not out.exists()


def test_cli_rerank_subprocess(dataset: dict[str, Path]) -> None:
    out = dataset["dir"] / "ranks_sub.npy"
    result = subprocess.run(
        [sys.executable, "-m", "locore", "rerank", "--query-features", str(dataset["q"]),
         "--db-features", str(dataset["db"]), "--shortlist", str(dataset["pkl"]),
         "--allow-pickle", "--model", str(dataset["model"]), "--output", str(out),
         "--threads", "1", "--quiet", *WINDOW_ARGS],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "re-ranked 3 queries" in result.stdout
    np.testing.assert_array_equal(np.load(out), expected_ranks(dataset)[0])


def test_shortlist_and_features_must_match(dataset: dict[str, Path]) -> None:
    from locore.runtime import Reranker, create_backend

    reranker = Reranker(create_backend(dataset["model"], threads=1), WINDOW_PARAMS)
    with FeatureFile(dataset["q"]) as queries, FeatureFile(dataset["db"]) as db:
        short = read_shortlist(dataset["npy"])
        with pytest.raises(ValueError, match="shortlist has 2 rows but there are 3 query"):
            next(reranker.rerank_many(queries, db, Shortlist(short.sims[:2], short.ids[:2])))
        far = Shortlist(short.sims, short.ids + 100)
        with pytest.raises(ValueError, match="database image 139 .* hold 40 images"):
            next(reranker.rerank_many(queries, db, far))


def test_cli_rerank_rejects_bad_windows(
    dataset: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["rerank", "--query-features", str(dataset["q"]), "--db-features", str(dataset["db"]),
            "--shortlist", str(dataset["npy"]), "--model", str(dataset["model"])]  # fmt: skip
    out = dataset["dir"] / "ranks.npy"
    assert main([*args, "--output", str(out), "--window", "4", "--stride", "5"]) == 2
    assert "stride (5) must not exceed the window (4)" in capsys.readouterr().err
    assert main([*args, "--output", str(dataset["dir"] / "ranks.txt")]) == 2
    assert "--output must be a .npy file" in capsys.readouterr().err
    assert not out.exists()
