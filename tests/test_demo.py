"""The demo: its report (scores, CIs, table, JSON) on hand-made rankings, the RANSAC keypoint
budget, and the demo end to end with the shipped model (slow: ~2 min each).

The library test runs :func:`locore.runtime.demo.run_demo` on an ONNX file the fixture exports
from the shipped checkpoint (tests may import torch; the runtime never does); the CLI test runs
``locore demo`` and shows the LOCORE - RANSAC difference at the end of the pytest output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from locore.checkpoint_format import (
    checkpoint_fusion,
    read_checkpoint_config,
    shipped_model_dir,
)
from locore.cli import main
from locore.runtime.demo.baselines import first_keypoints, ransac_inliers, spatial_verification
from locore.runtime.demo.report import (
    DIFFERENCES,
    GLOBAL,
    LOCORE,
    RANSAC_FULL,
    DemoReport,
    MethodResult,
    paired_difference,
)

slow = pytest.mark.slow


# ---- the report on hand-made rankings ---------------------------------------------------------
# q0: easy 0, hard 1, junk 2; q1: hard 3 only; q2: easy 4 only (no positive under Hard).
GND = [
    {"easy": [0], "hard": [1], "junk": [2]},
    {"easy": [], "hard": [3], "junk": []},
    {"easy": [4], "hard": [], "junk": []},
]
PERFECT = np.array([[0, 1, 2, 3, 4], [3, 0, 1, 2, 4], [4, 0, 1, 2, 3]])
WORSE = np.array([[3, 0, 2, 4, 1], [0, 1, 3, 2, 4], [0, 4, 1, 2, 3]])
# WORSE by hand (revisitop trapezoidal AP, junk removed first):
#   q0 medium: [3, 0, 4, 1], positives at 1-based ranks 2, 4: (0 + 1/2)/2 * 1/2 +
#              (1/3 + 2/4)/2 * 1/2 = 1/8 + 5/24 = 1/3;  hard (junk 0, 2): [3, 4, 1]: 1 at rank 3:
#              (0 + 1/3)/2 = 1/6
#   q1: 3 at rank 3 in both protocols: 1/6;  q2 medium: 4 at rank 2: (0 + 1/2)/2 = 1/4; hard NaN
WORSE_MEDIUM = [1 / 3, 1 / 6, 1 / 4]
WORSE_HARD = [1 / 6, 1 / 6]


def _report() -> DemoReport:
    methods = [
        MethodResult(GLOBAL, "global only (VLAD-64, exact IP)", WORSE, [0.001] * 3).score(GND),
        MethodResult(LOCORE, "LOCORE (tiny, ORT)", PERFECT, [0.002, 0.004, 0.003]).score(GND),
    ]
    diffs = [paired_difference(methods[1], methods[0])]
    return DemoReport("test", 3, 5, 5, methods, None, "m.onnx", diffs)


def test_report_scores_equal_hand_computed_values() -> None:
    report = _report()
    glob, loc = report.methods
    np.testing.assert_allclose(glob.scores["medium"].aps, WORSE_MEDIUM)
    np.testing.assert_allclose(glob.scores["hard"].aps[:2], WORSE_HARD)
    assert np.isnan(glob.scores["hard"].aps[2]) and glob.scores["hard"].num_queries == 2
    assert glob.map == pytest.approx(np.mean(WORSE_MEDIUM))  # 1/4
    assert glob.scores["hard"].map == pytest.approx(1 / 6)
    assert loc.scores["medium"].map == 1.0 and loc.scores["hard"].map == 1.0
    assert loc.scores["hard"].ci == (1.0, 1.0)
    # The interval of a mean lies within the range of the values it resamples.
    lo, hi = glob.scores["medium"].ci
    assert 1 / 6 <= lo <= 1 / 4 <= hi <= 1 / 3
    assert glob.mp[0] == 0.0 and loc.mp[0] == 1.0  # no positive at rank 1 / all at rank 1
    assert loc.median_ms == pytest.approx(3.0)
    (diff,) = report.differences
    assert diff.name == "LOCORE - global only" and (diff.minuend, diff.subtrahend) == (
        LOCORE,
        GLOBAL,
    )
    # Paired differences: medium 2/3, 5/6, 3/4 (mean 3/4); hard 5/6 twice (a point interval).
    mean, lo, hi = diff.values["medium"]
    assert mean == pytest.approx(3 / 4) and 2 / 3 <= lo <= 3 / 4 <= hi <= 5 / 6
    assert diff.values["hard"] == pytest.approx((5 / 6, 5 / 6, 5 / 6))


def test_report_table_and_json_agree() -> None:
    report = _report()
    table = report.table()
    assert max(len(line) for line in table.splitlines()) <= 100, table
    assert "medium mAP [95% CI]" in table and "hard mAP [95% CI]" in table
    assert "queries with positives: medium 3, hard 2" in table
    glob_row = next(line for line in table.splitlines() if line.startswith("global only"))
    assert " 25.0 [" in glob_row and " 16.7 [ 16.7,  16.7]" in glob_row
    assert "LOCORE - global only" in table and "+83.3 [+83.3, +83.3]" in table
    data = json.loads(json.dumps(report.to_dict()))
    loc = data["methods"]["LOCORE (tiny, ORT)"]
    assert loc["key"] == LOCORE and loc["median_ms"] == pytest.approx(3.0)
    assert loc["map"] == loc["medium"]["map"] == 1.0
    glob = data["methods"]["global only (VLAD-64, exact IP)"]
    assert glob["hard"]["map"] == pytest.approx(1 / 6) and glob["hard"]["num_queries"] == 2
    assert glob["medium"]["ci"] == list(report.methods[0].scores["medium"].ci)
    diff = data["differences"]["LOCORE - global only"]
    assert diff["hard"]["mean"] == pytest.approx(5 / 6)
    assert data["bootstrap"] == {"level": 0.95, "resamples": 2000, "seed": 0}


def test_reported_differences_are_the_issue_s() -> None:
    assert (LOCORE, RANSAC_FULL) in DIFFERENCES and (LOCORE, GLOBAL) in DIFFERENCES


# ---- RANSAC with a keypoint budget ------------------------------------------------------------
def test_ransac_budget_keeps_the_strongest_keypoints() -> None:
    """Image Y repeats the query's 48 strongest keypoints, image X 52 of its weaker ones (both
    moved by the same translation): with the model's budget of 48 only Y matches, with every
    keypoint X has more inliers (52 > 48)."""
    pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    q_xy = rng.uniform(0, 500, size=(100, 2)).astype(np.float32)
    q_desc = rng.normal(size=(100, 128)).astype(np.float32)
    shift = np.float32([13.0, -7.0])
    y_img = (q_xy[:48] + shift, q_desc[:48])
    x_img = (
        np.concatenate([rng.uniform(0, 500, size=(48, 2)).astype(np.float32), q_xy[48:] + shift]),
        np.concatenate([rng.normal(size=(48, 128)).astype(np.float32), q_desc[48:]]),
    )
    query = (q_xy, q_desc)
    xy, desc = first_keypoints(query, 48)
    assert xy.shape == (48, 2) and np.array_equal(desc, q_desc[:48])
    assert first_keypoints(query, None) is query
    assert ransac_inliers(first_keypoints(query, 48), first_keypoints(x_img, 48)) == 0
    assert ransac_inliers(query, x_img) == 52 and ransac_inliers(query, y_img) == 48
    ids, sims = np.array([0, 1]), np.array([0.9, 0.8])  # 0 = X, 1 = Y
    assert spatial_verification(query, [x_img, y_img], ids, sims, 48).tolist() == [1, 0]
    assert spatial_verification(query, [x_img, y_img], ids, sims).tolist() == [0, 1]
    with pytest.raises(ValueError, match="keypoint budget must be >= 1"):
        first_keypoints(query, 0)


# ---- end to end with the shipped model (slow) -------------------------------------------------
@slow
def test_shipped_model_is_small_and_loads():
    folder = shipped_model_dir()
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["config.json", "model.safetensors"]
    assert sum(p.stat().st_size for p in folder.iterdir()) < 10 * 2**20
    meta = json.loads((folder / "config.json").read_text())
    training = meta["extra"]["training"]
    assert "locore train" in training["command"]
    assert {"alpha", "temperature"} <= set(meta["extra"]["fusion"])


@slow
def test_ransac_budget_is_the_model_s_descriptors(demo_cache: Path) -> None:
    """The keypoints the 48-keypoint RANSAC uses are the descriptors the model reads: the
    first 48 saved keypoints of every image equal the feature file's rows (float16 copies)."""
    from locore.runtime.ames import FeatureFile
    from locore.runtime.demo import prepare_split
    from locore.runtime.demo.split_files import load_keypoints

    files = prepare_split("test", demo_cache, progress=False)
    for h5, kp_path in (
        (files.query_features, files.query_keypoints),
        (files.db_features, files.db_keypoints),
    ):
        with FeatureFile(h5) as f:
            feats = f.read_all()
        kps = load_keypoints(kp_path)
        assert len(kps) == feats.descriptors.shape[0]
        for i, (_, desc) in enumerate(kps):
            budget = desc[: feats.descriptors.shape[1]]  # the strongest first, as saved
            valid = feats.mask[i]
            assert valid.sum() == len(budget)
            np.testing.assert_allclose(budget, feats.descriptors[i][valid], atol=2e-3)


