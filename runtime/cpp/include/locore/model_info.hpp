/*
 * Where the runtime learns a model's config and graph I/O without Python: the ONNX file's
 * metadata_props (read by a minimal protobuf reader, no ONNX library) or the JSON sidecar that
 * `locore build` writes beside every engine (E.plan -> E.plan.json, format 1, whose "metadata"
 * object holds the same `locore.*` strings as the ONNX file).
 */
#ifndef LOCORE_MODEL_INFO_HPP
#define LOCORE_MODEL_INFO_HPP

#include "locore/config.hpp"

#include <map>
#include <string>

namespace locore
{

//! Sidecar layout version this runtime reads (runtime/engines.py ENGINE_FORMAT).
inline constexpr std::int64_t kEngineFormat = 1;

struct ModelInfo
{
    LocoreConfig config;
    //! The recorded graph I/O; graph_io(config) when the metadata has no `locore.graph_io`
    //! (then has_recorded_graph_io is false).
    GraphIO graph_io;
    bool has_recorded_graph_io = false;
    std::string precision = "fp32"; //!< `locore.precision`: "fp32", "fp16" or "int8"
    std::string flavor;             //!< `locore.flavor`: "portable" or "plugin" ("" if absent)
    std::map<std::string, std::string> metadata; //!< every `locore.*` entry
    std::string source;                          //!< the file (or text) it came from
};

//! (config, graph I/O) from a model's metadata map (Python: parse_model_metadata). ConfigError
//! when `locore.config` is missing or either entry is invalid, naming `source`.
ModelInfo parse_model_metadata(std::map<std::string, std::string> const& metadata,
                               std::string const& source = "the model");

//! The metadata_props (key -> value) of an ONNX file; std::runtime_error when it cannot be read
//! or is not an ONNX ModelProto.
std::map<std::string, std::string> read_onnx_metadata(std::string const& onnx_path);

//! "E.plan" -> "E.plan.json".
std::string sidecar_path(std::string const& engine_path);

//! The model behind an engine, from its sidecar (`engine_path` + ".json"): std::runtime_error
//! when the sidecar is missing, ConfigError when its format is not kEngineFormat or its
//! metadata is invalid.
ModelInfo read_engine_model_info(std::string const& engine_path);

//! read_engine_model_info for engines, parse_model_metadata(read_onnx_metadata(path)) for files
//! ending in ".onnx".
ModelInfo read_model_info(std::string const& path);

} // namespace locore

#endif // LOCORE_MODEL_INFO_HPP
