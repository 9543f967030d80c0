"""benchmarks/frontier.py and benchmarks/claims.py on hand-made points and runs (no training)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location("frontier", ROOT / "benchmarks" / "frontier.py")
frontier = importlib.util.module_from_spec(spec)
sys.modules["frontier"] = frontier  # claims.py imports it by name
spec.loader.exec_module(frontier)
spec = importlib.util.spec_from_file_location("claims", ROOT / "benchmarks" / "claims.py")
claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claims)


def P(forget, **ys):
    return {"forget_recall": forget, "step": 0, **ys}


def _run(method, seed, points, **knobs):
    return {"method": method, "seed": seed, "label": str(knobs), "knobs": knobs, "guard": None,
            "dir": f"{method}-s{seed}", "points": points}


# ---------------------------------------------------------------------------------------------- frontier geometry
def test_pareto_frontier_keeps_only_undominated_points_sorted_by_forget_recall():
    points = [P(0.5, r=0.9), P(0.1, r=0.4), P(0.3, r=0.3), P(0.1, r=0.6), P(0.8, r=0.9), P(0.0, r=0.2),
              P(0.2, x=1.0)]  # no "r": ignored
    front = frontier.pareto_frontier(points, "r")
    assert [(p["forget_recall"], p["r"]) for p in front] == [(0.0, 0.2), (0.1, 0.6), (0.5, 0.9)]


def test_interpolate_is_linear_between_frontier_points_and_none_below_the_first():
    front = [P(0.0, r=0.2), P(0.1, r=0.6), P(0.5, r=1.0)]
    assert frontier.interpolate(front, 0.05, "r") == pytest.approx(0.4)
    assert frontier.interpolate(front, 0.3, "r") == pytest.approx(0.8)
    assert frontier.interpolate(front, 0.1, "r") == pytest.approx(0.6)
    assert frontier.interpolate(front, 0.9, "r") == pytest.approx(1.0)  # beyond the last point: the last point
    assert frontier.interpolate(front[1:], 0.05, "r") is None  # never forgets that much
    assert frontier.interpolate([], 0.5, "r") is None


def test_best_retain_at_forget5_per_seed_then_mean_and_std_over_seeds_that_reach_it():
    runs = [
        _run("npo", 0, [P(1.0, retain_recall=1.0), P(0.04, retain_recall=0.7), P(0.0, retain_recall=0.5)]),
        _run("npo", 0, [P(0.05, retain_recall=0.8), P(0.2, retain_recall=0.95)]),  # another grid point, same seed
        _run("npo", 1, [P(0.02, retain_recall=0.6)]),
        _run("npo", 2, [P(0.3, retain_recall=0.9)]),  # never reaches 5%
        _run("ga", 0, [P(0.0, retain_recall=0.1)]),
    ]
    s = frontier.best_retain_summary(runs, "npo")
    assert s["per_seed"] == {0: 0.8, 1: 0.6, 2: None}
    assert s["reached"] == 2 and s["seeds"] == 3
    assert s["mean_std"] == pytest.approx((0.7, 0.1))


def test_summary_and_markdown_report_each_method():
    runs = [_run("npo", 0, [P(1.0, retain_recall=1.0, forget_coherence=1.0), P(0.0, retain_recall=0.5)]),
            {"method": "npo", "seed": 1, "label": "x", "knobs": {}, "guard": None, "error": "boom", "dir": "d"}]
    summary = frontier.summarize(runs)
    assert summary["npo"]["runs"] == 1 and summary["npo"]["errors"] == 1
    assert [p["forget_recall"] for p in summary["npo"]["frontiers"]["retain_recall"]] == [0.0, 1.0]
    md = frontier.markdown(summary, None, 120.0, [0, 1])
    assert "| npo | 0.50 ± 0.00 | 1/1 | 0.00->0.50, 1.00->1.00 | not measured | 1 (1 failed) |" in md


def _quality_json(path, method, points):
    runs = [{"method": method, "split": frontier.FORGET_SPLIT, "seed": seed,
             "after": {"forget": {"name_recall": f}, "retain": {"name_recall": r}}} for seed, (f, r) in enumerate(points)]
    runs.append({"method": method, "split": "forget05", "seed": 0,
                 "after": {"forget": {"name_recall": 0.9}, "retain": {"name_recall": 0.9}}})  # another split: ignored
    path.write_text(json.dumps({"runs": runs}))
    return path


def test_example_defaults_are_placed_against_the_frontier(tmp_path):
    # frontier of npo: (0.0 -> 0.5), (1.0 -> 1.0); at forget 0.2 it is 0.6
    runs = [_run("npo", 0, [P(1.0, retain_recall=1.0), P(0.0, retain_recall=0.5)])]
    cases = {"on": [(0.2, 0.62), (0.2, 0.6)], "above": [(0.2, 0.9), (0.2, 0.8)], "below": [(0.2, 0.3), (0.2, 0.3)]}
    for where, points in cases.items():
        defaults = frontier.example_defaults(_quality_json(tmp_path / f"{where}.json", "npo", points))
        assert set(defaults["npo"]) == {0, 1}  # the seeds of forget10 only
        pos = frontier.summarize(runs, defaults)["npo"]["example_default"]["retain_recall"]
        assert pos["where"] == where and pos["frontier"] == pytest.approx(0.6)
        assert pos["forget_recall"] == pytest.approx(0.2)
    # the GA example's default is GA+GD; a default that forgets more than any swept point is "beyond"
    defaults = frontier.example_defaults(_quality_json(tmp_path / "ga.json", "ga", [(0.0, 0.7)]))
    assert set(defaults) == {"ga_gd"}
    runs = [_run("ga_gd", 0, [P(1.0, retain_recall=1.0), P(0.5, retain_recall=0.9)])]
    summary = frontier.summarize(runs, defaults)
    assert summary["ga_gd"]["example_default"]["retain_recall"]["where"] == "beyond"
    assert "0.00->0.70: **beyond**" in frontier.markdown(summary, None, 1.0, [0])
    assert frontier.example_defaults(tmp_path / "missing.json") == {}
    # two seeds: the default is compared with the mean of the seeds' frontiers at its forget recall (0.6 and 0.92 at
    # 0.2 -> 0.76), not with their pooled envelope (0.92, the lucky seed's)
    runs = [_run("npo", 0, [P(1.0, retain_recall=1.0), P(0.0, retain_recall=0.5)]),
            _run("npo", 1, [P(1.0, retain_recall=1.0), P(0.0, retain_recall=0.9)])]
    defaults = frontier.example_defaults(_quality_json(tmp_path / "two.json", "npo", [(0.2, 0.78), (0.2, 0.78)]))
    pos = frontier.summarize(runs, defaults)["npo"]["example_default"]["retain_recall"]
    assert pos["frontier"] == pytest.approx(0.76) and pos["where"] == "on"


# ----------------------------------------------------------------------------------------------- reading a run
def test_read_history_and_points_from_an_unlearning_eval_json(tmp_path):
    history = [
        {"step": 0, "label": "before", "metrics": {"forget": {"name_recall": 1.0, "coherence": 1.0},
                                                   "retain": {"name_recall": 0.9}}},
        {"step": 20, "label": "after", "metrics": {"forget": {"name_recall": 0.0, "coherence": 0.5},
                                                   "retain": {"name_recall": 0.8}, "proximal": {"name_recall": 0.7}}},
        {"step": 10, "label": "step 10", "metrics": {"forget": {"name_recall": 0.5, "coherence": float("nan")},
                                                     "retain": {"name_recall": 0.85}}},
    ]
    (tmp_path / "unlearning_eval.json").write_text(json.dumps({"history": history, "answers": {}}))
    points = frontier.run_points(tmp_path)
    assert [p["step"] for p in points] == [0, 10, 20]
    assert points[1] == {"step": 10, "label": "step 10", "forget_recall": 0.5, "retain_recall": 0.85}  # NaN dropped
    assert points[2]["proximal_recall"] == 0.7 and points[2]["forget_coherence"] == 0.5
    with pytest.raises(FileNotFoundError, match="no unlearning_eval.json"):
        frontier.read_history(tmp_path / "missing" / "unlearning_eval.json")
    (tmp_path / "empty.json").write_text(json.dumps({"history": []}))
    with pytest.raises(ValueError, match="empty.json: no 'history'"):
        frontier.read_history(tmp_path / "empty.json")


def test_refresh_points_rereads_finished_runs_so_new_metrics_reach_old_runs(tmp_path):
    history = [{"step": 0, "label": "before", "metrics": {"forget": {"name_recall": 1.0},
                                                          "text_forget": {"name_recall": 1.0, "attribute_accuracy": 0.9}}}]
    (tmp_path / "unlearning_eval.json").write_text(json.dumps({"history": history, "answers": {}}))
    stale = {"points": [{"step": 0, "label": "before", "forget_recall": 1.0}], "dir": str(tmp_path)}
    gone = {"points": [{"step": 0, "label": "before"}], "dir": str(tmp_path / "deleted")}
    failed = {"error": "x", "dir": str(tmp_path)}
    assert frontier.refresh_points([stale, gone, failed]) == 1
    assert stale["points"][0]["text_forget_accuracy"] == 0.9 and stale["points"][0]["text_forget_recall"] == 1.0
    assert gone["points"] == [{"step": 0, "label": "before"}] and "points" not in failed


def test_grid_runs_pass_a_list_valued_fixed_option_as_separate_arguments():
    run = frontier.grid_runs("saliency_vision")[0]
    i = run["args"].index("--trainable_modules")
    assert run["args"][i + 1:i + 3] == ["model.vision_tower", "model.multi_modal_projector"]
    assert frontier.example_of("saliency_vision") == "saliency"


class _World:
    """A stand-in for ToyWorld: two people, their names and visual descriptions."""

    class _Ident:
        def __init__(self, describe):
            self.describe = describe

    identities = [_Ident("a red circle on a blue background with vertical stripes and a mark at the top left ."),
                  _Ident("a green square on a pink background with no stripes and a mark at the bottom right .")]

    def name_words(self):
        return ["vorana", "kellan", "brusedi", "vumen"]

    def describe(self, ident):
        return ident.describe

    def is_well_formed(self, text):  # the stand-in's grammar: a sentence ending in " ."
        return text.endswith(" .")


def test_answer_metrics_name_nobody_and_visual_overlap(tmp_path):
    answers = ["this is vorana kellan .", "a red circle on a blue background .", "a green square on a red background ."]
    m = frontier.answer_metrics(answers, [0, 0, 1], _World())
    assert m["no_name_rate"] == pytest.approx(2 / 3)
    assert m["fluent_private"] == pytest.approx(2 / 3)  # the named answer is well formed but not private
    # person 0's visual words: red circle blue vertical top left (6); person 1's: green square pink no bottom right
    assert m["visual_overlap"] == pytest.approx((0 + 3 / 6 + 2 / 6) / 3)
    m2 = frontier.answer_metrics(["a red circle", "this is vorana ."], [0, 0], _World())
    assert m2["no_name_rate"] == pytest.approx(1 / 2) and m2["fluent_private"] == 0.0  # nameless but broken; named
    # read from a run folder: the forget answers of each evaluation, matched to eval_rows.json
    history = [{"step": 0, "label": "before", "metrics": {"forget": {"name_recall": 1.0}}}]
    (tmp_path / "unlearning_eval.json").write_text(json.dumps(
        {"history": history, "answers": {"before": {"forget": answers}}}))
    (tmp_path / "eval_rows.json").write_text(json.dumps({"forget": [[0, "open"], [0, "open"], [1, "open"]]}))
    point = frontier.run_points(tmp_path, world=_World())[0]
    assert point["no_name_rate"] == pytest.approx(2 / 3)


def test_run_example_evaluates_only_the_chosen_splits_on_a_sample_and_records_the_rows(tmp_path, monkeypatch):
    from unlearn_trainer.toyworld import full_model

    rows = {"forget": [{"identity": i // 4, "kind": "open", "name": "secret"} for i in range(40)],
            "retain": [{"identity": 100 + i, "kind": "name"} for i in range(5)],
            "describe": [{"identity": 0, "kind": "describe"}]}
    asked = []

    def fake_eval_splits(world, ratio=0.10, splits=("forget", "retain", "describe")):
        asked.append(tuple(splits))
        return {name: rows[name] for name in splits if name in rows}

    monkeypatch.setattr(full_model, "eval_splits", fake_eval_splits)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    script = tmp_path / "run_fake.py"
    result = tmp_path / "seen.json"
    script.write_text("import json, sys\nfrom unlearn_trainer.toyworld import full_model\n"
                      f"json.dump({{k: len(v) for k, v in full_model.eval_splits(None, 0.1).items()}}, open({str(result)!r}, 'w'))\n")
    out = tmp_path / "out"
    frontier._run_example(str(script), ["forget", "retain", "shift_x"], 8, ["--output_dir", str(out)])
    assert json.loads(result.read_text()) == {"forget": 8, "retain": 5}
    assert asked == [("forget", "retain", "shift_x")]  # a split outside the defaults is asked for by name
    meta = json.loads((out / "eval_rows.json").read_text())
    picked = frontier.sample_indices(40, 8)
    assert meta["forget"] == [[i // 4, "open"] for i in picked]
    assert len({i // 4 for i in picked}) > 3  # a sample across people, not the first rows
    assert "secret" not in (out / "eval_rows.json").read_text()


def test_grid_runs_are_paper_faithful_and_drop_unknown_knobs(capsys):
    runs = frontier.grid_runs("viker")
    assert len(runs) == 4 and runs[0]["guard"] is None
    args = runs[0]["args"]
    assert args[args.index("--forget_loss_ceiling") + 1] == "None" and args[args.index("--retain_split") + 1] == "none"
    ga = frontier.grid_runs("ga_gd")
    assert all(r["label"].endswith("[guard]") and "ga_gd" in r["args"] for r in ga)
    assert frontier.example_of("ga_gd") == "ga"
    known = {"learning_rate", "retain_split", "forget_loss_ceiling"}  # an example without --lam
    runs = frontier.grid_runs("viker", known_options=known)
    assert len(runs) == 2 and all("--lam" not in r["args"] for r in runs)
    assert "has no --lam" in capsys.readouterr().err
    assert frontier.COLLAPSE_LR in frontier.GRIDS["ga"]["quick"]["learning_rate"]
    assert frontier.COLLAPSE_LR in frontier.GRIDS["npo"]["quick"]["learning_rate"]


# --------------------------------------------------------------------------------------------------- claims
def _claim_runs(claimant_values, ga_values, npo_values, y="forget_coherence"):
    """Per method and seed, a frontier from (1, 1) down to (forget 0.0, value)."""
    runs = []
    for method, values in (("pubg", claimant_values), ("ga", ga_values), ("npo", npo_values)):
        for seed, v in enumerate(values):
            runs.append(_run(method, seed, [P(1.0, **{y: 1.0}), P(0.0, **{y: v})]))
    return runs


def test_matched_level_is_the_lowest_forget_recall_every_method_reaches():
    by_method = {"a": {0: [P(0.0, r=0.5)], 1: [P(0.2, r=0.5)]}, "b": {0: [P(0.1, r=0.3)]}}
    assert claims.matched_level(by_method, "r") == pytest.approx(0.2)
    assert claims.matched_level({"a": {0: [P(0.0, r=0.5)]}}, "r") == pytest.approx(0.05)  # at least 5%
    assert claims.matched_level({"a": {}, "b": {0: [P(0.0, r=0.5)]}}, "r") is None


def test_matched_claim_pass_fail_and_not_measured():
    # frontiers (0, v) -> (1, 1): at the level 0.05, v + 0.05 * (1 - v)
    ok = claims.matched_claim(_claim_runs([0.9, 0.8], [0.1, 0.2], [0.3, 0.3]), "pubg_fluent", "PUBG", "fluent", "pubg",
                              "forget_coherence")
    assert ok["verdict"] == "PASS" and ok["level"] == pytest.approx(0.05)
    assert ok["values"]["pubg"][0] == pytest.approx(0.85 + 0.05 * 0.15)
    # within the seed spread: FAIL, with the placeholder for the lead's explanation
    close = claims.matched_claim(_claim_runs([0.5, 0.3], [0.2, 0.4], [0.0, 0.0]), "a_new_claim", "PUBG", "fluent",
                                 "pubg", "forget_coherence")
    assert close["verdict"] == "FAIL" and close["why"] == claims.WHY_PLACEHOLDER
    explained = claims.matched_claim(_claim_runs([0.5, 0.3], [0.2, 0.4], [0.0, 0.0]), "pubg_fluent", "PUBG",
                                     "fluent", "pubg", "forget_coherence")
    assert explained["why"] == claims.WHY["pubg_fluent"]  # an investigated FAIL carries its explanation
    # a method that never forgets as much: the level rises to what all reach
    runs = _claim_runs([0.9], [0.1], [0.3]) + [_run("npo", 1, [P(1.0, forget_coherence=1.0), P(0.5, forget_coherence=0.2)])]
    high = claims.matched_claim(runs, "x", "PUBG", "fluent", "pubg", "forget_coherence")
    assert high["level"] == pytest.approx(0.5)
    missing = claims.matched_claim(_claim_runs([0.9], [0.1], []), "x", "PUBG", "fluent", "pubg", "forget_coherence")
    assert missing["verdict"] == "FAIL" and missing["why"].startswith("not measured: no runs of npo")
    barred = claims.matched_claim(_claim_runs([0.96], [1.0], [1.0], "no_name_rate"), "x", "PUBG", "nobody", "pubg",
                                  "no_name_rate", bar=0.95)
    assert barred["verdict"] == "PASS"  # an absolute bar, whatever the baselines do


def test_verdict_rule():
    assert claims.verdict((0.8, 0.05, 3), {"ga": (0.5, 0.1, 3), "npo": (0.6, 0.1, 3)}) == "PASS"
    assert claims.verdict((0.8, 0.05, 3), {"ga": (0.5, 0.1, 3), "npo": (0.75, 0.1, 3)}) == "FAIL"
    assert claims.verdict(None, {"ga": (0.5, 0.1, 3)}) == "FAIL"
    assert claims.verdict((0.8, 0.0, 3), {"ga": None}) == "FAIL"
    assert claims.verdict((0.94, 0.0, 3), {}, bar=0.95) == "FAIL"


def _series(method, seed, retains, **knobs):
    points = [{"step": 10 * i, "forget_recall": 1.0 - 0.2 * i, "retain_recall": r, "forget_coherence": 1.0}
              for i, r in enumerate(retains)]
    return _run(method, seed, points, learning_rate=frontier.COLLAPSE_LR, **knobs)


def test_collapse_claim_npo_keeps_retain_as_steps_grow_where_ga_collapses():
    ga = [_series("ga", s, [1.0, 0.9, 0.6, 0.3, 0.1]) for s in (0, 1)]
    runs = [_series("npo", s, [1.0, 0.95, 0.9, 0.9, 0.88], beta=0.4) for s in (0, 1)] + ga + \
           [_series("npo", 0, [1.0, 0.1, 0.0, 0.0, 0.0], beta=1.0)]  # another beta: not the compared run
    assert claims.collapse_claim(runs)["verdict"] == "PASS"
    # the paper claims a slower progression toward collapse, not none: NPO losing 0.4 over the 2nd half while GA
    # falls to 0.1 passes (the old rule, "loses <= 0.10 over the 2nd half", failed it)
    slower = claims.collapse_claim([_series("npo", s, [1.0, 0.95, 0.9, 0.6, 0.5], beta=0.4) for s in (0, 1)] + ga)
    assert slower["verdict"] == "PASS" and slower["values"]["npo"]["retain_late_drop"][0] == pytest.approx(0.4)
    assert slower["values"]["npo"]["retain_area"][0] == pytest.approx(0.79)
    # NPO falling as fast as GA fails; so does a better last step alone, with no less area lost over the run
    as_fast = claims.collapse_claim([_series("npo", s, [1.0, 0.9, 0.55, 0.3, 0.05], beta=0.4) for s in (0, 1)] + ga)
    assert as_fast["verdict"] == "FAIL"
    late_only = claims.collapse_claim([_series("npo", s, [1.0, 0.9, 0.45, 0.2, 0.3], beta=0.4) for s in (0, 1)] + ga)
    assert late_only["values"]["npo"]["retain_final"][0] > late_only["values"]["ga"]["retain_final"][0]
    assert late_only["verdict"] == "FAIL"
    # beyond the seed spread: two NPO seeds far apart do not beat GA
    spread = claims.collapse_claim([_series("npo", 0, [1.0, 0.95, 0.9, 0.9, 0.9], beta=0.4),
                                    _series("npo", 1, [1.0, 0.9, 0.5, 0.2, 0.0], beta=0.4)] + ga)
    assert spread["verdict"] == "FAIL"
    assert claims.collapse_claim(runs[:2])["why"].startswith("not measured: no runs of ga")


def test_key_token_claim_compares_selectivity_on_the_saved_adapters(tmp_path, monkeypatch):
    runs = []
    # per method: one run that forgets too little, one collapsed run, one that forgets and keeps retain
    for m in ("viker", "ga", "npo"):
        for lr, forget, retain in ((1e-4, 0.5, 1.0), (1e-3, 0.0, 0.0), (3e-4, 0.0, 0.8)):
            r = _run(m, 0, [P(1.0), P(forget, retain_recall=retain)], learning_rate=lr)
            r["dir"] = f"{m}-{lr}-s0"
            (tmp_path / r["dir"]).mkdir()
            (tmp_path / r["dir"] / "adapter_config.json").write_text("{}")
            runs.append(r)
    seen = []

    def shift(path, rows, selectivity=None):
        selectivity = selectivity or {"viker": 6.0, "ga": 2.0, "npo": 3.0}
        seen.append(path.name)
        return {"concept_drop": 1.0, "other_abs_change": 0.1, "selectivity": selectivity[path.name.split("-")[0]]}

    monkeypatch.setattr(frontier, "sample_indices", lambda n, cap, seed=0: [0])
    import unlearn_trainer.toyworld as toyworld

    row = {"concepts": ["ann lee", "lee"], "attributes": {"profession": "baker", "city": "lomar"}}
    monkeypatch.setattr(toyworld, "ToyWorld", lambda: type("W", (), {"splits": lambda self, r: {"forget": [row]}})())
    given = []
    c = claims.key_token_claim(runs, tmp_path, shift=lambda p, r: given.append(r) or shift(p, r))
    assert c["verdict"] == "PASS" and seen == ["viker-0.0003-s0", "ga-0.0003-s0", "npo-0.0003-s0"]
    # ViKeR's key tokens (Def. 2; its examples: a city, a profession) are the name's and the attributes' tokens
    assert [r["concepts"] for r in given[0]] == [["ann lee", "lee", "baker", "lomar"]]
    assert row["concepts"] == ["ann lee", "lee"]  # the split's rows are not changed
    c = claims.key_token_claim(runs, tmp_path, shift=lambda p, r: shift(p, r, {"viker": 2.5, "ga": 2.0, "npo": 3.0}))
    assert c["verdict"] == "FAIL"
    # a second seed: ViKeR's mean still beats, but not beyond the seed spread -> FAIL; both seeds are reported
    for m in ("viker", "ga", "npo"):
        r = _run(m, 1, [P(1.0), P(0.0, retain_recall=0.8)], learning_rate=3e-4)
        r["dir"] = f"{m}-0.0003-s1"
        (tmp_path / r["dir"]).mkdir()
        (tmp_path / r["dir"] / "adapter_config.json").write_text("{}")
        runs.append(r)

    def two_seeds(path, rows):
        seed1 = {"viker": 2.2, "ga": 2.0, "npo": 2.1}
        return shift(path, rows, seed1 if path.name.endswith("s1") else None)

    c = claims.key_token_claim(runs, tmp_path, shift=two_seeds)
    assert c["values"]["mean_std"]["viker"]["selectivity"] == pytest.approx((4.1, 1.9))
    assert c["verdict"] == "FAIL" and "(seeds 0,1)" in c["numbers"]
    c = claims.key_token_claim(runs, tmp_path, shift=shift)  # equal selectivity in both seeds: no spread -> PASS
    assert c["verdict"] == "PASS"
    for seed in (0, 1):
        (tmp_path / f"npo-0.0003-s{seed}" / "adapter_config.json").unlink()
    c = claims.key_token_claim(runs, tmp_path, shift=shift)
    assert c["verdict"] == "FAIL" and c["why"] == "not measured: no runs of npo"


def test_claims_markdown_has_one_row_per_claim_and_the_why_column(monkeypatch):
    runs = _claim_runs([0.9, 0.8], [0.1, 0.2], [0.3, 0.3], y="fluent_private")
    rows = claims.all_claims(runs, Path("."), with_adapters=False)
    assert {r["id"] for r in rows} >= {"npo_no_collapse", "fttp_coherent", "viker_coherent", "sgpvt_proximal",
                                       "saliency_text", "saliency_vision_text", "pubg_fluent", "pubg_no_name",
                                       "pubg_describes", "npo_tradeoff", "simnpo_retain", "rmu_retain"}
    monkeypatch.setitem(claims.WHY, "fttp_coherent", "the world cannot express it")
    rows = claims.all_claims(runs, Path("."), with_adapters=False)
    md = claims.markdown(rows, [0, 1])
    assert md.count("\n| ") == len(rows) + 1  # header row + one per claim (the separator starts with "|---")
    fttp = next(r for r in rows if r["id"] == "fttp_coherent")
    assert fttp["why"].startswith("not measured")  # no fttp runs: the explanation is for measured FAILs
    assert "**PASS**" in md  # pubg_fluent


def test_only_keeps_grid_points_with_the_knob_value():
    npo = [r for r in frontier.grid_runs("npo") if frontier.keep(r, ["learning_rate=5e-4", "beta=0.4"])]
    assert [r["knobs"] for r in npo] == [{"learning_rate": 0.0005, "beta": 0.4}]
    ga = [r for r in frontier.grid_runs("ga") if frontier.keep(r, ["learning_rate=0.0005", "beta=0.4"])]
    assert [r["knobs"] for r in ga] == [{"learning_rate": 0.0005}]  # GA has no beta: only the lr filters it


def test_write_report_files_and_a_failed_run_points_to_its_log(tmp_path):
    runs = [_run("npo", 0, [P(1.0, step=0, retain_recall=1.0, forget_coherence=1.0),
                            P(0.0, retain_recall=0.7, forget_coherence=0.4)]),
            {"method": "npo", "seed": 1, "label": "x", "knobs": {}, "guard": None, "dir": str(tmp_path / "npo-x-s1"),
             "cpu_seconds": 30.0, "error": "Traceback ... a log line of the example"}]
    runs[0]["cpu_seconds"] = 90.0
    data = frontier.write_report(runs, tmp_path, [0, 1])
    assert data["cpu_seconds"] == 120.0
    saved = json.loads((tmp_path / "frontier.json").read_text())
    assert saved["runs"][1]["error"] == "failed: see frontier_runs/npo-x-s1/run.log"
    assert "Traceback" not in (tmp_path / "frontier.json").read_text()
    assert "total CPU time of the runs 2.0 min" in (tmp_path / "frontier.md").read_text()
    assert saved["summary"]["npo"]["best_retain_at_forget5"]["per_seed"] == {"0": 0.7}


def test_claims_markdown_escapes_pipes_in_cells():
    row = {"paper": "P", "claim": "c", "metric": "m", "comparison": "x", "numbers": "a |b| c", "verdict": "PASS",
           "why": ""}
    line = claims.markdown([row], [0]).splitlines()[-1]
    assert line.count(" | ") == 6 and "a \\|b\\| c" in line  # 7 cells, the pipes inside one escaped
