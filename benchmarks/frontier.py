"""Trade-off frontiers: every method swept over its knobs on the ToyWorld demo (forget10), points read along steps.

    python benchmarks/frontier.py                      # default grid, 3 seeds (~45 min on 2 idle cores, --jobs 2)
    python benchmarks/frontier.py --full               # the bigger grid (more lrs / weights, more eval rows)
    python benchmarks/frontier.py --methods ga,npo --seeds 0 --max-grid 2 --max-steps 20   # a smoke run
    python benchmarks/frontier.py --resume             # keep finished runs, run the rest
    python benchmarks/frontier.py --report-only        # rebuild frontier.json/.md/.png from the finished runs

Each run is the method's example (``examples/run_<method>.py``, every one found is swept) in a fresh subprocess,
with the objective of its paper (the demo's guards removed: ``--forget_loss_ceiling None`` and no retain NLL where
the paper has none, read from the config's ``paper_settings``; a row that keeps a guard says so in its label),
``--unlearning_eval_steps N`` so one run gives a point every N steps, and ``--seed``. Evaluation covers only the
splits the frontiers and the claims use (``EVAL_SPLITS``), each capped at a seeded random sample of rows that
spans every identity (the examples' ``--max_eval_rows`` takes the first rows, i.e. the first few people only).

Per method: the Pareto frontier of forget name recall (down) against each kept quantity (up) in ``FRONTIER_AXES``,
and the best retain name recall at forget recall <= 5% (per seed the best point on that seed's frontier, then mean
and population std over the seeds that reach it). Writes ``results/frontier.json`` (every point),
``results/frontier.md`` and ``results/frontier.png``; ``benchmarks/claims.py`` reads the JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
if str(ROOT / "benchmarks") not in sys.path:  # the sibling script, also when this file is loaded by path
    sys.path.insert(0, str(ROOT / "benchmarks"))
import quality  # noqa: E402  (benchmarks/quality.py: example discovery and mean / std shared with it)

RESULTS = Path(__file__).resolve().parent / "results"

FORGET_SPLIT = "forget10"
#: The splits evaluated (the frontiers' and the claims' metrics); the others are skipped to keep runs fast.
EVAL_SPLITS = ("forget", "retain", "proximal", "text_forget", "shift_new_view_retain")
#: x of every frontier: forget name recall (lower is better).
X = "forget_recall"
#: (point key, split, metric): what a point holds; every key but X is "higher is better".
POINT_METRICS = (
    (X, "forget", "name_recall"),
    ("retain_recall", "retain", "name_recall"),
    # retain people on new pictures (views never trained): what a retain term cannot simply memorise
    ("retain_heldout_recall", "shift_new_view_retain", "name_recall"),
    ("forget_coherence", "forget", "coherence"),
    ("proximal_recall", "proximal", "name_recall"),
    ("text_forget_recall", "text_forget", "name_recall"),
    # the fact (job / city) asked about a forgotten person by name: MMUnlearner's text-only Forget QA
    ("text_forget_accuracy", "text_forget", "attribute_accuracy"),
    ("forget_privacy_leak", "forget", "privacy_leak"),
)
#: y axes of the frontiers (each paired with X); the first two are plotted.
FRONTIER_AXES = ("retain_recall", "forget_coherence", "retain_heldout_recall", "proximal_recall", "text_forget_recall", "text_forget_accuracy",
                 "no_name_rate", "fluent_private",
                 "visual_overlap")
FORGOTTEN = 0.05  # "forgotten": forget name recall at or below 5%

# ---------------------------------------------------------------------------------------------------- the grids
# One table: per method, the learning rates and the method's own weight(s) swept (a product), the arguments that
# make the run paper-faithful (``fixed``), and ``guard``: the guard a run keeps that its paper lacks (None: none).
# ``quick`` is the default grid; ``full`` (--full) the bigger one. Knobs are CLI option names of the example; a knob
# the example does not have (a method whose branch renamed it) is dropped with a warning, not guessed.
# Paper objectives: FTTP, ViKeR, SGPVT have no retain term (paper_settings retain_loss "none"); PUBG and Saliency
# have a retain NLL (Eq. 3 / MMUnlearner Eq. 3); NPO is the paper's forget-only loss (NPO+RT is labelled).
NO_CEILING = {"forget_loss_ceiling": "None"}
GRIDS: dict[str, dict] = {
    # GA (forget only) and GA+GD are two series of one example: GA+GD has the retain set the others lack.
    # GA is swept up to 1e-3 as FTTP and NPO are (a baseline swept less would handicap it in every matched claim).
    "ga": dict(quick=dict(learning_rate=[1e-4, 2e-4, 5e-4, 1e-3]), full=dict(learning_rate=[1e-4, 2e-4, 5e-4, 1e-3]),
               fixed={"variant": "ga"}, guard="forget_loss_ceiling 20 (the library's guard on unbounded GA)"),
    "ga_gd": dict(example="ga", quick=dict(learning_rate=[1e-4, 2e-4, 5e-4]),
                  full=dict(learning_rate=[1e-4, 2e-4, 5e-4, 1e-3]),
                  fixed={"variant": "ga_gd"}, guard="forget_loss_ceiling 20 (the library's guard on unbounded GA)"),
    "npo": dict(quick=dict(learning_rate=[5e-4, 1e-3], beta=[0.4, 1.0]),
                full=dict(learning_rate=[3e-4, 5e-4, 1e-3, 2e-3], beta=[0.1, 0.4, 1.0]),
                fixed={"retain_split": "none"}, guard=None),
    # NPO+RT (NPO with the retain NLL, the NPO paper's own variant): the fair baseline of methods that use a retain set.
    "npo_rt": dict(example="npo", quick=dict(learning_rate=[5e-4, 1e-3], beta=[0.4]),
                   full=dict(learning_rate=[3e-4, 5e-4, 1e-3, 2e-3], beta=[0.1, 0.4, 1.0]),
                   fixed={"retain_split": "retain"}, guard=None),
    "fttp": dict(quick=dict(learning_rate=[3e-4, 1e-3], ga_weight=[0.8, 0.4], gd_weight=[0.5]),
                 full=dict(learning_rate=[1e-4, 3e-4, 1e-3], ga_weight=[0.4, 0.8], gd_weight=[0.5, 1.0]),
                 fixed={"retain_split": "none", **NO_CEILING}, guard=None),
    "viker": dict(quick=dict(learning_rate=[1e-4, 3e-4], lam=[0.05, 1.0]),
                  full=dict(learning_rate=[1e-4, 3e-4, 1e-3], lam=[0.05, 0.5, 2.0, 10.0]),
                  fixed={"retain_split": "none", **NO_CEILING}, guard=None),
    # PUBG: 120 steps: after the GA term has forgotten, the guidance needs ~30-60 more steps to make the answers fluent
    # again (60 steps ended some seeds in the dip).
    "pubg": dict(quick=dict(learning_rate=[3e-4, 1e-3], guidance_weight=[1.0, 2.0]),
                 full=dict(learning_rate=[3e-4, 1e-3, 2e-3], guidance_weight=[0.5, 1.0, 2.0]),
                 fixed=dict(NO_CEILING), guard=None, max_steps=120),
    # Saliency: lr 1e-3 drops retain to ~0.25 within 5 steps and 3e-4 forgets inside one evaluation interval, so the
    # quick grid is 1e-4 / 3e-4. saliency_vision: the paper's Table 2 ablation that trains the vision side only
    # (vision tower + projector; the text-only questions never pass through it).
    "saliency": dict(quick=dict(learning_rate=[1e-4, 3e-4], beta=[1.0, 2.0]),
                     full=dict(learning_rate=[1e-4, 3e-4, 1e-3], beta=[0.5, 1.0, 2.0]),
                     fixed=dict(NO_CEILING), guard=None),
    "saliency_vision": dict(example="saliency", quick=dict(learning_rate=[3e-4, 1e-3], beta=[1.0]),
                            full=dict(learning_rate=[1e-4, 3e-4, 1e-3], beta=[1.0, 2.0]),
                            fixed={**NO_CEILING, "trainable_modules": ["model.vision_tower",
                                                                       "model.multi_modal_projector"]},
                            guard=None),
    "sgpvt": dict(quick=dict(learning_rate=[1.5e-4, 5e-4], lambda_k=[0.3, 1.2]),
                  full=dict(learning_rate=[1e-4, 1.5e-4, 3e-4, 5e-4], lambda_k=[0.3, 1.2, 3.0]),
                  fixed={"retain_split": "none", **NO_CEILING}, guard=None),
    # Methods of issue 16. IdkNLL / IdkDPO: TOFU's objectives have the retain NLL (paper_settings retain_loss "nll").
    "idk_nll": dict(quick=dict(learning_rate=[3e-4, 1e-3], retain_weight=[1.0, 0.5]),
                    full=dict(learning_rate=[1e-4, 3e-4, 1e-3], retain_weight=[0.5, 1.0, 2.0]),
                    fixed={}, guard=None),
    "idk_dpo": dict(quick=dict(learning_rate=[3e-4, 1e-3], beta=[0.1, 0.4]),
                    full=dict(learning_rate=[1e-4, 3e-4, 1e-3], beta=[0.1, 0.4, 1.0]),
                    fixed={}, guard=None),
    # SimNPO: the authors' TOFU beta values; UNDIAL: it moves only the probability the model puts on the answer, so
    # it needs a larger lr on the demo (its sweep: 1e-3 leaves forget recall 0.2, 1e-2 forgets).
    "simnpo": dict(quick=dict(learning_rate=[5e-4, 1e-3], beta=[2.5, 4.5], gamma=[0.0]),
                   full=dict(learning_rate=[3e-4, 5e-4, 1e-3], beta=[1.0, 2.5, 4.5], gamma=[0.0, 1.0]),
                   fixed={}, guard=None),
    "undial": dict(quick=dict(learning_rate=[3e-3, 1e-2], gamma=[3.0, 10.0]),
                   full=dict(learning_rate=[1e-3, 3e-3, 1e-2], gamma=[3.0, 10.0, 30.0]),
                   fixed={}, guard=None),
    # RMU: the paper's c = 6.5 and the demo's 20 (its lr 1e-2 x 120 steps: the paper's 5e-5 does not move the tiny
    # model); the retain activation MSE is the paper's own term.
    "rmu": dict(quick=dict(learning_rate=[3e-3, 1e-2], steering_coeff=[6.5, 20.0]),
                full=dict(learning_rate=[1e-3, 3e-3, 1e-2], steering_coeff=[6.5, 20.0], alpha=[100.0, 1200.0]),
                fixed={}, guard=None, max_steps=120),
    # SCRUB: the forget/keep trade-off is the ratio of max-steps (forget) to min-steps (retain) per cycle.
    "scrub": dict(quick=dict(learning_rate=[3e-4, 1e-3], min_steps_per_cycle=[1, 3]),
                  full=dict(learning_rate=[1e-4, 3e-4, 1e-3], min_steps_per_cycle=[1, 3], gamma=[0.5, 0.99]),
                  fixed={}, guard=None),
}
#: Used for a method found in examples/ but not in GRIDS: its demo defaults at two learning rates.
DEFAULT_GRID = dict(quick=dict(learning_rate=[3e-4, 1e-3]), full=dict(learning_rate=[1e-4, 3e-4, 1e-3]),
                    fixed={}, guard="the example's demo defaults (no grid entry yet)")
#: Runs use this many steps (a GRIDS entry's ``max_steps`` wins) and evaluate every ``eval_every`` steps; rows per
#: evaluated split.
SETTINGS = {"quick": dict(max_steps=60, eval_every=5, eval_rows=32),
            "full": dict(max_steps=80, eval_every=5, eval_rows=64)}
#: The fixed lr at which NPO and GA are compared over steps (claims: NPO collapses more slowly than GA); it is in
#: both grids' learning rates.
COLLAPSE_LR = 5e-4


def available_examples() -> list[str]:
    return quality.available_methods()  # every examples/run_<method>.py, as the quality benchmark finds them


def example_of(series: str) -> str:
    """The example a series runs (``GRIDS[series]["example"]``, default the series' own name)."""
    return GRIDS.get(series, {}).get("example", series)


def available_methods() -> list[str]:
    """Every series to sweep: the GRIDS entries whose example exists, then examples without an entry."""
    examples = available_examples()
    series = [s for s in GRIDS if example_of(s) in examples]
    return series + [e for e in examples if e not in series and all(example_of(s) != e for s in GRIDS)]


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def grid_runs(method: str, full: bool = False, known_options: set[str] | None = None) -> list[dict]:
    """The grid points of the series ``method``: ``[{"label", "knobs", "args"}]`` (``args``: extra CLI arguments as a flat
    list). Knobs the example does not know (``known_options``, from its ``--help``) are dropped."""
    spec = GRIDS.get(method, DEFAULT_GRID)
    grid = dict(spec["full" if full else "quick"])
    if known_options is not None:
        for name in [k for k in grid if k not in known_options]:
            print(f"warning: {method}: the example has no --{name}; that knob is not swept", file=sys.stderr)
            del grid[name]
    fixed = {k: v for k, v in spec["fixed"].items() if known_options is None or k in known_options}
    runs = []
    for values in itertools.product(*grid.values()):
        knobs = dict(zip(grid, values))
        label = " ".join(f"{k}={_fmt(v)}" for k, v in knobs.items())
        if spec["guard"]:
            label += " [guard]"
        args = [a for k, v in {**fixed, **knobs}.items()
                for a in (f"--{k}", *(map(_fmt, v) if isinstance(v, (list, tuple)) else [_fmt(v)]))]
        runs.append({"label": label, "knobs": knobs, "args": args, "guard": spec["guard"]})
    return runs


def example_options(example: str) -> set[str]:
    """The option names of ``examples/run_<example>.py`` (from its ``--help``)."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"run_{example}.py"), "--help"], capture_output=True,
                          text=True, env=_env())
    return set(re.findall(r"--([A-Za-z_][A-Za-z0-9_]*)", proc.stdout))


def _env() -> dict:
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


# ------------------------------------------------------------------------------------------- running an example
def sample_indices(n: int, cap: int | None, seed: int = 0) -> list[int]:
    """``cap`` of ``n`` row indices, a seeded random sample in row order (all of them if ``n <= cap``)."""
    if not cap or n <= cap:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), cap))


def _run_example(example: str, splits: list[str], rows: int | None, argv: list[str]) -> None:
    """Run ``example`` as ``__main__`` with ToyWorld evaluation restricted to ``splits`` (each a sample of
    ``rows``), and write which rows were evaluated (identity index and kind, never a name) to
    ``<output_dir>/eval_rows.json`` for the claims' answer-based metrics."""
    import runpy

    from unlearn_trainer.toyworld import full_model

    original = full_model.eval_splits

    def eval_splits(world, ratio=0.10, **_):
        # exactly these splits, whatever the caller asked (some, e.g. the held-out retain pictures, are not among
        # the defaults); an unknown name is the original's KeyError
        out = {name: [split_rows[i] for i in sample_indices(len(split_rows), rows)]
               for name, split_rows in original(world, ratio, splits=tuple(splits)).items()}
        meta = {name: [[r.get("identity", -1), r.get("kind", "")] for r in v] for name, v in out.items()}
        out_dir = argv[argv.index("--output_dir") + 1]
        os.makedirs(out_dir, exist_ok=True)
        Path(out_dir, "eval_rows.json").write_text(json.dumps(meta))
        return out

    full_model.eval_splits = eval_splits  # cli._toyworld_data imports it at call time
    sys.argv = [example, *argv]
    runpy.run_path(example, run_name="__main__")


def run_dir(out_root: Path, method: str, label: str, seed: int) -> Path:
    slug = re.sub(r"[^A-Za-z0-9.=_-]+", "_", label).strip("_")
    return out_root / f"{method}-{slug}-s{seed}"


def run_one(method: str, run: dict, seed: int, out_root: Path, settings: dict, extra: list[str]) -> dict:
    """One example run in a subprocess; returns its record (points read from its unlearning_eval.json)."""
    out = run_dir(out_root, method, run["label"], seed)
    steps = settings["max_steps"] if settings.get("max_steps_given") else GRIDS.get(method, {}).get(
        "max_steps", settings["max_steps"])
    argv = ["--forget_split", FORGET_SPLIT, "--seed", str(seed), "--output_dir", str(out), "--disable_tqdm", "true",
            "--max_steps", str(steps), "--unlearning_eval_steps", str(settings["eval_every"]),
            "--save_strategy", "no", "--report_to", "none", *run["args"], *extra]
    cmd = [sys.executable, str(Path(__file__).resolve()), "_run-example", str(EXAMPLES / f"run_{example_of(method)}.py"),
           "--rows", str(settings["eval_rows"]), "--", *argv]
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out / "run.log", "w") as log:  # the run's console output stays in its (uncommitted) folder
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())
        # this child's own CPU time (os.times() would mix in the other jobs' children)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    record = {"method": method, "label": run["label"], "knobs": run["knobs"], "guard": run["guard"], "seed": seed,
              "args": run["args"], "extra": extra, "settings": settings, "dir": str(out),
              "seconds": time.perf_counter() - start, "cpu_seconds": usage.ru_utime + usage.ru_stime}
    if proc.returncode != 0:
        # the end of the traceback (an example prints no forget-set text on failure)
        return {**record, "error": (out / "run.log").read_text()[-2000:]}
    record["points"] = run_points(out)
    return record


