"""Accuracy and latency of precision variants against their FP32 model, in ONNX Runtime on the CPU.

:func:`compare_windows` scores held-out windows with the FP32 model and each variant and reports,
per variant: max / mean absolute score error, per-window Kendall tau of the gallery order, and
top-10 overlap. :func:`interleaved_latency` times one window per precision in turn, round after
round (so drift of a noisy machine hits every precision alike), and reports medians and ratios
to FP32. :func:`ort_fallbacks` lists what ONNX Runtime's CPU provider did with the variant's
ops (fused integer MatMuls, FP16 ops run in FP32 through inserted casts). :func:`precision_report`
writes all of it, the demo test split's mAP (portable flavor) and a scatter PNG of FP32 vs
variant scores into a folder.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from locore.calibration.sets import CalibrationSet

log = logging.getLogger(__name__)

__all__ = [
    "WindowComparison",
    "compare_windows",
    "interleaved_latency",
    "kendall_tau",
    "op_time_shares",
    "open_session",
    "ort_fallbacks",
    "precision_report",
    "top_k_overlap",
]

TOP_K = 10


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b between two score vectors [G] (1.0: the same order)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size < 2:
        return 1.0
    i, j = np.triu_indices(a.size, k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    concordant = float(np.sum(da * db))
    pairs_a, pairs_b = float(np.sum(da != 0)), float(np.sum(db != 0))
    if pairs_a == 0 or pairs_b == 0:
        return 1.0 if pairs_a == pairs_b else 0.0
    return concordant / np.sqrt(pairs_a * pairs_b)


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = TOP_K) -> float:
    """|top-k(a) ∩ top-k(b)| / k (k capped at the vector length)."""
    k = min(k, a.size)
    if k == 0:
        return 1.0
    return len(set(np.argsort(-a)[:k].tolist()) & set(np.argsort(-b)[:k].tolist())) / k


def open_session(
    path: str | Path, threads: int | None = None, optimized: Path | None = None
) -> Any:
    """An ONNX Runtime CPU session for ``path`` (plugin flavor: through pluginref).

    ``optimized``: where ONNX Runtime writes the graph it will run (portable flavor only)."""
    import onnx
    import onnxruntime as ort

    from locore.calibration.graph import scan_nodes

    proto = onnx.load(str(path), load_external_data=False)
    if any(True for _ in scan_nodes(proto)):
        from locore.runtime.backends.pluginref import pluginref_session

        return pluginref_session(path, threads=threads)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


@dataclass
class WindowComparison:
    """One variant against FP32 on held-out windows."""

    precision: str
    windows: int
    max_abs_error: float
    mean_abs_error: float
    kendall_tau_mean: float
    kendall_tau_min: float
    top10_overlap_mean: float
    top10_overlap_min: float
    score_range: tuple[float, float]


def _scores(session: Any, windows: Sequence[Mapping[str, np.ndarray]]) -> list[np.ndarray]:
    names = {i.name for i in session.get_inputs()}
    return [
        session.run(None, {k: v for k, v in w.items() if k in names})[0][0].astype(np.float64)
        for w in windows
    ]


def compare_windows(
    fp32: str | Path,
    variants: Mapping[str, str | Path],
    heldout: CalibrationSet,
    threads: int | None = None,
) -> tuple[list[WindowComparison], dict[str, list[np.ndarray]]]:
    """Per-variant score errors and ranking agreement with ``fp32`` on ``heldout``'s windows;
    also returns every model's scores per window (key ``"fp32"`` and each variant)."""
    windows = list(heldout.windows())
    scores = {"fp32": _scores(open_session(fp32, threads), windows)}
    out = []
    for precision, path in variants.items():
        got = _scores(open_session(path, threads), windows)
        scores[precision] = got
        err = np.concatenate([np.abs(g - r) for g, r in zip(got, scores["fp32"], strict=True)])
        taus = [kendall_tau(r, g) for r, g in zip(scores["fp32"], got, strict=True)]
        tops = [top_k_overlap(r, g) for r, g in zip(scores["fp32"], got, strict=True)]
        ref = np.concatenate(scores["fp32"])
        out.append(
            WindowComparison(
                precision, len(windows), float(err.max()), float(err.mean()),
                float(np.mean(taus)), float(np.min(taus)), float(np.mean(tops)),
                float(np.min(tops)), (float(ref.min()), float(ref.max())),
            )
        )  # fmt: skip
    return out, scores


