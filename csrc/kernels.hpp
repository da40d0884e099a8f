// Compiled kernels of gradnca_onnx. Pure C++ over raw row-major buffers: the bindings own the
// NumPy interface, these functions own the arithmetic. Every kernel reproduces the reference
// implementation named in its comment (scikit-learn or pytorch-metric-learning), including the
// order of floating-point operations where that decides ties.
#pragma once

#include <cstdint>

namespace gradnca {

// NumPy's np.sum over a contiguous vector (pairwise summation), bit for bit.
double pairwise_sum(const double* x, std::int64_t n);

// NCA objective of scikit-learn, split around NumPy's exp so that every value is bit-identical
// to NeighborhoodComponentsAnalysis._loss_grad_lbfgs. For a (rows x n) block of E_I E^T:
//  1. nca_shifted_logits: in place -> softmax logits -d_ij - max_j(-d_ij), self at -inf;
//  2. (caller) np.exp in place;
//  3. nca_weights: in place -> W_ij = p_ij [y_i == y_j] - p_ij p_i; p_out[r] = p_i.
void nca_shifted_logits(double* gram, std::int64_t rows, std::int64_t n, const double* sq,
                        std::int64_t row0);
void nca_weights(double* expw, std::int64_t rows, std::int64_t n, const std::int64_t* labels,
                 std::int64_t row0, double* p_out);
// colsum[j] += sum_r w[r][j], rows added in order (NumPy's axis-0 sum).
void column_sums_sequential(const double* w, std::int64_t rows, std::int64_t n, double* colsum,
                            int n_threads);
// Square W (n x n) -> W + W^T with diagonal -colsum(W); colsum (n) is written.
void nca_symmetrize(double* w, std::int64_t n, double* colsum, int n_threads);

// The float32 path scikit-learn takes when the features are float32 (scipy then hands the
// objective a float32 iterate, so every array of the objective is float32 except the upcast
// distance chunks). `block` is euclidean_distances' upcast chunk size.
float pairwise_sum_f32(const float* x, std::int64_t n);
void nca_shifted_logits_f32(const double* gram, float* out, std::int64_t rows, std::int64_t n,
                            const double* sq, std::int64_t row0, std::int64_t block);
void nca_weights_f32(float* expw, std::int64_t rows, std::int64_t n, const std::int64_t* labels,
                     std::int64_t row0, float* p_out);
void nca_symmetrize_f32(float* w, std::int64_t n, float* colsum, int n_threads);

// Uniform-weight k-NN class probabilities of a block of queries against n reference points,
// exactly as scikit-learn's brute-force Euclidean kneighbors (heap order and ties included).
//   gram  : (rows x n) block of Q X^T, sq : (n) squared norms of the reference rows
//   proba : (rows x n_classes) output
// Single-threaded: callers run row slabs concurrently.
void knn_proba_block(const double* gram, std::int64_t rows, std::int64_t n, const double* sq,
                     const std::int64_t* labels, std::int64_t k, std::int64_t n_classes,
                     double* proba);

// Euclidean distances between L2-normalised rows, from their Gram matrix; pairs whose squared
// distance falls below `exact_below` are recomputed from the coordinates so that duplicates get
// exactly 0 (and hence the zero subgradient torch uses at 0).
void pairwise_distances_from_gram(const double* gram, const double* u, std::int64_t b,
                                  std::int64_t dim, double exact_below, double* dist,
                                  int n_threads);

struct TripletStats {
    double loss_sum = 0.0;      // sum of the positive per-triplet losses
    std::int64_t n_nonzero = 0; // triplets with loss > 0
    std::int64_t n_triplets = 0;
};

// All-triplets margin loss of pytorch-metric-learning's TripletMarginLoss on a distance matrix.
// Writes coef (b x b): coef[a][j] = number of violating triplets in which d(a, j) enters with
// sign +1 (j positive) minus those with sign -1 (j negative). dL/dD = coef / n_nonzero.
TripletStats triplet_all(const double* dist, std::int64_t b, const std::int64_t* labels,
                         double margin, double* coef, int n_threads);

}  // namespace gradnca
