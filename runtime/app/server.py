"""The visual-search web app: a static page and a JSON API over one index (Flask).

Routes (every ``/api`` answer is JSON; errors are ``{"error": message}`` with a 4xx status,
never a 500 for bad input)::

    GET  /                         the page (static/index.html, app.js, app.css; no build step)
    GET  /api/info                 index, model, limits, sample queries, whether logits exist
    GET  /api/gallery?offset&limit gallery images [{id, name}]
    POST /api/search               multipart ``image`` (an upload) or form ``sample`` / ``gallery``
                                   -> query token, shortlist before and after re-ranking, ms
    GET  /api/match?query&gallery  the match view of a query and one gallery image
    GET  /api/image/<kind>/<id>    JPEG of a gallery image, a sample or a query (``?size=``)

Uploads: at most ``max_upload_bytes`` (413 above), JPEG/PNG/BMP/WebP checked from the bytes,
at least 32x32 and at most 64 MP (checked from the header, before decoding).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from locore.deps import require
from locore.runtime.local_features import FeatureError, LocalFeatures
from locore.runtime.search_index import (
    MAX_IMAGE_PIXELS,
    MIN_QUERY_SIDE,
    Index,
    QueryImageError,
    decode_image,
    descriptor_matches,
    pair_token_logits,
)

if TYPE_CHECKING:
    from locore.runtime.sliding_windows import Reranker

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_QUERIES = 32  # uploaded queries kept for the match view (least recently used dropped)
THUMB_SIDE = 256
SERVE_HINT = "pip install 'locore-edge[serve]'"


class ApiError(Exception):
    """An error answered as JSON ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class _Query:
    image: np.ndarray  # BGR, as decoded
    features: LocalFeatures
    label: str


