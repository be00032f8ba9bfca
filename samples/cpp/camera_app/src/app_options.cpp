#include "app_options.hpp"

#include <cstdlib>
#include <sstream>

namespace camera_app
{
namespace
{

int to_int(const std::string& flag, const std::string& value)
{
    char* end = nullptr;
    const long v = std::strtol(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0')
        throw UsageError(flag + " needs a whole number, got '" + value + "'");
    return static_cast<int>(v);
}

double to_double(const std::string& flag, const std::string& value)
{
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0')
        throw UsageError(flag + " needs a number, got '" + value + "'");
    return v;
}

} // namespace

std::string usage(const char* program)
{
    std::ostringstream out;
    out << "usage: " << program << " --index DIR [--source CAMERA|VIDEO] [options]\n"
        << "       " << program << " --dump-features IMAGE OUT_DIR [--index DIR]\n\n"
        << "Camera visual search on a `locore index` folder: every n-th frame is searched (SIFT,\n"
        << "VLAD, exact inner-product shortlist) and, with a TensorRT engine, re-ranked.\n\n"
        << "  --index DIR          index folder built by `locore index`\n"
        << "  --source S           camera number (0, 1, ...) or a video file (default 0)\n"
        << "  --engine E.plan      TensorRT engine from `locore build` (re-ranking; needs a\n"
        << "                       runtime built with TensorRT)\n"
        << "  --plugin LIB.so      plugin library for plugin-flavor engines ($LOCORE_TRT_PLUGIN)\n"
        << "  --model M.onnx       graph I/O the descriptors are packed for when there is no "
           "engine\n"
        << "  --every N            search every N-th frame (default 5)\n"
        << "  --top N              thumbnails shown (default 4)\n"
        << "  --shortlist K        global shortlist, all re-ranked (default 50)\n"
        << "  --alpha A            fusion weight of the global similarity (default 0.5)\n"
        << "  --temperature T      logit temperature of the fusion (default 0.1)\n"
        << "  --max-frames N       stop after N frames\n"
        << "  --loop               video files: start again at the end\n"
        << "  --headless           no window (needs --output and/or --json)\n"
        << "  --output PATH        overlaid video (.mp4, .avi) or image (.png, .jpg; the last\n"
        << "                       frame, or one per frame with a %06d pattern)\n"
        << "  --json PATH          JSON lines: one per searched frame and a summary (- = stdout)\n"
        << "  --save-frames DIR    each searched frame as DIR/frame_NNNNNN.png\n"
        << "  --dump-features IMAGE OUT_DIR\n"
        << "                       write the SIFT features of IMAGE as .npy files and exit\n";
    return out.str();
}

AppOptions parse_options(int argc, char** argv)
{
    AppOptions o;
    for (int i = 1; i < argc; ++i)
    {
        const std::string flag = argv[i];
        auto value = [&]() -> std::string
        {
            if (i + 1 >= argc)
                throw UsageError(flag + " needs a value");
            return argv[++i];
        };
        if (flag == "-h" || flag == "--help")
            throw UsageError("");
        else if (flag == "--index")
            o.index = value();
        else if (flag == "--source")
            o.source = value();
        else if (flag == "--engine")
            o.engine = value();
        else if (flag == "--plugin")
            o.plugin = value();
        else if (flag == "--model")
            o.model = value();
        else if (flag == "--every")
            o.every = to_int(flag, value());
        else if (flag == "--top")
            o.top = to_int(flag, value());
        else if (flag == "--shortlist")
            o.shortlist = to_int(flag, value());
        else if (flag == "--alpha")
            o.alpha = to_double(flag, value());
        else if (flag == "--temperature")
            o.temperature = to_double(flag, value());
        else if (flag == "--max-frames")
            o.max_frames = to_int(flag, value());
        else if (flag == "--loop")
            o.loop = true;
        else if (flag == "--headless")
            o.headless = true;
        else if (flag == "--output")
            o.output = value();
        else if (flag == "--json")
            o.json = value();
        else if (flag == "--save-frames")
            o.save_frames = value();
        else if (flag == "--dump-features")
        {
            o.dump_image = value();
            o.dump_dir = value();
        }
        else
            throw UsageError("unknown option " + flag);
    }
    if (!o.dump_image.empty())
        return o;
    if (o.index.empty())
        throw UsageError("--index is required (an index folder built by `locore index`)");
    if (o.every < 1 || o.top < 1 || o.shortlist < 1)
        throw UsageError("--every, --top and --shortlist must be >= 1");
    if (o.max_frames && *o.max_frames < 0)
        throw UsageError("--max-frames must be >= 0");
    if (!(o.alpha >= 0.0 && o.alpha <= 1.0) || !(o.temperature > 0.0))
        throw UsageError("--alpha must lie in [0, 1] and --temperature must be > 0");
    if (o.headless && o.output.empty() && o.json.empty())
        throw UsageError("--headless needs --output and/or --json (there is no window to look at)");
    return o;
}

} // namespace camera_app
