"""Shared configuration: model hyper-parameters, graph I/O contracts and ONNX metadata keys.

This module is the one source of truth for every shape and name that export and runtime share:
the re-ranker (:class:`LocoreConfig`, :func:`graph_io`), the DINOv2 local-feature model
(:class:`DinoConfig`, :func:`dino_graph_io`, :func:`dino_metadata`), the typed graph I/O
(:class:`TensorSpec`, :class:`GraphIO`, both with a JSON round trip) and every ``locore.*`` key
of the ONNX ``metadata_props``. It imports only the standard library, so the torch-free runtime
can read it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Sequence
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
        except (json.JSONDecodeError, RecursionError) as exc:
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

        for name, kinds in (
            ("use_global", (bool,)),
            ("match_features", (bool,)),
            ("aggregation", (str,)),
            ("name", (str,)),
            ("extra", (dict,)),
        ):
            value = getattr(self, name)
            if not isinstance(value, kinds):
                raise ConfigError(
                    f"{name} must be a {kinds[0].__name__}, got {value!r} ({type(value).__name__})"
                )
        if isinstance(self.global_dim, bool) or not isinstance(self.global_dim, int):
            raise ConfigError(f"global_dim must be an integer, got {self.global_dim!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ConfigError(f"dropout must be a number in [0, 1), got {self.dropout!r}")

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
        """The preset ``name`` with ``overrides`` (config keys; :class:`ConfigError` naming an
        unknown key and listing the valid ones)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        data = dict(PRESETS[name])
        data["name"] = name
        _check_keys(cls, overrides, "model config override")
        data.update(overrides)
        return cls(**data)


def _check_keys(cls: type, data: dict[str, Any], what: str) -> None:
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown {what} key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; valid "
            f"keys are {', '.join(known)}"
        )


def parse_overrides(items: Sequence[str], cls: type[JsonConfig] | None = None) -> dict[str, Any]:
    """``["d_model=128", "aggregation=max", ...]`` (the CLI's ``--set KEY=VALUE``) as a dict of
    :class:`LocoreConfig` (or ``cls``) fields, each value typed as its field.

    A value is read as JSON (``128``, ``0.1``, ``true``, ``{"a": 1}``), else taken as a string
    (``aggregation=max``). Raises :class:`ConfigError` for an item without ``=``, an unknown key
    (listing the valid keys) or a value of the wrong type (``d_model=abc``: "d_model must be an
    integer, got 'abc'"); ``bool`` is not an integer and an integer field never takes 2.5.
    Ranges are checked when the config is built.
    """
    target = cls or LocoreConfig
    fields = {f.name: f for f in dataclasses.fields(target)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(target)
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"a config override must be KEY=VALUE, got {item!r}")
        key, _, text = item.partition("=")
        key = key.strip()
        if key not in fields:
            _check_keys(target, {key: None}, "config")
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text
        out[key] = _typed(key, value, hints.get(key), text)
    return out


def _typed(key: str, value: Any, hint: Any, text: str) -> Any:
    """``value`` if it has the type ``hint`` asks for (ints are accepted for floats)."""
    if hint is bool:
        ok = isinstance(value, bool)
        want = "true or false"
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "an integer"
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
        want = "a number"
    elif hint is str:
        ok = isinstance(value, str)
        if not ok:  # a name that happens to parse as JSON ("1", "true"): keep the text
            value, ok = text, True
        want = "a string"
    elif typing.get_origin(hint) is dict:
        ok = isinstance(value, dict)
        want = "a JSON object"
    else:
        return value
    if not ok:
        raise ConfigError(f"{key} must be {want}, got {text!r}")
    return value


PRESETS: dict[str, dict[str, Any]] = {
    # CPU-trainable in minutes; the shipped demo model.
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, expand=2, d_state=16, chunk_size=64),
    # Scan shape H=8, P=64, N=64: the benchmark case of the kernels.
    "small": dict(d_model=256, n_layers=6, n_heads=8, expand=2, d_state=64, chunk_size=64),
    "base": dict(d_model=512, n_layers=12, n_heads=16, expand=2, d_state=64, chunk_size=64),
}


# ---- graph I/O contract (docs/design.md §4) -----------------------------------------------------
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