def _jpeg(image: np.ndarray, side: int) -> bytes:
    cv2 = require("cv2")
    h, w = image.shape[:2]
    scale = side / max(h, w)
    if scale < 1.0:
        image = cv2.resize(
            image,
            (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA,
        )
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ApiError("could not encode the image as JPEG", 500)
    return bytes(buf.tobytes())


class SearchService:
    """What the routes call: the index, the re-ranker and the uploaded queries (thread-safe)."""

    def __init__(
        self,
        index: Index,
        reranker: Reranker | None,
        *,
        shortlist: int = 100,
        model_name: str = "",
    ) -> None:
        self.index = index
        self.reranker = reranker
        self.shortlist = shortlist
        self.model_name = model_name
        self.samples = index.sample_queries
        self._queries: OrderedDict[str, _Query] = OrderedDict()
        self._lock = threading.Lock()  # one search at a time (OpenCV SIFT, ONNX Runtime)
        self._counter = 0
        backend = reranker.backend if reranker is not None else None
        self.has_token_logits = backend is not None and "token_logits" in backend.output_names()

    # ---- facts ------------------------------------------------------------------------------
    def info(self, max_upload_bytes: int) -> dict[str, Any]:
        backend = self.reranker.backend if self.reranker is not None else None
        return {
            "index": self.index.describe(),
            "model": None
            if backend is None
            else {
                "name": self.model_name,
                "path": str(backend.path),
                "backend": backend.kind,
                "config": backend.config.name,
                "num_desc": backend.config.num_desc,
                "desc_dim": backend.config.desc_dim,
                "token_logits": self.has_token_logits,
                "params": self.reranker.params.to_dict() if self.reranker else None,
            },
            "shortlist": self.shortlist,
            "limits": {
                "max_upload_bytes": max_upload_bytes,
                "min_side": MIN_QUERY_SIDE,
                "max_pixels": MAX_IMAGE_PIXELS,
                "types": ["image/jpeg", "image/png", "image/bmp", "image/webp"],
            },
            "samples": [{"id": i, "name": p.name} for i, p in enumerate(self.samples)],
        }

    def warm_up(self) -> float:
        """One search with the first gallery image's features (ONNX Runtime's first call is
        slow); returns its milliseconds (0 for an empty index)."""
        if not len(self.index):
            return 0.0
        t0 = time.perf_counter()
        with self._lock:
            self.index.search(self.index.features([0])[0], self.reranker, shortlist=self.shortlist)
        return 1e3 * (time.perf_counter() - t0)

    # ---- queries ----------------------------------------------------------------------------
    def _remember(self, query: _Query) -> str:
        self._counter += 1
        token = f"q{self._counter}"
        self._queries[token] = query
        while len(self._queries) > MAX_QUERIES:
            self._queries.popitem(last=False)
        return token

    def query(self, token: str) -> _Query:
        found = self._queries.get(token)
        if found is None:
            raise ApiError(f"unknown or expired query {token!r}; search again", 404)
        self._queries.move_to_end(token)
        return found

    def gallery_image(self, i: int, *, query: bool = False) -> np.ndarray:
        if not 0 <= i < len(self.index):
            raise ApiError(f"no gallery image {i}; the index holds {len(self.index)}", 404)
        path = self.index.image_path(i)
        try:
            return decode_image(path.read_bytes(), str(path), query=query)
        except FileNotFoundError as exc:
            raise ApiError(f"gallery image {i} ({path}) is gone from the disk", 404) from exc

    def sample_image(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self.samples):
            raise ApiError(f"no sample query {i}; there are {len(self.samples)}", 404)
        path = self.samples[i]
        return decode_image(path.read_bytes(), str(path))

    # ---- search and match -------------------------------------------------------------------
    def search(self, image: np.ndarray, label: str, top: int) -> dict[str, Any]:
        with self._lock:
            t0 = time.perf_counter()
            features = self.index.query_features(image)
            extract_ms = 1e3 * (time.perf_counter() - t0)
            result = self.index.search(features, self.reranker, shortlist=self.shortlist)
            result.timings["extract_ms"] = extract_ms
            result.timings["total_ms"] += extract_ms
            token = self._remember(_Query(image, features, label))
        data = result.to_dict(self.index, top)
        return {
            "query": token,
            "label": label,
            "size": [int(image.shape[0]), int(image.shape[1])],
            **data,
        }

    def match(self, token: str, gallery_id: int, top: int = 40) -> dict[str, Any]:
        query = self.query(token)
        if not 0 <= gallery_id < len(self.index):
            raise ApiError(f"no gallery image {gallery_id}; the index holds {len(self.index)}", 404)
        gallery = self.index.features([gallery_id])[0]
        matches = descriptor_matches(query.features, gallery, top=top)
        logits = None
        if self.reranker is not None and self.has_token_logits:
            with self._lock:
                got = pair_token_logits(self.reranker.backend, query.features, gallery)
            if got is not None:
                q_logits, g_logits, score = got
                logits = {
                    "query": [None if np.isnan(v) else round(float(v), 4) for v in q_logits],
                    "gallery": [None if np.isnan(v) else round(float(v), 4) for v in g_logits],
                    "pair_score": round(score, 4),
                }
        if logits is not None:
            note = (
                "This image's keypoints are coloured by the model's token logit (the query and "
                "this image scored as a pair: red low, green high; query tokens are not trained "
                "to score, so the query's are drawn blue); lines join mutual best cosine "
                "matches of the descriptors."
            )
        elif self.reranker is None:
            note = "No model loaded (--no-rerank): lines join mutual best cosine matches."
        else:
            note = (
                "This model file has no token_logits output, so no logits are shown: lines join "
                "mutual best cosine matches of the descriptors (computed from the descriptors, "
                "not by the model)."
            )

        def points(f: LocalFeatures) -> list[list[float]]:
            return [[round(float(x), 4), round(float(y), 4)] for x, y in f.xy[f.mask]]

        return {
            "query": token,
            "gallery": gallery_id,
            "gallery_name": self.index.images[gallery_id].name,
            "query_points": points(query.features),
            "gallery_points": points(gallery),
            "query_valid": np.flatnonzero(query.features.mask).tolist(),
            "gallery_valid": np.flatnonzero(gallery.mask).tolist(),
            "matches": matches,
            "token_logits": logits,
            "shown": "token_logits+cosine" if logits is not None else "cosine",
            "note": note,
        }


def create_app(
    index: Index,
    reranker: Reranker | None = None,
    *,
    shortlist: int = 100,
    max_upload_bytes: int = 20 * 1024 * 1024,
    model_name: str = "",
) -> Any:
    """The Flask app over ``index`` (``reranker`` None: global search only)."""
    flask = require("flask", f"locore serve ({SERVE_HINT})")
    from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

    app = flask.Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes
    service = SearchService(index, reranker, shortlist=shortlist, model_name=model_name)
    app.extensions["locore_search"] = service

    def error(message: str, status: int) -> Any:
        return flask.jsonify({"error": message}), status

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Any:
        return error(exc.message, exc.status)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: Exception) -> Any:
        mb = max_upload_bytes / (1024 * 1024)
        return error(f"the upload is larger than {mb:.0f} MB; send a smaller image", 413)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        if flask.request.path.startswith("/api/"):
            return error(f"{exc.name}: {exc.description}", exc.code or 500)
        return exc

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unexpected error on %s", flask.request.path)
        return error(f"internal error ({type(exc).__name__}: {exc}); see the server log", 500)

    @app.get("/")
    def page() -> Any:
        return flask.send_from_directory(str(STATIC), "index.html")

    @app.get("/api/info")
    def info() -> Any:
        return flask.jsonify(service.info(max_upload_bytes))

    @app.get("/api/gallery")
    def gallery() -> Any:
        offset = _int_arg(flask.request.args, "offset", 0, 0)
        limit = _int_arg(flask.request.args, "limit", 48, 1, 500)
        items = [
            {"id": i, "name": index.images[i].name}
            for i in range(offset, min(offset + limit, len(index)))
        ]
        return flask.jsonify({"total": len(index), "offset": offset, "images": items})

    @app.post("/api/search")
    def search() -> Any:
        req = flask.request
        top = _int_arg(req.form, "top", 10, 1, 100)
        upload = req.files.get("image")
        try:
            if upload is not None and upload.filename:
                data = upload.read()
                image = decode_image(data, f"the upload {upload.filename!r}")
                label = upload.filename
            elif req.form.get("sample") not in (None, ""):
                i = _int_arg(req.form, "sample", 0, 0)
                image, label = service.sample_image(i), service.samples[i].name
            elif req.form.get("gallery") not in (None, ""):
                i = _int_arg(req.form, "gallery", 0, 0)
                image = service.gallery_image(i, query=True)
                label = index.images[i].name
            else:
                raise ApiError("send an image file (field 'image'), a sample or a gallery id")
            return flask.jsonify(service.search(image, label, top))
        except (QueryImageError, FeatureError) as exc:
            status = 415 if "is not a JPEG" in str(exc) or "is empty" in str(exc) else 400
            raise ApiError(str(exc), status) from exc

    @app.get("/api/match")
    def match() -> Any:
        token = flask.request.args.get("query", "")
        gid = _int_arg(flask.request.args, "gallery", 0, 0)
        return flask.jsonify(service.match(token, gid))

    @app.get("/api/image/<kind>/<ident>")
    def image(kind: str, ident: str) -> Any:
        side = _int_arg(flask.request.args, "size", THUMB_SIDE, 16, 2048)
        if kind == "query":
            img = service.query(ident).image
        elif kind in ("gallery", "sample"):
            try:
                number = int(ident)
            except ValueError as exc:
                raise ApiError(f"{kind} id must be an integer, got {ident!r}", 400) from exc
            img = (
                service.gallery_image(number)
                if kind == "gallery"
                else (service.sample_image(number))
            )
        else:
            raise ApiError(f"unknown image kind {kind!r}: gallery, sample or query", 404)
        response = flask.make_response(_jpeg(img, side))
        response.headers["Content-Type"] = "image/jpeg"
        response.headers["Cache-Control"] = "max-age=3600" if kind != "query" else "no-store"
        return response

    return app


def _int_arg(source: Any, name: str, default: int, low: int, high: int | None = None) -> int:
    raw = source.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise ApiError(f"{name} must be an integer, got {raw!r}") from exc
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise ApiError(f"{name} must be {bound}, got {value}")
    return value


class Server:
    """A threaded WSGI server for the app (werkzeug's); ``port`` is the bound port."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        from werkzeug.serving import make_server as _make

        self._server = _make(host, port, app, threaded=True)
        self.host = host
        self.port = int(self._server.server_port)

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self) -> None:
        self._server.shutdown()

    def server_close(self) -> None:
        self._server.server_close()


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8000) -> Server:
    """A server for ``app`` bound to ``host:port`` (port 0: any free port)."""
    require("werkzeug", f"locore serve ({SERVE_HINT})")
    return Server(app, host, port)
