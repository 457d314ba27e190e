"""Packaging of stem_explorer: `pip install -e ".[dev]"` for development."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildWithBundle(build_py):
    """Build the widgets' JavaScript bundle (js/ -> stem_explorer/static/) before packaging.

    Runs scripts/build_js.sh when npm is available (it does nothing when the bundle is
    current); without npm an existing bundle is packaged as it is, and a missing one is
    reported when a widget is created.
    """

    def run(self):
        script = here / "scripts" / "build_js.sh"
        if script.exists() and shutil.which("npm"):
            subprocess.run(["bash", str(script)], check=True, cwd=here)
        elif not (here / "stem_explorer" / "static" / "mask_editor.js").exists():
            print("warning: npm not found; the MaskEditor's JavaScript bundle is not built", file=sys.stderr)
        super().run()


here = Path(__file__).parent
version = re.search(r'__version__ = "([^"]+)"', (here / "stem_explorer" / "_version.py").read_text()).group(1)

widgets_requires = [
    "ipywidgets>=8.1",
    "anywidget>=0.9",
    # bqplot 0.13 (its JS 0.6.1) breaks bqplot-image-gl 1.10's ImageGL in the browser:
    # "s.model.getScales is not a function"
    "bqplot>=0.12.40,<0.13",
    "bqplot-image-gl>=1.4",
    "pillow>=9",
]
jupyter_requires = widgets_requires + ["jupyterlab>=4", "notebook>=7", "voila>=0.5", "ipykernel>=6"]
# compressed raw partitions (ingest --codec): Blosc codecs, hardware CRC-32C of every chunk;
# only where such data sets are written or read, so not in the core
compression_requires = ["numcodecs>=0.12", "google-crc32c>=1.5"]
test_requires = jupyter_requires + compression_requires + [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "xarray>=2024.1",
    "zarr>=2.16",
    "nbclient>=0.9",
    "nbformat>=5.9",
    "playwright>=1.40",
]

setup(
    name="stem_explorer",
    version=version,
    description="Interactive exploration of pixelated 4D-STEM data on dask.distributed",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["stem_explorer", "stem_explorer.*"]),
    package_data={"stem_explorer": ["**/*.json", "static/*"]},
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "numba>=0.58",
        "dask>=2024.1",
        "distributed>=2024.1",
        # the embedded cluster's per-session TLS certificate (distributed.Security.temporary)
        "cryptography>=41",
        "h5py>=3.8",
        "hdf5plugin>=4.1",
        "jsonschema>=4.17",
        "threadpoolctl>=3.1",
        "tqdm>=4.60",
        # one ingestion per destination folder: flock, released by the kernel when its owner dies
        "filelock>=3.12",
        "psutil>=5.7",  # who holds an ingestion lock, and whether that process still runs
        "tifffile>=2023.1",
        "mrcfile>=1.4",
        # physical units of calibrations (scan step, detector pixel size, camera length)
        "pint>=0.22",
    ],
    extras_require={
        "widgets": widgets_requires,
        "jupyter": jupyter_requires,
        "xarray": ["xarray>=2024.1"],
        "zarr": ["zarr>=2.16"],
        "compression": compression_requires,
        "rsciio": ["rosettasciio>=0.4"],  # GPL-3.0: kept optional
        # HDFS goes through WebHDFS on the standard library (stem_explorer.io.hdfs); the
        # extra stays, empty, so `pip install stem_explorer[hdfs]` keeps working
        "hdfs": [],
        "gpu": ["cupy-cuda12x>=13"],
        # the benchmark's side-by-side LiberTEM column (GPL-3.0; never imported by the package)
        "bench": ["libertem>=0.16"],
        "docs": ["mkdocs>=1.5"],
        "test": test_requires,
        "dev": test_requires + ["pytest-benchmark>=4"],
    },
    cmdclass={"build_py": BuildWithBundle},
    entry_points={"console_scripts": ["stem-explorer = stem_explorer.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Physics",
    ],
)
