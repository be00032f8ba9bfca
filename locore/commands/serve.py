"""``locore serve``: the visual-search web page on an index (Flask; ``locore-edge[serve]``).

Pick or upload a query, see the shortlist before and after re-ranking with scores and
timings, and which query descriptors matched which gallery descriptors. A JSON API sits beside
the page (``/api/...``, see :mod:`locore.runtime.app`). Bound to 127.0.0.1 by default.
"""

from __future__ import annotations

import argparse
import logging

from locore.commands.args import int_at_least
from locore.commands.search import add_model_arguments, open_searcher

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address (default %(default)s)")
    parser.add_argument(
        "--port", type=int_at_least(0), default=8000, help="port (default %(default)s; 0: any)"
    )
    parser.add_argument(
        "--max-upload-mb",
        type=int_at_least(1),
        default=20,
        help="largest upload accepted, in MB (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from locore.runtime.app import create_app, make_server

    if args.port > 65535:
        from locore.errors import UsageError

        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    index, reranker = open_searcher(args)
    try:
        app = create_app(
            index,
            reranker,
            shortlist=args.shortlist,
            max_upload_bytes=args.max_upload_mb * 1024 * 1024,
            model_name=str(args.model) if args.model else "the shipped model (demo-tiny)",
        )
        server = make_server(app, args.host, args.port)
        app.extensions["locore_search"].warm_up()
        if args.host not in LOCAL_HOSTS:
            print(f"warning: serving on {args.host}, reachable from other machines")
        print(f"serving {len(index)} images on http://{args.host}:{server.port}/ (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped")
        finally:
            server.server_close()
    finally:
        index.close()
        if reranker is not None:
            reranker.backend.close()
    return 0
