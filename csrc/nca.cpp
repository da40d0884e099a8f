// NCA objective pieces, arranged so that every element and every sum is formed with the same
// floating-point operations, in the same order, as scikit-learn's
// NeighborhoodComponentsAnalysis._loss_grad_lbfgs. L-BFGS on the NCA objective is chaotic: a
// 1e-15 relative change in the gradient becomes a different projection after ~30 iterations,
// so "matches scikit-learn" requires bit-identical objectives, not merely close ones.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels.hpp"

#ifdef GRADNCA_HAVE_OPENMP
#include <omp.h>
#endif

namespace gradnca {

namespace {

// NumPy's pairwise summation (DOUBLE_pairwise_sum): what np.sum(..., axis=-1) computes on a
// contiguous row. `at(i)` yields element i.
template <class T, class Get>
T numpy_pairwise_sum(const Get& at, std::int64_t lo, std::int64_t n) {
    // NumPy accumulates in the array's own type (float32 sums in float32).
    if (n < 8) {
        T res = 0;
        for (std::int64_t i = 0; i < n; ++i) res += at(lo + i);
        return res;
    }
    if (n <= 128) {
        T r[8];
        for (int j = 0; j < 8; ++j) r[j] = at(lo + j);
        std::int64_t i = 8;
        for (; i < n - (n % 8); i += 8) {
            for (int j = 0; j < 8; ++j) r[j] += at(lo + i + j);
        }
        T res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; ++i) res += at(lo + i);
        return res;
    }
    std::int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return numpy_pairwise_sum<T>(at, lo, n2) + numpy_pairwise_sum<T>(at, lo + n2, n - n2);
}

}  // namespace

// AVX2 clones of the row kernels, chosen at load time. Only plain IEEE add/mul/div/compare are
// vectorised (no FMA contraction, no reassociation), so every clone gives identical bits.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define GRADNCA_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define GRADNCA_CLONES
#endif

double pairwise_sum(const double* x, std::int64_t n) {
    return numpy_pairwise_sum<double>([x](std::int64_t i) { return x[i]; }, 0, n);
}

float pairwise_sum_f32(const float* x, std::int64_t n) {
    return numpy_pairwise_sum<float>([x](std::int64_t i) { return x[i]; }, 0, n);
}

GRADNCA_CLONES void nca_shifted_logits_f32(const double* gram, float* out, std::int64_t rows,
                                           std::int64_t n, const double* sq, std::int64_t row0,
                                           std::int64_t block) {
    for (std::int64_t r = 0; r < rows; ++r) {
        const double* g = gram + r * n;
        float* w = out + r * n;
        const std::int64_t i = row0 + r;
        const std::int64_t bi = i / block;
        // scikit-learn's float32 euclidean_distances: float64 chunks of `block` rows, each
        // (-2 g + |x_row|^2) + |x_col|^2 then cast to float32; blocks below the diagonal are
        // copied (transposed) from above it, so there the two norms are added the other way.
        float m = -std::numeric_limits<float>::infinity();
        for (std::int64_t j = 0; j < n; ++j) {
            const double d64 = (j / block < bi) ? (-2.0 * g[j] + sq[j]) + sq[i]
                                                : (-2.0 * g[j] + sq[i]) + sq[j];
            float d = static_cast<float>(d64);
            d = d > 0.0f ? d : 0.0f;
            const float logit = (j == i) ? -std::numeric_limits<float>::infinity() : -d;
            w[j] = logit;
            m = logit > m ? logit : m;
        }
        for (std::int64_t j = 0; j < n; ++j) w[j] -= m;
    }
}

GRADNCA_CLONES void nca_shifted_logits(double* gram, std::int64_t rows, std::int64_t n, const double* sq,
                        std::int64_t row0) {
    for (std::int64_t r = 0; r < rows; ++r) {
        double* w = gram + r * n;
        const std::int64_t i = row0 + r;
        const double sqi = sq[i];
        // euclidean_distances(squared=True): (-2 g + |x_i|^2) + |x_j|^2, clipped at 0; the self
        // distance becomes +inf, so its logit is -inf and its softmax weight exactly 0.
        double m = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < n; ++j) {
            double d = (-2.0 * w[j] + sqi) + sq[j];
            d = d > 0.0 ? d : 0.0;
            const double logit = (j == i) ? -std::numeric_limits<double>::infinity() : -d;
            w[j] = logit;
            m = logit > m ? logit : m;
        }
        for (std::int64_t j = 0; j < n; ++j) w[j] -= m;
    }
}

