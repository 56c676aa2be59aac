"""Install iterseg; the top-level ``kernels/`` folder becomes the subpackage ``iterseg.kernels``."""
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
VERSION = next(line.split('"')[1] for line in (ROOT / "iterseg" / "__init__.py").read_text().splitlines()
               if line.startswith("__version__"))

setup(
    name="iterseg",
    version=VERSION,
    description="Two-stage segmentation of high-resolution images: refine only the uncertain windows.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=["iterseg", "iterseg.cli", "iterseg.model", "iterseg.engine", "iterseg.disk", "iterseg.training", "iterseg.kernels",
              "iterseg.data_specs"],
    package_dir={"iterseg": "iterseg", "iterseg.kernels": "kernels", "iterseg.data_specs": "data_specs"},
    package_data={"iterseg": ["weights/*.pt", "weights/*.md", "samples/*"], "iterseg.data_specs": ["*.yaml"]},
    install_requires=[
        "torch>=2.3",  # install the CPU build first (see the Makefile); a bare torch pulls CUDA
        "numpy>=1.24",
        "numba>=0.59",
        "opencv-python-headless>=4.8",
        "tifffile>=2023.7",
        "imagecodecs>=2023.1",  # LZW/JPEG-compressed TIFFs (HRF's masks, most scanners)
        # whole-slide images (.svs, .ndpi, .scn, .bif): OpenSlide's interface on tifffile, pure Python;
        # brings zarr and numcodecs (about 40 MB installed, against torch's 700 MB)
        "tiffslide>=2.2",
        "pyyaml>=6",
        "tqdm>=4.60",
        "fvcore>=0.1.5.post20221221",
        "pillow>=9",  # indexed (palette) PNG masks of multi-class models, which OpenCV cannot write
        # int8: PyTorch 2 Export quantization (prepare_pt2e, X86InductorQuantizer) for torch 2.13
        "torchao==0.18.0",
        # the openvino backend (model/openvino_backend.py): 1.2-2.3x PyTorch's speed on the CPUs measured
        # (AVX-512 BF16, AMX); --backend auto still measures it against torch before using it
        "openvino>=2025.1",
    ],
    extras_require={
        # `make test`: hypothesis fuzzes the kernels and the reader; none is needed at run time; the wsi
        # and zarr extras, so that the tests read slides through OpenSlide and OME-Zarr images
        "test": ["pytest>=7", "pytest-benchmark>=4", "hypothesis>=6", "openslide-bin>=4", "openslide-python>=1.4",
                 "ome-zarr>=0.18"],
        # `make test-slow` and `make lint` (CI): matplotlib draws the sweep plots (the slow sweep tests
        # check them), dask runs the cluster tests, MONAI's UNet is a user network in
        # tests/test_two_stage_inference.py, ruff lints (ruff.toml)
        "dev": ["pytest>=7", "pytest-benchmark>=4", "matplotlib>=3.7", "hypothesis>=6", "ruff>=0.6",
                "openslide-bin>=4", "openslide-python>=1.4", "ome-zarr>=0.18",
                "dask[distributed]>=2024.1", "monai>=1.3"],
        # MONAI's sliding window, the speed benchmarks' reference point; never a runtime dependency
        "bench": ["pytest>=7", "pytest-benchmark>=4", "matplotlib>=3.7", "monai>=1.3", "nncf>=2.10"],
        # `iterseg predict DIR --cluster local:N | tcp://HOST:PORT | FILE.json` (iterseg/cluster.py); pure Python
        "dask": ["dask[distributed]>=2024.1"],
        # 3DHistech .mrxs and DICOM slides, which tifffile cannot read: OpenSlide (a 3 MB wheel of native
        # libraries, LGPL) through openslide-python; the TIFF-based slide formats need neither
        "wsi": ["openslide-bin>=4", "openslide-python>=1.4"],
        # OME-Zarr (NGFF) images in, NGFF labels out (iterseg/disk/ngff.py): ome-zarr brings dask,
        # scikit-image, scipy, botocore and s3fs (about 200 MB installed), too much for everyone
        "zarr": ["ome-zarr>=0.18"],
    },
    entry_points={"console_scripts": ["iterseg=iterseg.cli:run"]},
)
