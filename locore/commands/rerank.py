"""``locore rerank``: sliding-window re-ranking of AMES/LOCORE shortlists with an exported model.

A thin layer over :class:`locore.runtime.sliding_windows.Reranker`; every flag is a Python
argument. Writes the re-ranked shortlist as ``.npy`` [Nq, K] int64 (K = shortlist length).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from locore.commands.args import (
    add_backend_arguments,
    add_progress_argument,
    add_rerank_arguments,
    backend_options,
    output_path,
    rerank_params,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    files = parser.add_argument_group("files")
    files.add_argument(
        "--query-features",
        required=True,
        type=Path,
        metavar="Q.h5",
        help="AMES/LOCORE HDF5 features of the query images",
    )
    files.add_argument(
        "--db-features",
        required=True,
        type=Path,
        metavar="DB.h5",
        help="AMES/LOCORE HDF5 features of the database images",
    )
    files.add_argument(
        "--shortlist",
        required=True,
        type=Path,
        metavar="NN",
        help="np.stack((sims, ids)) [2, Nq, K] as .npy, or an AMES .pkl (needs --allow-pickle)",
    )
    files.add_argument(
        "--model",
        required=True,
        type=Path,
        metavar="MODEL",
        help="exported re-ranker (.onnx; .engine/.plan for TensorRT)",
    )
    files.add_argument(
        "--output",
        required=True,
        type=Path,
        metavar="RANKS.npy",
        help="re-ranked shortlist, [Nq, K] int64 database ids",
    )
    files.add_argument(
        "--scores-output",
        type=Path,
        metavar="SCORES.npy",
        help="also write the fused scores [Nq, K] float32",
    )
    files.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow loading pickle files (they can run code: trusted files only)",
    )
    files.add_argument(
        "--query-global",
        type=Path,
        metavar="FILE",
        help="query global descriptors (raw float32 or .npy), for models with use_global",
    )
    files.add_argument(
        "--db-global",
        type=Path,
        metavar="FILE",
        help="database global descriptors (raw float32 or .npy)",
    )
    add_rerank_arguments(parser)
    parser.add_argument(
        "--clip-scales",
        action="store_true",
        help="clamp scale ids into the model's range instead of failing",
    )
    add_backend_arguments(parser)
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    from locore.fileio import atomic_path
    from locore.progress import progress_bar
    from locore.runtime.ames import FeatureFile
    from locore.runtime.backends import create_backend
    from locore.runtime.global_descriptors import read_global_descriptors
    from locore.runtime.shortlist import read_shortlist
    from locore.runtime.sliding_windows import Reranker

    output_path(args.output, ".npy", "--output")
    if args.scores_output is not None:
        output_path(args.scores_output, ".npy", "--scores-output")
    params = rerank_params(args)
    shortlist = read_shortlist(args.shortlist, allow_pickle=args.allow_pickle)
    backend = create_backend(args.model, args.backend, **backend_options(args))
    reranker = Reranker(backend, params, clip_scales=args.clip_scales)
    query_global = db_global = None
    if reranker.packer.with_global:
        if args.query_global is None or args.db_global is None:
            raise ValueError(
                f"{args.model} uses global descriptors: give --query-global and --db-global"
            )
        dim = backend.config.global_dim
        query_global = read_global_descriptors(args.query_global, dim=dim)
        db_global = read_global_descriptors(args.db_global, dim=dim)

    ranks = np.empty(shortlist.ids.shape, dtype=np.int64)
    scores = np.empty(shortlist.ids.shape, dtype=np.float32)
    began = time.perf_counter()
    with FeatureFile(args.query_features) as queries, FeatureFile(args.db_features) as database:
        if query_global is not None and len(query_global) != len(queries):
            raise ValueError(
                f"{args.query_global} holds {len(query_global)} descriptors for "
                f"{len(queries)} query images"
            )
        results = reranker.rerank_many(queries, database, shortlist, query_global, db_global)
        bar = progress_bar(
            results,
            total=shortlist.num_queries,
            desc="re-ranking",
            unit="query",
            enabled=not args.no_progress,
        )
        for q, result in enumerate(bar):
            ranks[q] = result.ids
            scores[q] = result.scores
    elapsed = time.perf_counter() - began

    with atomic_path(args.output) as tmp, open(tmp, "wb") as handle:
        np.save(handle, ranks)
    if args.scores_output is not None:
        with atomic_path(args.scores_output) as tmp, open(tmp, "wb") as handle:
            np.save(handle, scores)
    per_query = reranker.calls / max(1, shortlist.num_queries)
    print(
        f"re-ranked {shortlist.num_queries} queries (top {min(params.topk, shortlist.length)} of "
        f"{shortlist.length}, window {params.window}, stride {params.stride}, {params.order}) "
        f"with {args.model} on {backend.kind}: {per_query:.1f} model calls per query, "
        f"{elapsed:.2f} s -> {args.output}"
    )
    backend.close()
    return 0