def interleaved_latency(
    models: Mapping[str, str | Path],
    window: Mapping[str, np.ndarray],
    rounds: int = 10,
    warmup: int = 2,
    threads: int | None = None,
) -> dict[str, dict[str, float]]:
    """Median milliseconds per window of each model, timed in turn every round; with the ratio
    ``fp32 / model`` (> 1: faster than FP32) when a ``"fp32"`` model is given."""
    sessions = {name: open_session(path, threads) for name, path in models.items()}
    feeds = {}
    for name, session in sessions.items():
        inputs = {i.name for i in session.get_inputs()}
        feeds[name] = {k: v for k, v in window.items() if k in inputs}
        for _ in range(warmup):
            session.run(None, feeds[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds[name])
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, seconds in times.items():
        out[name] = {"median_ms": statistics.median(seconds) * 1e3}
    if "fp32" in out:
        for name in out:
            out[name]["speedup_vs_fp32"] = out["fp32"]["median_ms"] / out[name]["median_ms"]
    return out


def ort_fallbacks(path: str | Path) -> dict[str, Any]:
    """What ONNX Runtime's CPU provider runs for the model at ``path`` (portable flavor): op
    counts of its optimized graph, the integer MatMuls it fused from Q/DQ, the dense MatMuls
    left in float, and the FP16 ops it runs in FP32 through casts it inserted (no FP16 kernel)."""
    import onnx

    from locore.calibration.graph import scan_nodes

    if any(True for _ in scan_nodes(onnx.load(str(path), load_external_data=False))):
        return {"skipped": "plugin flavor: ONNX Runtime runs its scan nodes only through pluginref"}
    with tempfile.TemporaryDirectory(prefix="locore-ort-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        try:
            open_session(path, threads=1, optimized=optimized)
            proto = onnx.load(str(optimized))
        except Exception as exc:  # noqa: BLE001 - a report line, not a failure
            return {"error": f"{type(exc).__name__}: {exc}"}
    counts = Counter(
        f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in proto.graph.node
    )
    producers = {o: n for n in proto.graph.node for o in n.output}
    fallback: Counter[str] = Counter()
    for node in proto.graph.node:
        if node.op_type == "Cast":
            continue
        for name in node.input:
            src = producers.get(name)
            if (
                src is not None
                and src.op_type == "Cast"
                and "InsertedPrecisionFreeCast" in src.name
            ):
                fallback[node.op_type] += 1
                break
    integer = {k: v for k, v in counts.items() if "Integer" in k or "QLinear" in k or "QGemm" in k}
    dq_matmul = 0
    for node in proto.graph.node:
        if node.op_type == "MatMul":
            if any(
                producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
                for i in node.input
            ):
                dq_matmul += 1
    return {
        "op_counts": dict(sorted(counts.items())),
        "integer_matmuls": integer,
        "float_matmuls_after_dequantize": dq_matmul,
        "ops_run_in_fp32_by_ort": dict(fallback),
    }


def op_time_shares(
    path: str | Path, window: Mapping[str, np.ndarray], runs: int = 3, threads: int | None = None
) -> dict[str, float]:
    """Share of ONNX Runtime CPU kernel time per op type for ``window`` (portable flavor; from
    ORT's profiler over ``runs`` runs after one warm-up), largest first: what bounds the
    speed-up a precision can give (the FP32 scan ops are not quantized)."""
    import onnx
    import onnxruntime as ort

    from locore.calibration.graph import scan_nodes

    if any(True for _ in scan_nodes(onnx.load(str(path), load_external_data=False))):
        return {}  # plugin flavor: its scan nodes run only through pluginref
    with tempfile.TemporaryDirectory(prefix="locore-prof-") as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        names = {i.name for i in session.get_inputs()}
        feeds = {k: v for k, v in window.items() if k in names}
        session.run(None, feeds)
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: Counter[str] = Counter()
    for event in events:
        args = event.get("args", {})
        if (
            event.get("cat") == "Node"
            and "op_name" in args
            and event["name"].endswith("_kernel_time")
        ):
            totals[args["op_name"]] += int(event.get("dur", 0))
    whole = sum(totals.values()) or 1.0
    return {op: round(t / whole, 4) for op, t in totals.most_common()}


def _scatter(path: Path, ref: np.ndarray, got: Mapping[str, np.ndarray]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib comes with the demo extra
        log.warning(
            "matplotlib is not installed: no scatter plot (pip install 'locore-edge[demo]')"
        )
        return None
    from locore.fileio import atomic_path

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    lo, hi = float(ref.min()), float(ref.max())
    ax.plot([lo, hi], [lo, hi], color="0.7", lw=1)
    for name, values in got.items():
        ax.scatter(ref, values, s=4, alpha=0.5, label=name)
    ax.set_xlabel("FP32 score (logit)")
    ax.set_ylabel("variant score (logit)")
    ax.set_title("held-out windows: FP32 vs reduced precision")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def demo_map(path: str | Path, cache_dir: str | Path | None, threads: int | None) -> float | None:
    """mAP of the re-ranker at ``path`` on the demo test split (portable flavor; None for the
    plugin flavor, which ``run_demo``'s ONNX Runtime backend cannot open)."""
    import onnx

    from locore.calibration.graph import scan_nodes
    from locore.runtime.demo.report import run_demo

    if any(True for _ in scan_nodes(onnx.load(str(path), load_external_data=False))):
        return None
    report = run_demo(path, cache_dir, ransac=False, threads=threads, progress=False)
    return float(report.methods[-1].map)


def precision_report(
    fp32: str | Path,
    variants: Mapping[str, str | Path],
    out_dir: str | Path,
    *,
    heldout: CalibrationSet | None = None,
    cache_dir: str | Path | None = None,
    threads: int | None = None,
    rounds: int = 10,
    with_map: bool = True,
    progress: bool = False,
) -> Path:
    """Write ``report.json``, ``report.md`` and ``scatter.png`` for ``variants`` against
    ``fp32`` into ``out_dir``; returns the JSON path. ``heldout``: the windows to compare on
    (default: 32 windows of the demo's TEST split, seed 1: held out from calibration, which
    uses the train split)."""
    import onnx

    from locore.calibration.sets import demo_calibration_set
    from locore.fileio import atomic_write_text
    from locore.runtime.metadata import parse_model_metadata

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    proto = onnx.load(str(fp32), load_external_data=False)
    config, _ = parse_model_metadata({p.key: p.value for p in proto.metadata_props}, str(fp32))
    if heldout is None:
        heldout = demo_calibration_set(
            config, split="test", cache_dir=cache_dir, seed=1, role="held-out", progress=progress
        )
    comparisons, scores = compare_windows(fp32, variants, heldout, threads)
    models = {"fp32": fp32, **variants}
    latency = interleaved_latency(models, next(heldout.windows()), rounds=rounds, threads=threads)
    fallbacks = {name: ort_fallbacks(path) for name, path in variants.items()}
    first = next(heldout.windows())
    for name, path in models.items():
        shares = op_time_shares(path, first, threads=threads)
        if shares:
            fallbacks.setdefault(name, {})["kernel_time_share"] = dict(list(shares.items())[:8])
    maps = (
        {name: demo_map(path, cache_dir, threads) for name, path in models.items()}
        if with_map
        else {}
    )
    ref = np.concatenate(scores["fp32"])
    scatter = _scatter(
        out / "scatter.png", ref, {k: np.concatenate(v) for k, v in scores.items() if k != "fp32"}
    )
    data = {
        "fp32": str(fp32),
        "variants": {k: str(v) for k, v in variants.items()},
        "heldout": heldout.provenance,
        "comparisons": [asdict(c) for c in comparisons],
        "latency_ms_per_window": latency,
        "window_gallery": int(heldout.feeds["gallery_desc"].shape[1]),
        "demo_test_map": maps,
        "ort_cpu": fallbacks,
        "scatter": str(scatter) if scatter else None,
    }
    path = out / "report.json"
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out / "report.md", report_markdown(data))
    return path


def report_markdown(data: Mapping[str, Any]) -> str:
    """The report as a markdown table (what ``report.md`` holds)."""
    lines = [
        f"Precision report for `{data['fp32']}` (held-out windows: "
        f"{data['comparisons'][0]['windows'] if data['comparisons'] else 0}, "
        f"{data['window_gallery']} gallery images each; ONNX Runtime CPU)",
        "",
        "| precision | max abs err | mean abs err | Kendall tau mean (min) | top-10 overlap mean "
        "(min) | demo test mAP | ms / window | speed-up vs FP32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    maps = data.get("demo_test_map", {})
    lat = data["latency_ms_per_window"]

    def fmt_map(name: str) -> str:
        value = maps.get(name)
        return "-" if value is None else f"{100 * value:.1f}"

    lines.append(
        f"| fp32 | 0 | 0 | 1 | 1 | {fmt_map('fp32')} | {lat['fp32']['median_ms']:.1f} | 1.00 |"
    )
    for c in data["comparisons"]:
        name = c["precision"]
        lines.append(
            f"| {name} | {c['max_abs_error']:.4f} | {c['mean_abs_error']:.4f} | "
            f"{c['kendall_tau_mean']:.4f} ({c['kendall_tau_min']:.4f}) | "
            f"{c['top10_overlap_mean']:.3f} ({c['top10_overlap_min']:.2f}) | {fmt_map(name)} | "
            f"{lat[name]['median_ms']:.1f} | {lat[name]['speedup_vs_fp32']:.2f} |"
        )
    lines.append("")
    for name, info in data.get("ort_cpu", {}).items():
        brief = {k: v for k, v in info.items() if k != "op_counts"}
        lines.append(f"ONNX Runtime CPU, {name}: {json.dumps(brief)}")
    return "\n".join(lines) + "\n"
