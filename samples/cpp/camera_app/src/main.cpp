// locore_camera_app: camera visual search on a `locore index` folder, in C++ (OpenCV + the
// locore C++ runtime). The C++ twin of samples/python/camera_rerank.py:
//
//   frame -> SIFT/RootSIFT (as runtime/sift.py) -> VLAD (the index's codebook.npz) -> exact
//   inner-product shortlist over the index's global descriptors -> with a TensorRT engine,
//   sliding-window re-ranking (locore::Reranker + locore::TrtScorer); without TensorRT the
//   query and the first window are packed (locore::Packer) and the shortlist is shown, with a
//   plain note that re-ranking needs TensorRT.
//
// Every --every-th frame is searched; each frame gets the top thumbnails on its right, the
// milliseconds of each stage and the frames per second. Stops cleanly at the end of the
// stream, on q / Esc in the window and on Ctrl-C: the output video and the JSON lines are
// always complete.
#include <atomic>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/highgui.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>

#include "app_options.hpp"
#include "image_index.hpp"
#include "locore/json.hpp"
#include "locore/runtime.hpp"
#include "npy_file.hpp"
#include "overlay.hpp"
#include "rerank_stage.hpp"
#include "sift_features.hpp"

namespace fs = std::filesystem;
using namespace camera_app;

