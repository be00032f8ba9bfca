"""``locore search``: one query image against an index: global shortlist, then re-ranking.

Prints the ranks with fused scores, global similarities and the global rank each image had,
and the milliseconds of each stage (features, global search, re-ranking). The model defaults
to the shipped one, exported to ONNX on first use (with its token-logits output, which
``locore serve`` shows; this needs torch once, as ``locore demo`` does).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from locore.commands.args import (
    add_backend_arguments,
    add_rerank_arguments,
    backend_options,
    int_at_least,
    rerank_params,
)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--index --model --shortlist --no-rerank --cache-dir + re-ranking and engine groups."""
    parser.add_argument("--index", type=Path, required=True, help="the index folder")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="ONNX file or checkpoint folder (default: the shipped model)",
    )
    parser.add_argument(
        "--shortlist",
        type=int_at_least(1),
        default=100,
        help="global shortlist length K, all re-ranked (default %(default)s)",
    )
    parser.add_argument(
        "--no-rerank", action="store_true", help="global search only (no model is loaded)"
    )
    parser.add_argument(
        "--global-search",
        choices=("auto", "exact", "faiss-flat", "faiss-ivf", "faiss-hnsw"),
        default="auto",
        help="global search (default: exact below the faiss threshold, faiss above it)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the exported model is cached (default: the demo cache)",
    )
    add_rerank_arguments(parser, with_topk=False)
    add_backend_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", type=Path, help="the query image (JPEG, PNG, BMP, WebP)")
    add_model_arguments(parser)
    parser.add_argument(
        "--top", type=int_at_least(1), default=10, help="results printed (default %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def model_onnx(model: Path | None, cache_dir: Path | None) -> tuple[Path, dict[str, float]]:
    """(ONNX file, the checkpoint's recorded fusion) of ``--model``; a checkpoint folder (the
    shipped model by default) is exported once with its token-logits output and cached."""
    from locore.checkpoint_format import checkpoint_fusion, is_checkpoint_dir, shipped_model_dir
    from locore.runtime.demo.dataset import default_cache_dir

    model = model if model is not None else shipped_model_dir()
    if not model.exists():
        raise FileNotFoundError(f"model {model} does not exist; give an ONNX file or checkpoint")
    if not is_checkpoint_dir(model):
        return model, {}
    from locore.checkpoint_format import checkpoint_digest

    cache = (cache_dir if cache_dir is not None else default_cache_dir()) / "models"
    path = cache / f"{model.name}-{checkpoint_digest(model)}-portable-tokens.onnx"
    if not path.is_file():
        try:
            from locore.export import export_onnx
        except ImportError as exc:
            from locore.deps import MissingDependencyError

            raise MissingDependencyError(
                f"the checkpoint {model} is exported to ONNX on first use, which needs torch: "
                f"pip install 'locore-edge[export]' ({exc})"
            ) from exc
        print(f"exporting {model} to {path} (first use, about 30 s)", file=sys.stderr)
        export_onnx(model, path, with_token_logits=True)
    return path, checkpoint_fusion(model)


def open_searcher(args: argparse.Namespace) -> tuple[Any, Any]:
    """(index, reranker or None) for the model and index flags of :func:`add_model_arguments`."""
    from locore.runtime.backends import create_backend
    from locore.runtime.search_index import open_index
    from locore.runtime.sliding_windows import Reranker

    index = open_index(args.index, args.global_search)
    if args.no_rerank:
        return index, None
    try:
        onnx_path, fusion = model_onnx(args.model, args.cache_dir)
        backend = create_backend(onnx_path, args.backend, **backend_options(args))
        try:
            index.check_model(backend.config, str(args.model or "the shipped model"))
            params = rerank_params(args, topk=args.shortlist, fusion=fusion)
            return index, Reranker(backend, params, clip_scales=True)
        except BaseException:
            backend.close()
            raise
    except BaseException:
        index.close()
        raise


def run(args: argparse.Namespace) -> int:
    index, reranker = open_searcher(args)
    try:
        result = index.search(args.query, reranker, shortlist=args.shortlist)
        data = result.to_dict(index, args.top)
    finally:
        index.close()
        if reranker is not None:
            reranker.backend.close()
    if args.json:
        print(json.dumps({"query": str(args.query), **data}, indent=2))
        return 0
    rows = data["reranked"] or data["shortlist"]
    what = "re-ranked" if data["reranked"] else "global shortlist"
    print(f"{args.query}: {len(index)} images, {what} (top {len(rows)})")
    print(f"{'rank':>4}  {'score':>8}  {'global':>8}  {'was':>4}  image")
    for r in rows:
        print(
            f"{r['rank']:4d}  {r['score']:8.4f}  {r['global_sim']:8.4f}  "
            f"{r['global_rank']:4d}  {r['file']}"
        )
    print(
        "ms: "
        + "  ".join(f"{k.removesuffix('_ms')} {v:.1f}" for k, v in data["timings_ms"].items())
    )
    return 0
