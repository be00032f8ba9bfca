"""Regenerate the README's measured tables, each with the command, date and machine it came from.

Runs the commands the README quotes and prints their tables in Markdown, each followed by a
provenance line (command, UTC date, CPU model, cores, OS, Python, onnxruntime, OpenCV, torch):

- the demo table: ``locore demo --json`` on the test split (global only / RANSAC / LOCORE);
- with ``--latency``: ``benchmarks/window_latency.py`` (minutes: the Longformer runs too);
- with ``--scan``: ``benchmarks/scan_cpu.py`` (the CPU library is built on first use).

Figures differ between machines and OpenCV builds (SIFT keypoints change slightly); on one
demo cache the demo table is reproducible to the digit except the latencies.

    python benchmarks/readme_numbers.py [--cache-dir DIR] [--latency] [--scan] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def machine() -> str:
    """One line: CPU model, cores, OS, Python and the versions that move the figures."""
    opencv = next(
        (
            v
            for d in ("opencv-python-headless", "opencv-python", "opencv-contrib-python")
            if (v := _version(d)) != "absent"
        ),
        "absent",
    )
    return (
        f"{cpu_model()}, {cores()} cores available, {platform.platform()}, "
        f"Python {platform.python_version()}, onnxruntime {_version('onnxruntime')}, "
        f"OpenCV {opencv}, torch {_version('torch')}"
    )


def load_average() -> str:
    """The 1-minute load average, as a note on how busy the machine was (latencies move)."""
    try:
        return f"load average {os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):
        return "load average unknown"


def provenance(command: str, load: str) -> str:
    """One line: the command, the UTC date, the machine and its load when the command started."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"_Command: `{command}`; {now}; {machine()}; {load} at the start._"


def _run(cmd: list[str]) -> str:
    """Run ``cmd`` (stderr to ours, for progress), return its stdout; exit on failure."""
    print(f"running: {shlex.join(cmd)}", file=sys.stderr)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, check=False)
    if proc.returncode:
        sys.exit(f"{shlex.join(cmd)} failed with exit code {proc.returncode}")
    return proc.stdout


def demo_table(cache_dir: Path | None) -> str:
    """The README's demo table from one ``locore demo`` run (test split, shipped model)."""
    load = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = ["locore", "demo", "--json", str(report), "--picture", str(Path(tmp) / "d.png")]
        if cache_dir is not None:
            cmd += ["--cache-dir", str(cache_dir)]
        _run(cmd + ["--no-progress"])
        data = json.loads(report.read_text())
    shown = "locore demo" + (f" --cache-dir {cache_dir}" if cache_dir is not None else "")
    lines = [
        f"Test split: {data['num_queries']} queries, {data['num_db']} database images, "
        f"shortlist top {data['shortlist_k']}, revisitop medium protocol, ONNX Runtime CPU.",
        "",
        "| method | mAP | mP@1 | mP@5 | mP@10 | median ms / query |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in data["methods"].items():
        mp1, mp5, mp10 = (100 * v for v in m["mp@1,5,10"])
        lines.append(
            f"| {name} | {100 * m['map']:.1f} | {mp1:.1f} | {mp5:.1f} | {mp10:.1f} | "
            f"{m['median_ms']:.1f} |"
        )
    return "\n".join([*lines, "", provenance(shown, load)])


def script_output(script: str, extra: list[str]) -> str:
    """A benchmark script's own printout, verbatim in a code block, with its provenance."""
    cmd = [sys.executable, f"benchmarks/{script}", *extra]
    load = load_average()
    out = _run(cmd).rstrip()
    shown = shlex.join(["python", f"benchmarks/{script}", *extra])
    return "\n".join(["```text", out, "```", "", provenance(shown, load)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="demo cache (locore demo's)")
    parser.add_argument("--latency", action="store_true", help="also run window_latency.py")
    parser.add_argument("--scan", action="store_true", help="also run scan_cpu.py")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the latency scripts")
    args = parser.parse_args(argv)
    sections = [("The demo benchmark", demo_table(args.cache_dir))]
    if args.latency:
        extra = ["--rounds", str(args.rounds)]
        sections.append(("One re-ranking window", script_output("window_latency.py", extra)))
    if args.scan:
        extra = ["--rounds", str(args.rounds)]
        sections.append(("SelectiveScan on the CPU", script_output("scan_cpu.py", extra)))
    for title, body in sections:
        print(f"### {title}\n\n{body}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
