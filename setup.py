"""Build script: the C++ core in ``csrc/`` is compiled by CMake into ``gradnca_onnx._core``."""

import os
import re
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()


def read_version() -> str:
    text = (ROOT / "gradnca_onnx" / "_version.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: str = "") -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        import pybind11

        # get_ext_fullpath honours --inplace, which editable installs use.
        ext_path = Path(self.get_ext_fullpath(ext.name)).resolve()
        out_dir = ext_path.parent
        build_type = os.environ.get("GRADNCA_BUILD_TYPE", "Release")
        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}{os.sep}",
            f"-DPYTHON_EXECUTABLE={sys.executable}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
        ]
        subprocess.run(["cmake", ext.sourcedir, *cmake_args], cwd=build_temp, check=True)
        subprocess.run(
            ["cmake", "--build", ".", "--config", build_type, "-j", str(os.cpu_count() or 2)],
            cwd=build_temp,
            check=True,
        )


TORCH = ["torch==2.14.1", "torchvision==0.29.1", "onnxscript>=0.5", "pytorch-metric-learning>=2.5",
         "pyyaml>=6"]
#: Model libraries for ``--arch timm:/hf:/monai:`` and .safetensors checkpoints.
ZOO = ["timm>=1.0", "transformers>=4.40", "monai>=1.3", "safetensors>=0.4"]
#: ``--arch open_clip:NAME`` (CLIP towers such as BiomedCLIP are distributed for open_clip).
CLIP = ["open_clip_torch>=2.24"]
PLOT = ["matplotlib>=3.7"]
RAY = ["ray[default]>=2.9"]
#: ``Ranking.to_frame()``.
FRAME = ["pandas>=2"]
#: DICOM and NIfTI readers (``gradnca_onnx.data.dicom``, ``.nifti``), with the decoders of
#: compressed DICOM (JPEG, JPEG-LS, JPEG 2000, RLE). No tifffile: Pillow reads the 16-bit,
#: int32 and float32 grey TIFFs the tests write.
MEDICAL = ["pydicom>=2.4", "nibabel>=5", "pylibjpeg>=2", "pylibjpeg-openjpeg>=2",
           "pylibjpeg-libjpeg>=2", "pylibjpeg-rle>=2"]
TEST = ["pytest>=7", "hypothesis>=6", "import-linter>=2.1", "mypy>=1.10", *TORCH, *ZOO, *CLIP,
        *PLOT, *RAY, *FRAME, *MEDICAL]

setup(
    name="gradnca-onnx",
    version=read_version(),
    description=(
        "Rank a zoo of pre-trained models by transferability to a medical imaging target "
        "(NCA label prediction x gradient feature update), scored with onnxruntime."
    ),
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["gradnca_onnx", "gradnca_onnx.*"]),
    include_package_data=True,
    package_data={"gradnca_onnx": ["py.typed", "resources/**/*"]},
    ext_modules=[CMakeExtension("gradnca_onnx._core", sourcedir=str(ROOT))],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.3",
        "numba>=0.58",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "click>=8.1",
        "rich>=13",
        "pillow>=10",
        "threadpoolctl>=3.1",
    ],
    extras_require={"torch": TORCH, "zoo": [*TORCH, *ZOO], "clip": [*TORCH, *ZOO, *CLIP],
                    "plot": PLOT, "ray": RAY, "frame": FRAME, "medical": MEDICAL,
                    "test": TEST},
    entry_points={"console_scripts": ["gradnca-onnx=gradnca_onnx.cli:main"]},
    zip_safe=False,
)
