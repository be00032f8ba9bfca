/*
 * Window schedule, score fusion and the sliding-window re-ranking loop (see
 * locore/sliding_windows.hpp; Python: locore.runtime.sliding_windows). Compiled with
 * -ffp-contract=off so that no multiply-add is fused: the fused scores are computed with the
 * same double operations, in the same order, as numpy's.
 */
#include "locore/sliding_windows.hpp"
#include "locore/errors.hpp"

#include "format.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace locore
{

char const* order_name(Order order)
{
    switch (order)
    {
    case Order::StartToEnd:
        return "start-to-end";
    case Order::EndToStart:
        return "end-to-start";
    case Order::StartToEndToStart:
        return "start-to-end-to-start";
    case Order::EndToStartToEnd:
        return "end-to-start-to-end";
    }
    return "unknown";
}

Order parse_order(std::string const& name)
{
    for (Order const order : kOrders)
    {
        if (name == order_name(order))
        {
            return order;
        }
    }
    throw UsageError("order must be one of ['start-to-end', 'end-to-start', "
                     "'start-to-end-to-start', 'end-to-start-to-end'], got '" +
                     name + "'");
}

void RerankParams::validate() const
{
    for (auto const& [field, value] : {std::pair<char const*, std::int64_t>{"window", window},
                                       {"topk", topk},
                                       {"stride", stride}})
    {
        if (value < 1)
        {
            throw UsageError(std::string(field) + " must be a positive integer, got " +
                             std::to_string(value));
        }
    }
    if (stride > window)
    {
        throw UsageError("stride (" + std::to_string(stride) + ") must not exceed the window (" +
                         std::to_string(window) +
                         "): the positions between windows would never be re-ranked. Use "
                         "stride <= " +
                         std::to_string(window));
    }
    if (!(alpha >= 0.0 && alpha <= 1.0))
    {
        throw UsageError("alpha must be in [0, 1] (the weight of the global similarity), got " +
                         detail::py_repr(alpha));
    }
    if (!(std::isfinite(temperature) && temperature > 0.0))
    {
        throw UsageError("temperature must be a finite number > 0 (t in sigmoid(t * logit); 0 "
                         "would ignore the model, < 0 invert it), got " +
                         detail::py_repr(temperature));
    }
}

std::vector<std::int64_t> window_starts(std::int64_t length, std::int64_t window,
                                        std::int64_t stride, Order order)
{
    if (window < 1 || stride < 1 || stride > window)
    {
        throw UsageError("need 1 <= stride <= window, got stride " + std::to_string(stride) +
                         " and window " + std::to_string(window));
    }
    if (length <= 0)
    {
        return {};
    }
    std::int64_t const w = std::min(window, length);
    std::vector<std::int64_t> forward;
    for (std::int64_t s = 0; s < length; s += stride)
    {
        // a window lying inside the previous one is skipped
        if (s == 0 || s - stride + w < length)
        {
            forward.push_back(s);
        }
    }
    std::vector<std::int64_t> backward(forward.rbegin(), forward.rend());
    switch (order)
    {
    case Order::StartToEnd:
        return forward;
    case Order::EndToStart:
        return backward;
    case Order::StartToEndToStart:
        forward.insert(forward.end(), backward.begin() + 1, backward.end());
        return forward;
    case Order::EndToStartToEnd:
        backward.insert(backward.end(), forward.begin() + 1, forward.end());
        return backward;
    }
    throw std::logic_error("unknown locore::Order");
}

double sigmoid(double x)
{
    return 0.5 * (1.0 + std::tanh(0.5 * x));
}

double fuse_score(double global_sim, double logit, double alpha, double temperature)
{
    return alpha * global_sim + (1.0 - alpha) * sigmoid(temperature * logit);
}

void check_similarities(std::vector<double> const& sims, std::string const& name)
{
    std::size_t bad = 0;
    std::size_t first = sims.size();
    for (std::size_t i = 0; i < sims.size(); ++i)
    {
        if (!std::isfinite(sims[i]))
        {
            ++bad;
            first = std::min(first, i);
        }
    }
    if (bad != 0)
    {
        throw UsageError("the global similarity of " + name + " at shortlist position " +
                         std::to_string(first) + " is " + detail::py_repr(sims[first]) +
                         "; similarities must be finite (NaN or inf would silently decide the "
                         "ranking). " +
                         std::to_string(bad) + " of " + std::to_string(sims.size()) +
                         " are not; fix the global descriptors or the shortlist");
    }
}

RerankResult sliding_window_rerank(std::vector<std::int64_t> const& ranking,
                                   std::vector<double> const& global_sims, ScoreFn const& score_fn,
                                   RerankParams const& params, std::string const& name)
{
    params.validate();
    if (ranking.size() != global_sims.size())
    {
        throw UsageError("ranking and global_sims must both be [K], got [" +
                         std::to_string(ranking.size()) + "] and [" +
                         std::to_string(global_sims.size()) + "]");
    }
    check_similarities(global_sims, name);
    RerankResult result{ranking, global_sims};
    std::vector<double> sims = global_sims;
    auto const k = std::min<std::int64_t>(params.topk, static_cast<std::int64_t>(ranking.size()));
    std::int64_t const w = std::min(params.window, k);
    std::vector<std::int64_t> window;
    std::vector<double> fused;
    std::vector<std::size_t> order;
    std::vector<std::int64_t> ids_tmp;
    std::vector<double> sims_tmp;
    for (std::int64_t const start : window_starts(k, params.window, params.stride, params.order))
    {
        std::int64_t const end = std::min(start + w, k);
        auto const begin = static_cast<std::size_t>(start);
        auto const n = static_cast<std::size_t>(end - start);
        window.assign(result.ids.begin() + start, result.ids.begin() + end);
        std::vector<float> const logits = score_fn(window);
        if (logits.size() != n)
        {
            throw std::runtime_error("the scorer returned [" + std::to_string(logits.size()) +
                                     "] logits for a window of " + std::to_string(n) +
                                     " images; it must return one logit per image");
        }
        fused.resize(n);
        for (std::size_t j = 0; j < n; ++j)
        {
            if (!std::isfinite(logits[j]))
            {
                throw std::runtime_error(
                    "the scorer returned non-finite logits for the window at position " +
                    std::to_string(start) + " of " + name +
                    "'s shortlist; check the model and the features (an FP16 overflow?)");
            }
        }
        for (std::size_t j = 0; j < n; ++j)
        {
            fused[j] = fuse_score(sims[begin + j], static_cast<double>(logits[j]), params.alpha,
                                  params.temperature);
        }
        order.resize(n);
        std::iota(order.begin(), order.end(), std::size_t{0});
        std::stable_sort(order.begin(), order.end(),
                         [&](std::size_t a, std::size_t b) { return fused[a] > fused[b]; });
        ids_tmp.resize(n);
        sims_tmp.resize(n);
        for (std::size_t j = 0; j < n; ++j)
        {
            ids_tmp[j] = window[order[j]];
            sims_tmp[j] = sims[begin + order[j]];
        }
        for (std::size_t j = 0; j < n; ++j)
        {
            result.ids[begin + j] = ids_tmp[j];
            sims[begin + j] = sims_tmp[j];
            result.scores[begin + j] = fused[order[j]];
        }
    }
    return result;
}

} // namespace locore
