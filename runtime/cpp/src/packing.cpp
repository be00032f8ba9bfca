/*
 * Descriptor packing (see locore/packing.hpp; Python: locore.runtime.packing.Packer). The checks
 * run in Python's order, role by role (query first): descriptor dimension, non-finite values
 * after the dtype conversion, an empty query, scale ids; then the global vectors.
 */
#include "locore/packing.hpp"
#include "locore/errors.hpp"

#include "format.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace locore
{
namespace
{

std::string kind_of(std::int64_t dim)
{
    if (dim == 128)
    {
        return "SIFT ";
    }
    if (dim == 768)
    {
        return "DINOv2 ViT-B/14 ";
    }
    return "";
}

//! numpy's finfo(dtype).max printed with :.4g.
std::string float_max_text(DType dtype)
{
    double max = std::numeric_limits<float>::max();
    if (dtype == DType::Float16)
    {
        max = 65504.0;
    }
    else if (dtype == DType::Float64)
    {
        max = std::numeric_limits<double>::max();
    }
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.4g", max);
    return buf;
}

Tensor make_tensor(std::string const& name, DType dtype, std::vector<std::int64_t> shape)
{
    Tensor t;
    t.name = name;
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.data.assign(static_cast<std::size_t>(t.numel()) * dtype_size(dtype), 0);
    return t;
}

//! Store `value` (an integer or a float) as element `index` of `t`, converted as numpy's astype.
void store(Tensor& t, std::size_t index, double value)
{
    unsigned char* p = t.data.data() + index * dtype_size(t.dtype);
    switch (t.dtype)
    {
    case DType::Float32:
    {
        auto const v = static_cast<float>(value);
        std::memcpy(p, &v, sizeof(v));
        return;
    }
    case DType::Float16:
    {
        std::uint16_t const v = float_to_half(static_cast<float>(value));
        std::memcpy(p, &v, sizeof(v));
        return;
    }
    case DType::Float64:
        std::memcpy(p, &value, sizeof(value));
        return;
    case DType::Bool:
        *p = value != 0.0 ? 1 : 0;
        return;
    case DType::UInt8:
        *p = static_cast<std::uint8_t>(static_cast<std::int64_t>(value));
        return;
    case DType::Int8:
    {
        auto const v = static_cast<std::int8_t>(static_cast<std::int64_t>(value));
        std::memcpy(p, &v, sizeof(v));
        return;
    }
    case DType::Int32:
    {
        auto const v = static_cast<std::int32_t>(static_cast<std::int64_t>(value));
        std::memcpy(p, &v, sizeof(v));
        return;
    }
    case DType::Int64:
    {
        auto const v = static_cast<std::int64_t>(value);
        std::memcpy(p, &v, sizeof(v));
        return;
    }
    }
}

//! Store a float32 value converted to a float dtype; returns whether the stored value is finite.
bool store_float(Tensor& t, std::size_t index, float value)
{
    unsigned char* p = t.data.data() + index * dtype_size(t.dtype);
    if (t.dtype == DType::Float32)
    {
        std::memcpy(p, &value, sizeof(value));
        return std::isfinite(value);
    }
    if (t.dtype == DType::Float16)
    {
        std::uint16_t const h = float_to_half(value);
        std::memcpy(p, &h, sizeof(h));
        return (h & 0x7c00u) != 0x7c00u;
    }
    double const d = value;
    std::memcpy(p, &d, sizeof(d));
    return std::isfinite(d);
}

//! One role's packed images: desc [n, Nd, Dl] (float dtype), valid [n, Nd], scale [n, Nd].
struct Packed
{
    Tensor desc;
    std::vector<std::uint8_t> valid;
    std::vector<std::int64_t> scale;
};

} // namespace

Tensor const* PackedWindow::find(std::string const& name) const
{
    for (Tensor const& t : inputs)
    {
        if (t.name == name)
        {
            return &t;
        }
    }
    return nullptr;
}

Tensor const& PackedWindow::input(std::string const& name) const
{
    Tensor const* t = find(name);
    if (t == nullptr)
    {
        std::string names;
        for (Tensor const& i : inputs)
        {
            names += (names.empty() ? "" : ", ") + i.name;
        }
        throw std::out_of_range("the packed window has no input '" + name + "' (inputs: " + names +
                                ")");
    }
    return *t;
}

Packer::Packer(LocoreConfig config, std::vector<TensorSpec> input_specs, DType float_dtype,
               bool clip_scales)
    : config_(std::move(config)), specs_(std::move(input_specs)), float_dtype_(float_dtype),
      clip_scales_(clip_scales)
{
    config_.validate();
    if (!is_float(float_dtype))
    {
        throw PackingError(std::string("the float dtype of the packer must be float32 or float16, "
                                       "got ") +
                           dtype_name(float_dtype));
    }
    for (TensorSpec& spec : specs_)
    {
        if (spec.dtype == "float")
        {
            spec.dtype = dtype_name(float_dtype);
        }
        parse_dtype(spec.dtype); // ConfigError for a name outside the contract
    }
    auto has = [&](char const* name)
    {
        return std::any_of(specs_.begin(), specs_.end(),
                           [&](TensorSpec const& s) { return s.name == name; });
    };
    for (char const* required : {kQueryDesc, kQueryMask, kGalleryDesc, kGalleryMask})
    {
        if (!has(required))
        {
            std::string names;
            for (TensorSpec const& s : specs_)
            {
                names += (names.empty() ? "'" : ", '") + s.name + "'";
            }
            throw PackingError(std::string("the model has no input '") + required + "' (inputs: [" +
                               names +
                               "]); it does not follow the graph I/O contract of "
                               "locore.config.graph_io");
        }
    }
    float_dtype_ = input_dtype(kQueryDesc);
    if (!is_float(float_dtype_))
    {
        throw PackingError(std::string("input query_desc must be a float input, got ") +
                           dtype_name(float_dtype_));
    }
    with_scales_ = has(kQueryScale) && has(kGalleryScale);
    with_global_ = has(kQueryGlobal) && has(kGalleryGlobal);
}

Packer::Packer(LocoreConfig config, DType float_dtype, bool clip_scales)
    : Packer(config, graph_io(config).inputs, float_dtype, clip_scales)
{
}

Packer::Packer(ModelInfo const& model, DType float_dtype, bool clip_scales)
    : Packer(model.config, model.graph_io.inputs, float_dtype, clip_scales)
{
}

DType Packer::input_dtype(std::string const& name) const
{
    for (TensorSpec const& spec : specs_)
    {
        if (spec.name == name)
        {
            return parse_dtype(spec.dtype);
        }
    }
    throw PackingError("the model has no input '" + name + "'");
}

namespace
{

//! Pack the first Nd rows of each image of one role (Packer.pack_images). `batch_role`: the
//! images are a batch (gallery, or several queries), which changes the wording of messages.
Packed pack_images(LocoreConfig const& cfg, DType float_dtype, bool with_scales, bool clip,
                   std::vector<LocalFeatures const*> const& images, std::string const& role,
                   bool batch_role, std::int64_t per_query = 0)
{
    std::int64_t const nd = cfg.num_desc;
    std::int64_t const dl = cfg.desc_dim;
    auto const n = static_cast<std::int64_t>(images.size());
    for (std::size_t i = 0; i < images.size(); ++i)
    {
        if (images[i] == nullptr)
        {
            throw PackingError(role + " image " + std::to_string(i) + " is a null pointer");
        }
        images[i]->validate(batch_role ? role + " image " + std::to_string(i) : "the " + role);
    }
    // 1. descriptor dimension
    for (LocalFeatures const* f : images)
    {
        if (f->desc_dim != dl)
        {
            std::string const lead = (role == "gallery" && batch_role) ? "G, " : "";
            throw PackingError(role + " descriptors must be [" + lead + std::to_string(nd) + ", " +
                               std::to_string(dl) + "] float32, got [" + lead +
                               std::to_string(f->num_rows) + ", " + std::to_string(f->desc_dim) +
                               "]; this engine was exported for " + std::to_string(dl) + "-d " +
                               kind_of(dl) + "features (config '" + cfg.name +
                               "'). Use features from the extractor the model was trained with");
        }
    }
    Packed out;
    out.desc = make_tensor("", float_dtype, {n, nd, dl});
    out.valid.assign(static_cast<std::size_t>(n * nd), 0);
    out.scale.assign(static_cast<std::size_t>(n * nd), 0);
    // 2. copy (masked rows zeroed), remembering the first non-finite valid row
    std::int64_t broken_image = -1;
    std::int64_t broken_row = -1;
    for (std::int64_t i = 0; i < n; ++i)
    {
        LocalFeatures const& f = *images[static_cast<std::size_t>(i)];
        std::int64_t const rows = std::min(f.num_rows, nd);
        for (std::int64_t r = 0; r < rows; ++r)
        {
            auto const slot = static_cast<std::size_t>(i * nd + r);
            bool const valid = f.mask[static_cast<std::size_t>(r)] != 0;
            out.valid[slot] = valid ? 1 : 0;
            out.scale[slot] = valid ? f.scales[static_cast<std::size_t>(r)] : 0;
            if (!valid)
            {
                continue; // zeros already
            }
            float const* src = f.descriptors.data() + r * dl;
            bool finite = true;
            for (std::int64_t c = 0; c < dl; ++c)
            {
                finite &= store_float(
                    out.desc, slot * static_cast<std::size_t>(dl) + static_cast<std::size_t>(c),
                    src[c]);
            }
            if (!finite && broken_image < 0)
            {
                broken_image = i;
                broken_row = r;
            }
        }
    }
    if (broken_image >= 0)
    {
        // Python's first_row: "row r" (one image), "image i, row r" (a batch), "image (b, g),
        // row r" (the galleries of a batch of queries)
        std::string image = std::to_string(broken_image);
        if (per_query > 0)
        {
            image = "(" + std::to_string(broken_image / per_query) + ", " +
                    std::to_string(broken_image % per_query) + ")";
        }
        std::string const where = batch_role
                                      ? "image " + image + ", row " + std::to_string(broken_row)
                                      : "row " + std::to_string(broken_row);
        throw PackingError(role + " descriptors contain NaN or infinite values at " + where +
                           " (after conversion to " + dtype_name(float_dtype) +
                           ", whose largest value is " + float_max_text(float_dtype) +
                           "); check the features");
    }
    // 3. a query needs a valid descriptor
    if (role == "query")
    {
        for (std::int64_t i = 0; i < n; ++i)
        {
            auto const begin = out.valid.begin() + i * nd;
            if (std::none_of(begin, begin + nd, [](std::uint8_t v) { return v != 0; }))
            {
                std::string const name = batch_role ? "query " + std::to_string(i) : "the query";
                throw PackingError(
                    name +
                    " has no valid descriptor (every row is masked as padding), so there is "
                    "nothing to match its gallery against. Re-extract its features (an image "
                    "without keypoints cannot be re-ranked; keep its global ranking instead)");
            }
        }
    }
    // 4. scale ids of valid rows in [0, num_scales)
    if (with_scales)
    {
        std::int64_t lo = std::numeric_limits<std::int64_t>::max();
        std::int64_t hi = std::numeric_limits<std::int64_t>::min();
        bool any = false;
        for (std::size_t s = 0; s < out.scale.size(); ++s)
        {
            if (out.valid[s] != 0)
            {
                any = true;
                lo = std::min(lo, out.scale[s]);
                hi = std::max(hi, out.scale[s]);
            }
        }
        std::int64_t const num = cfg.num_scales;
        if (any && (lo < 0 || hi >= num))
        {
            if (!clip)
            {
                throw PackingError(
                    role + " scale ids must be in [0, " + std::to_string(num - 1) +
                    "] (the model has num_scales=" + std::to_string(num) + "), got ids from " +
                    std::to_string(lo) + " to " + std::to_string(hi) +
                    "; the features were extracted with other scales than the model was "
                    "trained with. Pass clip_scales=True (CLI --clip-scales) to clamp them");
            }
            for (std::int64_t& s : out.scale)
            {
                s = std::clamp<std::int64_t>(s, 0, num - 1);
            }
        }
    }
    return out;
}

std::string shape_text(std::vector<std::int64_t> const& shape)
{
    return format_shape(shape);
}

//! Global vectors of one role as a tensor [lead..., Dg] (Packer._global).
Tensor pack_global(std::vector<LocalFeatures const*> const& images, std::vector<std::int64_t> lead,
                   std::int64_t dg, DType dtype, char const* name)
{
    // A record without a global vector means none was given (Python cannot even stack records
    // with and without one).
    bool const none = std::any_of(images.begin(), images.end(),
                                  [](LocalFeatures const* f) { return !f->has_global(); });
    std::vector<std::int64_t> want = lead;
    want.push_back(dg);
    if (none || images.empty())
    {
        throw PackingError(std::string("this model uses global descriptors (use_global=True): "
                                       "pass ") +
                           name + " " + shape_text(want) +
                           " (CLI: --query-global and --db-global)");
    }
    for (LocalFeatures const* f : images)
    {
        if (static_cast<std::int64_t>(f->global_desc.size()) != dg)
        {
            std::vector<std::int64_t> got = lead;
            got.push_back(static_cast<std::int64_t>(f->global_desc.size()));
            throw PackingError(std::string(name) + " must be " + shape_text(want) + ", got " +
                               shape_text(got) + "; this engine was exported for " +
                               std::to_string(dg) + "-d global descriptors");
        }
    }
    Tensor t = make_tensor(name, dtype, want);
    bool finite = true;
    std::size_t slot = 0;
    for (LocalFeatures const* f : images)
    {
        for (float const v : f->global_desc)
        {
            finite &= store_float(t, slot++, v);
        }
    }
    if (!finite)
    {
        throw PackingError(std::string(name) + " must hold finite numbers (in " +
                           dtype_name(dtype) + "), got NaN or inf; check the global descriptors");
    }
    return t;
}

} // namespace

PackedWindow Packer::pack(LocalFeatures const& query,
                          std::vector<LocalFeatures const*> const& gallery) const
{
    return pack_impl({&query}, {gallery}, false);
}

PackedWindow Packer::pack(LocalFeatures const& query,
                          std::vector<LocalFeatures> const& gallery) const
{
    std::vector<LocalFeatures const*> pointers;
    pointers.reserve(gallery.size());
    for (LocalFeatures const& f : gallery)
    {
        pointers.push_back(&f);
    }
    return pack(query, pointers);
}

PackedWindow
Packer::pack_batch(std::vector<LocalFeatures const*> const& queries,
                   std::vector<std::vector<LocalFeatures const*>> const& galleries) const
{
    return pack_impl(queries, galleries, true);
}

PackedWindow Packer::pack_impl(std::vector<LocalFeatures const*> const& queries,
                               std::vector<std::vector<LocalFeatures const*>> const& galleries,
                               bool query_batch) const
{
    if (queries.size() != galleries.size())
    {
        throw PackingError(std::to_string(queries.size()) + " queries but " +
                           std::to_string(galleries.size()) + " galleries; they must match");
    }
    if (queries.empty())
    {
        throw PackingError("pack_batch needs at least one query");
    }
    std::size_t const g = galleries[0].size();
    for (std::size_t b = 1; b < galleries.size(); ++b)
    {
        if (galleries[b].size() != g)
        {
            throw PackingError("every query of a batch needs the same number of gallery images; "
                               "gallery 0 has " +
                               std::to_string(g) + ", gallery " + std::to_string(b) + " has " +
                               std::to_string(galleries[b].size()));
        }
    }
    std::int64_t const nd = config_.num_desc;
    std::int64_t const dl = config_.desc_dim;
    auto const bsz = static_cast<std::int64_t>(queries.size());
    auto const ng = static_cast<std::int64_t>(g);
    std::vector<LocalFeatures const*> all_gallery;
    for (auto const& gallery : galleries)
    {
        all_gallery.insert(all_gallery.end(), gallery.begin(), gallery.end());
    }
    Packed q = pack_images(config_, float_dtype_, with_scales_, clip_scales_, queries, "query",
                           query_batch);
    Packed gal = pack_images(config_, float_dtype_, with_scales_, clip_scales_, all_gallery,
                             "gallery", true, query_batch ? ng : 0);
    PackedWindow window;
    window.batch = bsz;
    window.num_gallery = ng;
    window.gallery_has_valid.assign(all_gallery.size(), 0);
    for (std::size_t i = 0; i < all_gallery.size(); ++i)
    {
        auto const begin = gal.valid.begin() + static_cast<std::int64_t>(i) * nd;
        window.gallery_has_valid[i] =
            std::any_of(begin, begin + nd, [](std::uint8_t v) { return v != 0; }) ? 1 : 0;
    }
    for (TensorSpec const& spec : specs_)
    {
        DType const dtype = parse_dtype(spec.dtype);
        std::string const& name = spec.name;
        bool const query_side =
            name == kQueryDesc || name == kQueryMask || name == kQueryScale || name == kQueryGlobal;
        std::vector<std::int64_t> lead =
            query_side ? std::vector<std::int64_t>{bsz} : std::vector<std::int64_t>{bsz, ng};
        if (name == kQueryDesc || name == kGalleryDesc)
        {
            Tensor t = std::move(query_side ? q.desc : gal.desc);
            t.name = name;
            lead.push_back(nd);
            lead.push_back(dl);
            t.shape = lead;
            window.inputs.push_back(std::move(t));
        }
        else if (name == kQueryMask || name == kGalleryMask ||
                 (with_scales_ && (name == kQueryScale || name == kGalleryScale)))
        {
            bool const mask = name == kQueryMask || name == kGalleryMask;
            Packed const& p = query_side ? q : gal;
            lead.push_back(nd);
            Tensor t = make_tensor(name, dtype, lead);
            for (std::size_t s = 0; s < p.valid.size(); ++s)
            {
                store(t, s,
                      mask ? static_cast<double>(p.valid[s]) : static_cast<double>(p.scale[s]));
            }
            window.inputs.push_back(std::move(t));
        }
        else if (with_global_ && (name == kQueryGlobal || name == kGalleryGlobal))
        {
            window.inputs.push_back(pack_global(query_side ? queries : all_gallery, lead,
                                                config_.global_dim, dtype, name.c_str()));
        }
    }
    return window;
}

} // namespace locore
