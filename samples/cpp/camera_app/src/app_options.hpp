// Command-line options of locore_camera_app (the flags of samples/python/camera_rerank.py,
// plus --engine for the TensorRT scorer and --dump-features for the SIFT comparison test).
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

namespace camera_app
{

struct UsageError : std::invalid_argument
{
    using std::invalid_argument::invalid_argument;
};

struct AppOptions
{
    std::string index;        // --index DIR (a `locore index` folder)
    std::string source = "0"; // --source: camera number or video file
    std::string engine;       // --engine E.plan (TensorRT engine from `locore build`)
    std::string plugin;       // --plugin liblocore_trt_plugins.so (else $LOCORE_TRT_PLUGIN)
    std::string model;        // --model model.onnx: graph I/O for packing without an engine
    int every = 5;            // search every n-th frame
    int top = 4;              // thumbnails shown
    int shortlist = 50;       // global shortlist length (all of it re-ranked)
    double alpha = 0.5;       // fusion: alpha * global + (1 - alpha) * sigmoid(t * logit)
    double temperature = 0.1;
    std::optional<long> max_frames;
    bool loop = false;       // video files: start again at the end
    bool headless = false;   // no window
    std::string output;      // .mp4/.avi video, or .png/.jpg image (%06d: one per frame)
    std::string json;        // JSON lines, one per searched frame ("-": stdout)
    std::string save_frames; // folder: each searched frame as PNG (what was searched)
    // --dump-features IMAGE OUT_DIR: write the SIFT features of one image and exit.
    std::string dump_image;
    std::string dump_dir;
};

// Parse argv; UsageError with the problem (the caller prints it with usage()).
AppOptions parse_options(int argc, char** argv);
std::string usage(const char* program);

} // namespace camera_app
