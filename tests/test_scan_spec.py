"""locore.scan_spec against everything that restates it: the C header, the TensorRT plugin
sources, the plugin README's tables, the ONNX schema and the torch custom op.

The C++ files and the README are parsed as text (no compiler, no TensorRT), so a drift in any
of them (a renamed field, a reordered input, a changed default or status code) fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from locore import scan_spec as spec

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
SCAN_DIR = PLUGINS / "selective_scan"


def _source(name: str) -> str:
    """A C/C++ source of plugins/selective_scan without its comments."""
    text = (SCAN_DIR / name).read_text()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# ---------------------------------------------------------------------------------------------
# selectiveScan.h: the C ABI


def _enum(header: str, name: str) -> dict[str, int]:
    match = re.search(rf"typedef enum {name}\s*\{{(.*?)\}}\s*{name};", header, re.S)
    assert match, f"enum {name} not found in selectiveScan.h"
    return {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", match.group(1))}


def test_header_enums_and_status_codes():
    header = _source("selectiveScan.h")
    assert _enum(header, "LocoreScanDType") == {
        f"LOCORE_SCAN_{d.name}": d.value for d in spec.DType
    }
    assert _enum(header, "LocoreScanVariant") == {
        f"LOCORE_SCAN_{v.name}": v.value for v in spec.Variant
    }
    defines = dict(re.findall(r"#define (LOCORE_SCAN_\w+) (\d+)", header))
    assert {k: int(v) for k, v in defines.items()} == {
        f"LOCORE_SCAN_{s.name}": s.value for s in spec.Status
    }


def test_header_params_struct_matches_the_ctypes_layout():
    header = _source("selectiveScan.h")
    match = re.search(
        rf"typedef struct {spec.PARAMS_STRUCT}\s*\{{(.*?)\}}\s*{spec.PARAMS_STRUCT};", header, re.S
    )
    assert match, f"struct {spec.PARAMS_STRUCT} not found"
    fields = []
    for decl in match.group(1).split(";"):
        decl = " ".join(decl.split())
        if not decl:
            continue
        found = re.fullmatch(r"(?:const )?(int32_t|void\*) (\w+)", decl)
        assert found, f"unexpected declaration in {spec.PARAMS_STRUCT}: {decl!r}"
        fields.append((found.group(2), "int32" if found.group(1) == "int32_t" else "pointer"))
    assert tuple(fields) == spec.PARAMS_FIELDS
    # The binding builds its ctypes.Structure from the same list.
    from locore.native.binding import ScanParams

    assert [name for name, _ in ScanParams._fields_] == [name for name, _ in spec.PARAMS_FIELDS]


def test_header_documents_the_inputs_in_order():
    text = (SCAN_DIR / "selectiveScan.h").read_text()
    listed = re.findall(r"^ \*\s+(\d) (\w+)\s+(.*)$", text, re.M)
    assert [(int(i), name) for i, name, _ in listed] == list(enumerate(spec.INPUT_NAMES))
    for (_, name, rest), tensor in zip(listed, spec.INPUTS, strict=True):
        assert ("optional" in rest) == tensor.optional, name
    # Which pointers may be NULL: the field comments.
    nullable = set(re.findall(r"const void\* (\w+);\s*/\* may be NULL", text))
    assert nullable == {t.field for t in spec.INPUTS if t.nullable}
    one_dtype = "All tensors share one dtype" in text
    assert one_dtype == all(t.same_dtype_as_x for t in (*spec.INPUTS, spec.OUTPUT))
    assert set(re.findall(r"FP\d\d", text.split("*/")[0])) == {"FP32", "FP16"}
    for function in (spec.CPU_ENTRY_POINT, spec.STATUS_STRING_FUNCTION):
        assert re.search(rf"\b{function}\(", text), function


# ---------------------------------------------------------------------------------------------
# the TensorRT plugin sources


def test_plugin_name_version_namespace_and_input_counts():
    header = _source("selectiveScanPlugin.h")

    def constant(name: str) -> str:
        match = re.search(rf"\b{name}\{{([^}}]*)\}}", header)
        assert match, name
        return match.group(1)

    assert constant("kSELECTIVE_SCAN_PLUGIN_NAME") == json.dumps(spec.PLUGIN_NAME)
    assert constant("kSELECTIVE_SCAN_PLUGIN_VERSION") == json.dumps(spec.PLUGIN_VERSION)
    assert constant("kSELECTIVE_SCAN_DEFAULT_PLUGIN_NAMESPACE") == json.dumps(spec.PLUGIN_NAMESPACE)
    assert spec.PLUGIN_NAMESPACE == "locore"  # not "": the generic name must not collide
    # Every registered version: the current one and the old ones kept for built engines.
    olds = [constant(f"kSELECTIVE_SCAN_PLUGIN_VERSION_{v}") for v in spec.PLUGIN_VERSIONS[1:]]
    assert olds == [json.dumps(v) for v in spec.PLUGIN_VERSIONS[1:]]
    assert spec.attribute("plugin_version").allowed == spec.PLUGIN_VERSIONS
    library = (PLUGINS / "common" / "pluginLibrary.cpp").read_text()
    assert len(re.findall(r"static locore::plugin::SelectiveScanPluginCreator\w*", library)) == len(
        spec.PLUGIN_VERSIONS
    )
    assert int(constant("kSELECTIVE_SCAN_MIN_INPUTS")) == spec.MIN_INPUTS
    assert int(constant("kSELECTIVE_SCAN_MAX_INPUTS")) == spec.MAX_INPUTS


def test_plugin_attribute_defaults():
    header = _source("selectiveScanPlugin.h")
    match = re.search(r"struct SelectiveScanAttributes\s*\{(.*?)\n\};", header, re.S)
    assert match, "struct SelectiveScanAttributes not found"
    defaults = {k: int(v) for k, v in re.findall(r"int32_t (\w+)\{(-?\d+)\}", match.group(1))}
    expected = {}
    for attr in spec.ATTRIBUTES:
        if attr.plugin_field:
            value = attr.default
            if attr.name == "variant":
                value = spec.Variant[str(value).upper()].value
            expected[_camel(attr.name)] = value
    assert defaults == expected


def test_plugin_inputs_and_fields():
    source = _source("selectiveScanPlugin.cpp")
    names = re.search(r"kINPUT_NAMES\[[^\]]*\]\{([^}]*)\}", source)
    assert names and json.loads(f"[{names.group(1)}]") == list(spec.INPUT_NAMES)
    variants = re.search(r"kVARIANT_NAMES\[[^\]]*\]\{([^}]*)\}", source)
    assert variants and json.loads(f"[{variants.group(1)}]") == list(spec.VARIANTS)
    positions = {
        k: int(v) for k, v in re.findall(r"constexpr int32_t (k[A-Z_]+)\{(\d+)\};", source)
    }
    for index, name in enumerate(spec.INPUT_NAMES):
        assert positions.get(f"k{name.upper()}") == index, name

    field_types = {"kCHAR": "string", "kINT32": "int"}
    plugin_fields = [(a.name, a.type) for a in spec.ATTRIBUTES if a.plugin_field]
    advertised = re.findall(
        r'mFieldNames\.emplace_back\(\s*"(\w+)",\s*[^,]+,\s*PluginFieldType::(k\w+)', source
    )
    assert [(n, field_types[t]) for n, t in advertised] == plugin_fields
    serialized = re.findall(
        r'mFieldsToSerialize\.emplace_back\(\s*"(\w+)",\s*[^,]+,\s*PluginFieldType::(k\w+)', source
    )
    assert [(n, field_types[t]) for n, t in serialized] == plugin_fields
    parsed = re.findall(r'name == "(\w+)"', source)
    assert parsed == [a.name for a in spec.ATTRIBUTES]


# ---------------------------------------------------------------------------------------------
# the plugin README (TensorRT OSS layout)


def _table(text: str, heading: str) -> list[dict[str, str]]:
    """The first markdown table after ``heading``, as one dict per row (header -> cell)."""
    start = text.index(heading)
    lines = text[start:].splitlines()
    rows = []
    for line in lines[1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    header, _rule, *body = rows
    return [dict(zip(header, row, strict=True)) for row in body]


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def _shape(cell: str) -> tuple[str, ...]:
    (inner,) = _ticked(cell)
    assert inner.startswith("[") and inner.endswith("]"), cell
    return tuple(d.strip() for d in inner[1:-1].split(","))


def _check_tensor_row(row: dict[str, str], tensor: spec.ScanTensor) -> None:
    assert _ticked(row["Name"]) == [tensor.name]
    assert _shape(row["Shape (`mamba2`)"]) == tensor.shape("mamba2"), tensor.name
    assert _shape(row["Shape (`mamba1`)"]) == tensor.shape("mamba1"), tensor.name
    cell = row["Data type"]
    assert [t for t in _ticked(cell) if t != "x"] == list(tensor.dtypes), tensor.name
    if tensor.name != "x":
        assert ("(= `x`)" in cell) == tensor.same_dtype_as_x, tensor.name


def test_readme_inputs_and_output_tables():
    text = (SCAN_DIR / "README.md").read_text()
    inputs = _table(text, "#### Inputs")
    assert [int(r["#"]) for r in inputs] == list(range(spec.MAX_INPUTS))
    for row, tensor in zip(inputs, spec.INPUTS, strict=True):
        _check_tensor_row(row, tensor)
        assert row["Optional"] == ("yes" if tensor.optional else "no"), tensor.name
    (output,) = _table(text, "#### Outputs")
    _check_tensor_row(output, spec.OUTPUT)


def test_readme_parameters_table():
    text = (SCAN_DIR / "README.md").read_text()
    rows = _table(text, "## Parameters")
    assert [_ticked(r["Parameter"]) for r in rows] == [[a.name] for a in spec.ATTRIBUTES]
    for row, attr in zip(rows, spec.ATTRIBUTES, strict=True):
        assert _ticked(row["Type"]) == [attr.type], attr.name
        assert [json.loads(v) for v in _ticked(row["Default"])] == [attr.default], attr.name
        allowed = [json.loads(v) for v in _ticked(row["Allowed values"])]
        assert allowed == list(attr.allowed or []), attr.name
        assert row["Required (ONNX)"] == ("yes" if attr.required else "no"), attr.name
        assert row["Plugin field"] == ("yes" if attr.plugin_field else "no"), attr.name


def test_readme_names_version_and_namespace():
    text = (SCAN_DIR / "README.md").read_text()
    assert text.startswith(f"# {spec.PLUGIN_NAME}\n")
    assert (
        f"`{spec.PLUGIN_NAME}` plugin (version `{spec.PLUGIN_VERSION}`, namespace "
        f"`{json.dumps(spec.PLUGIN_NAMESPACE)}`)" in text
    )
    assert f'`op_type = "{spec.OP_TYPE}"`, `domain = "{spec.DOMAIN}"`' in text
    for section in ("Description", "Parameters", "Additional resources", "License"):
        assert f"\n## {section}\n" in text, section
    assert "\n## Changelog\n" in text and "\n## Known issues\n" in text


# ---------------------------------------------------------------------------------------------
# the Python side: node attributes, ONNX schema, torch custom op


def test_node_attributes_defaults_order_and_validation():
    attrs = spec.node_attributes(reverse=1, chunk_size=32)
    assert list(attrs) == [a.name for a in spec.ATTRIBUTES]
    assert attrs == {
        "variant": "mamba2",
        "dt_softplus": 0,
        "reverse": 1,
        "chunk_size": 32,
        "plugin_version": spec.PLUGIN_VERSION,
        "plugin_namespace": "locore",
    }
    with pytest.raises(ValueError, match="one of"):
        spec.node_attributes(variant="mamba3")
    with pytest.raises(ValueError, match="unknown"):
        spec.node_attributes(chunksize=3)
    assert spec.attribute("chunk_size").default == 64
    assert (spec.MIN_INPUTS, spec.MAX_INPUTS) == (7, 8)


def test_onnx_schema_follows_the_spec():
    pytest.importorskip("torch", reason="the exporter needs torch")
    onnx = pytest.importorskip("onnx", reason="needs onnx")
    from locore.export.scan_op import register_onnx_schema

    register_onnx_schema()
    schema = onnx.defs.get_schema(spec.OP_TYPE, spec.OPSET_VERSION, spec.DOMAIN)
    assert [i.name for i in schema.inputs] == list(spec.INPUT_NAMES)
    optional = onnx.defs.OpSchema.FormalParameterOption.Optional
    assert [i.option == optional for i in schema.inputs] == [t.optional for t in spec.INPUTS]
    assert [o.name for o in schema.outputs] == [spec.OUTPUT.name]
    assert {n: a.required for n, a in schema.attributes.items()} == {
        a.name: a.required for a in spec.ATTRIBUTES
    }


def test_torch_custom_op_takes_the_inputs_in_order():
    torch = pytest.importorskip("torch", reason="the exporter needs torch")
    import locore.export.scan_op  # noqa: F401  (registers torch.ops.locore.selective_scan)

    args = [a.name for a in torch.ops.locore.selective_scan.default._schema.arguments]
    assert args[: spec.MAX_INPUTS] == list(spec.INPUT_NAMES)


def test_weight_inputs_and_abi_version():
    """Version 2: A, D and dt_bias FP32 whatever x's dtype; the C ABI reports its layout."""
    assert spec.PLUGIN_VERSION == "2"
    assert spec.WEIGHT_INPUTS == ("A", "D", "dt_bias")
    for tensor in spec.INPUTS:
        assert tensor.dtypes == (
            ("float32",) if tensor.name in spec.WEIGHT_INPUTS else spec.IO_DTYPES
        )
    status = _source("selectiveScanStatus.cpp")
    match = re.search(rf"int {spec.ABI_VERSION_FUNCTION}\(void\)\s*\{{\s*return (\d+);", status)
    assert match and int(match.group(1)) == spec.ABI_VERSION
    assert re.search(rf"\b{spec.ABI_VERSION_FUNCTION}\(void\);", _source("selectiveScan.h"))


