"""``locore demo``: the whole pipeline on the built-in real-photo benchmark, end to end.

1. The demo split (:mod:`locore.runtime.demo_data`) is built on first use and cached.
2. SIFT/RootSIFT local features (first Nd by response) and VLAD global descriptors are extracted
   and written in the AMES/LOCORE layout (HDF5 + raw global descriptors), cached.
3. The shortlist is the exact inner-product search over the global descriptors (top K).
4. Three rankings of the same shortlist are timed and scored: global only; OpenCV RANSAC
   spatial verification (ratio-test matches of all kept keypoints, homography inliers); and
   LOCORE sliding-window re-ranking with the shipped model through the ONNX Runtime backend.
5. A table of mAP, mP@1/5/10 and median latency per query, and a PNG of one query.

Nothing here imports torch, except exporting the shipped checkpoint to ONNX on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from locore.deps import MissingDependencyError, require
from locore.fileio import atomic_write_bytes, atomic_write_text
from locore.runtime.demo_data import (
    DemoSplit,
    build_demo,
    compute_map,
    default_cache_dir,
    demo_codebook,
)
from locore.runtime.features import Keypoints, SiftExtractor, write_h5
from locore.runtime.features_io import (
    FeatureFile,
    GroundTruth,
    Shortlist,
    read_global_descriptors,
    read_shortlist,
    write_ground_truth,
    write_shortlist,
)

log = logging.getLogger(__name__)

FEATURES_VERSION = 1


def shipped_model_dir() -> Path:
    """The checkpoint folder of the model that ships with the package (trained on the demo
    train split; see README, "Shipped model")."""
    import locore

    return Path(locore.__file__).resolve().parent / "assets" / "demo-tiny"


@dataclass
class DemoFiles:
    """The AMES/LOCORE-layout files of one demo split (all cached in ``folder``)."""

    split: DemoSplit
    folder: Path
    query_features: Path
    db_features: Path
    query_global: Path
    db_global: Path
    shortlist: Path
    ground_truth: Path
    db_keypoints: Path  # every kept keypoint of the database images, for spatial verification
    query_keypoints: Path


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def prepare_split(
    split: str = "test",
    cache_dir: str | Path | None = None,
    *,
    num_desc: int = 48,
    shortlist_k: int = 100,
    progress: bool = True,
) -> DemoFiles:
    """Features, global descriptors, shortlist and ground truth of a demo split (cached)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    demo = build_demo(cache, split)
    book = demo_codebook(cache, progress=progress)
    ext = SiftExtractor(num_desc=num_desc, global_desc="vlad", codebook=book)
    key = _digest(FEATURES_VERSION, demo.content_hash, book.meta, repr(ext), shortlist_k)
    folder = demo.root.parent / f"{split}-features-{key}"
    files = DemoFiles(
        demo,
        folder,
        folder / "query.h5",
        folder / "db.h5",
        folder / "query_global.npy",
        folder / "db_global.npy",
        folder / "shortlist.npy",
        folder / "gnd.pkl",
        folder / "db_keypoints.npz",
        folder / "query_keypoints.npz",
    )
    done = folder / "done.json"
    if done.is_file():
        return files
    folder.mkdir(parents=True, exist_ok=True)
    log.info("extracting demo %s features into %s", split, folder)
    for paths, h5, glob, kp_path in (
        (demo.query_paths, files.query_features, files.query_global, files.query_keypoints),
        (demo.db_paths, files.db_features, files.db_global, files.db_keypoints),
    ):
        kps = ext.detect_many(paths, progress=progress)
        feats = [ext.features_from_keypoints(k, ext.global_descriptor(k)) for k in kps]
        write_h5(h5, feats, global_path=glob)
        _save_keypoints(kp_path, kps)
    q_glob = read_global_descriptors(files.query_global)
    db_glob = read_global_descriptors(files.db_global)
    sims = q_glob @ db_glob.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :shortlist_k]
    write_shortlist(files.shortlist, np.take_along_axis(sims, ids, axis=1), ids)
    gnd = [{k: np.asarray(v, dtype=np.int64) for k, v in g.items()} for g in demo.gnd]
    write_ground_truth(files.ground_truth, GroundTruth(gnd))
    atomic_write_text(done, json.dumps({"split": split, "hash": demo.content_hash}) + "\n")
    return files


