"""The visual-search web app (``locore serve``): a Flask app over a search index.

:func:`create_app` builds the app (a static page and a JSON API) over an opened
:class:`~locore.runtime.search_index.Index` and an optional
:class:`~locore.runtime.sliding_windows.Reranker`; :func:`make_server` serves it. Flask is
imported only when an app is created (``pip install 'locore-edge[serve]'``).
"""

from __future__ import annotations

from locore.runtime.app.server import ApiError, SearchService, Server, create_app, make_server

__all__ = ["ApiError", "SearchService", "Server", "create_app", "make_server"]
