/*
 * LocoreConfig, TensorSpec, GraphIO and graph_io (see locore/config.hpp); the checks and messages
 * follow locore/config.py.
 */
#include "locore/config.hpp"
#include "locore/errors.hpp"

#include <algorithm>
#include <set>
#include <sstream>

namespace locore
{
namespace
{

constexpr char const* kSpecDtypes[] = {"float", "float32", "float16", "float64", "bool",
                                       "int64", "int32",   "int8",    "uint8"};
constexpr char const* kAggregations[] = {"start", "end", "mean", "max"};

std::string join(std::vector<std::string> const& items)
{
    std::string out = "[";
    for (std::size_t i = 0; i < items.size(); ++i)
    {
        out += (i ? ", '" : "'") + items[i] + "'";
    }
    return out + "]";
}

std::vector<std::string> keys_of(json::Value const& object)
{
    std::vector<std::string> keys;
    for (auto const& member : object.as_object())
    {
        keys.push_back(member.first);
    }
    std::sort(keys.begin(), keys.end());
    return keys;
}

std::string describe_json(json::Value const& value)
{
    std::string text = json::dump(value);
    if (text.size() > 60)
    {
        text = text.substr(0, 57) + "...";
    }
    return text;
}

} // namespace

// ---- TensorSpec --------------------------------------------------------------------------------
TensorSpec TensorSpec::from_json(json::Value const& value, std::string const& where_in)
{
    if (!value.is_object())
    {
        throw ConfigError(where_in +
                          " must be a JSON object with name, shape, dtype and description, got " +
                          json::kind_name(value.kind()));
    }
    std::vector<std::string> const known = {"name", "shape", "dtype", "description"};
    std::vector<std::string> unknown;
    std::vector<std::string> missing;
    for (auto const& member : value.as_object())
    {
        if (std::find(known.begin(), known.end(), member.first) == known.end())
        {
            unknown.push_back(member.first);
        }
    }
    for (std::size_t i = 0; i < 3; ++i)
    {
        if (value.find(known[i]) == nullptr)
        {
            missing.push_back(known[i]);
        }
    }
    if (!unknown.empty() || !missing.empty())
    {
        std::sort(unknown.begin(), unknown.end());
        throw ConfigError(where_in + " has keys " + join(keys_of(value)) + "; expected " +
                          join(known) + " (missing " + join(missing) + ", unknown " +
                          join(unknown) + "). Was it written by a different locore-edge version?");
    }
    TensorSpec spec;
    json::Value const& name = value.at("name");
    if (!name.is_string() || name.as_string().empty())
    {
        throw ConfigError(where_in + ": name must be a non-empty string, got " +
                          describe_json(name));
    }
    spec.name = name.as_string();
    std::string const where = where_in + " '" + spec.name + "'";
    json::Value const& shape = value.at("shape");
    bool shape_ok = shape.is_array();
    if (shape_ok)
    {
        for (json::Value const& dim : shape.as_array())
        {
            if (dim.is_string() && !dim.as_string().empty())
            {
                spec.shape.push_back(Dim::dynamic(dim.as_string()));
            }
            else if (dim.is_integer() && dim.as_int() >= 0)
            {
                spec.shape.push_back(Dim::fixed(dim.as_int()));
            }
            else
            {
                shape_ok = false;
                break;
            }
        }
    }
    if (!shape_ok)
    {
        throw ConfigError(where +
                          ": shape must be a list of sizes >= 0 and dynamic-dim names, got " +
                          describe_json(shape));
    }
    json::Value const& dtype = value.at("dtype");
    bool dtype_ok = false;
    if (dtype.is_string())
    {
        for (char const* d : kSpecDtypes)
        {
            dtype_ok = dtype_ok || dtype.as_string() == d;
        }
    }
    if (!dtype_ok)
    {
        throw ConfigError(where +
                          ": dtype must be one of ['float', 'float32', 'float16', "
                          "'float64', 'bool', 'int64', 'int32', 'int8', 'uint8'], got " +
                          describe_json(dtype));
    }
    spec.dtype = dtype.as_string();
    if (json::Value const* description = value.find("description"))
    {
        if (!description->is_string())
        {
            throw ConfigError(where + ": description must be a string, got " +
                              describe_json(*description));
        }
        spec.description = description->as_string();
    }
    return spec;
}

json::Value TensorSpec::to_json() const
{
    json::Value::Array dims;
    for (Dim const& d : shape)
    {
        dims.push_back(d.is_dynamic() ? json::Value::string(d.name) : json::Value::integer(d.size));
    }
    return json::Value::object({{"name", json::Value::string(name)},
                                {"shape", json::Value::array(std::move(dims))},
                                {"dtype", json::Value::string(dtype)},
                                {"description", json::Value::string(description)}});
}

std::string TensorSpec::shape_text() const
{
    std::string out = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)
    {
        out += (i ? ", " : "") +
               (shape[i].is_dynamic() ? shape[i].name : std::to_string(shape[i].size));
    }
    return out + "]";
}