template <class T>
static void nca_weights_impl(T* expw, std::int64_t rows, std::int64_t n,
                             const std::int64_t* labels, std::int64_t row0, T* p_out) {
    for (std::int64_t r = 0; r < rows; ++r) {
        T* w = expw + r * n;
        const std::int64_t yi = labels[row0 + r];
        const T s = numpy_pairwise_sum<T>([w](std::int64_t j) { return w[j]; }, 0, n);
        for (std::int64_t j = 0; j < n; ++j) w[j] /= s;
        const T p = numpy_pairwise_sum<T>(
            [w, labels, yi](std::int64_t j) { return labels[j] == yi ? w[j] : T(0); }, 0, n);
        for (std::int64_t j = 0; j < n; ++j) {
            const T pij = w[j];
            w[j] = (labels[j] == yi ? pij : T(0)) - pij * p;
        }
        p_out[r] = p;
    }
}

GRADNCA_CLONES void nca_weights(double* expw, std::int64_t rows, std::int64_t n,
                                const std::int64_t* labels, std::int64_t row0, double* p_out) {
    nca_weights_impl<double>(expw, rows, n, labels, row0, p_out);
}

GRADNCA_CLONES void nca_weights_f32(float* expw, std::int64_t rows, std::int64_t n,
                                    const std::int64_t* labels, std::int64_t row0, float* p_out) {
    nca_weights_impl<float>(expw, rows, n, labels, row0, p_out);
}

template <class T>
static void column_sums_impl(const T* w, std::int64_t rows, std::int64_t n, T* colsum,
                             int n_threads) {
    // np.sum(axis=0) on a C-ordered array adds whole rows in order; threads split the columns.
#pragma omp parallel num_threads(n_threads)
    {
#ifdef GRADNCA_HAVE_OPENMP
        const int nt = omp_get_num_threads(), t = omp_get_thread_num();
#else
        const int nt = 1, t = 0;
#endif
        const std::int64_t chunk = (n + nt - 1) / nt;
        const std::int64_t lo = std::min<std::int64_t>(n, chunk * t);
        const std::int64_t hi = std::min<std::int64_t>(n, lo + chunk);
        for (std::int64_t r = 0; r < rows; ++r) {
            const T* row = w + r * n;
            for (std::int64_t j = lo; j < hi; ++j) colsum[j] += row[j];
        }
    }
}

void column_sums_sequential(const double* w, std::int64_t rows, std::int64_t n, double* colsum,
                            int n_threads) {
    column_sums_impl<double>(w, rows, n, colsum, n_threads);
}

template <class T>
static void symmetrize_impl(T* w, std::int64_t n, T* colsum, int n_threads) {
    std::fill(colsum, colsum + n, T(0));
    column_sums_impl<T>(w, n, n, colsum, n_threads);
    // W + W^T in place, tile by tile so both tiles stay in cache.
    constexpr std::int64_t TILE = 64;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
    for (std::int64_t bi = 0; bi < n; bi += TILE) {
        for (std::int64_t bj = bi; bj < n; bj += TILE) {
            const std::int64_t ie = std::min(bi + TILE, n), je = std::min(bj + TILE, n);
            for (std::int64_t i = bi; i < ie; ++i) {
                for (std::int64_t j = (bi == bj ? i + 1 : bj); j < je; ++j) {
                    const T s = w[i * n + j] + w[j * n + i];
                    w[i * n + j] = s;
                    w[j * n + i] = s;
                }
            }
        }
    }
    for (std::int64_t i = 0; i < n; ++i) w[i * n + i] = -colsum[i];
}

void nca_symmetrize(double* w, std::int64_t n, double* colsum, int n_threads) {
    symmetrize_impl<double>(w, n, colsum, n_threads);
}

void nca_symmetrize_f32(float* w, std::int64_t n, float* colsum, int n_threads) {
    symmetrize_impl<float>(w, n, colsum, n_threads);
}

}  // namespace gradnca
