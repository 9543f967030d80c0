"""Quality benchmark: every method on the ToyWorld demo at forget 5/10/15%, 3 seeds, one command.

    python benchmarks/quality.py                       # all methods, ratios, seeds (tens of minutes on 2 cores)
    python benchmarks/quality.py --methods npo,ga --ratios forget10 --seeds 0
    python benchmarks/quality.py --resume              # continue a stopped run (finished runs are kept)
    python benchmarks/quality.py --probes cheap        # the cheap robustness probes only (default: all)

Each run is the method's example (``examples/run_<method>.py``) with its ToyWorld defaults (the paper's
defaults scaled to the world), in a fresh subprocess, with ``--seed`` changing the unlearning run (LoRA init,
data order, sampling); the memorizing full model is the same for all runs. Writes to ``benchmarks/results/``:
``quality.json`` (every run), ``quality.md`` (mean ± population std over seeds) and ``quality_tradeoff.png``
(forget vs retain name recall, and forget coherence).

Each run also runs the robustness probes (``--probes``, default all: forget quality and PrivLeak against the
retrained model, MIA AUC, recall after relearning and after 4-bit quantization, under paraphrase and image shifts,
multiple choice by letter and by log-likelihood); the table adds them, with reference rows for the full model (the
probes before unlearning) and the retrained model (``python -m unlearn_trainer.evaluate --evaluate_retrained``,
once per split: the relearning baseline's recall under the same attack).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RESULTS = Path(__file__).resolve().parent / "results"

# (split, metric) pairs reported in the table, in order.
COLUMNS = [
    ("forget", "name_recall"),
    ("generalization", "name_recall"),
    ("retain", "name_recall"),
    ("proximal", "name_recall"),
    ("text_forget", "name_recall"),
    ("text_retain", "name_recall"),
    ("forget", "privacy_leak"),
    ("forget", "coherence"),
    ("retain", "coherence"),
    ("describe", "rougeL_f"),
    ("mc_forget", "mc_letter_acc"),
    ("mc_forget", "mc_loglik_acc"),
    ("mc_retain", "mc_letter_acc"),
    ("mc_retain", "mc_loglik_acc"),
]
#: (probe, metric) pairs of the robustness probes (``robustness.json``, after unlearning); ``{N}`` is the last
#: relearning step, ``{MIA}`` the MIA attack PrivLeak headlines (Min-K%), ``shift``'s are means over the shifts.
ROBUSTNESS_COLUMNS = [
    ("forget_quality", "forget_quality"),
    ("mia", "privleak"),
    ("mia", "auc_{MIA}"),
    ("relearning", "step{N}_forget_heldout_name_recall"),
    ("relearning", "retrained_step{N}_forget_heldout_name_recall"),
    ("quantization", "4bit_forget_name_recall"),
    ("quantization", "4bit_retain_name_recall"),
    ("paraphrase", "forget_name_recall"),
    ("paraphrase", "retain_name_recall"),
    ("shift", "mean_forget_name_recall"),
    ("shift", "mean_retain_name_recall"),
]
#: Methods' names of the reference rows in ``runs.jsonl``.
RETRAINED = "retrained model"


def robustness_values(probes: dict, relearn_steps: str = "0,5,10,20") -> dict[str, float]:
    """``{"probe/metric": value}`` of one run's probe results for :data:`ROBUSTNESS_COLUMNS` (missing ones left
    out): the placeholders resolved, the shift means computed."""
    last = relearn_steps.split(",")[-1].strip()
    mia = probes.get("mia", {})
    headline = next((k.removeprefix("privleak_") for k, v in mia.items()
                     if k.startswith("privleak_") and v == mia.get("privleak")), None)
    if headline is None:  # no retrained model: Min-K% by name
        headline = next((k.removeprefix("auc_") for k in mia if k.startswith("auc_") and "min" in k
                         and not any(s in k for s in ("++", "plus", "pp"))), None)
    shift = probes.get("shift", {})
    for part in ("forget", "retain"):
        values = [v for k, v in shift.items() if k.endswith(f"_{part}_name_recall") and not k.startswith("mean_")]
        if values:
            shift = {**shift, f"mean_{part}_name_recall": sum(values) / len(values)}
    probes = {**probes, "shift": shift}
    out = {}
    for probe, metric in ROBUSTNESS_COLUMNS:
        key = metric.replace("{N}", last).replace("{MIA}", headline or "?")
        value = probes.get(probe, {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{probe}/{metric}"] = float(value)
    return out


def available_methods() -> list[str]:
    return sorted(p.stem.removeprefix("run_") for p in EXAMPLES.glob("run_*.py"))


def run_one(method: str, split: str, seed: int, out_root: Path, extra: list[str], probes: str = "all",
            relearn_steps: str = "0,5,10,20", probe_before: bool = True) -> dict:
    """One example run. ``probe_before=False``: the probes run after unlearning only (the model before is the same
    full model in every run: its probes are needed once per split, for the full-model row)."""
    out = out_root / f"{method}-{split}-s{seed}"
    cmd = [sys.executable, str(EXAMPLES / f"run_{method}.py"), "--forget_split", split, "--seed", str(seed),
           "--output_dir", str(out), "--disable_tqdm", "true", *_probe_args(probes, relearn_steps),
           "--probe_before", str(probe_before).lower(), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"method": method, "split": split, "seed": seed, "error": proc.stderr[-2000:], "seconds": seconds}
    result = json.loads((out / "results.json").read_text())
    robustness = result.get("robustness") or {}
    return {"method": method, "split": split, "seed": seed, "seconds": seconds,
            "before": result["evaluation"]["before"], "after": result["evaluation"]["after"],
            "robustness_before": robustness.get("before", {}), "robustness_after": robustness.get("after", {})}


def _probe_args(probes: str, relearn_steps: str) -> list[str]:
    args = ["--probes", probes, "--relearn_steps", relearn_steps]
    return args + (["--build_retrained", "true"] if probes != "none" else [])


def _evaluation_options(extra: list[str]) -> list[str]:
    """The options of ``--extra`` that also apply to evaluating the retrained model (row caps, generation length)."""
    keep = ("--max_eval_rows", "--max_new_tokens")
    out = []
    for i, arg in enumerate(extra):
        if arg.split("=")[0] in keep:
            out += [arg] if "=" in arg else extra[i:i + 2]
    return out


def run_retrained(split: str, out_root: Path, extra: list[str], probes: str = "all",
                  relearn_steps: str = "0,5,10,20") -> dict:
    """The reference row: ToyWorld's retrained model for ``split`` evaluated and probed like an unlearned model
    (``python -m unlearn_trainer.evaluate --evaluate_retrained true``)."""
    out = out_root / f"retrained-{split}"
    cmd = [sys.executable, "-m", "unlearn_trainer.evaluate", "--evaluate_retrained", "true", "--forget_split", split,
           "--output_dir", str(out), "--disable_tqdm", "true", *_probe_args(probes, relearn_steps),
           *_evaluation_options(extra)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"method": RETRAINED, "split": split, "seed": 0, "error": proc.stderr[-2000:], "seconds": seconds}
    evaluation = json.loads((out / "evaluation.json").read_text())["history"][-1]["metrics"]
    robustness = json.loads((out / "robustness.json").read_text()) if (out / "robustness.json").exists() else {}
    return {"method": RETRAINED, "split": split, "seed": 0, "seconds": seconds, "after": evaluation,
            "robustness_after": robustness.get("evaluated", {})}


def mean_std(values):
    """Mean and population standard deviation (ddof 0) of a non-empty list."""
    n = len(values)
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / n) ** 0.5


def aggregate(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if "error" not in r and r["method"] != RETRAINED:
            groups.setdefault((r["method"], r["split"]), []).append(r)
    rows = []
    for (method, split), group in sorted(groups.items()):
        row = {"method": method, "split": split, "seeds": len(group),
               "seconds": mean_std([g["seconds"] for g in group])}
        for s, m in COLUMNS:
            values = [g["after"][s][m] for g in group if m in g["after"].get(s, {})]
            if values:
                row[f"{s}/{m}"] = mean_std(values)
        probed = [robustness_values(g.get("robustness_after") or {}, g.get("relearn_steps", "0,5,10,20"))
                  for g in group]
        for key in dict.fromkeys(k for p in probed for k in p):
            row[key] = mean_std([p[key] for p in probed if key in p])
        rows.append(row)
    return rows


def reference_rows(runs: list[dict]) -> list[dict]:
    """The full model (the metrics and probes before unlearning, first run per split) and the retrained model
    (:func:`run_retrained`) as table rows: ``{"method", "split", "values": {"split/metric" or "probe/metric": v}}``."""
    full, retrained = {}, {}
    for r in runs:
        if "error" in r:
            continue
        if r["method"] == RETRAINED:
            retrained.setdefault(r["split"], r)
        elif "before" in r and (r["split"] not in full or (r.get("robustness_before")
                                                             and not full[r["split"]].get("robustness_before"))):
            full[r["split"]] = r  # the first run, or the first that probed the model before (probed once per split)
    rows = []
    for name, found, when in (("full model", full, "before"), (RETRAINED, retrained, "after")):
        for split, r in sorted(found.items()):
            values = {f"{s}/{m}": r[when][s][m] for s, m in COLUMNS if m in r[when].get(s, {})}
            values.update(robustness_values(r.get(f"robustness_{when}") or {}, r.get("relearn_steps", "0,5,10,20")))
            rows.append({"method": name, "split": split, "values": values})
    return rows


def full_model_metrics(runs: list[dict]) -> dict[str, dict]:
    """The memorizing model's metrics before unlearning, per forget split (the forget, retain and proximal
    people differ between splits; the model is the same)."""
    full = {}
    for r in runs:
        if "before" in r and r["method"] != RETRAINED:
            full.setdefault(r["split"], r["before"])
    return dict(sorted(full.items()))


def markdown(rows: list[dict], full: dict[str, dict], references: list[dict] | None = None) -> str:
    keys = [f"{s}/{m}" for s, m in COLUMNS] + [f"{p}/{m}" for p, m in ROBUSTNESS_COLUMNS]
    names = [f"{s} {m}" for s, m in COLUMNS] + [f"{p} {m}".replace("{N}", "N").replace("{MIA}", "min-k")
                                                for p, m in ROBUSTNESS_COLUMNS]
    head = "| method | forget % | " + " | ".join(names) + " | s/run |"
    lines = [head, "|---|---|" + "---|" * (len(keys) + 1)]
    if references is None:  # the full model's metrics only (no probes)
        references = [{"method": "full model", "split": split,
                       "values": {f"{s}/{m}": before[s][m] for s, m in COLUMNS if m in before.get(s, {})}}
                      for split, before in full.items()]
    for ref in references:
        cells = [f"{ref['values'][k]:.2f}" if k in ref["values"] else "" for k in keys]
        lines.append(f"| {ref['method']} | {ref['split'].removeprefix('forget')} | " + " | ".join(cells) + " | |")
    for row in rows:
        cells = []
        for key in keys:
            value = row.get(key)
            cells.append("" if value is None else f"{value[0]:.2f} ± {value[1]:.2f}")
        pct = row["split"].removeprefix("forget")
        lines.append(f"| {row['method']} | {pct} | " + " | ".join(cells) + f" | {row['seconds'][0]:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    markers = {"forget05": "o", "forget10": "s", "forget15": "^"}
    methods = sorted({r["method"] for r in rows})
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for r in rows:
        f, rt, coh = r.get("forget/name_recall"), r.get("retain/name_recall"), r.get("forget/coherence")
        if f is None or rt is None:
            continue
        kw = dict(color=colours[r["method"]], marker=markers.get(r["split"], "o"))
        ax1.errorbar(f[0], rt[0], xerr=f[1], yerr=rt[1], **kw)
        if coh is not None:
            ax2.errorbar(f[0], coh[0], xerr=f[1], yerr=coh[1], **kw)
    for m in methods:
        ax1.plot([], [], "o", color=colours[m], label=m)
    for split, mk in markers.items():
        ax1.plot([], [], mk, color="gray", label=split)
    ax1.set_xlabel("forget name recall (lower is better)")
    ax1.set_ylabel("retain name recall (higher is better)")
    ax2.set_xlabel("forget name recall (lower is better)")
    ax2.set_ylabel("forget coherence (well-formed answers)")
    for ax in (ax1, ax2):
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7, loc="lower right")
    ax1.set_title("ToyWorld: forgetting vs retention")
    ax2.set_title("forgetting vs fluency on the forget set")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    from unlearn_trainer.toyworld.world import GENERATOR_VERSION

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(available_methods()))
    parser.add_argument("--ratios", default="forget05,forget10,forget15")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--extra", default="", help="extra arguments passed to every example")
    parser.add_argument("--probes", default="all", help="robustness probes of every run: all, cheap, none or a list")
    parser.add_argument("--relearn_steps", default="0,5,10,20", help="relearning probe step counts")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the finished runs recorded in <output>/quality_runs/runs.jsonl")
    args = parser.parse_args(argv)
    out = Path(args.output)
    (out / "quality_runs").mkdir(parents=True, exist_ok=True)
    # every finished run is appended to runs.jsonl at once, so a stopped benchmark resumes where it stopped
    log = out / "quality_runs" / "runs.jsonl"
    done = {}
    if args.resume and log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            # a run of another world version or probe setting is not this benchmark's (records without the keys
            # predate the probes: they never match)
            same = (r.get("world"), r.get("extra", ""), r.get("probes"), r.get("relearn_steps")) == \
                (GENERATOR_VERSION, args.extra, args.probes, args.relearn_steps)
            if "error" not in r and same:
                done[(r["method"], r["split"], r["seed"])] = r
    elif log.exists():
        log.unlink()
    runs = []

    def record(r):
        r.update(world=GENERATOR_VERSION, extra=args.extra, probes=args.probes, relearn_steps=args.relearn_steps)
        with log.open("a") as f:
            f.write(json.dumps(r) + "\n")

    for method in args.methods.split(","):
        for split in args.ratios.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                r = done.get((method, split, seed))
                if r is None:
                    # the full model's probes once per split (every run starts from it)
                    probed = any(p.get("robustness_before") for p in list(done.values()) + runs
                                 if p["split"] == split)
                    r = run_one(method, split, seed, out / "quality_runs", args.extra.split(), args.probes,
                                args.relearn_steps, probe_before=not probed)
                    record(r)
                status = "error" if "error" in r else f"forget {r['after']['forget'].get('name_recall', float('nan')):.2f}"
                print(f"{method:9s} {split} seed {seed}: {status} ({r['seconds']:.0f} s)", flush=True)
                runs.append(r)
    if args.probes != "none":  # the retrained reference row, once per split
        for split in args.ratios.split(","):
            r = done.get((RETRAINED, split, 0))
            if r is None:
                r = run_retrained(split, out / "quality_runs", args.extra.split(), args.probes, args.relearn_steps)
                record(r)
            print(f"{RETRAINED} {split}: {'error' if 'error' in r else 'done'} ({r['seconds']:.0f} s)", flush=True)
            runs.append(r)
    rows = aggregate(runs)
    full = full_model_metrics(runs)
    references = reference_rows(runs)
    (out / "quality.json").write_text(json.dumps({"runs": runs, "aggregate": rows, "full_model": full,
                                                  "references": references}, indent=1))
    table = markdown(rows, full, references)
    (out / "quality.md").write_text(
        "# ToyWorld quality benchmark\n\nAfter unlearning; mean ± population std over seeds "
        f"{args.seeds}. Generated by `python benchmarks/quality.py` (probes: {args.probes}, relearning steps "
        f"{args.relearn_steps}; N = the last). Reference rows: the full model (before unlearning) and the model "
        "retrained without the forget set.\n\n" + table + "\n")
    try:
        plot(rows, out / "quality_tradeoff.png")
    except ImportError:
        print("matplotlib missing: no plot (pip install 'unlearn-trainer[plots]')")
    print(table)
    errors = [r for r in runs if "error" in r]
    for r in errors:
        print(f"\nFAILED {r['method']} {r['split']} seed {r['seed']}:\n{r['error']}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
