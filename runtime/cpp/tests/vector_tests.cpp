/*
 * Checks the C++ runtime against the shared test vectors that the Python runtime writes
 * (runtime/cpp/tests/write_vectors.py): window schedules, re-ranked orders and fused scores,
 * packed inputs byte for byte, the Reranker end to end, AMES rows, model metadata, float16
 * rounding, and the error messages. Compiled with -ffp-contract=off (the scorers' arithmetic
 * must be Python's).
 *
 *   locore_runtime_vector_tests VECTORS.json        check every case (exit 1 on a difference)
 *   locore_runtime_vector_tests --model-info PATH   print what read_model_info makes of PATH
 */
#include "locore/runtime.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

using namespace locore;

namespace
{

int g_failures = 0;
std::map<std::string, int> g_failures_by_kind;

void failure(std::string const& kind, std::size_t index, std::string const& what)
{
    ++g_failures;
    if (++g_failures_by_kind[kind] <= 10)
    {
        std::fprintf(stderr, "%s[%zu]: %s\n", kind.c_str(), index, what.c_str());
    }
}

// ---- decoding ------------------------------------------------------------------------------
double number(json::Value const& v)
{
    if (v.is_string())
    {
        std::string const& s = v.as_string();
        if (s == "nan")
        {
            return std::nan("");
        }
        if (s == "inf")
        {
            return INFINITY;
        }
        if (s == "-inf")
        {
            return -INFINITY;
        }
        throw std::runtime_error("unexpected number text " + s);
    }
    return v.as_double();
}

std::vector<float> floats(json::Value const& v)
{
    std::vector<float> out;
    out.reserve(v.size());
    for (json::Value const& item : v.as_array())
    {
        out.push_back(static_cast<float>(number(item)));
    }
    return out;
}

std::vector<double> doubles(json::Value const& v)
{
    std::vector<double> out;
    out.reserve(v.size());
    for (json::Value const& item : v.as_array())
    {
        out.push_back(number(item));
    }
    return out;
}

std::vector<std::int64_t> ints(json::Value const& v)
{
    std::vector<std::int64_t> out;
    out.reserve(v.size());
    for (json::Value const& item : v.as_array())
    {
        out.push_back(item.as_int());
    }
    return out;
}

LocalFeatures features(json::Value const& v)
{
    LocalFeatures f;
    f.num_rows = v.at("num_rows").as_int();
    f.desc_dim = v.at("desc_dim").as_int();
    f.descriptors = floats(v.at("descriptors"));
    for (std::int64_t m : ints(v.at("mask")))
    {
        f.mask.push_back(static_cast<std::uint8_t>(m));
    }
    f.scales = ints(v.at("scales"));
    if (json::Value const* g = v.find("global"))
    {
        f.global_desc = floats(*g);
    }
    return f;
}

std::string hex(unsigned char const* data, std::size_t size)
{
    static char const digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * size);
    for (std::size_t i = 0; i < size; ++i)
    {
        out += digits[data[i] >> 4];
        out += digits[data[i] & 15];
    }
    return out;
}

template <typename T> std::string hex_of(std::vector<T> const& values)
{
    return hex(reinterpret_cast<unsigned char const*>(values.data()), values.size() * sizeof(T));
}

RerankParams params(json::Value const& v)
{
    RerankParams p;
    p.window = v.at("window").as_int();
    p.topk = v.at("topk").as_int();
    p.stride = v.at("stride").as_int();
    p.order = parse_order(v.at("order").as_string());
    p.alpha = v.at("alpha").as_double();
    p.temperature = v.at("temperature").as_double();
    return p;
}

std::vector<TensorSpec> specs(json::Value const& v)
{
    std::vector<TensorSpec> out;
    for (json::Value const& s : v.as_array())
    {
        out.push_back(TensorSpec::from_json(s));
    }
    return out;
}

