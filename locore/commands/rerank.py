"""``locore rerank``: sliding-window re-ranking of AMES/LOCORE shortlists with an exported model.

A thin layer over :class:`locore.runtime.sliding_windows.Reranker`; every flag is a Python
argument. Writes the re-ranked shortlist as ``.npy`` [Nq, K] int64 (K = shortlist length;
padded slots of a short row, id -1 in the input, stay at the end as -1) and, with
``--scores-output``, the fused scores [Nq, K] float32 (-inf for padding): both checked before
the work and committed together (:func:`locore.fileio.atomic_outputs`).
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
    read_global_inputs,
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
        help="re-ranked shortlist, [Nq, K] int64 database ids (-1: padding)",
    )
    files.add_argument(
        "--scores-output",
        type=Path,
        metavar="SCORES.npy",
        help="also write the fused scores [Nq, K] float32 (-inf: padding), committed together "
        "with --output",
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


PAD_ID = -1  # ranks of padded shortlist slots (scores -inf)
INPUT_FLAGS = ("query_features", "db_features", "shortlist", "model", "query_global", "db_global")


def run(args: argparse.Namespace) -> int:
    from locore.fileio import atomic_outputs, check_outputs, naming, write_npy
    from locore.progress import progress_bar
    from locore.runtime.ames import FeatureFile
    from locore.runtime.backends import create_backend
    from locore.runtime.shortlist import read_shortlist
    from locore.runtime.sliding_windows import Reranker

    outputs = {"--output": args.output, "--scores-output": args.scores_output}
    for flag, path in outputs.items():
        if path is not None:
            output_path(path, ".npy", flag)
    check_outputs(
        outputs, {f"--{name.replace('_', '-')}": getattr(args, name) for name in INPUT_FLAGS}
    )
    params = rerank_params(args)
    shortlist = read_shortlist(args.shortlist, allow_pickle=args.allow_pickle)
    ranks = np.empty(shortlist.ids.shape, dtype=np.int64)
    scores = np.empty(shortlist.ids.shape, dtype=np.float32)
    with create_backend(args.model, args.backend, **backend_options(args)) as backend:
        reranker = Reranker(backend, params, clip_scales=args.clip_scales)
        query_global, db_global = read_global_inputs(args, reranker)

        began = time.perf_counter()
        with (
            FeatureFile(args.query_features) as queries,
            FeatureFile(args.db_features) as database,
        ):
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
                # a row padded by the search (id -1) yields its valid slots only: the rest stays
                # padding, id -1 and score -inf, as faiss pads
                n = len(result.ids)
                ranks[q, :n], ranks[q, n:] = result.ids, PAD_ID
                scores[q, :n], scores[q, n:] = result.scores, -np.inf
        elapsed = time.perf_counter() - began
        kind = backend.kind
    bad = np.flatnonzero(np.isnan(scores).any(axis=1))
    if bad.size:  # never write a ranking sorted on NaN
        raise RuntimeError(
            f"re-ranking produced NaN scores for {bad.size} of {shortlist.num_queries} queries "
            f"(first: query {int(bad[0])}); nothing was written. Check the model ({args.model}) "
            "and the inputs of those queries for NaN values"
        )

    with atomic_outputs(outputs) as temps:  # ranks and scores: one set, committed together
        for flag, array in (("--output", ranks), ("--scores-output", scores)):
            if flag in temps:
                with naming(outputs[flag]):
                    write_npy(temps[flag], array)
    per_query = reranker.calls / max(1, shortlist.num_queries)
    print(
        f"re-ranked {shortlist.num_queries} queries (top {min(params.topk, shortlist.length)} of "
        f"{shortlist.length}, window {params.window}, stride {params.stride}, {params.order}) "
        f"with {args.model} on {kind}: {per_query:.1f} model calls per query, "
        f"{elapsed:.2f} s -> {args.output}"
    )
    return 0
