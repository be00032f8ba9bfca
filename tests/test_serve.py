"""The web app's JSON API (Flask test client): search, match view, and every bad input.

The browser drives the page in tests/test_browser_serve.py; here each route is checked for
what it returns and that bad input gets a 4xx JSON error with a message, never a 500.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.test_index_support import demo_index, demo_subset, token_logits_onnx

pytest.importorskip("flask", reason="Flask is not installed (extra 'serve')")


@pytest.fixture(scope="module")
def client(demo_cache: Path):
    from locore.runtime.app import create_app
    from locore.runtime.backends import create_backend
    from locore.runtime.search_index import open_index
    from locore.runtime.sliding_windows import Reranker, RerankParams

    index = open_index(demo_index(demo_cache))
    backend = create_backend(token_logits_onnx(demo_cache), threads=2)
    reranker = Reranker(backend, RerankParams(topk=40, window=40, stride=20), clip_scales=True)
    app = create_app(index, reranker, shortlist=40, max_upload_bytes=2 * 1024 * 1024)
    yield app.test_client()
    index.close()
    backend.close()


def _upload(client, data: bytes, name: str = "q.jpg"):
    return client.post(
        "/api/search",
        data={"image": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
    )


@pytest.mark.slow
def test_search_and_match_view(client, demo_cache: Path) -> None:
    _, queries, query_sources, source_of = demo_subset(demo_cache)
    page = client.get("/")
    assert page.status_code == 200 and b"locore-edge visual search" in page.data
    info = client.get("/api/info").get_json()
    assert info["index"]["images"] == 96 and info["model"]["token_logits"] is True
    assert len(info["samples"]) == len(queries)
    r = _upload(client, queries[9].read_bytes())
    assert r.status_code == 200, r.get_json()
    data = r.get_json()
    assert len(data["reranked"]) == 10 and len(data["shortlist"]) == 10
    assert source_of[data["reranked"][0]["name"]] == query_sources[9]
    assert {"extract_ms", "global_ms", "rerank_ms", "total_ms"} <= set(data["timings_ms"])
    best = data["reranked"][0]["id"]
    m = client.get(f"/api/match?query={data['query']}&gallery={best}").get_json()
    assert m["shown"] == "token_logits+cosine" and "token logit" in m["note"]
    assert len(m["token_logits"]["gallery"]) == 48 and m["matches"]
    assert all(0 <= v <= 1 for match in m["matches"] for v in match["q_xy"] + match["g_xy"])
    # a sample query and a gallery image as the query
    assert client.post("/api/search", data={"sample": "0"}).status_code == 200
    picked = client.post("/api/search", data={"gallery": str(best)}).get_json()
    assert picked["reranked"][0]["id"] == best
    thumb = client.get(f"/api/image/gallery/{best}?size=64")
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(thumb.data, np.uint8), cv2.IMREAD_COLOR)
    assert max(img.shape[:2]) == 64
    assert client.get(f"/api/image/query/{data['query']}").status_code == 200


def _huge_png(width: int, height: int) -> bytes:
    """A real, decodable gray PNG of ``width`` x ``height`` zeros (small once compressed)."""
    row = b"\x00" * (width + 1)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.slow
def test_bad_inputs_get_clear_json_errors(client) -> None:
    cases = []
    r = _upload(client, b"#!/bin/sh\necho not an image\n", "script.sh")
    cases.append((r, 415, "is not a JPEG, PNG, BMP or WebP"))
    ok, one = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))
    cases.append((_upload(client, one.tobytes(), "dot.png"), 400, "1x1 pixels"))
    huge = _huge_png(9000, 8000)  # 72 MP, about 70 kB compressed
    assert len(huge) < 2 * 1024 * 1024
    cases.append((_upload(client, huge, "huge.png"), 400, "9000x8000 pixels (72 MP)"))
    big = b"\xff\xd8" + bytes(3 * 1024 * 1024)  # over this app's 2 MB upload limit
    cases.append((_upload(client, big, "big.jpg"), 413, "larger than 2 MB"))
    cases.append((client.post("/api/search", data={}), 400, "send an image file"))
    cases.append((client.post("/api/search", data={"gallery": "x"}), 400, "must be an integer"))
    cases.append((client.post("/api/search", data={"gallery": "9999"}), 404, "no gallery image"))
    cases.append((client.get("/api/match?query=nope&gallery=1"), 404, "unknown or expired"))
    cases.append((client.get("/api/image/gallery/-3"), 404, "no gallery image"))
    cases.append((client.get("/api/image/other/1"), 404, "unknown image kind"))
    cases.append((client.get("/api/nothing"), 404, "Not Found"))
    for response, status, text in cases:
        body = response.get_json()
        assert response.status_code == status, (text, response.status_code, body)
        assert text in body["error"], (text, body)


def test_serve_cli_refuses_a_missing_index(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "locore", "serve", "--index", str(tmp_path / "none"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
