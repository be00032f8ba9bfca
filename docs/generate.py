"""Regenerate the tables of docs/design.md from the single sources of truth.

The SelectiveScan contract (``locore.scan_spec``), the model presets and graph I/O
(``locore.config``) and the metadata keys are written once, in code; the design document shows
them between ``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->`` markers.

    python docs/generate.py          # rewrite the generated blocks
    python docs/generate.py --check  # exit 1 if a block is stale (the test suite runs this)
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from locore import config as cfg
from locore import scan_spec as spec

DESIGN = Path(__file__).resolve().parent / "design.md"
BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[\w-]+) -->\n)(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.S,
)


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _shape(dims: Iterable[object]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def scan_identity() -> str:
    rows = [
        (
            "ONNX node",
            f"`{spec.DOMAIN}::{spec.OP_TYPE}` (opset `{spec.DOMAIN}` v{spec.OPSET_VERSION})",
        ),
        (
            "TensorRT plugin",
            f"`{spec.PLUGIN_NAME}`, version `{spec.PLUGIN_VERSION}`, namespace "
            + (f"`{spec.PLUGIN_NAMESPACE}`" if spec.PLUGIN_NAMESPACE else '`""` (empty)'),
        ),
        (
            "C entry point (CPU library)",
            f"`int {spec.CPU_ENTRY_POINT}(const {spec.PARAMS_STRUCT}*, int32_t numThreads)`",
        ),
        ("status codes", ", ".join(f"{s.value} `{s.name}`" for s in spec.Status)),
        ("I/O dtypes", ", ".join(spec.IO_DTYPES)),
    ]
    return _table(("what", "value"), rows)


def scan_inputs() -> str:
    rows = []
    for t in (*spec.INPUTS, spec.OUTPUT):
        if t is spec.OUTPUT:
            role = "output"
        else:
            role = "optional input" if t.optional else "input"
        first = t is spec.INPUTS[0]
        dtype = "as `x`" if t.same_dtype_as_x and not first else " / ".join(t.dtypes)
        rows.append(
            (
                f"`{t.name}`",
                role,
                _shape(t.shape("mamba2")),
                _shape(t.shape("mamba1")),
                dtype,
                t.description,
            )
        )
    return _table(("tensor", "role", "mamba2 shape", "mamba1 shape", "dtype", "meaning"), rows)


def scan_attributes() -> str:
    rows = []
    for a in spec.ATTRIBUTES:
        allowed = ", ".join(f"`{v}`" for v in a.allowed) if a.allowed is not None else "see meaning"
        rows.append(
            (
                f"`{a.name}`",
                a.type,
                f"`{a.default}`" if a.default != "" else '`""`',
                allowed,
                "yes" if a.plugin_field else "no (routing only)",
                a.description,
            )
        )
    return _table(("attribute", "type", "default", "allowed", "plugin field", "meaning"), rows)


def graph_io() -> str:
    config = cfg.LocoreConfig.preset("tiny", use_global=True, global_dim=8)
    io = cfg.graph_io(config, with_token_logits=True)
    symbolic = {config.num_desc: "Nd", config.desc_dim: "Dl", config.global_dim: "Dg"}
    rows = []
    for role, specs in (("input", io.inputs), ("output", io.outputs)):
        for s in specs:
            dims = [symbolic.get(d, d) if isinstance(d, int) else d for d in s.shape]
            rows.append((f"`{s.name}`", role, _shape(dims), s.dtype, s.description))
    return _table(("name", "role", "shape", "dtype", "meaning"), rows)


def presets() -> str:
    keys = ("d_model", "n_layers", "n_heads", "expand", "d_state", "chunk_size")
    rows = []
    for name in cfg.PRESETS:
        c = cfg.LocoreConfig.preset(name)
        rows.append(
            (f"`{name}`", *(getattr(c, k) for k in keys), c.head_dim, c.num_desc, c.desc_dim)
        )
    return _table(("preset", *keys, "head dim P", "Nd", "Dl"), rows)


def metadata_keys() -> str:
    keys = [
        (cfg.META_CONFIG, "LocoreConfig JSON (re-rankers)"),
        (cfg.META_GRAPH_IO, "graph I/O JSON, as the table above (re-rankers)"),
        (cfg.META_FLAVOR, "`portable` or `plugin` (re-rankers)"),
        (cfg.META_VERSION, "locore-edge version that exported the file"),
        (cfg.META_KIND, f"what the file is, e.g. `{cfg.DINO_KIND}`"),
        (cfg.META_DINO_CONFIG, "DinoConfig JSON (DINOv2 feature models)"),
        (cfg.META_DINO_GRAPH_IO, "graph I/O JSON of a DINOv2 feature model"),
        (cfg.META_PRECISION, "`fp16` or `int8` (written by `locore calibrate`; absent: fp32)"),
        (cfg.META_CALIBRATION, "INT8: method, range per activation, the calibration set"),
    ]
    return _table(("ONNX metadata key", "value"), ((f"`{k}`", v) for k, v in keys))


GENERATORS: dict[str, Callable[[], str]] = {
    "scan-identity": scan_identity,
    "scan-inputs": scan_inputs,
    "scan-attributes": scan_attributes,
    "graph-io": graph_io,
    "presets": presets,
    "metadata-keys": metadata_keys,
}


def render(text: str) -> str:
    """``text`` with every generated block replaced by its current content."""
    seen = set()

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in GENERATORS:
            raise SystemExit(f"docs/design.md: unknown generated block {name!r}")
        seen.add(name)
        return match.group(1) + GENERATORS[name]() + match.group(4)

    out = BLOCK.sub(replace, text)
    missing = sorted(set(GENERATORS) - seen)
    if missing:
        raise SystemExit(f"docs/design.md lacks the generated blocks {missing}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a block is stale")
    args = parser.parse_args(argv)
    text = DESIGN.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print("docs/design.md is stale: run `python docs/generate.py`", file=sys.stderr)
            return 1
        return 0
    if new != text:
        from locore.fileio import atomic_write_text

        atomic_write_text(DESIGN, new)
        print("docs/design.md regenerated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
