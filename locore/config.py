"""Shared configuration: model hyper-parameters and the graph I/O contract.

This module is the one source of truth for every shape and name that export and runtime share.
It imports only the standard library, so the torch-free runtime can read it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

AGGREGATIONS = ("start", "end", "mean", "max")
SCAN_VARIANTS = ("mamba2", "mamba1")

# Token layout per image in the sequence: [IMG][Nd descriptor tokens][SEP].
TOKENS_PER_IMAGE_EXTRA = 2


class ConfigError(ValueError):
    """A configuration file or value is not what the model expects."""


_C = TypeVar("_C", bound="JsonConfig")


class JsonConfig:
    """Base of the config dataclasses: a JSON round trip with clear errors.

    ``from_dict`` refuses unknown keys (a file from a newer version, or a typo) with ``error``.
    """

    error: ClassVar[type[Exception]] = ConfigError

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_C], data: dict[str, Any]) -> _C:
        what = cls.__name__
        if not isinstance(data, dict):
            raise cls.error(f"a {what} must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise cls.error(
                f"unknown {what} keys {unknown}; known keys are {sorted(known)}. "
                "Was this written by a newer locore-edge?"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise cls.error(f"invalid {what}: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[_C], text: str) -> _C:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise cls.error(f"{cls.__name__} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


@dataclass
class LocoreConfig(JsonConfig):
    """Hyper-parameters of a LOCORE-Mamba re-ranker.

    The sequence the model reads for one query and G gallery images is
    ``[IMG q][q_1 .. q_Nd][SEP] [IMG g1][g1_1 .. g1_Nd][SEP] ... [IMG gG][...][SEP]``,
    i.e. ``(G + 1) * (num_desc + 2)`` tokens.
    """

    desc_dim: int = 128  # Dl: local descriptor dimension (128 for RootSIFT)
    num_desc: int = 48  # Nd: descriptors per image (LOCORE takes the first 48)
    num_scales: int = 8  # number of distinct scale ids (0 .. num_scales - 1)
    use_global: bool = False  # add a projected global descriptor to each image's IMG token
    global_dim: int = 0  # dimension of the global descriptor when use_global
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4  # H
    expand: int = 2  # d_inner = expand * d_model; head dim P = d_inner / H
    d_state: int = 16  # N
    n_groups: int = 1  # G of the B/C projections (heads per group = H / n_groups)
    chunk_size: int = 64  # chunk length of the SSD scan (a hint for kernels)
    aggregation: str = "mean"  # how token logits become one score per image
    # Add to each descriptor token an embedding of its best cosine similarity to the query's
    # descriptors: a direct matching cue that a fixed-size scan state cannot hold for 48 query
    # descriptors on its own (see README, "Model").
    match_features: bool = True
    match_bins: int = 16
    dropout: float = 0.0
    name: str = "custom"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def head_dim(self) -> int:
        return self.d_inner // self.n_heads

    @property
    def tokens_per_image(self) -> int:
        return self.num_desc + TOKENS_PER_IMAGE_EXTRA

    def sequence_length(self, num_gallery: int) -> int:
        """Tokens in the sequence for one query and ``num_gallery`` gallery images."""
        return (num_gallery + 1) * self.tokens_per_image

    # ---- checks and JSON -----------------------------------------------------------------
    def validate(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

        for name in ("desc_dim", "num_desc", "num_scales", "d_model", "n_layers", "n_heads"):
            positive(name)
        for name in ("expand", "d_state", "n_groups", "chunk_size", "match_bins"):
            positive(name)
        if self.d_inner % self.n_heads:
            raise ConfigError(
                f"expand * d_model ({self.d_inner}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.n_heads % self.n_groups:
            raise ConfigError(
                f"n_heads ({self.n_heads}) must be divisible by n_groups ({self.n_groups})"
            )
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}"
            )
        if self.use_global and self.global_dim < 1:
            raise ConfigError("use_global=True needs global_dim >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    def save(self, path: str | Path) -> None:
        from locore.fileio import atomic_write_text

        atomic_write_text(Path(path), self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LocoreConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return cls.from_json(path.read_text(encoding="utf-8"))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LocoreConfig:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        data = dict(PRESETS[name])
        data["name"] = name
        data.update(overrides)
        return cls(**data)


PRESETS: dict[str, dict[str, Any]] = {
    # CPU-trainable in minutes; the shipped demo model.
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, expand=2, d_state=16, chunk_size=64),
    # Scan shape H=8, P=64, N=64: the benchmark case of the kernels.
    "small": dict(d_model=256, n_layers=6, n_heads=8, expand=2, d_state=64, chunk_size=64),
    "base": dict(d_model=512, n_layers=12, n_heads=16, expand=2, d_state=64, chunk_size=64),
}


# ---- graph I/O contract (DESIGN.md §4) -----------------------------------------------------
# Names of the ONNX graph inputs/outputs; export writes them, runtime feeds them.
QUERY_DESC = "query_desc"
QUERY_MASK = "query_mask"
GALLERY_DESC = "gallery_desc"
GALLERY_MASK = "gallery_mask"
QUERY_SCALE = "query_scale"
GALLERY_SCALE = "gallery_scale"
QUERY_GLOBAL = "query_global"
GALLERY_GLOBAL = "gallery_global"
SCORES = "scores"
TOKEN_LOGITS = "token_logits"

# Keys of the ONNX metadata_props that locore.export writes and locore.runtime reads.
META_CONFIG = "locore.config"  # LocoreConfig JSON
META_GRAPH_IO = "locore.graph_io"  # graph_io(...).to_dict() JSON
META_FLAVOR = "locore.flavor"  # "portable" or "plugin"
META_VERSION = "locore.version"  # locore-edge version that exported the file

BATCH_DIM = "batch"
GALLERY_DIM = "num_gallery"
SEQ_DIM = "seq_len"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, shape (ints, or strings for dynamic axes), dtype.

    ``dtype`` is a numpy dtype name; ``"float"`` stands for the engine's float dtype
    (float32 or float16), fixed when the model is exported.
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "description": self.description,
        }


@dataclass(frozen=True)
class GraphIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"graph has no input {name!r}; inputs are {[s.name for s in self.inputs]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }


def graph_io(
    config: LocoreConfig, *, with_scales: bool = True, with_token_logits: bool = False
) -> GraphIO:
    """The I/O contract of an exported re-ranker for ``config``.

    query_desc [B, Nd, Dl], query_mask [B, Nd], gallery_desc [B, G, Nd, Dl],
    gallery_mask [B, G, Nd] (1 = valid descriptor, 0 = padding), optional scale ids and
    global vectors; output scores [B, G] float32. B and G are dynamic.
    """
    nd, dl = config.num_desc, config.desc_dim
    b, g = BATCH_DIM, GALLERY_DIM
    inputs = [
        TensorSpec(QUERY_DESC, (b, nd, dl), "float", "query local descriptors"),
        TensorSpec(QUERY_MASK, (b, nd), "bool", "1 = valid query descriptor, 0 = padding"),
        TensorSpec(GALLERY_DESC, (b, g, nd, dl), "float", "gallery local descriptors"),
        TensorSpec(GALLERY_MASK, (b, g, nd), "bool", "1 = valid gallery descriptor"),
    ]
    if with_scales:
        inputs += [
            TensorSpec(QUERY_SCALE, (b, nd), "int64", "scale id of each query descriptor"),
            TensorSpec(GALLERY_SCALE, (b, g, nd), "int64", "scale id of each gallery descriptor"),
        ]
    if config.use_global:
        inputs += [
            TensorSpec(QUERY_GLOBAL, (b, config.global_dim), "float", "query global vector"),
            TensorSpec(
                GALLERY_GLOBAL, (b, g, config.global_dim), "float", "gallery global vectors"
            ),
        ]
    outputs = [TensorSpec(SCORES, (b, g), "float32", "one logit per gallery image")]
    if with_token_logits:
        outputs.append(
            TensorSpec(TOKEN_LOGITS, (b, SEQ_DIM), "float32", "one logit per sequence token")
        )
    return GraphIO(tuple(inputs), tuple(outputs))
