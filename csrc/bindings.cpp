// pybind11 bindings: shape/dtype checks and GIL release only; arithmetic lives in the kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels.hpp"

namespace py = pybind11;
using gradnca::TripletStats;

namespace {

using F64 = py::array_t<double, py::array::c_style>;
using I64 = py::array_t<std::int64_t, py::array::c_style>;
using F32 = py::array_t<float, py::array::c_style>;

void require(bool ok, const std::string& msg) {
    if (!ok) throw std::invalid_argument(msg);
}

}  // namespace

#ifdef GRADNCA_HAVE_OPENMP
#include <omp.h>
#endif

PYBIND11_MODULE(_core, m) {
    m.doc() = "Compiled kernels of gradnca_onnx (NCA objective, k-NN class probabilities, triplets).";

    m.def(
        "nca_shifted_logits",
        [](F64 gram, F64 sq, std::int64_t row0) {
            require(gram.ndim() == 2, "gram must be 2-D");
            const auto rows = gram.shape(0), n = gram.shape(1);
            require(sq.ndim() == 1 && sq.shape(0) == n, "sq must have length n");
            require(row0 >= 0 && row0 + rows <= n, "row block out of range");
            double* g = gram.mutable_data();
            const double* s = sq.data();
            py::gil_scoped_release release;
            gradnca::nca_shifted_logits(g, rows, n, s, row0);
        },
        py::arg("gram").noconvert(), py::arg("sq").noconvert(), py::arg("row0"));

    m.def(
        "nca_weights",
        [](F64 expw, I64 labels, std::int64_t row0, F64 p_out) {
            require(expw.ndim() == 2, "expw must be 2-D");
            const auto rows = expw.shape(0), n = expw.shape(1);
            require(labels.ndim() == 1 && labels.shape(0) == n, "labels must have length n");
            require(p_out.ndim() == 1 && p_out.shape(0) == rows, "p_out must have length rows");
            require(row0 >= 0 && row0 + rows <= n, "row block out of range");
            double* w = expw.mutable_data();
            double* p = p_out.mutable_data();
            const std::int64_t* y = labels.data();
            py::gil_scoped_release release;
            gradnca::nca_weights(w, rows, n, y, row0, p);
        },
        py::arg("expw").noconvert(), py::arg("labels").noconvert(), py::arg("row0"),
        py::arg("p_out").noconvert());

    m.def(
        "column_sums_sequential",
        [](F64 w, F64 colsum, int n_threads) {
            require(w.ndim() == 2 && colsum.ndim() == 1 && colsum.shape(0) == w.shape(1),
                    "colsum must have one entry per column of w");
            const double* wp = w.data();
            double* c = colsum.mutable_data();
            const auto rows = w.shape(0), n = w.shape(1);
            py::gil_scoped_release release;
            gradnca::column_sums_sequential(wp, rows, n, c, std::max(1, n_threads));
        },
        py::arg("w").noconvert(), py::arg("colsum").noconvert(), py::arg("n_threads") = 1,
        "colsum += w.sum(axis=0), rows added in order.");

    m.def(
        "nca_symmetrize",
        [](F64 w, int n_threads) {
            require(w.ndim() == 2 && w.shape(0) == w.shape(1), "w must be square");
            const auto n = w.shape(0);
            F64 colsum(n);
            double* wp = w.mutable_data();
            double* c = colsum.mutable_data();
            {
                py::gil_scoped_release release;
                gradnca::nca_symmetrize(wp, n, c, std::max(1, n_threads));
            }
            return colsum;
        },
        py::arg("w").noconvert(), py::arg("n_threads") = 1, "In place W -> W + W^T, diagonal -colsum(W); returns colsum.");

    m.def(
        "nca_shifted_logits_f32",
        [](F64 gram, F32 out, F64 sq, std::int64_t row0, std::int64_t block) {
            require(gram.ndim() == 2 && out.ndim() == 2 && out.shape(0) == gram.shape(0) &&
                        out.shape(1) == gram.shape(1), "gram and out must be (rows x n)");
            const auto rows = gram.shape(0), n = gram.shape(1);
            require(sq.ndim() == 1 && sq.shape(0) == n, "sq must have length n");
            require(row0 >= 0 && row0 + rows <= n, "row block out of range");
            require(block >= 1, "block must be positive");
            const double* g = gram.data();
            float* o = out.mutable_data();
            const double* s = sq.data();
            py::gil_scoped_release release;
            gradnca::nca_shifted_logits_f32(g, o, rows, n, s, row0, block);
        },
        py::arg("gram").noconvert(), py::arg("out").noconvert(), py::arg("sq").noconvert(),
        py::arg("row0"), py::arg("block"));

    m.def(
        "nca_weights_f32",
        [](F32 expw, I64 labels, std::int64_t row0, F32 p_out) {
            require(expw.ndim() == 2, "expw must be 2-D");
            const auto rows = expw.shape(0), n = expw.shape(1);
            require(labels.ndim() == 1 && labels.shape(0) == n, "labels must have length n");
            require(p_out.ndim() == 1 && p_out.shape(0) == rows, "p_out must have length rows");
            require(row0 >= 0 && row0 + rows <= n, "row block out of range");
            float* w = expw.mutable_data();
            float* p = p_out.mutable_data();
            const std::int64_t* y = labels.data();
            py::gil_scoped_release release;
            gradnca::nca_weights_f32(w, rows, n, y, row0, p);
        },
        py::arg("expw").noconvert(), py::arg("labels").noconvert(), py::arg("row0"),
        py::arg("p_out").noconvert());

    m.def(
        "nca_symmetrize_f32",
        [](F32 w, int n_threads) {
            require(w.ndim() == 2 && w.shape(0) == w.shape(1), "w must be square");
            const auto n = w.shape(0);
            F32 colsum(n);
            float* wp = w.mutable_data();
            float* c = colsum.mutable_data();
            {
                py::gil_scoped_release release;
                gradnca::nca_symmetrize_f32(wp, n, c, std::max(1, n_threads));
            }
            return colsum;
        },
        py::arg("w").noconvert(), py::arg("n_threads") = 1);

    m.def(
        "pairwise_sum_f32",
        [](F32 x) {
            require(x.ndim() == 1, "x must be 1-D");
            return gradnca::pairwise_sum_f32(x.data(), x.shape(0));
        },
        py::arg("x").noconvert(), "np.sum of a contiguous float32 vector, bit for bit.");

    m.def(
        "pairwise_sum",
        [](F64 x) {
            require(x.ndim() == 1, "x must be 1-D");
            return gradnca::pairwise_sum(x.data(), x.shape(0));
        },
        py::arg("x").noconvert(), "np.sum of a contiguous float64 vector, bit for bit.");

    m.def(
        "knn_proba_block",
        [](F64 gram, F64 sq, I64 labels, std::int64_t k, std::int64_t n_classes) {
            require(gram.ndim() == 2, "gram must be 2-D");
            const auto rows = gram.shape(0), n = gram.shape(1);
            require(sq.ndim() == 1 && sq.shape(0) == n, "sq must have length n");
            require(labels.ndim() == 1 && labels.shape(0) == n, "labels must have length n");
            require(k >= 1 && k <= n, "k must be in [1, n]");
            require(n_classes >= 1, "n_classes must be positive");
            const std::int64_t* y = labels.data();
            for (py::ssize_t j = 0; j < n; ++j)
                require(y[j] >= 0 && y[j] < n_classes, "labels must lie in [0, n_classes)");
            F64 proba({rows, static_cast<py::ssize_t>(n_classes)});
            const double* g = gram.data();
            const double* s = sq.data();
            double* out = proba.mutable_data();
            {
                py::gil_scoped_release release;
                gradnca::knn_proba_block(g, rows, n, s, y, k, n_classes, out);
            }
            return proba;
        },
        py::arg("gram").noconvert(), py::arg("sq").noconvert(), py::arg("labels").noconvert(),
        py::arg("k"), py::arg("n_classes"));

    m.def(
        "pairwise_distances_from_gram",
        [](F64 gram, F64 u, double exact_below, int n_threads) {
            require(u.ndim() == 2, "u must be 2-D");
            const auto b = u.shape(0), dim = u.shape(1);
            require(gram.ndim() == 2 && gram.shape(0) == b && gram.shape(1) == b,
                    "gram must be (b x b)");
            F64 dist({b, b});
            const double* g = gram.data();
            const double* up = u.data();
            double* d = dist.mutable_data();
            {
                py::gil_scoped_release release;
                gradnca::pairwise_distances_from_gram(g, up, b, dim, exact_below, d,
                                                      std::max(1, n_threads));
            }
            return dist;
        },
        py::arg("gram").noconvert(), py::arg("u").noconvert(), py::arg("exact_below"),
        py::arg("n_threads") = 1);

    m.def(
        "triplet_all",
        [](F64 dist, I64 labels, double margin, int n_threads) {
            require(dist.ndim() == 2 && dist.shape(0) == dist.shape(1), "dist must be square");
            const auto b = dist.shape(0);
            require(labels.ndim() == 1 && labels.shape(0) == b, "labels must have length b");
            F64 coef({b, b});
            const double* d = dist.data();
            const std::int64_t* y = labels.data();
            double* c = coef.mutable_data();
            TripletStats st;
            {
                py::gil_scoped_release release;
                st = gradnca::triplet_all(d, b, y, margin, c, std::max(1, n_threads));
            }
            return py::make_tuple(st.loss_sum, st.n_nonzero, st.n_triplets, coef);
        },
        py::arg("dist").noconvert(), py::arg("labels").noconvert(), py::arg("margin"),
        py::arg("n_threads") = 1,
        "All-triplets margin loss: (loss_sum, n_nonzero, n_triplets, coef).");

    m.def("openmp_threads", []() {
#ifdef GRADNCA_HAVE_OPENMP
        return omp_get_max_threads();
#else
        return 1;
#endif
    });
}
