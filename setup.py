"""Build driver: setuptools hands the C++ core to CMake.

The core links LAPACK from the ``scipy-openblas32`` wheel, found through the CMake config that
the wheel ships, so a plain ``pip install`` needs nothing beyond a C++ compiler.
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str, source_dir: Path) -> None:
        super().__init__(name, sources=[])
        self.source_dir = source_dir


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        import pybind11
        import scipy_openblas32

        output_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = ROOT / "build" / f"cmake-{sys.implementation.cache_tag}"
        build_dir.mkdir(parents=True, exist_ok=True)
        config = "Debug" if self.debug else "Release"

        # the wheel's config file lies in lib/cmake/openblas
        openblas_dir = Path(scipy_openblas32.get_lib_dir()) / "cmake" / "openblas"
        configure = [
            "cmake",
            str(ext.source_dir),
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={output_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DOpenBLAS_DIR={openblas_dir}",
            f"-DCMAKE_BUILD_TYPE={config}",
            f"-DSCHURFAST_VERSION={self.distribution.get_version()}",
        ]
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.run(configure, cwd=build_dir, check=True)
        subprocess.run(
            ["cmake", "--build", ".", "--config", config, "--parallel", jobs],
            cwd=build_dir,
            check=True,
        )


setup(
    ext_modules=[CMakeExtension("schurfast._core", ROOT)],
    cmdclass={"build_ext": CMakeBuild},
)
