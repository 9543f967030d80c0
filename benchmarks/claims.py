"""Each paper's central claim, tested at matched forgetting on the frontier runs -> ``results/claims.md``.

    python benchmarks/frontier.py          # first: the runs (results/frontier.json, frontier_runs/)
    python benchmarks/claims.py            # then: the claims table (results/claims.md, claims.json)

**Matched forgetting.** Methods forget at different speeds, so a claim compares them at the same forget name
recall: each seed's Pareto frontier of (forget recall, the claim's metric) is interpolated (straight lines between
its points, as plotted) at the level ``L = max(5%, the lowest forget recall every compared method reaches in every
seed)``, then mean ± population std over seeds. A claim PASSes when the claimant's mean beats every baseline's mean
by more than the larger of their seed spreads (std), or meets its absolute bar; a compared method that was not run
makes the claim FAIL with "not measured". Baselines are GA (forget only) and NPO, as in the papers.

Metrics (all "higher is better" except forget recall): the evaluator's name recall (forget / retain / proximal /
text_forget splits) and forget coherence (``ToyWorld.is_well_formed``), and two computed from the forget-split
answers by ``frontier.answer_metrics``: ``no_name_rate`` (answers naming nobody of the world) and
``visual_overlap`` (share of the pictured person's visual words, from ``ToyWorld.describe``, in the answer).
ViKeR's Prop. 3 is measured on the saved adapters: the change of per-token log-probs of forget answers, with the
adapter vs without it (the full model), on key tokens vs the other tokens. Key tokens (ViKeR Def. 2: the tokens
whose ideal post-unlearning distribution has no person-specific peak; the paper's examples are a city and a
profession) are the answer tokens that spell the person's name or one of their attributes (profession, city), found
by ``unlearn_trainer.data.concepts``; the template words are the normal tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import frontier  # noqa: E402 - the frontier geometry and the run records

RESULTS = frontier.RESULTS
BASELINES = ("ga", "npo")
#: The baselines of a claimant trained with a retain set: GA+GD and NPO+RT (each with the retain NLL).
RETAIN_BASELINES = ("ga_gd", "npo_rt")
NOT_MEASURED = "not measured"
#: Explanations of FAILs, from the investigation (issue 15, step 3): each says which of the three it is -- the world
#: cannot express the claim, the implementation / defaults miss it, or the claim does not hold here -- and the
#: evidence (numbers from seeded runs; benchmarks/README.md, "Paper claims: investigation", has the details). A FAIL
#: without an entry says "to investigate". An entry is shown only when the claim FAILs.
_SATURATED = (
    "The world cannot express it: with a retain term (NLL, KL or RMU's activation MSE) every compared method keeps the "
    "retain people at 1.00 ± 0.00 at matched forgetting, on the retain rows it trains on and on new pictures of them "
    "(held-out views, the metric here; NPO+RT too, GA+GD 0.78), so nothing separates them. A harder retain test would "
    "(e.g. retain questions in paraphrase, a larger forget ratio, look-alike-heavy retain sets).")
WHY: dict[str, str] = {
    "fttp_coherent": (
        "Does not hold here, and the world cannot show FTTP's advantage. The concept mask and the GD term are right "
        "(the mask covers exactly the name's pieces on all 64 forget rows; the template tokens keep NLL ~0.3). What "
        "breaks is the text generated in place of the name (a look-alike's name, then description fragments and "
        "loops), which FTTP's objective does not constrain; GA breaks the same way (evaluated every step, seed 0: "
        "coherence 0.77 vs GA 0.79 at forget recall 5%). ToyWorld's answers are short templates with no "
        "natural-language frame for GA to destroy and no trained fluent fallback for an unknown person; a world "
        "with longer answer frames around the name and an \"i do not know who this is\" answer for never-seen "
        "people would let the claim be tested."),
    "sgpvt_proximal": (
        "Does not hold here (implementation checked against the paper: top-K by attention, cosine band, "
        "damage boundary from 100 distant images, norm-keeping rotation, KL to the adapter-disabled teacher). "
        "The perturbed visual tokens are not look-alikes to the model: the full model still names the forgotten "
        "person on 47/48 of them at the band's lowest similarity (real look-alikes sit at token cosine 0.76 and are "
        "named correctly), so the distillation only slows forgetting and gives the look-alikes nothing. A world "
        "whose family looks vary continuously might change that (untested)."),
    "saliency_text": (
        "Does not hold here (fact accuracy 0.76 ± 0.11 vs GA 0.73, NPO 0.81: within the seed spread). The Fisher "
        "mask of the memorised initial model selects ~61% of the weights (beta 1; "
        "beta 20: 24%), and the text questions about the forgotten are 8 of the preserved set's 800 rows, so "
        "forgetting through the language model takes the text answers with it (they never recover: nothing in "
        "the loss holds them). Training only the vision side (the paper's Table 2 ablation, row below) keeps "
        "them by construction, not by the mask."),
    "saliency_vision_text": (
        "Vision-side training keeps the text answers by construction (text questions never pass through the "
        "vision tower or projector); a FAIL here means it did not forget within the sweep or cost retain recall "
        "(see the numbers)."),
    "viker_key_tokens": (
        "Not beyond the seed spread: it holds on 2 of 3 seeds. ViKeR's selectivity is the steadiest (34.6 / 38.3 / "
        "33.9, key-token drop 8.5 every seed) and beats GA (9.4 / 8.5) and NPO (20.8 / 16.1) on seeds 0 and 1; on seed "
        "2 the matched GA and NPO runs barely moved anything (other tokens 0.07 / 0.03 mean |change|, key tokens 5.0 / "
        "2.9), so their ratio is larger (70.5 / 107.8). The ratio is unstable when its denominator is near 0; the "
        "measurement (key tokens = name, profession, city, Def. 2; adapter on vs off) was checked."),
    "idk_dpo_fluent": (
        "Does not hold here. With the same single refusal that IdkNLL answers whole (coherence 1.00), IdkDPO's "
        "answers degenerate into repeated refusal fragments around the question's words (every lr x beta of the "
        "sweep; the demo default: forget coherence 0.00 ± 0.00, 3 seeds): DPO's margin also grows by pushing both "
        "answers down (its known failure: the chosen likelihood falls with the rejected one), and nothing holds "
        "the refusal up but the margin."),
    "simnpo_retain": _SATURATED,
    "rmu_retain": _SATURATED,
    "scrub_retain": _SATURATED,
    "pubg_fluent": (
        "Measured over every forget question kind, while PUBG trains only the open query (\"tell me about this "
        "person\"); on the other kinds its answers are broken descriptions. On the open query alone its answers "
        "are the picture's description (coherence 1.00 vs GA 0.76 / NPO 0.81, seed 0). Before the o* fix the "
        "demo's guidance mixed the person's job and city into the description."),
}
WHY_PLACEHOLDER = "to investigate"

#: (id, paper, claim, claimant, metric key, absolute bar or None[, baselines]). The metric is compared at matched
#: forgetting, against GA and NPO unless the claim names its own baselines.
MATCHED_CLAIMS = (
    ("fttp_coherent", "FTTP", "forget answers stay well formed", "fttp", "forget_coherence", None),
    ("viker_coherent", "ViKeR", "forget answers stay well formed", "viker", "forget_coherence", None),
    ("sgpvt_proximal", "SGPVT", "look-alike (proximal) people are kept", "sgpvt", "proximal_recall", None),
    ("saliency_text", "MMUnlearner", "text-only knowledge of the forgotten is kept while visual recognition goes",
     "saliency", "text_forget_accuracy", None),
    ("saliency_vision_text", "MMUnlearner (Table 2: vision side trained)", "text-only knowledge of the forgotten is "
     "kept while visual recognition goes", "saliency_vision", "text_forget_accuracy", None),
    ("pubg_fluent", "PUBG", "answers on forgotten images are fluent (and name nobody)", "pubg", "fluent_private",
     None),
    ("pubg_no_name", "PUBG", "answers on forgotten images name nobody", "pubg", "no_name_rate", 0.95),
    ("pubg_describes", "PUBG", "answers on forgotten images describe what is visible", "pubg", "visual_overlap",
     None),
    ("npo_tradeoff", "NPO", "a better forget / retain trade-off than GA", "npo", "retain_recall", None, ("ga",)),
    # The baselines of issue 16, each with the point its paper makes (an optional 7th item: the baselines compared).
    # A method trained with a retain set is compared with the retain-set baselines (GA+GD, NPO+RT), not with the
    # forget-only GA and NPO, whose retain recall has no data holding it.
    ("idk_nll_fluent", "IdkNLL (TOFU)", "forget answers become well-formed refusals", "idk_nll", "forget_coherence",
     None, RETAIN_BASELINES),
    ("idk_dpo_fluent", "IdkDPO (TOFU)", "forget answers become well-formed refusals", "idk_dpo", "forget_coherence",
     None, RETAIN_BASELINES),
    ("simnpo_retain", "SimNPO", "a better forget / retain trade-off than NPO", "simnpo", "retain_heldout_recall",
     None, ("npo_rt",)),
    ("undial_retain", "UNDIAL", "self-distillation keeps the rest of the model (no collapse)", "undial",
     "retain_recall", None),
    ("rmu_retain", "RMU", "retain knowledge kept while the forget knowledge goes", "rmu", "retain_heldout_recall",
     None, RETAIN_BASELINES),
    ("scrub_retain", "SCRUB", "the teacher's retain behaviour is kept while the forget set goes", "scrub",
     "retain_heldout_recall", None, RETAIN_BASELINES),
)


# -------------------------------------------------------------------------------------------- matched forgetting
def frontier_floor(points: list[dict], y: str) -> float | None:
    """The lowest forget recall on the (forget recall, ``y``) frontier of ``points``."""
    front = frontier.pareto_frontier(points, y)
    return front[0][frontier.X] if front else None


def matched_level(by_method: dict[str, dict[int, list[dict]]], y: str, floor: float = frontier.FORGOTTEN) -> float | None:
    """``max(floor, the lowest forget recall every method reaches in every seed)``; None if a method has no points."""
    level = floor
    for per_seed in by_method.values():
        if not per_seed:
            return None
        for points in per_seed.values():
            lowest = frontier_floor(points, y)
            if lowest is None:
                return None
            level = max(level, lowest)
    return level


def at_level(per_seed: dict[int, list[dict]], y: str, level: float) -> tuple[float, float, int] | None:
    """``(mean, std, seeds)`` of each seed's frontier interpolated at forget recall ``level``."""
    values = [v for v in (frontier.interpolate(frontier.pareto_frontier(pts, y), level, y)
                          for pts in per_seed.values()) if v is not None]
    ms = frontier.mean_std(values)
    return None if ms is None else (ms[0], ms[1], len(values))


