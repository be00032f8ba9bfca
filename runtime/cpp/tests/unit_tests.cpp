/*
 * Hand-computed checks of the C++ runtime (the expected values are worked out here, not taken
 * from the code under test). The shared test vectors (vector_tests.cpp) compare it with Python.
 */
#include "check.hpp"
#include "locore/runtime.hpp"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

using namespace locore;

namespace
{

void test_json()
{
    json::Value const v =
        json::parse(R"( {"a": [1, 2.5, -3e2, true, null], "b": {"c": "x\"\u00e9\ud83d\ude00"}} )");
    CHECK(v.at("a").size() == 5);
    CHECK(v.at("a").at(0).is_integer() && v.at("a").at(0).as_int() == 1);
    CHECK(!v.at("a").at(1).is_integer() && v.at("a").at(1).as_double() == 2.5);
    CHECK(v.at("a").at(2).as_double() == -300.0 && !v.at("a").at(2).is_integer());
    CHECK(v.at("a").at(3).as_bool());
    CHECK(v.at("a").at(4).is_null());
    CHECK(v.at("b").at("c").as_string() == "x\"\xc3\xa9\xf0\x9f\x98\x80");
    CHECK(json::parse("9007199254740993").as_int() == 9007199254740993LL);
    CHECK(json::parse("0.1").as_double() == 0.1);
    CHECK(json::parse(json::dump(json::parse("[0.1, 1e-300, \"t\\n\"]"))).at(1).as_double() ==
          1e-300);
    CHECK_THROWS(JsonError, "line 2, column 3", json::parse("[1,\n  ]"));
    CHECK_THROWS(JsonError, "repeated key", json::parse(R"({"a": 1, "a": 2})"));
    CHECK_THROWS(JsonError, "unexpected text", json::parse("1 2"));
    CHECK_THROWS(JsonError, "expected a JSON integer", json::parse("1.0").as_int());
    CHECK_THROWS(JsonError, "no key \"z\"", json::parse("{\"a\": 1}").at("z"));
    // Mutated documents parse or raise JsonError; nothing else (no crash, no other exception).
    std::string const doc = R"({"inputs": [{"name": "q", "shape": ["batch", 48], "dtype": "bool"}],
                                "x": [1.5e-3, -0, true, null, "\u00e9\n"]})";
    std::uint32_t state = 12345;
    int parsed = 0;
    for (int round = 0; round < 20000; ++round)
    {
        std::string text = doc;
        for (int k = 0; k < 1 + round % 4; ++k)
        {
            state = state * 1664525u + 1013904223u;
            std::size_t const at = (state >> 8) % text.size();
            char const c = static_cast<char>((state >> 20) & 0x7f);
            switch ((state >> 4) % 3)
            {
            case 0:
                text[at] = c;
                break;
            case 1:
                text.erase(at, 1);
                break;
            default:
                text.insert(at, 1, c);
                break;
            }
        }
        try
        {
            json::parse(text);
            ++parsed;
        }
        catch (JsonError const&)
        {
        }
    }
    CHECK(parsed > 0 && parsed < 20000);
}

void test_half()
{
    CHECK(float_to_half(1.0F) == 0x3c00);
    CHECK(float_to_half(-2.0F) == 0xc000);
    CHECK(float_to_half(65504.0F) == 0x7bff);
    CHECK(float_to_half(65519.0F) == 0x7bff);              // below the halfway point to 65536
    CHECK(float_to_half(65520.0F) == 0x7c00);              // halfway: ties to even -> inf
    CHECK(float_to_half(std::ldexp(1.0F, -24)) == 0x0001); // smallest subnormal
    CHECK(float_to_half(std::ldexp(1.0F, -25)) == 0x0000); // halfway to it: ties to even (0)
    CHECK(float_to_half(std::ldexp(1.5F, -25)) == 0x0001);
    CHECK(float_to_half(std::ldexp(3.0F, -25)) == 0x0002);        // 1.5 units: ties to even (2)
    CHECK(float_to_half(1.0F + std::ldexp(1.0F, -11)) == 0x3c00); // tie -> even
    CHECK(float_to_half(1.0F + std::ldexp(3.0F, -11)) == 0x3c02); // tie -> even (up)
    CHECK(half_to_float(0x0001) == std::ldexp(1.0F, -24));
    CHECK(half_to_float(0x3555) == 0.333251953125F);
    for (std::uint32_t h = 0; h < 0x7c00; ++h) // every finite half round-trips
    {
        CHECK(float_to_half(half_to_float(static_cast<std::uint16_t>(h))) == h);
    }
}