//! Structural JSON equality (numbers by value, objects by key).
bool same_json(json::Value const& a, json::Value const& b)
{
    if (a.kind() != b.kind())
    {
        return false;
    }
    switch (a.kind())
    {
    case json::Value::Kind::Null:
        return true;
    case json::Value::Kind::Bool:
        return a.as_bool() == b.as_bool();
    case json::Value::Kind::Number:
        return a.as_double() == b.as_double();
    case json::Value::Kind::String:
        return a.as_string() == b.as_string();
    case json::Value::Kind::Array:
        if (a.size() != b.size())
        {
            return false;
        }
        for (std::size_t i = 0; i < a.size(); ++i)
        {
            if (!same_json(a.at(i), b.at(i)))
            {
                return false;
            }
        }
        return true;
    case json::Value::Kind::Object:
        if (a.size() != b.size())
        {
            return false;
        }
        for (auto const& member : a.as_object())
        {
            json::Value const* other = b.find(member.first);
            if (other == nullptr || !same_json(member.second, *other))
            {
                return false;
            }
        }
        return true;
    }
    return false;
}

// ---- the deterministic scorers (write_vectors.py: hash_logits, content_logits) --------------
std::vector<float> hash_logits(std::vector<std::int64_t> const& window, bool coarse)
{
    constexpr std::int64_t kMod = 1000003;
    auto const w = static_cast<std::int64_t>(window.size());
    std::int64_t const first = window.at(0);
    std::vector<float> out;
    out.reserve(window.size());
    for (std::int64_t j = 0; j < w; ++j)
    {
        std::int64_t v =
            (window[static_cast<std::size_t>(j)] * 2654435761LL + j * 40503LL + w * 97LL) % kMod;
        v = (v + first * 13LL) % kMod;
        if (coarse)
        {
            out.push_back(static_cast<float>(v % 5 - 2));
        }
        else
        {
            out.push_back(static_cast<float>(
                static_cast<double>(v) / static_cast<double>(kMod) * 20.0 - 10.0));
        }
    }
    return out;
}

class ContentScorer : public Scorer
{
public:
    std::vector<float> score(PackedWindow const& window) override
    {
        Tensor const& gd = window.input(kGalleryDesc);
        Tensor const& gm = window.input(kGalleryMask);
        Tensor const* gs = window.find(kGalleryScale);
        Tensor const* gg = window.find(kGalleryGlobal);
        double const q = window.input(kQueryDesc).value(0);
        std::int64_t const nd = gd.shape[2];
        std::int64_t const dl = gd.shape[3];
        std::vector<float> out;
        for (std::int64_t g = 0; g < window.num_gallery; ++g)
        {
            double const a = gd.value(static_cast<std::size_t>(g * nd * dl));
            std::int64_t c = 0;
            for (std::int64_t r = 0; r < nd; ++r)
            {
                c += gm.value(static_cast<std::size_t>(g * nd + r)) != 0.0 ? 1 : 0;
            }
            double const s = gs != nullptr ? gs->value(static_cast<std::size_t>(g * nd)) : 0.0;
            double value = a * 10.0 + static_cast<double>(c) * 0.37 -
                           static_cast<double>(g) * 0.11 + s * 0.05 + q;
            if (gg != nullptr)
            {
                value += gg->value(static_cast<std::size_t>(g * gg->shape[2])) * 2.0;
            }
            out.push_back(static_cast<float>(value));
        }
        return out;
    }
};

double g_max_score_diff = 0.0;
std::size_t g_tie_sensitive = 0;

//! ids identical, fused scores of the top K within `atol`, scores beyond it the similarities.
bool same_result(RerankResult const& got, std::vector<std::int64_t> const& want_ids,
                 std::vector<double> const& want_top, std::vector<double> const& sims, double atol,
                 std::string& why)
{
    if (got.ids != want_ids)
    {
        std::size_t p = 0;
        while (p < got.ids.size() && p < want_ids.size() && got.ids[p] == want_ids[p])
        {
            ++p;
        }
        why = "re-ranked ids differ from Python's, first at position " + std::to_string(p);
        return false;
    }
    double max_diff = 0.0;
    for (std::size_t p = 0; p < got.scores.size(); ++p)
    {
        double const want = p < want_top.size() ? want_top[p] : sims.at(p);
        double const diff = std::fabs(got.scores[p] - want);
        if (!(diff <= (p < want_top.size() ? atol : 0.0)))
        {
            why = "fused score at position " + std::to_string(p) + " differs by " +
                  std::to_string(diff);
            return false;
        }
        max_diff = std::max(max_diff, diff);
    }
    g_max_score_diff = std::max(g_max_score_diff, max_diff);
    return true;
}