# ---- ONNX metadata_props keys (every one that locore.export writes and locore.runtime reads) --
META_CONFIG = "locore.config"  # LocoreConfig JSON (re-rankers)
META_GRAPH_IO = "locore.graph_io"  # graph_io(...).to_dict() JSON (re-rankers)
META_FLAVOR = "locore.flavor"  # "portable" or "plugin" (re-rankers)
META_VERSION = "locore.version"  # locore-edge version that exported the file (every model)
# Feature models carry a kind and their own keys; the re-ranker's ``locore.config`` key is
# deliberately not used, so a feature model is never mistaken for a re-ranker.
META_KIND = "locore.kind"  # what the file is, e.g. DINO_KIND
META_DINO_CONFIG = "locore.dino_config"  # DinoConfig JSON (also in DINOv2 weight files)
META_DINO_GRAPH_IO = "locore.dino_graph_io"  # dino_graph_io(...).to_dict() JSON
META_PRECISION = "locore.precision"  # "fp16" / "int8" (locore calibrate); absent means fp32
META_CALIBRATION = "locore.calibration"  # INT8: method, amax per activation, the set's provenance
DINO_KIND = "dino_local_features"  # META_KIND of a DINOv2 local-feature model

BATCH_DIM = "batch"
GALLERY_DIM = "num_gallery"
SEQ_DIM = "seq_len"

# dtypes a TensorSpec may carry: numpy dtype names, and "float" for the engine's float dtype.
SPEC_DTYPES = ("float", "float32", "float16", "float64", "bool", "int64", "int32", "int8", "uint8")


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

    @classmethod
    def from_dict(cls, data: Any, where: str = "a tensor spec") -> TensorSpec:
        """The inverse of :meth:`to_dict`; :class:`ConfigError` naming ``where`` on bad data."""
        if not isinstance(data, dict):
            raise ConfigError(
                f"{where} must be a JSON object with name, shape, dtype and description, "
                f"got {type(data).__name__}"
            )
        known = ("name", "shape", "dtype", "description")
        unknown = sorted(set(data) - set(known))
        missing = [k for k in known[:3] if k not in data]
        if unknown or missing:
            raise ConfigError(
                f"{where} has keys {sorted(data)}; expected {list(known)} (missing {missing}, "
                f"unknown {unknown}). Was it written by a different locore-edge version?"
            )
        name, shape, dtype = data["name"], data["shape"], data["dtype"]
        description = data.get("description", "")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: name must be a non-empty string, got {name!r}")
        where = f"{where} {name!r}"
        if not isinstance(shape, list) or not all(_is_dim(d) for d in shape):
            raise ConfigError(
                f"{where}: shape must be a list of sizes >= 0 and dynamic-dim names, got {shape!r}"
            )
        if dtype not in SPEC_DTYPES:
            raise ConfigError(f"{where}: dtype must be one of {list(SPEC_DTYPES)}, got {dtype!r}")
        if not isinstance(description, str):
            raise ConfigError(f"{where}: description must be a string, got {description!r}")
        return cls(name, tuple(shape), dtype, description)


def _is_dim(dim: Any) -> bool:
    if isinstance(dim, str):
        return bool(dim)
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


