// GPU check of locore::TrtScorer (needs an NVIDIA GPU, TensorRT and an engine built by
// `locore build`; built when the runtime is built with TensorRT, never run by ctest).
//
//   locore_trt_scorer_check ENGINE VECTORS.json [--plugin LIB] [--repeat N]
//
// VECTORS.json (written by Python, e.g. from ONNX Runtime's FP32 logits on the same feeds):
//   {"tolerance": 0.002,
//    "windows": [{"batch": 1, "num_gallery": 17, "expected": [17 logits],
//                 "inputs": {"query_desc": {"dtype": "float32", "shape": [1, 48, 128],
//                                           "data": [...]}, ...}}]}
// Every window is scored through the Scorer interface (inputs converted to the engine's dtypes by
// the scorer); the largest |logit - expected| is compared with the tolerance. Then the last window
// is scored N more times (default 200) for GPU times (CUDA events) and wall-clock times.
// Prints one JSON object; exit 0 when every window is within the tolerance.
#include "locore/json.hpp"
#include "locore/trt_scorer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

namespace
{

locore::Tensor tensor_from_json(std::string const& name, locore::json::Value const& spec)
{
    locore::Tensor t;
    t.name = name;
    t.dtype = locore::parse_dtype(spec.at("dtype").as_string());
    for (locore::json::Value const& d : spec.at("shape").as_array())
    {
        t.shape.push_back(d.as_int());
    }
    locore::json::Value::Array const& data = spec.at("data").as_array();
    if (static_cast<std::int64_t>(data.size()) != t.numel())
    {
        throw std::invalid_argument("input " + name + ": " + std::to_string(data.size()) +
                                    " values for shape " + locore::format_shape(t.shape));
    }
    std::size_t size = locore::dtype_size(t.dtype);
    t.data.resize(data.size() * size);
    for (std::size_t i = 0; i < data.size(); ++i)
    {
        double v = data[i].is_bool() ? (data[i].as_bool() ? 1.0 : 0.0) : data[i].as_double();
        std::uint8_t* out = t.data.data() + i * size;
        switch (t.dtype)
        {
        case locore::DType::Float32:
        {
            float f = static_cast<float>(v);
            std::memcpy(out, &f, 4);
            break;
        }
        case locore::DType::Float16:
        {
            std::uint16_t h = locore::float_to_half(static_cast<float>(v));
            std::memcpy(out, &h, 2);
            break;
        }
        case locore::DType::Float64:
            std::memcpy(out, &v, 8);
            break;
        case locore::DType::Int64:
        {
            auto x = static_cast<std::int64_t>(v);
            std::memcpy(out, &x, 8);
            break;
        }
        case locore::DType::Int32:
        {
            auto x = static_cast<std::int32_t>(v);
            std::memcpy(out, &x, 4);
            break;
        }
        case locore::DType::Int8:
        {
            auto x = static_cast<std::int8_t>(v);
            std::memcpy(out, &x, 1);
            break;
        }
        case locore::DType::Bool:
        case locore::DType::UInt8:
            *out = static_cast<std::uint8_t>(v);
            break;
        }
    }
    return t;
}

double median(std::vector<double> v)
{
    if (v.empty())
    {
        return 0.0;
    }
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 3)
    {
        std::cerr << "usage: " << argv[0] << " ENGINE VECTORS.json [--plugin LIB] [--repeat N]\n";
        return 2;
    }
    locore::TrtScorerOptions options;
    int repeat = 200;
    for (int i = 3; i < argc; ++i)
    {
        std::string arg = argv[i];
        if (arg == "--plugin" && i + 1 < argc)
        {
            options.plugin_library = argv[++i];
        }
        else if (arg == "--repeat" && i + 1 < argc)
        {
            repeat = std::stoi(argv[++i]);
        }
        else
        {
            std::cerr << "unknown argument " << arg << '\n';
            return 2;
        }
    }
    try
    {
        locore::json::Value vectors = locore::json::parse_file(argv[2]);
        double tolerance = vectors.at("tolerance").as_double();
        locore::TrtScorer scorer(argv[1], options);
        double worst = 0.0;
        locore::PackedWindow last;
        std::string per_window;
        for (locore::json::Value const& w : vectors.at("windows").as_array())
        {
            locore::PackedWindow window;
            window.batch = w.at("batch").as_int();
            window.num_gallery = w.at("num_gallery").as_int();
            for (auto const& [name, spec] : w.at("inputs").as_object())
            {
                window.inputs.push_back(tensor_from_json(name, spec));
            }
            std::vector<float> got = scorer.score(window);
            locore::json::Value::Array const& expected = w.at("expected").as_array();
            if (got.size() != expected.size())
            {
                throw std::runtime_error("scorer returned " + std::to_string(got.size()) +
                                         " logits, expected " + std::to_string(expected.size()));
            }
            double diff = 0.0;
            for (std::size_t i = 0; i < got.size(); ++i)
            {
                double d = std::fabs(static_cast<double>(got[i]) - expected[i].as_double());
                diff = std::isnan(d) ? std::numeric_limits<double>::infinity() : std::max(diff, d);
            }
            worst = std::max(worst, diff);
            per_window += (per_window.empty() ? "" : ",") + std::string("{\"num_gallery\":") +
                          std::to_string(window.num_gallery) +
                          ",\"max_abs_diff\":" + std::to_string(diff) + "}";
            last = std::move(window);
        }
        std::vector<double> gpu, wall;
        for (int i = 0; i < repeat && !last.inputs.empty(); ++i)
        {
            auto t0 = std::chrono::steady_clock::now();
            scorer.score(last);
            auto t1 = std::chrono::steady_clock::now();
            wall.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
            gpu.push_back(scorer.last_timings().compute_ms);
        }
        bool passed = worst <= tolerance;
        locore::MachineFacts const& m = scorer.machine();
        std::cout << "{\"engine\":\"" << argv[1] << "\",\"tensorrt\":\"" << m.tensorrt_version
                  << "\",\"gpu\":\"" << m.gpu_name << "\",\"compute_capability\":\""
                  << m.compute_capability << "\",\"float_dtype\":\""
                  << locore::dtype_name(scorer.float_dtype())
                  << "\",\"max_gallery\":" << scorer.max_gallery() << ",\"windows\":[" << per_window
                  << "],\"max_abs_diff\":" << worst << ",\"tolerance\":" << tolerance
                  << ",\"gpu_compute_ms_median\":" << median(gpu)
                  << ",\"call_ms_median\":" << median(wall) << ",\"repeat\":" << gpu.size()
                  << ",\"passed\":" << (passed ? "true" : "false") << "}\n";
        return passed ? 0 : 1;
    }
    catch (std::exception const& error)
    {
        std::cerr << "locore_trt_scorer_check: " << error.what() << '\n';
        return 1;
    }
}
