"""benchmarks/bench_backends.py's smoke configuration (CPU, Triton interpreted, 16 tokens): every row of each host
installed in this environment is measured without error, the other host's row says it is not installed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_backends  # noqa: E402


def test_smoke_rows_run_for_the_installed_hosts():
    rows = list(bench_backends.run(16, 32, 129, torch.device("cpu"), torch.float32, "triton", 1))
    for host, (package, _) in bench_backends.HOSTS.items():
        mine = [r for r in rows if r["host"] == host]
        if importlib.util.find_spec(package) is None:
            assert [r["error"] for r in mine] == ["not installed (run in the host's environment)"]
            continue
        assert len(mine) >= 2 and any("r1fast" in r["method"].lower() for r in mine)
        for row in mine:
            assert "error" not in row, row
            assert row["ms"] > 0 and row["floor"] == "6NHV"