def _save_keypoints(path: Path, kps: Sequence[Keypoints]) -> None:
    counts = np.array([len(k) for k in kps], dtype=np.int64)
    xy_px = [k.xy * np.array(k.work_size[::-1], np.float32) for k in kps]
    from io import BytesIO

    buf = BytesIO()
    np.savez(
        buf,
        counts=counts,
        xy=np.concatenate(xy_px) if len(kps) else np.zeros((0, 2), np.float32),
        desc=np.concatenate([k.descriptors for k in kps]).astype(np.float16),
    )
    atomic_write_bytes(path, buf.getvalue())


def _load_keypoints(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        counts, xy, desc = data["counts"], data["xy"], data["desc"].astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return [(xy[a:b], desc[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


# ---- spatial verification baseline ----------------------------------------------------------
def ransac_inliers(
    query: tuple[np.ndarray, np.ndarray],
    image: tuple[np.ndarray, np.ndarray],
    ratio: float = 0.8,
    threshold_px: float = 6.0,
) -> int:
    """Homography inliers between two images' keypoints (xy in pixels, RootSIFT descriptors):
    Lowe's ratio test on 2-NN matches, then OpenCV RANSAC."""
    cv2 = require("cv2")
    (qxy, qd), (gxy, gd) = query, image
    if len(qd) < 2 or len(gd) < 2:
        return 0
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    pairs = matcher.knnMatch(qd, gd, k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < ratio * n.distance]
    if len(good) < 4:
        return 0
    src = qxy[[m.queryIdx for m in good]].reshape(-1, 1, 2)
    dst = gxy[[m.trainIdx for m in good]].reshape(-1, 1, 2)
    _, inl = cv2.findHomography(src, dst, cv2.RANSAC, threshold_px, maxIters=2000, confidence=0.995)
    return 0 if inl is None else int(inl.sum())


# ---- the report ------------------------------------------------------------------------------
@dataclass
class MethodResult:
    name: str
    ranks: np.ndarray  # [Nq, K] db ids, best first
    seconds: list[float]  # per query
    map: float = 0.0
    mp: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1e3 if self.seconds else 0.0


@dataclass
class DemoReport:
    split: str
    num_queries: int
    num_db: int
    shortlist_k: int
    methods: list[MethodResult]
    picture: Path | None
    model: str

    def table(self) -> str:
        lines = [
            f"demo {self.split} split: {self.num_queries} queries, {self.num_db} database "
            f"images, shortlist top {self.shortlist_k} (revisitop medium protocol)",
            f"{'method':34s} {'mAP':>6s} {'mP@1':>6s} {'mP@5':>6s} {'mP@10':>6s} "
            f"{'median ms/query':>16s}",
        ]
        for m in self.methods:
            lines.append(
                f"{m.name:34s} {100 * m.map:6.1f} {100 * m.mp[0]:6.1f} {100 * m.mp[1]:6.1f} "
                f"{100 * m.mp[2]:6.1f} {m.median_ms:16.1f}"
            )
        if self.picture:
            lines.append(f"picture: {self.picture}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "num_queries": self.num_queries,
            "num_db": self.num_db,
            "shortlist_k": self.shortlist_k,
            "model": self.model,
            "methods": {
                m.name: {"map": m.map, "mp@1,5,10": m.mp.tolist(), "median_ms": m.median_ms}
                for m in self.methods
            },
        }


def _score(method: MethodResult, gnd: Sequence[dict[str, Any]]) -> MethodResult:
    method.map, method.mp = compute_map(method.ranks, gnd)
    return method


def _timed_per_query(fn: Callable[[int], np.ndarray], num: int, progress: bool, desc: str):
    from tqdm import tqdm

    ranks, seconds = [], []
    for q in tqdm(range(num), desc=desc, disable=not progress, unit="query"):
        t0 = time.perf_counter()
        ranks.append(fn(q))
        seconds.append(time.perf_counter() - t0)
    return np.stack(ranks), seconds


def export_for_demo(checkpoint: Path, cache: Path) -> Path:
    """The portable ONNX of ``checkpoint``, exported on first use (needs torch) and cached."""
    weights = (checkpoint / "model.safetensors").read_bytes()
    config = json.loads((checkpoint / "config.json").read_text())["config"]  # not "extra"
    key = hashlib.sha256(weights + json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    path = cache / "models" / f"{checkpoint.name}-{key}-portable.onnx"
    if path.is_file():
        return path
    try:
        from locore.export import export_onnx
    except ImportError as exc:
        raise MissingDependencyError(
            f"the demo exports the shipped model to ONNX on first use, which needs torch: "
            f"pip install 'locore-edge[export]' ({exc})"
        ) from exc
    log.info("exporting %s to %s (first use)", checkpoint, path)
    export_onnx(checkpoint, path, flavor="portable")
    return path


def run_demo(
    cache_dir: str | Path | None = None,
    *,
    model: str | Path | None = None,
    split: str = "test",
    shortlist_k: int = 100,
    window: int = 100,
    stride: int = 50,
    alpha: float | None = None,
    temperature: float | None = None,
    ransac: bool = True,
    picture: str | Path | None = None,
    max_queries: int | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> DemoReport:
    """Run the demo and return its report (see the module docstring).

    ``model`` is an ONNX file or a checkpoint folder (default: the shipped model). ``alpha`` /
    ``temperature`` default to the values stored with the shipped model (tuned on the train
    split), else LOCORE's 0.5 / 0.1.
    """
    from locore.runtime.backends import create_backend
    from locore.runtime.rerank import Reranker, RerankParams

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    files = prepare_split(split, cache, shortlist_k=shortlist_k, progress=progress)
    demo = files.split
    model_path = Path(model) if model is not None else shipped_model_dir()
    fusion: dict[str, float] = {}
    if model_path.is_dir():
        meta = json.loads((model_path / "config.json").read_text())
        fusion = dict(meta.get("extra", {}).get("fusion", {}))
        onnx_path = export_for_demo(model_path, cache)
    else:
        onnx_path = model_path
    alpha = fusion.get("alpha", 0.5) if alpha is None else alpha
    temperature = fusion.get("temperature", 0.1) if temperature is None else temperature

    shortlist = read_shortlist(files.shortlist)
    nq = shortlist.num_queries if max_queries is None else min(max_queries, shortlist.num_queries)
    gnd = demo.gnd[:nq]
    q_glob = read_global_descriptors(files.query_global)
    db_glob = read_global_descriptors(files.db_global)

    def global_only(q: int) -> np.ndarray:
        sims = db_glob @ q_glob[q]
        return np.argsort(-sims, kind="stable")[:shortlist_k]

    methods = []
    ranks, secs = _timed_per_query(global_only, nq, False, "global")
    methods.append(_score(MethodResult("global only (VLAD-64, exact IP)", ranks, secs), gnd))

    if ransac:
        q_kp = _load_keypoints(files.query_keypoints)
        db_kp = _load_keypoints(files.db_keypoints)

        def verify(q: int) -> np.ndarray:
            ids, sims = shortlist.ids[q], shortlist.sims[q]
            inl = np.array([ransac_inliers(q_kp[q], db_kp[i]) for i in ids], dtype=np.float64)
            order = np.lexsort((-sims, -inl))  # inliers first, global similarity breaks ties
            return ids[order]

        ranks, secs = _timed_per_query(verify, nq, progress, "RANSAC")
        methods.append(_score(MethodResult("RANSAC spatial verification", ranks, secs), gnd))

    backend = create_backend(onnx_path, threads=threads)
    params = RerankParams(
        window=window, topk=shortlist_k, stride=stride, alpha=alpha, temperature=temperature
    )
    reranker = Reranker(backend, params, clip_scales=True)
    with FeatureFile(files.query_features) as fq, FeatureFile(files.db_features) as fd:
        database = fd.read_all(backend.config.num_desc)
        queries = fq.read_all(backend.config.num_desc)

        def locore(q: int) -> np.ndarray:
            return reranker.rerank(queries[q], database, shortlist.ids[q], shortlist.sims[q]).ids

        ranks, secs = _timed_per_query(locore, nq, progress, "LOCORE")
    name = f"LOCORE re-ranking ({backend.config.name}, ORT)"
    methods.append(_score(MethodResult(name, ranks, secs), gnd))

    pic = None
    if picture is not None:
        pic = Path(picture)
        write_picture(pic, demo, methods[0].ranks, methods[-1].ranks, gnd)
    return DemoReport(split, nq, demo.num_db, shortlist_k, methods, pic, str(onnx_path))


def tune_fusion(
    files: DemoFiles,
    onnx_path: Path,
    alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75),
    temperatures: Sequence[float] = (0.1, 0.3, 1.0),
    shortlist_k: int = 100,
) -> tuple[float, float, float]:
    """(alpha, temperature, mAP) that maximise mAP on ``files`` (use the TRAIN split)."""
    from locore.runtime.backends import create_backend
    from locore.runtime.rerank import Reranker, fuse_scores

    backend = create_backend(onnx_path)
    reranker = Reranker(backend, window=shortlist_k, topk=shortlist_k, stride=shortlist_k)
    shortlist: Shortlist = read_shortlist(files.shortlist)
    with FeatureFile(files.query_features) as fq, FeatureFile(files.db_features) as fd:
        database = fd.read_all(backend.config.num_desc)
        queries = fq.read_all(backend.config.num_desc)
        logits = [
            reranker.score(queries[q], database[shortlist.ids[q]])
            for q in range(shortlist.num_queries)
        ]
    best = (0.5, 0.1, -1.0)
    for a in alphas:
        for t in temperatures:
            ranks = []
            for q, lg in enumerate(logits):
                fused = fuse_scores(shortlist.sims[q], lg, a, t)
                ranks.append(shortlist.ids[q][np.argsort(-fused, kind="stable")])
            m, _ = compute_map(np.stack(ranks), files.split.gnd)
            if m > best[2]:
                best = (a, t, m)
    return best


# ---- picture ---------------------------------------------------------------------------------
def write_picture(
    path: Path,
    demo: DemoSplit,
    before: np.ndarray,
    after: np.ndarray,
    gnd: Sequence[dict[str, Any]],
    top: int = 8,
    tile: int = 128,
) -> int:
    """A PNG: the query whose ranking LOCORE improved most, its top results before (global)
    and after re-ranking; green = positive, red = negative, grey = junk. Returns the query."""
    cv2 = require("cv2")
    gains = []
    for q, g in enumerate(gnd):
        pos = set(g["easy"]) | set(g["hard"])
        gains.append(
            sum(int(i) in pos for i in after[q, :top]) - sum(int(i) in pos for i in before[q, :top])
        )
    q = int(np.argmax(gains))
    g = gnd[q]
    pos, junk = set(g["easy"]) | set(g["hard"]), set(g["junk"])

    def thumb(img: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
        h, w = img.shape[:2]
        s = (tile - 8) / max(h, w)
        small = cv2.resize(
            img, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA
        )
        canvas = np.full((tile, tile, 3), 255, np.uint8)
        canvas[:] = color
        y, x = (tile - small.shape[0]) // 2, (tile - small.shape[1]) // 2
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
        return canvas

    def color(i: int) -> tuple[int, int, int]:
        return (60, 180, 60) if i in pos else ((160, 160, 160) if i in junk else (50, 50, 220))

    def row(label: str, ids: np.ndarray) -> np.ndarray:
        tiles = [thumb(cv2.imread(str(demo.db_paths[int(i)])), color(int(i))) for i in ids[:top]]
        strip = np.concatenate(tiles, axis=1)
        head = np.full((24, strip.shape[1], 3), 255, np.uint8)
        cv2.putText(head, label, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
        return np.concatenate([head, strip], axis=0)

    query = thumb(cv2.imread(str(demo.query_paths[q])), (0, 0, 0))
    qcol = np.full((2 * (tile + 24), tile, 3), 255, np.uint8)
    qcol[24 : 24 + tile] = query
    cv2.putText(qcol, f"query {q}", (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    rows = np.concatenate([row("global only", before[q]), row("LOCORE", after[q])], axis=0)
    sheet = np.concatenate([qcol, np.full((rows.shape[0], 8, 3), 255, np.uint8), rows], axis=1)
    ok, data = cv2.imencode(".png", sheet)
    if not ok:
        raise RuntimeError(f"could not encode the picture for {path}")
    atomic_write_bytes(path, data.tobytes())
    return q