void check_scores(std::string const& kind, std::size_t i, RerankResult const& got,
                  json::Value const& c, double atol)
{
    std::vector<double> const sims = doubles(c.at("sims"));
    std::string why;
    if (same_result(got, ints(c.at("expected_ids")), doubles(c.at("expected_scores")), sims, atol,
                    why))
    {
        return;
    }
    // The order of a tie-sensitive case depends on the last bit of tanh (numpy's kernels vs the
    // C library's): the writer recorded the order that the C library's tanh gives too.
    if (json::Value const* alt = c.find("alt_expected_ids"))
    {
        std::string alt_why;
        if (same_result(got, ints(*alt), doubles(c.at("alt_expected_scores")), sims, atol, alt_why))
        {
            ++g_tie_sensitive;
            return;
        }
        why += " (and from its tie-sensitive alternative: " + alt_why + ")";
    }
    failure(kind, i, why);
}

template <typename Body>
void expect_error(std::string const& kind, std::size_t i, std::string const& want, Body const& body,
                  bool prefix = false)
{
    try
    {
        body();
    }
    catch (std::exception const& exc)
    {
        std::string const got = exc.what();
        bool const ok = prefix ? got.rfind(want, 0) == 0 : got == want;
        if (!ok)
        {
            failure(kind, i,
                    "error message differs:\n    C++:    " + got + "\n    Python: " + want);
        }
        return;
    }
    failure(kind, i, "no error; Python raised: " + want);
}

// ---- one kind of case each -------------------------------------------------------------------
std::size_t check_half(json::Value const& half)
{
    std::vector<float> const values = floats(half.at("values"));
    std::vector<std::int64_t> const bits = ints(half.at("bits"));
    for (std::size_t i = 0; i < values.size(); ++i)
    {
        if (float_to_half(values[i]) != bits[i])
        {
            failure("half", i, "float16 bits of " + std::to_string(values[i]) + " differ");
        }
    }
    return values.size();
}

void check_window_starts(json::Value const& c, std::size_t i)
{
    auto run = [&]
    {
        return window_starts(c.at("length").as_int(), c.at("window").as_int(),
                             c.at("stride").as_int(), parse_order(c.at("order").as_string()));
    };
    if (json::Value const* error = c.find("error"))
    {
        expect_error("window_starts", i, error->as_string(), run);
        return;
    }
    if (run() != ints(c.at("starts")))
    {
        failure("window_starts", i, "schedule differs from Python's");
    }
}

void check_params_error(json::Value const& c, std::size_t i)
{
    expect_error("params_errors", i, c.at("error").as_string(),
                 [&] { params(c.at("params")).validate(); });
}

void check_rerank(json::Value const& c, std::size_t i, double atol)
{
    bool const coarse = c.at("scorer").as_string() == "coarse";
    auto fn = [&](std::vector<std::int64_t> const& w) { return hash_logits(w, coarse); };
    auto run = [&]
    {
        return sliding_window_rerank(ints(c.at("ids")), doubles(c.at("sims")), fn,
                                     params(c.at("params")));
    };
    if (json::Value const* error = c.find("error"))
    {
        expect_error("rerank", i, error->as_string(), run);
        return;
    }
    check_scores("rerank", i, run(), c, atol);
}

