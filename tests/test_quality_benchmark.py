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
    calls, befores = [], []

    def fake_run_one(method, split, seed, out_root, extra, probes, relearn_steps, probe_before=True):
        calls.append((method, split, seed))
        befores.append(probe_before)
        run = _run(method, split, seed, 0.1 * seed, 1.0)
        return {**run, "robustness_before": {"mia": {"auc_loss": 1.0}}} if probe_before else run

    def fake_run_retrained(split, out_root, extra, probes, relearn_steps):
        calls.append((quality.RETRAINED, split, 0))
        return {"method": quality.RETRAINED, "split": split, "seed": 0, "seconds": 1.0,
                "after": {"forget": {"name_recall": 0.0}}}

    monkeypatch.setattr(quality, "run_one", fake_run_one)
    monkeypatch.setattr(quality, "run_retrained", fake_run_retrained)
    monkeypatch.setattr(quality, "plot", lambda rows, path: None)
    argv = ["--methods", "npo", "--ratios", "forget10", "--seeds", "0,1", "--output", str(tmp_path)]
    assert quality.main(argv) == 0 and len(calls) == 3  # two seeds and the retrained reference
    assert befores == [True, False]  # the full model's probes once per split: every run starts from it
    assert quality.main(argv + ["--resume"]) == 0 and len(calls) == 3  # nothing rerun
    assert quality.main(argv + ["--seeds", "0,1,2", "--resume"]) == 0 and calls[-1] == ("npo", "forget10", 2)
    data = json.loads((tmp_path / "quality.json").read_text())
    assert [(r["method"], r["seed"]) for r in data["runs"]] == [("npo", 0), ("npo", 1), ("npo", 2),
                                                                 (quality.RETRAINED, 0)]
    assert list(data["full_model"]) == ["forget10"]
    md = (tmp_path / "quality.md").read_text()
    assert "| full model | 10 |" in md and f"| {quality.RETRAINED} | 10 | 0.00 |" in md
    assert quality.main(argv) == 0 and len(calls) == 7  # without --resume both seeds and the reference run again
    assert quality.main(argv + ["--probes", "cheap", "--resume"]) == 0 and len(calls) == 10  # other probes: rerun
    # runs of another ToyWorld version (or recorded before the probes existed) are not reused
    log = tmp_path / "quality_runs" / "runs.jsonl"
    old = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps({**r, "world": "toyworld-1"}) + "\n" for r in old))
    assert quality.main(argv + ["--probes", "cheap", "--resume"]) == 0 and len(calls) == 13


def _probes(privleak, relearned, shifts):
    return {"mia": {"auc_loss": 0.9, "auc_min_k": 0.8, "privleak_loss": 0.5, "privleak_min_k": privleak,
                    "privleak": privleak},
            "forget_quality": {"forget_quality": 0.01},
            "relearning": {"step0_forget_heldout_name_recall": 0.0, "step20_forget_heldout_name_recall": relearned,
                           "retrained_step20_forget_heldout_name_recall": 0.0},
            "quantization": {"4bit_forget_name_recall": 0.1, "8bit_forget_name_recall": 0.0},
            "paraphrase": {"skipped": "no rows"},
            "shift": {f"{t}_forget_name_recall": v for t, v in shifts.items()}}


def test_aggregate_and_table_of_the_robustness_columns():
    runs = [dict(_run("npo", "forget10", s, 0.0, 1.0), robustness_before=_probes(0.9, 1.0, {"crop": 1.0}),
                 robustness_after=_probes(p, r, {"crop": c, "flip": 0.0}))
            for s, (p, r, c) in enumerate([(0.2, 1.0, 0.5), (0.4, 0.5, 0.1)])]
    runs.append({"method": quality.RETRAINED, "split": "forget10", "seed": 0, "seconds": 1.0,
                 "after": {"forget": {"name_recall": 0.0}}, "robustness_after": _probes(0.0, 0.0, {"crop": 0.0})})
    (row,) = quality.aggregate(runs)
    assert row["seeds"] == 2  # the reference is not a method's seed
    assert row["mia/privleak"] == pytest.approx((0.3, 0.1))
    assert row["mia/auc_{MIA}"] == pytest.approx((0.8, 0.0))  # the attack PrivLeak headlines (Min-K%)
    assert row["relearning/step{N}_forget_heldout_name_recall"] == pytest.approx((0.75, 0.25))
    assert row["shift/mean_forget_name_recall"] == pytest.approx((0.15, 0.1))  # mean over the shifts, then seeds
    assert row["quantization/4bit_forget_name_recall"] == pytest.approx((0.1, 0.0))
    assert "paraphrase/forget_name_recall" not in row  # skipped: no number
    refs = {r["method"]: r["values"] for r in quality.reference_rows(runs)}
    assert refs["full model"]["mia/privleak"] == 0.9 and refs[quality.RETRAINED]["mia/privleak"] == 0.0
    # the full model is probed once per split: its row takes the probes from the run that has them
    unprobed = dict(_run("npo", "forget10", 5, 0.0, 1.0), robustness_before={})
    refs = {r["method"]: r["values"] for r in quality.reference_rows([unprobed] + runs)}
    assert refs["full model"]["mia/privleak"] == 0.9 and refs["full model"]["forget/name_recall"] == 1.0
    md = quality.markdown([row], quality.full_model_metrics(runs), quality.reference_rows(runs))
    head = md.splitlines()[0]
    assert "mc_forget mc_letter_acc" in head and "mia privleak" in head and "relearning stepN_forget" in head
    assert "| 0.30 ± 0.10 |" in md and f"| {quality.RETRAINED} | 10 |" in md


def test_only_evaluation_options_reach_the_retrained_reference():
    extra = ["--max_steps", "10", "--max_eval_rows", "16", "--max_new_tokens=8", "--beta", "0.1"]
    assert quality._evaluation_options(extra) == ["--max_eval_rows", "16", "--max_new_tokens=8"]