# ------------------------------------------------------------------------------------------------ reading runs
def read_history(path: str | Path) -> list[dict]:
    """The evaluations of a run (``unlearning_eval.json``): ``[{"step", "label", "metrics"}]`` in step order.
    A clear error names the file when it is missing or has no history."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no unlearning_eval.json; did the run finish? Rerun it (--resume keeps "
                                f"the finished ones).")
    data = json.loads(path.read_text())
    history = data.get("history") if isinstance(data, dict) else None
    if not history:
        raise ValueError(f"{path}: no 'history' of evaluations in it (written by UnlearningEvalCallback.write).")
    return sorted(history, key=lambda h: (h["step"], h["label"] == "after"))


def history_points(history: list[dict], extra: dict[str, dict[str, float]] | None = None) -> list[dict]:
    """One point per evaluation: ``{"step", "label", <POINT_METRICS keys>}`` (a metric missing in an evaluation
    is left out), plus ``extra[label]`` (answer-based metrics). The evaluation before training is step 0."""
    points = []
    for h in history:
        point = {"step": int(h["step"]), "label": h["label"]}
        for key, split, metric in POINT_METRICS:
            value = h["metrics"].get(split, {}).get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                point[key] = float(value)
        point.update((extra or {}).get(h["label"], {}))
        points.append(point)
    return points


def answer_metrics(answers: list[str], identities: list[int], world) -> dict[str, float]:
    """Metrics of forget-split answers computed from their text (numbers only leave this function):

    - ``no_name_rate``: share of answers that contain no name word of any person in the world ("names nobody").
    - ``visual_overlap``: mean over answers of the share of the pictured person's visual words (the slot words of
      ``world.describe``: colour, shape, background colour, stripes, mark position) that the answer contains,
      i.e. how much of what is visible the answer describes.
    - ``fluent_private``: share of answers that are well formed (``world.is_well_formed``) *and* name nobody: fluent
      without a hallucinated name (a confidently wrong name is well formed but is the failure PUBG's paper counts).
    """
    if not answers:
        return {}
    names = set(world.name_words())
    fixed = set("a on background with stripes and mark at the .".split())
    no_name, overlap, fluent_private = 0, 0.0, 0
    for text, who in zip(answers, identities):
        words = set(re.findall(r"[a-z]+", text.lower()))
        nameless = not (words & names)
        no_name += nameless
        fluent_private += nameless and world.is_well_formed(text)
        visual = set(world.describe(world.identities[who]).split()) - fixed
        overlap += len(words & visual) / max(1, len(visual))
    n = len(answers)
    return {"no_name_rate": no_name / n, "visual_overlap": overlap / n, "fluent_private": fluent_private / n}


def run_points(out: Path, world=None) -> list[dict]:
    """Points of a finished run directory, with the answer-based metrics of its forget split when its answers and
    ``eval_rows.json`` are there."""
    history = read_history(out / "unlearning_eval.json")
    extra = {}
    rows_file, eval_file = out / "eval_rows.json", out / "unlearning_eval.json"
    if rows_file.exists():
        meta = json.loads(rows_file.read_text()).get("forget")
        answers = json.loads(eval_file.read_text()).get("answers", {})
        if meta:
            if world is None:
                from unlearn_trainer.toyworld import ToyWorld

                world = ToyWorld()
            for label, by_split in answers.items():
                if "forget" in by_split:
                    extra[label] = answer_metrics(by_split["forget"], [m[0] for m in meta], world)
    return history_points(history, extra)


def refresh_points(runs: list[dict]) -> int:
    """Re-read the points of finished runs whose folder is still there (so a metric added to ``POINT_METRICS`` or
    :func:`answer_metrics` reaches runs made before it); returns how many were re-read."""
    world, count = None, 0
    for r in runs:
        folder = Path(r["dir"])
        if "points" in r and (folder / "unlearning_eval.json").exists():
            if world is None:
                from unlearn_trainer.toyworld import ToyWorld

                world = ToyWorld()
            r["points"] = run_points(folder, world)
            count += 1
    return count


# -------------------------------------------------------------------------------------------- frontier geometry
def pareto_frontier(points: list[dict], y: str, x: str = X) -> list[dict]:
    """The points no other point dominates (lower-or-equal ``x`` and higher-or-equal ``y``, one strictly), sorted
    by ``x``; along it ``y`` strictly increases. Points without ``x`` or ``y`` are ignored."""
    usable = [p for p in points if x in p and y in p]
    frontier, best = [], -math.inf
    for p in sorted(usable, key=lambda p: (p[x], -p[y])):
        if p[y] > best:
            frontier.append(p)
            best = p[y]
    return frontier


def interpolate(frontier: list[dict], at: float, y: str, x: str = X) -> float | None:
    """``y`` of the frontier (as drawn: straight lines between its points) at forget recall ``at``; beyond its
    last point, the last point's ``y`` (more forgetting allowed cannot keep less). None when no point of the
    frontier reaches ``x <= at``: the method never forgets that much."""
    if not frontier or frontier[0][x] > at:
        return None
    for a, b in zip(frontier, frontier[1:]):
        if a[x] <= at <= b[x]:
            if b[x] == a[x]:
                return b[y]
            return a[y] + (b[y] - a[y]) * (at - a[x]) / (b[x] - a[x])
    return frontier[-1][y]


def best_at_forget(points: list[dict], y: str = "retain_recall", threshold: float = FORGOTTEN,
                   x: str = X) -> float | None:
    """The highest ``y`` among points with ``x <= threshold`` (that point is on the frontier); None if none."""
    values = [p[y] for p in points if x in p and y in p and p[x] <= threshold]
    return max(values) if values else None


def mean_std(values: list[float]) -> tuple[float, float] | None:
    """The quality benchmark's mean and population std; None for no values."""
    return quality.mean_std(values) if values else None


def points_by_seed(runs: list[dict], method: str) -> dict[int, list[dict]]:
    """Every point of ``method``'s finished runs, per seed (all grid points and steps of that seed together)."""
    out: dict[int, list[dict]] = {}
    for r in runs:
        if r["method"] == method and "points" in r:
            out.setdefault(r["seed"], []).extend({**p, "run": r["label"]} for p in r["points"])
    return out


def best_retain_summary(runs: list[dict], method: str, threshold: float = FORGOTTEN,
                        y: str = "retain_recall") -> dict:
    """Best ``y`` at forget recall <= ``threshold``: per seed the best point of that seed's frontier, then mean and
    population std over the seeds that reach the threshold (``reached`` of ``seeds``)."""
    per_seed = {seed: best_at_forget(pts, y, threshold) for seed, pts in sorted(points_by_seed(runs, method).items())}
    reached = [v for v in per_seed.values() if v is not None]
    return {"per_seed": per_seed, "mean_std": mean_std(reached), "reached": len(reached), "seeds": len(per_seed)}


#: The frontier series each example's demo default belongs to (``examples/run_ga.py`` defaults to GA+GD).
DEFAULT_SERIES = {"ga": "ga_gd"}
#: How close (in the frontier's y) a default must be to count as "on" its frontier.
ON_FRONTIER_TOL = 0.05


def example_defaults(quality_json: str | Path = RESULTS / "quality.json") -> dict[str, dict[int, dict]]:
    """Each example's ToyWorld demo default as frontier points, per series and seed: the ``after`` evaluation of
    ``benchmarks/quality.py``'s runs on ``FORGET_SPLIT`` (the examples' own defaults, guards included, all rows).
    Empty when the file is missing."""
    path = Path(quality_json)
    if not path.exists():
        return {}
    out: dict[str, dict[int, dict]] = {}
    for r in json.loads(path.read_text()).get("runs", []):
        if r.get("split") != FORGET_SPLIT or "after" not in r:
            continue
        point = {"step": -1, "label": "example default"}
        for key, split, metric in POINT_METRICS:
            value = r["after"].get(split, {}).get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                point[key] = float(value)
        out.setdefault(DEFAULT_SERIES.get(r["method"], r["method"]), {})[int(r["seed"])] = point
    return out


def default_position(per_seed: dict[int, list[dict]], defaults: dict[int, dict],
                     y: str = "retain_recall") -> dict | None:
    """Where the example default (mean over its seeds) sits against the paper-faithful frontier: ``frontier`` = the
    mean over seeds of each seed's frontier (``per_seed``: points per seed) interpolated at the default's forget
    recall, as the claims compare (a frontier pooled over seeds would be the best seed's luck); ``gap`` = default's
    ``y`` minus that; ``where`` is "on" (|gap| <= ON_FRONTIER_TOL), "above" (the default beats the frontier: its
    guards help), "below" (dominated), or "beyond" (no seed's frontier forgets that much)."""
    xs = [p[X] for p in defaults.values() if X in p and y in p]
    ys = [p[y] for p in defaults.values() if X in p and y in p]
    if not xs:
        return None
    x, value = sum(xs) / len(xs), sum(ys) / len(ys)
    at = [v for v in (interpolate(pareto_frontier(pts, y), x, y) for pts in per_seed.values()) if v is not None]
    front_y = sum(at) / len(at) if at else None
    if front_y is None:
        return {"forget_recall": x, y: value, "frontier": None, "gap": None, "where": "beyond"}
    gap = value - front_y
    where = "on" if abs(gap) <= ON_FRONTIER_TOL else ("above" if gap > 0 else "below")
    return {"forget_recall": x, y: value, "frontier": front_y, "gap": gap, "where": where}


def summarize(runs: list[dict], defaults: dict[str, dict[int, dict]] | None = None) -> dict:
    """Per method: the frontiers of the seeds pooled (for the plot and the table), the best-retain summary, and
    where the example's demo default (``defaults``, from :func:`example_defaults`) sits against the frontiers."""
    out = {}
    defaults = defaults or {}
    for method in sorted({r["method"] for r in runs}):
        per_seed = points_by_seed(runs, method)
        pooled = [p for pts in per_seed.values() for p in pts]
        if not pooled:
            continue
        out[method] = {
            "frontiers": {y: [{k: p[k] for k in (X, y, "step", "run")} for p in pareto_frontier(pooled, y)]
                          for y in FRONTIER_AXES},
            "best_retain_at_forget5": best_retain_summary(runs, method),
            "guard": next((r["guard"] for r in runs if r["method"] == method), None),
            "runs": sum(1 for r in runs if r["method"] == method and "points" in r),
            "errors": sum(1 for r in runs if r["method"] == method and "error" in r),
            "example_default": {y: default_position(per_seed, defaults[method], y) for y in FRONTIER_AXES[:2]}
            if method in defaults else None,
        }
    return out


# --------------------------------------------------------------------------------------------------- reporting
def markdown(summary: dict, full_model: dict | None, cpu_seconds: float, seeds: list[int]) -> str:
    lines = [f"# ToyWorld trade-off frontiers ({FORGET_SPLIT})", "",
             f"Generated by `python benchmarks/frontier.py`. Seeds {','.join(map(str, seeds))}; total CPU time of "
             f"the runs {cpu_seconds / 60:.1f} min. Paper-faithful objectives; a method marked *guard* keeps one "
             "(column 'guard').", ""]
    if full_model:
        lines.append("Full model before unlearning: " + ", ".join(
            f"{k} {v:.2f}" for k, v in full_model.items() if isinstance(v, float)) + "\n")
    lines += ["| method | best retain recall at forget recall <= 5% (mean ± std) | seeds reaching it | "
              "frontier (forget recall -> retain recall) | example default vs frontier | runs | guard |",
              "|---|---|---|---|---|---|---|"]
    for method, s in summary.items():
        b = s["best_retain_at_forget5"]
        best = "not reached" if b["mean_std"] is None else f"{b['mean_std'][0]:.2f} ± {b['mean_std'][1]:.2f}"
        front = ", ".join(f"{p[X]:.2f}->{p['retain_recall']:.2f}" for p in s["frontiers"]["retain_recall"])
        errors = f" ({s['errors']} failed)" if s["errors"] else ""
        lines.append(f"| {method} | {best} | {b['reached']}/{b['seeds']} | {front} | {_default_cell(s)} | "
                     f"{s['runs']}{errors} | {s['guard'] or ''} |")
    lines += ["", "*Example default*: the example's ToyWorld demo settings (its guards included), as measured by "
              "`benchmarks/quality.py` (mean over its seeds, all rows), placed against the method's paper-faithful "
              f"frontier: *on* it (retain recall within {ON_FRONTIER_TOL:g} of the frontier at the same forget recall; "
              "each seed's frontier interpolated there, then the mean), "
              "*above* it (the demo's guards buy retention the paper's objective does not reach), *below* it "
              "(dominated: a swept setting keeps more), or *beyond* (the sweep never forgets that much)."]
    return "\n".join(lines) + "\n"


def _default_cell(s: dict) -> str:
    pos = (s.get("example_default") or {}).get("retain_recall")
    if not pos:
        return "not measured"
    text = f"{pos['forget_recall']:.2f}->{pos['retain_recall']:.2f}: **{pos['where']}**"
    if pos["gap"] is not None:
        text += f" ({pos['gap']:+.2f})"
    return text


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_y = FRONTIER_AXES[:2]
    fig, axes = plt.subplots(1, len(axes_y), figsize=(6.2 * len(axes_y), 4.5))
    # tab10's distinct colours first, then tab20's lighter ones; markers tell apart methods of one hue
    colours = {m: plt.cm.tab10(i) if i < 10 else plt.cm.tab20((2 * i + 1) % 20) for i, m in enumerate(summary)}
    markers = {m: "os^vDPX*<>"[i % 10] for i, m in enumerate(summary)}
    for ax, y in zip(axes, axes_y):
        for method, s in summary.items():
            front = s["frontiers"][y]
            if front:
                ax.plot([p[X] for p in front], [p[y] for p in front], "-", marker=markers[method], ms=4,
                        color=colours[method],
                        label=method + (" (guard)" if s["guard"] else ""))
            pos = (s.get("example_default") or {}).get(y)
            if pos:  # the example's demo default: a big hollow marker of the method's colour
                ax.plot([pos["forget_recall"]], [pos[y]], marker=markers[method], ms=11, mfc="none", mew=1.6,
                        color=colours[method], ls="none")
        ax.axvline(FORGOTTEN, color="0.6", ls=":", lw=1)
        ax.set_xlabel("forget name recall (lower is better)")
        ax.set_ylabel(y.replace("_", " ") + " (higher is better)")
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_title("Pareto frontiers: forgetting vs retention")
    axes[1].set_title("forgetting vs forget-answer coherence")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right", title="line: frontier\nhollow: example default",
               title_fontsize=7)
    fig.tight_layout(rect=(0, 0, 0.86, 1))  # the legend sits right of the plots, not over the points
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _public(run: dict) -> dict:
    """A run's record for frontier.json (committed): the folder's name, and a failure points to its log instead of
    quoting it (a log is the example's console, kept in the uncommitted frontier_runs/)."""
    name = Path(run["dir"]).name
    out = {k: v for k, v in run.items() if k not in ("dir", "error")} | {"dir": name}
    if "error" in run:
        out["error"] = f"failed: see frontier_runs/{name}/run.log"
    return out


