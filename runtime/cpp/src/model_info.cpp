/*
 * Model metadata from the ONNX file (a minimal protobuf reader for ModelProto.metadata_props)
 * or the engine sidecar (see locore/model_info.hpp).
 */
#include "locore/model_info.hpp"
#include "locore/errors.hpp"
#include "locore/json.hpp"

#include <algorithm>
#include <fstream>
#include <limits>
#include <stdexcept>

namespace locore
{
namespace
{

std::string present_keys(std::map<std::string, std::string> const& metadata)
{
    if (metadata.empty())
    {
        return "none";
    }
    std::string out;
    for (auto const& entry : metadata)
    {
        out += (out.empty() ? "['" : ", '") + entry.first + "'";
    }
    return out + "]";
}

// ---- protobuf wire format (https://protobuf.dev/programming-guides/encoding/) ------------------
class WireReader
{
public:
    WireReader(std::istream& in, std::uint64_t end, std::string const& path)
        : in_(in), end_(end), path_(path)
    {
    }

    std::uint64_t position() { return static_cast<std::uint64_t>(in_.tellg()); }
    bool done() { return position() >= end_; }

    std::uint64_t varint()
    {
        std::uint64_t value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            int const c = in_.get();
            if (c == std::char_traits<char>::eof())
            {
                fail("truncated varint");
            }
            value |= static_cast<std::uint64_t>(c & 0x7f) << shift;
            if ((c & 0x80) == 0)
            {
                return value;
            }
        }
        fail("varint longer than 10 bytes");
    }

    //! Skip a field's payload of wire type `wire`.
    void skip(std::uint32_t wire)
    {
        switch (wire)
        {
        case 0:
            varint();
            return;
        case 1:
            seek(8);
            return;
        case 2:
            seek(length());
            return;
        case 5:
            seek(4);
            return;
        default:
            fail("unsupported wire type " + std::to_string(wire));
        }
    }

    std::uint64_t length()
    {
        std::uint64_t const n = varint();
        if (n > end_ - std::min(end_, position()))
        {
            fail("a field of " + std::to_string(n) + " bytes runs past the end of the message");
        }
        return n;
    }

    std::string bytes(std::uint64_t n)
    {
        std::string out(static_cast<std::size_t>(n), '\0');
        in_.read(out.data(), static_cast<std::streamsize>(n));
        if (!in_)
        {
            fail("truncated string field");
        }
        return out;
    }

    void seek(std::uint64_t n)
    {
        if (n > end_ - std::min(end_, position()))
        {
            fail("a field runs past the end of the message");
        }
        in_.seekg(static_cast<std::streamoff>(n), std::ios::cur);
    }

    [[noreturn]] void fail(std::string const& what)
    {
        throw std::runtime_error(path_ + " is not a readable ONNX model (" + what +
                                 "); is it an ONNX file written by `locore export`?");
    }

private:
    std::istream& in_;
    std::uint64_t end_;
    std::string const& path_;
};

} // namespace

ModelInfo parse_model_metadata(std::map<std::string, std::string> const& metadata,
                               std::string const& source)
{
    auto const config_entry = metadata.find(kMetaConfig);
    if (config_entry == metadata.end())
    {
        throw ConfigError(
            source + " has no '" + std::string(kMetaConfig) +
            "' metadata (metadata keys present: " + present_keys(metadata) +
            "); it was not exported by `locore export`. Re-export it, or give the config "
            "explicitly (Packer(LocoreConfig, input_specs))");
    }
    ModelInfo info;
    info.source = source;
    try
    {
        info.config = LocoreConfig::parse(config_entry->second, kMetaConfig);
    }
    catch (std::invalid_argument const& exc)
    {
        throw ConfigError(source + ": metadata '" + std::string(kMetaConfig) +
                          "' is invalid: " + exc.what());
    }
    auto const graph_entry = metadata.find(kMetaGraphIO);
    if (graph_entry != metadata.end())
    {
        json::Value data;
        try
        {
            data = json::parse(graph_entry->second, kMetaGraphIO);
        }
        catch (JsonError const& exc)
        {
            throw ConfigError(source + ": metadata '" + std::string(kMetaGraphIO) +
                              "' is not valid JSON: " + exc.what());
        }
        try
        {
            info.graph_io = GraphIO::from_json(data);
        }
        catch (std::invalid_argument const& exc)
        {
            throw ConfigError(source + ": metadata '" + std::string(kMetaGraphIO) +
                              "' is invalid: " + exc.what() + ". Re-export the model");
        }
        info.has_recorded_graph_io = true;
    }
    else
    {
        info.graph_io = graph_io(info.config);
    }
    auto const precision = metadata.find(kMetaPrecision);
    if (precision != metadata.end())
    {
        info.precision = precision->second;
    }
    auto const flavor = metadata.find(kMetaFlavor);
    if (flavor != metadata.end())
    {
        info.flavor = flavor->second;
    }
    for (auto const& entry : metadata)
    {
        if (entry.first.rfind("locore.", 0) == 0)
        {
            info.metadata.insert(entry);
        }
    }
    return info;
}