void test_window_starts()
{
    using V = std::vector<std::int64_t>;
    // LOCORE: top 400, window 100, stride 50: 350 is skipped (its window [350, 400) lies
    // inside [300, 400)).
    CHECK((window_starts(400, 100, 50, Order::StartToEnd) == V{0, 50, 100, 150, 200, 250, 300}));
    CHECK((window_starts(400, 100, 50, Order::EndToStart) == V{300, 250, 200, 150, 100, 50, 0}));
    // 10 positions, window 4, stride 3: windows [0,4) [3,7) [6,10); 9 would lie inside [6,10).
    CHECK((window_starts(10, 4, 3, Order::StartToEnd) == V{0, 3, 6}));
    CHECK((window_starts(10, 4, 3, Order::StartToEndToStart) == V{0, 3, 6, 3, 0}));
    CHECK((window_starts(10, 4, 3, Order::EndToStartToEnd) == V{6, 3, 0, 3, 6}));
    // 11 positions: [8, 11) is shorter than the window but new.
    CHECK((window_starts(11, 4, 4, Order::StartToEnd) == V{0, 4, 8}));
    CHECK((window_starts(5, 100, 50, Order::EndToStart) == V{0}));
    CHECK(window_starts(0, 4, 2, Order::EndToStart).empty());
    CHECK_THROWS(UsageError, "need 1 <= stride <= window",
                 window_starts(10, 2, 3, Order::StartToEnd));
    CHECK(parse_order("end-to-start-to-end") == Order::EndToStartToEnd);
    CHECK_THROWS(UsageError, "order must be one of", parse_order("sideways"));
}

void test_rerank()
{
    // One window of three: logits 0, 10, -10; alpha 0.5, t 0.1 ->
    // fused = 0.5 * sim + 0.5 * sigmoid(0.1 * logit).
    std::vector<std::int64_t> const ids = {7, 8, 9, 4};
    std::vector<double> const sims = {0.9, 0.8, 0.7, 0.6};
    RerankParams params;
    params.window = 3;
    params.stride = 3;
    params.topk = 3;
    auto fn = [](std::vector<std::int64_t> const& w)
    {
        std::vector<float> out;
        for (std::int64_t id : w)
        {
            out.push_back(id == 7 ? 0.0F : id == 8 ? 10.0F : -10.0F);
        }
        return out;
    };
    RerankResult const r = sliding_window_rerank(ids, sims, fn, params);
    double const s = 1.0 / (1.0 + std::exp(-1.0));
    double const f7 = 0.45 + 0.25;
    double const f8 = 0.4 + 0.5 * s;
    double const f9 = 0.35 + 0.5 * (1.0 - s);
    CHECK((r.ids == std::vector<std::int64_t>{8, 7, 9, 4}));
    CHECK(std::fabs(r.scores[0] - f8) < 1e-12);
    CHECK(std::fabs(r.scores[1] - f7) < 1e-12);
    CHECK(std::fabs(r.scores[2] - f9) < 1e-12);
    CHECK(r.scores[3] == 0.6);
    CHECK_THROWS(std::runtime_error, "one logit per image",
                 sliding_window_rerank(
                     ids, sims, [](auto const&) { return std::vector<float>{1}; }, params));
    CHECK_THROWS(UsageError, "at shortlist position 1 is nan",
                 sliding_window_rerank(ids, {0.1, std::nan(""), 0.2, 0.3}, fn, params));
    RerankParams bad;
    bad.stride = 200;
    CHECK_THROWS(UsageError, "stride (200) must not exceed the window (100)", bad.validate());
    bad = RerankParams{};
    bad.alpha = 1.5;
    CHECK_THROWS(UsageError, "got 1.5", bad.validate());
}

LocoreConfig small_config()
{
    LocoreConfig cfg;
    cfg.num_desc = 3;
    cfg.desc_dim = 2;
    cfg.num_scales = 4;
    return cfg;
}

LocalFeatures features(std::vector<float> desc, std::vector<std::uint8_t> mask,
                       std::vector<std::int64_t> scales)
{
    LocalFeatures f;
    f.num_rows = static_cast<std::int64_t>(mask.size());
    f.desc_dim = 2;
    f.descriptors = std::move(desc);
    f.mask = std::move(mask);
    f.scales = std::move(scales);
    return f;
}

