"""Quality benchmark: every method on the ToyWorld demo at forget 5/10/15%, 3 seeds, one command.

    python benchmarks/quality.py                       # all methods, ratios, seeds (tens of minutes on 2 cores)
    python benchmarks/quality.py --methods npo,ga --ratios forget10 --seeds 0
    python benchmarks/quality.py --resume              # continue a stopped run (finished runs are kept)

Each run is the method's example (``examples/run_<method>.py``) with its ToyWorld defaults (the paper's
defaults scaled to the world), in a fresh subprocess, with ``--seed`` changing the unlearning run (LoRA init,
data order, sampling); the memorizing full model is the same for all runs. Writes to ``benchmarks/results/``:
``quality.json`` (every run), ``quality.md`` (mean ± population std over seeds) and ``quality_tradeoff.png``
(forget vs retain name recall, and forget coherence).
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
    ("mc_forget", "mc_loglik_acc"),
    ("mc_retain", "mc_loglik_acc"),
]


def available_methods() -> list[str]:
    return sorted(p.stem.removeprefix("run_") for p in EXAMPLES.glob("run_*.py"))


def run_one(method: str, split: str, seed: int, out_root: Path, extra: list[str]) -> dict:
    out = out_root / f"{method}-{split}-s{seed}"
    cmd = [sys.executable, str(EXAMPLES / f"run_{method}.py"), "--forget_split", split, "--seed", str(seed),
           "--output_dir", str(out), "--disable_tqdm", "true", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"method": method, "split": split, "seed": seed, "error": proc.stderr[-2000:], "seconds": seconds}
    result = json.loads((out / "results.json").read_text())
    return {"method": method, "split": split, "seed": seed, "seconds": seconds,
            "before": result["evaluation"]["before"], "after": result["evaluation"]["after"]}


def _mean_std(values):
    n = len(values)
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / n) ** 0.5


def aggregate(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if "error" not in r:
            groups.setdefault((r["method"], r["split"]), []).append(r)
    rows = []
    for (method, split), group in sorted(groups.items()):
        row = {"method": method, "split": split, "seeds": len(group),
               "seconds": _mean_std([g["seconds"] for g in group])}
        for s, m in COLUMNS:
            values = [g["after"][s][m] for g in group if m in g["after"].get(s, {})]
            if values:
                row[f"{s}/{m}"] = _mean_std(values)
        rows.append(row)
    return rows


def full_model_metrics(runs: list[dict]) -> dict[str, dict]:
    """The memorizing model's metrics before unlearning, per forget split (the forget, retain and proximal
    people differ between splits; the model is the same)."""
    full = {}
    for r in runs:
        if "before" in r:
            full.setdefault(r["split"], r["before"])
    return dict(sorted(full.items()))


def markdown(rows: list[dict], full: dict[str, dict]) -> str:
    head = "| method | forget % | " + " | ".join(f"{s} {m}" for s, m in COLUMNS) + " | s/run |"
    lines = [head, "|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for split, before in full.items():
        cells = [f"{before[s][m]:.2f}" if m in before.get(s, {}) else "" for s, m in COLUMNS]
        lines.append(f"| full model | {split.removeprefix('forget')} | " + " | ".join(cells) + " | |")
    for row in rows:
        cells = []
        for s, m in COLUMNS:
            value = row.get(f"{s}/{m}")
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(available_methods()))
    parser.add_argument("--ratios", default="forget05,forget10,forget15")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--extra", default="", help="extra arguments passed to every example")
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
            if "error" not in r and r.get("extra", "") == args.extra:
                done[(r["method"], r["split"], r["seed"])] = r
    elif log.exists():
        log.unlink()
    runs = []
    for method in args.methods.split(","):
        for split in args.ratios.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                r = done.get((method, split, seed))
                if r is None:
                    r = run_one(method, split, seed, out / "quality_runs", args.extra.split())
                    r["extra"] = args.extra
                    with log.open("a") as f:
                        f.write(json.dumps(r) + "\n")
                status = "error" if "error" in r else f"forget {r['after']['forget'].get('name_recall', float('nan')):.2f}"
                print(f"{method:9s} {split} seed {seed}: {status} ({r['seconds']:.0f} s)", flush=True)
                runs.append(r)
    rows = aggregate(runs)
    full = full_model_metrics(runs)
    (out / "quality.json").write_text(json.dumps({"runs": runs, "aggregate": rows, "full_model": full}, indent=1))
    table = markdown(rows, full)
    (out / "quality.md").write_text(
        "# ToyWorld quality benchmark\n\nAfter unlearning; mean ± population std over seeds "
        f"{args.seeds}. Generated by `python benchmarks/quality.py`.\n\n" + table + "\n")
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