@dataclass(frozen=True)
class GraphIO:
    """The named, typed inputs and outputs of a graph, in graph order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"graph has no input {name!r}; inputs are {[s.name for s in self.inputs]}")

    def output(self, name: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(
            f"graph has no output {name!r}; outputs are {[s.name for s in self.outputs]}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Any) -> GraphIO:
        """The inverse of :meth:`to_dict` (e.g. the ``locore.graph_io`` metadata JSON).

        Raises :class:`ConfigError` unless ``data`` is ``{"inputs": [...], "outputs": [...]}``
        of valid tensor specs with distinct names.
        """
        if not isinstance(data, dict) or sorted(data) != ["inputs", "outputs"]:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ConfigError(
                f"graph I/O must be a JSON object with exactly the keys 'inputs' and 'outputs', "
                f"got {got}"
            )
        specs: dict[str, tuple[TensorSpec, ...]] = {}
        for role in ("inputs", "outputs"):
            items = data[role]
            if not isinstance(items, list):
                raise ConfigError(
                    f"graph I/O {role!r} must be a list of tensor specs, got {type(items).__name__}"
                )
            specs[role] = tuple(
                TensorSpec.from_dict(item, f"graph I/O {role}[{i}]") for i, item in enumerate(items)
            )
        names = [s.name for s in (*specs["inputs"], *specs["outputs"])]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"graph I/O names must be distinct; {repeated} appear more than once")
        return cls(specs["inputs"], specs["outputs"])


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


# ---- DINOv2 local-feature model: config and graph I/O (torch module, exporter, extractor) ------
# Graph I/O names of an exported DINOv2 feature model (S = image_size, Nd = num_desc).
IMAGE = "image"  # [batch, 3, S, S] float32, RGB, ImageNet mean/std normalised
DESCRIPTORS = "descriptors"  # [batch, Nd, desc_dim] float32, L2 norm 1, strongest patch first
WEIGHTS = "weights"  # [batch, Nd] float32, softplus detector weight, descending
XY = "xy"  # [batch, Nd, 2] float32, patch centre (x / width, y / height) in [0, 1]
SCALES = "scales"  # [batch, Nd] int64, scale id (0: single scale)
GLOBAL_DESC = "global_desc"  # [batch, hidden_size] float32, CLS token, L2 norm 1
DINO_OUTPUT_NAMES = (DESCRIPTORS, WEIGHTS, XY, SCALES, GLOBAL_DESC)


@dataclass
class DinoConfig(JsonConfig):
    """Shapes of a DINOv2-with-registers backbone + AMES-style detector (JSON round-trip).

    The defaults are ViT-B/14 with 4 registers (``facebook/dinov2-with-registers-base``) at
    224 x 224 (16 x 16 = 256 patches), 768-d descriptors as in AMES, and the 48 strongest
    patches per image (LOCORE reads the first 48).
    """

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_ratio: int = 4
    patch_size: int = 14
    image_size: int = 224
    num_registers: int = 4
    layer_norm_eps: float = 1e-6
    desc_dim: int = 768
    num_desc: int = 48

    def __post_init__(self) -> None:
        self.validate()

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def global_dim(self) -> int:
        return self.hidden_size

    def validate(self) -> None:
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "mlp_ratio",
            "patch_size",
            "image_size",
            "desc_dim",
            "num_desc",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"DinoConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_registers, int) or self.num_registers < 0:
            raise ConfigError(f"DinoConfig.num_registers must be >= 0, got {self.num_registers}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size}), e.g. {self.grid * self.patch_size} or "
                f"{(self.grid + 1) * self.patch_size}"
            )
        if self.num_desc > self.num_patches:
            raise ConfigError(
                f"num_desc ({self.num_desc}) exceeds the {self.num_patches} patches of a "
                f"{self.image_size} x {self.image_size} image with patch {self.patch_size}; "
                "lower num_desc or raise image_size"
            )


def dino_graph_io(config: DinoConfig) -> GraphIO:
    """The I/O contract of an exported DINOv2 feature model for ``config``; ``batch`` is dynamic.

    image [B, 3, S, S] float32 -> descriptors [B, Nd, Dl], weights [B, Nd], xy [B, Nd, 2]
    (all float32), scales [B, Nd] int64, global_desc [B, hidden_size] float32.
    """
    b, s, nd = BATCH_DIM, config.image_size, config.num_desc
    inputs = (TensorSpec(IMAGE, (b, 3, s, s), "float32", "RGB, ImageNet mean/std normalised"),)
    outputs = (
        TensorSpec(DESCRIPTORS, (b, nd, config.desc_dim), "float32", "L2-normalised, best first"),
        TensorSpec(WEIGHTS, (b, nd), "float32", "detector weight (softplus), descending"),
        TensorSpec(XY, (b, nd, 2), "float32", "patch centre in [0, 1], (x, y)"),
        TensorSpec(SCALES, (b, nd), "int64", "scale id (0: single scale)"),
        TensorSpec(GLOBAL_DESC, (b, config.hidden_size), "float32", "CLS token, L2-normalised"),
    )
    return GraphIO(inputs, outputs)


def dino_metadata(config: DinoConfig, version: str) -> dict[str, str]:
    """The ``metadata_props`` an exported DINOv2 feature model carries."""
    return {
        META_KIND: DINO_KIND,
        META_DINO_CONFIG: config.to_json(),
        META_DINO_GRAPH_IO: json.dumps(dino_graph_io(config).to_dict()),
        META_VERSION: version,
    }