// ---- GraphIO -----------------------------------------------------------------------------------
namespace
{

TensorSpec const* find_spec(std::vector<TensorSpec> const& specs, std::string const& name)
{
    for (TensorSpec const& spec : specs)
    {
        if (spec.name == name)
        {
            return &spec;
        }
    }
    return nullptr;
}

std::string names_of(std::vector<TensorSpec> const& specs)
{
    std::vector<std::string> names;
    for (TensorSpec const& spec : specs)
    {
        names.push_back(spec.name);
    }
    return join(names);
}

} // namespace

TensorSpec const* GraphIO::find_input(std::string const& name) const
{
    return find_spec(inputs, name);
}

TensorSpec const& GraphIO::input(std::string const& name) const
{
    TensorSpec const* spec = find_input(name);
    if (spec == nullptr)
    {
        throw ConfigError("graph has no input '" + name + "'; inputs are " + names_of(inputs));
    }
    return *spec;
}

TensorSpec const* GraphIO::find_output(std::string const& name) const
{
    return find_spec(outputs, name);
}

TensorSpec const& GraphIO::output(std::string const& name) const
{
    TensorSpec const* spec = find_output(name);
    if (spec == nullptr)
    {
        throw ConfigError("graph has no output '" + name + "'; outputs are " + names_of(outputs));
    }
    return *spec;
}

GraphIO GraphIO::from_json(json::Value const& value)
{
    if (!value.is_object() || keys_of(value) != std::vector<std::string>{"inputs", "outputs"})
    {
        std::string const got =
            value.is_object() ? join(keys_of(value)) : json::kind_name(value.kind());
        throw ConfigError("graph I/O must be a JSON object with exactly the keys 'inputs' and "
                          "'outputs', got " +
                          got);
    }
    GraphIO graph;
    for (char const* role : {"inputs", "outputs"})
    {
        json::Value const& items = value.at(role);
        if (!items.is_array())
        {
            throw ConfigError(std::string("graph I/O '") + role +
                              "' must be a list of tensor specs, got " +
                              json::kind_name(items.kind()));
        }
        auto& specs = std::string(role) == "inputs" ? graph.inputs : graph.outputs;
        for (std::size_t i = 0; i < items.size(); ++i)
        {
            specs.push_back(TensorSpec::from_json(items.at(i), "graph I/O " + std::string(role) +
                                                                   "[" + std::to_string(i) + "]"));
        }
    }
    std::set<std::string> seen;
    std::set<std::string> repeated;
    for (auto const* specs : {&graph.inputs, &graph.outputs})
    {
        for (TensorSpec const& spec : *specs)
        {
            if (!seen.insert(spec.name).second)
            {
                repeated.insert(spec.name);
            }
        }
    }
    if (!repeated.empty())
    {
        throw ConfigError("graph I/O names must be distinct; " +
                          join(std::vector<std::string>(repeated.begin(), repeated.end())) +
                          " appear more than once");
    }
    return graph;
}

GraphIO GraphIO::parse(std::string const& text, std::string const& source)
{
    return from_json(json::parse(text, source));
}

