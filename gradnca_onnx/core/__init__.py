"""NumPy API over the compiled kernels (``gradnca_onnx._core``).

Each module wraps one kernel: BLAS products stay in NumPy, the fused O(n^2) element-wise loops
run in C++. The references they reproduce (scikit-learn, pytorch-metric-learning) are used only
in the tests.
"""

from .knn import knn_class_proba
from .nca import NCAResult, fit_nca, nca_loss_grad
from .triplet import triplet_margin_loss_grad

__all__ = [
    "NCAResult",
    "fit_nca",
    "knn_class_proba",
    "nca_loss_grad",
    "triplet_margin_loss_grad",
]
