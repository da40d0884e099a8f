#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels.hpp"

namespace gradnca {

void pairwise_distances_from_gram(const double* gram, const double* u, std::int64_t b,
                                  std::int64_t dim, double exact_below, double* dist,
                                  int n_threads) {
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (std::int64_t i = 0; i < b; ++i) {
        const double gii = gram[i * b + i];
        for (std::int64_t j = 0; j < b; ++j) {
            double d2 = (gii + gram[j * b + j]) - 2.0 * gram[i * b + j];
            if (d2 < exact_below) {
                // Cancellation makes the Gram form meaningless for (near-)duplicates.
                d2 = 0.0;
                const double* ui = u + i * dim;
                const double* uj = u + j * dim;
                for (std::int64_t t = 0; t < dim; ++t) {
                    const double diff = ui[t] - uj[t];
                    d2 += diff * diff;
                }
            }
            dist[i * b + j] = d2 > 0.0 ? std::sqrt(d2) : 0.0;
        }
    }
}

TripletStats triplet_all(const double* dist, std::int64_t b, const std::int64_t* labels,
                         double margin, double* coef, int n_threads) {
    std::fill(coef, coef + b * b, 0.0);
    // Per-anchor partial losses, summed in anchor order afterwards, so the total does not
    // depend on how anchors were spread over threads.
    std::vector<double> anchor_loss(static_cast<size_t>(b), 0.0);
    std::int64_t n_nonzero = 0, n_triplets = 0;
    // Per anchor: sort its negatives by distance once; for a positive p the violating negatives
    // (d_ap - d_an + margin > 0) are then a prefix, found by binary search. O(b^2 log b) instead
    // of visiting the O(b^3) triplets one by one.
#pragma omp parallel reduction(+ : n_nonzero, n_triplets) num_threads(n_threads)
    {
        std::vector<std::int64_t> neg, pos;
        std::vector<double> neg_d, prefix, hits;
#pragma omp for schedule(dynamic, 4)
        for (std::int64_t a = 0; a < b; ++a) {
            const double* da = dist + a * b;
            double* ca = coef + a * b;
            neg.clear();
            pos.clear();
            for (std::int64_t j = 0; j < b; ++j) {
                if (labels[j] == labels[a]) {
                    if (j != a) pos.push_back(j);
                } else {
                    neg.push_back(j);
                }
            }
            const std::int64_t nn = static_cast<std::int64_t>(neg.size());
            n_triplets += static_cast<std::int64_t>(pos.size()) * nn;
            if (pos.empty() || nn == 0) continue;
            std::stable_sort(neg.begin(), neg.end(),
                             [da](std::int64_t x, std::int64_t y) { return da[x] < da[y]; });
            neg_d.resize(nn);
            prefix.assign(nn + 1, 0.0);
            hits.assign(nn + 1, 0.0);
            for (std::int64_t t = 0; t < nn; ++t) {
                neg_d[t] = da[neg[t]];
                prefix[t + 1] = prefix[t] + neg_d[t];
            }
            for (std::int64_t p : pos) {
                const double dap = da[p];
                // Same expression as the reference, relu((d_ap - d_an) + margin) > 0; it is
                // non-increasing in d_an, so the violators form a prefix of the sorted list.
                const auto end = std::partition_point(
                    neg_d.begin(), neg_d.end(),
                    [dap, margin](double dan) { return (dap - dan) + margin > 0.0; });
                const std::int64_t cnt = end - neg_d.begin();
                if (cnt == 0) continue;
                n_nonzero += cnt;
                anchor_loss[a] += static_cast<double>(cnt) * (dap + margin) - prefix[cnt];
                ca[p] += static_cast<double>(cnt);
                hits[0] += 1.0;
                hits[cnt] -= 1.0;
            }
            double running = 0.0;
            for (std::int64_t t = 0; t < nn; ++t) {
                running += hits[t];
                ca[neg[t]] -= running;
            }
        }
    }
    double loss_sum = 0.0;
    for (double v : anchor_loss) loss_sum += v;
    TripletStats s;
    s.loss_sum = loss_sum;
    s.n_nonzero = n_nonzero;
    s.n_triplets = n_triplets;
    return s;
}

}  // namespace gradnca
