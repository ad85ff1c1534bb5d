"""The bounded load test (benchmarks/serve_load.py) against a real `vrm serve` process: 200 mixed
requests from 8 concurrent clients, every valid one answered, every bad one a 4xx, memory flat."""

from bench_loader import load_benchmark


def test_load_test_passes(capsys):
    bench = load_benchmark("serve_load")
    code = bench.main(["--requests", "200", "--clients", "8"])
    out = capsys.readouterr().out
    assert "200 requests from 8 concurrent clients" in out
    assert code == 0, out