json::Value GraphIO::to_json() const
{
    json::Value::Array ins;
    json::Value::Array outs;
    for (TensorSpec const& s : inputs)
    {
        ins.push_back(s.to_json());
    }
    for (TensorSpec const& s : outputs)
    {
        outs.push_back(s.to_json());
    }
    return json::Value::object({{"inputs", json::Value::array(std::move(ins))},
                                {"outputs", json::Value::array(std::move(outs))}});
}

// ---- LocoreConfig ------------------------------------------------------------------------------
void LocoreConfig::validate() const
{
    auto positive = [](char const* field, std::int64_t value)
    {
        if (value < 1)
        {
            throw ConfigError(std::string(field) + " must be a positive integer, got " +
                              std::to_string(value));
        }
    };
    positive("desc_dim", desc_dim);
    positive("num_desc", num_desc);
    positive("num_scales", num_scales);
    positive("d_model", d_model);
    positive("n_layers", n_layers);
    positive("n_heads", n_heads);
    positive("expand", expand);
    positive("d_state", d_state);
    positive("n_groups", n_groups);
    positive("chunk_size", chunk_size);
    positive("match_bins", match_bins);
    std::int64_t const d_inner = expand * d_model;
    if (d_inner % n_heads != 0)
    {
        throw ConfigError("expand * d_model (" + std::to_string(d_inner) +
                          ") must be divisible by n_heads (" + std::to_string(n_heads) + ")");
    }
    if (n_heads % n_groups != 0)
    {
        throw ConfigError("n_heads (" + std::to_string(n_heads) +
                          ") must be divisible by n_groups (" + std::to_string(n_groups) + ")");
    }
    if (std::find(std::begin(kAggregations), std::end(kAggregations), aggregation) ==
        std::end(kAggregations))
    {
        throw ConfigError("aggregation must be one of ('start', 'end', 'mean', 'max'), got '" +
                          aggregation + "'");
    }
    if (use_global && global_dim < 1)
    {
        throw ConfigError("use_global=True needs global_dim >= 1");
    }
    if (!(dropout >= 0.0 && dropout < 1.0))
    {
        std::ostringstream s;
        s << "dropout must be in [0, 1), got " << dropout;
        throw ConfigError(s.str());
    }
    if (!extra.is_object())
    {
        throw ConfigError("extra must be a dict, got " + describe_json(extra));
    }
}

LocoreConfig LocoreConfig::from_json(json::Value const& value)
{
    if (!value.is_object())
    {
        throw ConfigError(std::string("a LocoreConfig must be a JSON object, got ") +
                          json::kind_name(value.kind()));
    }
    LocoreConfig config;
    struct IntField
    {
        char const* name;
        std::int64_t* target;
    };
    IntField const ints[] = {
        {"desc_dim", &config.desc_dim},     {"num_desc", &config.num_desc},
        {"num_scales", &config.num_scales}, {"global_dim", &config.global_dim},
        {"d_model", &config.d_model},       {"n_layers", &config.n_layers},
        {"n_heads", &config.n_heads},       {"expand", &config.expand},
        {"d_state", &config.d_state},       {"n_groups", &config.n_groups},
        {"chunk_size", &config.chunk_size}, {"match_bins", &config.match_bins}};
    std::vector<std::string> known = {"use_global", "aggregation", "match_features",
                                      "dropout",    "name",        "extra"};
    for (IntField const& f : ints)
    {
        known.emplace_back(f.name);
    }
    std::vector<std::string> unknown;
    for (auto const& member : value.as_object())
    {
        if (std::find(known.begin(), known.end(), member.first) == known.end())
        {
            unknown.push_back(member.first);
        }
    }
    if (!unknown.empty())
    {
        std::sort(unknown.begin(), unknown.end());
        std::sort(known.begin(), known.end());
        throw ConfigError("unknown LocoreConfig keys " + join(unknown) + "; known keys are " +
                          join(known) + ". Was this written by a newer locore-edge?");
    }
    for (IntField const& f : ints)
    {
        if (json::Value const* v = value.find(f.name))
        {
            if (!v->is_integer())
            {
                throw ConfigError(std::string(f.name) + " must be an integer, got " +
                                  describe_json(*v));
            }
            *f.target = v->as_int();
        }
    }
    auto get_bool = [&](char const* field, bool& target)
    {
        if (json::Value const* v = value.find(field))
        {
            if (!v->is_bool())
            {
                throw ConfigError(std::string(field) + " must be a bool, got " + describe_json(*v));
            }
            target = v->as_bool();
        }
    };
    auto get_string = [&](char const* field, std::string& target)
    {
        if (json::Value const* v = value.find(field))
        {
            if (!v->is_string())
            {
                throw ConfigError(std::string(field) + " must be a str, got " + describe_json(*v));
            }
            target = v->as_string();
        }
    };
    get_bool("use_global", config.use_global);
    get_bool("match_features", config.match_features);
    get_string("aggregation", config.aggregation);
    get_string("name", config.name);
    if (json::Value const* v = value.find("dropout"))
    {
        if (!v->is_number())
        {
            throw ConfigError("dropout must be a number in [0, 1), got " + describe_json(*v));
        }
        config.dropout = v->as_double();
    }
    if (json::Value const* v = value.find("extra"))
    {
        config.extra = *v;
    }
    config.validate();
    return config;
}

