"""The main job: `python -m effattn` (info, check, bench) and its options."""
import json
import os
import re
import subprocess
import sys

import effattn.selfcheck
from effattn.bench.compare import compare
from effattn.cli import main


def test_no_argument_runs_check_and_bench_and_exits_zero():
    result = subprocess.run([sys.executable, "-m", "effattn"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = re.search(r"(\d+) passed, (\d+) failed, (\d+) skipped", result.stdout)  # the check table
    assert counts and int(counts[1]) >= 10 and counts[2] == "0" and counts[3] == "0", result.stdout
    assert "| problem | implementation | fwd ms" in result.stdout     # the bench table
    assert "effattn" in result.stdout and "masked reference" in result.stdout


def test_check_fails_when_an_op_is_broken(monkeypatch, capsys):
    real = effattn.selfcheck.neighborhood_attention

    def wrong(q, k, v, *args, **kwargs):
        return real(q, k, v, *args, **kwargs) * 1.01

    monkeypatch.setattr(effattn.selfcheck, "neighborhood_attention", wrong)
    assert main(["check", "--device", "cpu"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_bench_writes_json_and_png_and_compare_flags_a_regression(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", "--device", "cpu", "--quick", "--out", str(out)]) == 0
    data = json.loads((out / "bench.json").read_text())
    assert data["meta"]["device"] == "cpu"
    assert {r["suite"] for r in data["rows"]} == {"na", "bs", "sparse", "lightning"}
    assert {r["estimator"] for r in data["estimator_accuracy"]} == {"effattn int8", "mean-pooled"}
    for png in ("na_speedup.png", "lightning_time.png", "estimator_accuracy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Plant a regression: an "earlier" run in which everything was 3x faster.
    earlier = tmp_path / "earlier.json"
    for row in data["rows"]:
        for key in ("fwd_ms", "bwd_ms"):
            if row.get(key):
                row[key] /= 3
    earlier.write_text(json.dumps(data))
    capsys.readouterr()
    status = main(["bench", "--device", "cpu", "--quick", "--only", "lightning",
                   "--compare", str(earlier), "--fail-on-regression", "50"])
    assert status == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_compare_reports_changes_without_threshold():
    old = [{"suite": "na", "problem": "p", "impl": "effattn", "fwd_ms": 2.0, "bwd_ms": 4.0}]
    new = [{"suite": "na", "problem": "p", "impl": "effattn", "fwd_ms": 1.0, "bwd_ms": 8.0}]
    lines, regressions = compare(new, old, threshold_pct=None)
    assert regressions == [] and any("-50.0%" in line for line in lines)
    _, regressions = compare(new, old, threshold_pct=10)
    assert regressions == [("p", "effattn", "bwd_ms", 100.0)]


def test_info_and_unknown_suite(capsys):
    assert main(["info"]) == 0
    assert "effattn" in capsys.readouterr().out
    assert main(["bench", "--only", "nope", "--device", "cpu"]) == 2


def test_bench_filter_keeps_only_matching_problems(tmp_path):
    out = tmp_path / "decode"
    assert main(["bench", "--device", "cpu", "--quick", "--only", "lightning", "--filter", "decode",
                 "--out", str(out)]) == 0
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert rows and all("decode" in row["problem"] for row in rows)
