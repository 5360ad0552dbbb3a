"""Builds the C++ unit tests with CMake (extension off) and runs them through ctest."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not on PATH")
def test_ctest_passes(tmp_path):
    build = tmp_path / "build"
    configure = ["cmake", "-S", str(ROOT), "-B", str(build), "-DR1FAST_BUILD_EXTENSION=OFF", "-DR1FAST_BUILD_TESTS=ON"]
    if shutil.which("ninja"):
        configure.append("-GNinja")
    subprocess.run(configure, check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j", "2"], check=True, capture_output=True)
    result = subprocess.run(["ctest", "--test-dir", str(build), "--output-on-failure"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "100% tests passed" in result.stdout
