// Engine sidecars without TensorRT: sha256 against FIPS 180-4's published digests, parsing of a
// sidecar as runtime/engines.py writes it, and one refusal per kind of mismatch.
//
//   locore_runtime_sidecar_tests                 the unit tests (ctest)
//   locore_runtime_sidecar_tests --check ENGINE [--onnx-sha256 H] [--plugin-sha256 H]
//        [--machine TRT_VERSION GPU CC]          check_engine on a real sidecar; prints "ok" and
//                                                the parsed fields, or the refusal (exit 1)
#include "locore/engine_sidecar.hpp"
#include "check.hpp"
#include "locore/errors.hpp"
#include "locore/model_info.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

namespace
{

using locore_test::check;
using locore_test::expect_throw;

void write_file(std::string const& path, std::string const& text)
{
    std::ofstream out(path, std::ios::binary);
    out << text;
}

// The digests below are FIPS 180-4 / NIST CSRC example values, not outputs of this code.
void test_sha256()
{
    using locore::sha256_hex;
    check(sha256_hex("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
          "sha256 of the empty string");
    check(sha256_hex("abc", 3) ==
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
          "sha256 of 'abc'");
    std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; // 56 bytes
    check(sha256_hex(two_blocks.data(), two_blocks.size()) ==
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
          "sha256 of the 448-bit message (padding spills into a second block)");
    std::string million(1000000, 'a');
    check(sha256_hex(million.data(), million.size()) ==
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
          "sha256 of one million 'a'");
    std::string path = "sidecar_test_million.bin";
    write_file(path, million);
    check(locore::sha256_file(path) ==
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
          "sha256_file agrees with sha256_hex");
    std::string bigger(3 * (1 << 20) + 17, 'a');
    write_file(path, bigger);
    check(locore::sha256_file(path) == sha256_hex(bigger.data(), bigger.size()),
          "sha256_file over several 1 MiB chunks");
    std::remove(path.c_str());
    expect_throw<std::runtime_error>([] { locore::sha256_file("no/such/file.so"); },
                                     {"no/such/file.so"}, "sha256_file of a missing file");
}

// A sidecar as runtime/engines.py's write_engine writes it (keys sorted, indent 2), for an
// engine whose bytes are "abc".
std::string const kOnnxSha = std::string(64, '1');
std::string const kPluginSha = std::string(64, '7');
std::string sidecar_text(std::string const& flavor = "plugin", std::string const& format = "1")
{
    std::string plugin = flavor == "plugin" ? "{\"namespace\": \"locore\", \"sha256\": \"" +
                                                  kPluginSha + "\", \"versions\": [\"2\", \"1\"]}"
                                            : "null";
    return "{\n"
           "  \"config\": {\"desc_dim\": 8, \"num_desc\": 6, \"num_scales\": 4, \"name\": "
           "\"toy\"},\n"
           "  \"engine_sha256\": "
           "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\",\n"
           "  \"flags\": {\"fp16\": false, \"strongly_typed\": true},\n"
           "  \"flavor\": \"" +
           flavor +
           "\",\n"
           "  \"format\": " +
           format +
           ",\n"
           "  \"locore_version\": \"0.1.0\",\n"
           "  \"machine\": {\"compute_capability\": \"8.7\", \"gpu_name\": \"Orin\", "
           "\"tensorrt_version\": \"10.3.0.26\"},\n"
           "  \"metadata\": {\"locore.config\": \"{\\\"desc_dim\\\": 8, \\\"num_desc\\\": 6, "
           "\\\"num_scales\\\": 4, \\\"name\\\": \\\"toy\\\"}\"},\n"
           "  \"onnx\": \"/models/m.onnx\",\n"
           "  \"onnx_sha256\": \"" +
           kOnnxSha +
           "\",\n"
           "  \"plugin\": " +
           plugin +
           ",\n"
           "  \"precision\": \"fp16\",\n"
           "  \"profiles\": [{\"max\": {\"query_desc\": [1, 6, 8], \"gallery_desc\": [1, 17, 6, "
           "8]}, \"min\": {\"query_desc\": [1, 6, 8], \"gallery_desc\": [1, 1, 6, 8]}, \"opt\": "
           "{\"query_desc\": [1, 6, 8], \"gallery_desc\": [1, 17, 6, 8]}}]\n"
           "}\n";
}

locore::EngineExpectations matching()
{
    locore::EngineExpectations wanted;
    wanted.onnx_sha256 = kOnnxSha;
    wanted.plugin_sha256 = kPluginSha;
    wanted.has_machine = true;
    wanted.machine = {"10.3.0", "Orin", "8.7"};
    return wanted;
}

void test_parse()
{
    locore::EngineSidecar s = locore::parse_sidecar(sidecar_text(), "m.plan.json");
    check(s.engine_sha256.substr(0, 6) == "ba7816", "engine_sha256");
    check(s.onnx_sha256 == kOnnxSha && s.onnx == "/models/m.onnx", "onnx fields");
    check(s.precision == "fp16" && s.flavor == "plugin", "precision and flavor");
    check(s.machine.tensorrt_version == "10.3.0.26" && s.machine.gpu_name == "Orin" &&
              s.machine.compute_capability == "8.7",
          "machine");
    check(s.has_plugin && s.plugin.sha256 == kPluginSha && s.plugin.namespace_ == "locore" &&
              s.plugin.versions == std::vector<std::string>{"2", "1"},
          "plugin");
    check(s.profiles.size() == 1 && s.profiles[0].max.size() == 2 &&
              s.profiles[0].max[1].first == "gallery_desc" &&
              s.profiles[0].max[1].second == std::vector<std::int64_t>{1, 17, 6, 8} &&
              s.profiles[0].min[1].second[1] == 1,
          "profiles in the sidecar's key order");
    check(s.metadata.count("locore.config") == 1 &&
              s.metadata.at("locore.config").find("\"num_desc\": 6") != std::string::npos,
          "metadata strings");
    locore::EngineSidecar portable = locore::parse_sidecar(sidecar_text("portable"));
    check(!portable.has_plugin, "portable flavor: plugin null");

    expect_throw<locore::ConfigError>([] { locore::parse_sidecar(sidecar_text("plugin", "2")); },
                                      {"format 2", "reads format 1", "locore build"},
                                      "another sidecar format");
    expect_throw<locore::ConfigError>([] { locore::parse_sidecar("[1, 2]", "x.json"); },
                                      {"x.json", "JSON object"}, "not an object");
    expect_throw<locore::ConfigError>(
        [] { locore::parse_sidecar("{\"format\": 1, \"engine_sha256\": \"x\"}", "y.json"); },
        {"y.json", "lacks 'onnx_sha256'", "rebuild"}, "a missing key");
}

void test_mismatches()
{
    locore::EngineSidecar s = locore::parse_sidecar(sidecar_text());
    check(locore::engine_mismatches(s, matching()).empty(), "a matching engine");
    check(locore::tensorrt_versions_match("10.3.0.26", "10.3.0"), "build number ignored");
    check(!locore::tensorrt_versions_match("10.3.0.26", "10.4.0"), "minor differs");
    check(!locore::tensorrt_versions_match("10.3.0", "11.3.0"), "major differs");
    check(!locore::tensorrt_versions_match("", "10.3.0"), "empty version");

    auto only = [&s](locore::EngineExpectations const& wanted, std::string const& part,
                     std::string const& what)
    {
        std::vector<std::string> lines = locore::engine_mismatches(s, wanted);
        check(lines.size() == 1 && lines[0].find(part) != std::string::npos,
              what + ": got " + std::to_string(lines.size()) + " line(s)" +
                  (lines.empty() ? std::string() : ": " + lines[0]));
    };
    locore::EngineExpectations wanted = matching();
    wanted.onnx_sha256 = std::string(64, '2');
    only(wanted, "ONNX sha256: engine has 111111111111\u2026, wanted 222222222222\u2026",
         "another ONNX file");
    wanted = matching();
    wanted.plugin_sha256 = std::string(64, '8');
    only(wanted, "plugin library sha256", "another plugin library");
    wanted = matching();
    wanted.plugin_sha256.clear();
    only(wanted, "needs the plugin library", "no plugin library given");
    wanted = matching();
    wanted.machine.tensorrt_version = "11.1.0";
    only(wanted, "TensorRT version: engine has 10.3.0.26, wanted 11.1.0", "another TensorRT");
    wanted = matching();
    wanted.machine.gpu_name = "NVIDIA GeForce RTX 4090";
    only(wanted, "GPU: engine has Orin, wanted NVIDIA GeForce RTX 4090", "another GPU");
    wanted = matching();
    wanted.machine.compute_capability = "8.9";
    only(wanted, "compute capability: engine has 8.7, wanted 8.9", "another compute capability");
    wanted = matching();
    wanted.has_machine = false;
    wanted.machine = {"1.0", "x", "0.0"};
    check(locore::engine_mismatches(s, wanted).empty(), "machine not compared when not given");
    locore::EngineExpectations empty;
    empty.plugin_sha256 = kPluginSha;
    check(locore::engine_mismatches(s, empty).empty(), "nothing asked, nothing differs");
    locore::EngineSidecar portable = locore::parse_sidecar(sidecar_text("portable"));
    wanted = matching();
    wanted.plugin_sha256.clear();
    check(locore::engine_mismatches(portable, wanted).empty(),
          "the portable flavor needs no plugin library");
}

void test_check_engine()
{
    std::string engine = "sidecar_test.plan";
    write_file(engine, "abc");
    write_file(locore::sidecar_path(engine), sidecar_text());
    locore::EngineSidecar s = locore::check_engine(engine, matching());
    check(s.path == engine + ".json", "check_engine returns the sidecar");
    std::vector<char> bytes = {'a', 'b', 'c'};
    locore::check_engine(engine, matching(), true, &bytes);

    write_file(engine, "abd"); // damaged engine
    locore::EngineExpectations wanted = matching();
    wanted.machine.gpu_name = "RTX";
    expect_throw<locore::EngineMismatchError>(
        [&] { locore::check_engine(engine, wanted); },
        {"refusing TensorRT engine sidecar_test.plan", "GPU: engine has Orin, wanted RTX",
         "; engine file sha256 differs", "Rebuild it on this machine with `locore build`"},
        "every difference in one message");
    locore::check_engine(engine, matching(), false); // bytes not verified

    write_file(locore::sidecar_path(engine), "{\"format\": 1,");
    expect_throw<locore::ConfigError>([&] { locore::check_engine(engine, matching()); },
                                      {"sidecar_test.plan.json", "not valid JSON"},
                                      "a broken sidecar");
    std::remove(locore::sidecar_path(engine).c_str());
    expect_throw<std::runtime_error>([&] { locore::check_engine(engine, matching()); },
                                     {"sidecar_test.plan.json", "no sidecar", "locore build"},
                                     "no sidecar");
    std::remove(engine.c_str());
    expect_throw<std::runtime_error>([&] { locore::check_engine(engine, matching()); },
                                     {"TensorRT engine sidecar_test.plan does not exist"},
                                     "no engine");
}

int check_cli(int argc, char** argv)
{
    std::string engine = argv[2];
    locore::EngineExpectations wanted;
    for (int i = 3; i < argc; ++i)
    {
        std::string arg = argv[i];
        if (arg == "--onnx-sha256" && i + 1 < argc)
        {
            wanted.onnx_sha256 = argv[++i];
        }
        else if (arg == "--plugin-sha256" && i + 1 < argc)
        {
            wanted.plugin_sha256 = argv[++i];
        }
        else if (arg == "--machine" && i + 3 < argc)
        {
            wanted.has_machine = true;
            wanted.machine.tensorrt_version = argv[++i];
            wanted.machine.gpu_name = argv[++i];
            wanted.machine.compute_capability = argv[++i];
        }
        else
        {
            std::cerr << "unknown argument " << arg << '\n';
            return 2;
        }
    }
    try
    {
        locore::EngineSidecar s = locore::check_engine(engine, wanted);
        std::cout << "ok\nflavor " << s.flavor << "\nprecision " << s.precision << "\nonnx_sha256 "
                  << s.onnx_sha256 << "\ntensorrt " << s.machine.tensorrt_version << "\nprofiles "
                  << s.profiles.size() << "\nmetadata " << s.metadata.size() << '\n';
        return 0;
    }
    catch (std::exception const& error)
    {
        std::cout << "refused\n" << error.what() << '\n';
        return 1;
    }
}

} // namespace

int main(int argc, char** argv)
{
    if (argc >= 3 && std::string(argv[1]) == "--check")
    {
        return check_cli(argc, argv);
    }
    test_sha256();
    test_parse();
    test_mismatches();
    test_check_engine();
    if (locore_test::failures() != 0)
    {
        std::cerr << locore_test::failures() << " check(s) failed\n";
        return 1;
    }
    std::cout << "engine sidecar tests: ok\n";
    return 0;
}