std::map<std::string, std::string> read_onnx_metadata(std::string const& onnx_path)
{
    std::ifstream in(onnx_path, std::ios::binary);
    if (!in)
    {
        throw std::runtime_error("ONNX model " + onnx_path + " does not exist or cannot be read");
    }
    in.seekg(0, std::ios::end);
    auto const size = static_cast<std::uint64_t>(in.tellg());
    in.seekg(0, std::ios::beg);
    WireReader reader(in, size, onnx_path);
    std::map<std::string, std::string> metadata;
    bool graph_seen = false;
    // ModelProto: ir_version = 1, graph = 7, metadata_props = 14 (StringStringEntryProto:
    // key = 1, value = 2); every other field is skipped by its wire type.
    while (!reader.done())
    {
        std::uint64_t const tag = reader.varint();
        auto const field = static_cast<std::uint32_t>(tag >> 3);
        auto const wire = static_cast<std::uint32_t>(tag & 7);
        if (field == 0)
        {
            reader.fail("field number 0");
        }
        if (field == 7 && wire == 2)
        {
            graph_seen = true;
        }
        if (field != 14 || wire != 2)
        {
            reader.skip(wire);
            continue;
        }
        std::uint64_t const entry_length = reader.length();
        std::uint64_t const entry_end = reader.position() + entry_length;
        std::string key;
        std::string value;
        while (reader.position() < entry_end)
        {
            std::uint64_t const entry_tag = reader.varint();
            auto const entry_field = static_cast<std::uint32_t>(entry_tag >> 3);
            auto const entry_wire = static_cast<std::uint32_t>(entry_tag & 7);
            if ((entry_field == 1 || entry_field == 2) && entry_wire == 2)
            {
                std::string text = reader.bytes(reader.length());
                (entry_field == 1 ? key : value) = std::move(text);
            }
            else
            {
                reader.skip(entry_wire);
            }
        }
        if (reader.position() != entry_end)
        {
            reader.fail("a metadata entry runs past its length");
        }
        metadata[key] = value;
    }
    if (!graph_seen)
    {
        reader.fail("no graph");
    }
    return metadata;
}

std::string sidecar_path(std::string const& engine_path)
{
    return engine_path + ".json";
}

ModelInfo read_engine_model_info(std::string const& engine_path)
{
    std::string const path = sidecar_path(engine_path);
    std::ifstream probe(path);
    if (!probe)
    {
        throw std::runtime_error(path + " does not exist: " + engine_path +
                                 " has no sidecar, so nothing says what it was built from; "
                                 "rebuild it with `locore build` (which writes both)");
    }
    probe.close();
    json::Value const sidecar = json::parse_file(path);
    if (!sidecar.is_object())
    {
        throw ConfigError(path + ": an engine sidecar must be a JSON object, got " +
                          json::kind_name(sidecar.kind()));
    }
    json::Value const* format = sidecar.find("format");
    if (format == nullptr || !format->is_integer() || format->as_int() != kEngineFormat)
    {
        throw ConfigError(path + ": engine sidecar format " +
                          (format == nullptr ? std::string("(none)") : json::dump(*format)) +
                          ", this runtime reads format " + std::to_string(kEngineFormat) +
                          "; rebuild the engine with `locore build`");
    }
    json::Value const* meta = sidecar.find("metadata");
    if (meta == nullptr || !meta->is_object())
    {
        throw ConfigError(path +
                          ": the engine sidecar has no \"metadata\" object (the ONNX "
                          "file's locore.* entries); rebuild the engine with `locore build`");
    }
    std::map<std::string, std::string> metadata;
    for (auto const& member : meta->as_object())
    {
        if (!member.second.is_string())
        {
            throw ConfigError(path + ": metadata \"" + member.first + "\" must be a string, got " +
                              json::kind_name(member.second.kind()));
        }
        metadata[member.first] = member.second.as_string();
    }
    ModelInfo info = parse_model_metadata(metadata, path);
    if (json::Value const* precision = sidecar.find("precision"))
    {
        if (precision->is_string())
        {
            info.precision = precision->as_string();
        }
    }
    if (json::Value const* flavor = sidecar.find("flavor"))
    {
        if (flavor->is_string() && info.flavor.empty())
        {
            info.flavor = flavor->as_string();
        }
    }
    return info;
}

ModelInfo read_model_info(std::string const& path)
{
    std::string const suffix = ".onnx";
    if (path.size() >= suffix.size() &&
        path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0)
    {
        return parse_model_metadata(read_onnx_metadata(path), path);
    }
    return read_engine_model_info(path);
}

} // namespace locore
