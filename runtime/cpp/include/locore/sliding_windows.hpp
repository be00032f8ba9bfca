/*
 * Sliding-window re-ranking of one shortlist (Python: locore.runtime.sliding_windows; the same
 * schedule and the same fused-score update, checked against it by shared test vectors).
 *
 * 1. Only the top K = min(topk, length) positions are re-ranked; positions >= K keep their
 *    images and their global similarities as scores.
 * 2. Windows are W = min(window, K) consecutive positions of the current ranking, starting at
 *    every multiple of stride and covering [s, min(s + W, K)); a start is skipped when its window
 *    lies inside the previous one (s - stride + W >= K).
 * 3. Orders: StartToEnd (increasing starts), EndToStart (decreasing, ending at 0),
 *    StartToEndToStart and EndToStartToEnd (one pass each way, the turning window once).
 * 4. Each window is one scorer call -> one logit per image; each image's sort key becomes
 *    alpha * global_sim + (1 - alpha) * sigmoid(temperature * logit) and the window's positions
 *    are re-sorted by it, descending and stable.
 *
 * Arithmetic: fused scores in double (as Python's float64): logits are the scorer's float32
 * values widened to double, sigmoid(x) = 0.5 * (1 + tanh(0.5 * x)).
 */
#ifndef LOCORE_SLIDING_WINDOWS_HPP
#define LOCORE_SLIDING_WINDOWS_HPP

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace locore
{

enum class Order
{
    StartToEnd,
    EndToStart,
    StartToEndToStart,
    EndToStartToEnd
};

//! The four orders, in the order of Python's ORDERS.
inline constexpr std::array<Order, 4> kOrders = {Order::StartToEnd, Order::EndToStart,
                                                 Order::StartToEndToStart, Order::EndToStartToEnd};

//! "start-to-end", "end-to-start", "start-to-end-to-start", "end-to-start-to-end".
char const* order_name(Order order);
//! The inverse of order_name (UsageError listing the valid names).
Order parse_order(std::string const& name);

//! Sliding-window parameters; defaults are LOCORE's evaluation settings (window 100, top 400,
//! stride 50, end-to-start, alpha 0.5, temperature 0.1), as Python's RerankParams.
struct RerankParams
{
    std::int64_t window = 100;
    std::int64_t topk = 400;
    std::int64_t stride = 50;
    Order order = Order::EndToStart;
    double alpha = 0.5;
    double temperature = 0.1;

    //! UsageError unless window, topk, stride >= 1, stride <= window, alpha in [0, 1] and
    //! temperature finite and > 0.
    void validate() const;
};

//! Start positions of the windows over the top `length` positions, in visiting order
//! (UsageError unless 1 <= stride <= window; empty for length <= 0).
std::vector<std::int64_t> window_starts(std::int64_t length, std::int64_t window,
                                        std::int64_t stride, Order order);

//! 0.5 * (1 + tanh(0.5 * x)).
double sigmoid(double x);
//! alpha * global_sim + (1 - alpha) * sigmoid(temperature * logit).
double fuse_score(double global_sim, double logit, double alpha, double temperature);

//! UsageError naming `name` and the position unless every similarity is finite.
void check_similarities(std::vector<double> const& sims, std::string const& name = "the query");

//! The scorer of sliding_window_rerank: the window's items (entries of the ranking, in their
//! current order) -> one float32 logit per item.
using ScoreFn = std::function<std::vector<float>(std::vector<std::int64_t> const& window)>;

struct RerankResult
{
    std::vector<std::int64_t> ids; //!< a permutation of the ranking
    std::vector<double> scores;    //!< each item's last fused score (global sim beyond top K)
};

//! Re-rank one shortlist `ranking` [K0] (best first) with global similarities `global_sims`
//! [K0]. Throws UsageError for non-finite similarities or mismatched sizes, std::runtime_error
//! when score_fn returns the wrong number of logits or a non-finite one.
RerankResult sliding_window_rerank(std::vector<std::int64_t> const& ranking,
                                   std::vector<double> const& global_sims, ScoreFn const& score_fn,
                                   RerankParams const& params = RerankParams{},
                                   std::string const& name = "the query");

} // namespace locore

#endif // LOCORE_SLIDING_WINDOWS_HPP