void test_packing()
{
    Packer const packer(small_config());
    // query: 4 rows (truncated to 3), row 1 padding; gallery: 1 row (padded to 3), 0 valid rows.
    LocalFeatures const q = features({1, 2, 3, 4, 5, 6, 7, 8}, {1, 0, 1, 1}, {1, 2, 3, 0});
    LocalFeatures const g0 = features({9, 10}, {1}, {2});
    LocalFeatures const g1 = features({11, 12}, {0}, {3});
    PackedWindow const w = packer.pack(q, std::vector<LocalFeatures>{g0, g1});
    CHECK(w.batch == 1 && w.num_gallery == 2);
    Tensor const& qd = w.input(kQueryDesc);
    CHECK((qd.shape == std::vector<std::int64_t>{1, 3, 2}) && qd.dtype == DType::Float32);
    std::vector<float> const want_qd = {1, 2, 0, 0, 5, 6};
    CHECK(std::vector<float>(qd.as<float>(), qd.as<float>() + 6) == want_qd);
    Tensor const& qm = w.input(kQueryMask);
    CHECK(qm.dtype == DType::Bool && qm.data == (std::vector<std::uint8_t>{1, 0, 1}));
    Tensor const& qs = w.input(kQueryScale);
    CHECK((std::vector<std::int64_t>(qs.as<std::int64_t>(), qs.as<std::int64_t>() + 3) ==
           std::vector<std::int64_t>{1, 0, 3}));
    Tensor const& gd = w.input(kGalleryDesc);
    CHECK((gd.shape == std::vector<std::int64_t>{1, 2, 3, 2}));
    std::vector<float> const want_gd = {9, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    CHECK(std::vector<float>(gd.as<float>(), gd.as<float>() + 12) == want_gd);
    CHECK((w.input(kGalleryMask).data == std::vector<std::uint8_t>{1, 0, 0, 0, 0, 0}));
    CHECK((w.gallery_has_valid == std::vector<std::uint8_t>{1, 0}));
    // errors
    LocalFeatures const empty_q = features({1, 2}, {0}, {0});
    CHECK_THROWS(PackingError, "the query has no valid descriptor",
                 packer.pack(empty_q, std::vector<LocalFeatures>{g0}));
    LocalFeatures const big_scale = features({1, 2}, {1}, {4});
    CHECK_THROWS(
        PackingError,
        "query scale ids must be in [0, 3] (the model has num_scales=4), got ids from 4 to 4",
        packer.pack(big_scale, std::vector<LocalFeatures>{g0}));
    Packer const clipping(small_config(), DType::Float32, true);
    CHECK(clipping.pack(big_scale, std::vector<LocalFeatures>{g0}).input(kQueryScale).value(0) ==
          3.0);
    LocalFeatures wide;
    wide.num_rows = 1;
    wide.desc_dim = 3;
    wide.descriptors = {1, 2, 3};
    wide.mask = {1};
    wide.scales = {0};
    CHECK_THROWS(PackingError, "gallery descriptors must be [G, 3, 2] float32, got [G, 1, 3]",
                 packer.pack(q, std::vector<LocalFeatures>{wide}));
    // float16: 70000 overflows
    Packer const half(small_config(), DType::Float16);
    LocalFeatures const huge = features({70000, 1}, {1}, {0});
    CHECK_THROWS(PackingError,
                 "at image 0, row 0 (after conversion to float16, whose largest value is 6.55e+04)",
                 half.pack(q, std::vector<LocalFeatures>{huge}));
    CHECK(half.pack(q, std::vector<LocalFeatures>{g0}).input(kGalleryDesc).dtype == DType::Float16);
}

void test_config_and_metadata()
{
    LocoreConfig cfg;
    cfg.num_desc = 48;
    cfg.use_global = true;
    cfg.global_dim = 16;
    GraphIO const io = graph_io(cfg);
    CHECK(io.inputs.size() == 8);
    GraphIO const back = GraphIO::parse(json::dump(io.to_json()));
    CHECK(back.input(kGalleryDesc).shape_text() == "[batch, num_gallery, 48, 128]");
    CHECK(back.input(kGalleryGlobal).dtype == "float");
    CHECK_THROWS(ConfigError, "unknown LocoreConfig keys ['future']",
                 LocoreConfig::parse(R"({"future": 1})"));
    CHECK_THROWS(ConfigError, "num_desc must be an integer",
                 LocoreConfig::parse(R"({"num_desc": 4.0})"));
    CHECK_THROWS(ConfigError, "graph has no input 'nope'", io.input("nope"));
    std::map<std::string, std::string> meta = {{kMetaConfig, json::dump(cfg.to_json())},
                                               {kMetaGraphIO, json::dump(io.to_json())},
                                               {kMetaPrecision, "fp16"}};
    ModelInfo const info = parse_model_metadata(meta, "m.onnx");
    CHECK(info.has_recorded_graph_io && info.precision == "fp16" && info.config.global_dim == 16);
    CHECK_THROWS(ConfigError, "m.onnx has no 'locore.config' metadata",
                 parse_model_metadata({}, "m.onnx"));

    // A hand-made ONNX ModelProto: ir_version 8, graph (empty), metadata_props {k: v} x2.
    auto entry = [](std::string const& k, std::string const& v)
    {
        std::string e;
        e += '\x0a';
        e += static_cast<char>(k.size());
        e += k;
        e += '\x12';
        e += static_cast<char>(v.size());
        e += v;
        return e;
    };
    std::string const config_text = R"({"num_desc": 5, "desc_dim": 7})";
    std::string proto = std::string("\x08\x08", 2) + std::string("\x3a\x00", 2);
    for (auto const& e : {entry("locore.config", config_text), entry("other", "x")})
    {
        proto += '\x72'; // field 14, wire type 2
        proto += static_cast<char>(e.size());
        proto += e;
    }
    std::string const path = "unit_test_model.onnx";
    {
        std::ofstream out(path, std::ios::binary);
        out << proto;
    }
    ModelInfo const from_onnx = read_model_info(path);
    CHECK(from_onnx.config.num_desc == 5 && from_onnx.config.desc_dim == 7);
    CHECK(!from_onnx.has_recorded_graph_io &&
          from_onnx.graph_io.input(kQueryDesc).shape_text() == "[batch, 5, 7]");
    // Malformed files are refused with std::runtime_error, never read past their end.
    std::vector<std::pair<std::string, std::string>> const broken = {
        {std::string("\x72\x7f", 2), "runs past the end"},          // entry longer than the file
        {std::string("\x0b\x00", 2), "unsupported wire type 3"},    // a group
        {std::string("\x08\xff\xff", 3), "truncated varint"},       // cut in a varint
        {std::string("\x08\x08", 2), "no graph"},                   // no graph field
        {"not an onnx file at all\n", "not a readable ONNX model"}, // text
    };
    for (auto const& [bytes, text] : broken)
    {
        {
            std::ofstream out(path, std::ios::binary);
            out << bytes;
        }
        CHECK_THROWS(std::runtime_error, text, read_onnx_metadata(path));
    }
    std::remove(path.c_str());
    CHECK_THROWS(std::runtime_error, "does not exist", read_onnx_metadata("missing.onnx"));

    // An engine sidecar.
    std::string const engine = "unit_test_engine.plan";
    {
        json::Value const side = json::Value::object(
            {{"format", json::Value::integer(1)},
             {"precision", json::Value::string("int8")},
             {"metadata", json::Value::object({{kMetaConfig, json::Value::string(config_text)}})}});
        std::ofstream out(sidecar_path(engine));
        out << json::dump(side);
    }
    ModelInfo const from_engine = read_model_info(engine);
    CHECK(from_engine.precision == "int8" && from_engine.config.num_desc == 5);
    std::remove(sidecar_path(engine).c_str());
    CHECK_THROWS(std::runtime_error, "has no sidecar", read_model_info(engine));
}

void test_ames_rows()
{
    // two rows of D = 2: valid (scale 2.0004 -> 2), padding with a NaN descriptor
    std::vector<float> const rows = {0.1F, 0.2F, 2.0004F, 0, 0.5F,          1, 2, 0.3F,
                                     0.4F, 7.5F, 1,       0, std::nanf(""), 0};
    LocalFeatures const f = from_ames_rows(rows.data(), 2, 7);
    CHECK(f.desc_dim == 2 && f.num_rows == 2);
    CHECK((f.mask == std::vector<std::uint8_t>{1, 0}));
    CHECK((f.scales == std::vector<std::int64_t>{2, 8}));
    std::vector<float> bad = rows;
    bad[3] = 0.5F;
    CHECK_THROWS(FeatureError, "column 3 (mask) must be 0 (valid) or 1 (padding), got 0.5 at row 0",
                 from_ames_rows(bad.data(), 2, 7));
    bad = rows;
    bad[2] = 2.5F;
    CHECK_THROWS(FeatureError, "must hold integers, got e.g. 2.5 at row 0",
                 from_ames_rows(bad.data(), 2, 7));
}

} // namespace

int main()
{
    test_json();
    test_half();
    test_window_starts();
    test_rerank();
    test_packing();
    test_config_and_metadata();
    test_ames_rows();
    if (locore_test::failures() != 0)
    {
        std::fprintf(stderr, "%d check(s) failed\n", locore_test::failures());
        return 1;
    }
    std::printf("locore_runtime unit tests: all checks passed\n");
    return 0;
}