void check_packing(json::Value const& c, std::size_t i)
{
    LocoreConfig const config = LocoreConfig::from_json(c.at("config"));
    Packer const packer(config, specs(c.at("inputs")), parse_dtype(c.at("float_dtype").as_string()),
                        c.at("clip_scales").as_bool());
    std::vector<LocalFeatures> queries;
    for (json::Value const& q : c.at("queries").as_array())
    {
        queries.push_back(features(q));
    }
    std::vector<std::vector<LocalFeatures>> galleries;
    for (json::Value const& g : c.at("galleries").as_array())
    {
        galleries.emplace_back();
        for (json::Value const& f : g.as_array())
        {
            galleries.back().push_back(features(f));
        }
    }
    auto run = [&]
    {
        std::vector<LocalFeatures const*> qs;
        std::vector<std::vector<LocalFeatures const*>> gs;
        for (std::size_t b = 0; b < queries.size(); ++b)
        {
            qs.push_back(&queries[b]);
            gs.emplace_back();
            for (LocalFeatures const& f : galleries[b])
            {
                gs.back().push_back(&f);
            }
        }
        return c.at("query_batch").as_bool() ? packer.pack_batch(qs, gs)
                                             : packer.pack(*qs[0], gs[0]);
    };
    if (json::Value const* error = c.find("error"))
    {
        expect_error("packing", i, error->as_string(), run);
        return;
    }
    PackedWindow const window = run();
    json::Value const& expected = c.at("expected");
    if (window.inputs.size() != expected.size())
    {
        failure("packing", i,
                "packed " + std::to_string(window.inputs.size()) + " inputs, Python " +
                    std::to_string(expected.size()));
    }
    for (auto const& [name, want] : expected.as_object())
    {
        Tensor const* t = window.find(name);
        if (t == nullptr)
        {
            failure("packing", i, "no packed input " + name);
            continue;
        }
        if (dtype_name(t->dtype) != want.at("dtype").as_string() ||
            t->shape != ints(want.at("shape")))
        {
            failure("packing", i,
                    name + ": C++ " + t->describe() + ", Python " + want.at("dtype").as_string());
        }
        else if (hex(t->data.data(), t->data.size()) != want.at("hex").as_string())
        {
            failure("packing", i, name + ": packed bytes differ from Python's");
        }
    }
    std::vector<std::int64_t> const has_valid = ints(c.at("gallery_has_valid"));
    if (std::vector<std::int64_t>(window.gallery_has_valid.begin(),
                                  window.gallery_has_valid.end()) != has_valid)
    {
        failure("packing", i, "gallery_has_valid differs");
    }
}

void check_reranker(json::Value const& c, std::size_t i, double atol)
{
    LocoreConfig const config = LocoreConfig::from_json(c.at("config"));
    Packer packer(config, specs(c.at("inputs")), parse_dtype(c.at("float_dtype").as_string()));
    ContentScorer scorer;
    Reranker reranker(scorer, packer, params(c.at("params")));
    LocalFeatures const query = features(c.at("query"));
    std::vector<LocalFeatures> database;
    for (json::Value const& f : c.at("database").as_array())
    {
        database.push_back(features(f));
    }
    auto run = [&]
    { return reranker.rerank(query, database, ints(c.at("ids")), doubles(c.at("sims"))); };
    if (json::Value const* error = c.find("error"))
    {
        expect_error("reranker", i, error->as_string(), run);
        return;
    }
    check_scores("reranker", i, run(), c, atol);
    if (reranker.calls() != c.at("calls").as_int())
    {
        failure("reranker", i,
                std::to_string(reranker.calls()) + " scorer calls, Python " +
                    std::to_string(c.at("calls").as_int()));
    }
}

void check_ames(json::Value const& c, std::size_t i)
{
    std::vector<float> const rows = floats(c.at("rows"));
    std::int64_t const width = c.at("row_width").as_int();
    auto run = [&]
    { return from_ames_rows(rows.data(), static_cast<std::int64_t>(rows.size()) / width, width); };
    if (json::Value const* error = c.find("error"))
    {
        expect_error("ames_rows", i, error->as_string(), run);
        return;
    }
    LocalFeatures const f = run();
    json::Value const& want = c.at("expected");
    std::pair<char const*, std::string> const got[] = {{"descriptors", hex_of(f.descriptors)},
                                                       {"scales", hex_of(f.scales)},
                                                       {"mask", hex_of(f.mask)},
                                                       {"xy", hex_of(f.xy)},
                                                       {"weights", hex_of(f.weights)}};
    for (auto const& [name, text] : got)
    {
        if (text != want.at(name).at("hex").as_string())
        {
            failure("ames_rows", i, std::string(name) + " differs from Python's");
        }
    }
}

