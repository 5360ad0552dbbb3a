"""Build r1fast: setuptools drives CMake for the extension r1fast._C; kernels/ installs as r1fast.kernels.

CMakeLists.txt is the only list of C++ sources and flags; this file only tells CMake where to put the module.
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_temp = Path(self.build_temp).resolve() / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        cfg = os.environ.get("R1FAST_BUILD_TYPE", "Release")
        args = [
            f"-DCMAKE_BUILD_TYPE={cfg}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DR1FAST_EXT_OUTPUT_DIR={out_dir}",
            "-DR1FAST_BUILD_TESTS=OFF",
        ]
        try:
            import ninja  # noqa: F401

            args.append("-GNinja")
        except ImportError:
            pass
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_temp), *args], check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", str(build_temp), "--target", "_C", "-j", jobs], check=True)


packages = find_packages(include=["r1fast", "r1fast.*"]) + ["r1fast.kernels"]

setup(
    packages=packages,
    package_dir={"r1fast.kernels": "kernels"},
    ext_modules=[CMakeExtension("r1fast._C")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
