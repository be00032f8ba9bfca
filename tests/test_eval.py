"""``locore eval`` end to end: small files written the way AMES's and LOCORE's code writes them
(HDF5 chunked with padding rows, nn as a pickled torch tensor of np.stack((D, I)) with faiss's
-1 padding, or as numpy, gnd as lists), scored against independent oracles; the fusion grid
never sees a test query; on the demo split the numbers equal ``locore demo``'s."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from locore.cli import main
from locore.runtime.ames import FeatureFile, to_rows
from locore.runtime.backends import create_backend
from locore.runtime.evaluation import FusionGrid, evaluate, split_queries
from locore.runtime.ground_truth import read_ground_truth
from locore.runtime.local_features import LocalFeatures
from locore.runtime.shortlist import read_shortlist
from locore.runtime.sliding_windows import Reranker, RerankParams
from tests.onnx_toy import build_toy_reranker, random_rows, toy_config
from tests.test_eval_files import ames_loader_reads, faiss_like
from tests.test_metrics import oracle_map_at_k, oracle_protocol, oracle_recall, oracle_revisitop

CONFIG = toy_config()
NQ, NDB, K, ROWS = 9, 40, 48, 10  # K > NDB: 8 padded slots per shortlist row
PARAMS = RerankParams(window=10, topk=24, stride=5, alpha=0.3, temperature=0.5)


def write_ames_h5(path: Path, rng: np.random.Generator, n: int) -> None:
    """AMES rows [n, ROWS, 5 + D] in a chunked HDF5 dataset; padded rows hold garbage."""
    rows = to_rows(LocalFeatures(**random_rows(rng, n, ROWS, CONFIG)))
    pad = rows[..., 3] > 0.5
    garbage = rng.standard_normal(rows.shape).astype(np.float32) * 1e3
    garbage[..., 3] = 1.0
    rows[pad] = garbage[pad]
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=rows, chunks=(1, ROWS, rows.shape[-1]))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ames")
    rng = np.random.default_rng(11)
    write_ames_h5(root / "dinov2_query_local.hdf5", rng, NQ)
    write_ames_h5(root / "dinov2_gallery_local.hdf5", rng, NDB)
    d, i = faiss_like(rng, NQ, NDB, K)
    with open(root / "nn_dinov2.pkl", "wb") as f:  # LOCORE: pickle_save(torch.from_numpy(...))
        pickle.dump(torch.from_numpy(np.stack((d, i))), f)
    with open(root / "nn_numpy.pkl", "wb") as f:
        pickle.dump(np.stack((d, i)), f)
    gnd = []
    for q in range(NQ):
        perm = rng.permutation(NDB)
        sizes = (0, 0, 2) if q == 4 else tuple(rng.integers(1, 6, size=3))  # q 4: no positive
        easy, hard, junk = np.split(perm[: sum(sizes)], np.cumsum(sizes)[:2])
        gnd.append({"easy": easy.tolist(), "hard": hard.tolist(), "junk": junk.tolist()})
    with open(root / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump({"gnd": gnd, "imlist": [f"im{j}" for j in range(NDB)]}, f)
    labels = rng.integers(0, 6, size=NDB)
    np.save(root / "db_labels.npy", labels)
    (root / "query_labels.txt").write_text("\n".join(str(x) for x in labels[:NQ]))
    build_toy_reranker(root / "toy.onnx", CONFIG)
    return {
        "root": root,
        "q": root / "dinov2_query_local.hdf5",
        "db": root / "dinov2_gallery_local.hdf5",
        "nn": root / "nn_dinov2.pkl",
        "nn_numpy": root / "nn_numpy.pkl",
        "gnd": root / "gnd_roxford5k.pkl",
        "onnx": root / "toy.onnx",
    }


def reference_rankings(files: dict[str, Path], hard_junk: bool | None) -> list[np.ndarray]:
    """Their reordering (ames_loader_reads), padding dropped, then the re-ranker per query."""
    if hard_junk is None:
        shortlist = read_shortlist(files["nn"], allow_pickle=True)
        rows = [shortlist.row(q) for q in range(NQ)]
    else:
        sims, ids = ames_loader_reads(files["nn"], files["gnd"], hard_junk)
        rows = [(i[i >= 0].numpy(), s[i >= 0].numpy()) for s, i in zip(sims, ids, strict=True)]
    out = []
    with (
        create_backend(files["onnx"]) as backend,
        FeatureFile(files["q"]) as fq,
        FeatureFile(files["db"]) as fd,
    ):
        reranker = Reranker(backend, PARAMS)
        for q, (ids, sims) in enumerate(rows):
            out.append(reranker.rerank(fq.read(q, num_desc=6), fd, ids, sims).ids)
    assert sum(len(r) for r in out) == NQ * NDB  # the 8 padded slots of each row are gone
    return out


def oracle_scores(rankings, gnd, protocol):
    aps, prs = [], []
    for row, g in zip(rankings, gnd, strict=True):
        ok, junk = oracle_protocol(g, protocol)
        if ok:
            ap, pr = oracle_revisitop(row, set(ok), set(junk), (1, 5, 10))
            aps.append(ap)
            prs.append(pr)
    return np.mean(aps), np.mean(prs, axis=0)


def run_eval(files: dict[str, Path], **kwargs):
    with (
        create_backend(files["onnx"]) as backend,
        FeatureFile(files["q"]) as fq,
        FeatureFile(files["db"]) as fd,
    ):
        reranker = kwargs.pop("reranker", None) or Reranker(backend, PARAMS)
        return evaluate(
            kwargs.pop("dataset", "roxford5k"),
            reranker,
            fq,
            fd,
            read_shortlist(kwargs.pop("nn", files["nn"]), allow_pickle=True),
            kwargs.pop("gt", None) or read_ground_truth(files["gnd"], allow_pickle=True),
            progress=False,
            **kwargs,
        )


def test_revisitop_protocol_matches_their_reordering_and_oracles(files: dict[str, Path]) -> None:
    gnd = pickle.load(open(files["gnd"], "rb"))["gnd"]
    report = run_eval(files)
    assert report.padded_slots == NQ * (K - NDB) and report.num_queries == NQ
    medium = reference_rankings(files, hard_junk=False)
    hard = reference_rankings(files, hard_junk=True)
    shortlist = read_shortlist(files["nn"], allow_pickle=True)
    global_rows = [shortlist.row(q)[0] for q in range(NQ)]
    for protocol, rows in (("easy", medium), ("medium", medium), ("hard", hard)):
        for method, ranks in (("reranked", rows), ("global", global_rows)):
            m_ap, mp = oracle_scores(ranks, gnd, protocol)
            got = report.metrics[method][protocol]
            assert got["mAP"] == pytest.approx(m_ap, abs=1e-12), (method, protocol)
            np.testing.assert_allclose([got["mP@1"], got["mP@5"], got["mP@10"]], mp, atol=1e-12)
    # without the reordering the shortlists are re-ranked as given
    plain = run_eval(files, reorder=False)
    as_given = reference_rankings(files, hard_junk=None)
    for protocol in ("easy", "medium", "hard"):
        m_ap, _ = oracle_scores(as_given, gnd, protocol)
        assert plain.metrics["reranked"][protocol]["mAP"] == pytest.approx(m_ap, abs=1e-12)
    assert plain.metrics["global"] == report.metrics["global"]


def test_cli_eval_writes_reports_and_ames_files(files: dict[str, Path], tmp_path: Path) -> None:
    prefix = tmp_path / "out" / "rox"
    common = [
        "eval", "--dataset", "roxford5k", "--query-features", str(files["q"]),
        "--db-features", str(files["db"]), "--ground-truth", str(files["gnd"]),
        "--model", str(files["onnx"]), "--allow-pickle", "--no-progress",
        "--topk", "24", "--window", "10", "--stride", "5", "--alpha", "0.3",
        "--temperature", "0.5",
    ]  # fmt: skip
    assert main([*common, "--shortlist", str(files["nn"]), "--report", str(prefix),
                 "--write-files", str(tmp_path / "ames")]) == 0  # fmt: skip
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert report["padded_slots"] == NQ * (K - NDB) and report["shortlist_reordered"]
    assert set(report["metrics"]["reranked"]) == {"easy", "medium", "hard"}
    assert "| reranked |" in prefix.with_suffix(".md").read_text()
    assert prefix.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    want = run_eval(files).metrics
    assert report["metrics"] == json.loads(json.dumps(want))
    # the written files are what AMES/LOCORE load, and they hold what was read
    sims, ids = ames_loader_reads(
        tmp_path / "ames" / "nn.pkl", tmp_path / "ames" / "gnd.pkl", False
    )
    theirs, _ = ames_loader_reads(files["nn"], files["gnd"], False)
    np.testing.assert_array_equal(sims.numpy(), theirs.numpy())
    # the numpy-pickled nn gives the same numbers
    prefix2 = tmp_path / "np"
    assert main([*common, "--shortlist", str(files["nn_numpy"]), "--report", str(prefix2),
                 "--no-png"]) == 0  # fmt: skip
    assert json.loads(prefix2.with_suffix(".json").read_text())["metrics"] == report["metrics"]
    assert not prefix2.with_suffix(".png").exists()


class RecordingReranker(Reranker):
    """Records (query name, alpha, temperature) of every re-ranked shortlist."""

    seen: list[tuple[str, float, float]]

    def rerank(self, *args, **kwargs):  # type: ignore[override]
        self.seen.append((kwargs["name"], self.params.alpha, self.params.temperature))
        return super().rerank(*args, **kwargs)


def test_grid_never_uses_test_queries(files: dict[str, Path]) -> None:
    val, test = split_queries(NQ, 0.34, seed=3)
    grid = FusionGrid((0.0, 0.6), (0.2, 1.0))
    with create_backend(files["onnx"]) as backend:
        reranker = RecordingReranker(backend, PARAMS)
        reranker.seen = []
        report = run_eval(files, reranker=reranker, val_queries=val, grid=grid)
    names = lambda ids: {f"query {q}" for q in ids}  # noqa: E731
    n_grid = len(grid.pairs()) * 2 * len(val)  # two passes (medium, hard) per pair
    grid_calls, test_calls = reranker.seen[:n_grid], reranker.seen[n_grid:]
    assert {c[0] for c in grid_calls} == names(val)
    assert {c[0] for c in test_calls} == names(test) and len(test_calls) == 2 * len(test)
    chosen = report.validation
    assert chosen is not None and set(chosen["queries"]) == set(val.tolist())
    assert (chosen["alpha"], chosen["temperature"]) in grid.pairs()
    assert {(c[1], c[2]) for c in test_calls} == {(chosen["alpha"], chosen["temperature"])}
    assert report.params["alpha"] == chosen["alpha"] and report.num_queries == len(test)
    best = max(row["score"] for row in chosen["grid"])
    assert chosen["score"] == best
    with pytest.raises(ValueError, match="needs validation queries"):
        run_eval(files, grid=grid)


def test_gldv2_public_private_with_ok_only_ground_truth(
    files: dict[str, Path], tmp_path: Path
) -> None:
    gnd = pickle.load(open(files["gnd"], "rb"))["gnd"]
    ok_only = [{"ok": g["easy"] + g["hard"]} for g in gnd]
    with open(tmp_path / "gnd_gldv2-test.pkl", "wb") as f:
        pickle.dump({"gnd": ok_only}, f)
    gt = read_ground_truth(tmp_path / "gnd_gldv2-test.pkl", allow_pickle=True)
    report = run_eval(files, dataset="gldv2", gt=gt, private_queries=3)
    ranks = reference_rankings(files, hard_junk=None)  # no junk: nothing is reordered
    aps = [oracle_map_at_k(r, set(g["ok"]), set(), 100) if g["ok"] else np.nan
           for r, g in zip(ranks, ok_only, strict=True)]  # fmt: skip
    got = report.metrics["reranked"]
    assert got["all"]["mAP@100"] == pytest.approx(np.nanmean(aps), abs=1e-12)
    assert got["public"]["mAP@100"] == pytest.approx(np.nanmean(aps[:-3]), abs=1e-12)
    assert got["private"]["mAP@100"] == pytest.approx(np.nanmean(aps[-3:]), abs=1e-12)
    with pytest.raises(ValueError, match="private split is the last 750"):
        run_eval(files, dataset="gldv2", gt=gt)


def test_sop_recall_from_labels_cli(files: dict[str, Path], tmp_path: Path) -> None:
    root = files["root"]
    prefix = tmp_path / "sop"
    args = [
        "eval", "--dataset", "sop", "--query-features", str(files["q"]),
        "--db-features", str(files["db"]), "--shortlist", str(files["nn"]), "--allow-pickle",
        "--query-labels", str(root / "query_labels.txt"),
        "--db-labels", str(root / "db_labels.npy"),
        "--queries-in-db", "--model", str(files["onnx"]), "--no-progress", "--no-png",
        "--topk", "24", "--window", "10", "--stride", "5", "--alpha", "0.3", "--temperature", "0.5",
        "--report", str(prefix),
    ]  # fmt: skip
    assert main(args) == 0
    got = json.loads(prefix.with_suffix(".json").read_text())["metrics"]
    labels = np.load(root / "db_labels.npy")
    shortlist = read_shortlist(files["nn"], allow_pickle=True)
    for method, ranks in (
        ("global", [shortlist.row(q)[0] for q in range(NQ)]),
        ("reranked", None),
    ):
        if ranks is None:  # junk (the query itself) goes last before re-ranking
            from locore.runtime.evaluation import reorder_junk_last

            with create_backend(files["onnx"]) as backend, FeatureFile(files["q"]) as fq, \
                    FeatureFile(files["db"]) as fd:  # fmt: skip
                reranker = Reranker(backend, PARAMS)
                ranks = []
                for q in range(NQ):
                    ids, sims = reorder_junk_last(*shortlist.row(q), np.array([q]))
                    ranks.append(reranker.rerank(fq.read(q, num_desc=6), fd, ids, sims).ids)
        want = []
        for q, row in enumerate(ranks):
            ok = set(np.flatnonzero(labels == labels[q]).tolist()) - {q}
            if ok:
                want.append([oracle_recall(row, ok, {q}, k) for k in (1, 10, 100)])
        np.testing.assert_allclose(
            [got[method]["all"][f"R@{k}"] for k in (1, 10, 100)], np.mean(want, 0), atol=1e-12
        )


@pytest.mark.slow
def test_eval_equals_demo_on_the_demo_split(demo_cache: Path, shipped_onnx, tmp_path: Path) -> None:
    """`locore eval --no-reorder` on the demo's test-split files gives `locore demo`'s numbers
    (the demo re-ranks its shortlists as given, revisitop medium protocol)."""
    from locore.checkpoint_format import checkpoint_fusion, shipped_model_dir
    from locore.runtime.demo import prepare_split, run_demo

    onnx = shipped_onnx("portable")
    fusion = checkpoint_fusion(shipped_model_dir())
    demo = run_demo(onnx, demo_cache, params=RerankParams(**fusion), ransac=False, progress=False)
    files = prepare_split("test", demo_cache, progress=False)
    prefix = tmp_path / "demo"
    args = [
        "eval", "--dataset", "revisitop", "--no-reorder", "--query-features",
        str(files.query_features), "--db-features", str(files.db_features), "--shortlist",
        str(files.shortlist), "--ground-truth", str(files.ground_truth), "--allow-pickle",
        "--model", str(onnx), "--topk", "100", "--alpha", str(fusion["alpha"]),
        "--temperature", str(fusion["temperature"]), "--no-progress", "--no-png",
        "--report", str(prefix),
    ]  # fmt: skip
    assert main(args) == 0
    got = json.loads(prefix.with_suffix(".json").read_text())
    assert got["num_queries"] == demo.num_queries
    glob, loc = demo.methods[0], demo.methods[-1]
    for method, want in (("global", glob), ("reranked", loc)):
        medium = got["metrics"][method]["medium"]
        assert medium["mAP"] == pytest.approx(want.map, abs=1e-12), method
        np.testing.assert_allclose(
            [medium["mP@1"], medium["mP@5"], medium["mP@10"]], want.mp, atol=1e-12
        )


def test_cli_grid_flags(files: dict[str, Path], tmp_path: Path) -> None:
    prefix = tmp_path / "grid"
    args = [
        "eval", "--dataset", "revisitop", "--query-features", str(files["q"]),
        "--db-features", str(files["db"]), "--shortlist", str(files["nn"]), "--allow-pickle",
        "--ground-truth", str(files["gnd"]), "--model", str(files["onnx"]), "--no-progress",
        "--no-png", "--topk", "24", "--window", "10", "--stride", "5", "--report", str(prefix),
        "--grid", "--grid-alphas", "0,0.5", "--grid-temperatures", "1", "--val-fraction",
        "0.34", "--seed", "1",
    ]  # fmt: skip
    assert main(args) == 0
    report = json.loads(prefix.with_suffix(".json").read_text())
    val, test = split_queries(NQ, 0.34, seed=1)
    assert report["validation"]["queries"] == val.tolist()
    assert report["num_queries"] == len(test)
    assert [(r["alpha"], r["temperature"]) for r in report["validation"]["grid"]] == [
        (0.0, 1.0),
        (0.5, 1.0),
    ]
    assert report["params"]["alpha"] == report["validation"]["alpha"]
    assert "Fusion grid on 3 validation queries" in prefix.with_suffix(".md").read_text()
    # no validation split given: refused before any work (exit 2, a usage error)
    assert main(args[:-6]) == 2
