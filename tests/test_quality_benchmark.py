"""benchmarks/quality.py's aggregation, table and resume log, on synthetic runs (no training)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("quality_benchmark", ROOT / "benchmarks" / "quality.py")
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)


def _run(method, split, seed, forget, retain, proximal_before=0.9):
    before = {"forget": {"name_recall": 1.0}, "retain": {"name_recall": 1.0}, "proximal": {"name_recall": proximal_before}}
    after = {"forget": {"name_recall": forget}, "retain": {"name_recall": retain}}
    return {"method": method, "split": split, "seed": seed, "seconds": 10.0 + seed, "before": before, "after": after}


def test_aggregate_mean_and_population_std_per_method_and_split():
    runs = [_run("npo", "forget10", 0, 0.0, 1.0), _run("npo", "forget10", 1, 0.5, 0.8),
            _run("npo", "forget05", 0, 0.25, 0.9), {"method": "npo", "split": "forget10", "seed": 2, "error": "x",
                                                     "seconds": 1.0}]
    rows = {(r["method"], r["split"]): r for r in quality.aggregate(runs)}
    r = rows[("npo", "forget10")]
    assert r["seeds"] == 2  # the failed run is not averaged
    assert r["forget/name_recall"] == pytest.approx((0.25, 0.25))
    assert r["retain/name_recall"] == pytest.approx((0.9, 0.1))
    assert rows[("npo", "forget05")]["forget/name_recall"] == pytest.approx((0.25, 0.0))


def test_full_model_row_per_split_in_the_table():
    runs = [_run("npo", "forget10", 0, 0.0, 1.0, proximal_before=0.8), _run("npo", "forget05", 0, 0.0, 1.0, 0.6)]
    full = quality.full_model_metrics(runs)
    assert list(full) == ["forget05", "forget10"]
    md = quality.markdown(quality.aggregate(runs), full)
    lines = md.splitlines()
    assert lines[2].startswith("| full model | 05 | 1.00 |  | 1.00 | 0.60 |")
    assert lines[3].startswith("| full model | 10 | 1.00 |  | 1.00 | 0.80 |")
    assert "| npo | 10 | 0.00 ± 0.00 |" in md


def test_resume_reuses_finished_runs(tmp_path, monkeypatch):
    calls = []

    def fake_run_one(method, split, seed, out_root, extra):
        calls.append((method, split, seed))
        return _run(method, split, seed, 0.1 * seed, 1.0)

    monkeypatch.setattr(quality, "run_one", fake_run_one)
    monkeypatch.setattr(quality, "plot", lambda rows, path: None)
    argv = ["--methods", "npo", "--ratios", "forget10", "--seeds", "0,1", "--output", str(tmp_path)]
    assert quality.main(argv) == 0 and len(calls) == 2
    assert quality.main(argv + ["--resume"]) == 0 and len(calls) == 2  # nothing rerun
    assert quality.main(argv + ["--seeds", "0,1,2", "--resume"]) == 0 and calls[-1] == ("npo", "forget10", 2)
    data = json.loads((tmp_path / "quality.json").read_text())
    assert [r["seed"] for r in data["runs"]] == [0, 1, 2]
    assert list(data["full_model"]) == ["forget10"]
    assert "| full model | 10 |" in (tmp_path / "quality.md").read_text()
    assert quality.main(argv) == 0 and len(calls) == 5  # without --resume both seeds run again
