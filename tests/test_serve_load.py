"""The bounded load test (benchmarks/serve_load.py) against a real `vrm serve` process: 200 mixed
requests from 8 concurrent clients, every valid one answered, every bad one a 4xx, memory flat."""

import importlib.util
from pathlib import Path


def test_load_test_passes(capsys):
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "serve_load.py"
    spec = importlib.util.spec_from_file_location("serve_load", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    code = bench.main(["--requests", "200", "--clients", "8"])
    out = capsys.readouterr().out
    assert "200 requests from 8 concurrent clients" in out
    assert code == 0, out