@slow
def test_run_demo_library_path(demo_cache: Path, tmp_path: Path, shipped_onnx):
    """The library call the command makes (a few queries, no RANSAC: the CLI test below runs
    the whole benchmark)."""
    from locore.runtime.demo import run_demo
    from locore.runtime.sliding_windows import RerankParams

    onnx = shipped_onnx("portable")
    fusion = checkpoint_fusion(shipped_model_dir())  # what `locore demo` passes
    assert set(fusion) == {"alpha", "temperature"}
    picture = tmp_path / "demo.png"
    params = RerankParams(**fusion)
    report = run_demo(
        onnx,
        demo_cache,
        params=params,
        ransac=False,
        max_queries=6,
        picture=picture,
        progress=False,
    )
    table = report.table()
    assert "LOCORE (" in table and "RANSAC" not in table and "hard mAP" in table
    assert report.model == str(onnx)
    assert [m.ranks.shape for m in report.methods] == [(6, 100)] * 2
    assert [d.name for d in report.differences] == ["LOCORE - global only"]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@slow
def test_queries_without_descriptors_keep_their_global_ranking(demo_cache: Path, shipped_onnx):
    """Train queries of flat photos (cell, clock_motion) have no SIFT keypoint: LOCORE keeps
    their shortlist order instead of failing, and the report counts them."""
    from locore.runtime.ames import FeatureFile
    from locore.runtime.demo import prepare_split, run_demo
    from locore.runtime.shortlist import read_shortlist

    nq = 60
    report = run_demo(
        shipped_onnx("portable"), demo_cache, split="train", ransac=False, max_queries=nq,
        progress=False,
    )  # fmt: skip
    files = prepare_split("train", demo_cache, progress=False)
    with FeatureFile(files.query_features) as f:
        empty = np.flatnonzero(~f.read_all().mask[:nq].any(axis=-1))
    assert report.queries_without_descriptors == len(empty)
    if len(empty):
        assert "without local descriptors kept their global ranking" in report.table()
    loc = report.method(LOCORE)
    assert loc is not None
    shortlist = read_shortlist(files.shortlist)
    for q in empty:
        np.testing.assert_array_equal(loc.ranks[q], shortlist.ids[q])