namespace
{

std::atomic<bool> g_interrupted{false};

void on_sigint(int)
{
    g_interrupted = true;
}

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b)
{
    return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string fixed(double value, int digits)
{
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", digits, value);
    return buf;
}

// `text` as a JSON string literal.
std::string quoted(const std::string& text)
{
    return locore::json::dump(locore::json::Value::string(text));
}

bool is_number(const std::string& s)
{
    return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

std::string lower_suffix(const std::string& path)
{
    std::string ext = fs::path(path).extension().string();
    for (auto& c : ext)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return ext;
}

// ---- --dump-features ----------------------------------------------------------------------
int dump_features(const AppOptions& o)
{
    SiftSettings settings;
    std::unique_ptr<ImageIndex> index;
    if (!o.index.empty())
    {
        index = std::make_unique<ImageIndex>(ImageIndex::open(o.index));
        settings = index->settings();
    }
    if (!fs::is_regular_file(o.dump_image))
        throw std::runtime_error("image file " + o.dump_image + " does not exist");
    const cv::Mat image = cv::imread(o.dump_image, cv::IMREAD_COLOR);
    if (image.empty())
        throw std::runtime_error("OpenCV could not decode " + o.dump_image +
                                 "; expected an image file");
    SiftExtractor extractor(settings);
    const Keypoints kps = extractor.detect(image);
    fs::create_directories(o.dump_dir);
    const std::string dir = o.dump_dir + "/";
    const std::int64_t k = kps.count();
    std::vector<float> points;
    std::vector<std::int64_t> octaves;
    for (const auto& p : kps.raw)
    {
        points.insert(points.end(), {p.pt.x, p.pt.y, p.size, p.angle, p.response});
        octaves.push_back(p.octave);
    }
    write_npy(dir + "keypoints.npy", points.data(), {k, 5}); // x, y, size, angle, response (pixels)
    write_npy(dir + "octaves.npy", octaves.data(), {k});
    write_npy(dir + "xy.npy", kps.xy.ptr<float>(), {k, 2});
    write_npy(dir + "sift.npy", kps.sift.ptr<float>(), {k, 128});
    write_npy(dir + "descriptors.npy", kps.descriptors.ptr<float>(), {k, 128});
    const auto scales = extractor.scale_ids(kps, static_cast<int>(k));
    write_npy(dir + "scale_ids.npy", scales.data(), {k});
    cv::imwrite(dir + "work.png", extractor.work_image(image));
    if (index)
    {
        const auto global = index->codebook().encode(kps.descriptors);
        write_npy(dir + "global.npy", global.data(), {static_cast<std::int64_t>(global.size())});
    }
    std::ofstream info(dir + "info.json");
    info << "{\"image_size\": [" << kps.image_size.height << ", " << kps.image_size.width
         << "], \"work_size\": [" << kps.work_size.height << ", " << kps.work_size.width
         << "], \"keypoints\": " << k << ", \"opencv\": " << quoted(CV_VERSION)
         << ", \"global\": " << (index ? "true" : "false") << "}\n";
    std::cout << o.dump_image << ": " << k << " keypoints on a " << kps.work_size.width << "x"
              << kps.work_size.height << " working image (OpenCV " << CV_VERSION << ") -> "
              << o.dump_dir << "\n";
    return 0;
}

// ---- the camera loop ----------------------------------------------------------------------
cv::VideoCapture open_capture(const std::string& source)
{
    cv::VideoCapture cap;
    if (is_number(source))
    {
        cap.open(std::stoi(source));
        if (!cap.isOpened())
            throw std::runtime_error("OpenCV cannot open camera " + source +
                                     " (is one connected, /dev/video" + source +
                                     "?); give a video file with --source");
    }
    else
    {
        if (!fs::exists(source))
            throw std::runtime_error("video file " + source + " does not exist");
        cap.open(source);
        if (!cap.isOpened())
            throw std::runtime_error(
                "OpenCV cannot open the video " + source +
                " (not a video, or a format this OpenCV's FFmpeg cannot read)");
    }
    return cap;
}

class FrameWriter
{
public:
    FrameWriter(std::string path, double fps) : path_(std::move(path)), fps_(fps)
    {
        const auto ext = lower_suffix(path_);
        image_ = ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
        if (!image_ && ext != ".mp4" && ext != ".avi" && ext != ".mkv")
            throw UsageError(
                "--output must end in .mp4, .avi, .mkv (video) or .png, .jpg (image), got " +
                path_);
        const auto parent = fs::path(path_).parent_path();
        if (!parent.empty())
            fs::create_directories(parent);
    }
    void write(const cv::Mat& frame, long number)
    {
        if (image_)
        {
            std::string file = path_;
            if (path_.find('%') != std::string::npos)
            {
                char buf[4096];
                std::snprintf(buf, sizeof buf, path_.c_str(), static_cast<int>(number));
                file = buf;
            }
            if (!cv::imwrite(file, frame))
                throw std::runtime_error("OpenCV cannot write " + file);
            return;
        }
        if (!video_.isOpened())
        {
            // MPEG-4 Part 2 in .mp4 (plays in VLC, ffmpeg, OpenCV), Motion JPEG in .avi / .mkv.
            const int fourcc = lower_suffix(path_) == ".mp4"
                                   ? cv::VideoWriter::fourcc('m', 'p', '4', 'v')
                                   : cv::VideoWriter::fourcc('M', 'J', 'P', 'G');
            video_.open(path_, fourcc, fps_, frame.size());
            if (!video_.isOpened())
                throw std::runtime_error("OpenCV cannot write the video " + path_);
        }
        video_.write(frame);
    }
    void close()
    {
        if (video_.isOpened())
            video_.release();
    }

private:
    std::string path_;
    double fps_;
    bool image_ = false;
    cv::VideoWriter video_;
};

std::string ranking_json(const ImageIndex& index, const std::vector<RankedImage>& ranking,
                         bool with_score)
{
    std::ostringstream out;
    out << "[";
    for (std::size_t r = 0; r < ranking.size(); ++r)
    {
        const auto& h = ranking[r];
        out << (r ? ", " : "") << "{\"rank\": " << r + 1 << ", \"id\": " << h.id
            << ", \"name\": " << quoted(index.image(static_cast<std::size_t>(h.id)).name);
        if (with_score)
            out << ", \"score\": " << fixed(h.score, 6);
        out << ", \"global_sim\": " << fixed(h.global_sim, 6)
            << ", \"global_rank\": " << h.global_rank << "}";
    }
    return out.str() + "]";
}

int run_camera(const AppOptions& o)
{
    const ImageIndex index = ImageIndex::open(o.index);
    if (index.size() == 0)
        throw std::runtime_error("the index " + o.index + " holds no images");
    SiftExtractor extractor(index.settings());
    RerankStage stage(o, index);
    const bool show = !o.headless;
    if (show && !std::getenv("DISPLAY") && !std::getenv("WAYLAND_DISPLAY"))
        throw std::runtime_error("no display to show a window on (DISPLAY is not set); run with "
                                 "--headless --output out.mp4 --json log.jsonl");
    cv::VideoCapture cap = open_capture(o.source);
    std::ostream& info = o.json == "-" ? std::cerr : std::cout;
    info << "index " << o.index << ": " << index.size() << " images, " << index.global_dim()
         << "-d VLAD; " << stage.describe() << "\n";
    if (!stage.note().empty())
        std::cerr << "note: " << stage.note() << "\n";

    double fps_in = cap.get(cv::CAP_PROP_FPS);
    if (!(fps_in > 0.0 && fps_in < 1000.0))
        fps_in = 25.0;
    std::unique_ptr<FrameWriter> writer;
    if (!o.output.empty())
        writer = std::make_unique<FrameWriter>(o.output, fps_in);
    std::ofstream json_file;
    std::ostream* json = nullptr;
    if (o.json == "-")
    {
        json = &std::cout;
    }
    else if (!o.json.empty())
    {
        const auto parent = fs::path(o.json).parent_path();
        if (!parent.empty())
            fs::create_directories(parent);
        json_file.open(o.json);
        if (!json_file)
            throw std::runtime_error("cannot write the JSON log " + o.json);
        json = &json_file;
    }
    if (!o.save_frames.empty())
        fs::create_directories(o.save_frames);

    struct sigaction action{};
    action.sa_handler = on_sigint;
    struct sigaction previous{};
    sigaction(SIGINT, &action, &previous);

    std::unique_ptr<Overlay> overlay;
    std::vector<RankedImage> hits;
    std::vector<std::string> text;
    std::string stopped = "end of stream";
    std::exception_ptr failure;
    long number = 0, searched = 0;
    const auto started = Clock::now();
    auto last_search = started;
    const std::string short_note =
        stage.reranks() ? "" : "re-ranking needs TensorRT: global shortlist shown";
    try
    {
        for (;;)
        {
            if (o.max_frames && number >= *o.max_frames)
            {
                stopped = "--max-frames " + std::to_string(*o.max_frames);
                break;
            }
            if (g_interrupted)
            {
                stopped = "interrupted (Ctrl-C)";
                break;
            }
            cv::Mat frame;
            bool ok = cap.read(frame);
            if (!ok && o.loop && !is_number(o.source) && number)
            {
                cap.set(cv::CAP_PROP_POS_FRAMES, 0);
                ok = cap.read(frame);
            }
            if (!ok || frame.empty())
                break;
            if (!overlay)
                overlay = std::make_unique<Overlay>(index, o.top, frame.rows);
            if (number % o.every == 0)
            {
                if (std::min(frame.rows, frame.cols) < 32)
                    throw std::runtime_error("frames are " + std::to_string(frame.cols) + "x" +
                                             std::to_string(frame.rows) +
                                             " pixels; a query needs at least 32x32");
                if (!o.save_frames.empty())
                {
                    char name[64];
                    std::snprintf(name, sizeof name, "frame_%06ld.png", number);
                    cv::imwrite((fs::path(o.save_frames) / name).string(), frame);
                }
                const auto t0 = Clock::now();
                const Keypoints kps = extractor.detect(frame);
                const std::vector<float> global = index.codebook().encode(kps.descriptors);
                const auto t1 = Clock::now();
                const std::vector<Hit> shortlist = index.search(global, o.shortlist);
                const auto t2 = Clock::now();
                const locore::LocalFeatures query = query_features(kps, extractor, global);
                const StageResult result = stage.run(query, shortlist);
                const auto t3 = Clock::now();
                hits = result.ranking;
                const double fps =
                    number ? o.every / std::max(ms_between(last_search, t3) / 1e3, 1e-6) : 0.0;
                last_search = t3;
                const double extract_ms = ms_between(t0, t1), global_ms = ms_between(t1, t2);
                text = {"frame " + std::to_string(number) + "  " + fixed(fps, 1) + " FPS",
                        "sift " + fixed(extract_ms, 0) + " ms  global " + fixed(global_ms, 1) +
                            " ms  " +
                            (result.reranked ? "rerank " + fixed(result.rerank_ms, 0) + " ms"
                                             : "pack " + fixed(result.pack_ms, 1) + " ms")};
                if (!short_note.empty())
                    text.push_back(short_note);
                ++searched;
                if (json)
                {
                    std::vector<RankedImage> shortlist_rows;
                    for (std::size_t r = 0; r < shortlist.size(); ++r)
                        shortlist_rows.push_back({shortlist[r].id, shortlist[r].sim,
                                                  shortlist[r].sim, static_cast<int>(r) + 1});
                    *json << "{\"frame\": " << number
                          << ", \"timings_ms\": {\"extract_ms\": " << fixed(extract_ms, 2)
                          << ", \"global_ms\": " << fixed(global_ms, 2)
                          << ", \"pack_ms\": " << fixed(result.pack_ms, 2)
                          << ", \"rerank_ms\": " << fixed(result.rerank_ms, 2)
                          << ", \"total_ms\": " << fixed(ms_between(t0, t3), 2)
                          << "}, \"fps\": " << fixed(fps, 2) << ", \"detections\": " << kps.count()
                          << ", \"query_keypoints\": " << query.num_valid()
                          << ", \"shortlist\": " << ranking_json(index, shortlist_rows, false)
                          << ", \"reranked\": "
                          << (result.reranked ? ranking_json(index, result.ranking, true) : "null")
                          << ", \"packed\": " << quoted(result.packed) << "}" << std::endl;
                }
                info << "frame " << number << ": top "
                     << (hits.empty() ? std::string("-")
                                      : index.image(static_cast<std::size_t>(hits[0].id)).name)
                     << " (" << fixed(ms_between(t0, t3), 0) << " ms)" << std::endl;
            }
            const cv::Mat shown = overlay->draw(frame, hits, text);
            if (writer)
                writer->write(shown, number);
            if (show)
            {
                cv::imshow("locore-edge camera search (C++)", shown);
                const int key = cv::waitKey(1) & 0xFF;
                if (key == 'q' || key == 27)
                {
                    stopped = "q pressed";
                    break;
                }
            }
            ++number;
        }
    }
    catch (const std::exception& e)
    {
        // close the video and the log as on any other stop, then report the error
        stopped = std::string("error: ") + e.what();
        failure = std::current_exception();
    }
    sigaction(SIGINT, &previous, nullptr);
    cap.release();
    if (writer)
        writer->close();
    if (show)
        cv::destroyAllWindows();
    const double seconds = ms_between(started, Clock::now()) / 1e3;
    if (json)
    {
        *json << "{\"summary\": {\"source\": " << quoted(o.source)
              << ", \"index\": " << quoted(o.index) << ", \"frames\": " << number
              << ", \"searched\": " << searched << ", \"every\": " << o.every
              << ", \"seconds\": " << fixed(seconds, 3) << ", \"stopped\": " << quoted(stopped)
              << ", \"output\": " << (o.output.empty() ? "null" : quoted(o.output))
              << ", \"reranking\": " << (stage.reranks() ? "true" : "false")
              << ", \"note\": " << quoted(stage.note()) << ", \"opencv\": " << quoted(CV_VERSION)
              << ", \"runtime\": " << quoted(LOCORE_RUNTIME_VERSION) << "}}" << std::endl;
    }
    info << number << " frames, " << searched << " searched in " << fixed(seconds, 1)
         << " s; stopped: " << stopped << std::endl;
    if (failure)
        std::rethrow_exception(failure);
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    AppOptions options;
    try
    {
        options = parse_options(argc, argv);
    }
    catch (const UsageError& e)
    {
        const std::string what = e.what();
        if (what.empty())
        {
            std::cout << usage(argv[0]);
            return 0;
        }
        const std::string text = usage(argv[0]);
        std::cerr << text.substr(0, text.find("\n\n")) << "\nerror: " << what
                  << " (--help lists the options)\n";
        return 2;
    }
    try
    {
        return options.dump_image.empty() ? run_camera(options) : dump_features(options);
    }
    catch (const UsageError& e)
    {
        std::cerr << "error: " << e.what() << "\n";
        return 2;
    }
    catch (const std::exception& e)
    {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
}
