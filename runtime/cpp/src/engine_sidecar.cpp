// Engine sidecars: reading, sha256, and the checks that refuse a mismatching engine.
#include "locore/engine_sidecar.hpp"

#include "locore/errors.hpp"
#include "locore/json.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

namespace locore
{

namespace
{

// ---- sha256 (FIPS 180-4) ------------------------------------------------------------------
class Sha256
{
public:
    Sha256() { reset(); }

    void update(unsigned char const* data, std::size_t size)
    {
        total_ += size;
        while (size > 0)
        {
            std::size_t take = std::min(size, block_.size() - used_);
            std::memcpy(block_.data() + used_, data, take);
            used_ += take;
            data += take;
            size -= take;
            if (used_ == block_.size())
            {
                compress(block_.data());
                used_ = 0;
            }
        }
    }

    std::string hex()
    {
        std::uint64_t bits = total_ * 8U;
        unsigned char pad = 0x80;
        update(&pad, 1);
        unsigned char zero = 0;
        while (used_ != 56)
        {
            update(&zero, 1);
        }
        unsigned char length[8];
        for (int i = 0; i < 8; ++i)
        {
            length[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
        }
        update(length, 8);
        static char const digits[] = "0123456789abcdef";
        std::string out;
        out.reserve(64);
        for (std::uint32_t word : state_)
        {
            for (int shift = 28; shift >= 0; shift -= 4)
            {
                out.push_back(digits[(word >> shift) & 0xFU]);
            }
        }
        return out;
    }

private:
    static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

    void reset()
    {
        state_ = {0x6a09e667U, 0xbb67ae85U, 0x3c6ef372U, 0xa54ff53aU,
                  0x510e527fU, 0x9b05688cU, 0x1f83d9abU, 0x5be0cd19U};
        used_ = 0;
        total_ = 0;
    }

    void compress(unsigned char const* p)
    {
        static constexpr std::uint32_t k[64] = {
            0x428a2f98U, 0x71374491U, 0xb5c0fbcfU, 0xe9b5dba5U, 0x3956c25bU, 0x59f111f1U,
            0x923f82a4U, 0xab1c5ed5U, 0xd807aa98U, 0x12835b01U, 0x243185beU, 0x550c7dc3U,
            0x72be5d74U, 0x80deb1feU, 0x9bdc06a7U, 0xc19bf174U, 0xe49b69c1U, 0xefbe4786U,
            0x0fc19dc6U, 0x240ca1ccU, 0x2de92c6fU, 0x4a7484aaU, 0x5cb0a9dcU, 0x76f988daU,
            0x983e5152U, 0xa831c66dU, 0xb00327c8U, 0xbf597fc7U, 0xc6e00bf3U, 0xd5a79147U,
            0x06ca6351U, 0x14292967U, 0x27b70a85U, 0x2e1b2138U, 0x4d2c6dfcU, 0x53380d13U,
            0x650a7354U, 0x766a0abbU, 0x81c2c92eU, 0x92722c85U, 0xa2bfe8a1U, 0xa81a664bU,
            0xc24b8b70U, 0xc76c51a3U, 0xd192e819U, 0xd6990624U, 0xf40e3585U, 0x106aa070U,
            0x19a4c116U, 0x1e376c08U, 0x2748774cU, 0x34b0bcb5U, 0x391c0cb3U, 0x4ed8aa4aU,
            0x5b9cca4fU, 0x682e6ff3U, 0x748f82eeU, 0x78a5636fU, 0x84c87814U, 0x8cc70208U,
            0x90befffaU, 0xa4506cebU, 0xbef9a3f7U, 0xc67178f2U};
        std::uint32_t w[64];
        for (int i = 0; i < 16; ++i)
        {
            w[i] = (std::uint32_t(p[4 * i]) << 24) | (std::uint32_t(p[4 * i + 1]) << 16) |
                   (std::uint32_t(p[4 * i + 2]) << 8) | std::uint32_t(p[4 * i + 3]);
        }
        for (int i = 16; i < 64; ++i)
        {
            std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        std::uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
        std::uint32_t e = state_[4], f = state_[5], g = state_[6], h = state_[7];
        for (int i = 0; i < 64; ++i)
        {
            std::uint32_t s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
            std::uint32_t ch = (e & f) ^ (~e & g);
            std::uint32_t t1 = h + s1 + ch + k[i] + w[i];
            std::uint32_t s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
            std::uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
            std::uint32_t t2 = s0 + maj;
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state_[0] += a;
        state_[1] += b;
        state_[2] += c;
        state_[3] += d;
        state_[4] += e;
        state_[5] += f;
        state_[6] += g;
        state_[7] += h;
    }

    std::array<std::uint32_t, 8> state_{};
    std::array<unsigned char, 64> block_{};
    std::size_t used_ = 0;
    std::uint64_t total_ = 0;
};

// ---- JSON helpers ---------------------------------------------------------------------------
json::Value const& member(json::Value const& object, char const* key, std::string const& source)
{
    json::Value const* found = object.find(key);
    if (found == nullptr)
    {
        throw ConfigError(source + " lacks '" + key +
                          "'; it was not written by `locore build`: rebuild the engine");
    }
    return *found;
}

std::string string_member(json::Value const& object, char const* key, std::string const& source)
{
    json::Value const& value = member(object, key, source);
    if (!value.is_string())
    {
        throw ConfigError(source + ": '" + key + "' must be a string, got " +
                          json::kind_name(value.kind()) + "; rebuild the engine");
    }
    return value.as_string();
}

ShapeProfile::Shapes parse_shapes(json::Value const& value, std::string const& where)
{
    if (!value.is_object())
    {
        throw ConfigError(where + " must be an object {input name: [dims]}, got " +
                          json::kind_name(value.kind()));
    }
    ShapeProfile::Shapes shapes;
    for (auto const& [name, dims] : value.as_object())
    {
        if (!dims.is_array())
        {
            throw ConfigError(where + " '" + name + "' must be a list of dims, got " +
                              json::kind_name(dims.kind()));
        }
        std::vector<std::int64_t> shape;
        for (json::Value const& dim : dims.as_array())
        {
            if (!dim.is_integer() || dim.as_int() < 0)
            {
                throw ConfigError(where + " '" + name + "' must hold sizes >= 0, got " +
                                  json::dump(dims));
            }
            shape.push_back(dim.as_int());
        }
        shapes.emplace_back(name, std::move(shape));
    }
    return shapes;
}

//! Python's engines._short: a 64-hex digest shows its first 12 digits.
std::string shorten(std::string const& text)
{
    bool digest =
        text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
    return digest ? text.substr(0, 12) + "\u2026" : text;
}

std::vector<std::string> split_dots(std::string const& text)
{
    std::vector<std::string> parts;
    std::string part;
    std::istringstream in(text);
    while (std::getline(in, part, '.'))
    {
        parts.push_back(part);
    }
    return parts;
}

std::vector<char> read_bytes(std::string const& path, char const* what)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw std::runtime_error(std::string(what) + " " + path + " cannot be opened (" +
                                 std::strerror(errno) + ")");
    }
    return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

} // namespace

// ---- public functions -------------------------------------------------------------------------
std::string sha256_hex(void const* data, std::size_t size)
{
    Sha256 hash;
    hash.update(static_cast<unsigned char const*>(data), size);
    return hash.hex();
}

std::string sha256_file(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw std::runtime_error("cannot read " + path + " to hash it (" + std::strerror(errno) +
                                 ")");
    }
    Sha256 hash;
    std::vector<char> buffer(1 << 20);
    while (in)
    {
        in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        hash.update(reinterpret_cast<unsigned char const*>(buffer.data()),
                    static_cast<std::size_t>(in.gcount()));
    }
    if (in.bad())
    {
        throw std::runtime_error("error while reading " + path + " to hash it");
    }
    return hash.hex();
}

EngineSidecar parse_sidecar(std::string const& text, std::string const& source)
{
    json::Value root = json::parse(text, source);
    if (!root.is_object())
    {
        throw ConfigError(source + ": an engine sidecar must be a JSON object, got " +
                          json::kind_name(root.kind()) +
                          "; rebuild the engine with `locore build`");
    }
    json::Value const* format = root.find("format");
    if (format == nullptr || !format->is_integer() || format->as_int() != kEngineFormat)
    {
        throw ConfigError(source + ": engine sidecar format " +
                          (format == nullptr ? std::string("(none)") : json::dump(*format)) +
                          ", this runtime reads format " + std::to_string(kEngineFormat) +
                          "; rebuild the engine with `locore build`");
    }
    EngineSidecar out;
    out.path = source;
    out.format = kEngineFormat;
    out.engine_sha256 = string_member(root, "engine_sha256", source);
    out.onnx_sha256 = string_member(root, "onnx_sha256", source);
    out.precision = string_member(root, "precision", source);
    out.flavor = string_member(root, "flavor", source);
    if (json::Value const* v = root.find("onnx"); v != nullptr && v->is_string())
    {
        out.onnx = v->as_string();
    }
    if (json::Value const* v = root.find("locore_version"); v != nullptr && v->is_string())
    {
        out.locore_version = v->as_string();
    }
    json::Value const& machine = member(root, "machine", source);
    if (!machine.is_object())
    {
        throw ConfigError(source + ": 'machine' must be an object; rebuild the engine");
    }
    out.machine.tensorrt_version = string_member(machine, "tensorrt_version", source + " machine");
    out.machine.gpu_name = string_member(machine, "gpu_name", source + " machine");
    out.machine.compute_capability =
        string_member(machine, "compute_capability", source + " machine");
    json::Value const& profiles = member(root, "profiles", source);
    if (!profiles.is_array())
    {
        throw ConfigError(source + ": 'profiles' must be a list; rebuild the engine");
    }
    for (std::size_t i = 0; i < profiles.size(); ++i)
    {
        std::string where = source + " profiles[" + std::to_string(i) + "]";
        json::Value const& p = profiles.at(i);
        if (!p.is_object())
        {
            throw ConfigError(where + " must be an object {min, opt, max}");
        }
        ShapeProfile profile;
        profile.min = parse_shapes(member(p, "min", where), where + ".min");
        profile.opt = parse_shapes(member(p, "opt", where), where + ".opt");
        profile.max = parse_shapes(member(p, "max", where), where + ".max");
        out.profiles.push_back(std::move(profile));
    }
    json::Value const& plugin = member(root, "plugin", source);
    if (plugin.is_object())
    {
        out.has_plugin = true;
        out.plugin.sha256 = string_member(plugin, "sha256", source + " plugin");
        out.plugin.namespace_ = string_member(plugin, "namespace", source + " plugin");
        json::Value const& versions = member(plugin, "versions", source + " plugin");
        if (!versions.is_array())
        {
            throw ConfigError(source + ": plugin 'versions' must be a list of strings");
        }
        for (json::Value const& v : versions.as_array())
        {
            out.plugin.versions.push_back(v.is_string() ? v.as_string() : json::dump(v));
        }
    }
    else if (!plugin.is_null())
    {
        throw ConfigError(source + ": 'plugin' must be null or an object; rebuild the engine");
    }
    if (json::Value const* metadata = root.find("metadata"); metadata != nullptr)
    {
        if (!metadata->is_object())
        {
            throw ConfigError(source + ": 'metadata' must be an object of strings");
        }
        for (auto const& [key, value] : metadata->as_object())
        {
            out.metadata[key] = value.is_string() ? value.as_string() : json::dump(value);
        }
    }
    return out;
}

EngineSidecar read_sidecar(std::string const& engine)
{
    std::string path = sidecar_path(engine);
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw std::runtime_error(
            path + " does not exist or cannot be read: " + engine +
            " has no sidecar, so nothing says what it was built from; rebuild it with "
            "`locore build` (which writes both)");
    }
    std::ostringstream text;
    text << in.rdbuf();
    try
    {
        return parse_sidecar(text.str(), path);
    }
    catch (JsonError const& error)
    {
        throw ConfigError(path + " is not valid JSON (" + error.what() + "); rebuild the engine");
    }
}

bool tensorrt_versions_match(std::string const& built, std::string const& running)
{
    std::vector<std::string> a = split_dots(built), b = split_dots(running);
    if (a.empty() || b.empty())
    {
        return false;
    }
    std::size_t n = std::min(a.size(), b.size());
    for (std::size_t i = 0; i < n; ++i)
    {
        if (a[i] != b[i])
        {
            return false;
        }
    }
    return true;
}

std::vector<std::string> engine_mismatches(EngineSidecar const& sidecar,
                                           EngineExpectations const& wanted)
{
    std::vector<std::string> lines;
    auto differ = [&lines](char const* what, std::string const& built, std::string const& want)
    {
        if (built != want)
        {
            lines.push_back(std::string(what) + ": engine has " + shorten(built) + ", wanted " +
                            shorten(want));
        }
    };
    if (!wanted.onnx_sha256.empty())
    {
        differ("ONNX sha256", sidecar.onnx_sha256, wanted.onnx_sha256);
    }
    if (sidecar.flavor == "plugin")
    {
        if (!sidecar.has_plugin)
        {
            lines.push_back("plugin library: the sidecar of this plugin-flavor engine records no "
                            "plugin library");
        }
        else if (wanted.plugin_sha256.empty())
        {
            lines.push_back("plugin library: this plugin-flavor engine needs the plugin library "
                            "it was built with (sha256 " +
                            shorten(sidecar.plugin.sha256) +
                            "), none was given (set TrtScorerOptions::plugin_library or "
                            "LOCORE_TRT_PLUGIN)");
        }
        else
        {
            differ("plugin library sha256", sidecar.plugin.sha256, wanted.plugin_sha256);
        }
    }
    if (wanted.has_machine)
    {
        if (!tensorrt_versions_match(sidecar.machine.tensorrt_version,
                                     wanted.machine.tensorrt_version))
        {
            lines.push_back("TensorRT version: engine has " + sidecar.machine.tensorrt_version +
                            ", wanted " + wanted.machine.tensorrt_version);
        }
        differ("GPU", sidecar.machine.gpu_name, wanted.machine.gpu_name);
        differ("compute capability", sidecar.machine.compute_capability,
               wanted.machine.compute_capability);
    }
    return lines;
}

EngineSidecar check_engine(std::string const& engine, EngineExpectations const& wanted,
                           bool verify_bytes, std::vector<char> const* engine_bytes)
{
    if (engine_bytes == nullptr && !std::ifstream(engine, std::ios::binary))
    {
        throw std::runtime_error("TensorRT engine " + engine + " does not exist or cannot be read");
    }
    EngineSidecar sidecar = read_sidecar(engine);
    std::vector<std::string> lines = engine_mismatches(sidecar, wanted);
    if (verify_bytes)
    {
        std::string digest;
        if (engine_bytes != nullptr)
        {
            digest = sha256_hex(engine_bytes->data(), engine_bytes->size());
        }
        else
        {
            std::vector<char> bytes = read_bytes(engine, "TensorRT engine");
            digest = sha256_hex(bytes.data(), bytes.size());
        }
        if (digest != sidecar.engine_sha256)
        {
            lines.push_back("engine file sha256 differs from its sidecar's (the engine was "
                            "replaced or damaged)");
        }
    }
    if (!lines.empty())
    {
        std::string message = "refusing TensorRT engine " + engine + ": it does not match \u2014 ";
        for (std::size_t i = 0; i < lines.size(); ++i)
        {
            message += (i ? "; " : "") + lines[i];
        }
        message += ". Rebuild it on this machine with `locore build`";
        throw EngineMismatchError(message);
    }
    return sidecar;
}

} // namespace locore
