#include <algorithm>
#include <vector>

#include "kernels.hpp"

namespace gradnca {

void knn_proba_block(const double* gram, std::int64_t rows, std::int64_t n, const double* sq,
                     const std::int64_t* labels, std::int64_t k, std::int64_t n_classes,
                     double* proba) {
#pragma omp parallel
    {
        std::vector<double> best_key(static_cast<size_t>(k));
        std::vector<std::int64_t> best_idx(static_cast<size_t>(k));
#pragma omp for schedule(static)
        for (std::int64_t r = 0; r < rows; ++r) {
            const double* g = gram + r * n;
            std::int64_t filled = 0;
            // Sorted insertion keeps the k smallest keys; scanning j upwards and rejecting
            // keys >= the current k-th reproduces scikit-learn's heap: ties keep the lower index.
            for (std::int64_t j = 0; j < n; ++j) {
                const double key = -2.0 * g[j] + sq[j];
                if (filled == k && key >= best_key[k - 1]) continue;
                std::int64_t pos = filled < k ? filled++ : k - 1;
                while (pos > 0 && best_key[pos - 1] > key) {
                    best_key[pos] = best_key[pos - 1];
                    best_idx[pos] = best_idx[pos - 1];
                    --pos;
                }
                best_key[pos] = key;
                best_idx[pos] = j;
            }
            double* out = proba + r * n_classes;
            std::fill(out, out + n_classes, 0.0);
            for (std::int64_t t = 0; t < filled; ++t) out[labels[best_idx[t]]] += 1.0;
            for (std::int64_t c = 0; c < n_classes; ++c) out[c] /= static_cast<double>(filled);
        }
    }
}

}  // namespace gradnca
