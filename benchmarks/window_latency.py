"""Latency of one 100-image re-ranking window: ORT runtime vs torch eager vs LOCORE's Longformer.

One window is the query plus W = 100 gallery images of Nd = 48 descriptors, i.e. 101 x (Nd + 2)
= 5,050 tokens. For each preset, the same random-weight model runs (a) exported to portable ONNX
in ONNX Runtime (CPU EP) and (b) in torch eager; (c) is the LOCORE-small architecture: a
`transformers` LongformerModel, 6 layers x 768, attention window 512, global attention on the
query's tokens and every SEP token, random weights, fed the same number of tokens.

The backends run interleaved, round after round, so that machine noise hits all of them alike;
the script prints medians and ratios measured in this one run.

    python benchmarks/window_latency.py [--presets tiny small] [--rounds 7] [--window 100]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from locore import LocoreConfig
from locore.export import example_inputs, export_onnx
from locore.model import LocoreReranker


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def longformer_runner(num_tokens: int, query_tokens: int, tokens_per_image: int):
    from transformers import LongformerConfig, LongformerModel

    window = 512
    padded = -(-num_tokens // window) * window
    cfg = LongformerConfig(
        attention_window=window,
        num_hidden_layers=6,
        hidden_size=768,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=padded + 4,
        vocab_size=8,
    )
    model = LongformerModel(cfg).eval()
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, num_tokens, 768, generator=g)
    attn = torch.ones(1, num_tokens, dtype=torch.long)
    glob = torch.zeros(1, num_tokens, dtype=torch.long)
    glob[0, :query_tokens] = 1  # the query's tokens
    glob[0, tokens_per_image - 1 :: tokens_per_image] = 1  # every SEP token

    def run() -> None:
        with torch.no_grad():
            model(inputs_embeds=embeds, attention_mask=attn, global_attention_mask=glob)

    return run, int(glob.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--window", type=int, default=100, help="gallery images per window")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--no-longformer", action="store_true")
    args = parser.parse_args()

    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {threads} threads")
    runners: dict[str, Callable[[], object]] = {}
    tokens = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            torch.manual_seed(0)
            model = LocoreReranker(LocoreConfig.preset(name)).eval()
            cfg = model.config
            tokens = cfg.sequence_length(args.window)
            res = export_onnx(model, Path(tmp) / f"{name}.onnx", flavor="portable")
            inputs = example_inputs(cfg, res.io, batch=1, num_gallery=args.window)
            feeds = {s.name: t.numpy() for s, t in zip(res.io.inputs, inputs, strict=True)}
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            sess = ort.InferenceSession(str(res.path), opts, providers=["CPUExecutionProvider"])

            def run_ort(sess=sess, feeds=feeds) -> object:
                return sess.run(None, feeds)

            def run_torch(model=model, inputs=inputs) -> object:
                with torch.no_grad():
                    return model(*inputs)

            runners[f"{name}: ORT runtime (portable ONNX)"] = run_ort
            runners[f"{name}: torch eager"] = run_torch
            ort_out = np.asarray(run_ort()[0])  # type: ignore[index]
            torch_out = np.asarray(run_torch())
            err = np.abs(ort_out - torch_out).max() / np.abs(torch_out).max()
            print(f"{name}: {tokens} tokens per window, ORT vs torch max rel err {err:.2e}")
        if not args.no_longformer:
            nd = LocoreConfig.preset(args.presets[0]).num_desc
            run_lf, n_global = longformer_runner(tokens, nd + 2, nd + 2)
            runners["LOCORE-small Longformer (6x768, w512), torch"] = run_lf
            print(f"Longformer: {tokens} tokens, {n_global} global")

        for fn in runners.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in runners}
        for r in range(args.rounds):
            for key, fn in runners.items():
                times[key].append(_timed(fn))
            print(f"round {r + 1}/{args.rounds} done", flush=True)

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    base = next(iter(med.values()))
    lf = next((v for k, v in med.items() if "Longformer" in k), None)
    print(f"\nper-window latency, {args.window}-image window, median of {args.rounds} rounds")
    header = f"{'runner':48s} {'median ms':>10s} {'x first':>8s}"
    if lf:
        header += f" {'Longformer / this':>18s}"
    print(header)
    for key, value in med.items():
        line = f"{key:48s} {value:10.1f} {value / base:8.2f}"
        if lf:
            line += f" {lf / value:18.2f}"
        print(line)


if __name__ == "__main__":
    main()