def verdict(claimant, baselines: dict, bar: float | None = None) -> str:
    """PASS / FAIL of a claimant ``(mean, std, n)`` against baselines ``{name: (mean, std, n)}``: with a ``bar``,
    PASS iff the claimant's mean >= bar; otherwise PASS iff its mean beats every baseline's mean by more than the
    larger of the two stds. Missing numbers: FAIL."""
    if claimant is None:
        return "FAIL"
    if bar is not None:
        return "PASS" if claimant[0] >= bar else "FAIL"
    if not baselines or any(b is None for b in baselines.values()):
        return "FAIL"
    return "PASS" if all(claimant[0] - b[0] > max(claimant[1], b[1]) for b in baselines.values()) else "FAIL"


def _fmt(value) -> str:
    return NOT_MEASURED if value is None else f"{value[0]:.2f} ± {value[1]:.2f}"


def matched_claim(runs: list[dict], cid: str, paper: str, text: str, claimant: str, y: str,
                  bar: float | None = None, baselines=BASELINES) -> dict:
    methods = (claimant, *baselines)
    by_method = {m: frontier.points_by_seed(runs, m) for m in methods}
    level = matched_level(by_method, y)
    values = {m: (None if level is None else at_level(by_method[m], y, level)) for m in methods}
    result = verdict(values[claimant], {b: values[b] for b in baselines}, bar)
    numbers = ", ".join(f"{m} {_fmt(values[m])}" for m in methods)
    if bar is not None:
        numbers += f" (bar: {claimant} >= {bar:g})"
    missing = [m for m in methods if not by_method[m]]
    return {"id": cid, "paper": paper, "claim": text, "metric": f"{y} at forget recall {_level(level)}",
            "comparison": f"{claimant} vs {', '.join(baselines)} at matched forgetting", "numbers": numbers,
            "level": level, "values": values, "verdict": result,
            "why": _why(cid, result, missing)}


