// k-NN class probabilities reproducing what KNeighborsClassifier.predict_proba does for the
// Euclidean metric with brute force: kneighbors through EuclideanArgKmin, which pushes
// candidates in index order onto a fixed-size max-heap keyed by (-2 q.x_j + |x_j|^2). Which of
// several exactly tied points survive depends on that heap's history, so the heap is reproduced
// operation for operation.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels.hpp"

namespace gradnca {

namespace {

// sklearn/utils/_heap.pyx heap_push, verbatim in behaviour.
inline void heap_push(double* values, std::int64_t* indices, std::int64_t size, double val,
                      std::int64_t val_idx) {
    if (val >= values[0]) return;
    values[0] = val;
    indices[0] = val_idx;
    std::int64_t current = 0;
    while (true) {
        const std::int64_t left = 2 * current + 1, right = left + 1;
        std::int64_t swap;
        if (left >= size) {
            break;
        } else if (right >= size) {
            if (values[left] > val) swap = left;
            else break;
        } else if (values[left] >= values[right]) {
            if (val < values[left]) swap = left;
            else break;
        } else {
            if (val < values[right]) swap = right;
            else break;
        }
        values[current] = values[swap];
        indices[current] = indices[swap];
        current = swap;
    }
    values[current] = val;
    indices[current] = val_idx;
}

}  // namespace

void knn_proba_block(const double* gram, std::int64_t rows, std::int64_t n, const double* sq,
                     const std::int64_t* labels, std::int64_t k, std::int64_t n_classes,
                     double* proba) {
    std::vector<double> vals(static_cast<size_t>(k));
    std::vector<std::int64_t> idx(static_cast<size_t>(k));
    for (std::int64_t r = 0; r < rows; ++r) {
        const double* g = gram + r * n;
        std::fill(vals.begin(), vals.end(), DBL_MAX);
        std::fill(idx.begin(), idx.end(), 0);
        // EuclideanArgKmin's surrogate key: the GEMM middle term plus the reference norm (the
        // query norm is constant along the row and left out, as there).
        for (std::int64_t j = 0; j < n; ++j) heap_push(vals.data(), idx.data(), k, -2.0 * g[j] + sq[j], j);
        double* out = proba + r * n_classes;
        std::fill(out, out + n_classes, 0.0);
        for (std::int64_t t = 0; t < k; ++t) out[labels[idx[t]]] += 1.0;
        double total = 0.0;
        for (std::int64_t c = 0; c < n_classes; ++c) total += out[c];
        for (std::int64_t c = 0; c < n_classes; ++c) out[c] /= total;
    }
}

}  // namespace gradnca
