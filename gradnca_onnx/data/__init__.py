"""Target datasets: MedMNIST npz files, the paper's fold subsets, image folders, label tables,
arrays; and the preprocessing that turns their uint8 images into a model's input (REFERENCE
section 1).

NumPy and Pillow only; never imports torch. Layers, bottom up: :mod:`.preprocess`,
:mod:`.volumes` (3-D resampling), :mod:`.intensity` and :mod:`.conventions` (pixels and
intensity conventions), :mod:`.physical`
(the :class:`MedicalImage` type: physical values); :mod:`.dataset` (the :class:`TargetData`
type and its order) and :mod:`.folds` (the paper's fold draw); the readers: :mod:`.medmnist`,
:mod:`.dicom` and :mod:`.nifti` (medical files as :class:`MedicalImage`, with pydicom and
nibabel from the ``medical`` extra, imported on first use), :mod:`.scans` (2-D targets of
medical files), :mod:`.folders` (class folders), :mod:`.table` (label tables, CSV/TSV, and
patient-keeping folds); :mod:`.load` (:func:`load_target`, which dispatches to them). No module
imports one above it.

>>> from gradnca_onnx import data
>>> train = data.load_target("breastmnist_224.npz", "fold1")        # paper fold 1, train subset
>>> x = data.preprocess(train.images, mean=data.IMAGENET_MEAN, std=data.IMAGENET_STD, size=224)
"""

from .dataset import (
    DATASET_ORDER,
    FOLDER_ORDER,
    SPLITS,
    TargetData,
    class_interleaved_order,
    content_sha256,
    from_arrays,
    split_target,
)
from .dicom import read_dicom, read_dicom_path, read_dicom_series
from .folders import (
    IMAGE_EXTENSIONS,
    find_duplicates,
    list_image_folder,
    load_image_folder,
    split_subfolders,
)
from .folds import Fold, fold_arrays, make_paper_folds
from .intensity import BIT_DEPTHS, IntensityMap, ValueRange, bit_depth
from .load import load_target
from .medmnist import (
    MEDMNIST_KEYS,
    MEDMNIST_SIZES,
    load_npz_target,
    medmnist_flag,
    npz_keys,
    read_npz,
    write_paper_folds,
)
from .nifti import read_nifti
from .physical import MedicalImage
from .table import (
    TABLE_SUFFIXES,
    LabelTable,
    group_folds,
    group_resample_indices,
    read_label_table,
)
from .scans import from_physical, is_medical_file, read_scan
from .preprocess import (
    DEFAULT_FILTER,
    HALF_MEAN,
    HALF_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_FILTERS,
    as_nhwc,
    normalization,
    normalize,
    parse_size,
    preprocess,
    resize,
    to_grey,
    to_rgb,
)

__all__ = [
    "BIT_DEPTHS",
    "DATASET_ORDER",
    "DEFAULT_FILTER",
    "FOLDER_ORDER",
    "Fold",
    "HALF_MEAN",
    "HALF_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "IntensityMap",
    "LabelTable",
    "MEDMNIST_KEYS",
    "MEDMNIST_SIZES",
    "MedicalImage",
    "RESIZE_FILTERS",
    "SPLITS",
    "TABLE_SUFFIXES",
    "TargetData",
    "ValueRange",
    "as_nhwc",
    "bit_depth",
    "class_interleaved_order",
    "content_sha256",
    "find_duplicates",
    "fold_arrays",
    "group_folds",
    "group_resample_indices",
    "from_arrays",
    "from_physical",
    "is_medical_file",
    "read_scan",
    "list_image_folder",
    "load_image_folder",
    "load_npz_target",
    "load_target",
    "make_paper_folds",
    "medmnist_flag",
    "normalization",
    "normalize",
    "parse_size",
    "npz_keys",
    "preprocess",
    "read_dicom",
    "read_dicom_path",
    "read_dicom_series",
    "read_nifti",
    "read_label_table",
    "read_npz",
    "resize",
    "split_subfolders",
    "split_target",
    "to_grey",
    "to_rgb",
    "write_paper_folds",
]