def _level(level) -> str:
    return "(no common level)" if level is None else f"{level:.2f}"


def _why(cid: str, result: str, missing: list[str]) -> str:
    if result == "PASS":
        return ""
    if missing:
        return f"{NOT_MEASURED}: no runs of {', '.join(missing)}"
    return WHY.get(cid, WHY_PLACEHOLDER)


# ------------------------------------------------------------------------------------ NPO vs GA over the steps
def series_of(runs: list[dict], method: str, knobs: dict) -> dict[int, list[dict]]:
    """Per seed, the points (in step order) of ``method``'s run whose knobs include ``knobs``."""
    out = {}
    for r in runs:
        if r["method"] == method and "points" in r and all(r["knobs"].get(k) == v for k, v in knobs.items()):
            out[r["seed"]] = sorted(r["points"], key=lambda p: p["step"])
    return out


def late_drop(points: list[dict], y: str) -> float | None:
    """``y`` at the evaluation nearest half the run minus ``y`` at the last: what more steps cost."""
    usable = [p for p in points if y in p]
    if len(usable) < 2:
        return None
    last = usable[-1]
    half = min(usable, key=lambda p: abs(p["step"] - last["step"] / 2))
    return half[y] - last[y]


def retain_area(points: list[dict], y: str = "retain_recall") -> float | None:
    """Mean of ``y`` over a run's evaluations (evenly spaced steps): the area under its curve over the steps, per
    evaluation. A method whose ``y`` falls more slowly as steps grow has the larger area."""
    usable = [p[y] for p in points if y in p]
    return sum(usable) / len(usable) if usable else None


