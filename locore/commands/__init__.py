"""The command layer: one small module per ``locore`` command, loaded only when it runs.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and does nothing but
parse, call the library API and print; everything a flag does, a Python caller can do.
Argument groups shared by several commands (re-ranking parameters, backend, progress) live in
:mod:`locore.commands.args`, so every command has the same flags with the same defaults.
"""

from __future__ import annotations

# name -> (module implementing it, one-line help). Modules are imported only when their
# command runs, so ``locore --version`` and ``locore info`` never import torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("locore.commands.info", "show presets, installed backends and what is missing"),
    "demo": ("locore.commands.demo", "run the built-in real-photo re-ranking benchmark"),
    "build-plugins": (
        "locore.commands.build_plugins",
        "build the SelectiveScan CPU/CUDA libraries and TensorRT plugin",
    ),
    "rerank": ("locore.commands.rerank", "re-rank shortlists with an exported model"),
    "index": ("locore.commands.index", "index a folder of images or a video for visual search"),
    "search": ("locore.commands.search", "search an index with one image, re-ranked"),
    "serve": ("locore.commands.serve", "the visual-search web page on an index"),
    "profile": ("locore.commands.profile", "trtexec-style latency per window or pipeline stage"),
    "eval": ("locore.commands.eval", "re-rank and score AMES/LOCORE files on official protocols"),
    "train": ("locore.commands.train", "train a re-ranker on AMES/LOCORE feature files"),
    "export": ("locore.commands.export", "export a checkpoint to ONNX (portable or plugin flavor)"),
    "build": (
        "locore.commands.build",
        "build a TensorRT engine from an ONNX model (trtexec flags; --print-trtexec)",
    ),
    "calibrate": (
        "locore.commands.calibrate",
        "make the FP16 or INT8 (Q/DQ) variant of an ONNX model",
    ),
}