@slow
def test_run_demo_wants_an_onnx_file(tmp_path: Path):
    from locore.runtime.demo import run_demo

    with pytest.raises(FileNotFoundError, match="needs an ONNX model file, got a folder"):
        run_demo(shipped_model_dir(), tmp_path)


@slow
def test_demo_runs_and_locore_beats_global(
    demo_cache: Path, tmp_path: Path, capsys, shipped_onnx, terminal_summary
):
    """`locore demo` on the test split (>= 100 queries): LOCORE >= global on the medium and
    the hard protocol; the LOCORE - RANSAC differences go to the end of the pytest output."""
    shipped_onnx("portable")  # exported once per session; the command finds it in the cache
    report_path = tmp_path / "report.json"
    picture = tmp_path / "demo.png"
    code = main([
        "demo", "--cache-dir", str(demo_cache), "--json", str(report_path),
        "--picture", str(picture), "--no-progress",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    num_desc = read_checkpoint_config(shipped_model_dir())[0].num_desc
    assert "LOCORE (" in out and f"RANSAC ({num_desc} keypoints)" in out and "hard mAP" in out
    report = json.loads(report_path.read_text())
    methods = {m["key"]: m for m in report["methods"].values()}
    assert report["num_queries"] >= 100
    assert set(methods) == {"global", "ransac-model", "ransac-all", "locore"}
    assert all(m["median_ms"] > 0 for m in methods.values())
    for name, diff in report["differences"].items():
        if diff["subtrahend"] == "global":
            continue
        cells = ", ".join(
            f"{p} {100 * diff[p]['mean']:+.1f} [{100 * diff[p]['ci'][0]:+.1f}, "
            f"{100 * diff[p]['ci'][1]:+.1f}]"
            for p in ("medium", "hard")
        )
        terminal_summary(f"demo test split, {name} (mAP points, 95% CI): {cells}")
    ratio = methods["ransac-all"]["median_ms"] / methods["locore"]["median_ms"]
    terminal_summary(f"demo median latency RANSAC (all keypoints) / LOCORE: {ratio:.1f}")
    glob, loc = methods["global"], methods["locore"]
    for protocol in ("medium", "hard"):
        assert 0.0 < glob[protocol]["map"] < 1.0
        assert loc[protocol]["map"] >= glob[protocol]["map"], (protocol, loc, glob)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