void check_metadata(json::Value const& c, std::size_t i)
{
    std::map<std::string, std::string> metadata;
    for (auto const& [key, value] : c.at("metadata").as_object())
    {
        metadata[key] = value.as_string();
    }
    auto run = [&] { return parse_model_metadata(metadata, "vectors.onnx"); };
    if (json::Value const* error = c.find("error_prefix"))
    {
        expect_error("metadata", i, error->as_string(), run, true);
        return;
    }
    ModelInfo const info = run();
    if (!same_json(info.config.to_json(), c.at("expected_config")))
    {
        failure("metadata", i, "config differs: " + json::dump(info.config.to_json()));
    }
    json::Value const& gio = c.at("expected_graph_io");
    if (gio.is_null() != !info.has_recorded_graph_io ||
        (!gio.is_null() && !same_json(info.graph_io.to_json(), gio)))
    {
        failure("metadata", i, "graph I/O differs: " + json::dump(info.graph_io.to_json()));
    }
}

int check_file(std::string const& path)
{
    json::Value const data = json::parse_file(path);
    if (data.at("format").as_int() != 1)
    {
        std::fprintf(stderr, "%s: vectors format %lld, this test reads 1\n", path.c_str(),
                     static_cast<long long>(data.at("format").as_int()));
        return 1;
    }
    double const atol = data.at("fused_score_atol").as_double();
    std::map<std::string, std::size_t> counts;
    counts["half"] = check_half(data.at("half"));
    struct Kind
    {
        char const* name;
        std::function<void(json::Value const&, std::size_t)> check;
    };
    Kind const kinds[] = {
        {"window_starts", check_window_starts},
        {"params_errors", check_params_error},
        {"rerank", [&](json::Value const& c, std::size_t i) { check_rerank(c, i, atol); }},
        {"packing", check_packing},
        {"reranker", [&](json::Value const& c, std::size_t i) { check_reranker(c, i, atol); }},
        {"ames_rows", check_ames},
        {"metadata", check_metadata},
    };
    for (Kind const& kind : kinds)
    {
        json::Value const& cases = data.at(kind.name);
        for (std::size_t i = 0; i < cases.size(); ++i)
        {
            try
            {
                kind.check(cases.at(i), i);
            }
            catch (std::exception const& exc)
            {
                failure(kind.name, i, std::string("unexpected exception: ") + exc.what());
            }
        }
        counts[kind.name] = cases.size();
    }
    std::printf("%s:", path.c_str());
    for (auto const& [name, n] : counts)
    {
        std::printf(" %zu %s%s", n, name.c_str(), name == "half" ? " values," : ",");
    }
    std::printf(
        " max |fused score diff| %.3g (tolerance %.3g), %zu tie-sensitive orders matched as "
        "the C library's tanh gives them\n",
        g_max_score_diff, atol, g_tie_sensitive);
    if (g_failures != 0)
    {
        std::printf("FAILED: %d difference(s) from the Python runtime\n", g_failures);
        return 1;
    }
    std::printf("OK: the C++ runtime matches the Python runtime on every case\n");
    return 0;
}

int print_model_info(std::string const& path)
{
    ModelInfo const info = read_model_info(path);
    json::Value::Object meta;
    for (auto const& [key, value] : info.metadata)
    {
        meta.emplace_back(key, json::Value::string(value));
    }
    json::Value const out = json::Value::object(
        {{"config", info.config.to_json()},
         {"graph_io", info.graph_io.to_json()},
         {"has_recorded_graph_io", json::Value::boolean(info.has_recorded_graph_io)},
         {"precision", json::Value::string(info.precision)},
         {"flavor", json::Value::string(info.flavor)},
         {"metadata", json::Value::object(std::move(meta))}});
    std::printf("%s\n", json::dump(out).c_str());
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        if (argc == 3 && std::strcmp(argv[1], "--model-info") == 0)
        {
            return print_model_info(argv[2]);
        }
        if (argc != 2)
        {
            std::fprintf(stderr, "usage: %s VECTORS.json | --model-info MODEL\n", argv[0]);
            return 2;
        }
        return check_file(argv[1]);
    }
    catch (std::exception const& exc)
    {
        std::fprintf(stderr, "error: %s\n", exc.what());
        return 1;
    }
}