LocoreConfig LocoreConfig::parse(std::string const& text, std::string const& source)
{
    return from_json(json::parse(text, source));
}

json::Value LocoreConfig::to_json() const
{
    using json::Value;
    return Value::object({{"aggregation", Value::string(aggregation)},
                          {"chunk_size", Value::integer(chunk_size)},
                          {"d_model", Value::integer(d_model)},
                          {"d_state", Value::integer(d_state)},
                          {"desc_dim", Value::integer(desc_dim)},
                          {"dropout", Value::number(dropout)},
                          {"expand", Value::integer(expand)},
                          {"extra", extra},
                          {"global_dim", Value::integer(global_dim)},
                          {"match_bins", Value::integer(match_bins)},
                          {"match_features", Value::boolean(match_features)},
                          {"n_groups", Value::integer(n_groups)},
                          {"n_heads", Value::integer(n_heads)},
                          {"n_layers", Value::integer(n_layers)},
                          {"name", Value::string(name)},
                          {"num_desc", Value::integer(num_desc)},
                          {"num_scales", Value::integer(num_scales)},
                          {"use_global", Value::boolean(use_global)}});
}

// ---- graph_io ----------------------------------------------------------------------------------
GraphIO graph_io(LocoreConfig const& config, bool with_scales, bool with_token_logits)
{
    Dim const b = Dim::dynamic(kBatchDim);
    Dim const g = Dim::dynamic(kGalleryDim);
    Dim const nd = Dim::fixed(config.num_desc);
    Dim const dl = Dim::fixed(config.desc_dim);
    GraphIO io;
    io.inputs = {
        {kQueryDesc, {b, nd, dl}, "float", "query local descriptors"},
        {kQueryMask, {b, nd}, "bool", "1 = valid query descriptor, 0 = padding"},
        {kGalleryDesc, {b, g, nd, dl}, "float", "gallery local descriptors"},
        {kGalleryMask, {b, g, nd}, "bool", "1 = valid gallery descriptor"},
    };
    if (with_scales)
    {
        io.inputs.push_back({kQueryScale, {b, nd}, "int64", "scale id of each query descriptor"});
        io.inputs.push_back(
            {kGalleryScale, {b, g, nd}, "int64", "scale id of each gallery descriptor"});
    }
    if (config.use_global)
    {
        Dim const dg = Dim::fixed(config.global_dim);
        io.inputs.push_back({kQueryGlobal, {b, dg}, "float", "query global vector"});
        io.inputs.push_back({kGalleryGlobal, {b, g, dg}, "float", "gallery global vectors"});
    }
    io.outputs.push_back({kScores, {b, g}, "float32", "one logit per gallery image"});
    if (with_token_logits)
    {
        io.outputs.push_back(
            {kTokenLogits, {b, Dim::dynamic(kSeqDim)}, "float32", "one logit per sequence token"});
    }
    return io;
}

} // namespace locore