def test_plugin_config_yaml_is_generated_from_the_spec():
    path = SCAN_DIR / spec.PLUGIN_CONFIG_FILE
    assert path.read_text() == spec.plugin_config_yaml(), (
        f"{path} is stale: regenerate it with python -c 'from locore import scan_spec; "
        f'print(scan_spec.plugin_config_yaml(), end="")\' > {path}'
    )
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the file back")
    data = yaml.safe_load(path.read_text())
    assert data["name"] == spec.PLUGIN_NAME and data["interface"] == "IPluginV3"
    assert list(data["versions"]) == list(spec.PLUGIN_VERSIONS)
    v2 = data["versions"][spec.PLUGIN_VERSION]
    assert v2["inputs"] == list(spec.INPUT_NAMES) and v2["outputs"] == [spec.OUTPUT.name]
    assert v2["input_dims"]["x"] == 4 and v2["input_dims"]["A"] == 1  # mamba2: x [B,L,H,P], A [H]
    fields = [a.name for a in spec.ATTRIBUTES if a.plugin_field]
    assert v2["attributes"] == fields == ["variant", "dt_softplus", "reverse", "chunk_size"]
    assert v2["attribute_options"]["dt_softplus"] == [0, 1]
    assert v2["attribute_types"]["variant"] == "char"