def collapse_claim(runs: list[dict], lr: float = frontier.COLLAPSE_LR) -> dict:
    """NPO's progression toward collapse is slower than GA's (NPO paper: "exponentially slower"): at one lr and the
    same steps, NPO's retain recall beats GA's by more than the larger seed spread both at the last step and as the
    area under its curve over the steps (:func:`retain_area`). The paper claims slower, not none: NPO's own utility
    also falls (its gradient is GA's times a weight that is ~1 while p_theta ~ p_ref and vanishes only once the
    forget answers are far below the reference), so what NPO loses over the run's second half
    (:func:`late_drop`) is reported, not required to be small."""
    npo, ga = series_of(runs, "npo", {"learning_rate": lr, "beta": 0.4}), series_of(runs, "ga", {"learning_rate": lr})
    stats = {}
    for name, series in (("npo", npo), ("ga", ga)):
        final = [pts[-1]["retain_recall"] for pts in series.values() if "retain_recall" in pts[-1]]
        area = [a for a in (retain_area(pts) for pts in series.values()) if a is not None]
        coherence = [pts[-1]["forget_coherence"] for pts in series.values() if "forget_coherence" in pts[-1]]
        drops = [d for d in (late_drop(pts, "retain_recall") for pts in series.values()) if d is not None]
        forget = [pts[-1][frontier.X] for pts in series.values() if frontier.X in pts[-1]]
        stats[name] = {"retain_final": frontier.mean_std(final), "retain_area": frontier.mean_std(area),
                       "coherence_final": frontier.mean_std(coherence), "retain_late_drop": frontier.mean_std(drops),
                       "forget_final": frontier.mean_std(forget)}
    n, g = stats["npo"], stats["ga"]

    beats = all(verdict(n[key], {"ga": g[key]}) == "PASS" for key in ("retain_final", "retain_area"))
    result = "PASS" if beats else "FAIL"
    numbers = "; ".join(f"{m}: forget {_fmt(s['forget_final'])}, retain {_fmt(s['retain_final'])}, retain area "
                        f"{_fmt(s['retain_area'])}, forget coherence {_fmt(s['coherence_final'])}, retain lost over "
                        f"the 2nd half {_fmt(s['retain_late_drop'])}" for m, s in stats.items())
    missing = [m for m, s in (("npo", npo), ("ga", ga)) if not s]
    return {"id": "npo_no_collapse", "paper": "NPO", "claim": "NPO collapses more slowly than GA as steps grow",
            "metric": f"retain recall at the last step and its area over the steps (mean over evaluations), lr "
                      f"{lr:g}, same steps",
            "comparison": "npo (beta 0.4) vs ga over steps; PASS: npo beats ga beyond the seed spread on both",
            "numbers": numbers, "values": stats, "verdict": result, "why": _why("npo_no_collapse", result, missing)}