def write_report(runs: list[dict], out: Path, seeds: list[int]) -> dict:
    summary = summarize(runs, example_defaults(out / "quality.json"))
    full = next((p for r in runs for p in r.get("points", []) if p["step"] == 0), None)
    cpu = sum(r.get("cpu_seconds", 0.0) for r in runs)
    data = {"forget_split": FORGET_SPLIT, "seeds": seeds, "cpu_seconds": cpu, "collapse_lr": COLLAPSE_LR,
            "forgotten_threshold": FORGOTTEN, "full_model": full, "summary": summary,
            "runs": [_public(r) for r in runs]}
    (out / "frontier.json").write_text(json.dumps(data, indent=1))
    (out / "frontier.md").write_text(markdown(summary, full, cpu, seeds))
    try:
        plot(summary, out / "frontier.png")
    except ImportError:
        print("matplotlib missing: no plot (pip install 'unlearn-trainer[plots]')")
    return data


def keep(run: dict, only: list[str]) -> bool:
    """Whether a grid point matches every ``KNOB=VALUE`` of ``only`` (a knob it does not have matches)."""
    for item in only:
        name, _, value = item.partition("=")
        if name in run["knobs"] and _fmt(run["knobs"][name]) != _fmt(_number(value)):
            return False
    return True


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


