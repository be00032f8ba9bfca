"""``locore index``: local + global features of a folder of images (or a video) into an index.

A thin layer over :func:`locore.runtime.search_index.build_index`: incremental (unchanged
images are kept, removed ones dropped, new ones appended), resumable (a killed run keeps every
committed segment; run it again), with a progress bar. ``--demo`` indexes the database images
of the built-in demo benchmark and offers its query crops on the web page (``locore serve``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from locore.commands.args import add_progress_argument, int_at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        type=Path,
        nargs="?",
        help="a folder of images (searched recursively) or a video file",
    )
    parser.add_argument(
        "--output", "-o", type=Path, required=True, help="the index folder (created or updated)"
    )
    parser.add_argument(
        "--demo",
        choices=("test", "train"),
        default=None,
        help="index the database images of the demo benchmark's split instead of SOURCE "
        "(its query crops become the web page's sample queries; needs locore-edge[demo])",
    )
    parser.add_argument(
        "--every",
        type=int_at_least(1),
        default=10,
        help="videos: index every n-th frame (default %(default)s)",
    )
    parser.add_argument(
        "--num-desc",
        type=int_at_least(1),
        default=48,
        help="local descriptors stored per image (default %(default)s, LOCORE's)",
    )
    parser.add_argument(
        "--codebook",
        type=Path,
        default=None,
        help="a VLAD codebook (.npz) to use (default: fitted on the first images indexed)",
    )
    parser.add_argument(
        "--flush-every",
        type=int_at_least(1),
        default=64,
        help="images per committed segment: what a killed run can lose (default %(default)s)",
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="start over (e.g. with other --num-desc)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="--demo: the demo cache (default: $LOCORE_CACHE/demo or ~/.cache/locore-edge/demo)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    from locore.errors import UsageError
    from locore.runtime.search_index import ExtractorSettings, build_index

    samples: list[Path] = []
    if args.demo is not None:
        if args.source is not None:
            raise UsageError("give either SOURCE or --demo, not both")
        from locore.runtime.demo import build_demo

        split = build_demo(args.cache_dir, args.demo)
        source = split.root / "db"
        samples = list(split.query_paths)
    elif args.source is None:
        raise UsageError("give a folder of images or a video to index (or --demo test)")
    else:
        source = args.source
    report = build_index(
        source,
        args.output,
        settings=ExtractorSettings(num_desc=args.num_desc),
        every=args.every,
        codebook=args.codebook,
        flush_every=args.flush_every,
        sample_queries=samples,
        rebuild=args.rebuild,
        progress=not args.no_progress,
    )
    print(
        f"{report.index}: {report.total} images ({report.added} added, {report.kept} kept, "
        f"{report.removed} removed, {len(report.skipped)} skipped) in {report.seconds:.1f} s"
    )
    for line in report.skipped[:10]:
        print(f"  skipped {line}")
    if args.json is not None:
        from locore.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    return 0