# ------------------------------------------------------------------------------------------ ViKeR Proposition 3
def token_shift(run_dir: Path, rows: list[dict]) -> dict[str, float]:
    """Mean change of the per-token log-prob of ``rows``' answers (adapter on minus off) on concept tokens (of
    ``row["concepts"]``: :func:`key_token_rows` makes them the key tokens) and on the other answer tokens, and
    ``selectivity`` = concept drop / mean |change| of the other tokens."""
    import torch
    from peft import PeftModel

    from unlearn_trainer import losses
    from unlearn_trainer.data.collator import model_inputs
    from unlearn_trainer.data.concepts import ConceptMaskCollator
    from unlearn_trainer.toyworld.full_model import load_full_model

    model, processor = load_full_model(progress=False)
    model = PeftModel.from_pretrained(model, str(run_dir)).eval()
    batch = ConceptMaskCollator(processor)(rows)
    concept = batch.pop("concept_mask")[:, 1:]
    with torch.no_grad():
        after, mask = losses.token_logprobs(model(**model_inputs(batch)).logits, batch["labels"])
        with model.disable_adapter():
            before, _ = losses.token_logprobs(model(**model_inputs(batch)).logits, batch["labels"])
    delta = after - before
    key, other = concept & mask, mask & ~concept
    concept_drop = float(-delta[key].mean())
    other_change = float(delta[other].abs().mean())
    return {"concept_drop": concept_drop, "other_abs_change": other_change,
            "selectivity": concept_drop / max(other_change, 1e-8)}


def pick_runs(runs: list[dict], methods, seed: int | None = None) -> dict[str, dict]:
    """Per method, the finished run of ``seed`` (default: the method's first seed; its adapter is saved at its last
    step) that keeps most retain recall among those whose last point forgets down to the matched level ``L = max(5%,
    the lowest last-step forget recall every method reaches)``: comparable forgetting, not a collapsed model against
    a working one."""
    final = {}
    for m in methods:
        done = [r for r in runs if r["method"] == m and r.get("points")]
        if done:
            chosen = min(r["seed"] for r in done) if seed is None else seed
            final[m] = [r for r in done if r["seed"] == chosen]
    final = {m: rs for m, rs in final.items() if rs}
    if not final:
        return {}
    last = lambda r, key, default: r["points"][-1].get(key, default)  # noqa: E731
    level = max([frontier.FORGOTTEN] + [min(last(r, frontier.X, 1.0) for r in rs) for rs in final.values()])
    return {m: max((r for r in rs if last(r, frontier.X, 1.0) <= level),
                   key=lambda r: (last(r, "retain_recall", 0.0), -last(r, frontier.X, 1.0)))
            for m, rs in final.items()}


def key_token_rows(rows: list[dict]) -> list[dict]:
    """``rows`` whose ``concepts`` (the name) also hold the person's attribute values (``row["attributes"]``:
    profession, city, ...): ViKeR's key tokens are every identity-dependent token (Def. 2; Fig. 2's key token is a
    city, Fig. 4's a profession), not the name alone. Counted as "other" tokens, the attributes made the drop
    ViKeR aims for look like damage to generic tokens."""
    out = []
    for r in rows:
        names = r.get("concepts") or []
        names = [names] if isinstance(names, str) else list(names)
        attributes = [v for v in (r.get("attributes") or {}).values() if isinstance(v, str) and v.strip()]
        out.append({**r, "concepts": names + [a for a in attributes if a not in names]})
    return out