# -------------------------------------------------------------------------------------------------------- main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_run-example"]:  # internal: one run, in the subprocess run_one starts
        sep = argv.index("--")
        inner = argparse.ArgumentParser()
        inner.add_argument("example")
        inner.add_argument("--rows", type=int, default=None)
        a = inner.parse_args(argv[1:sep])
        _run_example(a.example, list(EVAL_SPLITS), a.rows, argv[sep + 1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(available_methods()))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--full", action="store_true", help="the bigger grid (GRIDS[...]['full'], SETTINGS['full'])")
    parser.add_argument("--max-grid", type=int, default=None, help="at most this many grid points per method")
    parser.add_argument("--only", action="append", default=[], metavar="KNOB=VALUE",
                        help="keep only grid points with this knob value (repeatable), e.g. learning_rate=0.0005")
    parser.add_argument("--max-steps", type=int, default=None, help="override the steps per run (every series)")
    parser.add_argument("--eval-every", type=int, default=None, help="override the evaluation interval")
    parser.add_argument("--eval-rows", type=int, default=None, help="override the rows per evaluated split")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each one torch thread)")
    parser.add_argument("--extra", default="", help="extra arguments passed to every example")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--resume", action="store_true", help="keep the finished runs in <output>/frontier_runs")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from finished runs")
    args = parser.parse_args(argv)
    out = Path(args.output)
    runs_dir = out / "frontier_runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(SETTINGS["full" if args.full else "quick"])
    for key, value in (("max_steps", args.max_steps), ("eval_every", args.eval_every), ("eval_rows", args.eval_rows)):
        if value is not None:
            settings[key] = value
    if args.max_steps is not None:  # --max-steps wins over a series' own step count
        settings["max_steps_given"] = True
    seeds = [int(s) for s in args.seeds.split(",")]
    log = runs_dir / "runs.jsonl"
    done: dict[tuple, dict] = {}
    if (args.resume or args.report_only) and log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            if "error" not in r:
                done[(r["method"], r["label"], r["seed"], json.dumps(r["settings"]), " ".join(r["extra"]))] = r
    elif log.exists():
        log.unlink()
    refresh_points(list(done.values()))
    if args.report_only:
        runs = list(done.values())
        write_report(runs, out, sorted({r["seed"] for r in runs}))
        return 0
    extra = args.extra.split()
    todo, runs = [], []
    options_of: dict[str, set[str]] = {}
    for method in args.methods.split(","):
        example = example_of(method)
        if not (EXAMPLES / f"run_{example}.py").exists():
            parser.error(f"--methods {method}: no examples/run_{example}.py (series: {', '.join(available_methods())})")
        options = options_of.setdefault(example, example_options(example))
        if "learning_rate" not in options:
            parser.error(f"examples/run_{example}.py --help lists no options (run it to see why)")
        if "probes" in options and "--probes" not in extra:  # issue 14's probes are not part of the frontier
            method_extra = [*extra, "--probes", "none"]
        else:
            method_extra = extra
        # PUBG's o* and Saliency's Fisher diagonals depend only on the full model and the data: one cache for all
        for option, folder in (("guidance_cache_dir", "pubg_guidance"), ("saliency_cache_dir", "saliency")):
            if option in options:
                method_extra = [*method_extra, f"--{option}", str(runs_dir / "cache" / folder)]
        grid = [r for r in grid_runs(method, args.full, options) if keep(r, args.only)][: args.max_grid]
        for run in grid:
            for seed in seeds:
                key = (method, run["label"], seed, json.dumps(settings), " ".join(method_extra))
                if key in done:
                    runs.append(done[key])
                else:
                    todo.append((method, run, seed, method_extra))
    print(f"{len(runs)} finished runs kept, {len(todo)} to run ({args.jobs} at a time)", flush=True)
    if todo:  # one build of the full model (if the cache lacks it), not one per parallel run
        subprocess.run([sys.executable, "-m", "unlearn_trainer.toyworld", "build"], check=True, env=_env(),
                       stdout=subprocess.DEVNULL)
    from unlearn_trainer._progress import progress_bar

    def one(job):
        method, run, seed, method_extra = job
        return run_one(method, run, seed, runs_dir, settings, method_extra)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool, \
            progress_bar(total=len(todo), desc="frontier runs") as bar:
        for r in pool.map(one, todo):
            with log.open("a") as f:
                f.write(json.dumps(r) + "\n")
            status = "error" if "error" in r else f"{len(r['points'])} points"
            bar.write(f"{r['method']:9s} {r['label']} seed {r['seed']}: {status} ({r['seconds']:.0f} s, "
                      f"{r['cpu_seconds']:.0f} s CPU)")
            bar.update(1)
            runs.append(r)
    data = write_report(runs, out, seeds)
    print((out / "frontier.md").read_text())
    print(f"total CPU time of the runs: {data['cpu_seconds'] / 60:.1f} min")
    errors = [r for r in runs if "error" in r]
    for r in errors:
        print(f"\nFAILED {r['method']} {r['label']} seed {r['seed']}:\n{r['error']}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