def key_token_claim(runs: list[dict], runs_dir: Path, baselines=BASELINES, rows: int = 32, shift=token_shift) -> dict:
    """ViKeR Prop. 3: the update sits on key (concept) tokens while generic tokens stay. Per seed, each method's run
    picked by :func:`pick_runs` (its saved adapter) gives a selectivity; PASS when ViKeR's mean over the seeds beats
    every baseline's by more than the larger seed std (the seeds where every method has an adapter)."""
    methods = ("viker", *baselines)
    seeds = sorted({r["seed"] for r in runs if r["method"] in methods and r.get("points")})
    per_seed: dict[int, dict[str, dict]] = {}
    have: set[str] = set()  # methods with a saved adapter in some seed
    forget_rows = None
    for seed in seeds:
        picked = pick_runs(runs, methods, seed)
        paths = {m: runs_dir / Path(picked[m]["dir"]).name for m in methods if m in picked}
        paths = {m: path for m, path in paths.items() if (path / "adapter_config.json").exists()}
        have |= set(paths)
        if len(paths) < len(methods):
            continue
        if forget_rows is None:
            from unlearn_trainer.toyworld import ToyWorld

            split = ToyWorld().splits(0.10)["forget"]
            forget_rows = key_token_rows([split[i] for i in frontier.sample_indices(len(split), rows)])
        per_seed[seed] = {m: {**shift(paths[m], forget_rows), "forget_recall": picked[m]["points"][-1].get(frontier.X)}
                          for m in methods}
    missing = [] if per_seed else ([m for m in methods if m not in have] or list(methods))
    stats = {m: {k: frontier.mean_std([v[m][k] for v in per_seed.values()])
                 for k in ("concept_drop", "other_abs_change", "selectivity", "forget_recall")} for m in methods
             } if per_seed else {}
    result = verdict(stats["viker"]["selectivity"], {b: stats[b]["selectivity"] for b in baselines}) if per_seed \
        else "FAIL"
    numbers = "; ".join(f"{m}: key-token log-prob drop {_fmt(s['concept_drop'])}, other tokens' mean abs. change "
                        f"{_fmt(s['other_abs_change'])}, selectivity {_fmt(s['selectivity'])} (forget recall "
                        f"{_fmt(s['forget_recall'])})" for m, s in stats.items())
    if per_seed:
        numbers += f" (seeds {','.join(map(str, per_seed))})"
    return {"id": "viker_key_tokens", "paper": "ViKeR", "claim": "Prop. 3: key (concept) tokens carry the update, "
            "generic tokens stay", "metric": "per-token log-prob change of forget answers, adapter on vs off: key-token "
            "(name, profession, city) drop / other tokens' mean abs. change", "comparison": "viker vs "
            + ", ".join(baselines) + " (per seed, each one's run keeping most retain recall at matched last-step "
            "forgetting); PASS: viker's mean selectivity beats each baseline's beyond the larger seed std",
            "numbers": numbers or NOT_MEASURED, "values": {"per_seed": per_seed, "mean_std": stats}, "verdict": result,
            "why": _why("viker_key_tokens", result, missing)}


# ----------------------------------------------------------------------------------------------------- report
def all_claims(runs: list[dict], runs_dir: Path, with_adapters: bool = True) -> list[dict]:
    rows = [collapse_claim(runs)]
    rows += [matched_claim(runs, *claim) for claim in MATCHED_CLAIMS]
    if with_adapters:
        rows.insert(3, key_token_claim(runs, runs_dir))
    return rows


def _cell(text) -> str:
    """Text for a Markdown table cell (a "|" would end the cell)."""
    return str(text).replace("|", "\\|")


def markdown(claims: list[dict], seeds) -> str:
    lines = ["# Paper claims on ToyWorld (forget10), at matched forgetting", "",
             f"Generated by `python benchmarks/claims.py` from `frontier.json` (seeds {seeds}). Values: mean ± "
             "population std over seeds. Method and definitions: the docstring of `benchmarks/claims.py`.", "",
             "| paper | claim | metric | comparison | numbers | verdict | why |", "|---|---|---|---|---|---|---|"]
    for c in claims:
        cells = [c["paper"], c["claim"], c["metric"], c["comparison"], c["numbers"], f"**{c['verdict']}**", c["why"]]
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(RESULTS), help="where frontier.json is and claims.md goes")
    parser.add_argument("--no-adapters", action="store_true", help="skip the claims that load saved adapters")
    args = parser.parse_args(argv)
    out = Path(args.output)
    data = json.loads((out / "frontier.json").read_text())
    claims = all_claims(data["runs"], out / "frontier_runs", with_adapters=not args.no_adapters)
    (out / "claims.json").write_text(json.dumps(claims, indent=1, default=str))
    (out / "claims.md").write_text(markdown(claims, data["seeds"]))
    print((out / "claims.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
